//! `rooms`: version 2 rooms. Users log in, the first `rooms × room-size` of
//! them `JOIN` room `id / room-size` (the rest stay idle in the lobby), then
//! every room chats at once: its first `senders` members `SAY` `messages`
//! each, windowed (or paced) like `throughput`'s senders, but each only
//! against its own room's members, and every member reads flat out.
//!
//! Each member checks its room: every `SAY` of the room arrives, once, each
//! sender's in order; all members of a room end with the same arrival order
//! (one order per room, compared across workers for a room that two of
//! them share); anything from another room, or to a user in no room, is
//! foreign (the rooms' isolation); and any `DROPPED` fails the run.
//!
//! Besides deliveries/s and server CPU per delivery, it reports server CPU
//! per `SAY`: the `rooms` command compares it between the same room traffic
//! with few and with many users logged in, which a server that touches only
//! a room's members keeps the same.

use std::io;

use clap::Args;

use super::{populate, throughput, Options};
use crate::clock::now_ns;
use crate::control::Command;
use crate::dialect::Dialect;
use crate::report::{Better, Outcome};
use crate::server::Target;

/// Logins in flight per worker, as in `throughput`.
const CONCURRENCY: usize = 256;

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Users logged in.
    #[arg(long, default_value_t = 10_000)]
    pub users: u32,
    /// Members of each room.
    #[arg(long, default_value_t = 10)]
    pub room_size: u32,
    /// Rooms that chat (0: as many as the users fill); the users past them
    /// stay idle in the lobby.
    #[arg(long, default_value_t = 0)]
    pub rooms: u32,
    /// Members of each room that send (its first ones).
    #[arg(long, default_value_t = 2)]
    pub senders: u32,
    /// Messages (`SAY`) each sender sends.
    #[arg(long, default_value_t = 200)]
    pub messages: u64,
    /// Messages a sender may have that some member of its room (in its
    /// worker) has not had yet (0: no limit).
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// Messages a second per sender instead (0: as fast as the window lets).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

impl Sizes {
    /// The rooms that chat.
    pub fn rooms(&self) -> u32 {
        match self.rooms {
            0 => self.users / self.room_size.max(1),
            n => n,
        }
    }

    /// The `SAY`s of a run.
    pub fn says(&self) -> u64 {
        u64::from(self.rooms()) * u64::from(self.senders) * self.messages
    }

    pub fn params(&self) -> String {
        let pace = match self.rate {
            0.0 => format!("window={}", self.window),
            rate => format!("rate={rate}"),
        };
        format!(
            "users={} rooms={} room-size={} senders={} messages={} {pace}",
            self.users,
            self.rooms(),
            self.room_size,
            self.senders,
            self.messages
        )
    }

    fn check(&self) -> io::Result<()> {
        let fits = u64::from(self.rooms()) * u64::from(self.room_size) <= u64::from(self.users);
        if self.room_size == 0 || self.rooms() == 0 || !fits {
            return Err(io::Error::other(format!(
                "rooms: {} rooms of {} do not fit in {} users",
                self.rooms(),
                self.room_size,
                self.users
            )));
        }
        if self.senders == 0 || self.senders > self.room_size {
            return Err(io::Error::other(format!(
                "rooms: {} senders in rooms of {}",
                self.senders, self.room_size
            )));
        }
        Ok(())
    }
}

pub async fn run(target: &Target, sizes: &Sizes, options: &Options) -> io::Result<Outcome> {
    sizes.check()?;
    if target.dialect != Dialect::Chat {
        return Err(io::Error::other(format!(
            "rooms: {} does not speak our protocol's version 2",
            target.label
        )));
    }
    let mut outcome = Outcome::default();
    let server = target.start(sizes.users).await?;
    let mut room = populate(
        &server,
        target.dialect,
        sizes.users,
        CONCURRENCY,
        options,
        &mut outcome,
    )
    .await?;
    // Logins are measured by the other scenarios; here joins and the run.
    outcome.metrics.clear();
    let timeout_ms = options.timeout.as_millis() as u64;
    let (cpu_before, joins_ns) = (server.cpu_ns(), now_ns());
    let [joined, refused, unanswered] = room
        .fleet
        .join(sizes.room_size, sizes.rooms(), timeout_ms)
        .await?;
    let join_secs = (now_ns() - joins_ns) as f64 / 1e9;
    let join_cpu_ns = cpu_before
        .zip(server.cpu_ns())
        .map(|(before, after)| after.saturating_sub(before));
    if refused + unanswered > 0 {
        outcome.problems.push(format!(
            "{refused} JOINs refused, {unanswered} unanswered before the timeout \
             ({joined} joined)"
        ));
    }
    let (start_ns, tally) = room
        .measure(
            server,
            Command::Run {
                senders: sizes.senders,
                messages: sizes.messages,
                rate: sizes.rate,
                window: sizes.window,
                timeout_ms,
            },
            &mut outcome,
        )
        .await?;
    throughput::rate_metrics(&mut outcome, start_ns, &tally);
    if let Some(per_delivery) = outcome.value("cpu_per_delivery_us") {
        let per_say = per_delivery * tally.counts.received as f64 / sizes.says().max(1) as f64;
        outcome.metric(
            "cpu_per_say_us",
            "server CPU per SAY (µs)",
            per_say,
            Better::Lower,
        );
    }
    outcome.metric("join_s", "all joined (s)", join_secs, Better::Neither);
    if let Some(ns) = join_cpu_ns {
        outcome.metric(
            "join_cpu_us",
            "server CPU per JOIN (µs)",
            ns as f64 / 1e3 / joined.max(1) as f64,
            Better::Lower,
        );
    }
    // The contract: a member that reads flat out is never dropped.
    outcome.check_deliveries(&tally, true);
    Ok(outcome)
}
