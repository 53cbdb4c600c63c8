//! Flood control ("Running in public" in `PROTOCOL.md`): a burst of
//! `--flood-burst` frames, then `--flood-rate` a second; frames beyond it
//! are handled later, in order, and only the flooder waits. Loopback peers
//! are spared unless `--limits-on-loopback`.

use std::time::{Duration, Instant};

use chat_tests::{wire, Server};

/// Sends `count` numbered `PING`s at once and returns when each `PONG`
/// came, checking they come in order.
async fn ping_burst(server: &Server, name: &str, count: usize) -> Vec<Duration> {
    let (mut reader, mut writer) = wire::login(server.addr(), name).await;
    let burst: String = (0..count).map(|n| format!("PING {n}\n")).collect();
    let started = Instant::now();
    wire::send(&mut writer, &burst).await;
    let mut arrivals = Vec::new();
    for n in 0..count {
        assert_eq!(reader.line().await, format!("PONG {n}"), "{name}: in order");
        arrivals.push(started.elapsed());
    }
    arrivals
}

#[tokio::test]
async fn a_flood_is_delayed_in_order_and_nothing_is_lost() {
    let server = Server::start(&[
        "--limits-on-loopback",
        "--flood-burst",
        "3",
        "--flood-rate",
        "10",
    ]);
    // The login's NAME was the first frame of the burst.
    let arrivals = ping_burst(&server, "flooder", 12).await;
    assert!(
        arrivals[1] < Duration::from_millis(300),
        "the burst is served at once: {arrivals:?}"
    );
    // 2 of the burst left, then 10 a second: the last is about 1 s late.
    let last = arrivals[11];
    assert!(
        last >= Duration::from_millis(800) && last < Duration::from_secs(3),
        "the rest at 10 a second: {arrivals:?}"
    );
}

#[tokio::test]
async fn only_the_flooder_waits() {
    let server = Server::start(&[
        "--limits-on-loopback",
        "--flood-burst",
        "2",
        "--flood-rate",
        "5",
    ]);
    let flooder = tokio::spawn({
        let addr = server.addr();
        async move {
            let (mut reader, mut writer) = wire::login(addr, "flooder").await;
            let burst: String = (0..10).map(|n| format!("MSG flood {n}\n")).collect();
            wire::send(&mut writer, &burst).await;
            reader.until("MSG flooder flood 9").await;
        }
    });
    let (mut calm, mut calm_out) = wire::login(server.addr(), "calm").await;
    let asked = Instant::now();
    wire::send(&mut calm_out, "PING calm\n").await;
    calm.until("PONG calm").await;
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "a calm client waited {:?} behind a flooder",
        asked.elapsed()
    );
    flooder
        .await
        .expect("the flooder gets all its messages, late");
}

#[tokio::test]
async fn a_client_held_back_is_not_idle() {
    let server = Server::start(&[
        "--limits-on-loopback",
        "--flood-burst",
        "1",
        "--flood-rate",
        "2",
        "--idle-timeout",
        "1s",
    ]);
    // 6 frames at 2 a second take about 3 s, three idle timeouts.
    let arrivals = ping_burst(&server, "patient", 6).await;
    assert!(arrivals[5] >= Duration::from_millis(2000), "{arrivals:?}");
}

#[tokio::test]
async fn loopback_is_spared_unless_asked() {
    let server = Server::start(&["--flood-burst", "1", "--flood-rate", "1"]);
    let arrivals = ping_burst(&server, "local", 20).await;
    assert!(
        arrivals[19] < Duration::from_millis(500),
        "a loopback client was throttled: {arrivals:?}"
    );
}

/// Logs in as `name` from the loopback address `127.0.0.<host>`, so that
/// tests with `--limits-on-loopback` can tell addresses apart.
async fn login_from(
    server: &Server,
    host: u8,
    name: &str,
) -> (wire::LineReader, tokio::net::tcp::OwnedWriteHalf) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, host], 0)))
        .expect("bind a loopback source address");
    let stream = tokio::time::timeout(chat_tests::TIMEOUT, socket.connect(server.addr()))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (read, mut writer) = stream.into_split();
    let mut reader = wire::LineReader::new(read);
    wire::send(&mut writer, &format!("NAME {name}\n")).await;
    assert_eq!(reader.line().await, format!("WELCOME {name}"));
    assert!(reader.line().await.starts_with("NAMES "));
    (reader, writer)
}

