use std::time::{Duration, SystemTime};

use libp2p::identity::Keypair;

use crate::ipns::{routing_key, IpnsError, IpnsRecord};
use crate::server::{ValidationError, Validators};

fn record(keypair: &Keypair, sequence: u64, lifetime_secs: u64) -> Vec<u8> {
    IpnsRecord::builder("/ipfs/bafkqaaa")
        .sequence(sequence)
        .valid_until(SystemTime::now() + Duration::from_secs(lifetime_secs))
        .sign(keypair)
        .unwrap()
        .encode()
}

#[test]
fn the_default_validators_accept_ipns_records_under_their_name_only() {
    let validators = Validators::default();
    let keypair = Keypair::generate_ed25519();
    let key = routing_key(&keypair.public().to_peer_id());
    let value = record(&keypair, 1, 3600);
    assert_eq!(validators.validate(&key, &value), Ok(()));

    let other = routing_key(&Keypair::generate_ed25519().public().to_peer_id());
    assert_eq!(
        validators.validate(&other, &value),
        Err(ValidationError::Ipns(IpnsError::BadSignature))
    );
    // The text form of a name is not a routing key: go refuses it too.
    let text = format!("/ipns/{}", keypair.public().to_peer_id());
    assert_eq!(
        validators.validate(text.as_bytes(), &value),
        Err(ValidationError::Ipns(IpnsError::BadName))
    );
    assert_eq!(
        validators.validate(&key, b"garbage"),
        Err(ValidationError::Ipns(IpnsError::Protobuf))
    );
    let expired = IpnsRecord::builder("/ipfs/bafkqaaa")
        .valid_until(SystemTime::now() - Duration::from_secs(1))
        .sign(&keypair)
        .unwrap();
    assert_eq!(
        validators.validate(&key, expired.as_bytes()),
        Err(ValidationError::Ipns(IpnsError::Expired))
    );
}

#[test]
fn the_higher_sequence_wins_whatever_the_order() {
    let validators = Validators::default();
    let keypair = Keypair::generate_ed25519();
    let key = routing_key(&keypair.public().to_peer_id());
    // The higher sequence wins even with the earlier end of validity.
    let low = record(&keypair, 1, 7200);
    let high = record(&keypair, 2, 3600);
    assert_eq!(validators.select(&key, &[&low, &high]), Ok(1));
    assert_eq!(validators.select(&key, &[&high, &low]), Ok(0));
    assert_eq!(validators.select(&key, &[&low, &low, &high, &low]), Ok(2));
}

#[test]
fn equal_sequences_are_decided_by_validity_then_bytes() {
    let validators = Validators::default();
    let keypair = Keypair::generate_ed25519();
    let key = routing_key(&keypair.public().to_peer_id());
    let early = record(&keypair, 5, 3600);
    let late = record(&keypair, 5, 7200);
    assert_eq!(validators.select(&key, &[&early, &late]), Ok(1));
    assert_eq!(validators.select(&key, &[&late, &early]), Ok(0));

    // Same sequence and validity: go keeps the larger encoding.
    let end = SystemTime::now() + Duration::from_secs(3600);
    let a = IpnsRecord::builder("/ipfs/a")
        .valid_until(end)
        .sign(&keypair)
        .unwrap()
        .encode();
    let b = IpnsRecord::builder("/ipfs/b")
        .valid_until(end)
        .sign(&keypair)
        .unwrap()
        .encode();
    let larger = usize::from(a < b);
    assert_eq!(validators.select(&key, &[&a, &b]), Ok(larger));
    assert_eq!(validators.select(&key, &[&b, &a]), Ok(1 - larger));
    // Identical records: the first, so a server accepts a re-put of what it holds (as go).
    assert_eq!(validators.select(&key, &[&a, &a]), Ok(0));
}

#[test]
fn a_value_that_does_not_decode_is_never_selected() {
    let validators = Validators::default();
    let keypair = Keypair::generate_ed25519();
    let key = routing_key(&keypair.public().to_peer_id());
    let good = record(&keypair, 0, 3600);
    assert_eq!(validators.select(&key, &[b"junk", &good]), Ok(1));
    assert_eq!(validators.select(&key, &[&good, b"junk"]), Ok(0));
}

#[test]
fn a_record_without_a_sequence_is_never_selected() {
    use std::borrow::Cow;

    use quick_protobuf::{MessageWrite, Writer};

    use crate::proto::ipns_pb::IpnsEntry;

    let validators = Validators::default();
    let keypair = Keypair::generate_ed25519();
    let key = routing_key(&keypair.public().to_peer_id());
    // A V2-only record whose data has no Sequence: valid for go, but go cannot select it.
    let data = b"\xa2\x68Validity\x542099-01-01T00:00:00Z\x6cValidityType\x00".to_vec();
    let mut signed = b"ipns-signature:".to_vec();
    signed.extend_from_slice(&data);
    let entry = IpnsEntry {
        signatureV2: Some(Cow::Owned(keypair.sign(&signed).unwrap())),
        data: Some(Cow::Borrowed(&data)),
        ..IpnsEntry::default()
    };
    let mut sparse = Vec::new();
    entry.write_message(&mut Writer::new(&mut sparse)).unwrap();
    assert_eq!(validators.validate(&key, &sparse), Ok(()));
    let good = record(&keypair, 0, 3600);
    assert_eq!(validators.select(&key, &[&sparse, &good]), Ok(1));
    assert_eq!(validators.select(&key, &[&good, &sparse]), Ok(0));
}
