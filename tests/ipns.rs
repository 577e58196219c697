//! IPNS between kadence nodes: a name published by one node resolves at another, a higher
//! sequence replaces a lower one everywhere, and outdated or expired records are refused by the
//! publisher and by every server.

mod common;

use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime};

use common::net::{network, node_config, TestNode};
use kadence::ipns::{self, IpnsError, IpnsRecord};
use kadence::{PutValueError, QueryError, QueryFailure, QueryResult, ValidationError};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use tokio::sync::oneshot;

fn record(keypair: &Keypair, sequence: u64, value: &str, lifetime: Duration) -> IpnsRecord {
    IpnsRecord::builder(value)
        .sequence(sequence)
        .valid_until(SystemTime::now() + lifetime)
        .sign(keypair)
        .expect("signed")
}

/// `put_value`'s immediate answer and, when it started a query, the query's result.
async fn publish(
    node: &TestNode,
    record: kadence::Record,
) -> Result<Option<QueryResult>, PutValueError> {
    let (tx, rx) = oneshot::channel();
    let outcome = node
        .run(move |dht| {
            let started = dht.put_value(record, None);
            let id = started.as_ref().ok().copied();
            let _ = tx.send(started.map(|_| ()));
            id
        })
        .await;
    rx.await.expect("answered").map(|()| outcome.result)
}

/// The name's record as `get_value` resolves it from `node`.
async fn resolve(node: &TestNode, name: PeerId) -> Result<IpnsRecord, QueryError> {
    let key = ipns::routing_key(&name);
    let outcome = node
        .run(move |dht| Some(dht.get_value(key, NonZeroUsize::new(3))))
        .await;
    match outcome.result {
        Some(QueryResult::GetValue {
            result: Ok(found), ..
        }) => {
            assert_eq!(found.key, ipns::routing_key(&name));
            Ok(IpnsRecord::decode(&found.value).expect("a valid record decodes"))
        }
        Some(QueryResult::GetValue {
            result: Err(failure),
            ..
        }) => Err(failure.error),
        other => panic!("not a GetValue result: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_published_resolved_and_updated() {
    let nodes = network(12, node_config).await;
    let keypair = Keypair::generate_ed25519();
    let name = keypair.public().to_peer_id();
    let hour = Duration::from_secs(3600);

    let first = record(&keypair, 1, "/ipfs/bafkqaaa", hour);
    let stored = publish(&nodes[1], first.to_dht_record(&name)).await;
    let Ok(Some(QueryResult::PutValue {
        result: Ok(stored), ..
    })) = stored
    else {
        panic!("{stored:?}")
    };
    assert!(stored >= 5, "stored at {stored} peers");
    let found = resolve(&nodes[9], name).await.expect("resolved");
    assert_eq!(
        (found.value(), found.sequence()),
        (&b"/ipfs/bafkqaaa"[..], 1)
    );

    // A new value with a higher sequence, published from elsewhere, replaces it.
    let second = record(&keypair, 2, "/ipfs/bafkqaab", hour);
    let stored = publish(&nodes[4], second.to_dht_record(&name)).await;
    assert!(matches!(
        stored,
        Ok(Some(QueryResult::PutValue { result: Ok(_), .. }))
    ));
    let found = resolve(&nodes[7], name).await.expect("resolved");
    assert_eq!(
        (found.value(), found.sequence()),
        (&b"/ipfs/bafkqaab"[..], 2)
    );

    // The old record again: the publisher that holds the new one refuses it at once ...
    let again = publish(&nodes[4], first.to_dht_record(&name)).await;
    assert!(matches!(again, Err(PutValueError::Outdated)), "{again:?}");
    // ... and from a node that holds neither, every server that holds the new one refuses it.
    let holds_none = nodes
        .iter()
        .position(|n| n.id != nodes[1].id && n.id != nodes[4].id)
        .expect("a third node");
    let _ = publish(&nodes[holds_none], first.to_dht_record(&name)).await;
    let found = resolve(&nodes[10], name).await.expect("resolved");
    assert_eq!(found.sequence(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_expired_records_are_refused() {
    let nodes = network(8, node_config).await;
    let keypair = Keypair::generate_ed25519();
    let name = keypair.public().to_peer_id();

    // Under another name's key: refused before it leaves the node.
    let other = Keypair::generate_ed25519().public().to_peer_id();
    let mine = record(&keypair, 1, "/ipfs/bafkqaaa", Duration::from_secs(3600));
    let refused = publish(&nodes[0], mine.to_dht_record(&other)).await;
    assert!(
        matches!(
            refused,
            Err(PutValueError::Invalid(ValidationError::Ipns(
                IpnsError::BadSignature
            )))
        ),
        "{refused:?}"
    );

    // Valid when published, expired a moment later: no node returns it any more, not even
    // the publisher from its own store.
    // Long enough for the publication to finish on a loaded machine.
    let short = record(&keypair, 1, "/ipfs/bafkqaaa", Duration::from_secs(8));
    let stored = publish(&nodes[2], short.to_dht_record(&name)).await;
    assert!(
        matches!(
            stored,
            Ok(Some(QueryResult::PutValue { result: Ok(_), .. }))
        ),
        "{stored:?}"
    );
    let wait = short
        .validity()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    for asker in [&nodes[2], &nodes[6]] {
        let key = ipns::routing_key(&name);
        let outcome = asker
            .run(move |dht| Some(dht.get_value(key, NonZeroUsize::new(1))))
            .await;
        assert!(
            matches!(
                outcome.result,
                Some(QueryResult::GetValue {
                    result: Err(QueryFailure {
                        error: QueryError::NotFound,
                        ..
                    }),
                    ..
                })
            ),
            "{:?}",
            outcome.result
        );
    }
    let refused = publish(&nodes[3], short.to_dht_record(&name)).await;
    assert!(
        matches!(
            refused,
            Err(PutValueError::Invalid(ValidationError::Ipns(
                IpnsError::Expired
            )))
        ),
        "{refused:?}"
    );
}
