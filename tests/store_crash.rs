//! Crash safety of the persistent store: a child process writes provider records and prints
//! each acknowledged batch; it is killed with SIGKILL mid-stream; on reopen, every
//! acknowledged record is there and the database opens cleanly. Several rounds on one file.
//!
//! Rounds alternate between the two ways a write is acknowledged: `flush()` returned (it waits
//! for the writer thread's commit), or, as the behaviour works, the writes are handed over with
//! `start_flush()` and acknowledged once `durable_writes()` covers them, while the child keeps
//! writing (so the kill lands with batches queued and being committed).

use std::collections::VecDeque;
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
const MODE_VAR: &str = "KADENCE_CRASH_CHILD_MODE";
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
    let background = std::env::var(MODE_VAR).unwrap() == "background";
    let config = if background {
        // Small batches: a hand-over takes part of what waits, the rest goes later.
        PersistentStoreConfig {
            max_buffered_writes: 16,
            ..Default::default()
        }
    } else {
        PersistentStoreConfig {
            max_buffered_writes: usize::MAX,
            ..Default::default()
        }
    };
    let mut store = PersistentStore::open(path, config).unwrap();
    // Background mode: batches handed over and not yet durable, as (writes accepted after
    // the batch, records below this index).
    let mut waiting: VecDeque<(u64, u64)> = VecDeque::new();
    loop {
        let now = SystemTime::now();
        for _ in 0..BATCH {
            store.add_provider(record(next, now)).unwrap();
            next += 1;
        }
        if !background {
            store.flush().unwrap();
            println!("ACK {next}");
            continue;
        }
        store.start_flush().unwrap();
        waiting.push_back((store.accepted_writes(), next));
        // Acknowledge what is durable; keep writing while at most 4 batches wait.
        loop {
            let durable = store.durable_writes();
            while let Some(&(mark, below)) = waiting.front() {
                if mark > durable {
                    break;
                }
                println!("ACK {below}");
                waiting.pop_front();
            }
            if waiting.len() < 4 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut start = 0u64;
    // Every acknowledged range so far: each reopen must still hold all of them.
    let mut acknowledged: Vec<std::ops::Range<u64>> = Vec::new();
    for round in 0..6u64 {
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
            .env(
                MODE_VAR,
                if round % 2 == 0 {
                    "flush"
                } else {
                    "background"
                },
            )
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
