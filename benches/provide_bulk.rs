//! Provided keys by the million in a `PersistentStore` (issue 18, "bulk in, bulk out"):
//!
//! - **keys/s in**: `add_provided_many` of N distinct keys (sha2-256 multihashes, 34 bytes,
//!   in no particular order) into a fresh store in a temporary directory, in calls of 100,000
//!   keys as an application reading a file would make them, then `flush()`: the rate counts
//!   everything up to the last fsync. Making the keys (SHA-256 per key) is not timed.
//! - **disk bytes per key**: the database file's size after the final commit, and after the
//!   clean close (which compacts the file after bulk writes), divided by N; and how long the
//!   close took.
//! - **peak RSS** during the add: `VmHWM` of `/proc/self/status`, reset just before the add
//!   (`/proc/self/clear_refs`), so that it is the add's peak, keys being made included.
//! - **paging**: every key read back with `provided(from, 10,000)`, page after page from the
//!   point after the last key.
//! - **restart**: the store closed and reopened, up to its count of provided keys and its
//!   first page.
//!
//! `cargo bench --bench provide_bulk` (1M and 10M keys) or
//! `cargo bench --bench provide_bulk -- 1000000` for the sizes given.

use std::time::{Duration, Instant, SystemTime};

use kadence::key::Key;
use kadence::store::{PersistentStore, PersistentStoreConfig, Store};
use kadence::ProviderKey;

/// Keys per `add_provided_many` call.
const CALL: u64 = 100_000;
/// Keys per page when reading them back.
const PAGE: usize = 10_000;

fn key(i: u64) -> Vec<u8> {
    ProviderKey::sha2_256(&i.to_le_bytes()).into_bytes()
}

/// A field of `/proc/self/status` in kB.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000_000, 10_000_000]
    } else {
        sizes
    };
    println!(
        "| keys | keys/s in | disk bytes/key: committed / closed | close (s) | peak RSS (MiB) | paging all (s) | restart (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        run(n);
    }
}

fn run(n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("provided.redb");
    // `BULK_MIB`: the store's bound on bytes a bulk call leaves unwritten (default: the
    // store's own).
    let mut config = PersistentStoreConfig::default();
    if let Some(mib) = std::env::var("BULK_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        config.max_bulk_bytes = mib << 20;
    }
    let mut store = PersistentStore::open(&path, config).expect("open");
    let now = SystemTime::now();
    // The add's own peak: forget the previous runs'.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let mut adding = Duration::ZERO;
    let mut added = 0;
    let mut next = 0;
    while next < n {
        let keys: Vec<Vec<u8>> = (next..(next + CALL).min(n)).map(key).collect();
        next += keys.len() as u64;
        let start = Instant::now();
        added += store.add_provided_many(&keys, now).expect("bulk add");
        adding += start.elapsed();
    }
    let start = Instant::now();
    store.flush().expect("flush");
    adding += start.elapsed();
    let peak_mib = status_kb("VmHWM:") as f64 / 1024.0;
    assert_eq!(added as u64, n, "every key is new");
    assert_eq!(store.provided_len().expect("len"), n);
    let disk_committed = std::fs::metadata(&path).map_or(0, |m| m.len());

    let start = Instant::now();
    let mut from = Some(Key::from_hash([0; 32]));
    let mut paged = 0u64;
    while let Some(at) = from {
        let page = store.provided(&at, PAGE).expect("page");
        paged += page.len() as u64;
        from = match page.last() {
            Some(last) if page.len() == PAGE => Key::new(&last.key).next(),
            _ => None,
        };
    }
    let paging = start.elapsed();
    assert_eq!(paged, n, "every key paged");

    let start = Instant::now();
    drop(store);
    let closing = start.elapsed();
    let disk_closed = std::fs::metadata(&path).map_or(0, |m| m.len());
    let start = Instant::now();
    let mut store = PersistentStore::open(&path, config).expect("reopen");
    assert_eq!(store.provided_len().expect("len"), n);
    let first = store
        .provided(&Key::from_hash([0; 32]), PAGE)
        .expect("first page");
    let restart = start.elapsed();
    assert_eq!(first.len(), PAGE.min(n as usize));
    drop(store);

    eprintln!(
        "{n} keys: add {:.1} s, file {} bytes after the last commit, {} after close",
        adding.as_secs_f64(),
        disk_committed,
        disk_closed
    );
    println!(
        "| {n} | {:.0} | {:.1} / {:.1} | {:.1} | {:.0} | {:.2} | {:.0} |",
        n as f64 / adding.as_secs_f64(),
        disk_committed as f64 / n as f64,
        disk_closed as f64 / n as f64,
        closing.as_secs_f64(),
        peak_mib,
        paging.as_secs_f64(),
        restart.as_secs_f64() * 1000.0
    );
}
