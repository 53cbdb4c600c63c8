//! `flood`: one client pipelining MSGs as fast as its socket takes them,
//! while users chat at a human rate; what the flood does to the humans'
//! latency.
//!
//! The target: "one flooder pipelining 100 000 MSGs while 100 users chat at
//! a human rate; their p99 must stay within 10 % of the same run without the
//! flooder". Flood control (PROTOCOL.md, "Running in public") lets each
//! connection send a burst of `--flood-burst` frames, then `--flood-rate` a
//! second; beyond that the server reads the connection more slowly, so its
//! frames are handled later, in order, and only that client waits. Loopback
//! peers are spared unless `--limits-on-loopback`, so the bench adds that
//! flag to the server it starts (and, where the server has `--max-per-ip`,
//! room for every user, since they all come from 127.0.0.1).
//!
//! Each measurement is a pair of runs on a freshly started server:
//! - A: `users` users each send one message every `interval` for
//!   `duration` (staggered: user i sends at i/users of the interval, as the
//!   `latency` senders take turns), and everyone reads everything; the
//!   flooder's connection is logged in and reads, but sends nothing;
//! - B: the same, and the flooder pipelines `flood` MSGs from just before
//!   the humans start, as fast as its socket takes them, reading everything
//!   it receives.
//!
//! So the two runs differ only by the flood. The humans' messages are
//! stamped and checked by the workers as in `latency` (loss, duplicates,
//! order, `DROPPED`); the flooder's carry `f <seq> <sent-ns>`, which the
//! workers pass over, and the flooder itself checks that its own come back
//! in order with none missing and that it got every human message. When the
//! humans' run is over, the flooder's connection is closed (reset): the
//! messages the server had not read yet are never handled. The pairs
//! alternate which run goes first.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use super::{cpu_metrics, latency_metrics, populate, CpuMark, Options};
use crate::check::{Checker, Counts};
use crate::clock::now_ns;
use crate::control::{Command, Tally};
use crate::dialect::{Dialect, Event, Payload};
use crate::report::{Better, Outcome};
use crate::server::{Launch, Target};

/// The p99 ratio (with the flooder / without) the target allows.
const TARGET_P99_RATIO: f64 = 1.10;
/// Flooder messages per write.
const FLOOD_BATCH: u64 = 64;
/// How long the flooder may take, after the humans' run, to have every
/// human message (it reads in the coordinating process).
const FLOODER_CATCH_UP: Duration = Duration::from_secs(2);

/// Pairs measured so far: odd ones run B first.
static PAIRS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Users chatting at a human rate; every one sends and reads
    /// everything. The flooder is one more connection.
    #[arg(long, default_value_t = 100)]
    pub users: u32,
    /// Each user sends one message per interval (user i at i/users of it).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// How long the users chat (each sends duration/interval messages).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// MSGs the flooder pipelines in run B. Under flood control the server
    /// handles about --flood-rate of them a second; the rest are dropped
    /// with its connection when the run ends.
    #[arg(long, default_value_t = 100_000)]
    pub flood: u64,
}

impl Sizes {
    pub fn params(&self) -> String {
        format!(
            "users={} interval={} duration={} flood={}",
            self.users,
            humantime::format_duration(self.interval),
            humantime::format_duration(self.duration),
            self.flood
        )
    }

    /// Messages each user sends.
    fn messages(&self) -> u64 {
        (self.duration.as_secs_f64() / self.interval.as_secs_f64().max(1e-3))
            .round()
            .max(1.0) as u64
    }
}

