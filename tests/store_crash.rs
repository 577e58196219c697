//! Crash safety of the persistent store: a child process writes provider records and prints
//! each acknowledged (flushed) batch; it is killed with SIGKILL mid-stream; on reopen, every
//! acknowledged record is there and the database opens cleanly. Several rounds on one file.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use kadence::store::{
    PersistentStore, PersistentStoreConfig, ProviderRecord, ProviderStore, Store,
};
use libp2p::identity::Keypair;
use libp2p::PeerId;

const PATH_VAR: &str = "KADENCE_CRASH_CHILD_PATH";
const START_VAR: &str = "KADENCE_CRASH_CHILD_START";
const BATCH: u64 = 50;

fn provider() -> PeerId {
    Keypair::ed25519_from_bytes([9u8; 32])
        .unwrap()
        .public()
        .to_peer_id()
}

fn record(i: u64, now: SystemTime) -> ProviderRecord {
    ProviderRecord {
        key: i.to_be_bytes().to_vec(),
        provider: provider(),
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        received: now,
        expires: now + Duration::from_secs(48 * 3600),
        addrs_expire: now + Duration::from_secs(24 * 3600),
    }
}

/// The child: writes batches forever, printing `ACK n` once records below n are durable.
#[test]
#[ignore = "the child process of acknowledged_writes_survive_sigkill"]
fn crash_child() {
    let path = std::env::var(PATH_VAR).expect("run by acknowledged_writes_survive_sigkill");
    let mut next: u64 = std::env::var(START_VAR).unwrap().parse().unwrap();
    let config = PersistentStoreConfig {
        max_buffered_writes: usize::MAX,
        ..Default::default()
    };
    let mut store = PersistentStore::open(path, config).unwrap();
    loop {
        let now = SystemTime::now();
        for _ in 0..BATCH {
            store.add_provider(record(next, now)).unwrap();
            next += 1;
        }
        store.flush().unwrap();
        println!("ACK {next}");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut start = 0u64;
    // Every acknowledged range so far: each reopen must still hold all of them.
    let mut acknowledged: Vec<std::ops::Range<u64>> = Vec::new();
    for round in 0..5u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PATH_VAR, &path)
            .env(START_VAR, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Kill after a few acknowledged batches, a different number each round.
        let wanted = 3 + round * 4;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut acked = start;
        let mut seen = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("ACK ") {
                acked = n.parse().unwrap();
                seen += 1;
                if seen >= wanted {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the child is too slow");
        }
        child.kill().unwrap(); // SIGKILL: no destructor, no flush.
        child.wait().unwrap();
        assert!(seen >= wanted, "the child died on its own");

        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default())
            .expect("the database opens cleanly after SIGKILL");
        acknowledged.push(start..acked);
        let now = SystemTime::now();
        for i in acknowledged.iter().flat_map(|r| r.clone()) {
            let found = store.providers(&i.to_be_bytes(), now).unwrap();
            assert_eq!(
                found.len(),
                1,
                "acknowledged record {i} lost in round {round}"
            );
        }
        store.flush().unwrap();
        drop(store);
        start = acked + 1_000_000;
    }
}
