//! What one address may cost in connections: `--max-per-ip`, how many it
//! may hold open, and `--connect-burst`/`--connect-rate`, how fast it may
//! open new ones.
//!
//! One host must not be able to take every slot of `--max-clients` for
//! itself, so connections are counted per address from the moment they are
//! accepted, logged in or not, on the plaintext and the TLS listener alike.
//! Nor may it reconnect in a loop: every connection starts with a fresh
//! flood allowance and costs everyone a `JOIN` and a `LEAVE`.
//! An IPv6 host usually owns a whole /64, so IPv6 addresses are counted by
//! their /64; an IPv4-mapped IPv6 address is its IPv4 address. Loopback
//! peers (local tools, benchmarks) are spared unless `--limits-on-loopback`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How fast each address may open connections: a token bucket per
/// address of `burst` tokens, refilled at `rate` a second, one taken by each
/// connection admitted.
///
/// A bucket is kept only while it is not full: an address that has not
/// connected for `burst / rate` seconds is forgotten, and so is its entry.
/// Each bucket is one instant, the time it will be full again, and full
/// buckets are swept whenever the table has doubled since the last sweep,
/// so memory follows the addresses that connected lately, not every
/// address ever seen.
#[derive(Debug)]
pub struct ConnectRate {
    burst: u32,
    /// Time for one token to come back; `None` when the limit is off.
    every: Option<Duration>,
    on_loopback: bool,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    /// When each address's bucket is full again.
    full_at: HashMap<Key, Instant>,
    /// The table's size after the last sweep.
    swept_at: usize,
}

/// Entries the bucket table may hold before it is first swept.
const SWEEP_FROM: usize = 1024;

impl ConnectRate {
    /// `burst` connections at once, then `rate` a second (`rate` 0: no
    /// limit).
    pub fn new(burst: u32, rate: u32, on_loopback: bool) -> ConnectRate {
        ConnectRate {
            burst: burst.max(1),
            every: (rate > 0).then(|| Duration::from_secs(1) / rate),
            on_loopback,
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for a new connection from `ip`, or returns `false`
    /// if its address has none left.
    pub fn admit(&self, ip: IpAddr) -> bool {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(&self, ip: IpAddr, now: Instant) -> bool {
        let (Some(every), Some(key)) = (self.every, Key::of(ip, self.on_loopback)) else {
            return true;
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let full_at = buckets.full_at.get(&key).copied().unwrap_or(now).max(now);
        // Tokens missing are (full_at - now) / every; one must be left.
        if full_at - now > every * (self.burst - 1) {
            return false;
        }
        buckets.full_at.insert(key, full_at + every);
        let size = buckets.full_at.len();
        if size >= SWEEP_FROM.max(2 * buckets.swept_at) {
            buckets.full_at.retain(|_, full_at| *full_at > now);
            buckets.swept_at = buckets.full_at.len();
        }
        true
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
    fn connect_rate_lets_a_burst_in_then_refills() {
        let rate = ConnectRate::new(3, 2, false);
        let start = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(rate.admit_at(a, start));
        }
        assert!(!rate.admit_at(a, start), "the burst is spent");
        assert!(rate.admit_at(ip("192.0.2.2"), start), "another address");
        assert!(!rate.admit_at(a, start + Duration::from_millis(499)));
        assert!(rate.admit_at(a, start + Duration::from_millis(500)));
        assert!(!rate.admit_at(a, start + Duration::from_millis(500)));
        // A long pause fills the bucket, and no more than full.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(rate.admit_at(a, later));
        }
        assert!(!rate.admit_at(a, later));
    }

    #[test]
    fn connect_rate_forgets_full_buckets_and_spares_loopback() {
        let rate = ConnectRate::new(2, 1, false);
        let start = Instant::now();
        for n in 0..(3 * SWEEP_FROM as u32) {
            let peer = IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + n));
            assert!(rate.admit_at(peer, start + Duration::from_secs(u64::from(n))));
        }
        let kept = rate.buckets.lock().unwrap().full_at.len();
        assert!(kept <= SWEEP_FROM, "{kept} buckets kept");
        for _ in 0..10 {
            assert!(rate.admit_at(ip("127.0.0.1"), start));
        }
        let off = ConnectRate::new(1, 0, true);
        for _ in 0..10 {
            assert!(off.admit_at(ip("192.0.2.1"), start));
        }
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
