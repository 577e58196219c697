//! The example node's key parsing (examples/node/keys.rs) and its unit tests, compiled here so
//! that `cargo test` runs them: an example's own tests run only with `test = true`, and that
//! setting stops `cargo test` from building the binary tests/node_cli.rs starts.

#[path = "../examples/node/keys.rs"]
mod keys;
