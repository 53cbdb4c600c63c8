//! Flood control: a bucket of `--flood-burst` frames, refilled at
//! `--flood-rate` a second. A frame beyond it is not refused: the session
//! reads the connection's next frame only once the bucket allows it, so
//! the frames wait in order and only this client waits.
//!
//! All connections from one address (IPv6: one /64) also share a second
//! bucket, `--flood-burst-per-ip` refilled at `--flood-rate-per-ip`: 16
//! connections, or a reconnect loop, get no more than one address's share.
//! A frame spends from both and waits for the later of the two. The shared
//! buckets live in [`Addresses`], which forgets a bucket once no
//! connection uses it and it is full again, so its memory follows the
//! addresses connected, not every address ever seen.
//!
//! An answer is not free because its question is short: one over
//! [`ANSWER_FRAME`] bytes (`ROOMS`, the `NAMES` of `WHO`, a `HISTORY`
//! reply) costs one frame for every [`ANSWER_FRAME`] it takes
//! ([`answer_cost`]), so a few clients asking for 360 KB listings cannot
//! take the CPU from everyone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::limits::Key;

/// Bytes of an answer that cost one frame of the asker's allowance.
pub(super) const ANSWER_FRAME: u64 = 4 * 1024;

/// Frames an answer of `bytes` costs beyond the frame that asked for it:
/// one for every [`ANSWER_FRAME`] it takes, counting the question's.
pub(super) fn answer_cost(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(ANSWER_FRAME).saturating_sub(1)).unwrap_or(u32::MAX)
}

/// Shared buckets kept before the unused, full ones are looked for; the
/// registry may grow to twice what was left after the last look.
const ADDRESSES_SWEPT_AT: usize = 1024;

/// A connection's flood control: its own bucket, and its address's.
pub(super) struct Allowance {
    own: Bucket,
    address: Option<Arc<Mutex<Bucket>>>,
}

impl Allowance {
    /// The allowance for a connection from `peer`, if it is limited at all.
    pub(super) fn for_peer(config: &Config, peer: SocketAddr) -> Option<Allowance> {
        if config.flood_rate == 0 {
            return None;
        }
        let key = Key::of(peer.ip(), config.limits_on_loopback)?;
        let address = (config.flood_rate_per_ip > 0).then(|| {
            ADDRESSES.bucket(key, || {
                Bucket::new(config.flood_burst_per_ip, config.flood_rate_per_ip)
            })
        });
        Some(Allowance {
            own: Bucket::new(config.flood_burst, config.flood_rate),
            address,
        })
    }

    /// Spends `frames` frames from the connection's bucket and its
    /// address's; returns when the next may be read, if not now.
    pub(super) fn spend(&mut self, frames: u32, now: Instant) -> Option<Instant> {
        let own = self.own.spend(frames, now);
        let shared = self
            .address
            .as_ref()
            .and_then(|bucket| lock(bucket).spend(frames, now));
        own.max(shared)
    }
}

/// Frames that may be sent now, refilled at `rate` a second up to `burst`.
struct Bucket {
    frames: f64,
    burst: f64,
    rate: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(burst: u32, rate: u32) -> Bucket {
        Bucket {
            frames: f64::from(burst),
            burst: f64::from(burst),
            rate: f64::from(rate),
            refilled: Instant::now(),
        }
    }

    /// Whether the bucket would be full at `now`.
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.frames + elapsed * self.rate >= self.burst
    }

    /// Spends `frames` frames; returns when the next may be read, if not
    /// now.
    fn spend(&mut self, frames: u32, now: Instant) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.frames = (self.frames + elapsed * self.rate).min(self.burst) - f64::from(frames);
        self.refilled = now;
        (self.frames < 1.0).then(|| now + Duration::from_secs_f64((1.0 - self.frames) / self.rate))
    }
}

/// The buckets of the addresses connected (and of those that left less
/// than a refill ago): one process serves one set of addresses.
static ADDRESSES: LazyLock<Addresses> = LazyLock::new(Addresses::default);

#[derive(Default)]
struct Addresses {
    buckets: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    by_key: HashMap<Key, Arc<Mutex<Bucket>>>,
    /// How many buckets may be kept before the next look for unused ones.
    sweep_at: usize,
}

