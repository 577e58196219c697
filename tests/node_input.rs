//! The node's parsing of what people type (src/bin/kadence/keys.rs: CIDs, peer ids, record
//! keys; src/bin/kadence/units.rs: durations, times) and its unit tests, compiled here so that
//! `cargo test` runs them without the `cli` feature the binary needs.

#[path = "../src/bin/kadence/keys.rs"]
mod keys;
#[path = "../src/bin/kadence/units.rs"]
mod units;
