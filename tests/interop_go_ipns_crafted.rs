//! IPNS records that boxo would never make, but that another implementation (or an attacker)
//! might, correctly signed: go-libp2p-kad-dht's stock validator (boxo's `ipns`) and kadence's
//! must judge each alike, or a go server keeps what a kadence server refuses, and the other way
//! round. Skipped with a printed reason on a machine without Go; under CI a missing toolchain
//! fails.

mod common;

use common::go::{binary, hex, GoPeer};
use kadence::ipns;
use kadence::Validators;
use libp2p::identity::Keypair;

/// The DAG-CBOR data of a hand-made record: any field may be left out. Declared in DAG-CBOR's
/// canonical key order (shorter keys first), which the encoder keeps.
#[derive(serde::Serialize, Clone)]
struct CraftedData {
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    ttl: Option<i64>,
    #[serde(rename = "Value", skip_serializing_if = "Option::is_none")]
    value: Option<serde_bytes::ByteBuf>,
    #[serde(rename = "_extra", skip_serializing_if = "Option::is_none")]
    extra: Option<String>,
    #[serde(rename = "Sequence", skip_serializing_if = "Option::is_none")]
    sequence: Option<i64>,
    #[serde(rename = "Validity", skip_serializing_if = "Option::is_none")]
    validity: Option<serde_bytes::ByteBuf>,
    #[serde(rename = "ValidityType", skip_serializing_if = "Option::is_none")]
    validity_type: Option<i64>,
}

/// A V2-only record of `data`, correctly signed by `keypair`: an IpnsEntry with only
/// signatureV2 (field 8) and data (field 9).
fn crafted_record(keypair: &Keypair, data: &CraftedData) -> Vec<u8> {
    let data = serde_ipld_dagcbor::to_vec(data).expect("encodes");
    let mut signed = b"ipns-signature:".to_vec();
    signed.extend_from_slice(&data);
    let signature = keypair.sign(&signed).expect("signs");
    let mut entry = Vec::new();
    for (tag, bytes) in [(0x42u8, signature), (0x4a, data)] {
        entry.push(tag);
        let mut len = bytes.len();
        while len >= 0x80 {
            entry.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        entry.push(len as u8);
        entry.extend_from_slice(&bytes);
    }
    entry
}

/// Records boxo would never make, signed correctly: go's stock validator and kadence's must
/// agree on each, valid or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_made_records_are_judged_as_go_judges_them() {
    let Some(binary) = binary() else { return };
    let mut go = GoPeer::start(&binary).await;
    let keypair = Keypair::generate_ed25519();
    let key = ipns::routing_key(&keypair.public().to_peer_id());
    let bytes = |text: &str| Some(serde_bytes::ByteBuf::from(text.as_bytes().to_vec()));
    let good = CraftedData {
        ttl: Some(3_600_000_000_000),
        value: bytes("/ipfs/bafkqaaa"),
        extra: None,
        sequence: Some(1),
        validity: bytes("2099-01-02T03:04:05.123456789Z"),
        validity_type: Some(0),
    };
    let with = |change: &dyn Fn(&mut CraftedData)| {
        let mut data = good.clone();
        change(&mut data);
        data
    };
    let cases: Vec<(&str, CraftedData)> = vec![
        ("as boxo makes it", good.clone()),
        (
            "an unknown extra key",
            with(&|d| d.extra = Some("x".into())),
        ),
        ("a negative TTL", with(&|d| d.ttl = Some(-1))),
        ("no TTL", with(&|d| d.ttl = None)),
        ("no Sequence", with(&|d| d.sequence = None)),
        ("a negative Sequence", with(&|d| d.sequence = Some(-1))),
        ("no Value", with(&|d| d.value = None)),
        ("an empty Value", with(&|d| d.value = bytes(""))),
        ("no Validity", with(&|d| d.validity = None)),
        ("no ValidityType", with(&|d| d.validity_type = None)),
        ("ValidityType 1", with(&|d| d.validity_type = Some(1))),
        (
            "a past Validity",
            with(&|d| d.validity = bytes("2001-01-02T03:04:05Z")),
        ),
        (
            "a Validity without fraction",
            with(&|d| d.validity = bytes("2099-01-02T03:04:05Z")),
        ),
        (
            "a Validity with an offset",
            with(&|d| d.validity = bytes("2099-01-02T03:04:05+02:00")),
        ),
        (
            "a Validity in lower case",
            with(&|d| d.validity = bytes("2099-01-02t03:04:05z")),
        ),
        (
            "a leap second",
            with(&|d| d.validity = bytes("2098-12-31T23:59:60Z")),
        ),
        (
            "a Validity with a space",
            with(&|d| d.validity = bytes("2099-01-02 03:04:05Z")),
        ),
        (
            "a Validity without seconds",
            with(&|d| d.validity = bytes("2099-01-02T03:04Z")),
        ),
        (
            "a comma before the fraction",
            with(&|d| d.validity = bytes("2099-01-02T03:04:05,5Z")),
        ),
        (
            "an offset of 24 hours",
            with(&|d| d.validity = bytes("2099-01-02T03:04:05+24:00")),
        ),
        (
            "an offset of 60 minutes",
            with(&|d| d.validity = bytes("2099-01-02T03:04:05-00:60")),
        ),
        (
            "an offset without a colon",
            with(&|d| d.validity = bytes("2099-01-02T03:04:05+0200")),
        ),
        (
            "a fraction of 13 digits",
            with(&|d| d.validity = bytes("2099-01-02T03:04:05.1234567891234Z")),
        ),
        (
            "a Validity of year 0",
            with(&|d| d.validity = bytes("0000-01-02T03:04:05Z")),
        ),
    ];
    let validators = Validators::default();
    let mut disagreements = Vec::new();
    for (case, data) in &cases {
        let record = crafted_record(&keypair, data);
        let answer = go
            .cmd(&format!("ipns-validate {} {}", hex(&key), hex(&record)))
            .await;
        let go_verdict = answer["error"].as_str().map_or(Ok(()), Err);
        let kadence_verdict = validators.validate(&key, &record);
        if *case == "as boxo makes it" {
            // The crafting itself is sound: otherwise every case would agree on a refusal.
            assert!(
                go_verdict.is_ok() && kadence_verdict.is_ok(),
                "{go_verdict:?} {kadence_verdict:?}"
            );
        }
        if go_verdict.is_ok() != kadence_verdict.is_ok() {
            disagreements.push(format!(
                "{case}: go {go_verdict:?}, kadence {kadence_verdict:?}"
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "go and kadence disagree:\n{}",
        disagreements.join("\n")
    );
    go.stop().await;
}