pub async fn run(target: &Target, sizes: &Sizes, options: &Options) -> io::Result<Outcome> {
    let (target, note) = limited(target, sizes.users);
    let b_first = PAIRS.fetch_add(1, Ordering::Relaxed) % 2 == 1;
    let (a, b) = if b_first {
        let b = half(&target, sizes, true, options).await?;
        (half(&target, sizes, false, options).await?, b)
    } else {
        let a = half(&target, sizes, false, options).await?;
        (a, half(&target, sizes, true, options).await?)
    };
    let mut outcome = Outcome::default();
    outcome.notes.extend(note);
    for (name, h) in [("A", &a), ("B", &b)] {
        outcome
            .problems
            .extend(h.outcome.problems.iter().map(|p| format!("{name}: {p}")));
        outcome
            .notes
            .extend(h.outcome.notes.iter().map(|n| format!("{name}: {n}")));
    }
    let [a_p50, a_p99, a_max] = quantiles(&a.tally);
    let [b_p50, b_p99, b_max] = quantiles(&b.tally);
    for (key, label, value) in [
        ("a_p50_ms", "A humans only: p50 (ms)", a_p50),
        ("a_p99_ms", "A humans only: p99 (ms)", a_p99),
        ("a_max_ms", "A humans only: max (ms)", a_max),
        ("b_p50_ms", "B with flooder: p50 (ms)", b_p50),
        ("b_p99_ms", "B with flooder: p99 (ms)", b_p99),
        ("b_max_ms", "B with flooder: max (ms)", b_max),
        ("p50_ratio", "p50 B/A", b_p50 / a_p50),
        ("p99_ratio", "p99 B/A (target <= 1.10)", b_p99 / a_p99),
        ("max_ratio", "max B/A", b_max / a_max),
    ] {
        outcome.metric(key, label, value, Better::Lower);
    }
    let flood = &b.flood;
    for (key, label, value) in [
        (
            "flood_handled",
            "B flooder msgs handled",
            flood.handled as f64,
        ),
        (
            "flood_last_s",
            "B flooder's last handled at (s)",
            flood.last_s,
        ),
        ("flood_per_s", "B flooder handled/s", flood.per_s),
        (
            "flood_per_s_late",
            "B flooder handled/s, 2nd half",
            flood.per_s_late,
        ),
        (
            "flood_written",
            "B flooder msgs in its socket",
            flood.written as f64,
        ),
        (
            "deliveries",
            "human deliveries per run",
            a.tally.counts.received as f64,
        ),
    ] {
        outcome.metric(key, label, value, Better::Neither);
    }
    for (key, label, h) in [
        ("a_server_cores", "A server cores busy", &a),
        ("b_server_cores", "B server cores busy", &b),
    ] {
        if let Some(m) = h.outcome.metrics.iter().find(|m| m.key == "server_cores") {
            outcome.metric(key, label, m.value, Better::Neither);
        }
    }
    let ratio = b_p99 / a_p99;
    if ratio > TARGET_P99_RATIO {
        outcome.notes.push(format!(
            "p99 B/A = {ratio:.2} ({b_p99:.2} / {a_p99:.2} ms): over the target's {TARGET_P99_RATIO:.2} in this pair"
        ));
    }
    Ok(outcome)
}

/// p50, p99 and max of the humans' latency, in ms.
fn quantiles(tally: &Tally) -> [f64; 3] {
    let mut o = Outcome::default();
    latency_metrics(&mut o, &tally.latency, [("", ""), ("", ""), ("", "")]);
    [o.metrics[0].value, o.metrics[1].value, o.metrics[2].value]
}

/// The target with flood control applied to loopback: `--limits-on-loopback`
/// added to a server the bench starts (unless given already), and
/// `--max-per-ip` and `--connect-burst` raised for all the users if the
/// server has those flags (they all connect from 127.0.0.1, at once). A server the bench does not start is taken
/// as it is, with a note.
fn limited(target: &Target, users: u32) -> (Target, Option<String>) {
    let mut target = target.clone();
    let (path, args) = match &mut target.launch {
        Launch::Binary { path, args } | Launch::Cluster { path, args, .. } => (path, args),
        _ => {
            return (
                target,
                Some(
                    "server not started by the bench: flood control on loopback is as it \
                     was started (our server needs --limits-on-loopback)"
                        .into(),
                ),
            )
        }
    };
    let given = |flag: &str| args.iter().any(|a| a.starts_with(flag));
    let mut extra = Vec::new();
    if !given("--limits-on-loopback") {
        extra.push("--limits-on-loopback".to_owned());
    }
    if !given("--max-per-ip") && has_flag(path, "--max-per-ip") {
        extra.push(format!("--max-per-ip={}", users + 16));
    }
    // They also connect all at once, faster than --connect-rate allows.
    if !given("--connect-burst") && has_flag(path, "--connect-burst") {
        extra.push(format!("--connect-burst={}", users + 16));
    }
    args.splice(0..0, extra);
    (target, None)
}

/// Whether `server --help` lists `flag` as an option of its own (not only
/// in some other option's description).
fn has_flag(server: &std::path::Path, flag: &str) -> bool {
    std::process::Command::new(server)
        .arg("--help")
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim_start().starts_with(flag))
        })
        .unwrap_or(false)
}

