//! `chat-bench`: a load generator for line-protocol chat servers.
//!
//! It measures our `chat-server` (and, with `--compare`, a second server such
//! as the gopl seed in raw mode) on five scenarios, checks every delivery
//! for loss, duplication and order, and prints a table plus one JSON line
//! per scenario. The coordinating process holds no connections: it starts
//! workers (this binary again, `chat-bench worker`) that do.

mod check;
mod clock;
mod control;
mod dialect;
mod fleet;
mod proto;
mod raw;
mod report;
mod scenario;
mod server;
mod worker;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::dialect::Dialect;
use crate::report::{Comparison, Outcome};
use crate::scenario::{capacity, fanout, latency, login_storm, open_loop, throughput, Options};
use crate::server::{Launch, Target};

#[derive(Debug, Parser)]
#[command(
    name = "chat-bench",
    version,
    about = "Load generator for chat servers: throughput, open-loop overload, latency, login storms, \
             fan-out, capacity.",
    after_help = "Examples:\n  \
        chat-bench smoke                                   # tiny sizes, our server, fails on any fault\n  \
        chat-bench throughput --server-bin target/release/chat-server \\\n      \
        --compare-cmd '../shared/peers/gopl-chat/run {addr}' --runs 3\n  \
        chat-bench fanout --addr 127.0.0.1:8000 --server-pid 1234 --users 10000\n  \
        chat-bench cluster --server-bin target/release/chat-server   # 1 node vs 3 on one Redis\n  \
        chat-bench throughput --nodes 3                     # any scenario on a 3-node cluster\n  \
        chat-bench open-loop --senders 1 --messages 100000 --users 101   # one client pipelining\n  \
        chat-bench login-storm --users 5000                 # the storm at default server flags"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    servers: Servers,
}

/// Which servers to measure. Without `--addr` or `--server-bin`, the
/// `chat-server` next to this binary is started for each run.
#[derive(Debug, Args)]
struct Servers {
    /// Address of a running server to measure.
    #[arg(long, global = true, conflicts_with = "server_bin")]
    addr: Option<String>,
    /// Its pid, to read its memory and CPU time from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// A `chat-server` binary to start fresh for each run.
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// Start a cluster instead: a `redis-server` and this many
    /// `chat-server --cluster` nodes on it, users spread round-robin over
    /// the nodes (0: one plain server). `--addr` also takes a
    /// comma-separated list of nodes.
    #[arg(long, global = true, default_value_t = 0, conflicts_with = "addr")]
    nodes: u32,
    /// The `redis-server` binary that `--nodes` and `cluster` start.
    #[arg(long, global = true, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// Extra flag for the started server (repeatable), e.g. --server-arg=--client-buffer=4096.
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// How to talk to the server.
    #[arg(long, global = true, value_enum, default_value = "chat")]
    proto: Dialect,
    /// Address of a second server to measure alternately, for ratios.
    #[arg(long, global = true, conflicts_with = "compare_cmd")]
    compare: Option<String>,
    /// The second server's pid, for its memory and CPU time.
    #[arg(long, global = true)]
    compare_pid: Option<u32>,
    /// A command line that starts the second server on `{addr}`, run fresh
    /// for each run, e.g. '../shared/peers/gopl-chat/run {addr}'.
    #[arg(long, global = true)]
    compare_cmd: Option<String>,
    /// How to talk to the second server.
    #[arg(long, global = true, value_enum, default_value = "raw")]
    compare_proto: Dialect,
    /// The second server's name in the results.
    #[arg(long, global = true, default_value = "gopl")]
    compare_label: String,
    /// Runs per server, alternating; the table shows medians.
    #[arg(long, global = true, default_value_t = 1)]
    runs: u32,
    /// Worker processes holding the users (0: one per 5 000 users).
    #[arg(long, global = true, default_value_t = 0)]
    workers: u32,
    /// Bound on each phase of a run (logins, barrier, messages).
    #[arg(long, global = true, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Senders as fast as they can, everyone receiving: deliveries/s.
    Throughput(throughput::Sizes),
    /// Senders pipeline all their messages at once, without waiting, and
    /// everyone reads flat out: fails on any lost frame or DROPPED; shows
    /// deliveries/s and how long the server held the senders back.
    OpenLoop(open_loop::Sizes),
    /// A steady rate: p50/p99/max send-to-receive latency.
    Latency(latency::Sizes),
    /// Everyone logs in at once: time until each has seen all arrivals.
    LoginStorm(login_storm::Sizes),
    /// Idle users, one message: time until each has it; RSS per user.
    Fanout(fanout::Sizes),
    /// As many users as descriptors allow, none refused, one broadcast.
    Capacity(capacity::Sizes),
    /// Throughput and latency on one plain server and on a cluster of
    /// `--nodes` nodes (default 3) on one Redis, same users.
    Cluster(ClusterSizes),
    /// Every scenario at its default size.
    All,
    /// Every scenario at tiny sizes; fails on any lost, duplicated,
    /// reordered or dropped message (for CI).
    Smoke,
    /// Internal: a process holding a share of the users.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        addr: String,
        #[arg(long, value_enum)]
        proto: Dialect,
        #[arg(long)]
        first: u32,
        #[arg(long)]
        count: u32,
        #[arg(long)]
        prefix: String,
    },
}

