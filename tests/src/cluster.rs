//! Cluster fixtures: a private `redis-server` and a proxy that can cut one
//! node off from it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::TIMEOUT;

/// The variable that lets the cluster tests be skipped where
/// `redis-server` is missing (`CHAT_TEST_SKIP_CLUSTER=1`).
pub const SKIP_CLUSTER: &str = "CHAT_TEST_SKIP_CLUSTER";

/// Whether cluster tests can run here: true when `redis-server` is
/// installed. Without it a cluster test fails, saying how to install it,
/// unless skipping was asked for with `CHAT_TEST_SKIP_CLUSTER=1`; then it
/// returns false and the test passes without running, after saying so on
/// the terminal, where `cargo test` does not hide it. In CI (`CI` set to
/// anything but `false` or `0`) it always fails: `.ci/run` installs
/// `redis-server`, and a green run must have run every test.
pub fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "false" | "0"));
    assert!(
        !ci,
        "redis-server is not installed, and CI must run the cluster tests \
         (.ci/run installs it)"
    );
    let skip = std::env::var(SKIP_CLUSTER).is_ok_and(|v| v == "1");
    assert!(
        skip,
        "redis-server is not installed: install it (apt-get install redis-server), \
         or set {SKIP_CLUSTER}=1 to skip the cluster tests"
    );
    // Straight to stderr: `eprintln!` would be captured and shown only if
    // the test failed, and a skipped test would pass unseen.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a cluster test");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: redis-server is not installed ({SKIP_CLUSTER}=1)"
    );
    false
}

/// A `redis-server` on a free loopback port, without persistence, killed
/// when dropped.
pub struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let mut redis = Redis { child: None, port };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Sends one inline command; returns the first line of the reply
    /// (`+OK`, `:1`, …).
    pub fn command(&self, command: &str) -> String {
        use std::io::{BufRead, BufReader};
        let mut conn = TcpStream::connect(self.addr()).expect("connect to Redis");
        conn.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
        conn.write_all(format!("{command}\r\n").as_bytes())
            .expect("send to Redis");
        let mut reply = String::new();
        BufReader::new(conn)
            .read_line(&mut reply)
            .expect("Redis answers");
        reply.trim_end().to_owned()
    }

    /// Kills the server at once (SIGKILL): its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        while !self.answers_ping() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(self.addr()) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        conn.write_all(b"PING\r\n").is_ok()
            && conn.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A TCP proxy between one node and Redis, to cut that node off alone.
pub struct Proxy {
    addr: SocketAddr,
    open: Arc<watch::Sender<bool>>,
}

impl Proxy {
    /// Starts forwarding to `target`; runs on the test's runtime.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (open, _) = watch::channel(true);
        let open = Arc::new(open);
        let state = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut open = state.subscribe();
                if !*open.borrow_and_update() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = open.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Proxy { addr, open }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

/// Logs in on a node that may still be starting or settling: `unavailable`
/// answers are retried. Returns the client and the names of its `NAMES`.
pub async fn login(server: &crate::Server, name: &str) -> (crate::Client, Vec<String>) {
    let deadline = Instant::now() + TIMEOUT;
    let mut client = server.connect().await;
    loop {
        client.send(&format!("NAME {name}")).await;
        let answer = client.recv().await;
        if answer == format!("WELCOME {name}") {
            let names = client.recv().await;
            let names = names.strip_prefix("NAMES ").expect("NAMES after WELCOME");
            return (client, names.split(' ').map(str::to_owned).collect());
        }
        assert!(answer.starts_with("ERROR unavailable"), "{answer}");
        assert!(Instant::now() < deadline, "node never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`login`], for the client alone.
pub async fn user(server: &crate::Server, name: &str) -> crate::Client {
    login(server, name).await.0
}
