//! The hardening cases: faults, abuse and load against the real
//! `chat-server`, each while two [`Witnesses`](crate::witness::Witnesses)
//! chat and must lose nothing.
//!
//! Every case is one function parameterised by a [`Scale`], so the fast run
//! (`tests/hardening.rs`, debug build, part of `cargo test --workspace`) and
//! the soak run (`tests/soak.rs`, release, `--ignored`) run the same code at
//! different sizes. Each returns a [`Row`] for the soak runner's table and
//! panics, with what it saw, when the server breaks the contract.

mod abrupt;
mod budgets;
mod churn;
mod flood;
mod garbage;
mod injection;
mod limits;
mod shutdown;
mod slow_readers;
mod slowloris;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use abrupt::abrupt_ends;
pub use budgets::{budgets, BudgetScale};
pub use churn::churn;
pub use flood::flood;
pub use garbage::garbage;
pub use injection::injection;
pub use limits::limits;
pub use shutdown::shutdown_under_load;
pub use slow_readers::{slow_readers, stuck_reader_backlog};
pub use slowloris::slowloris;

use crate::fuzz;
use crate::probe;
use crate::Server;

/// How big each case is.
#[derive(Debug, Clone)]
pub struct Scale {
    /// Garbage: connections at once, lines of garbage each, and MiB sent
    /// in one line that never ends.
    pub garbage_connections: usize,
    pub garbage_lines: usize,
    pub unterminated_mib: usize,
    /// Terminal injection: passes over every forbidden character.
    pub injection_rounds: usize,
    /// Slowloris: connections, and the server's `--login-timeout`.
    pub slowloris_connections: usize,
    pub login_timeout: Duration,
    /// Abrupt ends: rounds of each kind of vanishing client.
    pub abrupt_rounds: usize,
    /// Churn: connect-login-message-disconnect cycles, and workers.
    pub churn_cycles: usize,
    pub churn_workers: usize,
    /// Flood: how long one client sends as fast as it can.
    pub flood: Duration,
    /// Slow readers: users who never read, senders, how long they chat.
    pub slow_readers: usize,
    pub slow_senders: usize,
    pub slow_chat: Duration,
    /// Time between two messages of one slow-readers sender.
    pub slow_pace: Duration,
    /// Limits: `--max-clients`, connections over it in the storm, and
    /// connections beyond the file-descriptor limit.
    pub max_clients: usize,
    pub storm_excess: usize,
    pub fd_excess: usize,
    /// Shutdown: users chatting when SIGTERM comes, and for how long before.
    pub shutdown_users: usize,
    pub shutdown_chat: Duration,
    /// Parser fuzzing: at most this many cases, for at most this long.
    pub fuzz_cases: u64,
    pub fuzz_time: Duration,
    /// Budgets: the attacks of "Running in public", one server.
    pub budgets: BudgetScale,
}

impl Scale {
    /// Sizes for the default test run: the whole target in well under 30 s
    /// in a debug build on two cores.
    pub fn fast() -> Scale {
        Scale {
            garbage_connections: 50,
            garbage_lines: 40,
            unterminated_mib: 32,
            injection_rounds: 1,
            slowloris_connections: 500,
            login_timeout: Duration::from_millis(1500),
            abrupt_rounds: 3,
            churn_cycles: 2_000,
            churn_workers: 8,
            flood: Duration::from_secs(2),
            slow_readers: 200,
            slow_senders: 10,
            slow_chat: Duration::from_secs(2),
            slow_pace: Duration::from_millis(10),
            max_clients: 100,
            storm_excess: 50,
            fd_excess: 60,
            shutdown_users: 200,
            shutdown_chat: Duration::from_millis(500),
            fuzz_cases: 20_000,
            fuzz_time: Duration::from_secs(3),
            budgets: BudgetScale {
                history_mib: 1,
                fill_addresses: 16,
                rooms_per_ip: 20,
                pound: Duration::from_secs(1),
                reconnect: Duration::from_secs(2),
                flooders: 8,
                flood_messages: 10,
                metrics_connections: 100,
            },
        }
    }

    /// The full sizes, for the soak runner (release build).
    pub fn soak() -> Scale {
        Scale {
            garbage_connections: 50,
            garbage_lines: 400,
            unterminated_mib: 256,
            injection_rounds: 20,
            slowloris_connections: 500,
            login_timeout: Duration::from_secs(3),
            abrupt_rounds: 20,
            churn_cycles: 20_000,
            churn_workers: 8,
            flood: Duration::from_secs(10),
            slow_readers: 1_000,
            slow_senders: 10,
            slow_chat: Duration::from_secs(10),
            slow_pace: Duration::from_millis(10),
            max_clients: 1_000,
            storm_excess: 500,
            fd_excess: 400,
            shutdown_users: 1_000,
            shutdown_chat: Duration::from_secs(3),
            fuzz_cases: u64::MAX,
            fuzz_time: Duration::from_secs(10),
            // The default --max-rooms-per-ip; the history budget small
            // enough that three times it is filled in about 10 s at the
            // flood allowances of 16 addresses.
            budgets: BudgetScale {
                history_mib: 4,
                fill_addresses: 16,
                rooms_per_ip: 200,
                pound: Duration::from_secs(10),
                reconnect: Duration::from_secs(10),
                flooders: 16,
                flood_messages: 15,
                metrics_connections: 300,
            },
        }
    }
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub case: &'static str,
    /// What was tried and how much of it.
    pub tried: String,
    /// What held: the checks that passed, with their numbers.
    pub held: String,
    pub took: Duration,
    /// Witness frames lost (zero, or the case would have failed).
    pub lost: u64,
    /// Highest server RSS seen, in MiB, where the case measured it.
    pub peak_rss_mib: Option<f64>,
}

