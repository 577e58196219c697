//! Routing: the iterative query engine and the DHT interface built on it.

pub mod lookup;
