//! Tests of [`Maintenance`]: what feeds the table, and what it may conclude.

use super::*;
use crate::routing_table::{Failure, KBucketConfig, KBucketTable};

fn maintenance() -> Maintenance {
    let table = KBucketTable::new(PeerId::random(), KBucketConfig::default());
    Maintenance::new(Box::new(table), 8, 64, 4, 2, Duration::from_secs(10))
}

/// A connection id not used before.
fn conn() -> ConnectionId {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    ConnectionId::new_unchecked(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

fn addr(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

#[test]
fn only_servers_with_addresses_enter() {
    let mut m = maintenance();
    let now = Instant::now();
    let (server, client) = (PeerId::random(), PeerId::random());
    m.on_connected(server, conn(), addr(9), None);
    m.on_connected(client, conn(), addr(2), Some(addr(2)));
    // Support known before any address: nothing to admit yet.
    assert_eq!(m.on_protocol_support(server, true, now), None);
    assert_eq!(
        m.on_peer_address(server, addr(1), now),
        Some(TableChange::Added(server))
    );
    assert_eq!(m.on_protocol_support(client, false, now), None);
    assert_eq!(m.on_peer_address(client, addr(3), now), None);
    assert!(m.table().contains(&server) && !m.table().contains(&client));
    // Switching to client mode removes it.
    assert!(matches!(
        m.on_protocol_support(server, false, now),
        Some(TableChange::Removed(..))
    ));
}

#[test]
fn a_client_that_comes_back_as_a_server_enters() {
    let mut m = maintenance();
    let now = Instant::now();
    let peer = PeerId::random();
    // Met inbound as a client: identify reports its listen address, once.
    m.on_connected(peer, conn(), addr(40000), None);
    assert_eq!(m.on_protocol_support(peer, false, now), None);
    assert_eq!(m.on_peer_address(peer, addr(1), now), None);
    m.on_disconnected(&peer, false, now);
    assert!(!m.table().contains(&peer));
    // Back inbound as a server; identify stays silent about the address it reported.
    m.on_connected(peer, conn(), addr(40001), None);
    assert_eq!(
        m.on_protocol_support(peer, true, now),
        Some(TableChange::Added(peer))
    );
    assert_eq!(m.table().addresses(&peer), Some(&[addr(1)][..]));
}

#[test]
fn a_dialled_address_is_enough_after_a_reconnect() {
    let mut m = maintenance();
    let now = Instant::now();
    let peer = PeerId::random();
    m.on_connected(peer, conn(), addr(1), Some(addr(1)));
    assert_eq!(m.on_protocol_support(peer, false, now), None);
    m.on_disconnected(&peer, false, now);
    m.on_connected(peer, conn(), addr(40000), None);
    assert_eq!(
        m.on_protocol_support(peer, true, now),
        Some(TableChange::Added(peer))
    );
    assert_eq!(m.table().addresses(&peer), Some(&[addr(1)][..]));
}

#[test]
fn known_addresses_never_admit_a_client() {
    let mut m = maintenance();
    let now = Instant::now();
    let peer = PeerId::random();
    // Addresses learned before any connection, and while connected as a client.
    assert_eq!(m.on_peer_address(peer, addr(1), now), None);
    m.on_connected(peer, conn(), addr(40000), Some(addr(2)));
    assert_eq!(m.on_protocol_support(peer, false, now), None);
    assert_eq!(m.on_peer_address(peer, addr(3), now), None);
    assert!(!m.table().contains(&peer));
    assert_eq!(
        m.connected_addresses(&peer),
        Some(vec![addr(3), addr(2), addr(1)])
    );
    // A server that turns client on a later connection leaves the table.
    m.on_disconnected(&peer, false, now);
    assert_eq!(m.connected_addresses(&peer), None);
    m.on_connected(peer, conn(), addr(40001), None);
    assert!(m.on_protocol_support(peer, true, now).is_some());
    m.on_disconnected(&peer, false, now);
    m.on_connected(peer, conn(), addr(40002), None);
    assert!(matches!(
        m.on_protocol_support(peer, false, now),
        Some(TableChange::Removed(..))
    ));
    assert!(!m.table().contains(&peer));
}

#[test]
fn failed_dial_addresses_are_not_offered() {
    let mut m = maintenance();
    let now = Instant::now();
    let peer = PeerId::random();
    m.on_connected(peer, conn(), addr(40000), None);
    m.on_peer_address(peer, addr(1), now);
    m.on_peer_address(peer, addr(2), now);
    m.on_disconnected(&peer, false, now);
    m.on_dial_failed(&peer, &[addr(2)], Some(Failure::NoAnswer), true, now);
    m.on_connected(peer, conn(), addr(40001), None);
    assert!(m.on_protocol_support(peer, true, now).is_some());
    assert_eq!(m.table().addresses(&peer), Some(&[addr(1)][..]));
}

#[test]
fn answering_a_request_admits_and_failures_evict() {
    let mut m = maintenance();
    let now = Instant::now();
    let peer = PeerId::random();
    m.on_connected(peer, conn(), addr(1), Some(addr(1)));
    let ok: Result<(), RequestError> = Ok(());
    let (internal, change) = m.on_request_finished(OutboundRequestId(1), peer, &ok, now);
    assert!(!internal);
    assert_eq!(change, Some(TableChange::Added(peer)));
    let err: Result<(), RequestError> = Err(RequestError::Timeout);
    // Three timeouts in a row, 30 s apart: silent for a minute.
    for i in 0..2 {
        let at = now + Duration::from_secs(30 * i);
        assert_eq!(
            m.on_request_finished(OutboundRequestId(2 + i), peer, &err, at)
                .1,
            None
        );
    }
    let at = now + Duration::from_secs(60);
    let (_, change) = m.on_request_finished(OutboundRequestId(9), peer, &err, at);
    assert!(matches!(change, Some(TableChange::Removed(..))));
}

/// A server `m` admitted, connected on `connection`.
fn admitted(m: &mut Maintenance, port: u16, now: Instant) -> (PeerId, ConnectionId) {
    let (peer, connection) = (PeerId::random(), conn());
    m.on_connected(peer, connection, addr(port), Some(addr(port)));
    assert!(m.on_protocol_support(peer, true, now).is_some());
    (peer, connection)
}

#[test]
fn timeouts_while_overloaded_are_not_counted() {
    let mut m = maintenance();
    let start = Instant::now();
    let (peer, _) = admitted(&mut m, 1, start);
    let err: Result<(), RequestError> = Err(RequestError::Timeout);
    // The liveness timer fired 3 s late: the node is overloaded, its timeouts prove nothing
    // for a request timeout (10 s here), and it runs no checks meanwhile.
    m.on_tick(start, Duration::from_secs(3));
    let later = start + Duration::from_secs(9);
    assert!(m.due_checks(PeerId::random(), later).is_empty());
    for i in 0..5 {
        let at = start + Duration::from_secs(2 * i);
        m.on_request_finished(OutboundRequestId(i), peer, &err, at);
    }
    // A timer a few milliseconds late is no overload.
    m.on_tick(later, Duration::from_millis(20));
    // Afterwards failures count again: two alone, 60 s apart, do not evict...
    let after = start + Duration::from_secs(10);
    assert_eq!(
        m.on_request_finished(OutboundRequestId(10), peer, &err, after)
            .1,
        None
    );
    let at = after + Duration::from_secs(60);
    assert_eq!(
        m.on_request_finished(OutboundRequestId(11), peer, &err, at)
            .1,
        None
    );
    assert!(
        m.table().contains(&peer),
        "the overload's five did not count"
    );
    // ...the third does.
    let (_, change) = m.on_request_finished(OutboundRequestId(12), peer, &err, at);
    assert!(matches!(change, Some(TableChange::Removed(..))));
}

#[test]
fn only_our_own_refused_dials_evict() {
    let mut m = maintenance();
    let now = Instant::now();
    let (peer, _) = admitted(&mut m, 1, now);
    let refused = Some(Failure::Unreachable);
    // Its address refuses, but it is connected (it reached us from behind a NAT).
    assert_eq!(
        m.on_dial_failed(&peer, &[addr(1)], refused, true, now),
        None
    );
    m.on_disconnected(&peer, true, now);
    // The application dialled an address the peer no longer has.
    assert_eq!(
        m.on_dial_failed(&peer, &[addr(7)], refused, false, now),
        None
    );
    // Our dial timed out: counted with the requests it failed, not here.
    let soft = Some(Failure::NoAnswer);
    assert_eq!(m.on_dial_failed(&peer, &[addr(1)], soft, true, now), None);
    // Nothing we could dial: not the peer's fault.
    assert_eq!(m.on_dial_failed(&peer, &[], None, true, now), None);
    assert!(m.table().contains(&peer));
    let change = m.on_dial_failed(&peer, &[addr(1)], refused, true, now);
    assert!(matches!(change, Some(TableChange::Removed(e, _)) if e.removed == peer));
}

#[test]
fn a_check_whose_failure_did_not_count_is_handed_out_again() {
    let mut m = maintenance();
    let start = Instant::now();
    let local = PeerId::random();
    let (peer, _) = admitted(&mut m, 1, start);
    let due = start + Duration::from_secs(3600);
    let checks = m.due_checks(local, due);
    assert_eq!(checks.len(), 1);
    m.check_started(OutboundRequestId(1), peer);
    // The node turns out overloaded while the check ran: its timeout is not counted, and the
    // check is handed out again once the overload passed.
    m.on_tick(due, Duration::from_secs(2));
    let err: Result<(), RequestError> = Err(RequestError::Timeout);
    let (internal, change) = m.on_request_finished(OutboundRequestId(1), peer, &err, due);
    assert!(internal && change.is_none());
    assert!(m.due_checks(local, due).is_empty(), "not while overloaded");
    let calm = due + Duration::from_secs(30);
    assert_eq!(m.due_checks(local, calm).len(), 1);
}

#[test]
fn kept_connections_follow_the_table() {
    // At most two kept (see `maintenance()`).
    let mut m = maintenance();
    let now = Instant::now();
    let peers: Vec<(PeerId, ConnectionId)> = (1..=3).map(|i| admitted(&mut m, i, now)).collect();
    let keep = m.update_kept();
    assert_eq!(keep.len(), 2);
    assert!(keep.iter().all(|k| k.keep));
    assert_eq!(m.kept.kept_open(), 2);
    // A kept peer leaves the table: released, and the third one kept instead.
    let gone = keep[0].peer;
    let connection = peers.iter().find(|(p, _)| *p == gone).unwrap().1;
    // (It turned client: it leaves the table, its connection stays open.)
    assert!(m.on_protocol_support(gone, false, now).is_some());
    let keep = m.update_kept();
    assert_eq!(keep.len(), 2);
    assert!(keep
        .iter()
        .any(|k| k.peer == gone && k.connection == connection && !k.keep));
    assert!(keep.iter().any(|k| k.peer != gone && k.keep));
    assert_eq!(m.kept.kept_open(), 2);
}

#[test]
fn liveness_checks_are_bounded_and_internal() {
    let mut m = maintenance();
    let start = Instant::now();
    let local = PeerId::random();
    let peers: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
    for (i, p) in peers.iter().enumerate() {
        m.on_connected(*p, conn(), addr(i as u16 + 1), Some(addr(i as u16 + 1)));
        m.on_protocol_support(*p, true, start);
    }
    let later = start + std::time::Duration::from_secs(3600);
    let due = m.due_checks(local, later);
    assert_eq!(due.len(), 4, "at most max_checks at once");
    for (i, (peer, _)) in due.iter().enumerate() {
        m.check_started(OutboundRequestId(100 + i as u64), *peer);
    }
    assert!(m.due_checks(local, later).is_empty());
    let ok: Result<(), RequestError> = Ok(());
    let (internal, _) = m.on_request_finished(OutboundRequestId(100), due[0].0, &ok, later);
    assert!(internal);
    assert_eq!(m.due_checks(local, later).len(), 1);
}

#[test]
fn only_a_lost_kept_connection_gets_its_peer_checked() {
    // At most two kept (see `maintenance()`).
    let mut m = maintenance();
    let now = Instant::now();
    let local = PeerId::random();
    let peers: Vec<(PeerId, ConnectionId)> = (1..=3).map(|i| admitted(&mut m, i, now)).collect();
    let kept: Vec<PeerId> = m.update_kept().iter().map(|k| k.peer).collect();
    let (other, other_connection) = *peers.iter().find(|(p, _)| !kept.contains(p)).unwrap();
    // The remote closed a connection we did not keep: as it may, nothing to check.
    m.on_connection_closed(other, other_connection);
    m.on_disconnected(&other, true, now);
    assert!(m.due_checks(local, now).is_empty());
    // Closed by us for idleness: nothing either.
    let (idle, idle_connection) = *peers.iter().find(|(p, _)| *p == kept[0]).unwrap();
    m.on_connection_closed(idle, idle_connection);
    m.on_disconnected(&idle, false, now);
    assert!(m.due_checks(local, now).is_empty());
    // A kept connection lost: the peer is checked.
    let (lost, lost_connection) = *peers.iter().find(|(p, _)| *p == kept[1]).unwrap();
    m.on_connection_closed(lost, lost_connection);
    m.on_disconnected(&lost, true, now);
    let due = m.due_checks(local, now);
    assert_eq!(due.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![lost]);
}
