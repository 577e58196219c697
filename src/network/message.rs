//! Typed DHT messages and their conversion to and from the protobuf `Message`.
//!
//! Everything a remote peer sends passes through [`decode_request`] or [`decode_response`]
//! before the rest of the crate sees it, so this is where hostile input is bounded:
//!
//! - an unknown message type, a missing required field, a PUT_VALUE whose `key` differs from
//!   `record.key`, or a provider key longer than [`Limits::max_provider_key_len`] rejects the
//!   whole message with a [`MessageError`];
//! - a `Peer` entry with an invalid id is skipped, its unparsable or duplicate addresses are
//!   dropped, and its addresses are capped so that the entry stays within
//!   [`Limits::max_peer_entry_size`]; the rest of the message survives. go-libp2p-kad-dht
//!   applies the same per-entry bound.
//! - an address ending in `/p2p/<the entry's own id>` (libp2p-kad appends it) is kept without
//!   that suffix, and one ending in `/p2p/<another id>` is dropped, so addresses are stored in
//!   one form whoever sent them.

use std::borrow::Cow;
use std::collections::HashSet;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use quick_protobuf::{BytesReader, MessageRead, MessageWrite, Writer};

use crate::proto::pb;

/// A request of the DHT protocol, as sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// FIND_NODE: the peers closest to `key`. Any bytes are a valid key (go sends peer ids,
    /// multihashes and `/ipns/...` keys).
    FindNode {
        /// The lookup target.
        key: Vec<u8>,
    },
    /// GET_VALUE: the record stored under `key`, plus closer peers.
    GetValue {
        /// The record key.
        key: Vec<u8>,
    },
    /// PUT_VALUE: store `record`. On the wire `Message.key` equals `record.key`.
    PutValue {
        /// The record to store.
        record: Record,
    },
    /// ADD_PROVIDER: the sender announces that it provides `key`. Takes no response.
    AddProvider {
        /// The provided key (a multihash on the public network).
        key: Vec<u8>,
        /// The announced providers. Honest peers send exactly themselves, with addresses.
        providers: Vec<PeerRecord>,
    },
    /// GET_PROVIDERS: the providers of `key`, plus closer peers.
    GetProviders {
        /// The provided key (a multihash on the public network).
        key: Vec<u8>,
    },
    /// PING: deprecated in the protocol; answered, never sent by kadence's own logic.
    Ping,
}

/// A response of the DHT protocol, as sent by a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Answer to FIND_NODE.
    FindNode {
        /// The closest peers the server knows.
        closer_peers: Vec<PeerRecord>,
    },
    /// Answer to GET_VALUE.
    GetValue {
        /// The record, if the server holds one.
        record: Option<Record>,
        /// Peers closer to the key.
        closer_peers: Vec<PeerRecord>,
    },
    /// Answer to PUT_VALUE: the server echoes the stored record.
    PutValue {
        /// The echoed record.
        record: Record,
    },
    /// Answer to GET_PROVIDERS.
    GetProviders {
        /// Known providers of the key, with addresses.
        providers: Vec<PeerRecord>,
        /// Peers closer to the key.
        closer_peers: Vec<PeerRecord>,
    },
    /// Answer to PING.
    Ping,
}

/// The kind of a request or response, as written in `Message.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `PUT_VALUE = 0`
    PutValue,
    /// `GET_VALUE = 1`
    GetValue,
    /// `ADD_PROVIDER = 2`
    AddProvider,
    /// `GET_PROVIDERS = 3`
    GetProviders,
    /// `FIND_NODE = 4`
    FindNode,
    /// `PING = 5`
    Ping,
}

/// A peer as carried in `closerPeers` and `providerPeers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// The peer's id.
    pub id: PeerId,
    /// Its addresses, de-duplicated, in the order the sender gave them.
    pub addrs: Vec<Multiaddr>,
    /// What the sender says about its connection to the peer. Informational only.
    pub connection: ConnectionType,
}

/// The sender's view of its connection to a peer (`Message.ConnectionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectionType {
    /// No connection, and nothing known.
    #[default]
    NotConnected,
    /// Connected right now.
    Connected,
    /// Recently connected.
    CanConnect,
    /// Recently failed to connect.
    CannotConnect,
}

