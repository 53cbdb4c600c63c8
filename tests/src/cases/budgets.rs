//! Case 11, budgets. The attacks that the budgets of "Running in public"
//! bound, one after another against one server that applies them to
//! loopback (`--limits-on-loopback`), each attack from 127.0.0.N addresses
//! of its own and each phase with two witnesses of its own (on 127.0.0.1,
//! paced within their flood allowance) that must lose nothing:
//!
//! 1. history filling: users of many addresses in many rooms send 4 KiB
//!    `SAY`s and topics, three times `--history-memory` (set small); the
//!    server's RSS stays under the bound that budget sets, and is back
//!    within [`RSS_MARGIN_KIB`] of the quiet baseline within a minute of
//!    everyone leaving;
//! 2. room squatting from two addresses: each gets exactly
//!    `--max-rooms-per-ip` rooms, every `JOIN` beyond is `too-many-rooms`;
//! 3. `ROOMS`/`WHO`/`HISTORY` pounding from one address while those rooms
//!    exist: the witnesses' p99 stays within [`WITNESS_P99`];
//! 4. a reconnect loop from one address: `--connect-burst` admitted at
//!    once, then `--connect-rate` a second, the rest `too-many-connections`;
//! 5. a `MSG` flood from many connections of one address: handled no
//!    faster than the address's allowance, and every message delivered, in
//!    order;
//! 6. idle and slowloris connections to the metrics port: at most 64
//!    served at once, the rest closed at once (and counted by the server).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};

use super::{assert_alive, Row, RssWatch, Scale};
use crate::probe;
use crate::wire::{LineReader, Next};
use crate::witness::{ms, Verdict, Witnesses};
use crate::{Server, TIMEOUT};

/// A witness's pause between two messages: 4 a second, within the
/// default `--flood-rate` of 5 (the two share 127.0.0.1's 20).
const WITNESS_PACE: Duration = Duration::from_millis(250);
/// The witnesses' p99 while the server is pounded with big answers: far
/// below what an unbounded pounding costs them (seconds), with room for a
/// debug build on two busy cores.
const WITNESS_P99: Duration = Duration::from_millis(500);
/// Text of a filling `SAY` or `TOPIC`: the echo, with the room and the
/// sender's name, stays within one 4 KiB frame.
const FILL_TEXT: usize = 4000;
/// Users of one filling address, and rooms of one filling user.
const FILL_USERS: u32 = 4;
const FILL_ROOMS: u32 = 4;
/// See `hostile` in chat-bench: what a connection may hold (512 KiB of
/// unread output, its read buffer and session), and the history's
/// overhead over its message bytes.
const CONNECTION_KIB: u64 = 512 + 16;
const HISTORY_OVERHEAD: u64 = 2;
/// How far above the quiet baseline the RSS counts as back.
const RSS_MARGIN_KIB: u64 = 4 * 1024;
/// The contract: the memory goes back within a minute.
const MEMORY_BACK_WITHIN: Duration = Duration::from_secs(60);
/// `--max-rooms-per-user`, `--connect-burst`, `--connect-rate`,
/// `--flood-burst-per-ip`, `--flood-rate-per-ip` by default.
const ROOMS_PER_USER: usize = 50;
const CONNECT_BURST: u64 = 16;
const CONNECT_RATE: f64 = 1.0;
const FLOOD_BURST_PER_IP: f64 = 40.0;
const FLOOD_RATE_PER_IP: f64 = 20.0;
/// Connections the metrics port serves at once.
const METRICS_AT_ONCE: usize = 64;

/// The sizes of case 11.
#[derive(Debug, Clone)]
pub struct BudgetScale {
    /// `--history-memory`, MiB, and the addresses filling it.
    pub history_mib: u64,
    pub fill_addresses: u32,
    /// `--max-rooms-per-ip`.
    pub rooms_per_ip: usize,
    /// How long the pounding and the reconnect loop last.
    pub pound: Duration,
    pub reconnect: Duration,
    /// Flooding connections of one address, and messages of each.
    pub flooders: usize,
    pub flood_messages: u64,
    /// Connections to the metrics port.
    pub metrics_connections: usize,
}