/// The sizes of the `cluster` comparison.
#[derive(Debug, Clone, Args)]
struct ClusterSizes {
    /// Users in the throughput run.
    #[arg(long, default_value_t = 100)]
    throughput_users: u32,
    /// Senders in the throughput run.
    #[arg(long, default_value_t = 10)]
    throughput_senders: u32,
    /// Messages per sender in the throughput run.
    #[arg(long, default_value_t = 2000)]
    throughput_messages: u64,
    /// Users in the latency run.
    #[arg(long, default_value_t = 300)]
    latency_users: u32,
    /// Senders in the latency run.
    #[arg(long, default_value_t = 2)]
    latency_senders: u32,
    /// Messages a second per sender in the latency run.
    #[arg(long, default_value_t = 50.0)]
    latency_rate: f64,
    /// How long the latency run's senders send.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    latency_duration: Duration,
}

impl ClusterSizes {
    fn jobs(&self) -> Vec<Job> {
        vec![
            Job::Throughput(throughput::Sizes {
                users: self.throughput_users,
                senders: self.throughput_senders,
                messages: self.throughput_messages,
                window: 64,
            }),
            Job::Latency(latency::Sizes {
                users: self.latency_users,
                senders: self.latency_senders,
                rate: self.latency_rate,
                duration: self.latency_duration,
            }),
        ]
    }
}

/// One scenario at one size.
#[derive(Debug, Clone)]
enum Job {
    Throughput(throughput::Sizes),
    OpenLoop(open_loop::Sizes),
    Latency(latency::Sizes),
    LoginStorm(login_storm::Sizes),
    Fanout(fanout::Sizes),
    Capacity(capacity::Sizes),
}

