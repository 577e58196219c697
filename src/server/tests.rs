use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};

use super::*;
use crate::network::message::encode_response;
use crate::routing_table::{KBucketConfig, KBucketTable};
use crate::store::{MemoryStore, MemoryStoreConfig, ProviderStore};

struct Fixture {
    local: PeerId,
    local_addrs: Vec<Multiaddr>,
    remote: PeerId,
    table: KBucketTable,
    store: MemoryStore,
    validators: Validators,
    now: SystemTime,
    remote_end: Remote,
    max_answer_size: usize,
    max_provider_addrs: usize,
}

fn addr(i: usize) -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{}", 1000 + i).parse().unwrap()
}

impl Fixture {
    fn new(peers: usize) -> Self {
        let local = PeerId::random();
        let mut table = KBucketTable::new(local, KBucketConfig::default());
        for i in 0..peers {
            table.on_server_peer(PeerId::random(), &[addr(i)], None, Instant::now());
        }
        Self {
            local,
            local_addrs: vec![addr(4000)],
            remote: PeerId::random(),
            table,
            store: MemoryStore::new(MemoryStoreConfig::default()),
            validators: Validators::default(),
            now: SystemTime::now(),
            // A peer on loopback, as the fixture's addresses are.
            remote_end: Remote::of(&addr(0)),
            max_answer_size: 64 * 1024,
            max_provider_addrs: 16,
        }
    }

    fn ask(&mut self, request: Request) -> Prepared {
        self.ask_with(request, &|_| None)
    }

    fn ask_with(
        &mut self,
        request: Request,
        connected: &dyn Fn(&PeerId) -> Option<Vec<Multiaddr>>,
    ) -> Prepared {
        let ctx = ServerContext {
            local: self.local,
            local_addrs: &self.local_addrs,
            remote: self.remote,
            remote_end: self.remote_end,
            k: 20,
            max_message_size: 4 << 20,
            max_answer_size: self.max_answer_size,
            max_provider_addrs: self.max_provider_addrs,
            lifetimes: Lifetimes::default(),
            table: &self.table,
            validators: &self.validators,
            connected_addrs: connected,
            now: self.now,
        };
        prepare(&ctx, &mut self.store, request)
    }

    /// Prepares and, for a write, commits: what the behaviour does without a filter.
    fn handle(&mut self, request: Request) -> Result<Option<Response>, InboundRejection> {
        match self.ask(request) {
            Prepared::Answer(r) => Ok(Some(r)),
            Prepared::Reject(e) => Err(e),
            Prepared::Store(s) => commit(&mut self.store, s, self.remote_end.source(self.remote)),
        }
    }
}

fn closer(response: Prepared) -> Vec<PeerRecord> {
    match response {
        Prepared::Answer(Response::FindNode { closer_peers }) => closer_peers,
        other => panic!("not a FIND_NODE answer: {other:?}"),
    }
}

#[test]
fn ping_is_echoed() {
    let mut f = Fixture::new(0);
    assert!(matches!(
        f.ask(Request::Ping),
        Prepared::Answer(Response::Ping)
    ));
}

