//! The Server module against `libp2p-kad` 0.49 clients, and the routing table filled by a mixed
//! network: only DHT servers get in.

mod common;

use std::time::Duration;

use common::*;
use kadence::{Event, InboundOutcome, MessageType};
use libp2p::swarm::{NetworkBehaviour, Swarm};
use libp2p::{identify, PeerId};
use libp2p_kad::store::MemoryStore;
use libp2p_kad::{QueryResult, Quorum, RecordKey};
use libp2p_swarm_test::SwarmExt;
use tokio::sync::mpsc;

fn kad_config() -> libp2p_kad::Config {
    let mut config = libp2p_kad::Config::new(TEST_PROTOCOL);
    config.set_periodic_bootstrap_interval(None);
    config
}

fn kad_client() -> Swarm<libp2p_kad::Behaviour<MemoryStore>> {
    Swarm::new_ephemeral_tokio(|key| {
        let id = key.public().to_peer_id();
        let mut kad = libp2p_kad::Behaviour::with_config(id, MemoryStore::new(id), kad_config());
        kad.set_mode(Some(libp2p_kad::Mode::Client));
        kad
    })
}

/// Runs `kad` until its query finishes with a final step, returning the results seen.
async fn query_results(kad: &mut Swarm<libp2p_kad::Behaviour<MemoryStore>>) -> Vec<QueryResult> {
    within(30, async {
        let mut results = Vec::new();
        loop {
            if let libp2p_kad::Event::OutboundQueryProgressed { result, step, .. } =
                kad.next_behaviour_event().await
            {
                results.push(result);
                if step.last {
                    return results;
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn libp2p_kad_clients_get_what_the_protocol_demands() {
    let mut server = kadence_swarm(server_config());
    server.listen().with_memory_addr_external().await;
    let server_id = *server.local_peer_id();
    let server_addr = server.external_addresses().next().unwrap().clone();
    let (tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(serve(server, tx));

    let mut writer = kad_client();
    writer.listen().with_memory_addr_external().await;
    let writer_id = *writer.local_peer_id();
    writer
        .behaviour_mut()
        .add_address(&server_id, server_addr.clone());
    let mut reader = kad_client();
    reader.behaviour_mut().add_address(&server_id, server_addr);

    // PUT_VALUE (after a FIND_NODE): kadence validates, stores and echoes.
    let record = pk_record();
    let key = RecordKey::new(&record.key);
    let put = libp2p_kad::Record::new(key.clone(), record.value.clone());
    writer.behaviour_mut().put_record(put, Quorum::One).unwrap();
    let results = query_results(&mut writer).await;
    assert!(
        matches!(results.last(), Some(QueryResult::PutRecord(Ok(_)))),
        "{results:?}"
    );

    // ADD_PROVIDER: stored for the sender, with its addresses.
    let provided = RecordKey::new(&[0x12, 0x20, 7, 7, 7]);
    writer
        .behaviour_mut()
        .start_providing(provided.clone())
        .unwrap();
    let results = query_results(&mut writer).await;
    assert!(
        matches!(results.last(), Some(QueryResult::StartProviding(Ok(_)))),
        "{results:?}"
    );

    // libp2p-kad reports the provide as done before its ADD_PROVIDER is written (the trap
    // PROTOCOL.md warns of): keep the writer running until kadence has stored it.
    tokio::spawn(writer.loop_on_next());
    let mut seen = Vec::new();
    within(10, async {
        loop {
            if let Some(Event::InboundRequest {
                request, outcome, ..
            }) = events.recv().await
            {
                assert!(
                    matches!(outcome, InboundOutcome::Answered | InboundOutcome::Stored),
                    "{request:?}: {outcome:?}"
                );
                seen.push(request);
                if request == MessageType::AddProvider {
                    return;
                }
            }
        }
    })
    .await;

    // GET_VALUE from another client: the record comes back from kadence.
    reader.behaviour_mut().get_record(key);
    let results = query_results(&mut reader).await;
    let found = results.iter().find_map(|r| match r {
        QueryResult::GetRecord(Ok(libp2p_kad::GetRecordOk::FoundRecord(found))) => Some(found),
        _ => None,
    });
    let found = found.expect("record found");
    assert_eq!(found.peer, Some(server_id));
    assert_eq!(found.record.value, record.value);

    // GET_PROVIDERS: the writer is a provider.
    reader.behaviour_mut().get_providers(provided);
    let results = query_results(&mut reader).await;
    let providers: Vec<PeerId> = results
        .iter()
        .flat_map(|r| match r {
            QueryResult::GetProviders(Ok(libp2p_kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => providers.iter().copied().collect(),
            _ => Vec::new(),
        })
        .collect();
    assert!(providers.contains(&writer_id), "{results:?}");

    // The server saw every kind libp2p-kad sends (it never sends PING) and honoured them all.
    while let Ok(event) = events.try_recv() {
        if let Event::InboundRequest {
            request, outcome, ..
        } = event
        {
            assert!(
                matches!(outcome, InboundOutcome::Answered | InboundOutcome::Stored),
                "{request:?}: {outcome:?}"
            );
            seen.push(request);
        }
    }
    for kind in [
        MessageType::FindNode,
        MessageType::PutValue,
        MessageType::AddProvider,
        MessageType::GetValue,
        MessageType::GetProviders,
    ] {
        assert!(seen.contains(&kind), "{kind:?} not seen in {seen:?}");
    }
}

#[derive(NetworkBehaviour)]
struct KadenceNode {
    identify: identify::Behaviour,
    dht: kadence::Behaviour,
}

#[derive(NetworkBehaviour)]
struct KadNode {
    identify: identify::Behaviour,
    kad: libp2p_kad::Behaviour<MemoryStore>,
}

fn identify_for(key: &libp2p::identity::Keypair) -> identify::Behaviour {
    identify::Behaviour::new(identify::Config::new(
        "/kadence-test/1.0.0".into(),
        key.public(),
    ))
}

fn kadence_node(mode: kadence::Mode) -> Swarm<KadenceNode> {
    Swarm::new_ephemeral_tokio(|key| KadenceNode {
        identify: identify_for(&key),
        dht: kadence::Behaviour::new(
            key.public().to_peer_id(),
            kadence::Config::new(TEST_PROTOCOL).with_mode(Some(mode)),
        ),
    })
}

fn kad_node(mode: libp2p_kad::Mode) -> Swarm<KadNode> {
    Swarm::new_ephemeral_tokio(|key| {
        let id = key.public().to_peer_id();
        let mut kad = libp2p_kad::Behaviour::with_config(id, MemoryStore::new(id), kad_config());
        kad.set_mode(Some(mode));
        KadNode {
            identify: identify_for(&key),
            kad,
        }
    })
}

#[tokio::test]
async fn the_table_fills_with_server_peers_only() {
    let mut hub = kadence_node(kadence::Mode::Server);
    hub.listen().with_memory_addr_external().await;

    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for mode in [
        kadence::Mode::Server,
        kadence::Mode::Server,
        kadence::Mode::Client,
    ] {
        let mut node = kadence_node(mode);
        node.listen().with_memory_addr_external().await;
        node.connect(&mut hub).await;
        let id = *node.local_peer_id();
        if mode == kadence::Mode::Server {
            servers.push(id);
        } else {
            clients.push(id);
        }
        tokio::spawn(node.loop_on_next());
    }
    for mode in [libp2p_kad::Mode::Server, libp2p_kad::Mode::Client] {
        let mut node = kad_node(mode);
        node.listen().with_memory_addr_external().await;
        node.connect(&mut hub).await;
        let id = *node.local_peer_id();
        if mode == libp2p_kad::Mode::Server {
            servers.push(id);
        } else {
            clients.push(id);
        }
        tokio::spawn(node.loop_on_next());
    }

    // Connecting drove the hub already (and dropped its events): watch the table itself.
    within(20, async {
        while !servers
            .iter()
            .all(|s| hub.behaviour().dht.routing_table().contains(s))
        {
            hub.next_swarm_event().await;
        }
    })
    .await;
    // Give the clients' identify every chance to (wrongly) get them in.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            hub.next_swarm_event().await;
        }
    })
    .await;
    let table = hub.behaviour().dht.routing_table();
    let mut in_table: Vec<PeerId> = table.peers().into_iter().map(|p| p.id).collect();
    in_table.sort();
    servers.sort();
    assert_eq!(in_table, servers);
    for client in &clients {
        assert!(!table.contains(client));
    }
    // Every entry has the addresses the peer listens on.
    assert!(table.peers().iter().all(|p| !p.addrs.is_empty()));
}
