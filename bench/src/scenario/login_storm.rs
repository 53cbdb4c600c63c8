//! `login-storm`: every user connects and logs in at once; how long until
//! each has seen every other one's arrival (in `NAMES` or a `JOIN`; for a
//! raw server, an `<addr> has arrived` line, which only later arrivals get).
//!
//! Every user reads whatever its socket receives, so by the contract none
//! may get `DROPPED`: any `DROPPED` fails the run, and so does an arrival
//! that some user never learned of. `--users 5000` is the storm at
//! the server's default flags (one worker process holds all 5 000).

use std::io;

use clap::Args;

use super::{populate, Options};
use crate::dialect::Dialect;
use crate::report::{Better, Outcome};
use crate::server::Target;

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Users that arrive together.
    #[arg(long, default_value_t = 2000)]
    pub users: u32,
}

impl Sizes {
    pub fn params(&self) -> String {
        format!("users={}", self.users)
    }
}

pub async fn run(target: &Target, sizes: &Sizes, options: &Options) -> io::Result<Outcome> {
    let mut outcome = Outcome::default();
    let server = target.start(sizes.users).await?;
    let concurrency = sizes.users as usize;
    let mut room = populate(
        &server,
        target.dialect,
        sizes.users,
        concurrency,
        options,
        &mut outcome,
    )
    .await?;
    // No messages: only the tally of who saw whom, and when.
    let tally = room.fleet.tally().await?;
    room.fleet.stop().await;
    server.stop().await;
    let n = u64::from(sizes.users);
    let others = n.saturating_sub(1);
    let dropped = tally.counts.dropped_frames;
    if target.dialect == Dialect::Chat {
        // Arrivals some user never learned of: frames lost, or skipped
        // under a DROPPED.
        let missing = (tally.logged_in * others).saturating_sub(tally.known_sum);
        outcome.metric(
            "arrivals_missing",
            "arrivals never seen",
            missing as f64,
            Better::Lower,
        );
        // What no DROPPED accounts for (a DROPPED counts frames of any
        // kind, so this is a lower bound).
        outcome.metric(
            "arrivals_lost",
            "arrivals lost (beyond DROPPED)",
            missing.saturating_sub(dropped) as f64,
            Better::Lower,
        );
        outcome.metric(
            "dropped_frames",
            "DROPPED frames",
            dropped as f64,
            Better::Lower,
        );
    }
    match target.dialect {
        // Each user must know every other one.
        Dialect::Chat if tally.known_min != others || tally.known_max != others => {
            outcome.problems.push(format!(
                "users learned of {}..{} others; expected {others} each ({dropped} frames DROPPED)",
                tally.known_min, tally.known_max
            ));
        }
        Dialect::Chat => {}
        // Of each pair, the earlier user should see the later one arrive.
        // The gopl server announces an arrival before it adds the newcomer
        // to the room, so two users arriving together can both miss each
        // other: that is the server's race, reported but not a bench fault.
        Dialect::Raw => {
            let pairs = n * others / 2;
            if tally.known_sum != pairs {
                outcome.notes.push(format!(
                    "{} of {pairs} pairs never saw each other arrive",
                    pairs.saturating_sub(tally.known_sum)
                ));
            }
        }
    }
    let secs = |us: u64| us as f64 / 1e6;
    outcome.metric(
        "all_seen_s",
        "all saw all arrivals (s)",
        secs(tally.membership.max()),
        Better::Lower,
    );
    outcome.metric(
        "p50_user_s",
        "p50 user saw all (s)",
        secs(tally.membership.value_at_quantile(0.5)),
        Better::Lower,
    );
    // Every user reads flat out: a DROPPED is a failure, not a note.
    outcome.check_deliveries(&tally, true);
    Ok(outcome)
}
