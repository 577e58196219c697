//! Providing at scale (issue 18): one node holding N provided keys in its `PersistentStore`,
//! run as users run it (the `kadence` binary, `serve`), in a local network of S servers (the
//! same binary), each its own process, so that the provider's memory is its own.
//!
//! ```sh
//! cargo bench --bench provide_scale --features cli -- [--keys 1000000] [--servers 20] [--seconds 60] [--restart-only] [--no-mark]
//! ```
//!
//! Two runs over stores filled by this bench with `Store::add_provided_many`, 100,000 keys at a
//! time:
//! - **sweep**: N keys never announced. The provider starts and sweeps (every key is due at
//!   once: the heaviest work its sweep ever has); sampled every 250 ms for `--seconds`: its
//!   resident memory (VmRSS, and VmHWM, the peak), keys and ADD_PROVIDER messages announced.
//!   Then SIGTERM, and the time it takes to stop (its store flushed).
//! - **restart**: N keys announced an hour ago, as a node that stopped would leave them. The
//!   provider starts: the time until it listens, and until its sweep caught up (no region
//!   running or waiting: every region whose slot passed was read and found not due), the keys
//!   it announced meanwhile (goal: none: a restart must not re-announce everything at once),
//!   and its memory. The store keeps the sweep's mark a node leaves when it stops (its sweep
//!   done through the cycle's passed regions), so nothing is read again; `--no-mark` leaves
//!   it out, and the restart reads every region whose slot passed.
//!
//! Also measured: the fill rate (keys/s into the store) and the store's size on disk per key.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use kadence::store::{PersistentStore, PersistentStoreConfig};
use kadence::{ProviderKey, ReprovideConfig, Store, SweepMark};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_kadence");

struct Args {
    keys: u64,
    servers: usize,
    seconds: u64,
    /// `--restart-only`: skip the sweep run (and its store).
    restart_only: bool,
    /// `--no-mark`: the restart store without the sweep's mark (as a store written before
    /// marks were kept): the restart reads every region whose slot passed.
    no_mark: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        keys: 1_000_000,
        servers: 20,
        seconds: 60,
        restart_only: false,
        no_mark: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> u64 {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--keys" => args.keys = value("--keys"),
            "--servers" => args.servers = value("--servers") as usize,
            "--seconds" => args.seconds = value("--seconds"),
            "--restart-only" => args.restart_only = true,
            "--no-mark" => args.no_mark = true,
            // cargo bench passes --bench.
            _ => {}
        }
    }
    args
}

/// Fills a store with `keys` provided keys (SHA2-256 multihashes of their index), announced
/// `announced` ago when given. Returns keys/s.
fn fill(path: &Path, keys: u64, announced: Option<Duration>, mark: bool) -> f64 {
    let start = Instant::now();
    let mut store =
        PersistentStore::open(path, PersistentStoreConfig::default()).expect("store opens");
    let now = SystemTime::now();
    let mut next = 0u64;
    while next < keys {
        let chunk: Vec<Vec<u8>> = (next..keys.min(next + 100_000))
            .map(|i| ProviderKey::sha2_256(&i.to_be_bytes()).into_bytes())
            .collect();
        store.add_provided_many(&chunk, now).expect("keys added");
        if let Some(ago) = announced {
            for key in &chunk {
                store
                    .set_provided_status(key, now - ago, 20)
                    .expect("status set");
            }
        }
        next += chunk.len() as u64;
        if next.is_multiple_of(1_000_000) {
            eprintln!("provide_scale: {next} keys in the store");
        }
    }
    if let (Some(ago), true) = (announced, mark) {
        // The mark a node leaves that stopped `ago` ago, its sweep done through every region
        // whose slot had passed: in a network of 21 nodes the keyspace is one region (depth
        // 0), due at the start of each cycle. (A stop in the previous cycle leaves a mark
        // that says nothing about this one.)
        let stopped = (SystemTime::now() - ago)
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970");
        let cycle = stopped.as_secs() / ReprovideConfig::default().interval.as_secs();
        store
            .save_sweep_mark(SweepMark {
                cycle,
                next: 1,
                depth: 0,
            })
            .expect("mark kept");
    }
    store.flush().expect("flushed");
    drop(store);
    keys as f64 / start.elapsed().as_secs_f64()
}