pub async fn budgets(scale: &Scale, _seed: u64) -> Row {
    let started = Instant::now();
    let b = &scale.budgets;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port for the metrics")
        .port();
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let server = Server::single(&[
        "--limits-on-loopback",
        "--history-memory",
        &format!("{}MiB", b.history_mib),
        "--max-rooms-per-ip",
        &b.rooms_per_ip.to_string(),
        "--metrics",
        &metrics.to_string(),
    ]);
    let watch = RssWatch::start(server.pid());
    let phases = [
        fill(&server, b).await,
        squat_and_pound(&server, b).await,
        reconnects(&server, b).await,
        flood(&server, b).await,
        siege(&server, metrics, b).await,
    ];
    assert_alive(&server, "budgets");
    let mut row = Row::new("11 budgets", started);
    row.tried = phases
        .iter()
        .map(|p| p.0.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    row.held = phases
        .iter()
        .map(|p| p.1.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    row.lost = phases.iter().map(|p| p.2).sum();
    row.peak_rss_mib = Some(watch.peak_kib() as f64 / 1024.0);
    row
}

/// What a phase tried, what held, and the witness frames it lost.
type Phase = (String, String, u64);

/// The witnesses' verdict, checked.
async fn witnessed(witnesses: Witnesses, phase: &str) -> Verdict {
    let verdict = witnesses.finish().await;
    assert!(
        verdict.lost + verdict.gaps + verdict.dropped == 0,
        "{phase}: the witnesses lost frames"
    );
    verdict.assert_intact();
    verdict
}

/// A connection from `ip`, logged in as `name`; `None` if refused.
async fn login_from(addr: SocketAddr, ip: Ipv4Addr, name: &str) -> Option<Connection> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((ip, 0)))
        .expect("bind a loopback address");
    let stream = tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (read, mut writer) = stream.into_split();
    let mut reader = LineReader::new(read);
    writer
        .write_all(format!("NAME {name}\n").as_bytes())
        .await
        .ok()?;
    let first = reader.line().await;
    if first.starts_with("ERROR too-many-connections") {
        return None;
    }
    assert_eq!(first, format!("WELCOME {name}"), "{name}'s login");
    Some(Connection { reader, writer })
}

/// One attacker's logged-in connection.
struct Connection {
    reader: LineReader,
    writer: OwnedWriteHalf,
}

impl Connection {
    /// Writes `frames` while reading, until `expected` answers (the lines
    /// `is_answer` picks; broadcasts of the lobby pass by) have come.
    async fn pipeline(
        &mut self,
        frames: &[String],
        expected: usize,
        is_answer: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let text: String = frames.iter().map(|f| format!("{f}\n")).collect();
        let writer = &mut self.writer;
        let write = async move {
            let _ = writer.write_all(text.as_bytes()).await;
        };
        let reader = &mut self.reader;
        let read = async move {
            let mut answers = Vec::new();
            while answers.len() < expected {
                match reader.next(TIMEOUT).await {
                    Next::Line(line) if is_answer(&line) => answers.push(line),
                    Next::Line(_) => {}
                    other => panic!("after {} answers: {other:?}", answers.len()),
                }
            }
            answers
        };
        tokio::join!(write, read).1
    }
}

