//! Flood control: a bucket of `--flood-burst` frames, refilled at
//! `--flood-rate` a second. A frame beyond it is not refused: the session
//! reads the connection's next frame only once the bucket allows it, so
//! the frames wait in order and only this client waits.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;

pub(super) struct Allowance {
    frames: f64,
    burst: f64,
    rate: f64,
    refilled: Instant,
}

impl Allowance {
    /// The allowance for a connection from `peer`, if it is limited at all.
    pub(super) fn for_peer(config: &Config, peer: SocketAddr) -> Option<Allowance> {
        let loopback = peer.ip().to_canonical().is_loopback();
        if config.flood_rate == 0 || (loopback && !config.limits_on_loopback) {
            return None;
        }
        Some(Allowance {
            frames: f64::from(config.flood_burst),
            burst: f64::from(config.flood_burst),
            rate: f64::from(config.flood_rate),
            refilled: Instant::now(),
        })
    }

    /// Spends one frame; returns when the next may be read, if not now.
    pub(super) fn spend(&mut self, now: Instant) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.frames = (self.frames + elapsed * self.rate).min(self.burst) - 1.0;
        self.refilled = now;
        (self.frames < 1.0).then(|| now + Duration::from_secs_f64((1.0 - self.frames) / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowance(burst: f64, rate: f64) -> Allowance {
        Allowance {
            frames: burst,
            burst,
            rate,
            refilled: Instant::now(),
        }
    }

    #[test]
    fn a_burst_goes_through_then_frames_wait_for_the_rate() {
        let mut bucket = allowance(3.0, 2.0);
        let now = Instant::now();
        assert_eq!(bucket.spend(now), None);
        assert_eq!(bucket.spend(now), None);
        let next = bucket
            .spend(now)
            .expect("the third frame empties the bucket");
        assert_eq!(next - now, Duration::from_millis(500));
        // Half a second later one frame more has come in.
        assert!(bucket.spend(next).is_some());
    }
}