/// "Big answers cost more" (`PROTOCOL.md`, Budgets): an answer over 4 KiB
/// counts against the asker's allowance as one frame for every 4 KiB, so
/// three `HISTORY` replies of 24 KB hold the asker back where three small
/// ones do not.
#[tokio::test]
async fn a_big_answer_costs_a_frame_for_every_4_kib() {
    let server = Server::start(&[
        "--limits-on-loopback",
        "--flood-burst",
        "10",
        "--flood-rate",
        "5",
    ]);
    let (mut sayer, mut sayer_out) = login_from(&server, 2, "sayer").await;
    let padding = "h".repeat(3_000);
    let said: String = (0..8).map(|n| format!("MSG {n} {padding}\n")).collect();
    wire::send(&mut sayer_out, &format!("{said}PING said\n")).await;
    sayer.until("PONG said").await;
    let timed = |host: u8, name: &'static str, asked: &'static str| {
        let server = &server;
        async move {
            let (mut reader, mut writer) = login_from(server, host, name).await;
            let started = Instant::now();
            let lines = format!("{asked}\n{asked}\n{asked}\nPING asked\n");
            wire::send(&mut writer, &lines).await;
            let answers = reader.until("PONG asked").await;
            let bytes: usize = answers.iter().map(|l| l.len() + 1).sum();
            (started.elapsed(), bytes)
        }
    };
    let (small, small_bytes) = timed(3, "small", "HISTORY 1").await;
    assert!(small_bytes < 4 * 4096, "{small_bytes}");
    assert!(
        small < Duration::from_millis(500),
        "small answers cost a frame each: {small:?}"
    );
    // 9 frames left after NAME; each reply of 6 x 4 KiB costs 6 frames, so
    // the second waits 0.8 s and the third 1.2 s more.
    let (big, big_bytes) = timed(4, "big", "HISTORY 8").await;
    assert!(big_bytes > 3 * 5 * 4096, "{big_bytes}");
    assert!(
        big >= Duration::from_millis(1_600) && big < Duration::from_secs(6),
        "big answers cost a frame per 4 KiB: {big:?}"
    );
}

/// Sends `count` numbered `PING`s at once from an open connection and
/// returns when the last `PONG` came, checking they come in order.
async fn pings(
    (mut reader, mut writer): (wire::LineReader, tokio::net::tcp::OwnedWriteHalf),
    count: usize,
) -> Duration {
    let started = Instant::now();
    let burst: String = (0..count).map(|n| format!("PING {n}\n")).collect();
    wire::send(&mut writer, &burst).await;
    for n in 0..count {
        let before = reader.until(&format!("PONG {n}")).await;
        assert!(
            !before.iter().any(|l| l.starts_with("PONG")),
            "in order: {before:?}"
        );
    }
    started.elapsed()
}

/// "Frames from one address" (`PROTOCOL.md`, Budgets): all connections of
/// one address share a second allowance on top of each one's own; frames
/// beyond it wait, in order, and none is lost, while another address is
/// not held back. `--flood-rate-per-ip 0` turns only that one off.
#[tokio::test]
async fn the_connections_of_one_address_share_one_allowance() {
    let flags = |per_ip_rate: &'static str| {
        Server::start(&[
            "--limits-on-loopback",
            "--flood-burst",
            "100",
            "--flood-rate",
            "100",
            "--flood-burst-per-ip",
            "10",
            "--flood-rate-per-ip",
            per_ip_rate,
        ])
    };
    let server = flags("10");
    let mut crowd = Vec::new();
    for n in 0..4 {
        crowd.push(login_from(&server, 5, &format!("crowd{n}")).await);
    }
    let other = login_from(&server, 6, "other").await;
    // 4 logins and 40 PINGs from 127.0.0.5: 10 at once, then 10 a second.
    let sending: Vec<_> = crowd
        .into_iter()
        .map(|connection| tokio::spawn(pings(connection, 10)))
        .collect();
    let elsewhere = pings(other, 10).await;
    assert!(
        elsewhere < Duration::from_millis(1_000),
        "another address waited: {elsewhere:?}"
    );
    let mut slowest = Duration::ZERO;
    for sent in sending {
        slowest = slowest.max(sent.await.expect("a crowd member"));
    }
    assert!(
        slowest >= Duration::from_millis(2_500) && slowest < Duration::from_secs(8),
        "44 frames at 10 + 10 a second: {slowest:?}"
    );

    let server = flags("0");
    let mut crowd = Vec::new();
    for n in 0..4 {
        crowd.push(login_from(&server, 5, &format!("crowd{n}")).await);
    }
    for connection in crowd {
        let took = pings(connection, 10).await;
        assert!(
            took < Duration::from_millis(1_000),
            "only each connection's own: {took:?}"
        );
    }
}
