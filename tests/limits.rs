//! `--max-per-ip` end to end, as the contract's "Running in public" says:
//! counted from accept, logged in or not, one count for the plaintext and
//! TLS listeners, `ERROR too-many-connections` inside TLS on the TLS port,
//! `server-full` first when both limits are reached, and loopback spared
//! unless `--limits-on-loopback` (which every test here but one gives, since
//! loopback is all a test can use).

#[path = "support/tls.rs"]
mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chat_tests::{Client, TIMEOUT};
use support::{start_fails, trusting, Pair, Running, Scratch, TlsClient};

/// Connects and proves the connection was admitted (a `PING` answered).
async fn admitted(running: &Running) -> Client {
    let mut client = Client::connect(running.addr).await;
    client.send("PING in").await;
    client.expect("PONG in").await;
    client
}

#[tokio::test]
async fn one_address_gets_max_per_ip_connections_then_too_many_connections() {
    let server = Running::start(&["--max-per-ip", "3", "--limits-on-loopback"]);
    let mut first = Client::connect(server.addr).await;
    first.login("first").await;
    let _second = admitted(&server).await;
    // Not logged in, and still counted.
    let _third = admitted(&server).await;
    let mut fourth = Client::connect(server.addr).await;
    fourth.expect_error("too-many-connections").await;
    fourth.expect_closed().await;
    // Closing one frees its place, once the server has seen it go.
    first.send("LEAVE").await;
    first.expect("BYE").await;
    first.expect_closed().await;
    drop(first);
    let deadline = Instant::now() + TIMEOUT;
    let mut again = loop {
        let mut client = Client::connect(server.addr).await;
        client.send("PING in").await;
        match client.recv().await.as_str() {
            "PONG in" => break client,
            line => assert!(line.starts_with("ERROR too-many-connections"), "{line}"),
        }
        assert!(Instant::now() < deadline, "the place never came free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    again.login("again").await;
    let mut over = Client::connect(server.addr).await;
    over.expect_error("too-many-connections").await;
    over.expect_closed().await;
}

#[tokio::test]
async fn plaintext_and_tls_share_one_count_and_tls_hears_why_inside_tls() {
    let scratch = Scratch::new("limits-tls");
    let pair = Pair::generate();
    let (cert, key) = pair.write(&scratch.0);
    let server = Running::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--max-per-ip",
        "2",
        "--limits-on-loopback",
    ]);
    let connector = trusting(&[&pair.der]);
    let _plain = admitted(&server).await;
    let mut tls = TlsClient::connect(server.tls_addr(), &connector).await;
    tls.login("secure").await;
    // The handshake succeeds; the refusal comes inside TLS.
    let mut refused = TlsClient::connect(server.tls_addr(), &connector).await;
    refused.expect_error("too-many-connections").await;
    refused.expect_closed().await;
    let mut refused = Client::connect(server.addr).await;
    refused.expect_error("too-many-connections").await;
    refused.expect_closed().await;
}

#[tokio::test]
async fn server_full_wins_when_both_limits_are_reached() {
    let server = Running::start(&[
        "--max-clients",
        "2",
        "--max-per-ip",
        "2",
        "--limits-on-loopback",
    ]);
    let _a = admitted(&server).await;
    let _b = admitted(&server).await;
    let mut refused = Client::connect(server.addr).await;
    refused.expect_error("server-full").await;
    refused.expect_closed().await;
}

#[tokio::test]
async fn loopback_is_spared_by_default() {
    let server = Running::start(&["--max-per-ip", "2"]);
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut client = admitted(&server).await;
        client.login(&format!("local{i}")).await;
        clients.push(client);
    }
}

/// Whether a new connection from `source` is admitted (`PING` answered)
/// or refused (`ERROR too-many-connections`, then closed); the admitted
/// one is kept open.
async fn try_from(running: &Running, source: Ipv4Addr) -> Option<Client> {
    let mut client = Client::connect_from(running.addr, source).await;
    client.send("PING in").await;
    let line = client.recv().await;
    if line == "PONG in" {
        return Some(client);
    }
    assert!(line.starts_with("ERROR too-many-connections "), "{line}");
    client.expect_closed().await;
    None
}

