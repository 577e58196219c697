//! What the simulated cycle would cost on a real network: ADD_PROVIDER bytes (the real
//! encoding) and the time each region takes against its slot in the 22 h interval.

use kadence::network::message::encode_request;
use kadence::{ConnectionType, PeerRecord, Request};
use libp2p::identity::Keypair;
use libp2p::Multiaddr;

use crate::sweep::RegionRun;

/// An ADD_PROVIDER as kadence sends it during the sweep: a 34-byte multihash key (sha2-256,
/// as in a CIDv1) and the provider's record (an Ed25519 peer id, 38 bytes, with one TCP
/// address). Returns the protobuf body and the frame on the wire (the body with its varint
/// length prefix).
pub fn add_provider_bytes() -> (usize, usize) {
    let mut key = vec![0x12, 0x20];
    key.extend((0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    let keypair = Keypair::ed25519_from_bytes([7u8; 32]).expect("a 32-byte secret");
    let addr: Multiaddr = "/ip4/198.51.100.23/tcp/4001".parse().expect("an address");
    let request = Request::AddProvider {
        key,
        providers: vec![PeerRecord {
            id: keypair.public().to_peer_id(),
            addrs: vec![addr],
            connection: ConnectionType::Connected,
        }],
    };
    let body = encode_request(&request).len();
    let mut prefix = 1;
    while body >> (7 * prefix) != 0 {
        prefix += 1;
    }
    (body, body + prefix)
}

/// The time model of one region's sweep: its lookup (`lookup_s`, about 1 s at a 100 ms round
/// trip: 6 to 10 rounds of FIND_NODE for 4k answered peers), then its pages one after the
/// other. A page's messages go to all its peers at once, at most `window`
/// (`per_peer_in_flight`) in flight per peer, each slot busy one round trip (the stream's
/// protocol negotiation and the write; ADD_PROVIDER takes no response, so this is an upper
/// bound): a page lasts `ceil(most messages to one peer / window)` round trips. The peers were
/// all asked by the region's lookup (it waits for the k' closest to answer), so their
/// connections are open already.
#[derive(Clone, Copy)]
pub struct TimeModel {
    pub lookup_s: f64,
    pub rtt_s: f64,
    pub workers: usize,
    pub interval_s: f64,
}

pub struct ScheduleOutcome {
    pub region_mean_s: f64,
    pub region_max_s: f64,
    /// How late a region started after its slot (every worker busy), at worst.
    pub max_behind_s: f64,
    /// When the cycle's last region ended, from the cycle's start.
    pub last_end_s: f64,
    /// Worker time used over worker time available in the interval.
    pub utilisation: f64,
}

impl TimeModel {
    pub fn region_s(&self, run: &RegionRun) -> f64 {
        self.lookup_s + run.rounds as f64 * self.rtt_s
    }

    /// Region `r` of the 2^depth comes due at `interval * r / 2^depth` (as
    /// `Schedule::slot`) and starts when a worker is free; regions without keys cost nothing.
    pub fn schedule(&self, regions: &[RegionRun], depth: usize) -> ScheduleOutcome {
        let mut free = vec![0.0f64; self.workers.max(1)];
        let (mut busy, mut max_s, mut behind, mut last_end) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for run in regions {
            let slot = self.interval_s * run.index as f64 / (1u64 << depth) as f64;
            let (w, at) = free
                .iter()
                .copied()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("a worker");
            let start = slot.max(at);
            let took = self.region_s(run);
            free[w] = start + took;
            busy += took;
            max_s = max_s.max(took);
            behind = behind.max(start - slot);
            last_end = last_end.max(start + took);
        }
        ScheduleOutcome {
            region_mean_s: busy / regions.len().max(1) as f64,
            region_max_s: max_s,
            max_behind_s: behind,
            last_end_s: last_end,
            utilisation: busy / (self.workers.max(1) as f64 * self.interval_s),
        }
    }
}