/// A `kadence serve` process and the JSON lines it prints.
struct Node {
    child: Child,
    lines: mpsc::Receiver<Value>,
    address: String,
    started: Duration,
}

impl Node {
    fn spawn(data_dir: &Path, bootstrap: Option<&str>, status: &str) -> Node {
        let mut command = Command::new(BINARY);
        command
            .args(["serve", "--json", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(["--status-interval", status, "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(bootstrap) = bootstrap {
            command.args(["--bootstrap", bootstrap]);
        }
        let begin = Instant::now();
        let mut child = command.spawn().expect("the kadence binary runs");
        let lines = read_lines(child.stdout.take().expect("piped"));
        let started = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(120))
                .expect("the node starts");
            if line["event"] == "started" {
                break line;
            }
        };
        Node {
            child,
            lines,
            address: started["listening"][0]
                .as_str()
                .expect("an address")
                .to_string(),
            started: begin.elapsed(),
        }
    }

    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM, then the time until it exited.
    fn stop(mut self) -> Duration {
        let begin = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        begin.elapsed()
    }
}

fn read_lines(stdout: ChildStdout) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                if tx.send(value).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// What a provider run showed.
#[derive(Default)]
struct Sample {
    peak_rss: u64,
    last_status: Option<Value>,
}

/// Watches the provider until `done` says so or `limit` passes, sampling its memory.
fn watch(
    node: &Node,
    limit: Duration,
    done: impl Fn(&Value, Duration) -> bool,
) -> (Sample, Duration) {
    let begin = Instant::now();
    let mut sample = Sample::default();
    while begin.elapsed() < limit {
        let (_, hwm) = node.memory();
        sample.peak_rss = sample.peak_rss.max(hwm);
        while let Ok(line) = node.lines.try_recv() {
            if line["event"] == "status" {
                let finished = done(&line, begin.elapsed());
                sample.last_status = Some(line);
                if finished {
                    return (sample, begin.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    (sample, begin.elapsed())
}

fn field(status: &Option<Value>, name: &str) -> u64 {
    status.as_ref().and_then(|s| s[name].as_u64()).unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let args = parse_args();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path();
    let provider_dir = |name: &str| -> PathBuf {
        let path = root.join(name);
        std::fs::create_dir_all(&path).expect("a directory");
        path
    };

    let sweep_dir = provider_dir("sweep");
    let sweep_keys = if args.restart_only { 0 } else { args.keys };
    eprintln!("provide_scale: filling a store with {sweep_keys} keys");
    let fill_rate = fill(&sweep_dir.join("store.redb"), sweep_keys, None, false);
    let disk = disk_bytes(&sweep_dir);
    eprintln!("provide_scale: filling the restart store");
    let restart_dir = provider_dir("restart");
    fill(
        &restart_dir.join("store.redb"),
        args.keys,
        Some(Duration::from_secs(3600)),
        !args.no_mark,
    );

    eprintln!("provide_scale: starting {} servers", args.servers);
    let first = Node::spawn(&provider_dir("server-0"), None, "3600s");
    let bootstrap = first.address.clone();
    let mut servers = vec![first];
    for i in 1..args.servers {
        let data = provider_dir(&format!("server-{i}"));
        servers.push(Node::spawn(&data, Some(&bootstrap), "3600s"));
    }
    // Let the servers find each other before the provider asks them for regions.
    std::thread::sleep(Duration::from_secs(5));

    let seconds = if args.restart_only { 0 } else { args.seconds };
    eprintln!("provide_scale: sweep run, {seconds} s");
    let provider = Node::spawn(&sweep_dir, Some(&bootstrap), "1s");
    let sweep_start = provider.started;
    let (sweep, swept_for) = watch(&provider, Duration::from_secs(seconds), |_, _| false);
    let stop_time = provider.stop();
    let keys = field(&sweep.last_status, "keys_announced");
    let messages = field(&sweep.last_status, "announcements_written");

    eprintln!("provide_scale: restart run");
    let provider = Node::spawn(&restart_dir, Some(&bootstrap), "1s");
    let restart_start = provider.started;
    // Without a mark, done once the region was read; with one, nothing may be left to read:
    // done when nothing runs or waits past the sweep's first tick (1 s after the start).
    let no_mark = args.no_mark;
    let idle = |s: &Value| {
        s["reprovide_regions_running"].as_u64() == Some(0)
            && s["reprovide_regions_waiting"].as_u64() == Some(0)
    };
    let caught_up = |s: &Value, since: Duration| {
        idle(s)
            && if no_mark {
                s["reprovide_regions_checked"].as_u64() > Some(0)
            } else {
                since > Duration::from_secs(3)
            }
    };
    let (restart, catch_up) = watch(&provider, Duration::from_secs(300), caught_up);
    let regions_read = field(&restart.last_status, "reprovide_regions_checked");
    let restart_keys = field(&restart.last_status, "keys_announced");
    let caught = restart.last_status.as_ref().is_some_and(idle);
    provider.stop();
    for server in servers {
        server.stop();
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# Providing at scale");
    println!();
    println!(
        "command: `cargo bench --bench provide_scale --features cli -- --keys {} --servers {} --seconds {}{}`",
        args.keys,
        args.servers,
        args.seconds,
        match (args.restart_only, args.no_mark) {
            (true, true) => " --restart-only --no-mark",
            (true, false) => " --restart-only",
            (false, true) => " --no-mark",
            (false, false) => "",
        }
    );
    println!(
        "provider: the kadence binary (`serve`, release), its own process; {} servers likewise; \
         127.0.0.1 TCP; cores: {cores}",
        args.servers
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| provided keys | {} |", args.keys);
    if args.restart_only {
        println!("| (restart run only: the sweep rows below are empty) | |");
    }
    println!("| fill rate into PersistentStore (add_provided_many, 100,000 at a time) | {fill_rate:.0} keys/s |");
    println!(
        "| store on disk | {:.1} MiB, {:.0} B/key |",
        mib(disk),
        disk as f64 / args.keys as f64
    );
    println!(
        "| sweep: start to listening | {:.2} s |",
        sweep_start.as_secs_f64()
    );
    println!(
        "| sweep: peak RSS over {:.0} s | {:.0} MiB |",
        swept_for.as_secs_f64(),
        mib(sweep.peak_rss)
    );
    println!(
        "| sweep: keys announced | {keys} ({:.0} keys/s), {messages} ADD_PROVIDER |",
        keys as f64 / swept_for.as_secs_f64()
    );
    println!(
        "| sweep: SIGTERM to exit (store flushed) | {:.2} s |",
        stop_time.as_secs_f64()
    );
    println!(
        "| restart: start to listening | {:.2} s |",
        restart_start.as_secs_f64()
    );
    println!(
        "| restart: catch-up done (every passed region read, none running or waiting) | {} |",
        if caught && !args.no_mark && regions_read == 0 {
            "nothing to read: the schedule resumed where it stopped".to_string()
        } else if caught {
            format!("{:.1} s", catch_up.as_secs_f64())
        } else {
            format!("not within {:.0} s", catch_up.as_secs_f64())
        }
    );
    println!(
        "| restart: regions read to catch up ({}) | {regions_read} |",
        if args.no_mark {
            "no sweep mark kept"
        } else {
            "the sweep's mark kept by the stopped node"
        }
    );
    println!("| restart: keys announced again during the catch-up (all announced 1 h before) | {restart_keys} |");
    println!("| restart: peak RSS | {:.0} MiB |", mib(restart.peak_rss));
}
