//! The start of a swarm benchmark's `main`: its logs, its options and its runtime.

/// Logs to stderr, filtered by `RUST_LOG` (stdout carries the report).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process's arguments read by `parse`. On an error the bench `name` prints it (and
/// `usage`, when given) and the process exits with status 2.
pub fn options<T>(
    name: &str,
    usage: Option<&str>,
    parse: impl FnOnce(&[String]) -> Result<T, String>,
) -> T {
    let args: Vec<String> = std::env::args().skip(1).collect();
    parse(&args).unwrap_or_else(|e| {
        match usage {
            Some(usage) => eprintln!("{name} bench: {e}\nusage: {usage}"),
            None => eprintln!("{name} bench: {e}"),
        }
        std::process::exit(2);
    })
}

/// The runtime every node of the bench runs on: two workers, as the machines it runs on have
/// two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