#[test]
fn find_node_returns_k_closest_without_self_or_requester() {
    let mut f = Fixture::new(200);
    // The requester is in our table: it must not be returned to itself.
    f.table
        .on_server_peer(f.remote, &[addr(999)], None, Instant::now());
    let key = f.remote.to_bytes();
    let peers = closer(f.ask(Request::FindNode { key: key.clone() }));
    assert_eq!(peers.len(), 20);
    assert!(peers.iter().all(|p| p.id != f.remote && p.id != f.local));
    assert!(peers.iter().all(|p| !p.addrs.is_empty()));
    // Ordered by distance to the key.
    let target = Key::new(&key);
    let distances: Vec<_> = peers
        .iter()
        .map(|p| Key::from_peer(&p.id).distance(&target))
        .collect();
    assert!(distances.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn find_node_for_our_own_id_lists_us_first_as_js_does() {
    let mut f = Fixture::new(50);
    let peers = closer(f.ask(Request::FindNode {
        key: f.local.to_bytes(),
    }));
    assert_eq!(peers.len(), 20);
    assert_eq!(peers[0].id, f.local);
    assert_eq!(peers[0].addrs, vec![addr(4000)]);
    assert_eq!(peers.iter().filter(|p| p.id == f.local).count(), 1);
    // With an empty table the answer still names us: never empty.
    let mut lonely = Fixture::new(0);
    let peers = closer(lonely.ask(Request::FindNode {
        key: lonely.local.to_bytes(),
    }));
    assert_eq!(peers.len(), 1);
    // Without a known address of our own we cannot be listed.
    lonely.local_addrs.clear();
    let peers = closer(lonely.ask(Request::FindNode {
        key: lonely.local.to_bytes(),
    }));
    assert!(peers.is_empty());
}

#[test]
fn find_node_puts_a_known_target_first() {
    // Few enough peers that no bucket is full, so the target gets in.
    let mut f = Fixture::new(10);
    let target = PeerId::random();
    f.table
        .on_server_peer(target, &[addr(500)], None, Instant::now());
    let peers = closer(f.ask(Request::FindNode {
        key: target.to_bytes(),
    }));
    assert_eq!(peers[0].id, target);
    assert_eq!(peers.iter().filter(|p| p.id == target).count(), 1);

    // A connected peer that is not in the table (a client) is listed first too, as go does.
    let client = PeerId::random();
    let connected = move |p: &PeerId| (*p == client).then(|| vec![addr(77)]);
    let peers = closer(f.ask_with(
        Request::FindNode {
            key: client.to_bytes(),
        },
        &connected,
    ));
    assert_eq!(peers[0].id, client);
    assert_eq!(peers[0].connection, ConnectionType::Connected);
    // Known, but without addresses: left out.
    let nowhere = |_: &PeerId| Some(Vec::new());
    let unknown = PeerId::random();
    let peers = closer(f.ask_with(
        Request::FindNode {
            key: unknown.to_bytes(),
        },
        &nowhere,
    ));
    assert!(peers.iter().all(|p| p.id != unknown));
}

fn pk_record() -> Record {
    Record::public_key(&Keypair::generate_ed25519().public())
}

#[test]
fn put_value_validates_stores_and_echoes() {
    let mut f = Fixture::new(10);
    let record = pk_record();
    let echo = f
        .handle(Request::PutValue {
            record: record.clone(),
        })
        .unwrap()
        .unwrap();
    let Response::PutValue { record: echoed } = echo else {
        panic!("an echo")
    };
    assert_eq!(echoed.key, record.key);
    assert_eq!(echoed.value, record.value);
    assert!(echoed.time_received.ends_with('Z'));
    let got = f
        .handle(Request::GetValue {
            key: record.key.clone(),
        })
        .unwrap()
        .unwrap();
    let Response::GetValue {
        record: Some(stored),
        closer_peers,
    } = got
    else {
        panic!("the record")
    };
    assert_eq!(stored.value, record.value);
    assert_eq!(closer_peers.len(), 10);
}

#[test]
fn put_value_refuses_invalid_unknown_and_outdated_records() {
    let mut f = Fixture::new(0);
    let mut bad = pk_record();
    bad.value = pk_record().value;
    assert!(matches!(
        f.handle(Request::PutValue { record: bad }),
        Err(InboundRejection::InvalidRecord(
            ValidationError::Invalid { .. }
        ))
    ));
    let unknown = Record {
        key: b"/app/whatever".to_vec(),
        value: b"v".to_vec(),
        time_received: String::new(),
    };
    assert!(matches!(
        f.handle(Request::PutValue { record: unknown }),
        Err(InboundRejection::InvalidRecord(
            ValidationError::UnknownNamespace(_)
        ))
    ));

    // A namespace whose select prefers the stored record.
    struct KeepFirst;
    impl Validator for KeepFirst {
        fn validate(&self, _: &[u8], _: &[u8]) -> Result<(), crate::server::ValidationError> {
            Ok(())
        }
        fn select(&self, _: &[u8], values: &[&[u8]]) -> usize {
            (0..values.len()).max_by_key(|i| values[*i]).unwrap()
        }
    }
    f.validators.register("seq", KeepFirst);
    let put = |v: &[u8]| Request::PutValue {
        record: Record {
            key: b"/seq/a".to_vec(),
            value: v.to_vec(),
            time_received: String::new(),
        },
    };
    assert!(f.handle(put(b"5")).is_ok());
    assert_eq!(f.handle(put(b"3")), Err(InboundRejection::OutdatedRecord));
    assert!(f.handle(put(b"7")).is_ok());
}

#[test]
fn put_value_keeps_the_best_ipns_record() {
    use crate::ipns::{IpnsError, IpnsRecord};
    let mut f = Fixture::new(0);
    let keypair = Keypair::generate_ed25519();
    let name = keypair.public().to_peer_id();
    let put = |sequence: u64, lifetime: Duration| Request::PutValue {
        record: IpnsRecord::builder("/ipfs/bafkqaaa")
            .sequence(sequence)
            .valid_until(SystemTime::now() + lifetime)
            .sign(&keypair)
            .unwrap()
            .to_dht_record(&name),
    };
    let hour = Duration::from_secs(3600);
    let first = put(5, hour);
    // Stored and echoed, as go's client expects.
    let Request::PutValue { record: sent } = &first else {
        unreachable!()
    };
    match f.handle(first.clone()) {
        Ok(Some(Response::PutValue { record })) => {
            assert_eq!((&record.key, &record.value), (&sent.key, &sent.value))
        }
        other => panic!("not an echo: {other:?}"),
    }
    // The same record again is accepted, as go accepts it.
    assert!(f.handle(first).is_ok());
    assert_eq!(
        f.handle(put(4, 2 * hour)),
        Err(InboundRejection::OutdatedRecord)
    );
    assert!(f.handle(put(6, hour)).is_ok());
    let expired = Request::PutValue {
        record: IpnsRecord::builder("/ipfs/bafkqaaa")
            .sequence(9)
            .valid_until(SystemTime::now() - Duration::from_secs(1))
            .sign(&keypair)
            .unwrap()
            .to_dht_record(&name),
    };
    assert_eq!(
        f.handle(expired),
        Err(InboundRejection::InvalidRecord(ValidationError::Ipns(
            IpnsError::Expired
        )))
    );
}

#[test]
fn add_provider_takes_only_the_senders_own_record_with_addresses() {
    let mut f = Fixture::new(5);
    let key = b"\x12\x20provided".to_vec();
    let other = PeerRecord {
        id: PeerId::random(),
        addrs: vec![addr(1)],
        connection: ConnectionType::Connected,
    };
    assert_eq!(
        f.handle(Request::AddProvider {
            key: key.clone(),
            providers: vec![other.clone()],
        }),
        Err(InboundRejection::ForeignProvider)
    );
    let bare = PeerRecord {
        id: f.remote,
        addrs: vec![],
        connection: ConnectionType::Connected,
    };
    assert_eq!(
        f.handle(Request::AddProvider {
            key: key.clone(),
            providers: vec![bare],
        }),
        Err(InboundRejection::NoProviderAddress)
    );
    let own = PeerRecord {
        id: f.remote,
        addrs: vec![addr(2)],
        connection: ConnectionType::Connected,
    };
    assert_eq!(
        f.handle(Request::AddProvider {
            key: key.clone(),
            providers: vec![other, own],
        }),
        Ok(None),
        "no response to ADD_PROVIDER"
    );
    let Ok(Some(Response::GetProviders { providers, .. })) =
        f.handle(Request::GetProviders { key: key.clone() })
    else {
        panic!("providers")
    };
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].id, f.remote);
    assert_eq!(providers[0].addrs, vec![addr(2)]);

    // After 24 h the addresses are no longer handed out; after 48 h the record is gone.
    f.now += Duration::from_secs(25 * 3600);
    let Ok(Some(Response::GetProviders { providers, .. })) =
        f.handle(Request::GetProviders { key: key.clone() })
    else {
        panic!("providers")
    };
    assert!(providers[0].addrs.is_empty());
    f.now += Duration::from_secs(24 * 3600);
    let Ok(Some(Response::GetProviders { providers, .. })) =
        f.handle(Request::GetProviders { key })
    else {
        panic!("providers")
    };
    assert!(providers.is_empty());
}

