//! `fanout`: many idle logged-in users, one message; how long until each has
//! it, and what each idle user costs the server in memory.

use std::io;

use clap::Args;

use super::{latency_metrics, populate, Options};
use crate::control::Command;
use crate::report::{Better, Outcome};
use crate::server::Target;

/// Logins in flight per worker: fast, without overflowing the listen queue.
const CONCURRENCY: usize = 256;

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Idle users in the room.
    #[arg(long, default_value_t = 10_000)]
    pub users: u32,
}

impl Sizes {
    pub fn params(&self) -> String {
        format!("users={}", self.users)
    }
}

pub async fn run(target: &Target, sizes: &Sizes, options: &Options) -> io::Result<Outcome> {
    fan_out(target, sizes.users, options).await
}

/// Fills the room with `users`, measures the server's memory, then sends
/// one message from user 0.
pub async fn fan_out(target: &Target, users: u32, options: &Options) -> io::Result<Outcome> {
    let mut outcome = Outcome::default();
    let server = target.start(users).await?;
    let empty = server.rss_kib();
    let room = populate(
        &server,
        target.dialect,
        users,
        CONCURRENCY,
        options,
        &mut outcome,
    )
    .await?;
    let full = server.rss_kib();
    let logged_in = room.logged_in;
    let (_, tally) = room
        .measure(
            server,
            Command::Run {
                senders: 1,
                messages: 1,
                rate: 0.0,
                window: 0,
                timeout_ms: options.timeout.as_millis() as u64,
            },
            &mut outcome,
        )
        .await?;
    latency_metrics(
        &mut outcome,
        &tally.latency,
        [
            ("p50_ms", "message reached p50 (ms)"),
            ("p99_ms", "message reached p99 (ms)"),
            ("max_ms", "message reached all (ms)"),
        ],
    );
    outcome.metric(
        "users",
        "users logged in",
        logged_in as f64,
        Better::Neither,
    );
    if let (Some(empty), Some(full)) = (empty, full) {
        let per_user = |kib: u64| kib as f64 / logged_in.max(1) as f64;
        outcome.metric(
            "rss_per_user_kib",
            "server RSS per user (KiB)",
            per_user(full.saturating_sub(empty)),
            Better::Lower,
        );
        outcome.metric("rss_kib", "server RSS (KiB)", full as f64, Better::Lower);
        outcome.metric(
            "rss_empty_kib",
            "server RSS empty (KiB)",
            empty as f64,
            Better::Neither,
        );
    } else {
        outcome
            .notes
            .push("no server pid (give --server-pid / --compare-pid): no RSS".into());
    }
    outcome.check_deliveries(&tally, options.strict);
    Ok(outcome)
}
