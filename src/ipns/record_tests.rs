use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::identity::Keypair;
use quick_protobuf::{BytesReader, MessageRead, MessageWrite, Writer};

use super::*;

/// A 2048-bit RSA key made for these tests (libp2p cannot generate RSA keys).
pub(crate) fn rsa_keypair() -> Keypair {
    let mut der = include_bytes!("../../tests/fixtures/rsa-2048.pk8").to_vec();
    Keypair::rsa_from_pkcs8(&mut der).expect("the fixture is a PKCS#8 RSA key")
}

fn hour() -> Duration {
    Duration::from_secs(3600)
}

fn signed(keypair: &Keypair, sequence: u64) -> IpnsRecord {
    IpnsRecord::builder("/ipfs/bafkqaaa")
        .sequence(sequence)
        .valid_for(hour())
        .sign(keypair)
        .unwrap()
}

/// Re-encodes a record's envelope after `edit`.
fn edit_entry(record: &IpnsRecord, edit: impl FnOnce(&mut IpnsEntry<'_>)) -> Vec<u8> {
    let bytes = record.as_bytes();
    let mut entry = IpnsEntry::from_reader(&mut BytesReader::from_bytes(bytes), bytes).unwrap();
    edit(&mut entry);
    let mut out = Vec::new();
    entry.write_message(&mut Writer::new(&mut out)).unwrap();
    out
}

/// A V2-only record over hand-made data, signed correctly by `keypair`.
fn with_data(keypair: &Keypair, data: &Data) -> Vec<u8> {
    let data = serde_ipld_dagcbor::to_vec(data).unwrap();
    let entry = IpnsEntry {
        signatureV2: Some(Cow::Owned(keypair.sign(&signed_v2(&data)).unwrap())),
        data: Some(Cow::Borrowed(&data)),
        ..IpnsEntry::default()
    };
    let mut out = Vec::new();
    entry.write_message(&mut Writer::new(&mut out)).unwrap();
    out
}

fn data(validity: &str, validity_type: i64) -> Data {
    Data {
        ttl: Some(0),
        value: Some(ByteBuf::from(b"/ipfs/bafkqaaa".to_vec())),
        sequence: Some(3),
        validity: ByteBuf::from(validity.as_bytes().to_vec()),
        validity_type,
    }
}

#[test]
fn every_key_type_signs_records_that_verify() {
    let now = SystemTime::now();
    for keypair in [
        Keypair::generate_ed25519(),
        Keypair::generate_secp256k1(),
        Keypair::generate_ecdsa(),
        rsa_keypair(),
    ] {
        let name = keypair.public().to_peer_id();
        let record = signed(&keypair, 7);
        let read = IpnsRecord::decode(&record.encode()).unwrap();
        assert_eq!(read, record);
        assert_eq!(read.verify(&name, now), Ok(()), "{:?}", keypair.key_type());
        assert_eq!(read.value(), b"/ipfs/bafkqaaa");
        assert_eq!(read.sequence(), 7);
        assert_eq!(read.ttl(), hour());
        // Signed after `now`, a minute at most on a loaded machine.
        let left = read.validity().duration_since(now).unwrap();
        assert!(left >= hour() && left <= hour() + Duration::from_secs(60));
        // Only keys the name does not inline are carried in the record, as go does.
        let inlined = matches!(
            keypair.key_type(),
            libp2p::identity::KeyType::Ed25519 | libp2p::identity::KeyType::Secp256k1
        );
        assert_eq!(read.public_key.is_empty(), inlined);
    }
}

#[test]
fn the_data_is_canonical_dag_cbor() {
    let end = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let record = IpnsRecord::builder("/ipfs/x")
        .sequence(1)
        .valid_until(end)
        .ttl(Duration::from_nanos(5))
        .sign(&Keypair::generate_ed25519())
        .unwrap();
    // A map of five; keys shortest first, then bytewise; integers in their shortest form.
    let mut expected = vec![0xa5];
    expected.extend(b"\x63TTL\x05");
    expected.extend(b"\x65Value\x47/ipfs/x");
    expected.extend(b"\x68Sequence\x01");
    expected.extend(b"\x68Validity\x54");
    expected.extend(b"2030-03-17T17:46:40Z");
    expected.extend(b"\x6cValidityType\x00");
    assert_eq!(record.data, expected);
    // The V1 copy says the same, so go's consistency check passes.
    let v1 = record.v1.as_ref().unwrap();
    assert_eq!(v1.validity, b"2030-03-17T17:46:40Z");
    assert_eq!((v1.sequence, v1.ttl, v1.validity_type), (1, 5, 0));
}

#[test]
fn v2_only_records_verify() {
    let keypair = Keypair::generate_ed25519();
    let record = IpnsRecord::builder("/ipfs/bafkqaaa")
        .v1_compatible(false)
        .sign(&keypair)
        .unwrap();
    assert!(record.v1.is_none());
    let now = SystemTime::now();
    assert_eq!(record.verify(&keypair.public().to_peer_id(), now), Ok(()));
    // Default lifetime: 48 hours.
    let left = record.validity().duration_since(now).unwrap();
    assert!(left > Duration::from_secs(47 * 3600));
}

#[test]
fn a_record_is_refused_for_another_name() {
    let keypair = Keypair::generate_ed25519();
    let record = signed(&keypair, 1);
    let now = SystemTime::now();
    let other = Keypair::generate_ed25519().public().to_peer_id();
    assert_eq!(record.verify(&other, now), Err(IpnsError::BadSignature));
    // A carried key must hash to the name.
    let rsa = signed(&rsa_keypair(), 1);
    assert_eq!(rsa.verify(&other, now), Err(IpnsError::PublicKeyMismatch));
    // A name that does not inline its key needs the key in the record.
    let ecdsa = Keypair::generate_ecdsa();
    let stripped = edit_entry(&signed(&ecdsa, 1), |e| e.pubKey = None);
    assert_eq!(
        IpnsRecord::decode(&stripped)
            .unwrap()
            .verify(&ecdsa.public().to_peer_id(), now),
        Err(IpnsError::NoPublicKey)
    );
    let garbage = edit_entry(&signed(&ecdsa, 1), |e| {
        e.pubKey = Some(Cow::Borrowed(b"not a key"))
    });
    assert_eq!(
        IpnsRecord::decode(&garbage)
            .unwrap()
            .verify(&ecdsa.public().to_peer_id(), now),
        Err(IpnsError::BadPublicKey)
    );
}

#[test]
fn expired_records_are_refused() {
    let keypair = Keypair::generate_ed25519();
    let name = keypair.public().to_peer_id();
    let record = signed(&keypair, 1);
    assert_eq!(record.verify(&name, record.validity()), Ok(()));
    let later = record.validity() + Duration::from_nanos(1);
    assert_eq!(record.verify(&name, later), Err(IpnsError::Expired));
}

#[test]
fn tampered_records_are_refused() {
    let keypair = Keypair::generate_ed25519();
    let name = keypair.public().to_peer_id();
    let now = SystemTime::now();
    let record = signed(&keypair, 1);
    let verify = |bytes: &[u8]| IpnsRecord::decode(bytes).and_then(|r| r.verify(&name, now));

    let bad_signature = edit_entry(&record, |e| {
        e.signatureV2.as_mut().unwrap().to_mut()[0] ^= 1;
    });
    assert_eq!(verify(&bad_signature), Err(IpnsError::BadSignature));
    let unsigned = edit_entry(&record, |e| e.signatureV2 = None);
    assert_eq!(verify(&unsigned), Err(IpnsError::MissingSignature));
    // A V1 copy that says something else than the signed data.
    let other_value = edit_entry(&record, |e| e.value = Some(Cow::Borrowed(b"/ipfs/evil")));
    assert_eq!(verify(&other_value), Err(IpnsError::FieldMismatch("Value")));
    let other_sequence = edit_entry(&record, |e| e.sequence = Some(99));
    assert_eq!(
        verify(&other_sequence),
        Err(IpnsError::FieldMismatch("Sequence"))
    );
    let other_ttl = edit_entry(&record, |e| e.ttl = Some(1));
    assert_eq!(verify(&other_ttl), Err(IpnsError::FieldMismatch("TTL")));
    // Without V1 value and signature, the V1 fields are not looked at (go does the same).
    let v2_only = edit_entry(&record, |e| {
        e.value = None;
        e.signatureV1 = None;
        e.sequence = Some(99);
    });
    assert_eq!(verify(&v2_only), Ok(()));
}

#[test]
fn malformed_records_are_refused_with_their_reason() {
    let keypair = Keypair::generate_ed25519();
    assert_eq!(
        IpnsRecord::decode(&vec![0; MAX_RECORD_SIZE + 1]),
        Err(IpnsError::TooLarge(MAX_RECORD_SIZE + 1))
    );
    assert_eq!(
        IpnsRecord::decode(b"\xff\xff\xff"),
        Err(IpnsError::Protobuf)
    );
    let no_data = edit_entry(&signed(&keypair, 1), |e| e.data = None);
    assert_eq!(IpnsRecord::decode(&no_data), Err(IpnsError::MissingData));
    let not_cbor = edit_entry(&signed(&keypair, 1), |e| {
        e.data = Some(Cow::Borrowed(b"\xa1"))
    });
    assert!(matches!(
        IpnsRecord::decode(&not_cbor),
        Err(IpnsError::Cbor(_))
    ));
    let not_a_map = edit_entry(&signed(&keypair, 1), |e| {
        e.data = Some(Cow::Borrowed(b"\x01"))
    });
    assert!(matches!(
        IpnsRecord::decode(&not_a_map),
        Err(IpnsError::Cbor(_))
    ));
    let other_type = with_data(&keypair, &data("2030-01-01T00:00:00Z", 1));
    assert_eq!(
        IpnsRecord::decode(&other_type),
        Err(IpnsError::UnknownValidityType(1))
    );
    let bad_time = with_data(&keypair, &data("tomorrow", 0));
    assert_eq!(IpnsRecord::decode(&bad_time), Err(IpnsError::BadValidity));
}

#[test]
fn only_validity_and_its_type_are_required_as_in_go() {
    let keypair = Keypair::generate_ed25519();
    let name = keypair.public().to_peer_id();
    let now = SystemTime::now();
    let sparse = Data {
        ttl: None,
        value: None,
        sequence: None,
        ..data("2099-01-01T00:00:00Z", 0)
    };
    let record = IpnsRecord::decode(&with_data(&keypair, &sparse)).unwrap();
    assert_eq!(record.verify(&name, now), Ok(()));
    assert_eq!(
        (record.value(), record.sequence(), record.ttl()),
        (&b""[..], 0, Duration::ZERO)
    );
    assert!(!record.has_sequence());
    // With V1 fields, a key missing from the data fails go's comparison of the two.
    let with_v1 = edit_entry(&record, |e| {
        e.value = Some(Cow::Borrowed(b""));
        e.signatureV1 = Some(Cow::Borrowed(b"sig"));
    });
    assert_eq!(
        IpnsRecord::decode(&with_v1).unwrap().verify(&name, now),
        Err(IpnsError::FieldMismatch("Value"))
    );
}

#[test]
fn a_negative_ttl_is_refused() {
    let keypair = Keypair::generate_ed25519();
    let negative = Data {
        ttl: Some(-1),
        ..data("2099-01-01T00:00:00Z", 0)
    };
    let record = IpnsRecord::decode(&with_data(&keypair, &negative)).unwrap();
    assert_eq!(record.ttl(), Duration::ZERO);
    assert_eq!(
        record.verify(&keypair.public().to_peer_id(), SystemTime::now()),
        Err(IpnsError::NegativeTtl)
    );
}

#[test]
fn validity_texts_go_refuses_are_refused() {
    let keypair = Keypair::generate_ed25519();
    for text in [
        "2099-01-02t03:04:05z",
        "2099-01-02T03:04:05z",
        "2099-01-02 03:04:05Z",
        "2098-12-31T23:59:60Z",
        "2099-01-02T03:04Z",
        "2099-01-02T03:04:05.Z",
        "2099-01-02T03:04:05",
        "2099-01-02T03:04:05+0200",
        "2099-01-02T03:04:05+2:00",
        "+2099-01-02T03:04:05Z",
        "2099-1-02T03:04:05Z",
        "2099-02-30T03:04:05Z",
        "2099-01-02T24:00:00Z",
    ] {
        assert_eq!(
            IpnsRecord::decode(&with_data(&keypair, &data(text, 0))),
            Err(IpnsError::BadValidity),
            "{text}"
        );
    }
}

#[test]
fn validity_is_read_as_go_writes_and_parses_it() {
    let keypair = Keypair::generate_ed25519();
    let name = keypair.public().to_peer_id();
    let expect = UNIX_EPOCH + Duration::new(1_900_000_000, 500_000_000);
    for text in [
        "2030-03-17T17:46:40.5Z",
        "2030-03-17T17:46:40,5Z",
        "2030-03-17T17:46:40.500000000Z",
        "2030-03-17T17:46:40.5000000009999Z",
        "2030-03-17T18:46:40.5+01:00",
        "2030-03-17T16:46:40.5-01:00",
        // go takes any two-digit offset.
        "2030-03-18T17:46:40.5+24:00",
        "2030-03-17T18:46:40.5+00:60",
    ] {
        let record = IpnsRecord::decode(&with_data(&keypair, &data(text, 0))).unwrap();
        assert_eq!(record.validity(), expect, "{text}");
        assert_eq!(record.verify(&name, expect), Ok(()));
    }
}

#[test]
fn a_validity_rfc_3339_cannot_write_is_not_signed() {
    let keypair = Keypair::generate_ed25519();
    let latest = UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999);
    let record = IpnsRecord::builder("/ipfs/x")
        .valid_until(latest)
        .sign(&keypair)
        .unwrap();
    assert_eq!(record.validity(), latest);
    assert_eq!(
        IpnsRecord::builder("/ipfs/x")
            .valid_until(latest + Duration::from_nanos(1))
            .sign(&keypair),
        Err(IpnsError::Signing("validity past the year 9999".into()))
    );
}

