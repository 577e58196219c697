//! Server: answers inbound requests from the routing table and the stores, as the deployed
//! peers (go-libp2p-kad-dht, js-libp2p, `libp2p-kad`) do. These are plain functions of (request, remote peer,
//! routing table, stores, time); the behaviour only carries the answer back.
//!
//! Reads (PING, FIND_NODE, GET_VALUE, GET_PROVIDERS) are answered at once. Writes (PUT_VALUE,
//! ADD_PROVIDER) are checked first (`prepare`) and stored after (`commit`), so that an
//! application may decide in between; the PUT_VALUE echo goes out only after the commit.

mod addrs;
mod inbound;
mod validator;

use std::time::{SystemTime, UNIX_EPOCH};

use libp2p::{Multiaddr, PeerId};

pub(crate) use addrs::Remote;
pub use inbound::{DecisionId, InboundOutcome, UnknownDecision};
pub(crate) use inbound::{Server, ServerAction, ServerSettings};
pub use validator::{PublicKeyValidator, ValidationError, Validator, Validators};

use crate::key::Key;
use crate::network::message::{ConnectionType, PeerRecord, Record, Request, Response};
use crate::routing_table::RoutingTable;
use crate::store::{Lifetimes, ProviderRecord, Source, Store, StoreError, ValueRecord};

/// Why an inbound request was not honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundRejection {
    /// The record failed validation (or its namespace has no validator).
    #[error(transparent)]
    InvalidRecord(#[from] ValidationError),
    /// The stored record is better than the one sent (by the validator's select).
    #[error("the stored record is newer")]
    OutdatedRecord,
    /// ADD_PROVIDER named only peers other than its sender.
    #[error("provider record for another peer")]
    ForeignProvider,
    /// ADD_PROVIDER carried no address for its sender.
    #[error("provider record without addresses")]
    NoProviderAddress,
    /// The store refused it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The application refused it.
    #[error("refused by the application")]
    RefusedByApplication,
}

/// A write waiting to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRequest {
    /// A validated value record, better than any stored one.
    PutValue(ValueRecord),
    /// A provider record announced by its own provider.
    AddProvider(ProviderRecord),
}

/// The server's verdict on a request.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// A read, answered.
    Answer(Response),
    /// A write, ready to be committed.
    Store(StoreRequest),
    /// Not honoured: the stream is reset (a request with a response) or nothing is stored.
    Reject(InboundRejection),
}

/// What the server reads besides the stores.
pub(crate) struct ServerContext<'a> {
    pub(crate) local: PeerId,
    /// Where this node can be reached (external addresses, else listen addresses).
    pub(crate) local_addrs: &'a [Multiaddr],
    pub(crate) remote: PeerId,
    /// The remote end of the request's connection.
    pub(crate) remote_end: Remote,
    pub(crate) k: usize,
    pub(crate) max_message_size: usize,
    /// Most bytes of peer entries (closer peers and providers) in one answer.
    pub(crate) max_answer_size: usize,
    /// Most addresses kept, and handed out, per provider record.
    pub(crate) max_provider_addrs: usize,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) table: &'a dyn RoutingTable,
    pub(crate) validators: &'a Validators,
    /// Addresses of a peer connected to us but not in the table: go lists a connected
    /// FIND_NODE target even when it is not a server.
    pub(crate) connected_addrs: &'a dyn Fn(&PeerId) -> Option<Vec<Multiaddr>>,
    pub(crate) now: SystemTime,
}