/// A value record (`Record` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record key, e.g. `/pk/<multihash>`.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// RFC 3339 receive time set by the storing server; empty when unset.
    pub time_received: String,
}

impl Record {
    /// A record to publish with [`Behaviour::put_value`](crate::Behaviour::put_value). Its
    /// receive time stays empty: each server that stores it sets its own.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            time_received: String::new(),
        }
    }

    /// The `/pk/<peer id>` record of a public key, as the `/pk` validator accepts it: how a
    /// node publishes its key for peers whose id does not embed it (RSA, for instance).
    pub fn public_key(key: &libp2p::identity::PublicKey) -> Self {
        let mut record_key = b"/pk/".to_vec();
        record_key.extend(key.to_peer_id().to_bytes());
        Self {
            key: record_key,
            value: key.encode_protobuf(),
            time_received: String::new(),
        }
    }
}

/// Bounds applied while decoding what a remote peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted provider key in ADD_PROVIDER and GET_PROVIDERS (Amino: 80 bytes).
    pub max_provider_key_len: usize,
    /// Largest accepted `Peer` entry; addresses past it are dropped (Amino: 8 KiB).
    pub max_peer_entry_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_provider_key_len: 80,
            max_peer_entry_size: 8 * 1024,
        }
    }
}

/// Why a message from a remote peer was rejected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MessageError {
    /// The bytes are not a protobuf `Message`. (Shared, so that the error can be cloned.)
    #[error("malformed protobuf: {0}")]
    Protobuf(#[source] std::sync::Arc<quick_protobuf::Error>),
    /// The bytes are not structurally valid protobuf (a field runs past its message).
    #[error(transparent)]
    Wire(#[from] super::wire::WireError),
    /// `Message.type` is not one of the six known types.
    #[error("unknown message type {0}")]
    UnknownType(i32),
    /// A field the message type requires is absent or empty.
    #[error("{message:?} without the required field `{field}`")]
    MissingField {
        /// The message type.
        message: MessageType,
        /// The field's name in the schema.
        field: &'static str,
    },
    /// A PUT_VALUE whose `key` differs from `record.key`.
    #[error("PUT_VALUE key does not match the record key")]
    KeyMismatch,
    /// A provider key longer than the limit.
    #[error("provider key of {len} bytes exceeds the limit of {max}")]
    ProviderKeyTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A response whose type is not the one of the request it answers.
    #[error("expected a {expected:?} response, got {actual:?}")]
    UnexpectedResponseType {
        /// The request's type.
        expected: MessageType,
        /// The response's type.
        actual: MessageType,
    },
}

impl From<quick_protobuf::Error> for MessageError {
    fn from(error: quick_protobuf::Error) -> Self {
        MessageError::Protobuf(std::sync::Arc::new(error))
    }
}

impl MessageType {
    fn from_wire(raw: i32) -> Result<Self, MessageError> {
        Ok(match raw {
            0 => Self::PutValue,
            1 => Self::GetValue,
            2 => Self::AddProvider,
            3 => Self::GetProviders,
            4 => Self::FindNode,
            5 => Self::Ping,
            other => return Err(MessageError::UnknownType(other)),
        })
    }

    fn to_wire(self) -> i32 {
        match self {
            Self::PutValue => 0,
            Self::GetValue => 1,
            Self::AddProvider => 2,
            Self::GetProviders => 3,
            Self::FindNode => 4,
            Self::Ping => 5,
        }
    }
}

impl Request {
    /// The message type of this request.
    pub fn message_type(&self) -> MessageType {
        match self {
            Request::FindNode { .. } => MessageType::FindNode,
            Request::GetValue { .. } => MessageType::GetValue,
            Request::PutValue { .. } => MessageType::PutValue,
            Request::AddProvider { .. } => MessageType::AddProvider,
            Request::GetProviders { .. } => MessageType::GetProviders,
            Request::Ping => MessageType::Ping,
        }
    }

    /// Whether the protocol expects a response. ADD_PROVIDER is the one request without.
    pub fn expects_response(&self) -> bool {
        !matches!(self, Request::AddProvider { .. })
    }
}

impl Response {
    /// The message type of this response.
    pub fn message_type(&self) -> MessageType {
        match self {
            Response::FindNode { .. } => MessageType::FindNode,
            Response::GetValue { .. } => MessageType::GetValue,
            Response::PutValue { .. } => MessageType::PutValue,
            Response::GetProviders { .. } => MessageType::GetProviders,
            Response::Ping => MessageType::Ping,
        }
    }
}

/// Encodes a request as one protobuf `Message`, without the length prefix.
pub fn encode_request(request: &Request) -> Vec<u8> {
    let mut msg = pb::Message {
        type_pb: request.message_type().to_wire(),
        ..Default::default()
    };
    match request {
        Request::FindNode { key } | Request::GetValue { key } | Request::GetProviders { key } => {
            msg.key = Cow::Borrowed(key);
        }
        Request::PutValue { record } => {
            msg.key = Cow::Borrowed(&record.key);
            msg.record = Some(record_to_pb(record));
        }
        Request::AddProvider { key, providers } => {
            msg.key = Cow::Borrowed(key);
            msg.providerPeers = providers.iter().map(peer_to_pb).collect();
        }
        Request::Ping => {}
    }
    write_pb(&msg)
}

/// Encodes a response as one protobuf `Message`, without the length prefix.
///
/// `key` is the key of the request being answered; go and js echo it, so do we.
pub fn encode_response(response: &Response, key: &[u8]) -> Vec<u8> {
    let mut msg = pb::Message {
        type_pb: response.message_type().to_wire(),
        key: Cow::Borrowed(key),
        ..Default::default()
    };
    match response {
        Response::FindNode { closer_peers } => {
            msg.closerPeers = closer_peers.iter().map(peer_to_pb).collect();
        }
        Response::GetValue {
            record,
            closer_peers,
        } => {
            msg.record = record.as_ref().map(record_to_pb);
            msg.closerPeers = closer_peers.iter().map(peer_to_pb).collect();
        }
        Response::PutValue { record } => {
            msg.key = Cow::Borrowed(&record.key);
            msg.record = Some(record_to_pb(record));
        }
        Response::GetProviders {
            providers,
            closer_peers,
        } => {
            msg.providerPeers = providers.iter().map(peer_to_pb).collect();
            msg.closerPeers = closer_peers.iter().map(peer_to_pb).collect();
        }
        Response::Ping => {}
    }
    write_pb(&msg)
}

/// Encodes a response as one whole frame, its length prefix included, into a buffer of
/// exactly its size: the answer leaves as written, with no copy to prepend the prefix and
/// without the per-entry lists of address slices the generated writer needs (which took more
/// than twice the answer's own size for entries with many addresses). Byte for byte the frame
/// of [`encode_response`].
pub(crate) fn encode_response_frame(response: &Response, key: &[u8]) -> Vec<u8> {
    let body = response_len(response, key);
    let mut buf = Vec::with_capacity(varint_len(body as u64) + body);
    put_varint(&mut buf, body as u64);
    let type_pb = response.message_type().to_wire();
    if type_pb != 0 {
        buf.push(0x08);
        put_varint(&mut buf, type_pb as u64);
    }
    let key = match response {
        Response::PutValue { record } => record.key.as_slice(),
        _ => key,
    };
    put_bytes(&mut buf, 0x12, key);
    match response {
        Response::FindNode { closer_peers } => put_peers(&mut buf, 0x42, closer_peers),
        Response::GetValue {
            record,
            closer_peers,
        } => {
            if let Some(record) = record {
                put_record(&mut buf, record);
            }
            put_peers(&mut buf, 0x42, closer_peers);
        }
        Response::PutValue { record } => put_record(&mut buf, record),
        Response::GetProviders {
            providers,
            closer_peers,
        } => {
            // The generated writer's field order: closer peers (8), then providers (9).
            put_peers(&mut buf, 0x42, closer_peers);
            put_peers(&mut buf, 0x4a, providers);
        }
        Response::Ping => {}
    }
    debug_assert_eq!(
        buf.len(),
        buf.capacity(),
        "the size computed is the size written"
    );
    buf
}

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Size of a length-delimited field of `len` bytes (one-byte tag).
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Writes a length-delimited field, left out when empty as the generated writer does.
fn put_bytes(buf: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    if !bytes.is_empty() {
        buf.push(tag);
        put_varint(buf, bytes.len() as u64);
        buf.extend_from_slice(bytes);
    }
}

fn nonempty_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        field_len(len)
    }
}

