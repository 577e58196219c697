//! [`IpnsValidator`]: the `/ipns` namespace's [`Validator`].

use std::cmp::Ordering;
use std::time::SystemTime;

use super::{name_from_routing_key, IpnsRecord};
use crate::server::{ValidationError, Validator};

/// Validates `/ipns/<name>` records and selects the best, exactly as go-libp2p-kad-dht's stock
/// validator (`boxo/ipns`) does, so that go and kadence servers keep the same record.
///
/// Valid: the key is `/ipns/` + a binary peer id, and the value is a record that
/// [`IpnsRecord::verify`] accepts for that name now. Best: a V2 signature, then the higher
/// sequence, then the later validity, then the larger encoding (go's tie-break), and among
/// records equal in all of these the first.
///
/// A name that does not inline its public key (RSA, ECDSA) needs the key in the record: go can
/// also take it from its peer store, kadence does not keep one.
#[derive(Debug, Clone, Copy, Default)]
pub struct IpnsValidator;

impl Validator for IpnsValidator {
    fn validate(&self, key: &[u8], value: &[u8]) -> Result<(), ValidationError> {
        let name = name_from_routing_key(key)?;
        IpnsRecord::decode(value)?.verify(&name, SystemTime::now())?;
        Ok(())
    }

    fn select(&self, _key: &[u8], values: &[&[u8]]) -> usize {
        // Values reach here validated; one that no longer decodes is never the best, nor one
        // without a sequence (go cannot order it: its select fails).
        let records: Vec<Option<IpnsRecord>> = values
            .iter()
            .map(|value| {
                IpnsRecord::decode(value)
                    .ok()
                    .filter(IpnsRecord::has_sequence)
            })
            .collect();
        let mut best = 0;
        for candidate in 1..records.len() {
            let order = match (&records[best], &records[candidate]) {
                (Some(a), Some(b)) => a
                    .compare(b)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| values[best].cmp(values[candidate])),
                (None, Some(_)) => Ordering::Less,
                (_, None) => Ordering::Greater,
            };
            // As go: the candidate replaces the best only when strictly better.
            if order == Ordering::Less {
                best = candidate;
            }
        }
        best
    }
}

#[cfg(test)]
#[path = "validator_tests.rs"]
mod tests;
