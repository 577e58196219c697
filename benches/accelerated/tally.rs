//! The tally of requests the nodes received from the clients, by type: what the bench reports
//! as sent by a client is what its receivers counted.

use std::sync::atomic::{AtomicU64, Ordering};

use kadence::MessageType;
use libp2p::PeerId;

/// Inbound requests every node received from the watched peers (the clients), by type.
pub struct Tally {
    watched: Vec<PeerId>,
    counts: Vec<[AtomicU64; 6]>,
}

impl Tally {
    pub fn new(watched: Vec<PeerId>) -> Self {
        let counts = watched.iter().map(|_| Default::default()).collect();
        Self { watched, counts }
    }
    pub fn slot(kind: MessageType) -> usize {
        match kind {
            MessageType::PutValue => 0,
            MessageType::GetValue => 1,
            MessageType::AddProvider => 2,
            MessageType::GetProviders => 3,
            MessageType::FindNode => 4,
            MessageType::Ping => 5,
        }
    }
    pub fn record(&self, from: &PeerId, kind: MessageType) {
        if let Some(i) = self.watched.iter().position(|w| w == from) {
            self.counts[i][Self::slot(kind)].fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn get(&self, from: &PeerId, kind: MessageType) -> u64 {
        self.watched.iter().position(|w| w == from).map_or(0, |i| {
            self.counts[i][Self::slot(kind)].load(Ordering::Relaxed)
        })
    }
}