fn record_body_len(record: &Record) -> usize {
    nonempty_field_len(record.key.len())
        + nonempty_field_len(record.value.len())
        + nonempty_field_len(record.time_received.len())
}

fn put_record(buf: &mut Vec<u8>, record: &Record) {
    buf.push(0x1a);
    put_varint(buf, record_body_len(record) as u64);
    put_bytes(buf, 0x0a, &record.key);
    put_bytes(buf, 0x12, &record.value);
    put_bytes(buf, 0x2a, record.time_received.as_bytes());
}

fn connection_to_wire(connection: ConnectionType) -> u64 {
    match connection {
        ConnectionType::NotConnected => 0,
        ConnectionType::Connected => 1,
        ConnectionType::CanConnect => 2,
        ConnectionType::CannotConnect => 3,
    }
}

fn peer_body_len(peer: &PeerRecord) -> usize {
    let id: &libp2p::multihash::Multihash<64> = peer.id.as_ref();
    let addrs: usize = peer.addrs.iter().map(|a| field_len(a.len())).sum();
    let connection = match connection_to_wire(peer.connection) {
        0 => 0,
        c => 1 + varint_len(c),
    };
    field_len(id.encoded_len()) + addrs + connection
}

fn put_peers(buf: &mut Vec<u8>, tag: u8, peers: &[PeerRecord]) {
    for peer in peers {
        buf.push(tag);
        put_varint(buf, peer_body_len(peer) as u64);
        let id: &libp2p::multihash::Multihash<64> = peer.id.as_ref();
        buf.push(0x0a);
        put_varint(buf, id.encoded_len() as u64);
        // Writing to a Vec cannot fail.
        let _ = id.write(&mut *buf);
        for addr in &peer.addrs {
            put_bytes(buf, 0x12, addr.as_ref());
        }
        match connection_to_wire(peer.connection) {
            0 => {}
            c => {
                buf.push(0x18);
                put_varint(buf, c);
            }
        }
    }
}

