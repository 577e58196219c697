//! IPNS records on the DHT: create, sign, read, validate and select them.
//!
//! Every server of the Amino DHT stores `/ipns/<name>` records (go-libp2p-kad-dht will not start
//! on `/ipfs` without an IPNS validator). A name is a peer id; its routing key is `/ipns/` + the
//! peer id's binary multihash ([`routing_key`]). The record ([`IpnsRecord`]) follows the
//! IPNS record spec (specs.ipfs.tech, "IPNS Record") as go's `boxo/ipns` reads and writes it:
//! a protobuf `IpnsEntry` whose DAG-CBOR `data` holds the value, validity, sequence and TTL,
//! signed by `signatureV2` over `"ipns-signature:"` + `data`.
//!
//! [`IpnsValidator`] is registered by [`Validators::default`](crate::Validators::default), and so
//! by [`Config::amino`](crate::Config::amino): a server stores only valid records and keeps the
//! best one (higher sequence, then later validity), and `get_value` returns the best valid one.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use kadence::ipns::{self, IpnsRecord};
//! use libp2p::identity::Keypair;
//!
//! let keypair = Keypair::generate_ed25519();
//! let name = keypair.public().to_peer_id();
//! let record = IpnsRecord::builder("/ipfs/bafkqaaa")
//!     .sequence(1)
//!     .valid_for(Duration::from_secs(24 * 3600))
//!     .sign(&keypair)?;
//! // What `Behaviour::put_value` takes:
//! let dht_record = record.to_dht_record(&name);
//! assert_eq!(dht_record.key, ipns::routing_key(&name));
//!
//! // What a reader does with the value `get_value` returned:
//! let read = IpnsRecord::decode(&dht_record.value)?;
//! read.verify(&name, SystemTime::now())?;
//! assert_eq!(read.value(), b"/ipfs/bafkqaaa");
//! assert_eq!(read.sequence(), 1);
//! # Ok::<(), kadence::ipns::IpnsError>(())
//! ```

mod record;
mod validator;

use libp2p::PeerId;

pub use record::{IpnsRecord, IpnsRecordBuilder};
pub use validator::IpnsValidator;

/// The largest encoded record accepted or created: 10 KiB, the spec's and go's limit.
pub const MAX_RECORD_SIZE: usize = 10 * 1024;

/// The routing-key prefix of IPNS records.
const PREFIX: &[u8] = b"/ipns/";

/// The DHT key of a name's record: `/ipns/` + the peer id's binary multihash.
pub fn routing_key(name: &PeerId) -> Vec<u8> {
    let mut key = PREFIX.to_vec();
    key.extend(name.to_bytes());
    key
}

/// The name (a peer id) whose record lives under `key`, as made by [`routing_key`].
pub fn name_from_routing_key(key: &[u8]) -> Result<PeerId, IpnsError> {
    let id = key.strip_prefix(PREFIX).ok_or(IpnsError::BadName)?;
    PeerId::from_bytes(id).map_err(|_| IpnsError::BadName)
}

/// Why an IPNS record is malformed, invalid, or cannot be made. The variants follow go's
/// (`boxo/ipns`) refusals, so kadence refuses exactly what go refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpnsError {
    /// The encoded record is larger than [`MAX_RECORD_SIZE`].
    #[error("record of {0} bytes is larger than the 10 KiB limit")]
    TooLarge(usize),
    /// The record is not a protobuf `IpnsEntry`.
    #[error("record is not a protobuf IpnsEntry")]
    Protobuf,
    /// The record has no DAG-CBOR `data`.
    #[error("record has no data")]
    MissingData,
    /// The `data` is not the DAG-CBOR map the spec prescribes.
    #[error("record data is not valid DAG-CBOR: {0}")]
    Cbor(String),
    /// The record has no `signatureV2` (V1-only records are refused, as go refuses them).
    #[error("record has no signatureV2")]
    MissingSignature,
    /// A legacy V1 field differs from its value in `data`.
    #[error("field {0} differs between the protobuf and the CBOR data")]
    FieldMismatch(&'static str),
    /// The validity type is not EOL (0), the only one defined.
    #[error("unknown validity type {0}")]
    UnknownValidityType(i64),
    /// The validity is not an RFC 3339 time.
    #[error("validity is not an RFC 3339 time")]
    BadValidity,
    /// The record's validity (end of life) has passed.
    #[error("record expired")]
    Expired,
    /// The TTL is negative (the spec makes it a non-negative cache hint; go refuses it).
    #[error("negative TTL")]
    NegativeTtl,
    /// The key is not `/ipns/` + a binary peer id.
    #[error("key is not /ipns/ followed by a peer id")]
    BadName,
    /// The name does not inline its public key (RSA, ECDSA) and the record carries none.
    #[error("the name does not contain its public key and the record carries none")]
    NoPublicKey,
    /// The record's `pubKey`, or the key inlined in the name, is not a valid public key.
    #[error("invalid public key")]
    BadPublicKey,
    /// The record's `pubKey` is not the key of the name.
    #[error("public key does not match the name")]
    PublicKeyMismatch,
    /// `signatureV2` does not verify with the name's key.
    #[error("signature does not verify")]
    BadSignature,
    /// The keypair could not sign, or the new record would exceed [`MAX_RECORD_SIZE`].
    #[error("cannot sign the record: {0}")]
    Signing(String),
}
