//! `chat-bench`: a load generator for line-protocol chat servers.
//!
//! It measures our `chat-server` (and, with `--compare`, a second server such
//! as the gopl seed in raw mode; with `--floor`, the machine's floor with no
//! chat server) on seven scenarios, rooms among them, checks every delivery
//! for loss,
//! duplication and order, and prints a table plus one JSON line per
//! scenario. The coordinating process holds no connections: it starts
//! workers (this binary again, `chat-bench worker`) that do.

mod check;
mod clock;
mod control;
mod dialect;
mod fleet;
mod floor;
mod proto;
mod raw;
mod report;
mod scenario;
mod server;
mod transport;
mod worker;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::dialect::Dialect;
use crate::report::{Comparison, Outcome};
use crate::scenario::{
    accounts, budgets, capacity, fanout, flood, hostile, latency, login_storm, open_loop, rooms,
    throughput, web, Options,
};
use crate::server::{Launch, Target};
use crate::transport::Transport;

#[derive(Debug, Parser)]
#[command(
    name = "chat-bench",
    version,
    about = "Load generator for chat servers: throughput, open-loop overload, latency, login storms, \
             fan-out, capacity, and the machine's floor for fan-out and latency; users over TCP \
             or WebSockets.",
    after_help = "Examples:\n  \
        chat-bench smoke                                   # tiny sizes, our server, fails on any fault\n  \
        chat-bench throughput --server-bin target/release/chat-server \\\n      \
        --compare-cmd '../shared/peers/gopl-chat/run {addr}' --runs 3\n  \
        chat-bench fanout --addr 127.0.0.1:8000 --server-pid 1234 --users 10000\n  \
        chat-bench cluster --server-bin target/release/chat-server   # 1 node vs 3 on one Redis\n  \
        chat-bench throughput --nodes 3                     # any scenario on a 3-node cluster\n  \
        chat-bench open-loop --senders 1 --messages 100000 --users 101   # one client pipelining\n  \
        chat-bench login-storm --users 5000                 # the storm at default server flags\n  \
        chat-bench floor                                    # fanout + latency: ours, the floor, ratios\n  \
        chat-bench rooms                                    # 1 000 rooms of 10 vs the lobby; isolation\n  \
        chat-bench fanout --users 2000 --floor              # any fanout/latency size against the floor\n  \
        chat-bench latency --transport ws                   # any scenario's users over WebSockets\n  \
        chat-bench web                                      # WebSocket vs TCP vs floor: issue 19's targets"
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
    /// How the bench's users reach our server: TCP, or a WebSocket on its
    /// web door (`ws://<web-addr>/ws`; a server the bench starts gets
    /// `--web-addr 127.0.0.1:0`). The users' own connections only: the
    /// floor, a --compare server and the side connections of hostile,
    /// accounts and flood speak TCP.
    #[arg(long, global = true, value_enum, default_value = "tcp")]
    transport: Transport,
    /// The web door of the server at --addr (its --web-addr), for
    /// --transport ws.
    #[arg(long, global = true, requires = "addr")]
    web_addr: Option<String>,
    /// Address of a second server to measure alternately, for ratios.
    #[arg(long, global = true, conflicts_with = "compare_cmd")]
    compare: Option<String>,
    /// Measure the machine's floor as the second side: no chat server, a
    /// process that only writes each message to every socket (one thread
    /// per core, one write per socket for what it has pending), read by the
    /// same workers. The ratio column is then ours as a multiple of the
    /// floor ("x floor"). For fanout, latency and capacity; for hostile,
    /// the floor's witnesses quiet and busy (it has no budgets to attack).
    #[arg(long, global = true, conflicts_with_all = ["compare", "compare_cmd"])]
    floor: bool,
    /// Threads of the floor's writer (0: one per core, as a server would
    /// use; 1: a single writer).
    #[arg(long, global = true, default_value_t = 0)]
    floor_threads: usize,
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
    /// Version 3: --users registered names log in at once with their
    /// passwords while --witnesses users time PING round trips: the
    /// storm's length, the witnesses' p99 against a quiet run, and the
    /// server's peak memory (only our server speaks version 3).
    Accounts(accounts::Sizes),
    /// Users chatting at a human rate, with and without one client
    /// pipelining MSGs (flood control on loopback): the humans' p50/p99/max
    /// both ways, and how many of the flood the server handled.
    Flood(flood::Sizes),
    /// The budgets under attack (--limits-on-loopback, each attack from
    /// its own 127.0.0.N): history fill, room squatting, ROOMS/WHO/HISTORY
    /// spam, a reconnect loop, a MSG flood and a metrics-port siege at
    /// once, while witnesses time PING round trips: their p99 against a
    /// quiet phase (target: 2x) and against a busy one (the traffic the
    /// attacks get through, from users who keep the rules), the server's
    /// RSS against the bound the budgets set and how soon it is back after,
    /// the metrics port's 64, and what each attack got through. --floor:
    /// the floor's witnesses quiet and busy beside ours.
    Hostile(hostile::Sizes),
    /// What the budgets cost at a normal load: throughput, latency and
    /// fan-out, the users spread over loopback addresses and within every
    /// default allowance, on our server with the budgets applied to them
    /// (--limits-on-loopback), on our server without, and on the floor;
    /// one table, ours with budgets as a multiple of each ("x off",
    /// "x floor").
    Budgets(budgets::Sizes),
    /// Throughput and latency on one plain server and on a cluster of
    /// `--nodes` nodes (default 3) on one Redis, same users.
    Cluster(ClusterSizes),
    /// The machine's floor for fan-out and latency: `fanout` to
    /// --fanout-users idle users and `latency` at the latency scenario's
    /// load, on our server and on the floor (no chat server: a process that
    /// only writes each message to every socket), alternating, with our
    /// figures as multiples of the floor's ("x floor"). --alone: the floor
    /// only.
    Floor(FloorSizes),
    /// Version 2 rooms: --users users in rooms of --room-size, every room
    /// chatting at once (`SAY`), each member checking its room's order and
    /// isolation; next to the lobby's `throughput` on the same server
    /// ("x lobby"), then the same room traffic (--isolation-rooms rooms)
    /// with few and with many users logged in ("x <few> users": server CPU
    /// per SAY should not grow). --alone: the rooms run only.
    Rooms(RoomsSizes),
    /// The web door against TCP on the same server build, in one
    /// invocation (issue 19): throughput with the users over WebSockets and
    /// over TCP (server CPU per delivery, target: WebSocket at most 1.5x
    /// TCP's), and one message to --fanout-users idle users over
    /// WebSockets, over TCP and on the floor (p99, "x floor"; server RSS
    /// per idle user, target: at most 8 KiB over WebSockets); then one
    /// table of the targets and whether each is met.
    Web(web::Sizes),
    /// Every scenario at its default size.
    All,
    /// Every scenario at tiny sizes; fails on any lost, duplicated,
    /// reordered or dropped message (for CI).
    Smoke,
    /// Internal: the floor's writer (see `floor`), in place of a server.
    #[command(hide = true)]
    FloorWriter {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        threads: usize,
    },
    /// Internal: a process holding a share of the users.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        addr: String,
        #[arg(long, value_enum)]
        proto: Dialect,
        #[arg(long, value_enum, default_value = "tcp")]
        transport: Transport,
        #[arg(long)]
        first: u32,
        #[arg(long)]
        count: u32,
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 0)]
        addresses: u32,
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
                rate: 0.0,
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

