//! `budgets`: what the budgets of "Running in public" cost at a normal
//! load. One run here is the `throughput`, `latency` and `fanout`
//! scenarios (their code, at the sizes below) against one server; `main`
//! runs it on our server with the budgets applied to the bench's loopback
//! clients (`--limits-on-loopback`), on our server without (loopback
//! spared), and on the floor, and prints one table of the figures with
//! the first as a multiple of each of the others (`x off`, `x floor`).
//!
//! For the budgets to be armed and yet not throttle a normal load, the
//! users connect from many loopback addresses of their own (see
//! [`crate::worker::source`]), `users_per_address` each, and senders go
//! round-robin over the addresses; the load is then checked against the
//! default budgets before it runs ([`Sizes::throttled`]):
//! - at most 16 users an address: within `--max-per-ip` and
//!   `--connect-burst` (16 each), so every login goes through at once;
//! - each sender's rate below `--flood-rate` (5 a second), so its own
//!   allowance never holds it back (its burst of 10 takes the login and
//!   the last `PING`);
//! - the senders of one address together below `--flood-rate-per-ip`
//!   (20 a second);
//! - no rooms: the lobby does not count toward `--max-rooms-per-ip`.
//!
//! A load beyond them is not a normal load: it fails the run rather than
//! measure the throttle.

use std::io;
use std::time::Duration;

use clap::Args;

use super::{fanout, latency, throughput, Options};
use crate::report::Outcome;
use crate::server::Target;

/// `--max-per-ip` and `--connect-burst` by default: users of one address
/// that may be connected, and connect at once.
const CONNECTIONS_PER_ADDRESS: u32 = 16;
/// `--flood-rate` by default: frames a second of one connection.
const FLOOD_RATE: f64 = 5.0;
/// `--flood-rate-per-ip` by default: frames a second of one address.
const FLOOD_RATE_PER_ADDRESS: f64 = 20.0;

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Users of each loopback address (at most 16: `--max-per-ip`).
    #[arg(long, default_value_t = 8)]
    pub users_per_address: u32,
    /// Users in the throughput run.
    #[arg(long, default_value_t = 1000)]
    pub throughput_users: u32,
    /// Senders in the throughput run.
    #[arg(long, default_value_t = 200)]
    pub throughput_senders: u32,
    /// Messages a second per sender in the throughput run (below 5).
    #[arg(long, default_value_t = 4.0)]
    pub throughput_rate: f64,
    /// How long the throughput run's senders send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub throughput_duration: Duration,
    /// Users in the latency run.
    #[arg(long, default_value_t = 1000)]
    pub latency_users: u32,
    /// Senders in the latency run: 25 at 4 a second is the load of
    /// `latency`'s 2 at 50, spread so that no one's allowance is exceeded.
    #[arg(long, default_value_t = 25)]
    pub latency_senders: u32,
    /// Messages a second per sender in the latency run (below 5).
    #[arg(long, default_value_t = 4.0)]
    pub latency_rate: f64,
    /// How long the latency run's senders send.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub latency_duration: Duration,
    /// Idle users the fan-out's one message reaches.
    #[arg(long, default_value_t = 10_000)]
    pub fanout_users: u32,
}

impl Sizes {
    pub fn params(&self) -> String {
        format!(
            "{} users an address; throughput: {}; latency: {}; fanout: {}",
            self.users_per_address,
            self.throughput().params(),
            self.latency().params(),
            self.fanout().params()
        )
    }

    fn throughput(&self) -> throughput::Sizes {
        throughput::Sizes {
            users: self.throughput_users,
            senders: self.throughput_senders,
            messages: (self.throughput_rate * self.throughput_duration.as_secs_f64())
                .round()
                .max(1.0) as u64,
            window: 64,
            rate: self.throughput_rate,
        }
    }

    fn latency(&self) -> latency::Sizes {
        latency::Sizes {
            users: self.latency_users,
            senders: self.latency_senders,
            rate: self.latency_rate,
            duration: self.latency_duration,
        }
    }

    fn fanout(&self) -> fanout::Sizes {
        fanout::Sizes {
            users: self.fanout_users,
        }
    }

