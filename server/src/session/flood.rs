//! Flood control: a bucket of `--flood-burst` frames, refilled at
//! `--flood-rate` a second. A frame beyond it is not refused: the session
//! reads the connection's next frame only once the bucket allows it, so
//! the frames wait in order and only this client waits.
//!
//! An answer is not free because its question is short: one over
//! [`ANSWER_FRAME`] bytes (`ROOMS`, the `NAMES` of `WHO`, a `HISTORY`
//! reply) costs one frame for every [`ANSWER_FRAME`] it takes
//! ([`answer_cost`]), so a few clients asking for 360 KB listings cannot
//! take the CPU from everyone.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;

/// Bytes of an answer that cost one frame of the asker's allowance.
pub(super) const ANSWER_FRAME: u64 = 4 * 1024;

/// Frames an answer of `bytes` costs beyond the frame that asked for it:
/// one for every [`ANSWER_FRAME`] it takes, counting the question's.
pub(super) fn answer_cost(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(ANSWER_FRAME).saturating_sub(1)).unwrap_or(u32::MAX)
}

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

    /// Spends `frames` frames; returns when the next may be read, if not
    /// now.
    pub(super) fn spend(&mut self, frames: u32, now: Instant) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.frames = (self.frames + elapsed * self.rate).min(self.burst) - f64::from(frames);
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
