//! The end-to-end test harness: real binaries, real sockets.
//!
//! [`Server`] starts the `chat-server` binary on a free loopback port and
//! stops it when dropped; [`Client`] is a raw TCP line client that asserts
//! exact frames. Waits are bounded by [`TIMEOUT`]; tests synchronise with
//! `PING`/`PONG` ([`Client::barrier`]), never with sleeps.

pub mod cluster;
pub mod history;

pub mod cases;
pub mod fuzz;
pub mod probe;
pub mod rng;
pub mod tty;
pub mod wire;
pub mod witness;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// The longest any single expected event may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The path of a workspace binary, built first so tests never run a stale one.
///
/// `cargo test` only builds the binaries of the package under test, and these
/// belong to other packages, so the harness asks cargo to build the one it
/// needs into the same target directory and profile as the running test.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    // <target>/<profile>/deps/<test executable>
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in <target>/<profile>/deps");
    let path = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let profile = match profile_dir.file_name().and_then(|p| p.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let target_dir = profile_dir.parent().expect("target directory");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--profile", profile, "--bin", name])
            .arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", target_dir);
        // `cargo test` runs this test with the variables it sets for the
        // package under test (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). Some
        // build scripts ask to be rerun when those change (ring's does), so
        // the inner build must not see them: with them, it and the next
        // `cargo test` would each redo ring and all that sits on it.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(set_by_cargo_for_the_test) {
                cargo.env_remove(key);
            }
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
        built.push(name.to_owned());
    }
    path
}

/// Whether `cargo test` sets the variable for the test it runs, rather
/// than it coming from the environment `cargo test` itself was run in.
fn set_by_cargo_for_the_test(key: &str) -> bool {
    matches!(
        key,
        "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_MANIFEST_LINKS"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "CARGO_TARGET_TMPDIR"
            | "CARGO_RUSTC_CURRENT_DIR"
            | "OUT_DIR"
    ) || key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_BIN_EXE_")
}

/// The text a caught panic carried, for reports that go on after it.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// A running `chat-server`, killed when dropped.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    /// The server's own Redis, when it runs as a one-node cluster.
    _redis: Option<cluster::Redis>,
}

impl Server {
    /// Starts the server on a free loopback port with extra flags.
    pub fn start(args: &[&str]) -> Server {
        Server::start_in(args, true)
    }

    /// Starts a single server even when `CHAT_TEST_CLUSTER` asks suites
    /// for clusters: for what only a single server does so far.
    pub fn single(args: &[&str]) -> Server {
        Server::start_in(args, false)
    }

