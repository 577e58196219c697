//! A mixed network of kadence and `libp2p-kad` 0.49 nodes (10 of each): every operation started
//! from either kind succeeds.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::net::providers_in;
use common::net::{node_config, TestNode};
use common::{ipns_record, pk_record, within, TEST_PROTOCOL};
use futures::StreamExt;
use kadence::QueryResult;
use libp2p::swarm::{NetworkBehaviour, Swarm};
use libp2p::{identify, Multiaddr, PeerId};
use libp2p_kad::store::MemoryStore;
use libp2p_kad::{GetProvidersOk, GetRecordOk, Quorum, RecordKey};
use libp2p_swarm_test::SwarmExt;
use tokio::sync::{mpsc, oneshot};

#[derive(NetworkBehaviour)]
struct KadNode {
    identify: identify::Behaviour,
    kad: libp2p_kad::Behaviour<MemoryStore>,
}

type KadOp = Box<dyn FnOnce(&mut libp2p_kad::Behaviour<MemoryStore>) -> libp2p_kad::QueryId + Send>;

struct Kad {
    id: PeerId,
    addr: Multiaddr,
    commands: mpsc::UnboundedSender<(KadOp, oneshot::Sender<Vec<libp2p_kad::QueryResult>>)>,
}

impl Kad {
    async fn start(bootstrap: &[(PeerId, Multiaddr)]) -> Kad {
        let mut swarm = Swarm::new_ephemeral_tokio(|key| {
            let id = key.public().to_peer_id();
            let mut config = libp2p_kad::Config::new(TEST_PROTOCOL);
            config.set_periodic_bootstrap_interval(None);
            config.set_query_timeout(Duration::from_secs(20));
            let mut kad = libp2p_kad::Behaviour::with_config(id, MemoryStore::new(id), config);
            kad.set_mode(Some(libp2p_kad::Mode::Server));
            KadNode {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/kadence-test/1.0.0".into(),
                    key.public(),
                )),
                kad,
            }
        });
        let (addr, _) = swarm.listen().with_memory_addr_external().await;
        for (peer, peer_addr) in bootstrap {
            swarm
                .behaviour_mut()
                .kad
                .add_address(peer, peer_addr.clone());
        }
        let id = *swarm.local_peer_id();
        let (tx, mut rx) =
            mpsc::unbounded_channel::<(KadOp, oneshot::Sender<Vec<libp2p_kad::QueryResult>>)>();
        tokio::spawn(async move {
            let mut pending: Vec<(libp2p_kad::QueryId, oneshot::Sender<_>, Vec<_>)> = Vec::new();
            loop {
                tokio::select! {
                    command = rx.recv() => {
                        let Some((op, reply)) = command else { return };
                        let id = op(&mut swarm.behaviour_mut().kad);
                        pending.push((id, reply, Vec::new()));
                    }
                    // Not `next_swarm_event`, which panics after 10 idle seconds.
                    event = swarm.select_next_some() => {
                        if let libp2p::swarm::SwarmEvent::Behaviour(KadNodeEvent::Kad(
                            libp2p_kad::Event::OutboundQueryProgressed { id, result, step, .. },
                        )) = event
                        {
                            if let Some(i) = pending.iter().position(|p| p.0 == id) {
                                pending[i].2.push(result);
                                if step.last {
                                    let (_, reply, results) = pending.remove(i);
                                    let _ = reply.send(results);
                                }
                            }
                        }
                    }
                }
            }
        });
        Kad {
            id,
            addr,
            commands: tx,
        }
    }

    async fn run(
        &self,
        op: impl FnOnce(&mut libp2p_kad::Behaviour<MemoryStore>) -> libp2p_kad::QueryId + Send + 'static,
    ) -> Vec<libp2p_kad::QueryResult> {
        let (tx, rx) = oneshot::channel();
        self.commands.send((Box::new(op), tx)).unwrap();
        within(60, rx).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_from_either_kind_of_node() {
    // Interleave the kinds, each bootstrapped from the nodes started before it.
    let mut kadence: Vec<TestNode> = Vec::new();
    let mut kads: Vec<Kad> = Vec::new();
    let mut known: Vec<(PeerId, Multiaddr)> = Vec::new();
    for i in 0..10 {
        let boot = known.last().cloned();
        let node = TestNode::start(node_config(), boot).await;
        known.push((node.id, node.addr.clone()));
        kadence.push(node);
        let boots: Vec<_> = known.iter().rev().take(2).cloned().collect();
        let kad = Kad::start(&boots).await;
        known.push((kad.id, kad.addr.clone()));
        kads.push(kad);
        let _ = i;
    }
    for _ in 0..2 {
        for node in &kadence {
            node.run(|dht| dht.bootstrap().ok()).await;
        }
        for kad in &kads {
            kad.run(|k| k.bootstrap().unwrap()).await;
        }
    }

    // Closest peers, both kinds asking; the answers mix both kinds.
    let outcome = kadence[0]
        .run(|dht| Some(dht.get_closest_peers(b"mixed".to_vec())))
        .await;
    let Some(QueryResult::ClosestPeers {
        result: Ok(peers), ..
    }) = outcome.result
    else {
        panic!("{outcome:?}")
    };
    let kad_ids: HashSet<PeerId> = kads.iter().map(|k| k.id).collect();
    assert!(peers.len() >= 15, "{} peers", peers.len());
    assert!(
        peers.iter().any(|p| kad_ids.contains(&p.id)),
        "libp2p-kad peers answered"
    );
    let results = kads[0]
        .run(|k| k.get_closest_peers(b"mixed".to_vec()))
        .await;
    let Some(libp2p_kad::QueryResult::GetClosestPeers(Ok(ok))) = results.last() else {
        panic!("{results:?}")
    };
    let kadence_ids: HashSet<PeerId> = kadence.iter().map(|n| n.id).collect();
    assert!(
        ok.peers.iter().any(|p| kadence_ids.contains(&p.peer_id)),
        "kadence peers answered"
    );

    // Find peer: kadence finds a libp2p-kad node; libp2p-kad finds a kadence node.
    let wanted = kads[7].id;
    let outcome = kadence[2].run(move |dht| Some(dht.find_peer(wanted))).await;
    assert!(
        matches!(outcome.result, Some(QueryResult::FindPeer { result: Ok(ref p), .. }) if p.id == wanted),
        "{outcome:?}"
    );
    let wanted = kadence[8].id;
    let results = kads[3].run(move |k| k.get_closest_peers(wanted)).await;
    let Some(libp2p_kad::QueryResult::GetClosestPeers(Ok(ok))) = results.last() else {
        panic!("{results:?}")
    };
    assert!(
        ok.peers.iter().any(|p| p.peer_id == wanted),
        "libp2p-kad found the kadence node"
    );

    // Put from kadence, get from libp2p-kad; put from libp2p-kad, get from kadence; for a
    // `/pk` and an `/ipns` record (libp2p-kad stores them unchecked, kadence validates).
    for make_record in [pk_record as fn() -> kadence::Record, ipns_record] {
        let record = make_record();
        let outcome = kadence[1]
            .run({
                let record = record.clone();
                move |dht| dht.put_value(record, None).ok()
            })
            .await;
        assert!(
            matches!(
                outcome.result,
                Some(QueryResult::PutValue { result: Ok(_), .. })
            ),
            "{outcome:?}"
        );
        let key = RecordKey::new(&record.key);
        let results = kads[5].run(move |k| k.get_record(key)).await;
        let found = results.iter().find_map(|r| match r {
            libp2p_kad::QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(f))) => Some(f),
            _ => None,
        });
        assert_eq!(found.expect("libp2p-kad got it").record.value, record.value);

        let record = make_record();
        let put = libp2p_kad::Record::new(RecordKey::new(&record.key), record.value.clone());
        let results = kads[6]
            .run(move |k| k.put_record(put, Quorum::One).unwrap())
            .await;
        assert!(
            matches!(
                results.last(),
                Some(libp2p_kad::QueryResult::PutRecord(Ok(_)))
            ),
            "{results:?}"
        );
        let outcome = kadence[9]
            .run({
                let key = record.key.clone();
                move |dht| Some(dht.get_value(key, None))
            })
            .await;
        let Some(QueryResult::GetValue {
            result: Ok(got), ..
        }) = outcome.result
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(got.value, record.value);
    }

    // Provide from kadence, find from libp2p-kad; provide from libp2p-kad, find from kadence.
    let cid = kadence::ProviderKey::sha2_256(&[1, 2, 3, 9]).into_bytes();
    let outcome = kadence[4]
        .run({
            let cid = cid.clone();
            move |dht| {
                dht.provide(kadence::ProviderKey::try_from(cid).unwrap())
                    .ok()
            }
        })
        .await;
    assert!(
        matches!(
            outcome.result,
            Some(QueryResult::Provide { result: Ok(_), .. })
        ),
        "{outcome:?}"
    );
    let key = RecordKey::new(&cid);
    let results = kads[8].run(move |k| k.get_providers(key)).await;
    let providers: HashSet<PeerId> = results
        .iter()
        .flat_map(|r| match r {
            libp2p_kad::QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => providers.iter().copied().collect(),
            _ => Vec::new(),
        })
        .collect();
    assert!(providers.contains(&kadence[4].id), "{results:?}");

    let cid = kadence::ProviderKey::sha2_256(&[4, 5, 6, 9]).into_bytes();
    let key = RecordKey::new(&cid);
    let results = kads[9].run(move |k| k.start_providing(key).unwrap()).await;
    assert!(matches!(
        results.last(),
        Some(libp2p_kad::QueryResult::StartProviding(Ok(_)))
    ));
    // libp2p-kad reports the provide before its ADD_PROVIDERs are written: give them a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcome = kadence[6]
        .run(move |dht| {
            Some(dht.find_providers(kadence::ProviderKey::try_from(cid).unwrap(), None))
        })
        .await;
    assert!(
        providers_in(&outcome.progress).contains(&kads[9].id),
        "{outcome:?}"
    );
}