    /// Why the load would be throttled by the default budgets, if it
    /// would be (see the module's doc).
    pub fn throttled(&self) -> Option<String> {
        let per = self.users_per_address;
        if per == 0 || per > CONNECTIONS_PER_ADDRESS {
            return Some(format!(
                "{per} users an address: give 1 to {CONNECTIONS_PER_ADDRESS} \
                 (--max-per-ip and --connect-burst)"
            ));
        }
        for (run, users, senders, rate) in [
            (
                "throughput",
                self.throughput_users,
                self.throughput_senders,
                self.throughput_rate,
            ),
            (
                "latency",
                self.latency_users,
                self.latency_senders,
                self.latency_rate,
            ),
        ] {
            if rate <= 0.0 || rate >= FLOOD_RATE {
                return Some(format!(
                    "{run}: {rate} messages a second a sender: give more than 0, \
                     less than {FLOOD_RATE} (--flood-rate)"
                ));
            }
            let addresses = users.div_ceil(per);
            let senders_per_address = senders.min(users).div_ceil(addresses.max(1));
            let per_address = f64::from(senders_per_address) * rate;
            if per_address >= FLOOD_RATE_PER_ADDRESS {
                return Some(format!(
                    "{run}: {senders_per_address} senders an address at {rate} a second \
                     is {per_address} frames a second: keep it below \
                     {FLOOD_RATE_PER_ADDRESS} (--flood-rate-per-ip)"
                ));
            }
        }
        None
    }
}

/// What the table shows of each run, under a name of its own: the run's
/// metric key, then the table's key and label.
type Figures = [(&'static str, &'static str, &'static str)];

const THROUGHPUT: &Figures = &[
    (
        "deliveries_per_s",
        "throughput_per_s",
        "throughput: deliveries/s",
    ),
    (
        "cpu_per_delivery_us",
        "throughput_cpu_us",
        "throughput: CPU/delivery (µs)",
    ),
    (
        "p99_ms",
        "throughput_p99_ms",
        "throughput: latency p99 (ms)",
    ),
];

const LATENCY: &Figures = &[
    ("p50_ms", "latency_p50_ms", "latency: p50 (ms)"),
    ("p99_ms", "latency_p99_ms", "latency: p99 (ms)"),
    ("max_ms", "latency_max_ms", "latency: max (ms)"),
    (
        "cpu_per_delivery_us",
        "latency_cpu_us",
        "latency: CPU/delivery (µs)",
    ),
];

const FANOUT: &Figures = &[
    ("p50_ms", "fanout_p50_ms", "fan-out: reached p50 (ms)"),
    ("p99_ms", "fanout_p99_ms", "fan-out: reached p99 (ms)"),
    ("max_ms", "fanout_max_ms", "fan-out: reached all (ms)"),
    (
        "rss_per_user_kib",
        "fanout_rss_per_user_kib",
        "fan-out: RSS per user (KiB)",
    ),
];

/// Throughput, latency and fan-out on `target`, one after the other, each
/// on a fresh server, the users spread over loopback addresses.
pub async fn run(target: &Target, sizes: &Sizes, options: &Options) -> io::Result<Outcome> {
    let mut outcome = Outcome::default();
    if let Some(why) = sizes.throttled() {
        outcome.problems.push(format!(
            "not a normal load, the default budgets would throttle it: {why}"
        ));
        return Ok(outcome);
    }
    let options = Options {
        users_per_address: sizes.users_per_address,
        ..options.clone()
    };
    let run = throughput::run(target, &sizes.throughput(), &options).await?;
    pick(&mut outcome, run, "throughput", THROUGHPUT);
    let run = latency::run(target, &sizes.latency(), &options).await?;
    pick(&mut outcome, run, "latency", LATENCY);
    let run = fanout::run(target, &sizes.fanout(), &options).await?;
    pick(&mut outcome, run, "fanout", FANOUT);
    Ok(outcome)
}

/// Adds `figures` of `run` to `outcome` under their own names, and its
/// problems and notes with the run's name.
fn pick(outcome: &mut Outcome, run: Outcome, name: &str, figures: &Figures) {
    for &(from, key, label) in figures {
        if let Some(m) = run.metrics.iter().find(|m| m.key == from) {
            outcome.metric(key, label, m.value, m.better);
        }
    }
    let named = |line: String| format!("{name}: {line}");
    outcome.problems.extend(run.problems.into_iter().map(named));
    outcome.notes.extend(run.notes.into_iter().map(named));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sizes: Sizes,
    }

    fn sizes(args: &[&str]) -> Sizes {
        Cli::parse_from(std::iter::once("budgets").chain(args.iter().copied())).sizes
    }

    #[test]
    fn the_default_load_stays_within_the_default_budgets() {
        assert_eq!(sizes(&[]).throttled(), None);
    }

    #[test]
    fn a_load_beyond_an_allowance_is_refused() {
        let crowded = sizes(&["--users-per-address", "17"]);
        assert!(crowded.throttled().unwrap().contains("--max-per-ip"));
        let fast = sizes(&["--latency-rate", "5"]);
        assert!(fast.throttled().unwrap().contains("--flood-rate"));
        // 1 000 users at 8 an address are 125 addresses: 800 senders are
        // 7 an address, 28 frames a second.
        let dense = sizes(&["--throughput-senders", "800"]);
        assert!(dense.throttled().unwrap().contains("--flood-rate-per-ip"));
    }
}