/// Phase 1: history filling, the RSS bound, and the memory back.
async fn fill(server: &Server, b: &BudgetScale) -> Phase {
    let witnesses = Witnesses::start_paced(server.addr(), WITNESS_PACE).await;
    // The server settles with the witnesses in before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = probe::rss_kib(server.pid()).expect("server RSS");
    let history_kib = b.history_mib * 1024;
    let users = b.fill_addresses * FILL_USERS;
    // Three times the budget, spread over every user.
    let per_user = (3 * history_kib * 1024).div_ceil(FILL_TEXT as u64 * u64::from(users));
    let watch = RssWatch::start(server.pid());
    let mut tasks = Vec::new();
    for u in 0..users {
        let ip = Ipv4Addr::new(127, 0, 1, 1 + (u / FILL_USERS) as u8);
        let addr = server.addr();
        tasks.push(tokio::spawn(async move {
            let name = format!("fill{u}");
            let mut c = login_from(addr, ip, &name)
                .await
                .expect("a filler admitted");
            let rooms: Vec<String> = (0..FILL_ROOMS).map(|r| format!("#f{u}r{r}")).collect();
            let mut frames: Vec<String> = rooms.iter().map(|r| format!("JOIN {r}")).collect();
            for n in 0..per_user {
                let room = &rooms[n as usize % rooms.len()];
                let verb = if n % 4 == 3 { "TOPIC" } else { "SAY" };
                frames.push(format!("{verb} {room} {}", "x".repeat(FILL_TEXT)));
            }
            let answers = c
                .pipeline(&frames, frames.len(), |l| {
                    l.starts_with("NAMES #")
                        || l.starts_with("SAY #")
                        || l.starts_with("TOPIC #")
                        || l.starts_with("ERROR")
                })
                .await;
            let errors: Vec<&String> = answers.iter().filter(|l| l.starts_with("ERROR")).collect();
            assert!(errors.is_empty(), "{name} was refused: {errors:?}");
            c
        }));
    }
    let mut fillers = Vec::new();
    for task in tasks {
        fillers.push(task.await.expect("a filler"));
    }
    let peak = watch.peak_kib();
    let bound = before + history_kib * HISTORY_OVERHEAD + u64::from(users + 2) * CONNECTION_KIB;
    assert!(
        peak <= bound,
        "history filling: peak RSS {peak} KiB over the bound {bound} KiB (quiet {before} KiB, \
         {history_kib} KiB of history)"
    );
    // Everyone leaves: the rooms are forgotten, and the memory goes back.
    drop(fillers);
    let leaving = Instant::now();
    let back = loop {
        let now = probe::rss_kib(server.pid()).expect("server RSS");
        if now <= before + RSS_MARGIN_KIB {
            break leaving.elapsed();
        }
        assert!(
            leaving.elapsed() < MEMORY_BACK_WITHIN,
            "history filling: RSS {now} KiB a minute after everyone left, quiet {before} KiB"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let verdict = witnessed(witnesses, "history filling").await;
    (
        format!(
            "history filling: {users} users of {} addresses in {FILL_ROOMS} rooms each, \
             {per_user} 4 KiB SAYs and topics each (3x `--history-memory {}MiB`)",
            b.fill_addresses, b.history_mib
        ),
        format!(
            "peak RSS {:.1} MiB within the bound {:.1} (quiet {:.1}); back within 4 MiB of \
             quiet {:.0} s after everyone left; {}",
            peak as f64 / 1024.0,
            bound as f64 / 1024.0,
            before as f64 / 1024.0,
            back.as_secs_f64(),
            verdict.summary()
        ),
        verdict.lost,
    )
}

/// Phases 2 and 3: two addresses squat rooms, then one pounds `ROOMS`,
/// `WHO` and `HISTORY` while those rooms exist.
async fn squat_and_pound(server: &Server, b: &BudgetScale) -> Phase {
    let witnesses = Witnesses::start_paced(server.addr(), WITNESS_PACE).await;
    let cap = b.rooms_per_ip;
    let per_user = ROOMS_PER_USER.min(cap);
    let users = cap / ROOMS_PER_USER + 2;
    let mut tasks = Vec::new();
    for a in 0..2u8 {
        for u in 0..users {
            let addr = server.addr();
            tasks.push(tokio::spawn(async move {
                let ip = Ipv4Addr::new(127, 0, 0, 2 + a);
                let name = format!("squat{a}u{u}");
                let mut c = login_from(addr, ip, &name)
                    .await
                    .expect("a squatter admitted");
                let frames: Vec<String> = (0..per_user)
                    .map(|r| format!("JOIN #s{a}u{u}r{r}"))
                    .collect();
                let answers = c
                    .pipeline(&frames, frames.len(), |l| {
                        l.starts_with("NAMES #") || l.starts_with("ERROR")
                    })
                    .await;
                let admitted = answers.iter().filter(|l| l.starts_with("NAMES")).count();
                let refused = answers
                    .iter()
                    .filter(|l| l.starts_with("ERROR too-many-rooms"))
                    .count();
                assert_eq!(
                    admitted + refused,
                    answers.len(),
                    "{name}: other answers than NAMES and too-many-rooms: {answers:?}"
                );
                (a, admitted, c)
            }));
        }
    }
    let mut admitted = [0; 2];
    let mut squatters = Vec::new();
    for task in tasks {
        let (a, n, c) = task.await.expect("a squatter");
        admitted[a as usize] += n;
        squatters.push(c);
    }
    let attempts = users * per_user;
    assert_eq!(
        admitted,
        [cap, cap],
        "rooms admitted to each squatting address (of {attempts} JOINs each)"
    );
    let squat = witnessed(witnesses, "room squatting").await;

    // Pounding, with the 2 x cap rooms in place.
    let witnesses = Witnesses::start_paced(server.addr(), WITNESS_PACE).await;
    let mut pounders = Vec::new();
    for p in 0..4 {
        let addr = server.addr();
        let pound = b.pound;
        pounders.push(tokio::spawn(async move {
            let ip = Ipv4Addr::new(127, 0, 0, 4);
            let mut c = login_from(addr, ip, &format!("pound{p}"))
                .await
                .expect("a pounder admitted");
            let frames: Vec<String> = ["ROOMS", "WHO", "HISTORY 100"]
                .iter()
                .cycle()
                .take(3000)
                .map(|f| f.to_string())
                .collect();
            let is_answer = |l: &str| l.starts_with("ROOMS") || l.starts_with("HISTORY ");
            let answered =
                tokio::time::timeout(pound, c.pipeline(&frames, frames.len(), is_answer));
            // Cut off at the end of the phase: the rest waits in the socket.
            let _ = answered.await;
            c
        }));
    }
    let mut pounding = Vec::new();
    for task in pounders {
        pounding.push(task.await.expect("a pounder"));
    }
    let pound = witnessed(witnesses, "pounding").await;
    assert!(
        pound.p99 <= WITNESS_P99,
        "pounding: the witnesses' p99 {:.1} ms over {:.0} ms",
        ms(pound.p99),
        ms(WITNESS_P99)
    );
    drop(pounding);
    drop(squatters);
    (
        format!(
            "room squatting: {users} users of 127.0.0.2 and of .3, {per_user} JOINs each; \
             then 4 connections of 127.0.0.4 pounding ROOMS/WHO/HISTORY for {:.0} s over \
             {} rooms",
            b.pound.as_secs_f64(),
            2 * cap
        ),
        format!(
            "each address got exactly `--max-rooms-per-ip {cap}` rooms, the other {} JOINs \
             `too-many-rooms`; {}; while pounded, {}",
            attempts - cap,
            squat.summary(),
            pound.summary()
        ),
        squat.lost + pound.lost,
    )
}

/// Phase 4: a reconnect loop from one address.
async fn reconnects(server: &Server, b: &BudgetScale) -> Phase {
    let witnesses = Witnesses::start_paced(server.addr(), WITNESS_PACE).await;
    let ip = Ipv4Addr::new(127, 0, 0, 5);
    let started = Instant::now();
    let (mut admitted, mut refused) = (0u64, 0u64);
    while started.elapsed() < b.reconnect {
        match login_from(server.addr(), ip, &format!("rc{}", admitted + refused)).await {
            Some(mut c) => {
                admitted += 1;
                // Gone for good before the next: LEAVE, and the close.
                let _ = c.writer.write_all(b"LEAVE\n").await;
                let _ = c.reader.until_closed().await;
            }
            None => refused += 1,
        }
    }
    let took = started.elapsed().as_secs_f64();
    let most = CONNECT_BURST + (took * CONNECT_RATE).ceil() as u64 + 1;
    assert!(
        (CONNECT_BURST..=most).contains(&admitted) && refused > 0,
        "reconnect loop: {admitted} admitted, {refused} refused in {took:.1} s \
         (burst {CONNECT_BURST}, then {CONNECT_RATE} a second)"
    );
    let verdict = witnessed(witnesses, "reconnect loop").await;
    (
        format!("reconnect loop: 127.0.0.5 logging in and out for {took:.1} s"),
        format!(
            "{admitted} admitted (at most `--connect-burst` 16 + 1 a second: {most}), \
             {refused} `too-many-connections`; {}",
            verdict.summary()
        ),
        verdict.lost,
    )
}

/// Phase 5: a `MSG` flood from many connections of one address.
async fn flood(server: &Server, b: &BudgetScale) -> Phase {
    let witnesses = Witnesses::start_paced(server.addr(), WITNESS_PACE).await;
    let ip = Ipv4Addr::new(127, 0, 0, 6);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for f in 0..b.flooders {
        let (addr, messages) = (server.addr(), b.flood_messages);
        tasks.push(tokio::spawn(async move {
            let name = format!("flood{f}");
            let mut c = login_from(addr, ip, &name)
                .await
                .expect("a flooder admitted");
            let frames: Vec<String> = (0..messages).map(|m| format!("MSG {m} flood")).collect();
            let own = format!("MSG {name} ");
            c.pipeline(&frames, frames.len(), |l| l.starts_with(&own))
                .await;
            c
        }));
    }
    let mut flooders = Vec::new();
    for task in tasks {
        flooders.push(task.await.expect("a flooder"));
    }
    let took = started.elapsed().as_secs_f64();
    let verdict = witnessed(witnesses, "MSG flood").await;
    for f in 0..b.flooders {
        let seen = verdict.foreign_from(&format!("flood{f}"));
        assert!(
            seen.count == b.flood_messages && seen.misnumbered == 0,
            "flood{f}'s messages as a witness saw them: {seen:?} of {}",
            b.flood_messages
        );
    }
    // Every frame counts, the logins included.
    let frames = (b.flooders as u64 * (b.flood_messages + 1)) as f64;
    let allowed = FLOOD_BURST_PER_IP + FLOOD_RATE_PER_IP * (took + 1.0);
    assert!(
        frames <= allowed,
        "MSG flood: {frames} frames of one address handled in {took:.1} s, more than its \
         allowance ({allowed})"
    );
    drop(flooders);
    (
        format!(
            "MSG flood: {} connections of 127.0.0.6 pipelining {} numbered MSGs each",
            b.flooders, b.flood_messages
        ),
        format!(
            "handled in {took:.1} s ({:.1} frames a second after the burst, the address's \
             allowance 20); every message reached the witnesses once, in order; {}",
            (frames - FLOOD_BURST_PER_IP).max(0.0) / took,
            verdict.summary()
        ),
        verdict.lost,
    )
}

/// Phase 6: idle and slowloris connections to the metrics port.
async fn siege(server: &Server, metrics: SocketAddr, b: &BudgetScale) -> Phase {
    let witnesses = Witnesses::start_paced(server.addr(), WITNESS_PACE).await;
    let refused_before = refused_by_server(metrics).await;
    let mut tasks = Vec::new();
    for c in 0..b.metrics_connections {
        tasks.push(tokio::spawn(async move {
            let socket = TcpSocket::new_v4().expect("socket");
            let ip = Ipv4Addr::new(127, 0, 0, 7 + (c % 3) as u8);
            socket
                .bind(SocketAddr::from((ip, 0)))
                .expect("bind a loopback address");
            let mut stream = socket.connect(metrics).await.expect("connect to metrics");
            if c % 2 == 1 {
                // Slowloris: a request that never ends.
                let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nX-").await;
            }
            // Closed at once, or held (until the server's 10 s timeout).
            let mut buf = [0u8; 256];
            let closed = tokio::time::timeout(Duration::from_millis(1500), async {
                while let Ok(1..) = stream.read(&mut buf).await {}
            })
            .await
            .is_ok();
            (closed, stream)
        }));
    }
    let mut held = Vec::new();
    let mut closed = 0;
    for task in tasks {
        let (was_closed, stream) = task.await.expect("a metrics connection");
        if was_closed {
            closed += 1;
        } else {
            held.push(stream);
        }
    }
    let total = b.metrics_connections;
    assert!(
        held.len() <= METRICS_AT_ONCE && closed >= total - METRICS_AT_ONCE,
        "metrics port: {} of {total} held at once, {closed} closed at once",
        held.len()
    );
    let served = held.len();
    drop(held);
    let refused = refused_by_server(metrics).await - refused_before;
    assert!(
        refused >= closed as u64,
        "metrics port: the server counted {refused} refused, {closed} were closed at once"
    );
    let verdict = witnessed(witnesses, "metrics siege").await;
    (
        format!(
            "metrics port: {total} idle and slowloris connections from 127.0.0.7 to .9 at once"
        ),
        format!(
            "{served} served at once (at most 64), {closed} closed at once, {refused} counted \
             in `chat_metrics_connections_refused`; {}",
            verdict.summary()
        ),
        verdict.lost,
    )
}

/// The server's `chat_metrics_connections_refused`, scraped from the
/// metrics port (tried again while the port is still full).
async fn refused_by_server(metrics: SocketAddr) -> u64 {
    let started = Instant::now();
    loop {
        let scrape = async {
            let mut stream = TcpStream::connect(metrics).await.ok()?;
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut text = String::new();
            stream.read_to_string(&mut text).await.ok()?;
            text.lines()
                .filter(|l| l.starts_with("chat_metrics_connections_refused"))
                .find_map(|l| l.split_whitespace().last()?.parse().ok())
        };
        if let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(2), scrape).await {
            return n;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "the metrics port never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
