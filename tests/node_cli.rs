//! The example node as a user runs it: five `serve` processes on loopback, and the one-shot
//! commands finding each other's provider records and values; bad input gives one line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use libp2p::identity::Keypair;

/// The example binary that `cargo test` builds beside the test binaries.
fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let binary = dir.join("examples").join("node");
    assert!(
        binary.exists(),
        "cargo test builds the examples: {}",
        binary.display()
    );
    binary
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data_dir: &std::path::Path, bootstrap: Option<&str>) -> Server {
    let mut command = Command::new(node_binary());
    command
        .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
        .arg(data_dir);
    if let Some(addr) = bootstrap {
        command.args(["--bootstrap", addr]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            addr = Some(a.to_string());
            break;
        }
    }
    // Keep draining: a closed pipe would make the server's next `println!` fail.
    std::thread::spawn(move || lines.for_each(drop));
    Server {
        child,
        addr: addr.expect("serve prints its address"),
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

    // Put a /pk record through one server, get it through another.
    let key = Keypair::generate_ed25519();
    let value = key.public().encode_protobuf();
    let file = dirs[0].path().join("value");
    std::fs::write(&file, &value).unwrap();
    let record_key = format!("/pk/{}", key.public().to_peer_id());
    let put = one_shot(&addrs[0], &["put", &record_key, file.to_str().unwrap()]);
    assert!(put.status.success(), "{put:?}");
    let got = one_shot(&addrs[2], &["get", &record_key]);
    assert!(got.status.success(), "{got:?}");
    assert_eq!(got.stdout, value);

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
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("error: bad multiaddr"));
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
