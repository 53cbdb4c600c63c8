//! The servers under test: attached to by address, or started fresh for each
//! run (our binary, or any command line such as the gopl peer's script), so
//! that one run's leftovers (memory, departures) never skew the next.

use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout, Instant};

use crate::dialect::Dialect;
use crate::transport::Transport;

/// Time a freshly started server has to start listening (the gopl peer's
/// script may compile it first).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// How to get a server to measure.
#[derive(Debug, Clone)]
pub enum Launch {
    /// Already running at this address; its pid, if given, is read for RSS;
    /// its web door's address, if given, is where WebSocket users go.
    Attach {
        addr: String,
        pid: Option<u32>,
        web: Option<String>,
    },
    /// `chat-server`, started on a free port; it prints `listening on <addr>`
    /// (and, for WebSocket users, started with `--web-addr 127.0.0.1:0`,
    /// `listening for HTTP on <addr>`).
    Binary { path: PathBuf, args: Vec<String> },
    /// A command line whose `{addr}` is replaced by a free loopback address;
    /// ready once that address accepts connections.
    Command { line: String },
    /// A `redis-server` on a free loopback port and `nodes` `chat-server`s
    /// in cluster mode on it; users are spread round-robin over the nodes.
    Cluster {
        path: PathBuf,
        args: Vec<String>,
        nodes: u32,
        redis: PathBuf,
    },
    /// No chat server: this binary's `floor-writer` with `threads` threads
    /// (0: one per core), which only writes each message to every socket
    /// (see [`crate::floor`]).
    Floor { threads: usize },
}

/// A server under test, with the name it has in the results.
#[derive(Debug, Clone)]
pub struct Target {
    pub label: String,
    pub dialect: Dialect,
    /// How the bench's users (the workers') reach it.
    pub transport: Transport,
    pub launch: Launch,
}

/// A server (or a cluster's nodes) up for one run.
pub struct Running {
    /// Its address; a cluster's node addresses separated by commas.
    pub addr: String,
    /// The server's pid, or every node's: their CPU and memory add up.
    pub pids: Vec<u32>,
    /// A cluster's `redis-server`, measured apart.
    pub redis_pid: Option<u32>,
    /// Where a server started with `--metrics` serves them (`metrics on
    /// <addr>` on its stdout).
    pub metrics: Option<String>,
    /// Its web door (`listening for HTTP on <addr>`), if it has one; a
    /// cluster's nodes' separated by commas, in the order of `addr`'s.
    pub web: Option<String>,
    /// How the bench's users reach it: at `addr` or at `web`.
    pub transport: Transport,
    children: Vec<Child>,
}

impl Target {
    /// Makes the server ready for a run of `users` users.
    pub async fn start(&self, users: u32) -> io::Result<Running> {
        let web = self.transport == Transport::Ws;
        let mut running = match &self.launch {
            Launch::Attach { addr, pid, web } => Running {
                addr: addr.clone(),
                pids: pid.iter().copied().collect(),
                redis_pid: None,
                metrics: None,
                web: web.clone(),
                transport: Transport::Tcp,
                children: Vec::new(),
            },
            Launch::Binary { path, args } => start_binary(path, args, users, web).await?,
            Launch::Command { line } => start_command(line).await?,
            Launch::Cluster {
                path,
                args,
                nodes,
                redis,
            } => start_cluster(path, args, *nodes, redis, users, web).await?,
            Launch::Floor { threads } => {
                let mut command = Command::new(std::env::current_exe()?);
                command
                    .args(["floor-writer", "--addr", "127.0.0.1:0"])
                    .args(["--threads", &threads.to_string()]);
                listening(command, "chat-bench floor-writer", false, false).await?
            }
        };
        if web && running.web.is_none() {
            running.stop().await;
            return Err(io::Error::other(format!(
                "{}: WebSocket users need a web door: the bench starts chat-server with \
                 --web-addr itself; for a running one, give --web-addr (the floor and \
                 --compare servers speak TCP only)",
                self.label
            )));
        }
        running.transport = self.transport;
        Ok(running)
    }
}

async fn start_binary(
    path: &PathBuf,
    args: &[String],
    users: u32,
    web: bool,
) -> io::Result<Running> {
    let max_clients = (users + 64).max(10_000);
    let mut command = Command::new(path);
    command
        .args(["--addr", "127.0.0.1:0"])
        .args(["--max-clients", &max_clients.to_string()]);
    // In memory unless a data directory is asked for: runs must not share
    // (or be refused) one directory.
    if !args
        .iter()
        .any(|a| a.starts_with("--data-dir") || a == "--ephemeral")
    {
        command.arg("--ephemeral");
    }
    let given = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    // The web door on a free port, unless the flags already name one.
    let web = web || given("--web-addr");
    if web && !given("--web-addr") {
        command.args(["--web-addr", "127.0.0.1:0"]);
    }
    command.args(args);
    let metrics = given("--metrics");
    listening(command, &path.display().to_string(), metrics, web).await
}

