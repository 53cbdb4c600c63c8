//! `accounts`: a storm of registered logins (version 3). `--users` names
//! are registered first, one connection each; then `--witnesses` users
//! already in the lobby time `PING` round trips, quietly and then while
//! every registered name logs in at once with its password. Password
//! hashing is slow on purpose (argon2id), and must delay only the logins
//! that wait for it: the witnesses' p99 during the storm against the quiet
//! one is the figure to watch, with the storm's length and the server's
//! peak memory while it lasts (the hashing pool bounds it). Then, as a
//! control, as many unregistered names log in at the storm's pace: the
//! witnesses' p99 then is what the logins cost without the accounts.
//!
//! This talks to the server directly, one connection a user, without the
//! worker fleet: a thousand logins need no more. Only our server speaks
//! version 3.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use super::Options;
use crate::dialect::Dialect;
use crate::report::{Better, Outcome};
use crate::server::{Running, Target};

/// Every name's password: the bench measures the hashing, not secrecy.
const PASSWORD: &str = "bench-password";
/// Registrations made at once before the storm.
const REGISTERING: usize = 32;
/// How long the witnesses ping before the storm, for the quiet figure.
const QUIET: Duration = Duration::from_secs(2);
/// Pause between the storm and its control, for the storm's leaves.
const SETTLE: Duration = Duration::from_secs(2);
/// A witness's pause between two pings.
const PING_EVERY: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Registered names that log in at once.
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Users already in, timing `PING` round trips.
    #[arg(long, default_value_t = 10)]
    pub witnesses: u32,
}

impl Sizes {
    pub fn params(&self) -> String {
        format!("users={},witnesses={}", self.users, self.witnesses)
    }
}

pub async fn run(target: &Target, sizes: &Sizes, options: &Options) -> io::Result<Outcome> {
    let mut outcome = Outcome::default();
    if target.dialect != Dialect::Chat {
        outcome
            .notes
            .push("accounts: only our server speaks version 3".into());
        return Ok(outcome);
    }
    let server = target.start(2 * sizes.users + sizes.witnesses).await?;
    let addr = server.addr.clone();
    let result = storm(&server, &addr, sizes, options, &mut outcome).await;
    server.stop().await;
    result.map(|()| outcome)
}

async fn storm(
    server: &Running,
    addr: &str,
    sizes: &Sizes,
    options: &Options,
    outcome: &mut Outcome,
) -> io::Result<()> {
    let registering = Instant::now();
    register_all(addr, sizes.users, options.timeout).await?;
    outcome.metric(
        "register_s",
        "registering every name (s)",
        registering.elapsed().as_secs_f64(),
        Better::Lower,
    );
    // The witnesses run on a thread and runtime of their own, so that the
    // bench's own work for the storm's connections does not count as the
    // server's delay.
    let stop = Arc::new(AtomicBool::new(false));
    let witnesses = {
        let (addr, stop, count) = (addr.to_owned(), stop.clone(), sizes.witnesses);
        std::thread::spawn(move || witness_thread(&addr, count, stop))
    };
    tokio::time::sleep(QUIET).await;
    let storm_started = Instant::now();
    let empty_kib = server.rss_kib();
    let mut logins = JoinSet::new();
    for n in 0..sizes.users {
        let addr = addr.to_owned();
        logins.spawn(async move { connect(&addr, &format!("user{n}"), Some(PASSWORD)).await });
    }
    let mut peak_kib = empty_kib.unwrap_or(0);
    let mut kept = Vec::with_capacity(sizes.users as usize);
    let deadline = Instant::now() + options.timeout;
    while !logins.is_empty() {
        match timeout(Duration::from_millis(100), logins.join_next()).await {
            Ok(Some(joined)) => kept.push(joined.map_err(io::Error::other)??),
            Ok(None) => break,
            Err(_) if Instant::now() > deadline => {
                return Err(io::Error::other("the registered logins did not finish"))
            }
            Err(_) => {}
        }
        peak_kib = peak_kib.max(server.rss_kib().unwrap_or(0));
    }
    let storm = storm_started.elapsed();
    // The control: as many logins at the storm's pace, without passwords.
    // What the witnesses see then is what any login costs the users
    // already in (its `JOIN` goes to every one of them), not the accounts.
    drop(kept);
    tokio::time::sleep(SETTLE).await;
    let control_started = Instant::now();
    let guests = paced_logins(addr, sizes.users, storm / sizes.users.max(1)).await?;
    let control = control_started.elapsed();
    // The witnesses stop at their next ping.
    stop.store(true, Ordering::Relaxed);
    drop(guests);
    let mut quiet = Vec::new();
    let mut stormy = Vec::new();
    let mut unregistered = Vec::new();
    let times = witnesses
        .join()
        .map_err(|_| io::Error::other("a witness thread panicked"))??;
    for (at, rtt) in times {
        if at < storm_started {
            quiet.push(rtt);
        } else if at < storm_started + storm {
            stormy.push(rtt);
        } else if at >= control_started && at < control_started + control {
            unregistered.push(rtt);
        }
    }
    outcome.metric(
        "storm_s",
        "registered logins all in (s)",
        storm.as_secs_f64(),
        Better::Lower,
    );
    outcome.metric(
        "logins_per_s",
        "registered logins a second",
        f64::from(sizes.users) / storm.as_secs_f64().max(1e-9),
        Better::Higher,
    );
    let (quiet_p99, stormy_p99) = (p99_ms(&mut quiet), p99_ms(&mut stormy));
    outcome.metric(
        "ping_quiet_p99_ms",
        "witness PING p99, quiet (ms)",
        quiet_p99,
        Better::Lower,
    );
    outcome.metric(
        "ping_storm_p99_ms",
        "witness PING p99, during the storm (ms)",
        stormy_p99,
        Better::Lower,
    );
    outcome.metric(
        "ping_ratio",
        "witness PING p99, storm / quiet",
        stormy_p99 / quiet_p99.max(1e-3),
        Better::Lower,
    );
    let control_p99 = p99_ms(&mut unregistered);
    outcome.metric(
        "ping_control_p99_ms",
        "witness PING p99, as many unregistered logins at the storm's pace (ms)",
        control_p99,
        Better::Lower,
    );
    outcome.metric(
        "ping_control_ratio",
        "witness PING p99, storm / unregistered logins at its pace",
        stormy_p99 / control_p99.max(1e-3),
        Better::Lower,
    );
    if let Some(empty) = empty_kib {
        outcome.metric(
            "rss_peak_kib",
            "server RSS peak during the storm (KiB)",
            peak_kib as f64,
            Better::Lower,
        );
        outcome.metric(
            "rss_growth_kib",
            "server RSS growth during the storm (KiB)",
            peak_kib.saturating_sub(empty) as f64,
            Better::Lower,
        );
    }
    Ok(())
}