fn response_len(response: &Response, key: &[u8]) -> usize {
    let type_pb = response.message_type().to_wire();
    let type_len = if type_pb == 0 {
        0
    } else {
        1 + varint_len(type_pb as u64)
    };
    let peers_len =
        |peers: &[PeerRecord]| -> usize { peers.iter().map(|p| field_len(peer_body_len(p))).sum() };
    let record_len = |record: &Record| field_len(record_body_len(record));
    type_len
        + match response {
            Response::FindNode { closer_peers } => {
                nonempty_field_len(key.len()) + peers_len(closer_peers)
            }
            Response::GetValue {
                record,
                closer_peers,
            } => {
                nonempty_field_len(key.len())
                    + record.as_ref().map_or(0, record_len)
                    + peers_len(closer_peers)
            }
            Response::PutValue { record } => {
                nonempty_field_len(record.key.len()) + record_len(record)
            }
            Response::GetProviders {
                providers,
                closer_peers,
            } => nonempty_field_len(key.len()) + peers_len(closer_peers) + peers_len(providers),
            Response::Ping => nonempty_field_len(key.len()),
        }
}

/// Decodes and validates an inbound request.
pub fn decode_request(bytes: &[u8], limits: &Limits) -> Result<Request, MessageError> {
    let msg = read_pb(bytes)?;
    let kind = MessageType::from_wire(msg.type_pb)?;
    let key = |field_owner: MessageType| -> Result<Vec<u8>, MessageError> {
        if msg.key.is_empty() {
            return Err(MessageError::MissingField {
                message: field_owner,
                field: "key",
            });
        }
        Ok(msg.key.to_vec())
    };
    Ok(match kind {
        MessageType::FindNode => Request::FindNode { key: key(kind)? },
        MessageType::GetValue => Request::GetValue { key: key(kind)? },
        MessageType::GetProviders => Request::GetProviders {
            key: provider_key(key(kind)?, limits)?,
        },
        MessageType::AddProvider => {
            let key = provider_key(key(kind)?, limits)?;
            let providers = peers_from_pb(&msg.providerPeers, limits);
            if providers.is_empty() {
                return Err(MessageError::MissingField {
                    message: kind,
                    field: "providerPeers",
                });
            }
            Request::AddProvider { key, providers }
        }
        MessageType::PutValue => {
            let record = msg.record.as_ref().ok_or(MessageError::MissingField {
                message: kind,
                field: "record",
            })?;
            if record.key != msg.key {
                return Err(MessageError::KeyMismatch);
            }
            if record.key.is_empty() {
                return Err(MessageError::MissingField {
                    message: kind,
                    field: "key",
                });
            }
            Request::PutValue {
                record: record_from_pb(record),
            }
        }
        MessageType::Ping => Request::Ping,
    })
}

