//! The protobuf schema of the DHT wire protocol and its generated code.
//!
//! `dht.rs` and `ipns.rs` are generated from `dht.proto` and `ipns.proto` by `generate.sh`;
//! they are never edited by hand. The rest of the crate does not use these types directly:
//! `network::message` converts them to and from the typed [`Request`](crate::Request) and
//! [`Response`](crate::Response), and `ipns` to and from its record type.

#[path = "dht.rs"]
#[rustfmt::skip]
#[allow(missing_docs, dead_code, clippy::all, unreachable_pub)]
pub(crate) mod pb;

/// The IPNS record's envelope; [`crate::ipns`] converts it to and from
/// [`IpnsRecord`](crate::ipns::IpnsRecord).
#[path = "ipns.rs"]
#[rustfmt::skip]
#[allow(missing_docs, dead_code, clippy::all, unreachable_pub)]
pub(crate) mod ipns_pb;