#[test]
fn a_record_too_large_is_not_signed() {
    let too_long = vec![b'a'; MAX_RECORD_SIZE];
    assert!(matches!(
        IpnsRecord::builder(too_long).sign(&Keypair::generate_ed25519()),
        Err(IpnsError::Signing(_))
    ));
}

#[test]
fn routing_keys_name_peer_ids() {
    let name = Keypair::generate_ed25519().public().to_peer_id();
    let key = routing_key(&name);
    assert!(key.starts_with(b"/ipns/"));
    assert_eq!(super::super::name_from_routing_key(&key), Ok(name));
    for bad in [&b"/pk/abc"[..], b"/ipns/", b"/ipns/not-a-peer-id"] {
        assert_eq!(
            super::super::name_from_routing_key(bad),
            Err(IpnsError::BadName)
        );
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever a remote sends, decoding and verifying answers without panicking.
        #[test]
        fn decoding_anything_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let name = PeerId::random();
            if let Ok(record) = IpnsRecord::decode(&bytes) {
                let _ = record.verify(&name, SystemTime::now());
            }
        }

        /// What is signed reads back the same and verifies, whatever the value, sequence and
        /// TTL, with and without the V1 fields.
        #[test]
        fn signed_records_read_back(
            value in proptest::collection::vec(any::<u8>(), 0..300),
            sequence in any::<u64>(),
            ttl_nanos in any::<u64>(),
            v1 in any::<bool>(),
        ) {
            let keypair = Keypair::generate_ed25519();
            let name = keypair.public().to_peer_id();
            let end = UNIX_EPOCH + Duration::new(1_900_000_000, 123_456_789);
            let record = IpnsRecord::builder(value.clone())
                .sequence(sequence)
                .valid_until(end)
                .ttl(Duration::from_nanos(ttl_nanos))
                .v1_compatible(v1)
                .sign(&keypair)
                .unwrap();
            let read = IpnsRecord::decode(record.as_bytes()).unwrap();
            prop_assert_eq!(read.verify(&name, end), Ok(()));
            prop_assert_eq!(read.value(), &value[..]);
            prop_assert_eq!(read.sequence(), sequence);
            prop_assert_eq!(read.validity(), end);
            prop_assert_eq!(read.ttl(), Duration::from_nanos(ttl_nanos.min(i64::MAX as u64)));
        }
    }
}