/// Checks a request and answers it if it is a read.
pub(crate) fn prepare(
    ctx: &ServerContext<'_>,
    store: &mut dyn Store,
    request: Request,
) -> Prepared {
    match request {
        Request::Ping => Prepared::Answer(Response::Ping),
        Request::FindNode { key } => {
            let mut budget = answer_budget(ctx, &key);
            Prepared::Answer(Response::FindNode {
                closer_peers: fit(find_node(ctx, &key), &mut budget),
            })
        }
        Request::GetValue { key } => Prepared::Answer(Response::GetValue {
            // A store failure still leaves the closer peers worth answering with.
            record: store
                .get(&key, ctx.now)
                .inspect_err(|e| tracing::warn!(%e, "record store read failed"))
                .ok()
                .flatten()
                .map(|r| to_wire(&r)),
            closer_peers: fit(closer_peers(ctx, &key), &mut answer_budget(ctx, &key)),
        }),
        Request::GetProviders { key } => Prepared::Answer(get_providers(ctx, store, &key)),
        Request::PutValue { record } => match check_put(ctx, store, record) {
            Ok(record) => Prepared::Store(StoreRequest::PutValue(record)),
            Err(rejection) => Prepared::Reject(rejection),
        },
        Request::AddProvider { key, providers } => match check_provider(ctx, key, providers) {
            Ok(record) => Prepared::Store(StoreRequest::AddProvider(record)),
            Err(rejection) => Prepared::Reject(rejection),
        },
    }
}

/// Stores a prepared write from `source`. Returns the response to send (the PUT_VALUE echo),
/// if any.
pub(crate) fn commit(
    store: &mut dyn Store,
    request: StoreRequest,
    source: Source,
) -> Result<Option<Response>, InboundRejection> {
    match request {
        StoreRequest::PutValue(record) => {
            let echo = to_wire(&record);
            store.put_from(record, source)?;
            // go's client checks that the echo carries the value it sent.
            Ok(Some(Response::PutValue { record: echo }))
        }
        StoreRequest::AddProvider(record) => {
            store.add_provider_from(record, source)?;
            Ok(None)
        }
    }
}

/// Bytes of peer entries one answer may carry: the configured answer size (within the largest
/// message), less the key and framing.
fn answer_budget(ctx: &ServerContext<'_>, key: &[u8]) -> usize {
    ctx.max_answer_size
        .min(ctx.max_message_size)
        .saturating_sub(key.len() + 64)
}

/// The entries that fit in `budget`, in order; one too large for what is left is skipped, so
/// that one fat entry does not cut the smaller ones after it.
fn fit(peers: Vec<PeerRecord>, budget: &mut usize) -> Vec<PeerRecord> {
    peers
        .into_iter()
        .filter(|peer| {
            let len = encoded_len(peer);
            let fits = len <= *budget;
            if fits {
                *budget -= len;
            }
            fits
        })
        .collect()
}

/// The k closest peers to `key` that we know, without the requester.
fn closer_peers(ctx: &ServerContext<'_>, key: &[u8]) -> Vec<PeerRecord> {
    let mut peers = ctx.table.local_closest_peers(&Key::new(key), ctx.k + 1);
    peers.retain(|p| p.id != ctx.remote);
    peers.truncate(ctx.k);
    peers
}

/// FIND_NODE: the closest peers, with the target itself first when we know where it is. When
/// the target is this node, it is listed first too, with its own addresses, as js does: a
/// FIND_NODE for a peer's own id is how go checks a peer before admitting it, and an answer
/// that names us is never empty.
fn find_node(ctx: &ServerContext<'_>, key: &[u8]) -> Vec<PeerRecord> {
    let mut peers = closer_peers(ctx, key);
    let Ok(target) = PeerId::from_bytes(key) else {
        return peers;
    };
    if target == ctx.remote {
        return peers;
    }
    if target == ctx.local {
        if !ctx.local_addrs.is_empty() {
            let me = PeerRecord {
                id: ctx.local,
                addrs: ctx.local_addrs.to_vec(),
                connection: ConnectionType::Connected,
            };
            peers.insert(0, me);
            peers.truncate(ctx.k);
        }
        return peers;
    }
    let known = ctx
        .table
        .addresses(&target)
        .map(|a| (a.to_vec(), ConnectionType::NotConnected))
        .or_else(|| (ctx.connected_addrs)(&target).map(|a| (a, ConnectionType::Connected)));
    if let Some((addrs, connection)) = known.filter(|(a, _)| !a.is_empty()) {
        peers.retain(|p| p.id != target);
        peers.insert(
            0,
            PeerRecord {
                id: target,
                addrs,
                connection,
            },
        );
    }
    peers
}