/// Logs `count` witnesses in on a runtime of this thread's own and pings
/// with each until told to stop; returns every ping's time and round trip.
fn witness_thread(
    addr: &str,
    count: u32,
    stop: Arc<AtomicBool>,
) -> io::Result<Vec<(Instant, Duration)>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut pinging = JoinSet::new();
        for n in 0..count {
            let mut line = connect(addr, &format!("witness{n}"), None).await?;
            let stop = stop.clone();
            pinging.spawn(async move { ping(&mut line, &stop).await });
        }
        let mut times = Vec::new();
        while let Some(joined) = pinging.join_next().await {
            times.extend(joined.map_err(io::Error::other)??);
        }
        Ok(times)
    })
}

/// Logs `guest0` … in without a password, one every `pace`, and keeps
/// them all in.
async fn paced_logins(addr: &str, users: u32, pace: Duration) -> io::Result<Vec<Line>> {
    let mut tick = tokio::time::interval(pace.max(Duration::from_micros(10)));
    let mut logins = JoinSet::new();
    for n in 0..users {
        tick.tick().await;
        let addr = addr.to_owned();
        logins.spawn(async move { connect(&addr, &format!("guest{n}"), None).await });
    }
    let mut kept = Vec::with_capacity(users as usize);
    while let Some(joined) = logins.join_next().await {
        kept.push(joined.map_err(io::Error::other)??);
    }
    Ok(kept)
}

/// Registers `user0` … with [`PASSWORD`], a few at a time.
async fn register_all(addr: &str, users: u32, limit: Duration) -> io::Result<()> {
    let mut set = JoinSet::new();
    for n in 0..users {
        if set.len() >= REGISTERING {
            set.join_next()
                .await
                .transpose()
                .map_err(io::Error::other)?
                .transpose()?;
        }
        let addr = addr.to_owned();
        set.spawn(async move {
            let mut line = connect(&addr, &format!("user{n}"), None).await?;
            line.send(&format!("REGISTER {PASSWORD}")).await?;
            line.expect_prefix("REGISTERED ", limit).await?;
            line.send("LEAVE").await?;
            line.expect_prefix("BYE", limit).await
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.map_err(io::Error::other)??;
    }
    Ok(())
}

/// Pings until told to stop, returning when each ping was sent and its
/// round trip.
async fn ping(line: &mut Line, stop: &AtomicBool) -> io::Result<Vec<(Instant, Duration)>> {
    let mut times = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        line.send(&format!("PING w{n}")).await?;
        line.expect_prefix(&format!("PONG w{n}"), Duration::from_secs(60))
            .await?;
        times.push((sent, sent.elapsed()));
        n += 1;
        tokio::time::sleep(PING_EVERY).await;
    }
    Ok(times)
}

fn p99_ms(times: &mut [Duration]) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    times.sort_unstable();
    let at = ((times.len() as f64) * 0.99).ceil() as usize;
    times[at.clamp(1, times.len()) - 1].as_secs_f64() * 1e3
}

/// One user's connection, read line by line.
struct Line {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

/// Connects and logs in as `name`, with `password` if given.
async fn connect(addr: &str, name: &str, password: Option<&str>) -> io::Result<Line> {
    let stream = TcpStream::connect(addr).await?;
    let (read, writer) = stream.into_split();
    let mut line = Line {
        reader: BufReader::new(read),
        writer,
    };
    match password {
        Some(password) => line.send(&format!("NAME {name} {password}")).await?,
        None => line.send(&format!("NAME {name}")).await?,
    }
    line.expect_prefix("WELCOME ", Duration::from_secs(120))
        .await?;
    Ok(line)
}

impl Line {
    async fn send(&mut self, text: &str) -> io::Result<()> {
        self.writer.write_all(format!("{text}\n").as_bytes()).await
    }

    /// Reads lines until one starts with `prefix`; an `ERROR` fails.
    async fn expect_prefix(&mut self, prefix: &str, limit: Duration) -> io::Result<()> {
        super::expect(&mut self.reader, prefix, limit).await
    }
}