/// Decodes a response to a request of type `expected`.
///
/// Responses are read leniently where deployed peers differ (the echoed `key` is not checked),
/// but the type must match: a mismatch means the stream is out of step.
pub fn decode_response(
    bytes: &[u8],
    expected: MessageType,
    limits: &Limits,
) -> Result<Response, MessageError> {
    let msg = read_pb(bytes)?;
    let actual = MessageType::from_wire(msg.type_pb)?;
    if actual != expected {
        return Err(MessageError::UnexpectedResponseType { expected, actual });
    }
    let closer_peers = || peers_from_pb(&msg.closerPeers, limits);
    Ok(match actual {
        MessageType::FindNode => Response::FindNode {
            closer_peers: closer_peers(),
        },
        MessageType::GetValue => Response::GetValue {
            record: msg.record.as_ref().map(record_from_pb),
            closer_peers: closer_peers(),
        },
        MessageType::PutValue => {
            Response::PutValue {
                record: msg.record.as_ref().map(record_from_pb).ok_or(
                    MessageError::MissingField {
                        message: actual,
                        field: "record",
                    },
                )?,
            }
        }
        MessageType::GetProviders => Response::GetProviders {
            providers: peers_from_pb(&msg.providerPeers, limits),
            closer_peers: closer_peers(),
        },
        MessageType::Ping => Response::Ping,
        MessageType::AddProvider => {
            // ADD_PROVIDER has no response; nothing legitimate reaches here because the
            // handler never reads one. Treat it as the stream being out of step.
            return Err(MessageError::UnexpectedResponseType { expected, actual });
        }
    })
}

fn provider_key(key: Vec<u8>, limits: &Limits) -> Result<Vec<u8>, MessageError> {
    if key.len() > limits.max_provider_key_len {
        return Err(MessageError::ProviderKeyTooLong {
            len: key.len(),
            max: limits.max_provider_key_len,
        });
    }
    Ok(key)
}

fn read_pb(bytes: &[u8]) -> Result<pb::Message<'_>, MessageError> {
    super::wire::check_message(bytes)?;
    let mut reader = BytesReader::from_bytes(bytes);
    Ok(pb::Message::from_reader(&mut reader, bytes)?)
}

fn write_pb(msg: &pb::Message<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(msg.get_size());
    let mut writer = Writer::new(&mut buf);
    msg.write_message(&mut writer)
        .expect("writing to a Vec cannot fail");
    buf
}

fn record_to_pb(record: &Record) -> pb::Record<'_> {
    pb::Record {
        key: Cow::Borrowed(&record.key),
        value: Cow::Borrowed(&record.value),
        timeReceived: Cow::Borrowed(&record.time_received),
    }
}

fn record_from_pb(record: &pb::Record<'_>) -> Record {
    Record {
        key: record.key.to_vec(),
        value: record.value.to_vec(),
        time_received: record.timeReceived.to_string(),
    }
}

