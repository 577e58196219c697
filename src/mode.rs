//! Client and server mode, and the automatic switch between them.

use std::collections::HashSet;

use libp2p::Multiaddr;

/// Whether this node serves the DHT protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Sends requests but neither advertises nor answers the protocol. For nodes that other
    /// peers cannot reach (behind NAT, short-lived, on battery).
    Client,
    /// Advertises the protocol and answers requests. Only server peers enter routing tables.
    Server,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Client => f.write_str("client"),
            Mode::Server => f.write_str("server"),
        }
    }
}

/// The mode in force: fixed by the user, or automatic from the swarm's confirmed external
/// addresses (server while at least one is confirmed: other peers can reach us).
#[derive(Debug)]
pub(crate) struct ModeState {
    fixed: Option<Mode>,
    external: HashSet<Multiaddr>,
    current: Mode,
}

impl ModeState {
    pub(crate) fn new(fixed: Option<Mode>) -> Self {
        Self {
            fixed,
            external: HashSet::new(),
            current: fixed.unwrap_or(Mode::Client),
        }
    }

    pub(crate) fn current(&self) -> Mode {
        self.current
    }

    /// The swarm's confirmed external addresses.
    pub(crate) fn external_addresses(&self) -> impl Iterator<Item = &Multiaddr> {
        self.external.iter()
    }

    /// Fixes the mode, or with `None` returns to automatic. Returns the new mode if it changed.
    pub(crate) fn set(&mut self, fixed: Option<Mode>) -> Option<Mode> {
        self.fixed = fixed;
        self.recompute()
    }

    pub(crate) fn on_external_confirmed(&mut self, addr: &Multiaddr) -> Option<Mode> {
        self.external.insert(addr.clone());
        self.recompute()
    }

    pub(crate) fn on_external_expired(&mut self, addr: &Multiaddr) -> Option<Mode> {
        self.external.remove(addr);
        self.recompute()
    }

    fn recompute(&mut self) -> Option<Mode> {
        let next = self.fixed.unwrap_or(if self.external.is_empty() {
            Mode::Client
        } else {
            Mode::Server
        });
        (next != self.current).then(|| {
            self.current = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_follows_external_addresses() {
        let mut m = ModeState::new(None);
        let a: Multiaddr = "/ip4/1.2.3.4/tcp/4001".parse().unwrap();
        let b: Multiaddr = "/ip4/1.2.3.4/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(m.current(), Mode::Client);
        assert_eq!(m.on_external_confirmed(&a), Some(Mode::Server));
        assert_eq!(m.on_external_confirmed(&b), None);
        assert_eq!(m.on_external_expired(&a), None);
        assert_eq!(m.on_external_expired(&b), Some(Mode::Client));
    }

    #[test]
    fn fixed_mode_ignores_addresses_until_automatic_again() {
        let mut m = ModeState::new(Some(Mode::Server));
        let a: Multiaddr = "/ip4/1.2.3.4/tcp/4001".parse().unwrap();
        assert_eq!(m.current(), Mode::Server);
        assert_eq!(m.set(Some(Mode::Client)), Some(Mode::Client));
        assert_eq!(m.on_external_confirmed(&a), None);
        assert_eq!(m.set(None), Some(Mode::Server));
    }
}
