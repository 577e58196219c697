//! [`IpnsRecord`]: the record's two layers (protobuf envelope, DAG-CBOR data), its signing and
//! its verification, in the order go's `boxo/ipns` checks them.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use quick_protobuf::{BytesReader, MessageRead, MessageWrite, Writer};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{routing_key, IpnsError, MAX_RECORD_SIZE};
use crate::proto::ipns_pb::IpnsEntry;

/// What `signatureV2` signs, before the DAG-CBOR `data`.
const SIGNATURE_V2_PREFIX: &[u8] = b"ipns-signature:";
/// The multihash code of an identity hash: a peer id that inlines its public key.
const IDENTITY_MULTIHASH: u64 = 0;
/// The only validity type: the record is valid until the time in `Validity`.
const VALIDITY_EOL: i64 = 0;
/// How long a record is valid when the builder is not told (go's and Kubo's default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(48 * 3600);
/// 9999-12-31T23:59:59.999999999Z, the latest time RFC 3339 can write, after the epoch.
const LATEST_VALIDITY: Duration = Duration::new(253_402_300_799, 999_999_999);
/// The caching hint a record carries when the builder is not told (Kubo's default).
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// The DAG-CBOR map under `data`. The fields are declared in DAG-CBOR's canonical key order
/// (shorter keys first, then bytewise), so the encoding is canonical as written. Integers are
/// signed 64-bit as go reads and writes them; unknown keys are ignored, as go ignores them.
/// go's validator needs only `Validity` and `ValidityType`; the others may be missing (it
/// looks at them only to compare them with V1 fields, or to select).
#[derive(Debug, Serialize, Deserialize)]
struct Data {
    #[serde(rename = "TTL", default, skip_serializing_if = "Option::is_none")]
    ttl: Option<i64>,
    #[serde(rename = "Value", default, skip_serializing_if = "Option::is_none")]
    value: Option<ByteBuf>,
    #[serde(rename = "Sequence", default, skip_serializing_if = "Option::is_none")]
    sequence: Option<i64>,
    #[serde(rename = "Validity")]
    validity: ByteBuf,
    #[serde(rename = "ValidityType")]
    validity_type: i64,
}

/// The legacy V1 fields of the envelope, kept to check that they agree with `data` (go refuses
/// a record whose V1 copy says something else than what `signatureV2` covers).
#[derive(Debug, Clone, PartialEq, Eq)]
struct V1Fields {
    value: Vec<u8>,
    validity: Vec<u8>,
    validity_type: u64,
    sequence: u64,
    ttl: u64,
}

/// An IPNS record: a value (usually an `/ipfs/...` path) that the owner of a name (a key pair)
/// signed, with a sequence number and an end of validity.
///
/// [`IpnsRecord::decode`] reads one without trusting it; [`IpnsRecord::verify`] checks it
/// against its name. The encoded bytes are kept as received, so a record passed on is passed on
/// byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpnsRecord {
    bytes: Vec<u8>,
    data: Vec<u8>,
    signature_v2: Vec<u8>,
    public_key: Vec<u8>,
    v1: Option<V1Fields>,
    // The data's fields as written: `None` where the key is missing.
    value: Option<Vec<u8>>,
    sequence: Option<i64>,
    ttl: Option<i64>,
    validity_text: Vec<u8>,
    validity: SystemTime,
}

impl IpnsRecord {
    /// Starts a record whose value is `value`, e.g. `"/ipfs/bafy..."` or `"/ipns/k51..."`.
    pub fn builder(value: impl Into<Vec<u8>>) -> IpnsRecordBuilder {
        IpnsRecordBuilder {
            value: value.into(),
            sequence: 0,
            validity: Validity::For(DEFAULT_LIFETIME),
            ttl: DEFAULT_TTL,
            v1_compatible: true,
        }
    }