impl Job {
    fn name(&self) -> &'static str {
        match self {
            Job::Throughput(_) => "throughput",
            Job::OpenLoop(_) => "open-loop",
            Job::Latency(_) => "latency",
            Job::LoginStorm(_) => "login-storm",
            Job::Fanout(_) => "fanout",
            Job::Capacity(_) => "capacity",
        }
    }

    fn params(&self) -> String {
        match self {
            Job::Throughput(s) => s.params(),
            Job::OpenLoop(s) => s.params(),
            Job::Latency(s) => s.params(),
            Job::LoginStorm(s) => s.params(),
            Job::Fanout(s) => s.params(),
            Job::Capacity(s) => s.params(),
        }
    }

    async fn run(&self, target: &Target, options: &Options) -> io::Result<Outcome> {
        match self {
            Job::Throughput(s) => throughput::run(target, s, options).await,
            Job::OpenLoop(s) => open_loop::run(target, s, options).await,
            Job::Latency(s) => latency::run(target, s, options).await,
            Job::LoginStorm(s) => login_storm::run(target, s, options).await,
            Job::Fanout(s) => fanout::run(target, s, options).await,
            Job::Capacity(s) => capacity::run(target, s, options).await,
        }
    }

    /// Every scenario at its default size.
    fn all() -> Vec<Job> {
        let defaults = |args: &[&str]| Cli::parse_from(args.iter().copied()).scenario;
        let mut jobs = Vec::new();
        for name in [
            "throughput",
            "open-loop",
            "latency",
            "login-storm",
            "fanout",
            "capacity",
        ] {
            match defaults(&["chat-bench", name]) {
                Scenario::Throughput(s) => jobs.push(Job::Throughput(s)),
                Scenario::OpenLoop(s) => jobs.push(Job::OpenLoop(s)),
                Scenario::Latency(s) => jobs.push(Job::Latency(s)),
                Scenario::LoginStorm(s) => jobs.push(Job::LoginStorm(s)),
                Scenario::Fanout(s) => jobs.push(Job::Fanout(s)),
                Scenario::Capacity(s) => jobs.push(Job::Capacity(s)),
                _ => unreachable!("only scenarios are listed"),
            }
        }
        jobs
    }

    /// Every scenario small enough for CI: a few seconds in all.
    fn smoke() -> Vec<Job> {
        vec![
            Job::Throughput(throughput::Sizes {
                users: 20,
                senders: 4,
                messages: 500,
                window: 64,
            }),
            Job::Latency(latency::Sizes {
                users: 50,
                senders: 2,
                rate: 100.0,
                duration: Duration::from_millis(500),
            }),
            // Within our server's 1 024-frame backlog even if every frame
            // is in flight at once, so that a server which drops under
            // overload passes; the full-size run shows whether it does.
            Job::OpenLoop(open_loop::Sizes {
                users: 20,
                senders: 4,
                messages: 200,
            }),
            Job::LoginStorm(login_storm::Sizes { users: 100 }),
            Job::Fanout(fanout::Sizes { users: 200 }),
            Job::Capacity(capacity::Sizes { users: 500 }),
        ]
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let strict = matches!(cli.scenario, Scenario::Smoke);
    let cluster = matches!(cli.scenario, Scenario::Cluster(_));
    let jobs = match cli.scenario {
        Scenario::Worker {
            addr,
            proto,
            first,
            count,
            prefix,
        } => {
            let assignment = worker::Assignment {
                addr,
                dialect: proto,
                first,
                count,
                prefix,
            };
            return match worker::main(assignment) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("chat-bench worker: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Scenario::Throughput(s) => vec![Job::Throughput(s)],
        Scenario::OpenLoop(s) => vec![Job::OpenLoop(s)],
        Scenario::Latency(s) => vec![Job::Latency(s)],
        Scenario::LoginStorm(s) => vec![Job::LoginStorm(s)],
        Scenario::Fanout(s) => vec![Job::Fanout(s)],
        Scenario::Capacity(s) => vec![Job::Capacity(s)],
        Scenario::Cluster(s) => s.jobs(),
        Scenario::All => Job::all(),
        Scenario::Smoke => Job::smoke(),
    };
    let targets = match if cluster {
        cluster_targets(&cli.servers)
    } else {
        targets(&cli.servers)
    } {
        Ok(targets) => targets,
        Err(e) => {
            eprintln!("chat-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let options = Options {
        workers: cli.servers.workers,
        timeout: cli.servers.timeout,
        strict,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chat-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(&jobs, &targets, cli.servers.runs.max(1), &options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chat-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every job on every target, alternating; returns whether all passed.
async fn bench(jobs: &[Job], targets: &[Target], runs: u32, options: &Options) -> io::Result<bool> {
    let mut passed = true;
    let mut lines = Vec::new();
    for job in jobs {
        let mut sides: Vec<(String, Vec<Outcome>)> = targets
            .iter()
            .map(|t| (t.label.clone(), Vec::new()))
            .collect();
        for run in 1..=runs {
            for (target, side) in targets.iter().zip(&mut sides) {
                eprintln!(
                    "chat-bench: {} on {} (run {run}/{runs})",
                    job.name(),
                    target.label
                );
                side.1.push(job.run(target, options).await?);
            }
        }
        let comparison = Comparison {
            scenario: job.name(),
            params: job.params(),
            sides,
        };
        print!("{}", comparison.table());
        passed &= !comparison.failed();
        lines.push(comparison.json());
    }
    println!();
    for line in lines {
        println!("{line}");
    }
    Ok(passed)
}

/// The `chat-server` binary to start: `--server-bin`, or the one next to
/// this binary.
fn server_bin(servers: &Servers) -> io::Result<PathBuf> {
    if let Some(path) = &servers.server_bin {
        return Ok(path.clone());
    }
    let beside = std::env::current_exe()?.with_file_name("chat-server");
    if !beside.exists() {
        return Err(io::Error::other(
            "no server: give --addr or --server-bin (or build chat-server next to chat-bench)",
        ));
    }
    Ok(beside)
}

/// A cluster of `nodes` nodes of `path` on a fresh Redis.
fn cluster_launch(servers: &Servers, path: PathBuf, nodes: u32) -> Launch {
    Launch::Cluster {
        path,
        args: servers.server_args.clone(),
        nodes,
        redis: servers.redis_bin.clone(),
    }
}

/// For `cluster`: one plain server, then a cluster with as many users.
fn cluster_targets(servers: &Servers) -> io::Result<Vec<Target>> {
    if servers.addr.is_some() || servers.compare.is_some() || servers.compare_cmd.is_some() {
        return Err(io::Error::other(
            "cluster starts its own servers: give --server-bin (or none), not --addr or --compare",
        ));
    }
    let path = server_bin(servers)?;
    let nodes = if servers.nodes == 0 { 3 } else { servers.nodes };
    Ok(vec![
        Target {
            label: "1 node".into(),
            dialect: servers.proto,
            launch: Launch::Binary {
                path: path.clone(),
                args: servers.server_args.clone(),
            },
        },
        Target {
            label: format!("{nodes} nodes"),
            dialect: servers.proto,
            launch: cluster_launch(servers, path, nodes),
        },
    ])
}

/// The servers to measure, ours first.
fn targets(servers: &Servers) -> io::Result<Vec<Target>> {
    let ours = match &servers.addr {
        Some(addr) => Launch::Attach {
            addr: addr.clone(),
            pid: servers.server_pid,
        },
        None if servers.nodes > 0 => cluster_launch(servers, server_bin(servers)?, servers.nodes),
        None => Launch::Binary {
            path: server_bin(servers)?,
            args: servers.server_args.clone(),
        },
    };
    let mut targets = vec![Target {
        label: "ours".into(),
        dialect: servers.proto,
        launch: ours,
    }];
    let peer = match (&servers.compare, &servers.compare_cmd) {
        (Some(addr), _) => Some(Launch::Attach {
            addr: addr.clone(),
            pid: servers.compare_pid,
        }),
        (None, Some(line)) => Some(Launch::Command { line: line.clone() }),
        (None, None) => None,
    };
    if let Some(launch) = peer {
        targets.push(Target {
            label: servers.compare_label.clone(),
            dialect: servers.compare_proto,
            launch,
        });
    }
    Ok(targets)
}
