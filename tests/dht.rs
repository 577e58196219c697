//! Every DHT operation end to end in networks of 25 to 30 kadence nodes over the memory
//! transport: closest peers, find peer, put/get value, provide/find providers, a node that joins
//! late, a provider that goes away, and a value updated twice.

mod common;

use std::collections::HashSet;
use std::num::NonZeroUsize;

use common::net::providers_in;
use common::net::{network, node_config, TestNode};
use common::{pk_record, within};
use kadence::key::Key;
use kadence::{LookupFinish, QueryResult, Record, ValidationError, Validator};
use libp2p::PeerId;

/// Values are a decimal sequence number; the higher one wins.
struct Sequence;

impl Validator for Sequence {
    fn validate(&self, _: &[u8], value: &[u8]) -> Result<(), ValidationError> {
        std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|_| ())
            .ok_or_else(|| ValidationError::invalid("seq", "not a sequence number"))
    }

    fn select(&self, _: &[u8], values: &[&[u8]]) -> usize {
        let seq = |v: &[u8]| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap();
        (0..values.len())
            .max_by_key(|i| seq(values[*i]))
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_in_a_25_node_network() {
    every_operation_works(node_config).await;
}

/// Lookups that end as go's do return peers not asked yet; the operations built on them (the
/// PUT_VALUE and ADD_PROVIDER fan-outs to "the k closest") must still reach their peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_with_go_s_finish_rule() {
    every_operation_works(|| node_config().with_lookup_finish(LookupFinish::BetaAnswered)).await;
}