fn peer_to_pb(peer: &PeerRecord) -> pb::mod_Message::Peer<'_> {
    pb::mod_Message::Peer {
        id: Cow::Owned(peer.id.to_bytes()),
        // Borrowed: copying every address of every entry was half the time of encoding.
        addrs: peer
            .addrs
            .iter()
            .map(|a| Cow::Borrowed(a.as_ref()))
            .collect(),
        connection: match peer.connection {
            ConnectionType::NotConnected => pb::mod_Message::ConnectionType::NOT_CONNECTED,
            ConnectionType::Connected => pb::mod_Message::ConnectionType::CONNECTED,
            ConnectionType::CanConnect => pb::mod_Message::ConnectionType::CAN_CONNECT,
            ConnectionType::CannotConnect => pb::mod_Message::ConnectionType::CANNOT_CONNECT,
        },
    }
}

/// The multiaddr code of `/p2p/` (421) as the varint that starts the component.
const P2P_CODE: [u8; 2] = [0xa5, 0x03];

/// Addresses of one entry compared one by one before a hash set takes over: honest entries
/// have a handful, and hashing each was a tenth of decoding a response.
const LINEAR_DEDUP_MAX: usize = 8;

/// Strips a trailing `/p2p/<id>` naming the entry's own peer (libp2p-kad appends it to every
/// address it sends), and drops an address whose trailing `/p2p/` names another peer.
pub(crate) fn without_own_peer_id(mut addr: Multiaddr, id: &PeerId) -> Option<Multiaddr> {
    // Most addresses carry no `/p2p/`: a byte scan for its code skips walking every component,
    // which was a fifth of decoding a response. A match inside another component's value only
    // costs the walk.
    if !addr.as_ref().windows(2).any(|w| w == P2P_CODE) {
        return Some(addr);
    }
    match addr.iter().last() {
        Some(Protocol::P2p(named)) if named == *id => {
            addr.pop();
            Some(addr)
        }
        Some(Protocol::P2p(_)) => None,
        _ => Some(addr),
    }
}

/// Converts received peer entries, skipping invalid ids and bounding each entry.
fn peers_from_pb(peers: &[pb::mod_Message::Peer<'_>], limits: &Limits) -> Vec<PeerRecord> {
    // SipHash, not fnv: the addresses come from a remote peer.
    let mut seen: HashSet<Multiaddr> = HashSet::new();
    peers
        .iter()
        .filter_map(|peer| {
            let id = match PeerId::from_bytes(&peer.id) {
                Ok(id) => id,
                Err(error) => {
                    tracing::debug!(%error, "skipping a peer entry with an invalid id");
                    return None;
                }
            };
            let mut size = peer.id.len();
            let mut addrs: Vec<Multiaddr> = Vec::new();
            for raw in &peer.addrs {
                // Bound by the encoded size the sender used: id plus kept addresses.
                if size + raw.len() > limits.max_peer_entry_size {
                    tracing::debug!(peer = %id, "peer entry over its size limit; addresses dropped");
                    break;
                }
                let Some(addr) = Multiaddr::try_from(raw.to_vec())
                    .ok()
                    .and_then(|addr| without_own_peer_id(addr, &id))
                else {
                    continue;
                };
                // Linear for the few addresses of an honest entry; hashed beyond, as a linear
                // check would be quadratic in a hostile entry's address count.
                let new = if addrs.len() < LINEAR_DEDUP_MAX {
                    !addrs.contains(&addr)
                } else {
                    if seen.is_empty() {
                        seen.extend(addrs.iter().cloned());
                    }
                    seen.insert(addr.clone())
                };
                if new {
                    size += raw.len();
                    addrs.push(addr);
                }
            }
            seen.clear();
            let connection = match peer.connection {
                pb::mod_Message::ConnectionType::NOT_CONNECTED => ConnectionType::NotConnected,
                pb::mod_Message::ConnectionType::CONNECTED => ConnectionType::Connected,
                pb::mod_Message::ConnectionType::CAN_CONNECT => ConnectionType::CanConnect,
                pb::mod_Message::ConnectionType::CANNOT_CONNECT => ConnectionType::CannotConnect,
            };
            Some(PeerRecord {
                id,
                addrs,
                connection,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
