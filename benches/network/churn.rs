//! Churn, once the tables settled (`--churn gone:SHARE` or `--churn silent:SHARE`): a share
//! of the nodes, the same ones for every implementation, stops (its swarm is dropped: its
//! connections close and dials to it are refused) or goes silent (still connected, but never
//! answering: see `delay.rs`). The measured operations then come from live nodes only, and
//! recall and provider placement are measured against live peers.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use libp2p::PeerId;

use crate::drivers::Node;
use crate::queries::Command;

/// What happens to the churned nodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Stopped: the swarm is dropped.
    Gone,
    /// Connected but never answering.
    Silent,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Gone => "gone",
            Mode::Silent => "silent",
        }
    }
}

/// `--churn MODE:SHARE`.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Churn {
    pub mode: Mode,
    /// Share of the nodes churned, in (0, 1).
    pub share: f64,
}

impl Churn {
    pub fn parse(value: &str) -> Result<Self, String> {
        let (mode, share) = value
            .split_once(':')
            .ok_or_else(|| format!("--churn {value:?}: expected gone:SHARE or silent:SHARE"))?;
        let mode = match mode {
            "gone" => Mode::Gone,
            "silent" => Mode::Silent,
            other => return Err(format!("--churn: no mode {other:?} (gone or silent)")),
        };
        let share: f64 = share
            .parse()
            .map_err(|_| format!("--churn: share {share:?} is not a number"))?;
        if !(share > 0.0 && share < 1.0) {
            return Err(format!("--churn: share {share} is not between 0 and 1"));
        }
        Ok(Self { mode, share })
    }

    /// How many of `nodes` are churned.
    pub fn count(self, nodes: usize) -> usize {
        (self.share * nodes as f64).round() as usize
    }
}

impl fmt::Display for Churn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.mode.name(), self.share)
    }
}

/// Stops or silences the churned nodes.
pub async fn apply(nodes: &mut [Node], churned: &[bool], mode: Mode) {
    for (node, _) in nodes.iter_mut().zip(churned).filter(|(_, &c)| c) {
        match mode {
            Mode::Gone => node.stop().await,
            Mode::Silent => node.silent.store(true, Ordering::Relaxed),
        }
    }
}

/// Share of the live nodes' routing-table entries that point to churned nodes: the stale
/// entries that lookups may still be sent to.
pub async fn stale_share(nodes: &[Node], churned: &[bool], ids: &[PeerId]) -> f64 {
    let down: HashSet<PeerId> = ids
        .iter()
        .zip(churned)
        .filter(|(_, &c)| c)
        .map(|(id, _)| *id)
        .collect();
    let tables: Vec<Vec<PeerId>> = futures::stream::iter(nodes.iter().zip(churned))
        .filter(|(_, &c)| std::future::ready(!c))
        .then(|(node, _)| crate::ask(node, Command::TablePeers))
        .map(Option::unwrap_or_default)
        .collect()
        .await;
    let entries: usize = tables.iter().map(Vec::len).sum();
    let stale = tables.iter().flatten().filter(|p| down.contains(p)).count();
    stale as f64 / entries.max(1) as f64
}
