//! The `kadence` binary as a user runs it: `serve` processes on loopback, and the one-shot
//! commands finding each other's provider records, values and IPNS names; bad input gives one
//! line.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;

#[path = "node_cli/support.rs"]
mod support;

use support::{http_get, JsonServer};

/// The binary, which cargo builds for integration tests when the `cli` feature is on.
fn node_binary() -> &'static str {
    env!("CARGO_BIN_EXE_kadence")
}

struct Server {
    child: Child,
    addr: String,
    /// What it printed after its address, a line at a time.
    lines: mpsc::Receiver<String>,
}

impl Server {
    /// The server's peer id, the end of its `/p2p/` address.
    fn id(&self) -> &str {
        self.addr.rsplit('/').next().unwrap()
    }

    /// Waits for a line of the server's output starting with `prefix`.
    fn line_starting(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line starting with {prefix:?} from the server: {e}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data_dir: &std::path::Path, bootstrap: Option<&str>) -> Server {
    serve_with(data_dir, bootstrap, &[])
}

fn serve_with(data_dir: &std::path::Path, bootstrap: Option<&str>, more: &[&str]) -> Server {
    let mut command = Command::new(node_binary());
    command
        .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
        .arg(data_dir)
        .args(more);
    if let Some(addr) = bootstrap {
        command.args(["--bootstrap", addr]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = mpsc::channel();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            addr = Some(a.to_string());
            break;
        }
        // Lines before the address (e.g. a restored table) are kept for the test too.
        let _ = tx.send(line);
    }
    // Keep draining (a closed pipe would make the server's next `println!` fail), and pass
    // the lines on to whoever waits for one.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Server {
        child,
        addr: addr.expect("serve prints its address"),
        lines: rx,
    }
}