impl Row {
    fn new(case: &'static str, started: Instant) -> Row {
        Row {
            case,
            tried: String::new(),
            held: String::new(),
            took: started.elapsed(),
            lost: 0,
            peak_rss_mib: None,
        }
    }

    /// Prints the row, so `--nocapture` shows what each case did.
    pub fn print(&self) {
        println!(
            "[{}] {:.1} s\n  tried: {}\n  held:  {}",
            self.case,
            self.took.as_secs_f64(),
            self.tried,
            self.held
        );
    }
}

/// The rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| case | what was tried (how much) | what held | time |\n|---|---|---|---|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} s |\n",
            row.case,
            row.tried.replace('|', "\\|"),
            row.held.replace('|', "\\|"),
            row.took.as_secs_f64()
        ));
    }
    out
}

/// Runs one case on its own two-thread runtime, one case at a time in this
/// process: the cases measure latency, CPU and memory, which a case running
/// beside them would disturb.
pub fn run_exclusive<F: Future<Output = Row>>(case: F) -> Row {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    probe::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let row = runtime.block_on(case);
    row.print();
    row
}

/// Case 10: the decoder, fed generated hostile input cut at random points,
/// never panics and agrees with a reference model and with itself.
pub async fn parser_fuzz(scale: &Scale, seed: u64) -> Row {
    let started = Instant::now();
    let stats = fuzz::run(seed, scale.fuzz_cases, scale.fuzz_time);
    let mut row = Row::new("10 parser fuzz", started);
    row.tried = format!(
        "{} generated inputs ({:.1} MiB, {} frames) through `ServerCodec`, each whole, \
         cut at random points and byte by byte (seed {seed})",
        stats.cases,
        stats.bytes as f64 / (1 << 20) as f64,
        stats.items
    );
    row.held = format!(
        "no panic; every split gave the same items as a reference line splitter; \
         no accepted frame carried a control or bidi character; every accepted \
         frame re-parsed to itself ({} accepted, {} refused)",
        stats.accepted, stats.refused
    );
    row
}

/// Starts a server with `args` and checks it is alive at the end of a case.
fn server(args: &[&str]) -> Server {
    Server::start(args)
}

/// Panics if the server process has died.
fn assert_alive(server: &Server, case: &str) {
    assert!(
        probe::alive(server.pid()),
        "{case}: the server process died"
    );
}

/// The code of an `ERROR <code> …` line, or the whole line otherwise.
fn code_of(line: &str) -> &str {
    match line.strip_prefix("ERROR ") {
        Some(rest) => rest.split(' ').next().unwrap_or(rest),
        None => line,
    }
}

/// Asserts the answers (ERROR codes compared by code) are `expected`,
/// pointing at the first difference.
fn assert_answers(got: &[String], expected: &[String], context: &str) {
    let got: Vec<&str> = got.iter().map(|l| code_of(l)).collect();
    let expected: Vec<&str> = expected.iter().map(|l| code_of(l)).collect();
    if got != expected {
        let at = got
            .iter()
            .zip(&expected)
            .position(|(g, e)| g != e)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{context}: answer {at} differs: got {:?}, expected {:?} ({} answers, {} expected)",
            got.get(at),
            expected.get(at),
            got.len(),
            expected.len()
        );
    }
}

/// Whether a line is a broadcast (which arrives at any time) rather than an
/// answer to this connection's own frames.
fn is_broadcast_from_others(line: &str, me: &str) -> bool {
    match line.split_once(' ') {
        Some(("MSG", rest)) => !rest.starts_with(&format!("{me} ")),
        Some(("JOIN" | "LEAVE", _)) => true,
        _ => false,
    }
}

/// Samples a process's RSS, and the host's TCP buffer memory, every 50 ms
/// until dropped, keeping the peaks.
struct RssWatch {
    pid: u32,
    peak_kib: Arc<AtomicU64>,
    peak_tcp_kib: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let peak_tcp_kib = Arc::new(AtomicU64::new(0));
        let (peak, peak_tcp) = (peak_kib.clone(), peak_tcp_kib.clone());
        let sampler = tokio::spawn(async move {
            while let Some(rss) = probe::rss_kib(pid) {
                peak.fetch_max(rss, Ordering::Relaxed);
                peak_tcp.fetch_max(probe::tcp_memory_kib().unwrap_or(0), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssWatch {
            pid,
            peak_kib,
            peak_tcp_kib,
            sampler,
        }
    }

    /// The highest host TCP buffer memory seen so far, in KiB.
    fn peak_tcp_kib(&self) -> u64 {
        self.peak_tcp_kib.load(Ordering::Relaxed)
    }

    /// The highest RSS so far, a sample taken now included.
    fn peak_kib(&self) -> u64 {
        let now = probe::Usage::of(self.pid).rss_kib;
        self.peak_kib.fetch_max(now, Ordering::Relaxed).max(now)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}
