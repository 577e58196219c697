//! Record validation: every value record is checked by the validator of its key's namespace
//! (`/<namespace>/...`) before it is stored or accepted from a lookup, and the validator picks
//! the best of several valid records. A namespace without a validator is refused, as js and go
//! do: storing what nobody can check would let anyone fill the store with garbage.

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::identity::PublicKey;
use libp2p::PeerId;

use crate::ipns::{IpnsError, IpnsValidator};

/// Why a record is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The key is not `/<namespace>/<rest>` with a UTF-8 namespace.
    #[error("record key is not namespaced")]
    NotNamespaced,
    /// No validator is registered for the namespace.
    #[error("no validator for namespace {0:?}")]
    UnknownNamespace(String),
    /// The namespace's validator refused the record.
    #[error("invalid {namespace} record: {reason}")]
    Invalid {
        /// The namespace.
        namespace: String,
        /// What is wrong.
        reason: String,
    },
    /// The `/ipns` validator refused the record; the variant says why, as go would.
    #[error("invalid ipns record: {0}")]
    Ipns(#[from] IpnsError),
}

impl ValidationError {
    /// A refusal by the validator of `namespace`, for what `reason` says.
    pub fn invalid(namespace: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            namespace: namespace.to_string(),
            reason: reason.into(),
        }
    }
}

/// Validates records of one namespace and selects the best among valid ones.
pub trait Validator: Send + Sync + 'static {
    /// Whether `value` is a valid record under `key` (the whole key, namespace included); the
    /// error says why not (usually [`ValidationError::invalid`]).
    fn validate(&self, key: &[u8], value: &[u8]) -> Result<(), ValidationError>;
    /// The index of the best of `values`, all valid under `key`. Never called with none.
    fn select(&self, key: &[u8], values: &[&[u8]]) -> usize;
}

/// `/pk/<multihash>`: the value is a protobuf-encoded public key whose peer id (multihash) is
/// the rest of the key. All valid values for a key are the same key, so any is the best.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicKeyValidator;

impl Validator for PublicKeyValidator {
    fn validate(&self, key: &[u8], value: &[u8]) -> Result<(), ValidationError> {
        let invalid = |reason: String| ValidationError::invalid("pk", reason);
        let hash = key
            .strip_prefix(b"/pk/")
            .ok_or_else(|| invalid("key does not start with /pk/".into()))?;
        let expected =
            PeerId::from_bytes(hash).map_err(|e| invalid(format!("key is no peer id: {e}")))?;
        let public_key = PublicKey::try_decode_protobuf(value)
            .map_err(|e| invalid(format!("bad public key: {e}")))?;
        if public_key.to_peer_id() != expected {
            return Err(invalid("public key does not match the key".into()));
        }
        Ok(())
    }

    fn select(&self, _key: &[u8], _values: &[&[u8]]) -> usize {
        0
    }
}

/// The validators by namespace.
#[derive(Clone)]
pub struct Validators {
    by_namespace: HashMap<String, Arc<dyn Validator>>,
}

impl std::fmt::Debug for Validators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.by_namespace.keys().collect();
        names.sort();
        f.debug_struct("Validators")
            .field("namespaces", &names)
            .finish()
    }
}

impl Default for Validators {
    /// The validators of the Amino DHT, which every go and kadence server runs: `/pk` and
    /// `/ipns`.
    fn default() -> Self {
        let mut validators = Self::empty();
        validators.register("pk", PublicKeyValidator);
        validators.register("ipns", IpnsValidator);
        validators
    }
}

impl Validators {
    /// No validators at all: every record is refused.
    pub fn empty() -> Self {
        Self {
            by_namespace: HashMap::new(),
        }
    }

    /// Registers (or replaces) the validator for `namespace` (without slashes, e.g. `"ipns"`).
    pub fn register(&mut self, namespace: &str, validator: impl Validator) {
        self.by_namespace
            .insert(namespace.to_string(), Arc::new(validator));
    }

