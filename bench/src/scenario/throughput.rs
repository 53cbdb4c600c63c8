//! `throughput`: a few senders as fast as they can, everyone receiving;
//! deliveries per second.
//!
//! "As fast as they can" is a closed loop: each sender keeps at most
//! `window` of its messages on their way to the slowest receiver (of its
//! worker process). Without it, senders outrun the receivers and a server
//! that drops for slow readers (as ours may, by contract) would be measured
//! on what it threw away. With `senders × window` below the server's
//! backlog (ours: 1024 frames), nothing is dropped.

use std::io;

use clap::Args;

use super::{latency_metrics, populate, Options};
use crate::control::{Command, Tally};
use crate::report::{Better, Outcome};
use crate::server::Target;

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Users in the room.
    #[arg(long, default_value_t = 100)]
    pub users: u32,
    /// Users that send (the first ones).
    #[arg(long, default_value_t = 10)]
    pub senders: u32,
    /// Messages each sender sends.
    #[arg(long, default_value_t = 2000)]
    pub messages: u64,
    /// Messages a sender may have that some receiver has not had yet (0: no limit).
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// Messages a second per sender, at most (0: as fast as the window
    /// lets them). Below a flood allowance, this is a throughput the
    /// budgets do not throttle (see `budgets`).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

impl Sizes {
    pub fn params(&self) -> String {
        let mut params = format!(
            "users={} senders={} messages={} window={}",
            self.users, self.senders, self.messages, self.window
        );
        if self.rate > 0.0 {
            params.push_str(&format!(" rate={}/s", self.rate));
        }
        params
    }
}

pub async fn run(target: &Target, sizes: &Sizes, options: &Options) -> io::Result<Outcome> {
    let (mut outcome, start_ns, tally) = flat_out(target, sizes, options).await?;
    rate_metrics(&mut outcome, start_ns, &tally);
    outcome.check_deliveries(&tally, options.strict);
    Ok(outcome)
}

/// Deliveries per second from the senders' start to the last delivery, the
/// run's time and deliveries, and their latency.
pub fn rate_metrics(outcome: &mut Outcome, start_ns: u64, tally: &Tally) {
    let secs = tally.last_ns.saturating_sub(start_ns) as f64 / 1e9;
    let deliveries = tally.counts.received as f64;
    outcome.metric(
        "deliveries_per_s",
        "deliveries/s",
        deliveries / secs,
        Better::Higher,
    );
    outcome.metric("secs", "run time (s)", secs, Better::Lower);
    outcome.metric("deliveries", "deliveries", deliveries, Better::Neither);
    latency_metrics(
        outcome,
        &tally.latency,
        [
            ("p50_ms", "latency p50 (ms)"),
            ("p99_ms", "latency p99 (ms)"),
            ("max_ms", "latency max (ms)"),
        ],
    );
}

/// Logs the room in and has the senders send as fast as `sizes.window`
/// lets them (all at once with no window), or at `sizes.rate` at most: the
/// outcome so far (problems
/// only), when the senders started, and what the receivers counted.
pub async fn flat_out(
    target: &Target,
    sizes: &Sizes,
    options: &Options,
) -> io::Result<(Outcome, u64, Tally)> {
    let mut outcome = Outcome::default();
    let server = target.start(sizes.users).await?;
    let room = populate(
        &server,
        target.dialect,
        sizes.users,
        256,
        options,
        &mut outcome,
    )
    .await?;
    // Logins are measured by the other scenarios; here only the run counts.
    outcome.metrics.clear();
    let pacing = if sizes.rate > 0.0 {
        std::time::Duration::from_secs_f64(sizes.messages as f64 / sizes.rate)
    } else {
        std::time::Duration::ZERO
    };
    let (start_ns, tally) = room
        .measure(
            server,
            Command::Run {
                senders: sizes.senders,
                messages: sizes.messages,
                rate: sizes.rate,
                window: sizes.window,
                timeout_ms: (pacing + options.timeout).as_millis() as u64,
            },
            &mut outcome,
        )
        .await?;
    Ok((outcome, start_ns, tally))
}