/// One run of a pair.
struct Half {
    /// The humans' checks, problems and notes (run and flooder), and the
    /// server's CPU.
    outcome: Outcome,
    tally: Tally,
    flood: FloodReport,
}

/// Starts a server, logs the flooder and the users in, and has the users
/// chat; with `flood`, the flooder pipelines meanwhile.
async fn half(target: &Target, sizes: &Sizes, flood: bool, options: &Options) -> io::Result<Half> {
    let mut outcome = Outcome::default();
    let server = target.start(sizes.users + 1).await?;
    let messages = sizes.messages();
    // A cluster's first node; the users spread over all of them.
    let addr = server.addr.split(',').next().unwrap_or_default();
    let mut flooder =
        Flooder::join(addr, target.dialect, sizes.users, messages, options.timeout).await?;
    let mut room = populate(
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
    if flood {
        flooder.flood(sizes.flood);
    }
    let cpu = CpuMark::now(&server);
    room.fleet
        .run(Command::Run {
            senders: sizes.users,
            messages,
            rate: 1.0 / sizes.interval.as_secs_f64(),
            window: 0,
            timeout_ms: (sizes.duration + options.timeout).as_millis() as u64,
        })
        .await?;
    let end_ns = now_ns();
    let tally = room.fleet.tally().await?;
    cpu_metrics(&mut outcome, &server, cpu, &tally);
    let report = flooder.close(end_ns).await;
    room.fleet.stop().await;
    server.stop().await;
    // Every connection here reads whatever it receives: a DROPPED is a
    // failure, as in `open-loop`.
    outcome.check_deliveries(&tally, true);
    report.check(flood, &mut outcome);
    Ok(Half {
        outcome,
        tally,
        flood: report,
    })
}

/// What the flooder's connection saw.
struct FloodStats {
    welcomed: bool,
    /// When each of its own messages came back (index: its number).
    echoes: Vec<u64>,
    /// Its own messages missing (a later one came first), or repeated or
    /// late.
    echo_gaps: u64,
    echo_repeats: u64,
    /// The humans' messages, as any user checks them.
    humans: Checker,
    dropped: u64,
    errors: Vec<String>,
    /// The server closed the connection (or reading failed) before the
    /// bench did.
    cut: bool,
    /// When it started writing, and how many messages it has written whole
    /// into its socket.
    start_ns: u64,
    written: u64,
}

/// What the report of a run needs of the flooder.
struct FloodReport {
    /// Own messages back (so handled by the server) by the end of the run.
    handled: u64,
    /// When the last of them came back, since its first write (s).
    last_s: f64,
    /// Per second from its first write to the last one back, and over the
    /// second half of the run only (past any burst).
    per_s: f64,
    per_s_late: f64,
    written: u64,
    echo_gaps: u64,
    echo_repeats: u64,
    /// The humans' messages, as it checked them.
    humans: Counts,
    humans_complete: bool,
    dropped: u64,
    errors: Vec<String>,
    cut: bool,
}

impl FloodReport {
    /// Turns what the flooder saw into problems and notes.
    fn check(&self, flooded: bool, outcome: &mut Outcome) {
        let mut problem = |p: String| outcome.problems.push(format!("flooder: {p}"));
        if self.echo_gaps + self.echo_repeats > 0 {
            problem(format!(
                "its own messages came back out of order: {} missing before a later one, \
                 {} repeated or late",
                self.echo_gaps, self.echo_repeats
            ));
        }
        let h = &self.humans;
        if h.faults() > 0 || !self.humans_complete {
            problem(format!(
                "of the humans' messages it lost {}, had {} twice, {} out of order, {} foreign{}",
                h.lost,
                h.duplicated,
                h.reordered,
                h.foreign,
                if self.humans_complete {
                    ""
                } else {
                    " (not all in time)"
                }
            ));
        }
        if self.dropped > 0 || h.skipped > 0 {
            problem(format!("DROPPED {} frames", self.dropped));
        }
        if self.cut {
            problem("the server closed its connection during the run".into());
        }
        if flooded && self.handled == 0 {
            problem("none of its messages was handled during the run".into());
        }
        if !flooded && self.handled > 0 {
            problem(format!("{} messages it never sent came back", self.handled));
        }
        for e in &self.errors {
            outcome.notes.push(format!("flooder: error: {e}"));
        }
    }
}

/// The flooder: one more connection, in the coordinating process, that
/// reads everything it receives and, when told, pipelines MSGs.
struct Flooder {
    dialect: Dialect,
    stats: Arc<Mutex<FloodStats>>,
    reader: JoinHandle<()>,
    /// Its socket's write half until it floods, then the task that writes.
    write: Option<OwnedWriteHalf>,
    writer: Option<JoinHandle<()>>,
}

fn lock(stats: &Mutex<FloodStats>) -> MutexGuard<'_, FloodStats> {
    // Poisoned only if a task panicked holding it: the counts still stand.
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

impl Flooder {
    /// Connects and logs in (a raw server: until it greets), ready to check
    /// a run of `messages` from each of `users` humans.
    async fn join(
        addr: &str,
        dialect: Dialect,
        users: u32,
        messages: u64,
        timeout: Duration,
    ) -> io::Result<Flooder> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        // Closing resets the connection: the server drops what it has not
        // read rather than handling it at the flood rate for hours.
        stream.set_zero_linger()?;
        let (read, mut write) = stream.into_split();
        let name = format!(
            "flood{}x{}",
            std::process::id() % 100_000,
            now_ns() % 1_000_000
        );
        if let Some(login) = dialect.login(&name) {
            write.write_all(login.as_bytes()).await?;
        }
        let stats = Arc::new(Mutex::new(FloodStats {
            welcomed: false,
            echoes: Vec::new(),
            echo_gaps: 0,
            echo_repeats: 0,
            humans: Checker::new(users as usize, messages),
            dropped: 0,
            errors: Vec::new(),
            cut: false,
            start_ns: 0,
            written: 0,
        }));
        let reader = tokio::spawn(read_all(read, dialect, stats.clone()));
        let flooder = Flooder {
            dialect,
            stats,
            reader,
            write: Some(write),
            writer: None,
        };
        let deadline = Instant::now() + timeout;
        loop {
            {
                let stats = lock(&flooder.stats);
                if stats.welcomed {
                    break;
                }
                if stats.cut || Instant::now() > deadline {
                    return Err(io::Error::other(format!(
                        "the flooder was not let in: {}",
                        stats.errors.join("; ")
                    )));
                }
            }
            sleep(Duration::from_millis(5)).await;
        }
        Ok(flooder)
    }

    /// Starts pipelining `messages` MSGs.
    fn flood(&mut self, messages: u64) {
        let Some(write) = self.write.take() else {
            return;
        };
        lock(&self.stats).start_ns = now_ns();
        self.writer = Some(tokio::spawn(write_all(
            write,
            self.dialect,
            messages,
            self.stats.clone(),
        )));
    }

    /// Waits (a little) until the flooder has every human message, takes
    /// the figures as of `end_ns`, and closes the connection.
    async fn close(self, end_ns: u64) -> FloodReport {
        let deadline = Instant::now() + FLOODER_CATCH_UP;
        loop {
            {
                let stats = lock(&self.stats);
                if stats.humans.is_complete() || stats.cut || Instant::now() > deadline {
                    break;
                }
            }
            sleep(Duration::from_millis(10)).await;
        }
        let report = {
            let stats = lock(&self.stats);
            let handled = stats.echoes.iter().filter(|&&t| t <= end_ns).count() as u64;
            let start = stats.start_ns.min(end_ns);
            let middle = start + (end_ns - start) / 2;
            let late = stats
                .echoes
                .iter()
                .filter(|&&t| t > middle && t <= end_ns)
                .count();
            let last_ns = stats
                .echoes
                .iter()
                .rev()
                .find(|&&t| t <= end_ns)
                .map_or(start, |&t| t.max(start));
            let secs = |from: u64, to: u64| (to - from) as f64 / 1e9;
            let (per_s, per_s_late) = if stats.start_ns == 0 {
                (0.0, 0.0)
            } else {
                (
                    handled as f64 / secs(start, last_ns).max(1e-9),
                    late as f64 / secs(middle, end_ns).max(1e-9),
                )
            };
            FloodReport {
                handled,
                last_s: secs(start, last_ns),
                per_s,
                per_s_late,
                written: stats.written,
                echo_gaps: stats.echo_gaps,
                echo_repeats: stats.echo_repeats,
                humans: stats.humans.counts(),
                humans_complete: stats.humans.is_complete(),
                dropped: stats.dropped,
                errors: stats.errors.clone(),
                cut: stats.cut,
            }
        };
        // Both halves go: the socket closes with a reset.
        if let Some(writer) = self.writer {
            writer.abort();
            let _ = writer.await;
        }
        self.reader.abort();
        let _ = self.reader.await;
        drop(self.write);
        report
    }
}