    /// The namespaces with a validator.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.by_namespace.keys().map(String::as_str)
    }

    fn validator_for(&self, key: &[u8]) -> Result<(&str, &dyn Validator), ValidationError> {
        let namespace = namespace_of(key).ok_or(ValidationError::NotNamespaced)?;
        let (name, validator) = self
            .by_namespace
            .get_key_value(namespace)
            .ok_or_else(|| ValidationError::UnknownNamespace(namespace.to_string()))?;
        Ok((name.as_str(), validator.as_ref()))
    }

    /// Validates a record.
    pub fn validate(&self, key: &[u8], value: &[u8]) -> Result<(), ValidationError> {
        let (_, validator) = self.validator_for(key)?;
        validator.validate(key, value)
    }

    /// The index of the best of `values` (all already validated) for `key`.
    pub fn select(&self, key: &[u8], values: &[&[u8]]) -> Result<usize, ValidationError> {
        let (_, validator) = self.validator_for(key)?;
        if values.is_empty() {
            return Ok(0);
        }
        Ok(validator.select(key, values).min(values.len() - 1))
    }
}

/// The namespace of `/<namespace>/<rest>`: non-empty, UTF-8, followed by a non-empty rest.
fn namespace_of(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(b"/")?;
    let end = rest.iter().position(|b| *b == b'/')?;
    if end == 0 || end + 1 >= rest.len() {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;

    fn pk_record() -> (Vec<u8>, Vec<u8>) {
        let record = crate::Record::public_key(&Keypair::generate_ed25519().public());
        (record.key, record.value)
    }

    #[test]
    fn pk_records_are_checked_against_their_key() {
        let validators = Validators::default();
        let (key, value) = pk_record();
        assert_eq!(validators.validate(&key, &value), Ok(()));
        let (_, other_value) = pk_record();
        assert!(matches!(
            validators.validate(&key, &other_value),
            Err(ValidationError::Invalid { .. })
        ));
        assert!(matches!(
            validators.validate(&key, b"garbage"),
            Err(ValidationError::Invalid { .. })
        ));
        assert_eq!(validators.select(&key, &[&value, &value]), Ok(0));
    }

    #[test]
    fn secp256k1_and_ecdsa_keys_validate_too() {
        let validators = Validators::default();
        let secp = Keypair::generate_secp256k1();
        let mut key = b"/pk/".to_vec();
        key.extend(secp.public().to_peer_id().to_bytes());
        assert_eq!(
            validators.validate(&key, &secp.public().encode_protobuf()),
            Ok(())
        );
        let ecdsa = Keypair::generate_ecdsa();
        let mut key = b"/pk/".to_vec();
        key.extend(ecdsa.public().to_peer_id().to_bytes());
        assert_eq!(
            validators.validate(&key, &ecdsa.public().encode_protobuf()),
            Ok(())
        );
    }

    #[test]
    fn unknown_or_missing_namespaces_are_refused() {
        let validators = Validators::default();
        assert_eq!(
            validators.validate(b"/app/abc", b"v"),
            Err(ValidationError::UnknownNamespace("app".into()))
        );
        for key in [&b"plain"[..], b"/", b"//x", b"/pk", b"/pk/", b"/\xff\xfe/x"] {
            assert_eq!(
                validators.validate(key, b"v"),
                Err(ValidationError::NotNamespaced),
                "{key:?}"
            );
        }
    }

    #[test]
    fn user_namespaces_can_be_registered() {
        struct Longest;
        impl Validator for Longest {
            fn validate(&self, _: &[u8], value: &[u8]) -> Result<(), ValidationError> {
                (!value.is_empty())
                    .then_some(())
                    .ok_or(ValidationError::invalid("app", "empty"))
            }
            fn select(&self, _: &[u8], values: &[&[u8]]) -> usize {
                (0..values.len())
                    .max_by_key(|i| values[*i].len())
                    .unwrap_or(0)
            }
        }
        let mut validators = Validators::default();
        validators.register("app", Longest);
        assert_eq!(validators.validate(b"/app/x", b"v"), Ok(()));
        assert_eq!(validators.select(b"/app/x", &[b"a", b"abc", b"ab"]), Ok(1));
    }
}