/// `--connect-burst` connections at once, then `--connect-rate` a second,
/// per address: closing connections gives nothing back (it is not
/// `--max-per-ip`), another address has its own allowance, and waiting
/// refills it.
#[tokio::test]
async fn one_address_opens_a_burst_then_connect_rate_a_second() {
    let server = Running::start(&[
        "--connect-burst",
        "3",
        "--connect-rate",
        "1",
        "--limits-on-loopback",
    ]);
    let hammer = Ipv4Addr::new(127, 0, 0, 2);
    let started = Instant::now();
    let (mut admitted, mut refused) = (0u64, 0u64);
    for _ in 0..10 {
        match try_from(&server, hammer).await {
            // Closed at once: the count is of connections opened.
            Some(client) => {
                admitted += 1;
                drop(client);
            }
            None => refused += 1,
        }
    }
    let elapsed = started.elapsed().as_secs();
    assert!(admitted >= 3, "the burst: {admitted} admitted");
    assert!(
        admitted <= 3 + elapsed + 1,
        "{admitted} admitted in {elapsed} s"
    );
    assert!(refused >= 1, "never refused in {elapsed} s");
    // Another address is not held back by this one.
    let mut other = try_from(&server, Ipv4Addr::new(127, 0, 0, 3))
        .await
        .expect("another address");
    other.login("other").await;
    // A second later, one more comes in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut again = try_from(&server, hammer).await.expect("refilled");
    again.login("again").await;
}

#[tokio::test]
async fn connect_rate_spares_loopback_unless_asked() {
    let server = Running::start(&["--connect-burst", "1", "--connect-rate", "1"]);
    for _ in 0..5 {
        try_from(&server, Ipv4Addr::new(127, 0, 0, 2))
            .await
            .expect("loopback is spared");
    }
    let server = Running::start(&[
        "--connect-burst",
        "2",
        "--connect-rate",
        "0",
        "--limits-on-loopback",
    ]);
    for _ in 0..5 {
        try_from(&server, Ipv4Addr::new(127, 0, 0, 2))
            .await
            .expect("--connect-rate 0 turns it off");
    }
}

/// A refusal is logged at most once a second per kind, with how many it
/// stands for: 300 refused connects make a handful of lines, not 300, and
/// their counts add up to 300, the last of them included.
#[tokio::test]
async fn refusals_are_logged_once_a_second_with_a_count() {
    let mut server = Running::logged(&["--max-per-ip", "1", "--limits-on-loopback"]);
    let _held = admitted(&server).await;
    let started = Instant::now();
    for _ in 0..300 {
        let mut refused = Client::connect(server.addr).await;
        refused.expect_error("too-many-connections").await;
    }
    let (mut lines, mut total) = (0u64, 0u64);
    while total < 300 {
        let line = server.until_logged("refused ");
        let counted: String = line
            .split("refused ")
            .nth(1)
            .and_then(|rest| rest.split(" connection").next())
            .expect("refused <n> connection(s)")
            .replace(' ', "");
        total += counted.parse::<u64>().expect("a count");
        lines += 1;
        assert!(
            line.contains("too many from one address") && line.contains("(last: 127.0.0.1)"),
            "{line}"
        );
    }
    assert_eq!(total, 300);
    let seconds = started.elapsed().as_secs();
    assert!(lines <= seconds + 2, "{lines} lines in {seconds} s");
}

/// The budget flags come from the command line, a `CHAT_…` variable or
/// the config file, and `--print-config` shows them; the defaults are the
/// contract's.
#[test]
fn budget_flags_come_from_flags_variables_and_the_file_and_print_back() {
    let print = |args: &[&str], env: &[(&str, &str)]| {
        let output = std::process::Command::new(chat_tests::binary("chat-server"))
            .args(args)
            .arg("--print-config")
            .envs(env.iter().copied())
            .output()
            .expect("run chat-server");
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    let defaults = print(&[], &[]);
    for line in [
        "connect-burst = 16\n",
        "connect-rate = 1\n",
        "metrics-public = false\n",
    ] {
        assert!(defaults.contains(line), "{line}: {defaults}");
    }
    let scratch = Scratch::new("budget-flags");
    let file = scratch.path("chat.toml");
    std::fs::write(
        &file,
        "connect-burst = 4\nconnect-rate = 9\nmetrics-public = true\n",
    )
    .unwrap();
    let printed = print(
        &["--config", file.to_str().unwrap(), "--connect-burst", "5"],
        &[("CHAT_CONNECT_RATE", "3")],
    );
    for line in [
        "connect-burst = 5\n",
        "connect-rate = 3\n",
        "metrics-public = true\n",
    ] {
        assert!(printed.contains(line), "{line}: {printed}");
    }
}

#[test]
fn flood_flags_are_checked_at_start() {
    let (code, stderr) = start_fails(&["--flood-burst", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--flood-burst"), "{stderr}");
    let (code, stderr) = start_fails(&["--max-per-ip", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--max-per-ip"), "{stderr}");
    let _off = Running::start(&["--flood-rate", "0", "--flood-burst", "1"]);
    let (code, stderr) = start_fails(&["--connect-burst", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--connect-burst"), "{stderr}");
}
