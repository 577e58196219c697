//! The go-libp2p-kad-dht peer of `tests/interop/go-peer`, run as a child process and driven by
//! line commands (see its main.go).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/go-peer")
}

/// The Go peer's binary, built if needed. `None` (with the reason printed) when Go is missing
/// on a developer machine; under CI (`CI` set) a missing toolchain or a failed build panics.
pub fn binary() -> Option<PathBuf> {
    let dir = peer_dir();
    let binary = dir.join("go-peer");
    if !is_stale(&binary, &dir) {
        return Some(binary);
    }
    let built = std::process::Command::new("go")
        .args(["build", "-o", "go-peer", "."])
        .current_dir(&dir)
        .status();
    match built {
        Ok(status) if status.success() => Some(binary),
        outcome => {
            let reason = format!("the Go interop peer is not available ({outcome:?})");
            if std::env::var_os("CI").is_some() {
                panic!("{reason}: CI must build tests/interop/go-peer");
            }
            eprintln!("skipping: {reason}; install Go to run the Go interop tests");
            None
        }
    }
}

/// Whether the binary is missing or older than a source it is built from (a binary left from
/// an older main.go would lack its commands and flags).
fn is_stale(binary: &Path, dir: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(binary) else {
        return true;
    };
    ["main.go", "go.mod", "go.sum"]
        .iter()
        .any(|source| modified(&dir.join(source)).is_some_and(|t| t > built))
}

/// A running Go peer.
pub struct GoPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pub id: PeerId,
    pub addr: Multiaddr,
}

impl GoPeer {
    pub async fn start(binary: &Path) -> GoPeer {
        Self::start_with(binary, &[]).await
    }

    /// Starts the peer with command-line flags (`-mode`, `-key`, `-port`: see its main.go).
    pub async fn start_with(binary: &Path, args: &[&str]) -> GoPeer {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the Go peer starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut peer = GoPeer {
            child,
            stdin,
            stdout,
            id: PeerId::random(),
            addr: Multiaddr::empty(),
        };
        let info = peer.cmd("info").await;
        peer.id = info["id"].as_str().unwrap().parse().unwrap();
        peer.addr = info["addrs"][0].as_str().unwrap().parse().unwrap();
        peer
    }

    /// Sends one command line and returns its JSON answer.
    pub async fn cmd(&mut self, line: &str) -> Value {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .expect("the Go peer answers in time")
            .unwrap()
            .expect("the Go peer is running");
        serde_json::from_str(&answer).expect("one JSON line")
    }

    /// Like [`GoPeer::cmd`], but panics on an `{"error": ...}` answer.
    pub async fn ok(&mut self, line: &str) -> Value {
        let answer = self.cmd(line).await;
        assert!(answer.get("error").is_none(), "{line}: {answer}");
        answer
    }

    /// The full address with `/p2p/<id>`.
    pub fn p2p_addr(&self) -> String {
        format!("{}/p2p/{}", self.addr, self.id)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// What `peer` (at `addr`) answers to one GET_VALUE for `key`, asked by this Go peer
    /// directly, without a lookup: the record that peer itself stores.
    pub async fn stored_at(
        &mut self,
        peer: PeerId,
        addr: &Multiaddr,
        key: &[u8],
    ) -> Option<Vec<u8>> {
        self.ok(&format!("connect {addr}/p2p/{peer}")).await;
        let answer = self.ok(&format!("get-from {peer} {}", hex(key))).await;
        answer["value"].as_str().map(unhex)
    }

    /// Waits until this Go peer's routing table holds `peer` (it admits peers asynchronously,
    /// after identify and its own FIND_NODE check).
    pub async fn wait_in_table(&mut self, peer: PeerId) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let table = self.ok("table").await;
            let listed = table["peers"]
                .as_array()
                .is_some_and(|peers| peers.iter().any(|p| p.as_str() == Some(&peer.to_string())));
            if listed {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "go never admitted {peer}: {table}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A kadence configuration for a network with Go peers: Amino's protocol and parameters, in
/// server mode (so that the Go peers admit it), with timeouts that a loaded machine meets.
pub fn amino_config() -> kadence::Config {
    kadence::Config::amino()
        .with_mode(Some(kadence::Mode::Server))
        .with_query_timeout(Duration::from_secs(30))
        .with_request_timeout(Duration::from_secs(5))
}

/// A sha2-256 multihash of 32 `seed` bytes, shaped as provider keys are on Amino.
pub fn multihash(seed: u8) -> Vec<u8> {
    let mut key = vec![0x12, 0x20];
    key.extend([seed; 32]);
    key
}

/// Hex of bytes, as the Go peer's commands take keys and values.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of the Go peer's hex.
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex from the Go peer"))
        .collect()
}
