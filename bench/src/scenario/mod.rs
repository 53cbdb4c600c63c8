//! The scenarios, and the steps they share: start workers, log every user in,
//! and hold a registration barrier so that a run starts only once every user
//! is sure to receive it.

pub mod accounts;
pub mod budgets;
pub mod capacity;
pub mod fanout;
pub mod flood;
pub mod hostile;
pub mod latency;
pub mod login_storm;
pub mod metrics_siege;
pub mod open_loop;
pub mod rooms;
pub mod throughput;
pub mod web;

use std::io;
use std::time::Duration;

use crate::clock::now_ns;
use crate::control::{Command, Tally};
use crate::dialect::Dialect;
use crate::fleet::Fleet;
use crate::report::{Better, Outcome};
use crate::server::Running;

/// Settings every scenario shares.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker processes (0: one per 5 000 users).
    pub workers: u32,
    /// Bound on each phase (logging in, the barrier, the run).
    pub timeout: Duration,
    /// Whether a `DROPPED` fails the run (the smoke test) or is only noted.
    pub strict: bool,
    /// Users that connect from each loopback address, each address its own
    /// (see [`crate::worker::source`]); 0: all from one.
    pub users_per_address: u32,
}

impl Options {
    fn timeout_ms(&self) -> u64 {
        self.timeout.as_millis() as u64
    }
}

/// How long a barrier round waits before the next is sent. A server without
/// login (raw) lets a connection in only some time after it connects, so an
/// early round can miss it; a later one cannot.
const SYNC_ROUND: Duration = Duration::from_secs(2);

/// Users logged in and registered, ready for a run.
pub struct Room {
    pub fleet: Fleet,
    pub logged_in: u64,
}

impl Room {
    /// Carries out one run with the server's CPU measured over it, then
    /// stops the workers and the server. Returns when the run started and
    /// what the receivers counted.
    pub async fn measure(
        mut self,
        server: Running,
        run: Command,
        outcome: &mut Outcome,
    ) -> io::Result<(u64, Tally)> {
        let cpu = CpuMark::now(&server);
        let start_ns = self.fleet.run(run).await?;
        let tally = self.fleet.tally().await?;
        cpu_metrics(outcome, &server, cpu, &tally);
        self.fleet.stop().await;
        server.stop().await;
        Ok((start_ns, tally))
    }
}

/// Starts the workers, logs `users` users in (at most `concurrency` logins
/// in flight per worker), and waits until each has seen a barrier message.
/// Refusals and failures are recorded in `outcome`.
pub async fn populate(
    server: &Running,
    dialect: Dialect,
    users: u32,
    concurrency: usize,
    options: &Options,
    outcome: &mut Outcome,
) -> io::Result<Room> {
    // Unique names per run, so that leftovers of an earlier run on an
    // attached server neither collide nor count.
    let prefix = format!("b{}_", now_ns() % 1_000_000);
    let addresses = match options.users_per_address {
        0 => 0,
        per => users.div_ceil(per),
    };
    let mut fleet = Fleet::start(
        server.users_addr(),
        dialect,
        server.transport,
        users,
        options.workers,
        &prefix,
        addresses,
    )?;
    let cpu_before = server.cpu_ns();
    let start_ns = now_ns();
    let replies = fleet
        .ask(&Command::Connect {
            concurrency,
            start_ns,
            timeout_ms: options.timeout_ms(),
        })
        .await?;
    let login_secs = (now_ns() - start_ns) as f64 / 1e9;
    let [logged_in, full, failed] = replies.iter().fold([0; 3], |mut sum, r| {
        for (s, v) in sum.iter_mut().zip(r) {
            *s += v;
        }
        sum
    });
    if full > 0 {
        outcome
            .problems
            .push(format!("{full} users refused with server-full"));
    }
    let unaccounted = u64::from(users).saturating_sub(logged_in + full + failed);
    if failed + unaccounted > 0 {
        outcome.problems.push(format!(
            "{} users could not log in ({unaccounted} still waiting at the timeout)",
            failed + unaccounted
        ));
    }
    barrier(&mut fleet, dialect, options, outcome).await?;
    if let (Some(before), Some(after)) = (cpu_before, server.cpu_ns()) {
        outcome.metric(
            "login_cpu_us",
            "server CPU per login (µs)",
            after.saturating_sub(before) as f64 / 1e3 / f64::from(users.max(1)),
            Better::Lower,
        );
    }
    // Context only: a raw server greets before it has let the user in.
    outcome.metric("login_s", "all logged in (s)", login_secs, Better::Neither);
    Ok(Room { fleet, logged_in })
}