impl Addresses {
    /// The bucket of `key`, made with `new` if it has none.
    fn bucket(&self, key: Key, new: impl FnOnce() -> Bucket) -> Arc<Mutex<Bucket>> {
        let mut registry = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = registry.by_key.get(&key) {
            return bucket.clone();
        }
        if registry.by_key.len() >= registry.sweep_at.max(ADDRESSES_SWEPT_AT) {
            let now = Instant::now();
            // Only the registry holds a bucket no connection uses; a full
            // one is what a new connection would get anyway.
            registry
                .by_key
                .retain(|_, bucket| Arc::strong_count(bucket) > 1 || !lock(bucket).is_full(now));
            registry.sweep_at = registry.by_key.len() * 2;
        }
        let bucket = Arc::new(Mutex::new(new()));
        registry.by_key.insert(key, bucket.clone());
        bucket
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .len()
    }
}

fn lock(bucket: &Mutex<Bucket>) -> MutexGuard<'_, Bucket> {
    // A bucket is two numbers changed in one step: a poisoned lock still
    // guards a consistent one.
    bucket.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowance(burst: f64, rate: f64) -> Bucket {
        Bucket {
            frames: burst,
            burst,
            rate,
            refilled: Instant::now(),
        }
    }

    fn config(flags: &[&str]) -> Config {
        let args = ["chat-server"].iter().chain(flags);
        Config::load_from(args).expect("valid flags")
    }

    #[test]
    fn connections_of_one_address_share_its_bucket() {
        let config = config(&["--flood-burst", "100", "--flood-burst-per-ip", "4"]);
        let peer = |port| SocketAddr::from(([192, 0, 2, 7], port));
        let mut one = Allowance::for_peer(&config, peer(1)).expect("limited");
        let mut two = Allowance::for_peer(&config, peer(2)).expect("limited");
        let now = Instant::now();
        assert_eq!(one.spend(2, now), None);
        assert_eq!(two.spend(1, now), None);
        assert!(two.spend(1, now).is_some(), "the address's 4 are spent");
        let mut other =
            Allowance::for_peer(&config, SocketAddr::from(([192, 0, 2, 8], 1))).expect("limited");
        assert_eq!(other.spend(3, now), None, "another address has its own");
    }

    #[test]
    fn flood_rate_zero_turns_both_off_and_flood_rate_per_ip_zero_only_the_shared_one() {
        let peer = SocketAddr::from(([192, 0, 2, 9], 1));
        assert!(Allowance::for_peer(&config(&["--flood-rate", "0"]), peer).is_none());
        let own_only = config(&["--flood-rate-per-ip", "0", "--flood-burst", "50"]);
        let mut allowance = Allowance::for_peer(&own_only, peer).expect("limited");
        assert!(allowance.address.is_none());
        assert_eq!(allowance.spend(45, Instant::now()), None);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(Allowance::for_peer(&config(&[]), loopback).is_none());
    }

    #[test]
    fn buckets_no_connection_uses_are_forgotten_once_full() {
        let registry = Addresses::default();
        let key = |n: u32| Key::of(std::net::Ipv4Addr::from(n).into(), true).expect("key");
        let held = registry.bucket(key(0), || Bucket::new(4, 1000));
        for n in 1..=(ADDRESSES_SWEPT_AT as u32 + 10) {
            drop(registry.bucket(key(n), || Bucket::new(4, 1000)));
        }
        assert!(registry.len() <= ADDRESSES_SWEPT_AT, "{}", registry.len());
        assert!(Arc::ptr_eq(
            &held,
            &registry.bucket(key(0), || Bucket::new(4, 1000))
        ));
    }

    #[test]
    fn a_burst_goes_through_then_frames_wait_for_the_rate() {
        let mut bucket = allowance(3.0, 2.0);
        let now = Instant::now();
        assert_eq!(bucket.spend(1, now), None);
        assert_eq!(bucket.spend(1, now), None);
        let next = bucket
            .spend(1, now)
            .expect("the third frame empties the bucket");
        assert_eq!(next - now, Duration::from_millis(500));
        // Half a second later one frame more has come in.
        assert!(bucket.spend(1, next).is_some());
    }

    #[test]
    fn a_big_answer_costs_a_frame_for_every_4_kib() {
        assert_eq!(answer_cost(0), 0);
        assert_eq!(answer_cost(4096), 0, "up to 4 KiB the question pays");
        assert_eq!(answer_cost(4097), 1);
        assert_eq!(answer_cost(360_000), 87, "a ROOMS of 10 000 rooms");
        let mut bucket = allowance(10.0, 5.0);
        let now = Instant::now();
        let next = bucket.spend(1 + answer_cost(40 * 1024), now).expect("held");
        assert_eq!(next - now, Duration::from_millis(200));
    }
}