#[test]
fn get_providers_fits_in_the_largest_message() {
    let mut f = Fixture::new(20);
    let key = b"\x12\x20popular".to_vec();
    for i in 0..200 {
        let provider = PeerId::random();
        f.store
            .add_provider(ProviderRecord {
                key: key.clone(),
                provider,
                addrs: (0..4).map(|j| addr(i * 4 + j)).collect(),
                received: f.now,
                expires: f.now + Duration::from_secs(3600),
                addrs_expire: f.now + Duration::from_secs(3600),
            })
            .unwrap();
    }
    let max = 8 * 1024;
    let ctx = ServerContext {
        local: f.local,
        local_addrs: &f.local_addrs,
        remote: f.remote,
        remote_end: Remote::of(&addr(0)),
        k: 20,
        max_message_size: max,
        max_answer_size: usize::MAX,
        max_provider_addrs: 16,
        lifetimes: Lifetimes::default(),
        table: &f.table,
        validators: &f.validators,
        connected_addrs: &|_| None,
        now: f.now,
    };
    let response = get_providers(&ctx, &mut f.store, &key);
    let Response::GetProviders { providers, .. } = &response else {
        panic!()
    };
    assert!(!providers.is_empty() && providers.len() < 200);
    let bytes = encode_response(&response, &key);
    assert!(bytes.len() <= max, "{} > {max}", bytes.len());
}

