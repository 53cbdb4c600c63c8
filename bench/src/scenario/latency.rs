//! `latency`: a steady, known load (senders × rate × users deliveries a
//! second) and the send-to-receive time of every delivery.

use std::io;
use std::time::Duration;

use clap::Args;

use super::{latency_metrics, populate, Options};
use crate::control::Command;
use crate::report::{Better, Outcome};
use crate::server::Target;

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Users in the room.
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Users that send (the first ones).
    #[arg(long, default_value_t = 2)]
    pub senders: u32,
    /// Messages a second per sender.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long the senders send (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

impl Sizes {
    pub fn params(&self) -> String {
        format!(
            "users={} senders={} rate={}/s duration={}",
            self.users,
            self.senders,
            self.rate,
            humantime::format_duration(self.duration)
        )
    }
}

pub async fn run(target: &Target, sizes: &Sizes, options: &Options) -> io::Result<Outcome> {
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
    let messages = (sizes.rate * sizes.duration.as_secs_f64()).round().max(1.0) as u64;
    // Logins are measured by the other scenarios; here only the run counts.
    outcome.metrics.clear();
    let (start_ns, tally) = room
        .measure(
            server,
            Command::Run {
                senders: sizes.senders,
                messages,
                rate: sizes.rate,
                window: 0,
                timeout_ms: (sizes.duration + options.timeout).as_millis() as u64,
            },
            &mut outcome,
        )
        .await?;
    latency_metrics(
        &mut outcome,
        &tally.latency,
        [
            ("p50_ms", "latency p50 (ms)"),
            ("p99_ms", "latency p99 (ms)"),
            ("max_ms", "latency max (ms)"),
        ],
    );
    let secs = tally.last_ns.saturating_sub(start_ns) as f64 / 1e9;
    outcome.metric(
        "deliveries_per_s",
        "deliveries/s (offered load)",
        tally.counts.received as f64 / secs,
        Better::Neither,
    );
    outcome.check_deliveries(&tally, options.strict);
    Ok(outcome)
}