    fn start_in(args: &[&str], cluster_if_asked: bool) -> Server {
        let mut command = Command::new(binary("chat-server"));
        command.args(["--addr", "127.0.0.1:0"]).args(args);
        // Each server keeps its state in memory unless the test gives it a
        // data directory: many run at once, and none may touch `chat-data`.
        if !args
            .iter()
            .any(|a| matches!(*a, "--data-dir" | "--ephemeral"))
        {
            command.arg("--ephemeral");
        }
        // With CHAT_TEST_CLUSTER set, every server of a suite that does not
        // choose its mode runs as a one-node cluster on a Redis of its own,
        // so the suite checks the cluster's path of every request.
        let redis = (cluster_if_asked
            && std::env::var_os("CHAT_TEST_CLUSTER").is_some()
            && !args.contains(&"--cluster"))
        .then(|| {
            let redis = cluster::Redis::start();
            command.args(["--cluster", &redis.url(), "--lease", "2s"]);
            redis
        });
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        if std::env::var_os("CHAT_TEST_LOG").is_none() {
            command.stderr(Stdio::null());
        }
        let mut child = command.spawn().expect("spawn chat-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read the server's first line");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        Server {
            child,
            addr,
            _redis: redis,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Connects a raw client.
    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Connects and logs in as `name`, consuming `WELCOME` and `NAMES`;
    /// returns the client and the names listed.
    pub async fn login(&self, name: &str) -> (Client, Vec<String>) {
        let mut client = self.connect().await;
        let names = client.login(name).await;
        (client, names)
    }

    /// Logs in as `name` and returns just the client.
    pub async fn user(&self, name: &str) -> Client {
        self.login(name).await.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw line client that asserts what the server sends.
pub struct Client {
    reader: AsyncBufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Client::from_stream(stream)
    }

    /// Connects with a tiny receive buffer, so that a client that stops
    /// reading backs up into the server at once instead of into the kernel.
    pub async fn connect_small_buffer(addr: SocketAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(2048).expect("SO_RCVBUF");
        let stream = tokio::time::timeout(TIMEOUT, socket.connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Client::from_stream(stream)
    }

    /// Connects from the loopback address `source` (127.0.0.x), so that a
    /// test can be several addresses at once (with `--limits-on-loopback`).
    pub async fn connect_from(addr: SocketAddr, source: std::net::Ipv4Addr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source.into(), 0))
            .expect("bind the source address");
        let stream = tokio::time::timeout(TIMEOUT, socket.connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Client::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Client {
        let (read, writer) = stream.into_split();
        Client {
            reader: AsyncBufReader::new(read),
            writer,
        }
    }

    /// Logs in on this connection, consuming `WELCOME` and `NAMES`; returns
    /// the names listed.
    pub async fn login(&mut self, name: &str) -> Vec<String> {
        self.send(&format!("NAME {name}")).await;
        self.expect(&format!("WELCOME {name}")).await;
        names_listed(&self.recv().await)
    }

    /// Sends one line; the `\n` is added.
    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes()).await;
    }

    /// Sends bytes exactly as given.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("send");
    }

    /// Sends `bytes` while reading, and returns the next `count` lines: a
    /// client that reads while it writes, as any real one does.
    pub async fn send_and_collect(&mut self, bytes: &[u8], count: usize) -> Vec<String> {
        let writer = &mut self.writer;
        let send = async move { writer.write_all(bytes).await.expect("send") };
        let reader = &mut self.reader;
        let collect = async move {
            let mut lines = Vec::with_capacity(count);
            let mut line = Vec::new();
            while lines.len() < count {
                line.clear();
                let n = tokio::time::timeout(TIMEOUT, reader.read_until(b'\n', &mut line))
                    .await
                    .expect("timed out waiting for a line")
                    .expect("read");
                assert!(n > 0, "connection closed after {} lines", lines.len());
                line.pop();
                lines.push(String::from_utf8(line.clone()).expect("UTF-8"));
            }
            lines
        };
        tokio::join!(send, collect).1
    }

    /// The next line, without its `\n`, or `None` at end of stream.
    pub async fn try_recv(&mut self) -> Option<String> {
        let mut line = Vec::new();
        let n = tokio::time::timeout(TIMEOUT, self.reader.read_until(b'\n', &mut line))
            .await
            .expect("timed out waiting for a line")
            .ok()?;
        if n == 0 {
            return None;
        }
        assert_eq!(line.pop(), Some(b'\n'), "line without \\n: {line:?}");
        Some(String::from_utf8(line).expect("server lines are UTF-8"))
    }

    /// The next line; panics at end of stream.
    pub async fn recv(&mut self) -> String {
        self.try_recv()
            .await
            .expect("connection closed, expected a line")
    }

    /// Asserts the next line.
    pub async fn expect(&mut self, line: &str) {
        assert_eq!(self.recv().await, line);
    }

    /// Asserts the next line starts with `prefix` (for `ERROR <code>` with any detail).
    pub async fn expect_prefix(&mut self, prefix: &str) -> String {
        let line = self.recv().await;
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}…, got {line:?}"
        );
        line
    }

    /// Asserts an `ERROR <code>` frame comes next.
    pub async fn expect_error(&mut self, code: &str) {
        let line = self.recv().await;
        let got = line
            .strip_prefix("ERROR ")
            .and_then(|r| r.split(' ').next());
        assert_eq!(got, Some(code), "expected ERROR {code}, got {line:?}");
    }

    /// Asserts the server closes the connection next, in order: end of
    /// stream after everything it sent. A reset is not a close: it can
    /// throw away frames the server sent before it, so it fails here.
    pub async fn expect_closed(&mut self) {
        let mut line = Vec::new();
        let read = tokio::time::timeout(TIMEOUT, self.reader.read_until(b'\n', &mut line))
            .await
            .expect("timed out waiting for the connection to close");
        match read {
            Ok(0) => {}
            Ok(_) => panic!(
                "expected the connection to close, got {:?}",
                String::from_utf8_lossy(&line)
            ),
            Err(e) => panic!("expected an orderly close (end of stream), got an error: {e}"),
        }
    }

    /// Sends `PING <unique token>` and returns every line before its `PONG`:
    /// what the server sent in answer to earlier frames.
    pub async fn barrier(&mut self) -> Vec<String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let token = format!("barrier-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.send(&format!("PING {token}")).await;
        self.recv_until(&format!("PONG {token}")).await
    }

    /// Reads lines until one equals `wanted`; returns the lines before it.
    pub async fn recv_until(&mut self, wanted: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let line = self.recv().await;
            if line == wanted {
                return before;
            }
            before.push(line);
        }
    }

    /// Sends one line and returns every line that came before a barrier
    /// after it: the whole answer to a request, and anything else pending.
    pub async fn request(&mut self, line: &str) -> Vec<String> {
        self.send(line).await;
        self.barrier().await
    }

    /// Asserts nothing arrived before a barrier.
    pub async fn expect_quiet(&mut self) {
        assert_eq!(self.barrier().await, Vec::<String>::new());
    }

    /// Aborts the connection with a TCP reset instead of a clean close.
    pub fn reset(self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let fd = self.writer.as_ref().as_raw_fd();
        // SAFETY: setsockopt on a socket we own, with a correctly sized value.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER failed");
    }

    /// Closes the write side, as a client does at end of input.
    pub async fn shutdown_write(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

/// The names a lobby `NAMES` line lists, for every client's login (TCP,
/// TLS, WebSocket).
pub fn names_listed(line: &str) -> Vec<String> {
    line.strip_prefix("NAMES ")
        .unwrap_or_else(|| panic!("expected NAMES, got {line:?}"))
        .split(' ')
        .map(str::to_owned)
        .collect()
}