#[test]
fn time_received_is_formatted_like_go() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::new(951_782_400, 500_000_000)),
        "2000-02-29T00:00:00.5Z"
    );
}

/// The answer budget counts an id by its multihash's length instead of encoding it.
#[test]
fn an_entry_budget_counts_every_byte_of_the_id() {
    let ids = [
        PeerId::random(),
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id(),
        libp2p::identity::Keypair::generate_secp256k1()
            .public()
            .to_peer_id(),
    ];
    for id in ids {
        let peer = PeerRecord {
            id,
            addrs: Vec::new(),
            connection: ConnectionType::NotConnected,
        };
        assert!(super::encoded_len(&peer) >= id.to_bytes().len() + 3);
    }
}

/// A provider record of `addrs` addresses for `key`, as a store may hold it.
fn fat_provider(key: &[u8], addrs: usize, now: SystemTime) -> ProviderRecord {
    ProviderRecord {
        key: key.to_vec(),
        provider: PeerId::random(),
        addrs: (0..addrs).map(addr).collect(),
        received: now,
        expires: now + Duration::from_secs(3600),
        addrs_expire: now + Duration::from_secs(3600),
    }
}

#[test]
fn answers_stay_within_the_answer_size_whatever_the_store_holds() {
    let mut f = Fixture::new(200);
    f.max_answer_size = 16 * 1024;
    let key = b"\x12\x20popular".to_vec();
    // Records as a store filled before the address cap would hold them: 800 addresses each.
    for _ in 0..64 {
        f.store
            .add_provider(fat_provider(&key, 800, f.now))
            .unwrap();
    }
    let Prepared::Answer(response) = f.ask(Request::GetProviders { key: key.clone() }) else {
        panic!("not answered")
    };
    let bytes = encode_response(&response, &key);
    assert!(bytes.len() <= 16 * 1024, "{} bytes", bytes.len());
    let Response::GetProviders {
        providers,
        closer_peers,
    } = response
    else {
        panic!()
    };
    assert_eq!(closer_peers.len(), 20, "closer peers come first");
    assert!(!providers.is_empty());
    assert!(
        providers.iter().all(|p| p.addrs.len() <= 16),
        "addresses capped"
    );

    let Prepared::Answer(response) = f.ask(Request::FindNode { key: key.clone() }) else {
        panic!("not answered")
    };
    f.max_answer_size = 1024;
    assert!(encode_response(&response, &key).len() <= 16 * 1024);
    let small = closer(f.ask(Request::FindNode { key: key.clone() }));
    assert!(!small.is_empty() && small.len() < 20, "{}", small.len());
}

#[test]
fn provider_records_keep_a_capped_and_filtered_set_of_addresses() {
    let mut f = Fixture::new(0);
    f.remote_end = Remote::of(&"/ip4/8.8.8.8/tcp/4001".parse().unwrap());
    let key = b"\x12\x20k".to_vec();
    let mut addrs: Vec<Multiaddr> = vec!["/ip4/192.168.0.1/tcp/1".parse().unwrap()];
    addrs.extend((0..800).map(|i| -> Multiaddr {
        format!("/ip4/1.2.{}.{}/tcp/1", i / 256, i % 256)
            .parse()
            .unwrap()
    }));
    let request = Request::AddProvider {
        key: key.clone(),
        providers: vec![PeerRecord {
            id: f.remote,
            addrs: addrs.clone(),
            connection: ConnectionType::Connected,
        }],
    };
    f.handle(request).unwrap();
    let stored = f.store.providers(&key, f.now).unwrap();
    assert_eq!(
        stored[0].addrs,
        addrs[1..17].to_vec(),
        "public ones, the first 16"
    );

    // Only private addresses from a public peer: still stored, without addresses, as go does.
    let request = Request::AddProvider {
        key: b"\x12\x20j".to_vec(),
        providers: vec![PeerRecord {
            id: f.remote,
            addrs: vec![addrs[0].clone()],
            connection: ConnectionType::Connected,
        }],
    };
    f.handle(request).unwrap();
    assert!(f.store.providers(b"\x12\x20j", f.now).unwrap()[0]
        .addrs
        .is_empty());
}