fn one_shot(bootstrap: &str, args: &[&str]) -> Output {
    Command::new(node_binary())
        .args(["--bootstrap", bootstrap])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn five_servers_and_the_one_shot_commands() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = serve(dirs[0].path(), None);
    let mut servers = vec![];
    for dir in &dirs[1..] {
        servers.push(serve(dir.path(), Some(&first.addr)));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();

    // Provide through one server, find through another.
    let cid = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
    let provided = one_shot(&addrs[1], &["provide", cid]);
    assert!(provided.status.success(), "{provided:?}");
    let found = one_shot(&addrs[3], &["--json", "find-providers", cid]);
    assert!(found.status.success(), "{found:?}");
    let json: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert!(!json["providers"].as_array().unwrap().is_empty(), "{json}");

    // Many keys from a file, announced by the sweep: JSON on stdout, no bar on stderr.
    let keys = dirs[0].path().join("keys.txt");
    std::fs::write(
        &keys,
        "# two CIDs and a multihash\n\
         QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG\n\
         bafkreifqjjl5idwkcoeat4jzu5vrebcdgpbxia4rzg7rz2oy4inhsiil7u\n\
         1220c3c4733ec8affd06cf9e9ff50ffc6bcd2ec85a6170004bb709669c31de94391a\n",
    )
    .unwrap();
    let announced = json_of(&addrs[2], &["provide", "--file", keys.to_str().unwrap()]);
    assert_eq!(announced["announced"], 3, "{announced}");
    let found = json_of(
        &addrs[0],
        &[
            "find-providers",
            "bafkreifqjjl5idwkcoeat4jzu5vrebcdgpbxia4rzg7rz2oy4inhsiil7u",
        ],
    );
    assert!(
        !found["providers"].as_array().unwrap().is_empty(),
        "{found}"
    );
    let closest = json_of(&addrs[0], &["closest", "some text"]);
    assert!(
        !closest["peers"].as_array().unwrap().is_empty(),
        "{closest}"
    );
    let peer = json_of(&addrs[0], &["find-peer", first.id()]);
    assert_eq!(peer["id"], first.id(), "{peer}");

    // Put a /pk record through one server, get it through another.
    let key = Keypair::generate_ed25519();
    let value = key.public().encode_protobuf();
    let file = dirs[0].path().join("value");
    std::fs::write(&file, &value).unwrap();
    let record_key = format!("/pk/{}", key.public().to_peer_id());
    let put = one_shot(&addrs[0], &["put", &record_key, file.to_str().unwrap()]);
    assert!(put.status.success(), "{put:?}");
    assert!(put.stderr.is_empty(), "{put:?}");
    let got = one_shot(&addrs[2], &["get", &record_key]);
    assert!(got.status.success(), "{got:?}");
    assert_eq!(got.stdout, value);
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    let got = json_of(&addrs[1], &["get", &record_key]);
    assert_eq!(got["value_hex"], hex, "{got}");
    let put = json_of(&addrs[3], &["put", &record_key, file.to_str().unwrap()]);
    assert!(put["stored"].as_u64().unwrap() >= 1, "{put}");

    // Bad input: one line on stderr, a non-zero exit, no panic.
    for args in [
        vec!["find-providers", "not-a-cid"],
        vec!["find-peer", "not-a-peer"],
        vec!["get", "no-namespace"],
    ] {
        let out = one_shot(&first.addr, &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    let bad = Command::new(node_binary())
        .args(["--bootstrap", "/ip4/not-an-ip", "closest", "x"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.starts_with("error: invalid value"), "{stderr}");
    assert!(stderr.contains("bad multiaddr"), "{stderr}");
    // An address this machine does not have (TEST-NET-1).
    let busy = Command::new(node_binary())
        .args(["serve", "--listen", "/ip4/192.0.2.1/tcp/0", "--data-dir"])
        .arg(dirs[0].path().join("other"))
        .output()
        .unwrap();
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).starts_with("error: cannot listen"));
    // A port another node already listens on.
    let port = first.addr.split('/').nth(4).unwrap();
    let taken = Command::new(node_binary())
        .args([
            "serve",
            "--listen",
            &format!("/ip4/127.0.0.1/tcp/{port}"),
            "--data-dir",
        ])
        .arg(dirs[0].path().join("other"))
        .output()
        .unwrap();
    assert!(!taken.status.success());
    let stderr = String::from_utf8_lossy(&taken.stderr);
    assert!(stderr.contains("Address already in use"), "{stderr}");
    // A data dir that cannot be created (its parent is a file).
    let unwritable = Command::new(node_binary())
        .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
        .arg(file.join("dir"))
        .output()
        .unwrap();
    assert!(!unwritable.status.success());
    let stderr = String::from_utf8_lossy(&unwritable.stderr);
    assert!(stderr.starts_with("error: cannot use data dir"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Runs a one-shot command that must succeed and print one JSON object.
fn json_of(bootstrap: &str, args: &[&str]) -> serde_json::Value {
    let out = one_shot(bootstrap, &[&["--json"], args].concat());
    assert!(out.status.success(), "{args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
}

/// Waits until a lookup through `via` finds every one of `servers`, so that records are
/// stored at, and read from, the whole network.
fn wait_until_joined(via: &str, servers: &[&Server]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let ids: Vec<&str> = servers.iter().map(|s| s.id()).collect();
    loop {
        let out = one_shot(via, &["--json", "closest", "kadence-node-ipns-test"]);
        let found: Vec<String> = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|j| j["peers"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p["id"].as_str().map(String::from))
            .collect();
        if ids.iter().all(|id| found.iter().any(|f| f == id)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the servers never all met: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Seconds from now until an RFC 3339 time.
fn seconds_until(rfc3339: &str) -> i64 {
    let format = time::format_description::well_known::Rfc3339;
    let when = time::OffsetDateTime::parse(rfc3339, &format).unwrap();
    (when - time::OffsetDateTime::now_utc()).whole_seconds()
}

#[test]
fn publish_and_resolve_an_ipns_name() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = serve(dirs[0].path(), None);
    let others: Vec<Server> = dirs[1..]
        .iter()
        .map(|d| serve(d.path(), Some(&first.addr)))
        .collect();
    let all: Vec<&Server> = std::iter::once(&first).chain(&others).collect();
    wait_until_joined(&others[2].addr, &all);
    let addr = |i: usize| all[i].addr.as_str();

    // The first server's own name, from its data directory, published through another server.
    let name = first.id();
    let v1 = "/ipfs/bafkreifqjjl5idwkcoeat4jzu5vrebcdgpbxia4rzg7rz2oy4inhsiil7u";
    let dir = dirs[0].path().to_str().unwrap();
    let published = json_of(addr(1), &["publish", v1, "--data-dir", dir]);
    assert_eq!(published["name"], name, "{published}");
    assert_eq!(published["value"], v1, "{published}");
    assert_eq!(published["sequence"], 0, "{published}");
    assert!(published["stored"].as_u64().unwrap() >= 1, "{published}");
    let cid = published["name_cid"].as_str().unwrap().to_string();
    assert!(cid.starts_with("k51"), "{published}");

    // Resolved through a third server, in the human form.
    let resolved = one_shot(addr(2), &["resolve", name]);
    assert!(resolved.status.success(), "{resolved:?}");
    let text = String::from_utf8_lossy(&resolved.stdout);
    assert!(text.contains(&format!("value:    {v1}\n")), "{text}");
    assert!(text.contains("sequence: 0\n"), "{text}");

    // A second publish goes one above the record it finds; a bare CID becomes /ipfs/<cid>.
    let v2 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
    let published = json_of(addr(3), &["publish", v2, "--data-dir", dir]);
    assert_eq!(published["sequence"], 1, "{published}");
    let resolved = json_of(addr(0), &["resolve", &cid]);
    assert_eq!(resolved["name"], name, "{resolved}");
    assert_eq!(resolved["value"], format!("/ipfs/{v2}"), "{resolved}");
    assert_eq!(resolved["sequence"], 1, "{resolved}");
    assert_eq!(resolved["ttl_seconds"], 3600.0, "{resolved}");
    // Valid for the default 48 hours, give or take a slow machine.
    let left = seconds_until(resolved["validity"].as_str().unwrap());
    assert!((47 * 3600..=48 * 3600).contains(&left), "{resolved}");

    // `/ipns/<k51 CID>` and `/ipns/<peer id>` are one key: `get` finds the same record.
    let by_id = json_of(addr(1), &["get", &format!("/ipns/{name}")]);
    let by_cid = json_of(addr(2), &["get", &format!("/ipns/{cid}")]);
    assert_eq!(by_id, resolved);
    assert_eq!(by_cid, resolved);
    let text = one_shot(addr(3), &["get", &format!("/ipns/{cid}")]);
    assert!(text.status.success(), "{text:?}");
    assert!(String::from_utf8_lossy(&text.stdout).contains("sequence: 1\n"));

    // A key file, with a lifetime and a TTL.
    let key = Keypair::generate_ed25519();
    let key_file = dirs[1].path().join("name.key");
    std::fs::write(&key_file, key.to_protobuf_encoding().unwrap()).unwrap();
    let key_path = key_file.to_str().unwrap();
    let options = ["--key-file", key_path, "--lifetime", "2h", "--ttl", "5m"];
    let published = json_of(addr(2), &[&["publish", v1][..], &options].concat());
    let other = key.public().to_peer_id().to_string();
    assert_eq!(published["name"], other, "{published}");
    assert_eq!(published["sequence"], 0, "{published}");
    let resolved = json_of(addr(3), &["resolve", &format!("/ipns/{other}")]);
    assert_eq!(resolved["value"], v1, "{resolved}");
    assert_eq!(resolved["ttl_seconds"], 300.0, "{resolved}");
    let left = seconds_until(resolved["validity"].as_str().unwrap());
    assert!((3600..=2 * 3600).contains(&left), "{resolved}");

    // Bad input: one line on stderr, a non-zero exit.
    let never = Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    for (args, says) in [
        (
            vec![
                "resolve",
                "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
            ],
            "libp2p-key",
        ),
        (vec!["resolve", &never], "no record"),
        (
            vec!["publish", v1, "--key-file", key_path, "--lifetime", "10"],
            "units",
        ),
        (
            vec!["publish", v1, "--key-file", key_path, "--lifetime", "0s"],
            "expired",
        ),
        (vec!["publish", v1, "--key-file", dir], "cannot read"),
        (
            vec!["publish", "not a path", "--key-file", key_path],
            "path",
        ),
        (vec!["get", "/ipns/example.com"], "peer"),
        (
            vec!["get", "/pk/x", "--ttl", "1h"],
            "unexpected argument '--ttl'",
        ),
    ] {
        let out = one_shot(addr(0), &args);
        assert_refused(&out, &args, says);
    }
}

/// The row of the testnet's table for `operation`, split in columns: ok, latency, requests,
/// accel, then the result's words.
fn testnet_row<'a>(table: &'a str, operation: &str) -> Vec<&'a str> {
    let prefix = format!("{operation:<16} ");
    let row = table
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {operation:?} row: {table}"));
    row[prefix.len()..].split_whitespace().collect()
}

#[test]
fn testnet_with_every_node_accelerated() {
    let out = Command::new(node_binary())
        .args(["testnet", "--accelerated", "--nodes", "10"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("all operations succeeded"), "{table}");
    let crawl = testnet_row(&table, "crawl");
    assert_eq!(crawl[0], "yes", "{table}");
    assert!(
        table.contains("10/10 accelerated nodes crawled, full tables of 9/9 peers"),
        "{table}"
    );
    for operation in [
        "closest peers",
        "provide",
        "find providers",
        "put value",
        "get value",
        "publish name",
        "resolve name",
        "find peer",
        "start providing",
    ] {
        let row = testnet_row(&table, operation);
        assert_eq!((row[0], row[3]), ("yes", "yes"), "{operation}: {table}");
    }
}

#[test]
fn testnet_prints_one_json_object() {
    let out = Command::new(node_binary())
        .args(["--json", "testnet", "--nodes", "6"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON object: {e}: {out:?}"));
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["nodes"], 6, "{json}");
    let operations = json["operations"].as_array().unwrap();
    assert_eq!(operations.len(), 10, "{json}");
    for operation in operations {
        assert_eq!(operation["ok"], true, "{operation}");
        assert!(operation["ms"].is_f64(), "{operation}");
    }
    // No bar: stderr is no terminal.
    assert!(out.stderr.is_empty(), "{out:?}");
}

/// Waits for `server` to say it is accelerated: its crawl finished.
fn until_accelerated(server: &Server) {
    server.line_starting("crawl finished in ", Duration::from_secs(60));
    server.line_starting("accelerated: ", Duration::from_secs(60));
}

#[test]
fn accelerated_serve_and_one_shot_commands() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let accelerated = ["--accelerated"];
    let first = serve_with(dirs[0].path(), None, &accelerated);
    let others: Vec<Server> = dirs[1..]
        .iter()
        .map(|d| serve_with(d.path(), Some(&first.addr), &accelerated))
        .collect();
    let all: Vec<&Server> = std::iter::once(&first).chain(&others).collect();
    for server in &all {
        until_accelerated(server);
    }
    wait_until_joined(&others[2].addr, &all);

    // A one-shot command crawls (progress on stderr), then looks up from its full table.
    let out = one_shot(
        &others[0].addr,
        &["--json", "--accelerated", "closest", "kadence-accelerated"],
    );
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("crawling the network"), "{stderr}");
    assert!(stderr.contains("crawl finished in "), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON object: {e}: {out:?}"));
    assert_eq!(json["accelerated"], true, "{json}");
    assert_eq!(json["crawl"]["finished"], true, "{json}");
    assert_eq!(json["crawl"]["peers"], 4, "{json}");
    assert!(json["ms"].is_u64(), "{json}");
    assert_eq!(json["peers"].as_array().unwrap().len(), 4, "{json}");

    // Human form: put and get say they were accelerated; `get` keeps stdout for the value.
    let key = Keypair::generate_ed25519();
    let value = key.public().encode_protobuf();
    let file = dirs[0].path().join("value");
    std::fs::write(&file, &value).unwrap();
    let record_key = format!("/pk/{}", key.public().to_peer_id());
    let put = one_shot(
        &others[1].addr,
        &["--accelerated", "put", &record_key, file.to_str().unwrap()],
    );
    assert!(put.status.success(), "{put:?}");
    let stdout = String::from_utf8_lossy(&put.stdout);
    assert!(stdout.contains("stored at 4 peers\n"), "{stdout}");
    assert!(
        stdout.contains("accelerated: yes, from the full routing table of 4 peers"),
        "{stdout}"
    );
    let got = one_shot(
        &others[2].addr,
        &["--accelerated", "--crawl-timeout", "1m", "get", &record_key],
    );
    assert!(got.status.success(), "{got:?}");
    assert_eq!(got.stdout, value);
    assert!(String::from_utf8_lossy(&got.stderr).contains("accelerated: yes"));
}

#[test]
fn accelerated_flags_refuse_bad_values() {
    for (args, says) in [
        (
            vec!["--accelerated", "--crawl-timeout", "soon", "closest", "x"],
            "durations are numbers with units",
        ),
        (
            vec!["--accelerated", "closest", "x", "--crawl-timeout"],
            "a value is required for '--crawl-timeout",
        ),
        (
            vec!["--crawl-timeout", "60", "closest", "x"],
            "option of one-shot commands with --accelerated",
        ),
        (
            vec!["serve", "--accelerated", "--crawl-timeout", "60"],
            "option of one-shot commands with --accelerated",
        ),
        (
            vec!["testnet", "--accelerated", "--crawl-timeout", "60"],
            "option of one-shot commands with --accelerated",
        ),
    ] {
        // Refused while parsing: no network is contacted.
        let out = Command::new(node_binary()).args(&args).output().unwrap();
        assert_refused(&out, &args, says);
    }
}

#[test]
fn help_for_the_binary_and_every_command() {
    let commands = [
        "testnet",
        "serve",
        "closest",
        "provide",
        "find-providers",
        "find-peer",
        "get",
        "put",
        "publish",
        "resolve",
    ];
    let top = Command::new(node_binary()).arg("--help").output().unwrap();
    assert!(top.status.success(), "{top:?}");
    assert!(top.stderr.is_empty(), "{top:?}");
    let text = String::from_utf8_lossy(&top.stdout);
    for command in commands {
        assert!(text.contains(&format!("  {command} ")), "{command}: {text}");
    }
    for flag in ["--bootstrap", "--json", "--accelerated", "--crawl-timeout"] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
    for command in commands {
        let out = Command::new(node_binary())
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Usage: kadence {command}")),
            "{command}: {text}"
        );
    }
    let serve = Command::new(node_binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&serve.stdout);
    for flag in ["--listen", "--data-dir"] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
    let provide = Command::new(node_binary())
        .args(["help", "provide"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&provide.stdout).contains("--file"));
}

#[test]
fn bad_command_lines_are_one_line_and_exit_2() {
    for (args, says) in [
        (vec![], "a command is needed"),
        (vec!["frob"], "unrecognized subcommand 'frob'"),
        (
            vec!["provide"],
            "required arguments were not provided: <CID>",
        ),
        (vec!["testnet", "--nodes", "3"], "at least 6"),
        (
            vec!["testnet", "--bootstrap", "/ip4/127.0.0.1/tcp/1"],
            "testnet",
        ),
        (
            vec!["publish", "/ipfs/x", "--key-file", "a", "--data-dir", "b"],
            "cannot be used with",
        ),
        (vec!["find-peer", "not-a-peer"], "not a peer id"),
    ] {
        let out = Command::new(node_binary()).args(&args).output().unwrap();
        assert_refused(&out, &args, says);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
}

/// Asserts that the command run with `args` failed with one line on stderr, an error that
/// says `says`.
fn assert_refused(out: &Output, args: &[&str], says: &str) {
    assert!(!out.status.success(), "{args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(says),
        "{args:?}: {stderr}"
    );
}

/// Stops a server as Ctrl-C does, so that it flushes its store.
fn interrupt(mut server: Server) {
    let pid = server.child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    // A guard, not a timing claim: a node that ignored the signal would hang the suite.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "SIGINT did not stop the server");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_restarted_accelerated_server_restores_its_crawled_table() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let accelerated = ["--accelerated"];
    let first = serve_with(dirs[0].path(), None, &accelerated);
    let second = serve_with(dirs[1].path(), Some(&first.addr), &accelerated);
    wait_until_joined(&second.addr, &[&first, &second]);
    // The third one's crawl starts when it starts, from the first, which knows the second.
    let third = serve_with(dirs[2].path(), Some(&first.addr), &accelerated);
    let crawled = third.line_starting("crawl finished in ", Duration::from_secs(60));
    assert!(
        crawled.contains("full routing table of 2 peers"),
        "{crawled}"
    );
    let id = third.id().to_string();
    interrupt(third);

    let restarted = serve_with(dirs[2].path(), Some(&first.addr), &accelerated);
    assert_eq!(restarted.id(), id);
    let restored =
        restarted.line_starting("full routing table restored: ", Duration::from_secs(10));
    assert_eq!(restored, "full routing table restored: 2 peers");
    // Accelerated at once, before any crawl of this run.
    let next = restarted.line_starting("", Duration::from_secs(10));
    assert!(next.starts_with("accelerated: "), "{next}");
}

#[test]
fn serve_reports_status_serves_metrics_and_stops_on_sigterm() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let more = ["--status-interval", "1", "--metrics", "127.0.0.1:0"];
    let mut first = JsonServer::start(dirs[0].path(), &more);
    let started = first.event("started", Duration::from_secs(30));
    let addr = started["listening"][0].as_str().unwrap().to_string();
    assert!(
        addr.ends_with(started["peer_id"].as_str().unwrap()),
        "{started}"
    );
    let url = first.event("metrics", Duration::from_secs(30))["url"]
        .as_str()
        .unwrap()
        .to_string();
    let host = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{url}"))
        .to_string();

    // A second node, in text, joins through the first: both status lines count the other.
    let second = serve_with(dirs[1].path(), Some(&addr), &["--status-interval", "1"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = first.event("status", Duration::from_secs(30));
        for field in [
            "records",
            "provider_keys",
            "provided_keys",
            "regions_reprovided",
        ] {
            assert!(status[field].is_u64(), "{field}: {status}");
        }
        if status["peers"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never saw the second node: {status}"
        );
    }
    let line = second.line_starting("status: ", Duration::from_secs(30));
    assert!(line.contains(" peers, "), "{line}");
    assert!(line.contains(" provided keys ("), "{line}");

    // Prometheus text, with the DHT's families, at /metrics and nowhere else.
    let response = http_get(&host, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("openmetrics-text"), "{response}");
    assert!(
        response.contains("# TYPE kadence_routing_table_peers gauge"),
        "{response}"
    );
    assert!(response.trim_end().ends_with("# EOF"), "{response}");
    assert!(http_get(&host, "/other").starts_with("HTTP/1.1 404"));

    // SIGTERM stops it as Ctrl-C does: the store flushed, exit status 0, and it says so.
    let pid = first.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let stopped = first.event("stopped", Duration::from_secs(60));
    assert_eq!(stopped["signal"], "SIGTERM", "{stopped}");
    assert_eq!(stopped["store_flushed"], true, "{stopped}");
    let status = first.child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // A metrics address already taken is one line and a non-zero exit.
    let taken = Command::new(node_binary())
        .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0", "--metrics"])
        .arg(second_metrics_addr(&second))
        .arg("--data-dir")
        .arg(dirs[0].path().join("other"))
        .output()
        .unwrap();
    assert_refused(&taken, &["serve", "--metrics"], "cannot serve metrics on");
}

/// An address in use on this machine: the second server's own TCP listener.
fn second_metrics_addr(server: &Server) -> String {
    let port = server.addr.split('/').nth(4).unwrap();
    format!("127.0.0.1:{port}")
}