/// GET_PROVIDERS: the closer peers, then the providers (with at most `max_provider_addrs`
/// addresses, while those are fresh) that fit in what is left of the answer's bytes.
fn get_providers(ctx: &ServerContext<'_>, store: &mut dyn Store, key: &[u8]) -> Response {
    let mut budget = answer_budget(ctx, key);
    let closer_peers = fit(closer_peers(ctx, key), &mut budget);
    let records = store
        .providers(key, ctx.now)
        .inspect_err(|e| tracing::warn!(%e, "provider store read failed"))
        .unwrap_or_default();
    let providers = records.into_iter().map(|mut record| {
        if record.addrs_expire > ctx.now {
            record.addrs.truncate(ctx.max_provider_addrs);
        } else {
            record.addrs.clear();
        }
        // The answer may wait a while for a slow reader: keep no room for dropped addresses.
        record.addrs.shrink_to_fit();
        PeerRecord {
            id: record.provider,
            addrs: record.addrs,
            connection: ConnectionType::NotConnected,
        }
    });
    Response::GetProviders {
        providers: fit(providers.collect(), &mut budget),
        closer_peers,
    }
}

/// An upper bound of a peer entry's encoded size: field tags and length prefixes included.
fn encoded_len(peer: &PeerRecord) -> usize {
    // The id's length without encoding it: this runs for every entry of every answer.
    let id: &libp2p::multihash::Multihash<64> = peer.id.as_ref();
    let id = id.encoded_len() + 3;
    let addrs: usize = peer.addrs.iter().map(|a| a.len() + 4).sum();
    id + addrs + 2 + 6
}

fn check_put(
    ctx: &ServerContext<'_>,
    store: &mut dyn Store,
    record: Record,
) -> Result<ValueRecord, InboundRejection> {
    ctx.validators.validate(&record.key, &record.value)?;
    if let Some(existing) = store.get(&record.key, ctx.now)? {
        let best = ctx
            .validators
            .select(&record.key, &[&record.value, &existing.value])?;
        if best != 0 {
            return Err(InboundRejection::OutdatedRecord);
        }
    }
    Ok(ValueRecord {
        key: record.key,
        value: record.value,
        received: ctx.now,
        expires: later(ctx.now, ctx.lifetimes.value_max_age),
    })
}

fn check_provider(
    ctx: &ServerContext<'_>,
    key: Vec<u8>,
    providers: Vec<PeerRecord>,
) -> Result<ProviderRecord, InboundRejection> {
    // Only the sender may announce itself; entries for other peers are ignored, as in go.
    let own = providers
        .into_iter()
        .find(|p| p.id == ctx.remote)
        .ok_or(InboundRejection::ForeignProvider)?;
    if own.addrs.is_empty() {
        return Err(InboundRejection::NoProviderAddress);
    }
    // Filtered after the check, as go does: a provider whose addresses are all filtered (a
    // relayed one, say) is still stored, and an asker looks its addresses up.
    let addrs = addrs::provider_addrs(own.addrs, &ctx.remote_end, ctx.max_provider_addrs);
    Ok(ProviderRecord {
        key,
        provider: own.id,
        addrs,
        received: ctx.now,
        expires: later(ctx.now, ctx.lifetimes.provider_validity),
        addrs_expire: later(ctx.now, ctx.lifetimes.provider_addrs),
    })
}

/// `time + lifetime`, saturating: a huge configured lifetime means "practically forever".
fn later(time: SystemTime, lifetime: std::time::Duration) -> SystemTime {
    time.checked_add(lifetime)
        .unwrap_or_else(|| time + std::time::Duration::from_secs(100 * 365 * 24 * 3600))
}

fn to_wire(record: &ValueRecord) -> Record {
    Record {
        key: record.key.clone(),
        value: record.value.clone(),
        time_received: rfc3339(record.received),
    }
}

/// Formats a time as go's `FormatRFC3339` does (RFC 3339 in UTC, nanoseconds without trailing
/// zeros), e.g. `2026-11-25T14:03:07.5Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    let nanos = since.subsec_nanos();
    if nanos != 0 {
        let digits = format!("{nanos:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