async fn every_operation_works(config: impl Fn() -> kadence::Config) {
    let nodes = network(25, config).await;

    // FindClosestPeers: the result holds (almost all of) the true closest.
    let key = b"some key".to_vec();
    let target = Key::new(&key);
    let asker = &nodes[3];
    let outcome = asker
        .run({
            let key = key.clone();
            move |dht| Some(dht.get_closest_peers(key))
        })
        .await;
    let Some(QueryResult::ClosestPeers {
        result: Ok(peers), ..
    }) = outcome.result
    else {
        panic!("{outcome:?}")
    };
    let mut all: Vec<PeerId> = nodes
        .iter()
        .map(|n| n.id)
        .filter(|p| *p != asker.id)
        .collect();
    all.sort_by_key(|p| Key::from_peer(p).distance(&target));
    let truth: HashSet<PeerId> = all.into_iter().take(20).collect();
    let found: HashSet<PeerId> = peers.iter().map(|p| p.id).collect();
    assert!(
        found.intersection(&truth).count() >= 18,
        "recall too low: {found:?}"
    );
    assert!(peers.iter().all(|p| !p.addrs.is_empty()));

    // FindPeer.
    let wanted = nodes[17].id;
    let outcome = nodes[5].run(move |dht| Some(dht.find_peer(wanted))).await;
    let Some(QueryResult::FindPeer {
        result: Ok(found), ..
    }) = outcome.result
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(found.id, wanted);
    assert!(found.addrs.contains(&nodes[17].addr));

    // PutValue -> GetValue.
    let record = pk_record();
    let outcome = nodes[1]
        .run({
            let record = record.clone();
            move |dht| dht.put_value(record, None).ok()
        })
        .await;
    let Some(QueryResult::PutValue {
        result: Ok(stored), ..
    }) = outcome.result
    else {
        panic!("{outcome:?}")
    };
    assert!(stored >= 10, "stored at {stored} peers");
    let outcome = nodes[20]
        .run({
            let key = record.key.clone();
            move |dht| Some(dht.get_value(key, NonZeroUsize::new(3)))
        })
        .await;
    let Some(QueryResult::GetValue {
        result: Ok(got), ..
    }) = outcome.result
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(got.value, record.value);

    // Provide -> FindProviders.
    let cid = kadence::ProviderKey::sha2_256(&[42, 42, 42]).into_bytes();
    let outcome = nodes[2]
        .run({
            let cid = cid.clone();
            move |dht| {
                dht.provide(kadence::ProviderKey::try_from(cid).unwrap())
                    .ok()
            }
        })
        .await;
    let Some(QueryResult::Provide {
        result: Ok(written),
        ..
    }) = outcome.result
    else {
        panic!("{outcome:?}")
    };
    assert!(written >= 10, "announced to {written} peers");
    // ADD_PROVIDER has no answer: "written" means sent, and each peer stores the record when
    // it gets to reading it, which on a loaded machine can be after a fast lookup has asked it.
    // Every announcement must land; then any lookup must find one.
    within(10, async {
        loop {
            let mut holders = 0;
            for node in nodes.iter().filter(|n| n.id != nodes[2].id) {
                holders += usize::from(node.holds_providers_of(&cid).await);
            }
            if holders >= written {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let outcome = nodes[22]
        .run({
            let cid = cid.clone();
            move |dht| {
                Some(dht.find_providers(kadence::ProviderKey::try_from(cid).unwrap(), Some(1)))
            }
        })
        .await;
    assert!(
        matches!(
            outcome.result,
            Some(QueryResult::FindProviders { result: Ok(ref p), .. }) if p.len() == 1
        ),
        "{outcome:?}"
    );
    assert!(providers_in(&outcome.progress).contains(&nodes[2].id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_and_a_provider_that_goes_away() {
    let mut nodes = network(25, node_config).await;
    let cid = kadence::ProviderKey::sha2_256(&[7, 7, 7]).into_bytes();
    let provider = nodes.remove(4);
    let outcome = provider
        .run({
            let cid = cid.clone();
            move |dht| {
                dht.provide(kadence::ProviderKey::try_from(cid).unwrap())
                    .ok()
            }
        })
        .await;
    assert!(matches!(
        outcome.result,
        Some(QueryResult::Provide { result: Ok(_), .. })
    ));
    let provider_id = provider.id;

    // A node joining late, from one bootstrap peer, finds the provider record.
    let late = TestNode::start(node_config(), Some((nodes[10].id, nodes[10].addr.clone()))).await;
    late.run(|dht| dht.bootstrap().ok()).await;
    let outcome = late
        .run({
            let cid = cid.clone();
            move |dht| Some(dht.find_providers(kadence::ProviderKey::try_from(cid).unwrap(), None))
        })
        .await;
    assert!(providers_in(&outcome.progress).contains(&provider_id));
    // And the others can find it.
    let late_id = late.id;
    let outcome = nodes[0].run(move |dht| Some(dht.find_peer(late_id))).await;
    assert!(
        matches!(outcome.result, Some(QueryResult::FindPeer { result: Ok(ref p), .. }) if p.id == late_id),
        "{outcome:?}"
    );

    // The provider goes away: its record stays in the network until it expires.
    provider.stop();
    let outcome = nodes[15]
        .run({
            let cid = cid.clone();
            move |dht| Some(dht.find_providers(kadence::ProviderKey::try_from(cid).unwrap(), None))
        })
        .await;
    assert!(providers_in(&outcome.progress).contains(&provider_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_updated_twice_resolves_to_the_newest() {
    let config = || node_config().with_validator("seq", Sequence);
    let nodes = network(25, config).await;
    let key = b"/seq/counter".to_vec();
    for (writer, value) in [(1usize, "1"), (2, "2")] {
        let record = Record {
            key: key.clone(),
            value: value.as_bytes().to_vec(),
            time_received: String::new(),
        };
        let outcome = nodes[writer]
            .run(move |dht| dht.put_value(record, None).ok())
            .await;
        assert!(
            matches!(
                outcome.result,
                Some(QueryResult::PutValue { result: Ok(_), .. })
            ),
            "{outcome:?}"
        );
    }
    // A stale write of the first version is refused by the peers that hold the newer one.
    let stale = Record {
        key: key.clone(),
        value: b"1".to_vec(),
        time_received: String::new(),
    };
    // (The node that wrote "2" refuses the stale write locally, as go does.)
    let refused = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = refused.clone();
    nodes[2]
        .run(move |dht| {
            *seen.lock().unwrap() = Some(dht.put_value(stale.clone(), None).err());
            None
        })
        .await;
    assert_eq!(
        *refused.lock().unwrap(),
        Some(Some(kadence::PutValueError::Outdated))
    );
    let outcome = nodes[24]
        .run({
            let key = key.clone();
            move |dht| Some(dht.get_value(key, None))
        })
        .await;
    let Some(QueryResult::GetValue {
        result: Ok(got), ..
    }) = outcome.result
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(got.value, b"2", "the validator's select picks the newest");
}

#[tokio::test]
async fn provide_without_an_address_fails_loudly() {
    let mut swarm = common::kadence_swarm(node_config());
    // Not listening anywhere: no address to put in a provider record.
    let err = swarm
        .behaviour_mut()
        .provide(kadence::ProviderKey::sha2_256(&[1]))
        .unwrap_err();
    assert_eq!(err, kadence::ProvideError::NoAddresses);
    assert!(swarm.behaviour_mut().bootstrap().is_err(), "no known peers");
}

/// The accelerated client's nodes (each crawling the others in the background) do every
/// operation, whether their crawl finished or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_with_the_accelerated_client() {
    every_operation_works(|| node_config().accelerated()).await;
}