/// Sends barrier rounds until one reaches every user. Raw servers get one
/// more round after that: once every user has seen a round, all of them were
/// in the room, and so everything broadcast before the last round (every
/// arrival) has reached everyone.
async fn barrier(
    fleet: &mut Fleet,
    dialect: Dialect,
    options: &Options,
    outcome: &mut Outcome,
) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut round = 1;
    loop {
        let missing = fleet.sync(round, SYNC_ROUND.as_millis() as u64).await?;
        if missing == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            outcome.problems.push(format!(
                "{missing} users never saw the registration barrier"
            ));
            return Ok(());
        }
        round += 1;
    }
    if dialect == Dialect::Raw {
        let missing = fleet.sync(round + 1, options.timeout_ms()).await?;
        if missing > 0 {
            outcome.problems.push(format!(
                "{missing} users missed the final registration barrier"
            ));
        }
    }
    Ok(())
}

/// CPU times (server, a cluster's Redis) and the clock at a point of a run.
struct CpuMark {
    server: Option<u64>,
    redis: Option<u64>,
    at_ns: u64,
}

impl CpuMark {
    fn now(server: &Running) -> CpuMark {
        CpuMark {
            server: server.cpu_ns(),
            redis: server.redis_cpu_ns(),
            at_ns: now_ns(),
        }
    }
}

/// Adds the server's CPU time per delivery since `before` (summed over a
/// cluster's nodes), when its pid is known, and the cores it kept busy.
/// For a cluster, also Redis's CPU per delivery, the cores it kept busy and
/// its share of the server-side CPU (nodes + Redis).
/// Also adds the bench's own CPU per delivery, for context: it shares the
/// cores with the server.
fn cpu_metrics(outcome: &mut Outcome, server: &Running, before: CpuMark, tally: &Tally) {
    let per_delivery = |ns: u64| ns as f64 / 1e3 / tally.counts.received.max(1) as f64;
    let wall_ns = now_ns().saturating_sub(before.at_ns).max(1) as f64;
    let nodes = before
        .server
        .zip(server.cpu_ns())
        .map(|(b, a)| a.saturating_sub(b));
    if let Some(ns) = nodes {
        outcome.metric(
            "cpu_per_delivery_us",
            "server CPU per delivery (µs)",
            per_delivery(ns),
            Better::Lower,
        );
        outcome.metric(
            "server_cores",
            "server cores busy",
            ns as f64 / wall_ns,
            Better::Neither,
        );
    }
    let redis = before
        .redis
        .zip(server.redis_cpu_ns())
        .map(|(b, a)| a.saturating_sub(b));
    if let Some(ns) = redis {
        outcome.metric(
            "redis_cpu_per_delivery_us",
            "Redis CPU per delivery (µs)",
            per_delivery(ns),
            Better::Lower,
        );
        outcome.metric(
            "redis_cores",
            "Redis cores busy",
            ns as f64 / wall_ns,
            Better::Neither,
        );
        let total = ns + nodes.unwrap_or(0);
        outcome.metric(
            "redis_share_pct",
            "Redis share of server CPU (%)",
            100.0 * ns as f64 / total.max(1) as f64,
            Better::Neither,
        );
    }
    outcome.metric(
        "bench_cpu_per_delivery_us",
        "bench CPU per delivery (µs)",
        per_delivery(tally.bench_cpu_ns),
        Better::Neither,
    );
}

/// Adds the p50/p99/max of a µs histogram as milliseconds.
fn latency_metrics(
    outcome: &mut Outcome,
    h: &hdrhistogram::Histogram<u64>,
    keys: [(&'static str, &'static str); 3],
) {
    let ms = |us: u64| us as f64 / 1000.0;
    let values = [
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    ];
    for ((key, label), value) in keys.into_iter().zip(values) {
        outcome.metric(key, label, value, Better::Lower);
    }
}

/// Reads lines until one starts with `prefix`; an `ERROR` fails. For the
/// scenarios that talk to the server over plain connections of their own
/// (`accounts`, `hostile`).
pub(crate) async fn expect(
    reader: &mut tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    prefix: &str,
    limit: Duration,
) -> io::Result<()> {
    let mut text = String::new();
    loop {
        text.clear();
        let read = tokio::time::timeout(
            limit,
            tokio::io::AsyncBufReadExt::read_line(reader, &mut text),
        )
        .await
        .map_err(|_| io::Error::other(format!("no {prefix} in time")))??;
        if read == 0 {
            return Err(io::Error::other(format!("closed before {prefix}")));
        }
        if text.starts_with(prefix) {
            return Ok(());
        }
        if text.starts_with("ERROR ") {
            return Err(io::Error::other(text.trim_end().to_owned()));
        }
    }
}