    /// Reads an encoded record (the value of a DHT record under `/ipns/...`). Checks its size,
    /// its envelope and its data, but neither its signature nor its validity: see
    /// [`verify`](Self::verify).
    pub fn decode(bytes: &[u8]) -> Result<Self, IpnsError> {
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(IpnsError::TooLarge(bytes.len()));
        }
        let mut reader = BytesReader::from_bytes(bytes);
        let entry = IpnsEntry::from_reader(&mut reader, bytes).map_err(|_| IpnsError::Protobuf)?;
        let data = non_empty(&entry.data).ok_or(IpnsError::MissingData)?;
        let fields: Data =
            serde_ipld_dagcbor::from_slice(data).map_err(|e| IpnsError::Cbor(e.to_string()))?;
        if fields.validity_type != VALIDITY_EOL {
            return Err(IpnsError::UnknownValidityType(fields.validity_type));
        }
        let validity = parse_rfc3339(&fields.validity)?;
        // go keeps V1 fields only to check them, and only when a V1 signature or value is set.
        let v1 = (non_empty(&entry.signatureV1).is_some() || non_empty(&entry.value).is_some())
            .then(|| V1Fields {
                value: owned(&entry.value),
                validity: owned(&entry.validity),
                validity_type: entry.validityType.unwrap_or(0),
                sequence: entry.sequence.unwrap_or(0),
                ttl: entry.ttl.unwrap_or(0),
            });
        Ok(Self {
            bytes: bytes.to_vec(),
            data: data.to_vec(),
            signature_v2: owned(&entry.signatureV2),
            public_key: owned(&entry.pubKey),
            v1,
            value: fields.value.map(ByteBuf::into_vec),
            sequence: fields.sequence,
            ttl: fields.ttl,
            validity,
            validity_text: fields.validity.into_vec(),
        })
    }

    /// The encoded record, as it goes into a DHT record's value.
    pub fn encode(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    /// The encoded record, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The value the name points to, e.g. `/ipfs/bafy...` (empty when the record has none).
    pub fn value(&self) -> &[u8] {
        self.value.as_deref().unwrap_or_default()
    }

    /// The sequence number: a higher one replaces a lower one (0 when the record has none).
    pub fn sequence(&self) -> u64 {
        // go reads a signed 64-bit integer and converts it; so do we.
        self.sequence.unwrap_or(0) as u64
    }

    /// The end of validity: after it, the record is refused.
    pub fn validity(&self) -> SystemTime {
        self.validity
    }

    /// How long a resolver may cache the value (0 when the record says nothing; a negative
    /// one fails [`verify`](Self::verify)).
    pub fn ttl(&self) -> Duration {
        Duration::from_nanos(self.ttl.unwrap_or(0).max(0) as u64)
    }

    /// The DHT record that publishes this record for `name` (the key pair that signed it), as
    /// [`Behaviour::put_value`](crate::Behaviour::put_value) takes it.
    pub fn to_dht_record(&self, name: &PeerId) -> crate::Record {
        crate::Record {
            key: routing_key(name),
            value: self.bytes.clone(),
            time_received: String::new(),
        }
    }

    /// Checks the record as the record of `name` at time `now`, as go's validator does: its
    /// size, the public key (inlined in the name, or carried in the record and hashing to the
    /// name), `signatureV2` over `"ipns-signature:"` + the data, the V1 fields (where present)
    /// against the data, and the end of validity.
    pub fn verify(&self, name: &PeerId, now: SystemTime) -> Result<(), IpnsError> {
        let public_key = self.public_key_of(name)?;
        if self.bytes.len() > MAX_RECORD_SIZE {
            return Err(IpnsError::TooLarge(self.bytes.len()));
        }
        if self.signature_v2.is_empty() {
            return Err(IpnsError::MissingSignature);
        }
        if !public_key.verify(&signed_v2(&self.data), &self.signature_v2) {
            return Err(IpnsError::BadSignature);
        }
        if let Some(v1) = &self.v1 {
            self.check_v1(v1)?;
        }
        if now > self.validity {
            return Err(IpnsError::Expired);
        }
        if self.ttl.is_some_and(|ttl| ttl < 0) {
            return Err(IpnsError::NegativeTtl);
        }
        Ok(())
    }

    /// Orders two valid records of one name as go does: a V2 signature beats none, then the
    /// higher sequence, then the later validity; `Equal` when none of these decides. `None`
    /// when either has no sequence: go cannot order them either.
    pub(crate) fn compare(&self, other: &Self) -> Option<Ordering> {
        let (Some(_), Some(_)) = (self.sequence, other.sequence) else {
            return None;
        };
        Some(
            (!self.signature_v2.is_empty())
                .cmp(&!other.signature_v2.is_empty())
                .then(self.sequence().cmp(&other.sequence()))
                .then(self.validity.cmp(&other.validity)),
        )
    }

    /// Whether the data carries a sequence number, which selecting needs.
    pub(crate) fn has_sequence(&self) -> bool {
        self.sequence.is_some()
    }

    fn public_key_of(&self, name: &PeerId) -> Result<PublicKey, IpnsError> {
        if !self.public_key.is_empty() {
            let key = PublicKey::try_decode_protobuf(&self.public_key)
                .map_err(|_| IpnsError::BadPublicKey)?;
            if key.to_peer_id() != *name {
                return Err(IpnsError::PublicKeyMismatch);
            }
            return Ok(key);
        }
        let hash: &libp2p::multihash::Multihash<64> = name.as_ref();
        if hash.code() != IDENTITY_MULTIHASH {
            return Err(IpnsError::NoPublicKey);
        }
        PublicKey::try_decode_protobuf(hash.digest()).map_err(|_| IpnsError::BadPublicKey)
    }

    /// go compares each V1 field with the data's; a key missing from the data fails too.
    fn check_v1(&self, v1: &V1Fields) -> Result<(), IpnsError> {
        let checks = [
            ("Value", self.value.as_ref() == Some(&v1.value)),
            ("Validity", v1.validity == self.validity_text),
            ("ValidityType", v1.validity_type as i64 == VALIDITY_EOL),
            (
                "Sequence",
                self.sequence.map(|s| s as u64) == Some(v1.sequence),
            ),
            ("TTL", self.ttl.map(|t| t as u64) == Some(v1.ttl)),
        ];
        match checks.iter().find(|(_, agrees)| !agrees) {
            Some((field, _)) => Err(IpnsError::FieldMismatch(field)),
            None => Ok(()),
        }
    }
}