/// The sizes of the `floor` comparison.
#[derive(Debug, Clone, Args)]
struct FloorSizes {
    /// Idle users (sockets) the one message fans out to.
    #[arg(long, default_value_t = 10_000)]
    fanout_users: u32,
    /// Users in the latency run.
    #[arg(long, default_value_t = 1000)]
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
    /// Measure the floor only, without our server.
    #[arg(long)]
    alone: bool,
}

impl FloorSizes {
    fn jobs(&self) -> Vec<Job> {
        vec![
            Job::Fanout(fanout::Sizes {
                users: self.fanout_users,
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

/// The sizes of the `rooms` comparisons.
#[derive(Debug, Clone, Args)]
struct RoomsSizes {
    #[command(flatten)]
    rooms: rooms::Sizes,
    /// Users in the lobby `throughput` run next to it.
    #[arg(long, default_value_t = 100)]
    lobby_users: u32,
    /// Senders in the lobby run (its window is --window).
    #[arg(long, default_value_t = 10)]
    lobby_senders: u32,
    /// Messages per sender in the lobby run.
    #[arg(long, default_value_t = 2000)]
    lobby_messages: u64,
    /// Rooms that chat in the isolation runs (of --room-size, --senders).
    #[arg(long, default_value_t = 10)]
    isolation_rooms: u32,
    /// Users logged in for the first isolation run (the rooms' members).
    #[arg(long, default_value_t = 100)]
    isolation_few: u32,
    /// Users logged in for the second (the others idle in the lobby).
    #[arg(long, default_value_t = 10_000)]
    isolation_many: u32,
    /// Messages per sender in the isolation runs.
    #[arg(long, default_value_t = 2000)]
    isolation_messages: u64,
    /// The rooms run only: no lobby run, no isolation runs.
    #[arg(long)]
    alone: bool,
}

impl RoomsSizes {
    /// The comparisons, all on our server (`ours`).
    fn matches(&self, ours: &Target) -> Vec<Match> {
        let rooms = Job::Rooms(self.rooms.clone());
        if self.alone {
            return vec![Match::across(rooms, std::slice::from_ref(ours))];
        }
        let lobby = Job::Throughput(throughput::Sizes {
            users: self.lobby_users,
            senders: self.lobby_senders,
            messages: self.lobby_messages,
            window: self.rooms.window,
            rate: 0.0,
        });
        let isolation = |users| {
            let sizes = rooms::Sizes {
                users,
                rooms: self.isolation_rooms,
                messages: self.isolation_messages,
                ..self.rooms.clone()
            };
            (format!("{users} users"), Job::Rooms(sizes))
        };
        vec![
            Match::pair(
                "rooms",
                ("rooms".into(), rooms),
                ("lobby".into(), lobby),
                ours,
            ),
            Match::pair(
                "rooms-isolation",
                isolation(self.isolation_many),
                isolation(self.isolation_few),
                ours,
            ),
        ]
    }

    /// Small enough for CI.
    fn smoke() -> RoomsSizes {
        RoomsSizes {
            rooms: rooms::Sizes {
                users: 60,
                room_size: 10,
                rooms: 0,
                senders: 2,
                messages: 100,
                window: 64,
                rate: 0.0,
            },
            lobby_users: 20,
            lobby_senders: 4,
            lobby_messages: 500,
            isolation_rooms: 2,
            isolation_few: 20,
            isolation_many: 300,
            isolation_messages: 100,
            alone: false,
        }
    }
}

/// One table: its sides run alternately, each `--runs` times.
#[derive(Debug, Clone)]
struct Match {
    scenario: String,
    params: String,
    /// Each side's name in the table, what it runs, and on which server.
    sides: Vec<(String, Job, Target)>,
    /// The second side is a baseline that the first is a multiple of (see
    /// [`Comparison::baseline`]).
    baseline: Option<String>,
}

impl Match {
    /// `job` on each of `targets`; as a multiple of the floor if that is
    /// the second.
    fn across(job: Job, targets: &[Target]) -> Match {
        let against_floor = targets.len() == 2 && matches!(targets[1].launch, Launch::Floor { .. });
        Match {
            scenario: job.name().to_owned(),
            params: job.params(),
            sides: targets
                .iter()
                .map(|t| (t.label.clone(), job.clone(), t.clone()))
                .collect(),
            baseline: against_floor.then(|| "floor".to_owned()),
        }
    }

    /// Two jobs on one server, the first as a multiple of the second.
    fn pair(scenario: &str, first: (String, Job), second: (String, Job), target: &Target) -> Match {
        Match {
            scenario: scenario.to_owned(),
            params: format!(
                "{}: {}; {}: {}",
                first.0,
                first.1.params(),
                second.0,
                second.1.params()
            ),
            baseline: Some(second.0.clone()),
            sides: vec![
                (first.0, first.1, target.clone()),
                (second.0, second.1, target.clone()),
            ],
        }
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
    Rooms(rooms::Sizes),
    Flood(flood::Sizes),
    Accounts(accounts::Sizes),
    Hostile(hostile::Sizes),
    Budgets(budgets::Sizes),
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
            Job::Rooms(_) => "rooms",
            Job::Flood(_) => "flood",
            Job::Accounts(_) => "accounts",
            Job::Hostile(_) => "hostile",
            Job::Budgets(_) => "budgets",
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
            Job::Rooms(s) => s.params(),
            Job::Flood(s) => s.params(),
            Job::Accounts(s) => s.params(),
            Job::Hostile(s) => s.params(),
            Job::Budgets(s) => s.params(),
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
            Job::Rooms(s) => rooms::run(target, s, options).await,
            Job::Flood(s) => flood::run(target, s, options).await,
            Job::Accounts(s) => accounts::run(target, s, options).await,
            Job::Hostile(s) => hostile::run(target, s, options).await,
            Job::Budgets(s) => budgets::run(target, s, options).await,
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
            "flood",
        ] {
            match defaults(&["chat-bench", name]) {
                Scenario::Throughput(s) => jobs.push(Job::Throughput(s)),
                Scenario::OpenLoop(s) => jobs.push(Job::OpenLoop(s)),
                Scenario::Latency(s) => jobs.push(Job::Latency(s)),
                Scenario::LoginStorm(s) => jobs.push(Job::LoginStorm(s)),
                Scenario::Fanout(s) => jobs.push(Job::Fanout(s)),
                Scenario::Capacity(s) => jobs.push(Job::Capacity(s)),
                Scenario::Flood(s) => jobs.push(Job::Flood(s)),
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
                rate: 0.0,
            }),
            Job::Latency(latency::Sizes {
                users: 50,
                senders: 2,
                rate: 100.0,
                duration: Duration::from_millis(500),
            }),
            // Eight times the server's 1 024-frame backlog in flight at
            // once: a server that drops frames for readers that keep up,
            // instead of slowing the senders, fails here.
            Job::OpenLoop(open_loop::Sizes {
                users: 20,
                senders: 4,
                messages: 2_000,
            }),
            Job::LoginStorm(login_storm::Sizes { users: 100 }),
            Job::Accounts(accounts::Sizes {
                users: 20,
                witnesses: 2,
            }),
            Job::Fanout(fanout::Sizes { users: 200 }),
            // The five attacks at once, small: about 3.5 s.
            Job::Hostile(hostile::Sizes {
                witnesses: 2,
                quiet: Duration::from_secs(1),
                busy: Duration::from_secs(1),
                busy_members: 8,
                hostile: Duration::from_secs(2),
                ping_every: Duration::from_millis(250),
                fillers: 1,
                fill_users: 2,
                fill_rooms: 4,
                squatters: 4,
                spammers: 2,
                flooders: 4,
                metrics_conns: 80,
                history_mib: 64,
            }),
            Job::Capacity(capacity::Sizes { users: 500 }),
            // Three messages a user (and a login, a PING): within the
            // default flood burst of 10, which the flooder is far over.
            Job::Flood(flood::Sizes {
                users: 10,
                interval: Duration::from_millis(200),
                duration: Duration::from_millis(600),
                flood: 2000,
            }),
        ]
    }

    /// The floor comparison, small enough for CI.
    fn smoke_floor() -> Vec<Job> {
        FloorSizes {
            fanout_users: 200,
            latency_users: 50,
            latency_senders: 2,
            latency_rate: 100.0,
            latency_duration: Duration::from_millis(500),
            alone: false,
        }
        .jobs()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let strict = matches!(cli.scenario, Scenario::Smoke);
    if cli.servers.transport == Transport::Ws && cli.servers.proto != Dialect::Chat {
        eprintln!("chat-bench: --transport ws speaks our protocol: no --proto raw");
        return ExitCode::from(2);
    }
    let shape = match &cli.scenario {
        Scenario::Fanout(_)
        | Scenario::Latency(_)
        | Scenario::Capacity(_)
        | Scenario::Hostile(_) => Shape::Plain,
        Scenario::Floor(s) => Shape::Floor { alone: s.alone },
        _ if cli.servers.floor => {
            eprintln!(
                "chat-bench: --floor goes with fanout, latency, capacity and hostile (or use \
                 `floor`)"
            );
            return ExitCode::from(2);
        }
        Scenario::Rooms(_)
            if cli.servers.compare.is_some() || cli.servers.compare_cmd.is_some() =>
        {
            eprintln!("chat-bench: rooms run on our server only, next to its own lobby");
            return ExitCode::from(2);
        }
        Scenario::Rooms(s) => Shape::Rooms(s.clone()),
        Scenario::Web(_)
            if cli.servers.compare.is_some()
                || cli.servers.compare_cmd.is_some()
                || cli.servers.proto != Dialect::Chat =>
        {
            eprintln!(
                "chat-bench: web runs on our server only (its WebSocket and TCP users), \
                 and the floor: no --compare, no --proto raw"
            );
            return ExitCode::from(2);
        }
        Scenario::Web(s) => Shape::Web(s.clone()),
        Scenario::Cluster(_) => Shape::Cluster,
        Scenario::Budgets(_) => Shape::Budgets,
        Scenario::All => Shape::All,
        Scenario::Smoke => Shape::Smoke,
        _ => Shape::Plain,
    };
    let jobs = match cli.scenario {
        Scenario::Worker {
            addr,
            proto,
            transport,
            first,
            count,
            prefix,
            addresses,
        } => {
            let assignment = worker::Assignment {
                addr,
                dialect: proto,
                transport,
                first,
                count,
                prefix,
                addresses,
            };
            return match worker::main(assignment) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("chat-bench worker: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Scenario::FloorWriter { addr, threads } => {
            return match floor::main(&addr, threads) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("chat-bench floor-writer: {e}");
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
        Scenario::Flood(s) => vec![Job::Flood(s)],
        Scenario::Accounts(s) => vec![Job::Accounts(s)],
        Scenario::Hostile(s) => vec![Job::Hostile(s)],
        Scenario::Budgets(s) => vec![Job::Budgets(s)],
        Scenario::Cluster(s) => s.jobs(),
        Scenario::Floor(s) => s.jobs(),
        Scenario::Rooms(_) | Scenario::Web(_) => Vec::new(),
        Scenario::All => Job::all(),
        Scenario::Smoke => Job::smoke(),
    };
    let matches = match matches(&cli.servers, shape, jobs) {
        Ok(matches) => matches,
        Err(e) => {
            eprintln!("chat-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let options = Options {
        workers: cli.servers.workers,
        timeout: cli.servers.timeout,
        strict,
        users_per_address: 0,
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
    let (passed, comparisons) =
        match runtime.block_on(bench(&matches, cli.servers.runs.max(1), &options)) {
            Ok(done) => done,
            Err(e) => {
                eprintln!("chat-bench: {e}");
                return ExitCode::FAILURE;
            }
        };
    let verdict = web::verdict(&comparisons);
    if let Some((table, _)) = &verdict {
        print!("{table}");
    }
    println!();
    for comparison in &comparisons {
        println!("{}", comparison.json());
    }
    if let Some((_, json)) = &verdict {
        println!("{json}");
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Which servers a command measures.
#[derive(Debug, Clone)]
enum Shape {
    /// Ours, and the peer or the floor if asked for.
    Plain,
    /// One plain server, then a cluster.
    Cluster,
    /// Ours and the floor, or the floor alone.
    Floor { alone: bool },
    /// Ours: rooms, next to the lobby and with few and many users.
    Rooms(RoomsSizes),
    /// Ours with the budgets on loopback, ours without, the floor.
    Budgets,
    /// Ours with WebSocket users and with TCP users, and the floor.
    Web(web::Sizes),
    /// Ours (and the peer): every scenario; then the rooms on ours.
    All,
    /// Ours (and the peer): every scenario; then ours and the floor, and
    /// the rooms on ours.
    Smoke,
}

/// The tables to make: the jobs, each with the servers it runs on.
fn matches(servers: &Servers, shape: Shape, jobs: Vec<Job>) -> io::Result<Vec<Match>> {
    let across = |jobs: Vec<Job>, targets: &[Target]| -> Vec<Match> {
        jobs.into_iter()
            .map(|job| Match::across(job, targets))
            .collect()
    };
    Ok(match shape {
        Shape::Plain => across(jobs, &targets(servers, servers.floor)?),
        Shape::Cluster => across(jobs, &cluster_targets(servers)?),
        Shape::Floor { alone: true } => across(jobs, &[floor_target(servers)]),
        Shape::Floor { alone: false } => across(jobs, &targets(servers, true)?),
        Shape::Rooms(sizes) => sizes.matches(&targets(servers, false)?[0]),
        Shape::Web(sizes) => web_matches(servers, &sizes)?,
        Shape::Budgets => {
            let targets = budgets_targets(servers)?;
            jobs.into_iter()
                .map(|job| Match {
                    baseline: Some("off".into()),
                    ..Match::across(job, &targets)
                })
                .collect()
        }
        Shape::All => {
            let all = targets(servers, false)?;
            let mut matches = across(jobs, &all);
            matches.extend(rooms_defaults().matches(&all[0]));
            matches
        }
        Shape::Smoke => {
            let all = targets(servers, false)?;
            let floor = [all[0].clone(), floor_target(servers)];
            let mut matches = across(jobs, &all);
            matches.extend(across(Job::smoke_floor(), &floor));
            if servers.nodes > 0 || servers.proto != Dialect::Chat {
                eprintln!(
                    "chat-bench: smoke without rooms and the web door \
                     (not served in cluster mode or raw)"
                );
            } else {
                matches.extend(RoomsSizes::smoke().matches(&all[0]));
                matches.extend(web_matches(servers, &web::Sizes::smoke())?);
            }
            matches
        }
    })
}

/// The `web` comparisons: throughput on our server with WebSocket users
/// and with TCP users, fan-out on both and on the floor; WebSocket's
/// figures as multiples of the others' ("x tcp", "x floor").
fn web_matches(servers: &Servers, sizes: &web::Sizes) -> io::Result<Vec<Match>> {
    let ours = targets(servers, false)?.swap_remove(0);
    let side = |label: &str, transport| Target {
        label: label.into(),
        transport,
        ..ours.clone()
    };
    let (ws, tcp) = (side("ws", Transport::Ws), side("tcp", Transport::Tcp));
    let table = |scenario: &str, job: Job, targets: &[Target]| Match {
        scenario: scenario.into(),
        baseline: Some("tcp".into()),
        ..Match::across(job, targets)
    };
    Ok(vec![
        table(
            web::THROUGHPUT,
            Job::Throughput(sizes.throughput()),
            &[ws.clone(), tcp.clone()],
        ),
        table(
            web::FANOUT,
            Job::Fanout(sizes.fanout()),
            &[ws, tcp, floor_target(servers)],
        ),
    ])
}

/// The `rooms` comparisons at their default sizes.
fn rooms_defaults() -> RoomsSizes {
    match Cli::parse_from(["chat-bench", "rooms"]).scenario {
        Scenario::Rooms(sizes) => sizes,
        _ => unreachable!("parsed as rooms"),
    }
}

/// Runs the sides of every match alternately, printing each table as it is
/// done; returns whether all passed, and the comparisons.
async fn bench<'a>(
    matches: &'a [Match],
    runs: u32,
    options: &Options,
) -> io::Result<(bool, Vec<Comparison<'a>>)> {
    let mut passed = true;
    let mut comparisons = Vec::new();
    for m in matches {
        let mut sides: Vec<(String, Vec<Outcome>)> = m
            .sides
            .iter()
            .map(|(label, _, _)| (label.clone(), Vec::new()))
            .collect();
        for run in 1..=runs {
            for ((_, job, target), side) in m.sides.iter().zip(&mut sides) {
                eprintln!(
                    "chat-bench: {} ({}) on {} (run {run}/{runs})",
                    job.name(),
                    job.params(),
                    target.label
                );
                side.1.push(job.run(target, options).await?);
            }
        }
        let comparison = Comparison {
            scenario: &m.scenario,
            params: m.params.clone(),
            sides,
            baseline: m.baseline.clone(),
        };
        print!("{}", comparison.table());
        passed &= !comparison.failed();
        comparisons.push(comparison);
    }
    Ok((passed, comparisons))
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
            transport: servers.transport,
            launch: Launch::Binary {
                path: path.clone(),
                args: servers.server_args.clone(),
            },
        },
        Target {
            label: format!("{nodes} nodes"),
            dialect: servers.proto,
            transport: servers.transport,
            launch: cluster_launch(servers, path, nodes),
        },
    ])
}

/// For `budgets`: our server with the budgets applied to loopback
/// clients, the same without, and the floor.
fn budgets_targets(servers: &Servers) -> io::Result<Vec<Target>> {
    if servers.addr.is_some() || servers.compare.is_some() || servers.compare_cmd.is_some() {
        return Err(io::Error::other(
            "budgets starts its own servers, with and without --limits-on-loopback: \
             give --server-bin (or none), not --addr or --compare",
        ));
    }
    if servers.nodes > 0 || servers.proto != Dialect::Chat {
        return Err(io::Error::other(
            "budgets measures one chat-server (the per-address budgets are a single \
             server's): no --nodes, no --proto raw",
        ));
    }
    let path = server_bin(servers)?;
    let mut on = servers.server_args.clone();
    on.push("--limits-on-loopback".into());
    let ours = |label: &str, args: Vec<String>| Target {
        label: label.into(),
        dialect: Dialect::Chat,
        transport: servers.transport,
        launch: Launch::Binary {
            path: path.clone(),
            args,
        },
    };
    Ok(vec![
        ours("on", on),
        ours("off", servers.server_args.clone()),
        floor_target(servers),
    ])
}

/// The floor (see [`floor`]) as a side.
fn floor_target(servers: &Servers) -> Target {
    Target {
        label: "floor".into(),
        dialect: Dialect::Chat,
        transport: Transport::Tcp,
        launch: Launch::Floor {
            threads: servers.floor_threads,
        },
    }
}

/// The servers to measure, ours first; the floor second with `floor`.
fn targets(servers: &Servers, floor: bool) -> io::Result<Vec<Target>> {
    if floor && (servers.compare.is_some() || servers.compare_cmd.is_some()) {
        return Err(io::Error::other(
            "the floor takes the second side: give no --compare or --compare-cmd",
        ));
    }
    let ours = match &servers.addr {
        Some(addr) => Launch::Attach {
            addr: addr.clone(),
            pid: servers.server_pid,
            web: servers.web_addr.clone(),
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
        transport: servers.transport,
        launch: ours,
    }];
    let peer = match (&servers.compare, &servers.compare_cmd) {
        (Some(addr), _) => Some(Launch::Attach {
            addr: addr.clone(),
            pid: servers.compare_pid,
            web: None,
        }),
        (None, Some(line)) => Some(Launch::Command { line: line.clone() }),
        (None, None) => None,
    };
    if let Some(launch) = peer {
        targets.push(Target {
            label: servers.compare_label.clone(),
            dialect: servers.compare_proto,
            transport: Transport::Tcp,
            launch,
        });
    }
    if floor {
        targets.push(floor_target(servers));
    }
    Ok(targets)
}