/// The flooder's reading: every line, until the connection ends.
async fn read_all(read: OwnedReadHalf, dialect: Dialect, stats: Arc<Mutex<FloodStats>>) {
    let mut read = BufReader::with_capacity(64 * 1024, read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let ended = match read.read_until(b'\n', &mut line).await {
            Ok(0) => Some(None),
            Ok(_) => None,
            Err(e) => Some(Some(e)),
        };
        let now = now_ns();
        let mut stats = lock(&stats);
        if let Some(error) = ended {
            if let Some(e) = error {
                stats.errors.push(format!("read: {e}"));
            }
            stats.cut = true;
            return;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        match dialect.parse(text) {
            Event::Welcome => stats.welcomed = true,
            Event::Text(text) => {
                if let Some(seq) = own_number(text) {
                    let next = stats.echoes.len() as u64;
                    if seq < next {
                        stats.echo_repeats += 1;
                    } else {
                        stats.echo_gaps += seq - next;
                        stats.echoes.resize(seq as usize, 0);
                        stats.echoes.push(now);
                    }
                } else if let Some(Payload::Message { sender, seq, .. }) = Payload::parse(text) {
                    stats.humans.message(sender as usize, seq);
                }
            }
            Event::Dropped(n) => {
                stats.dropped += n;
                stats.humans.dropped(n);
            }
            Event::Full => stats.errors.push("server-full".into()),
            Event::Error(line) if stats.errors.len() < 5 => {
                stats
                    .errors
                    .push(String::from_utf8_lossy(line).into_owned());
            }
            // Arrivals, PONGs, departures, errors past the first few, and
            // whatever else the dialect knows of.
            _ => {}
        }
    }
}

/// The number of one of the flooder's own messages, `f <seq> <sent-ns>`.
fn own_number(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text.strip_prefix(b"f ")?).ok()?;
    let mut words = text.split(' ');
    let seq = words.next()?.parse().ok()?;
    words.next()?.parse::<u64>().ok()?;
    Some(seq)
}