/// How the end of validity is given to the builder.
#[derive(Debug, Clone, Copy)]
enum Validity {
    For(Duration),
    Until(SystemTime),
}

/// Builds and signs an [`IpnsRecord`]; made by [`IpnsRecord::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct IpnsRecordBuilder {
    value: Vec<u8>,
    sequence: u64,
    validity: Validity,
    ttl: Duration,
    v1_compatible: bool,
}

impl IpnsRecordBuilder {
    /// The sequence number (default 0). Publish each new value with a higher one than the last:
    /// servers keep the record with the highest.
    pub fn sequence(mut self, sequence: u64) -> Self {
        self.sequence = sequence;
        self
    }

    /// Valid for `lifetime` from when it is signed (default 48 hours, as go's).
    pub fn valid_for(mut self, lifetime: Duration) -> Self {
        self.validity = Validity::For(lifetime);
        self
    }

    /// Valid until `end`.
    pub fn valid_until(mut self, end: SystemTime) -> Self {
        self.validity = Validity::Until(end);
        self
    }

    /// How long resolvers may cache the value (default 1 hour, as Kubo's).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Whether to also write the legacy V1 fields and signature (default `true`, as go's
    /// `boxo/ipns` does) so that nodes older than go-ipfs 0.9 can still read the record.
    pub fn v1_compatible(mut self, yes: bool) -> Self {
        self.v1_compatible = yes;
        self
    }

    /// Signs the record with the name's key pair. The public key is embedded when the name
    /// (the key pair's peer id) does not inline it (RSA, ECDSA), as go does.
    pub fn sign(self, keypair: &Keypair) -> Result<IpnsRecord, IpnsError> {
        let end = match self.validity {
            Validity::Until(end) => end,
            Validity::For(lifetime) => SystemTime::now()
                .checked_add(lifetime)
                .ok_or_else(|| IpnsError::Signing("validity out of range".into()))?,
        };
        // RFC 3339 has four-digit years.
        if end > UNIX_EPOCH + LATEST_VALIDITY {
            return Err(IpnsError::Signing("validity past the year 9999".into()));
        }
        let validity = crate::server::rfc3339(end).into_bytes();
        // go writes these as signed 64-bit integers; a TTL past 292 years is clamped.
        let ttl = i64::try_from(self.ttl.as_nanos()).unwrap_or(i64::MAX);
        let sequence = self.sequence as i64;
        let data = serde_ipld_dagcbor::to_vec(&Data {
            ttl: Some(ttl),
            value: Some(ByteBuf::from(self.value.clone())),
            sequence: Some(sequence),
            validity: ByteBuf::from(validity.clone()),
            validity_type: VALIDITY_EOL,
        })
        .map_err(|e| IpnsError::Signing(e.to_string()))?;
        let sign = |bytes: &[u8]| {
            keypair
                .sign(bytes)
                .map_err(|e| IpnsError::Signing(e.to_string()))
        };
        let mut entry = IpnsEntry {
            signatureV2: Some(Cow::Owned(sign(&signed_v2(&data))?)),
            data: Some(Cow::Borrowed(&data)),
            ..IpnsEntry::default()
        };
        if self.v1_compatible {
            // V1 signs value + validity + the validity type's name.
            let mut signed_v1 = self.value.clone();
            signed_v1.extend_from_slice(&validity);
            signed_v1.extend_from_slice(b"EOL");
            entry.signatureV1 = Some(Cow::Owned(sign(&signed_v1)?));
            entry.value = Some(Cow::Borrowed(&self.value));
            entry.validity = Some(Cow::Borrowed(&validity));
            entry.validityType = Some(VALIDITY_EOL as u64);
            entry.sequence = Some(sequence as u64);
            entry.ttl = Some(ttl as u64);
        }
        let public_key = keypair.public();
        let name = public_key.to_peer_id();
        let hash: &libp2p::multihash::Multihash<64> = name.as_ref();
        if hash.code() != IDENTITY_MULTIHASH {
            entry.pubKey = Some(Cow::Owned(public_key.encode_protobuf()));
        }
        let mut bytes = Vec::with_capacity(entry.get_size());
        entry
            .write_message(&mut Writer::new(&mut bytes))
            .map_err(|e| IpnsError::Signing(e.to_string()))?;
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(IpnsError::Signing(format!(
                "the record would be {} bytes, over the 10 KiB limit",
                bytes.len()
            )));
        }
        IpnsRecord::decode(&bytes)
    }
}

