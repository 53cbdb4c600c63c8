//! `open-loop`: every sender pipelines all its messages at once, as fast as
//! its socket takes them, without waiting for any echo; every user reads
//! flat out.
//!
//! The contract: a client that reads whatever its socket receives never
//! gets `DROPPED`, whatever the senders do; when they outrun what the server
//! can deliver, the server slows the senders instead. So here any lost
//! frame and any `DROPPED` fails the run, and the senders' times show how
//! long the server held them back: "wrote all" is when the last sender's
//! messages were all in its socket (the kernel's socket buffers take a few
//! MB, so a burst smaller than that is written at once whatever the
//! server does), and "PONG" is when a sender got the answer to a `PING` it
//! wrote after its messages: the server had handled every one of them by
//! then (the `PONG` also waits behind what the server queued for the
//! sender itself, so it comes about when the sender has its own echoes).
//!
//! `throughput --window 0` sends the same way but only notes `DROPPED`.

use std::io;

use clap::Args;

use super::{latency_metrics, throughput, Options};
use crate::report::{Better, Outcome};
use crate::server::Target;

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Users in the room, every one reading (the senders too).
    #[arg(long, default_value_t = 100)]
    pub users: u32,
    /// Users that send (the first ones). E.g. `--senders 1 --messages
    /// 100000 --users 101`: one client pipelining 100 000 MSG into a room of
    /// 100 readers.
    #[arg(long, default_value_t = 10)]
    pub senders: u32,
    /// Messages each sender pipelines.
    #[arg(long, default_value_t = 2000)]
    pub messages: u64,
}

impl Sizes {
    pub fn params(&self) -> String {
        format!(
            "users={} senders={} messages={} window=none",
            self.users, self.senders, self.messages
        )
    }
}

pub async fn run(target: &Target, sizes: &Sizes, options: &Options) -> io::Result<Outcome> {
    let flat_out = throughput::Sizes {
        users: sizes.users,
        senders: sizes.senders,
        messages: sizes.messages,
        window: 0,
        rate: 0.0,
    };
    let (mut outcome, start_ns, tally) = throughput::flat_out(target, &flat_out, options).await?;
    let c = &tally.counts;
    let since_start = |ns: u64| ns.saturating_sub(start_ns) as f64 / 1e9;
    let secs = since_start(tally.last_ns);
    outcome.metric(
        "deliveries_per_s",
        "deliveries/s",
        c.received as f64 / secs,
        Better::Higher,
    );
    outcome.metric(
        "secs",
        "run time, to the last delivery (s)",
        secs,
        Better::Lower,
    );
    outcome.metric(
        "deliveries",
        "deliveries",
        c.received as f64,
        Better::Neither,
    );
    // Zero is the only right value of these three; they fail the run.
    outcome.metric("lost", "lost (no DROPPED)", c.lost as f64, Better::Lower);
    outcome.metric(
        "dropped_frames",
        "DROPPED frames",
        c.dropped_frames as f64,
        Better::Lower,
    );
    outcome.metric(
        "skipped",
        "bench messages skipped (DROPPED)",
        c.skipped as f64,
        Better::Lower,
    );
    if tally.written_last_ns > 0 {
        outcome.metric(
            "senders_wrote_s",
            "last sender wrote all (s)",
            since_start(tally.written_last_ns),
            Better::Neither,
        );
    }
    if tally.handled_last_ns > 0 {
        outcome.metric(
            "senders_pong_first_s",
            "first sender's PONG (s)",
            since_start(tally.handled_first_ns),
            Better::Neither,
        );
        outcome.metric(
            "senders_pong_s",
            "last sender's PONG (s)",
            since_start(tally.handled_last_ns),
            Better::Neither,
        );
    }
    latency_metrics(
        &mut outcome,
        &tally.latency,
        [
            ("p50_ms", "latency p50 (ms)"),
            ("p99_ms", "latency p99 (ms)"),
            ("max_ms", "latency max (ms)"),
        ],
    );
    // A reader that keeps up never gets DROPPED: always a failure here.
    outcome.check_deliveries(&tally, true);
    Ok(outcome)
}
