//! `--max-per-ip`: how many connections one address may hold open.
//!
//! One host must not be able to take every slot of `--max-clients` for
//! itself, so connections are counted per address from the moment they are
//! accepted, logged in or not, on the plaintext and the TLS listener alike.
//! An IPv6 host usually owns a whole /64, so IPv6 addresses are counted by
//! their /64; an IPv4-mapped IPv6 address is its IPv4 address. Loopback
//! peers (local tools, benchmarks) are spared unless `--limits-on-loopback`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

/// What connections are counted (and addresses banned) under: an IPv4
/// address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    V4(Ipv4Addr),
    V6Prefix(u64),
}

impl Key {
    /// The key `ip` belongs to, or `None` for loopback when loopback is
    /// spared (`--limits-on-loopback` not given).
    pub fn of(ip: IpAddr, on_loopback: bool) -> Option<Key> {
        let ip = ip.to_canonical();
        if ip.is_loopback() && !on_loopback {
            return None;
        }
        Some(match ip {
            IpAddr::V4(v4) => Key::V4(v4),
            IpAddr::V6(v6) => Key::V6Prefix((v6.to_bits() >> 64) as u64),
        })
    }
}

/// `203.0.113.5`, or `2001:db8:0:1::/64`: how a ban stores its address.
impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::V4(v4) => write!(f, "{v4}"),
            Key::V6Prefix(prefix) => {
                let v6 = std::net::Ipv6Addr::from_bits(u128::from(*prefix) << 64);
                write!(f, "{v6}/64")
            }
        }
    }
}

/// The open connections of each address, shared by every listener.
#[derive(Debug)]
pub struct PerAddress {
    limit: usize,
    on_loopback: bool,
    open: Mutex<HashMap<Key, usize>>,
}

/// One admitted connection's place in its address's count, given back when
/// dropped.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<PerAddress>,
    /// `None` for a peer that is not counted (loopback).
    key: Option<Key>,
}

impl PerAddress {
    pub fn new(limit: usize, on_loopback: bool) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            limit,
            on_loopback,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `ip`, or returns `None` if its address
    /// already has `limit` open.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = self.key(ip);
        if let Some(key) = key {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let count = open.entry(key).or_insert(0);
            if *count >= self.limit {
                return None;
            }
            *count += 1;
        }
        Some(Slot {
            owner: self.clone(),
            key,
        })
    }

    /// The key `ip` is counted under, or `None` if it is spared.
    fn key(&self, ip: IpAddr) -> Option<Key> {
        Key::of(ip, self.on_loopback)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    #[test]
    fn counts_each_address_up_to_the_limit_and_frees_on_drop() {
        let limits = PerAddress::new(2, false);
        let a = limits.admit(ip("192.0.2.1")).expect("first");
        let _b = limits.admit(ip("192.0.2.1")).expect("second");
        assert!(limits.admit(ip("192.0.2.1")).is_none());
        let _other = limits.admit(ip("192.0.2.2")).expect("another address");
        drop(a);
        let _c = limits.admit(ip("192.0.2.1")).expect("a slot came free");
        assert!(limits.admit(ip("192.0.2.1")).is_none());
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let limits = PerAddress::new(1, false);
        let _a = limits.admit(ip("2001:db8:1:2::1")).expect("first");
        assert!(
            limits.admit(ip("2001:db8:1:2:ffff::9")).is_none(),
            "same /64"
        );
        let _b = limits.admit(ip("2001:db8:1:3::1")).expect("another /64");
        let _c = limits.admit(ip("198.51.100.7")).expect("first");
        assert!(limits.admit(ip("::ffff:198.51.100.7")).is_none(), "mapped");
    }

    #[test]
    fn loopback_is_spared_unless_asked() {
        let spared = PerAddress::new(1, false);
        for peer in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            let _a = spared.admit(ip(peer)).expect(peer);
            let _b = spared.admit(ip(peer)).expect(peer);
        }
        let counted = PerAddress::new(1, true);
        for peer in ["127.0.0.1", "::1"] {
            let _a = counted.admit(ip(peer)).expect(peer);
            assert!(counted.admit(ip(peer)).is_none(), "{peer}");
        }
        let _a = counted.admit(ip("127.0.0.1")).expect("freed");
        assert!(counted.admit(ip("::ffff:127.0.0.1")).is_none());
        assert!(spared.open.lock().unwrap().is_empty());
    }
}