fn signed_v2(data: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(SIGNATURE_V2_PREFIX.len() + data.len());
    signed.extend_from_slice(SIGNATURE_V2_PREFIX);
    signed.extend_from_slice(data);
    signed
}

fn non_empty<'a>(field: &'a Option<Cow<'_, [u8]>>) -> Option<&'a [u8]> {
    field.as_deref().filter(|bytes| !bytes.is_empty())
}

fn owned(field: &Option<Cow<'_, [u8]>>) -> Vec<u8> {
    field.as_deref().unwrap_or_default().to_vec()
}

/// Parses an RFC 3339 time exactly as go's `time.Parse(time.RFC3339Nano, ...)` does:
/// `YYYY-MM-DDTHH:MM:SS`, then optionally `.` or `,` and any number of fraction digits (past
/// nine ignored), then `Z` or `+hh:mm` / `-hh:mm` (any two-digit hours and minutes, as go
/// takes them). Upper-case `T` and `Z` only, dates and times in range, no leap second.
fn parse_rfc3339(text: &[u8]) -> Result<SystemTime, IpnsError> {
    let bad = || IpnsError::BadValidity;
    let number = |range: std::ops::Range<usize>| -> Result<u32, IpnsError> {
        let part = text.get(range).ok_or_else(bad)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|(at, c)| text.get(*at) != Some(c)) {
        return Err(bad());
    }
    let month = time::Month::try_from(number(5..7)? as u8).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(number(0..4)? as i32, month, number(8..10)? as u8)
        .map_err(|_| bad())?;
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let mut rest = &text[19..];
    let mut nanos = 0;
    if let [b'.' | b',', fraction @ ..] = rest {
        let count = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if count == 0 {
            return Err(bad());
        }
        nanos = fraction[..count.min(9)]
            .iter()
            .fold(0, |n, d| n * 10 + u32::from(d - b'0'))
            * 10u32.pow(9 - count.min(9) as u32);
        rest = &fraction[count..];
    }
    let offset_secs: i64 = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [h1, h2, m1, m2];
            if !digits.iter().all(|d| d.is_ascii_digit()) {
                return Err(bad());
            }
            let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
            let secs = (h1 * 10 + h2) * 3600 + (m1 * 10 + m2) * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return Err(bad()),
    };
    let clock = time::Time::from_hms_nano(hour as u8, minute as u8, second as u8, nanos)
        .map_err(|_| bad())?;
    // The instant, in seconds and nanoseconds from the epoch (the offset is east of UTC).
    let since_epoch = time::PrimitiveDateTime::new(date, clock).assume_utc()
        - time::OffsetDateTime::UNIX_EPOCH
        - time::Duration::seconds(offset_secs);
    let magnitude = Duration::new(
        since_epoch.whole_seconds().unsigned_abs(),
        since_epoch.subsec_nanoseconds().unsigned_abs(),
    );
    let instant = if since_epoch.is_negative() {
        UNIX_EPOCH.checked_sub(magnitude)
    } else {
        UNIX_EPOCH.checked_add(magnitude)
    };
    instant.ok_or_else(bad)
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
