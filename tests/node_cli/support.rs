//! `serve --json` processes and HTTP requests for tests/node_cli.rs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A `serve --json` process and its stdout, a line at a time.
pub struct JsonServer {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl JsonServer {
    pub fn start(data_dir: &std::path::Path, more: &[&str]) -> JsonServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kadence"))
            .args([
                "--json",
                "serve",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(more)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        JsonServer { child, lines }
    }

    /// The next object whose `event` is `event`; every line before it must be JSON too.
    pub fn event(&self, event: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no {event:?} line from the server: {e}"));
            let object: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("serve --json printed {line:?}: {e}"));
            if object["event"] == event {
                return object;
            }
        }
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 GET of `path` from `addr` (host:port): the whole response.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
