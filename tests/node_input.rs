//! The example node's parsing of what people type (examples/node/keys.rs: CIDs, peer ids,
//! record keys; examples/node/units.rs: durations, times) and its unit tests, compiled here so
//! that `cargo test` runs them: an example's own tests run only with `test = true`, and that
//! setting stops `cargo test` from building the binary tests/node_cli.rs starts.

#[path = "../examples/node/keys.rs"]
mod keys;
#[path = "../examples/node/units.rs"]
mod units;
