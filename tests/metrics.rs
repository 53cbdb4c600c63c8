//! `--metrics`: Prometheus text on `/metrics`, `/healthz`, and `/readyz`
//! that follows whether the server can log users in (in cluster mode:
//! whether the node reaches the bus).

#[path = "support/tls.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chat_tests::cluster::{redis_available, Redis};
use chat_tests::{Client, TIMEOUT};
use support::{start_fails, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 GET: the status code, the headers and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    try_get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// One HTTP/1.1 GET, or why it got no answer (a full port closes new
/// connections at once, unanswered).
async fn try_get(addr: SocketAddr, path: &str) -> Result<(u16, String, String), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut response))
        .await
        .map_err(|_| "no response in time".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no head and body in {response:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status code in {head:?}"))?;
    Ok((status, head.to_owned(), body.to_owned()))
}

/// The value of the sample `series` (name and labels) in the text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .expect("a number")
}

/// Polls `path` until it answers `status`; connections closed unanswered
/// (the port still full) count as not yet.
async fn until_status(addr: SocketAddr, path: &str, status: u16) {
    let deadline = Instant::now() + 3 * TIMEOUT;
    while try_get(addr, path).await.map(|answer| answer.0) != Ok(status) {
        assert!(Instant::now() < deadline, "{path} never answered {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_count_what_happened_and_probes_answer() {
    let server = Running::start(&["--metrics", "127.0.0.1:0"]);
    let http = server.metrics_addr.expect("a metrics address");
    assert_eq!(get(http, "/healthz").await.0, 200);
    assert_eq!(get(http, "/readyz").await.0, 200);
    assert_eq!(get(http, "/nothing").await.0, 404);

    let mut alice = Client::connect(server.addr).await;
    alice.login("alice").await;
    let mut bob = Client::connect(server.addr).await;
    bob.login("bob").await;
    alice.expect("JOIN bob").await;
    alice.send("MSG hi").await;
    alice.expect("MSG alice hi").await;
    bob.expect("MSG alice hi").await;
    alice.send("FOO").await;
    alice.expect_error("unknown-command").await;
    bob.send("NAME again").await;
    bob.expect_error("already-logged-in").await;
    bob.send("LEAVE").await;
    bob.expect("BYE").await;
    bob.expect_closed().await;
    alice.expect("LEAVE bob").await;
    alice.expect_quiet().await;

    let (status, head, text) = get(http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert_eq!(sample(&text, "chat_logins_total"), 2.0);
    assert_eq!(sample(&text, "chat_users_logged_in"), 1.0);
    assert_eq!(sample(&text, r#"chat_leaves_total{cause="left"}"#), 1.0);
    assert_eq!(
        sample(&text, r#"chat_frames_received_total{verb="NAME"}"#),
        3.0
    );
    assert_eq!(
        sample(&text, r#"chat_frames_received_total{verb="MSG"}"#),
        1.0
    );
    assert_eq!(
        sample(&text, r#"chat_frames_received_total{verb="unknown"}"#),
        1.0
    );
    assert_eq!(
        sample(&text, r#"chat_errors_sent_total{code="unknown-command"}"#),
        1.0
    );
    assert_eq!(
        sample(&text, r#"chat_errors_sent_total{code="already-logged-in"}"#),
        1.0
    );
    // JOIN bob and MSG to alice, MSG and LEAVE bob... to whom was there.
    assert!(sample(&text, "chat_deliveries_total") >= 3.0);
    assert_eq!(
        sample(
            &text,
            r#"chat_connections_accepted_total{listener="plain"}"#
        ),
        2.0
    );
    assert!(!text.contains("chat_bus_"), "no bus without --cluster");
    drop(alice);
}

#[tokio::test]
async fn accounts_and_moderation_are_counted() {
    let server = Running::start(&["--metrics", "127.0.0.1:0", "--operator", "carol"]);
    let http = server.metrics_addr.expect("a metrics address");
    let mut carol = Client::connect(server.addr).await;
    carol.login("carol").await;
    assert_eq!(
        carol.request("REGISTER carols-password").await,
        ["REGISTERED carol"]
    );
    carol.send("LEAVE").await;
    carol.expect("BYE").await;
    let mut carol = Client::connect(server.addr).await;
    carol.send("NAME carol wrong-password").await;
    carol.expect_error("bad-password").await;
    carol.send("NAME carol carols-password").await;
    carol.expect("WELCOME carol").await;
    carol.expect_prefix("NAMES ").await;
    let mut bob = Client::connect(server.addr).await;
    bob.login("bob").await;
    assert_eq!(
        carol.request("MUTE bob 1h").await,
        ["JOIN bob", "OK MUTE bob"]
    );
    assert_eq!(carol.request("BAN ghost 1h").await, ["OK BAN ghost"]);

    let text = get(http, "/metrics").await.2;
    assert_eq!(sample(&text, "chat_accounts"), 1.0);
    assert_eq!(sample(&text, "chat_logins_failed_total"), 1.0);
    assert_eq!(sample(&text, "chat_bans"), 1.0);
    assert_eq!(sample(&text, "chat_mutes"), 1.0);
    assert_eq!(sample(&text, "chat_hashing_waiting"), 0.0);
    // A registration and two checks of a password.
    assert_eq!(sample(&text, "chat_hashing_jobs_total"), 3.0);
    assert!(sample(&text, "chat_hashing_seconds_total") > 0.0);
    assert!(!text.contains("carols-password") && !text.contains("wrong-password"));
}

#[tokio::test]
async fn no_password_reaches_the_log() {
    let mut server = Running::logged(&[]);
    let mut alice = Client::connect(server.addr).await;
    alice.login("alice").await;
    assert_eq!(
        alice.request("REGISTER first-secret").await,
        ["REGISTERED alice"]
    );
    alice.send("PASSWORD wrong-secret second-secret").await;
    alice.expect_error("bad-password").await;
    assert_eq!(
        alice.request("PASSWORD first-secret second-secret").await,
        ["REGISTERED alice"]
    );
    let mut other = Client::connect(server.addr).await;
    other.send("NAME alice guessed-secret").await;
    other.expect_error("bad-password").await;
    other.send("NAME alice second-secret").await;
    other.expect("WELCOME alice").await;
    alice.expect_error("logged-in-elsewhere").await;
    server.stop();
    let log = server.log_lines().join("\n");
    assert!(log.contains("login"), "the log was read: {log}");
    for secret in [
        "first-secret",
        "second-secret",
        "wrong-secret",
        "guessed-secret",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[tokio::test]
async fn refusals_are_counted_by_reason() {
    let server = Running::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--max-per-ip",
        "1",
        "--connect-burst",
        "2",
        "--limits-on-loopback",
    ]);
    let http = server.metrics_addr.expect("a metrics address");
    let mut first = Client::connect(server.addr).await;
    first.send("PING").await;
    first.expect("PONG").await;
    let mut refused = Client::connect(server.addr).await;
    refused.expect_error("too-many-connections").await;
    // Another address, opening connections faster than --connect-rate.
    // Each is closed before the next, but the server may not have seen
    // it go: a refusal for --max-per-ip says so and is tried again.
    let deadline = Instant::now() + TIMEOUT;
    let mut over_max_per_ip = 0.0;
    loop {
        let mut client = Client::connect_from(server.addr, Ipv4Addr::new(127, 0, 0, 2)).await;
        client.send("PING").await;
        let line = client.recv().await;
        if line.starts_with("ERROR too-many-connections too many new connections") {
            break;
        }
        if line.starts_with("ERROR too-many-connections") {
            over_max_per_ip += 1.0;
        }
        assert!(Instant::now() < deadline, "--connect-burst 2 never bit");
    }
    let text = get(http, "/metrics").await.2;
    assert_eq!(
        sample(
            &text,
            r#"chat_connections_refused_total{reason="too-many-connections"}"#
        ),
        2.0 + over_max_per_ip
    );
    let by_limit = |limit: &str| {
        sample(
            &text,
            &format!("chat_connections_refused_by_limit_total{{limit=\"{limit}\"}}"),
        )
    };
    assert_eq!(by_limit("max-per-ip"), 1.0 + over_max_per_ip);
    assert_eq!(by_limit("connect-rate"), 1.0);
    assert_eq!(by_limit("max-clients"), 0.0);
    assert_eq!(
        sample(&text, r#"chat_connections_open{listener="plain"}"#),
        1.0
    );
}

#[tokio::test]
async fn readiness_follows_the_cluster_bus() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let url = redis.url();
    let server = Running::start(&[
        "--cluster",
        &url,
        "--lease",
        "2s",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let http = server.metrics_addr.expect("a metrics address");
    until_status(http, "/readyz", 200).await;
    assert_eq!(
        sample(&get(http, "/metrics").await.2, "chat_bus_link_up"),
        1.0
    );

    redis.kill();
    until_status(http, "/readyz", 503).await;
    assert_eq!(get(http, "/healthz").await.0, 200, "alive, only not ready");
    assert_eq!(
        sample(&get(http, "/metrics").await.2, "chat_bus_link_up"),
        0.0
    );

    redis.restart();
    until_status(http, "/readyz", 200).await;
    let mut alice = Client::connect(server.addr).await;
    alice.login("alice").await;
    let text = get(http, "/metrics").await.2;
    assert_eq!(sample(&text, "chat_bus_link_up"), 1.0);
    assert!(sample(&text, "chat_bus_round_trip_seconds") > 0.0);
    sample(&text, "chat_bus_stream_lag");
}

/// `chat_bus_stream_lag` after Redis restarts empty: an idle node reads the
/// new stream from its first entry, and its lag must be reckoned on that
/// stream. It used to keep the old stream's last append, less what it had
/// read of the new one, until its own next message.
#[tokio::test]
async fn stream_lag_is_right_on_an_idle_node_after_a_redis_restart() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let url = redis.url();
    let cluster = ["--cluster", &url, "--lease", "2s"];
    let quiet = Running::start(&[&cluster[..], &["--metrics", "127.0.0.1:0"]].concat());
    let busy = Running::start(&cluster);
    let http = quiet.metrics_addr.expect("a metrics address");
    let mut alice = Client::connect(quiet.addr).await;
    alice.login("alice").await;
    for n in 0..30 {
        alice.send(&format!("MSG before {n}")).await;
        alice.expect(&format!("MSG alice before {n}")).await;
    }
    let lag = || async { sample(&get(http, "/metrics").await.2, "chat_bus_stream_lag") };
    assert_eq!(lag().await, 0.0, "alice has read back all she sent");

    redis.restart();
    // bob, on the other node, talks on the new stream; alice only reads.
    let deadline = Instant::now() + 3 * TIMEOUT;
    let mut bob = loop {
        let mut bob = Client::connect(busy.addr).await;
        bob.send("NAME bob").await;
        match bob.recv().await.as_str() {
            "WELCOME bob" => break bob,
            other => assert!(other.starts_with("ERROR unavailable"), "{other}"),
        }
        assert!(Instant::now() < deadline, "bob never logged in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    bob.recv().await;
    loop {
        bob.send("MSG after the restart").await;
        match bob.recv().await.as_str() {
            "MSG bob after the restart" => break,
            other => assert!(other.starts_with("ERROR unavailable"), "{other}"),
        }
        assert!(Instant::now() < deadline, "bob never spoke");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.recv_until("MSG bob after the restart").await;
    // The quiet node has read everything on the new stream and appended
    // nothing to it.
    assert_eq!(lag().await, 0.0);
}

/// The metrics port answers once per connection, serves 64 connections at
/// once and closes any more at once, without waiting for their request;
/// once the 64 go, it serves again.
#[tokio::test]
async fn the_metrics_port_serves_64_at_once_and_one_answer_each() {
    let server = Running::start(&["--metrics", "127.0.0.1:0"]);
    let http = server.metrics_addr.expect("a metrics address");
    // Two requests on one connection: one answer, then the close.
    let mut stream = TcpStream::connect(http).await.expect("connect");
    let twice = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n".repeat(2);
    stream.write_all(twice.as_bytes()).await.expect("send");
    let mut answer = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut answer))
        .await
        .expect("closed after the answer")
        .expect("read");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 1, "{answer}");

    // 64 idle connections, each proven to be served (not queued) by
    // waiting until a 65th is closed unanswered.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(http).await.expect("connect"));
    }
    let started = Instant::now();
    let mut over = TcpStream::connect(http).await.expect("connect");
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, over.read_to_end(&mut sink))
        .await
        .expect("the 65th is closed");
    assert!(read.is_err() || sink.is_empty(), "answered: {sink:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed at once, not at the request timeout: {:?}",
        started.elapsed()
    );
    drop(idle);
    until_status(http, "/healthz", 200).await;
    let text = get(http, "/metrics").await.2;
    assert!(sample(&text, "chat_metrics_connections_refused_total") >= 1.0);
}

/// The endpoint has no authentication: an address other than loopback
/// stops the server at start, saying how to allow it, unless
/// `--metrics-public`, which it warns of once. A bad value names
/// `--metrics`, not `--addr`.
#[test]
fn metrics_in_public_takes_metrics_public_and_bad_values_name_the_flag() {
    let (code, stderr) = start_fails(&["--metrics", "0.0.0.0:0", "--ephemeral"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    assert!(stderr.contains("--metrics-public"), "{stderr}");
    let (code, stderr) = start_fails(&["--metrics", "9464"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--metrics needs host:port"), "{stderr}");
    assert!(!stderr.contains("--addr"), "{stderr}");
    let mut server = Running::logged(&["--metrics", "0.0.0.0:0", "--metrics-public"]);
    let line = server.until_logged("--metrics-public");
    assert!(line.contains("WARN"), "{line}");
    let port = server.metrics_addr.expect("a metrics address").port();
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    assert_eq!(runtime.block_on(get(loopback, "/healthz")).0, 200);
}