/// The flooder's writing: `messages` MSGs as fast as the socket takes them,
/// then it holds the connection open until it is closed.
async fn write_all(
    mut write: OwnedWriteHalf,
    dialect: Dialect,
    messages: u64,
    stats: Arc<Mutex<FloodStats>>,
) {
    let mut buf = Vec::with_capacity(48 * FLOOD_BATCH as usize);
    let mut seq = 0;
    while seq < messages {
        let batch = FLOOD_BATCH.min(messages - seq);
        buf.clear();
        let now = now_ns();
        for s in seq..seq + batch {
            dialect.write_text(&mut buf, format_args!("f {s} {now}"));
        }
        if let Err(e) = write.write_all(&buf).await {
            lock(&stats).errors.push(format!("write: {e}"));
            break;
        }
        seq += batch;
        lock(&stats).written = seq;
    }
    std::future::pending::<()>().await;
    drop(write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_messages_are_told_apart_from_the_humans() {
        let mut line = Vec::new();
        Dialect::Chat.write_text(&mut line, format_args!("f {} {}", 42, 7));
        assert_eq!(line, b"MSG f 42 7\n");
        assert_eq!(own_number(b"f 42 7"), Some(42));
        assert_eq!(own_number(b"m 1 42 7"), None);
        assert_eq!(own_number(b"f 42"), None);
        // The workers pass the flooder's messages over.
        assert_eq!(Payload::parse(b"f 42 7"), None);
    }

    #[test]
    fn sizes() {
        let sizes = Sizes {
            users: 100,
            interval: Duration::from_secs(2),
            duration: Duration::from_secs(20),
            flood: 100_000,
        };
        assert_eq!(sizes.messages(), 10);
        assert_eq!(
            sizes.params(),
            "users=100 interval=2s duration=20s flood=100000"
        );
    }
}
