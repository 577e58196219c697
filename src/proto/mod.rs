//! The protobuf schema of the DHT wire protocol and its generated code.
//!
//! `dht.rs` is generated from `dht.proto` by `generate.sh`; it is never edited by hand. The rest
//! of the crate does not use these types directly: `network::message` converts them to and from
//! the typed [`Request`](crate::Request) and [`Response`](crate::Response).

#[path = "dht.rs"]
#[rustfmt::skip]
#[allow(missing_docs, dead_code, clippy::all, unreachable_pub)]
pub(crate) mod pb;