/// Starts `command`, a server that says `listening on <addr>` first, and
/// then, with `metrics`, `metrics on <addr>`, and with `web`, `listening
/// for HTTP on <addr>` (in either order, among other lines).
async fn listening(
    mut command: Command,
    what: &str,
    metrics: bool,
    web: bool,
) -> io::Result<Running> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {what}: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = timeout(START_TIMEOUT, lines.next_line())
        .await
        .map_err(|_| io::Error::other("the server did not say where it listens"))??
        .unwrap_or_default();
    let addr = first
        .strip_prefix("listening on ")
        .ok_or_else(|| {
            io::Error::other(format!(
                "{what} did not say where it listens (first line {first:?}); \
                 run it by hand to see its errors"
            ))
        })?
        .to_owned();
    let (mut metrics_addr, mut web_addr) = (None, None);
    while (metrics && metrics_addr.is_none()) || (web && web_addr.is_none()) {
        let wanted = match (metrics && metrics_addr.is_none(), web && web_addr.is_none()) {
            (true, true) => "`metrics on` and `listening for HTTP on`",
            (true, false) => "`metrics on`",
            _ => "`listening for HTTP on`",
        };
        let line = timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| io::Error::other(format!("{what} did not say {wanted} in time")))??
            .ok_or_else(|| io::Error::other(format!("{what} never said {wanted}")))?;
        if let Some(found) = line.strip_prefix("metrics on ") {
            metrics_addr = Some(found.to_owned());
        }
        if let Some(found) = line.strip_prefix("listening for HTTP on ") {
            web_addr = Some(found.to_owned());
        }
    }
    Ok(Running {
        addr,
        pids: child.id().into_iter().collect(),
        redis_pid: None,
        metrics: metrics_addr,
        web: web_addr,
        transport: Transport::Tcp,
        children: vec![child],
    })
}

/// Starts `redis-server` on a free loopback port, then `nodes` cluster nodes
/// on it, and waits until every node lets users in (a node answers
/// `ERROR unavailable` until it has joined).
async fn start_cluster(
    path: &PathBuf,
    args: &[String],
    nodes: u32,
    redis: &PathBuf,
    users: u32,
    web: bool,
) -> io::Result<Running> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let redis_child = Command::new(redis)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", redis.display())))?;
    let redis_addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&redis_addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{} never listened on {redis_addr}",
                redis.display()
            )));
        }
        sleep(Duration::from_millis(20)).await;
    }
    let mut running = Running {
        addr: String::new(),
        pids: Vec::new(),
        redis_pid: redis_child.id(),
        metrics: None,
        web: None,
        transport: Transport::Tcp,
        children: vec![redis_child],
    };
    let (mut addrs, mut webs) = (Vec::new(), Vec::new());
    for n in 1..=nodes.max(1) {
        let mut node_args = vec![
            "--cluster".to_owned(),
            format!("redis://{redis_addr}"),
            "--node-id".to_owned(),
            format!("n{n}"),
        ];
        node_args.extend(args.iter().cloned());
        let node = start_binary(path, &node_args, users, web).await?;
        addrs.push(node.addr.clone());
        webs.extend(node.web.clone());
        running.pids.extend(node.pids.iter().copied());
        running.children.extend(node.children);
    }
    for addr in &addrs {
        wait_joined(addr).await?;
    }
    running.addr = addrs.join(",");
    running.web = (web && webs.len() == addrs.len()).then(|| webs.join(","));
    Ok(running)
}

/// Logs a probe user in until the node stops answering `ERROR unavailable`.
async fn wait_joined(addr: &str) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let deadline = Instant::now() + Duration::from_secs(10);
    for attempt in 0u32.. {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(
                crate::proto::login(&format!("ready{attempt}_{}", std::process::id())).as_bytes(),
            )
            .await?;
        let line = timeout(
            Duration::from_secs(2),
            BufReader::new(read).lines().next_line(),
        )
        .await
        .map_err(|_| io::Error::other(format!("{addr} did not answer a login")))??
        .unwrap_or_default();
        if !line.contains("unavailable") {
            // Let the probe's departure go through before the run starts.
            drop(write);
            sleep(Duration::from_millis(50)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    Err(io::Error::other(format!("{addr} never joined its cluster")))
}

async fn start_command(line: &str) -> io::Result<Running> {
    // Ask the kernel for a free port; the command binds it right after.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let line = line.replace("{addr}", &addr);
    let mut words = line.split_whitespace();
    let program = words
        .next()
        .ok_or_else(|| io::Error::other("empty --compare-cmd"))?;
    let mut child = Command::new(program)
        .args(words)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {program}: {e}")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!("{line:?} exited: {status}")));
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{line:?} never listened on {addr}"
            )));
        }
        sleep(Duration::from_millis(100)).await;
    }
    // Let the probe's departure go through before the run starts.
    sleep(Duration::from_millis(100)).await;
    Ok(Running {
        addr,
        pids: child.id().into_iter().collect(),
        redis_pid: None,
        metrics: None,
        web: None,
        transport: Transport::Tcp,
        children: vec![child],
    })
}

impl Running {
    /// Where the bench's users connect: `addr`, or the web door's with
    /// WebSockets (a cluster's, comma-separated).
    pub fn users_addr(&self) -> &str {
        match (self.transport, &self.web) {
            (Transport::Ws, Some(web)) => web,
            _ => &self.addr,
        }
    }

    /// The server's resident memory (`VmRSS`), KiB; summed over a
    /// cluster's nodes.
    pub fn rss_kib(&self) -> Option<u64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&pid| rss_kib(pid)).sum()
    }

    /// CPU time the server's threads have used so far, ns; summed over a
    /// cluster's nodes.
    pub fn cpu_ns(&self) -> Option<u64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&pid| cpu_ns(pid)).sum()
    }

    /// CPU time a cluster's `redis-server` has used so far, ns.
    pub fn redis_cpu_ns(&self) -> Option<u64> {
        cpu_ns(self.redis_pid?)
    }

    /// Stops a server this bench started; leaves an attached one alone.
    pub async fn stop(self) {
        for mut child in self.children {
            let _ = child.kill().await;
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time process `pid`'s threads have used so far, ns: the first field of
/// each thread's `schedstat` (nanosecond resolution, unlike `stat`'s ticks).
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}
