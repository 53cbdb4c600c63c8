//! `hostile`: the budgets of PROTOCOL.md ("what one address or one client
//! can cost") under attack. Our server is started with
//! `--limits-on-loopback`, so that each loopback address (127.0.0.N) counts
//! as one address. Witnesses (`--witnesses`, each on an address of its
//! own, 127.0.1.N, and a thread of its own) time `PING` round trips, at a
//! pace within their flood allowance, in three phases:
//!
//! 1. quiet: the witnesses alone;
//! 2. busy, the control: as much lobby traffic as the attacks get through,
//!    from users who keep every rule (see [`busy_plans`]);
//! 3. under attack, all at once, each attack from its own addresses:
//!    - history fill: users in many rooms `SAY`ing 4 KiB texts and setting
//!      4 KiB topics;
//!    - room squatting: two addresses `JOIN`ing as many rooms as they can;
//!    - `ROOMS` / `WHO` / `HISTORY` spam from several connections of one
//!      address;
//!    - a reconnect loop from one address (connect, `NAME`, a few `MSG`,
//!      `LEAVE`);
//!    - a flood of `MSG`s from many connections of one address;
//!    - idle and slowloris HTTP connections to the `--metrics` port from
//!      three addresses (see [`metrics_siege`]).
//!
//! The bench shares the server's cores, so it keeps out of the way of what
//! it measures: the attacks' frames are formatted before they start and
//! written many to a `write`, the attackers (and the busy users) run at the
//! lowest CPU priority ([`attacker_thread`]), and a witness sleeping
//! between pings is not woken by the lobby's traffic ([`witness_thread`]).
//!
//! Reported: the witnesses' p99 in each phase, under attack against quiet
//! (target: within 2x) and against busy (what the attacks cost beyond the
//! traffic they are allowed), the server's RSS before and at its peak, and
//! what each attack got through. Checked (the run fails otherwise): the
//! metrics port served at most 64 at once; the peak RSS stayed within the
//! bound the budgets set ([`rss_bound_kib`]); and once the attackers are
//! gone and their rooms forgotten, the RSS came back to within
//! [`RSS_MARGIN_KIB`] of the baseline before the attacks within a minute
//! (sampled every second; the time it took is reported). Like `accounts`,
//! this talks to the server directly, without the worker fleet.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};

use super::metrics_siege::{self, Siege, SERVED_AT_ONCE};
use super::{expect, Options};
use crate::dialect::Dialect;
use crate::report::{Better, Outcome};
use crate::server::{Launch, Running, Target};

/// The longest frame the server takes by default, without the line ending.
const MAX_LINE: usize = 4096;
/// A user may be in this many rooms by default (`--max-rooms-per-user`).
const ROOMS_PER_USER: u32 = 50;
/// Connections of one address by default (`--max-per-ip`): the most the
/// reconnect loop holds at once.
const MAX_PER_IP: u64 = 16;
/// What a connection may hold in the server, by the budgets: 512 KiB of
/// unread output, and its read buffer (a line, 4 KiB) with its session
/// (about 2 KiB), rounded up.
const CONNECTION_KIB: u64 = 512 + 16;
/// What one metrics connection may hold: hyper's buffers and one answer.
const METRICS_CONNECTION_KIB: u64 = 64;
/// History is counted in message bytes; what each kept message costs
/// besides (its time, sender, entry) is under 3 % of a 4 KiB text, and
/// the allocator's size classes round up by at most 25 %: twice leaves
/// room for both.
const HISTORY_OVERHEAD: u64 = 2;
/// How far above the quiet baseline the RSS counts as back: what a
/// quiet server's RSS moves by on its own (allocator caches, thread
/// stacks, the witnesses' buffers).
const RSS_MARGIN_KIB: u64 = 4 * 1024;
/// The contract's "within a minute".
const MEMORY_BACK_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// How long the witnesses ping alone.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub quiet: Duration,
    /// Users timing PINGs, each from an address of its own. Their pace is
    /// bounded by flood control, so it takes many for a p99 that is not
    /// just the slowest pings: 16 take 64 samples a second, 640 in 10 s,
    /// and the p99 is then the 7th slowest.
    #[arg(long, default_value_t = 16)]
    pub witnesses: u32,
    /// How long the control lasts, between the quiet and the attacks: as
    /// much lobby traffic as the attacks get through (`--busy-members`
    /// idle users, `MSG`s at the flood's allowance, a login a second),
    /// from users who keep every rule. 0 leaves it out.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub busy: Duration,
    /// Idle lobby users in the control: as many as the attacks' chat
    /// connections.
    #[arg(long, default_value_t = 60)]
    pub busy_members: u32,
    /// How long the attacks last.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub hostile: Duration,
    /// A witness's pause between two pings: within the default allowance
    /// of 5 frames a second per connection, or the witness measures its
    /// own flood control.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub ping_every: Duration,
    /// Addresses filling history and topics.
    #[arg(long, default_value_t = 3)]
    pub fillers: u32,
    /// Users of each filling address.
    #[arg(long, default_value_t = 4)]
    pub fill_users: u32,
    /// Rooms each filling user joins (each connection may send 5 frames a
    /// second after a burst of 10, so few JOINs leave time to fill).
    #[arg(long, default_value_t = 8)]
    pub fill_rooms: u32,
    /// Connections of each of the two squatting addresses.
    #[arg(long, default_value_t = 8)]
    pub squatters: u32,
    /// Connections of the address spamming ROOMS, WHO and HISTORY.
    #[arg(long, default_value_t = 4)]
    pub spammers: u32,
    /// Connections of the address flooding MSGs.
    #[arg(long, default_value_t = 12)]
    pub flooders: u32,
    /// Connections to the metrics port, half idle, half slowloris, from
    /// 127.0.0.7 to .9.
    #[arg(long, default_value_t = 150)]
    pub metrics_conns: u32,
    /// The server's `--history-memory`, MiB (its default: 64): the RSS
    /// bound counts it.
    #[arg(long, default_value_t = 64)]
    pub history_mib: u64,
}

impl Sizes {
    pub fn params(&self) -> String {
        format!(
            "witnesses={} quiet={} busy={}x{} hostile={} fillers={}x{}x{} squatters=2x{} \
             spammers={} flooders={} metrics={} history={}MiB",
            self.witnesses,
            humantime::format_duration(self.quiet),
            humantime::format_duration(self.busy),
            self.busy_members,
            humantime::format_duration(self.hostile),
            self.fillers,
            self.fill_users,
            self.fill_rooms,
            self.squatters,
            self.spammers,
            self.flooders,
            self.metrics_conns,
            self.history_mib
        )
    }
}

/// What an attack's connections received, by kind of frame (see [`kind`]),
/// plus `sent` for the frames they wrote.
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<BTreeMap<String, u64>>>);

impl Tally {
    fn add(&self, key: &str, n: u64) {
        let mut map = self.0.lock().expect("tally lock");
        *map.entry(key.to_owned()).or_default() += n;
    }

    fn get(&self, key: &str) -> u64 {
        let map = self.0.lock().expect("tally lock");
        map.get(key).copied().unwrap_or(0)
    }
}

/// A received frame's kind: its verb; `ERROR <code>`; `NAMES #` for a
/// room's; `MSG <who>` / `SAY <who>` with the sender's name's digits cut
/// (so that all of one attack's senders count together).
fn kind(line: &str) -> String {
    let mut words = line.split(' ');
    let verb = words.next().unwrap_or("");
    let first = words.next().unwrap_or("");
    match verb {
        "ERROR" => format!("ERROR {first}"),
        "NAMES" if first.starts_with('#') => "NAMES #".into(),
        "MSG" => format!(
            "MSG {}",
            first.trim_end_matches(|c: char| c.is_ascii_digit())
        ),
        "SAY" => {
            let from = words.next().unwrap_or("");
            format!(
                "SAY {}",
                from.trim_end_matches(|c: char| c.is_ascii_digit())
            )
        }
        _ => verb.to_owned(),
    }
}

pub async fn run(target: &Target, sizes: &Sizes, options: &Options) -> io::Result<Outcome> {
    let mut outcome = Outcome::default();
    if target.dialect != Dialect::Chat {
        outcome
            .notes
            .push("hostile: the budgets are our server's (version 2 frames)".into());
        return Ok(outcome);
    }
    let mut target = target.clone();
    match &mut target.launch {
        Launch::Binary { args, .. } => {
            if !args.iter().any(|a| a == "--limits-on-loopback") {
                args.push("--limits-on-loopback".into());
            }
            if !args.iter().any(|a| a.starts_with("--metrics")) {
                args.extend(["--metrics".into(), "127.0.0.1:0".into()]);
            }
            if args.iter().any(|a| a.starts_with("--history-memory")) {
                outcome.notes.push(
                    "--history-memory given as a server flag: the RSS bound counts \
                     --history-mib"
                        .into(),
                );
            } else {
                args.extend([
                    "--history-memory".into(),
                    format!("{}MiB", sizes.history_mib),
                ]);
            }
        }
        // The machine's floor: what the witnesses get, quiet and busy, from
        // a process that only relays. It has no budgets, so no attacks.
        Launch::Floor { .. } => {
            let server = target.start(200).await?;
            let result = control(&server.addr, sizes, options, &mut outcome).await;
            server.stop().await;
            return result.map(|()| outcome);
        }
        Launch::Cluster { .. } => {
            outcome
                .notes
                .push("hostile: rooms are not served in cluster mode".into());
            return Ok(outcome);
        }
        _ => outcome.notes.push(
            "server not started by the bench: the budgets on loopback are as it was \
             started (it needs --limits-on-loopback)"
                .into(),
        ),
    }
    let server = target.start(200).await?;
    let addr: SocketAddr = server
        .addr
        .split(',')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|e| io::Error::other(format!("server address {}: {e}", server.addr)))?;
    let result = attack(&server, addr, sizes, options, &mut outcome).await;
    server.stop().await;
    result.map(|()| outcome)
}

async fn attack(
    server: &Running,
    addr: SocketAddr,
    sizes: &Sizes,
    options: &Options,
    outcome: &mut Outcome,
) -> io::Result<()> {
    let witnesses = Witnesses::start(addr, sizes, options).await?;
    let fill = Tally::default();
    let squat = [Tally::default(), Tally::default()];
    let spam = Tally::default();
    let reconnect = Tally::default();
    let flood = Tally::default();
    let siege = Siege::default();
    // Every attack is made ready (its frames formatted) before it starts,
    // so that the bench's own work at the start does not take a core from
    // the server and the witnesses. Addresses: fillers from 127.0.0.10,
    // squatters .2 and .3, spam .4, reconnects .5, flood .6.
    let mut plans: Vec<Attack> = Vec::new();
    for a in 0..sizes.fillers {
        let ip = Ipv4Addr::new(127, 0, 0, 10 + a as u8);
        for u in 0..sizes.fill_users {
            let user = a * 1000 + u;
            plans.push(Box::pin(filler(
                addr,
                ip,
                user,
                sizes.fill_rooms,
                fill.clone(),
            )));
        }
    }
    for (a, tally) in squat.iter().enumerate() {
        let ip = Ipv4Addr::new(127, 0, 0, 2 + a as u8);
        for c in 0..sizes.squatters {
            let name = format!("sq{a}c{c}");
            let frames = batches((0..ROOMS_PER_USER).map(|r| format!("JOIN #s{a}c{c}r{r}")));
            plans.push(Box::pin(pipeline(addr, ip, name, frames, tally.clone())));
        }
    }
    for c in 0..sizes.spammers {
        let ip = Ipv4Addr::new(127, 0, 0, 4);
        let frames = batches(
            ["ROOMS", "WHO", "HISTORY 100"]
                .into_iter()
                .cycle()
                .take(3000)
                .map(String::from),
        );
        plans.push(Box::pin(pipeline(
            addr,
            ip,
            format!("spam{c}"),
            frames,
            spam.clone(),
        )));
    }
    plans.push(Box::pin(reconnects(
        addr,
        Ipv4Addr::new(127, 0, 0, 5),
        reconnect.clone(),
    )));
    for c in 0..sizes.flooders {
        let ip = Ipv4Addr::new(127, 0, 0, 6);
        let frames = batches((0..20_000).map(|m| format!("MSG flood {c} {m}")));
        plans.push(Box::pin(pipeline(
            addr,
            ip,
            format!("fl{c}"),
            frames,
            flood.clone(),
        )));
    }
    let metrics_addr = match &server.metrics {
        Some(metrics) => Some(
            metrics
                .parse::<SocketAddr>()
                .map_err(|e| io::Error::other(format!("metrics address {metrics}: {e}")))?,
        ),
        None => {
            outcome
                .notes
                .push("no metrics port known (start the server with --metrics): no siege".into());
            None
        }
    };
    if let Some(metrics) = metrics_addr {
        for c in 0..sizes.metrics_conns {
            let ip = Ipv4Addr::new(127, 0, 0, 7 + (c % 3) as u8);
            plans.push(Box::pin(siege.clone().besiege(metrics, ip, c % 2 == 1)));
        }
    }

    sleep(sizes.quiet).await;
    let busy = busy_phase(addr, sizes, outcome).await?;
    let rss_before = server.rss_kib();
    let started = Instant::now();
    let end = started + sizes.hostile;
    let attackers = Crowd::start("attackers", plans, end)?;
    let mut rss_peak = rss_before.unwrap_or(0);
    while Instant::now() < end {
        sleep(Duration::from_millis(100)).await;
        rss_peak = rss_peak.max(server.rss_kib().unwrap_or(0));
    }
    attackers.finish(outcome).await?;
    let rss_after = server.rss_kib();
    let refused_by_server = match &server.metrics {
        Some(metrics) => Some(metrics_siege::refused_by_server(metrics).await),
        None => None,
    };
    // The attackers are gone and their rooms forgotten: the memory must go
    // back to the system within a minute.
    let memory_back = match rss_before {
        Some(before) => Some(memory_back(server, before).await),
        None => None,
    };

    let (mut quiet, mut chat, mut hostile) = (Vec::new(), Vec::new(), Vec::new());
    let mut slowest = Vec::new();
    for (at, rtt) in witnesses.stop(outcome).await? {
        if at < busy.started {
            quiet.push(rtt);
        } else if at < busy.end {
            chat.push(rtt);
        } else if at < started {
            // The busy users leaving.
        } else if at < end {
            hostile.push(rtt);
            slowest.push((rtt, at - started));
        }
    }
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    let worst: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|(rtt, into)| {
            format!(
                "{:.2} ms at {:.2} s",
                rtt.as_secs_f64() * 1e3,
                into.as_secs_f64()
            )
        })
        .collect();
    outcome.notes.push(format!(
        "slowest witness pings under attack (and when, into the attacks): {}",
        worst.join(", ")
    ));
    let hostile_n = hostile.len();
    let (quiet_p99, chat_p99) = report_control(outcome, &mut quiet, &mut chat, &busy.tally);
    let hostile_p99 = p99_ms(&mut hostile);
    outcome.notes.push(format!(
        "witness round trips under attack (ms): {} ({hostile_n} samples)",
        spread(&hostile)
    ));
    let ratio = hostile_p99 / quiet_p99.max(1e-3);
    outcome.metric(
        "ping_hostile_p99_ms",
        "witness PING p99, under attack (ms)",
        hostile_p99,
        Better::Lower,
    );
    outcome.metric(
        "ping_ratio",
        "witness PING p99, attack / quiet (target <= 2)",
        ratio,
        Better::Lower,
    );
    if let Some(chat_p99) = chat_p99 {
        outcome.metric(
            "ping_ratio_busy",
            "witness PING p99, attack / busy",
            hostile_p99 / chat_p99.max(1e-3),
            Better::Lower,
        );
    }
    if ratio > 2.0 {
        outcome
            .notes
            .push(format!("witness p99 ratio {ratio:.2}: target (2x) not met"));
    }
    let chat_connections = 2
        + u64::from(sizes.fillers * sizes.fill_users)
        + u64::from(2 * sizes.squatters)
        + u64::from(sizes.spammers)
        + MAX_PER_IP
        + u64::from(sizes.flooders);
    if let Some(before) = rss_before {
        let bound = rss_bound_kib(before, sizes.history_mib, chat_connections);
        outcome.metric(
            "rss_bound_kib",
            "server RSS bound by the budgets (KiB)",
            bound as f64,
            Better::Neither,
        );
        if rss_peak > bound {
            outcome.problems.push(format!(
                "server RSS bound NOT MET: peak {rss_peak} KiB over {bound} KiB (the quiet \
                 {before} KiB, {} MiB of history twice, {chat_connections} chat connections \
                 at {CONNECTION_KIB} KiB, {SERVED_AT_ONCE} metrics connections at \
                 {METRICS_CONNECTION_KIB} KiB)",
                sizes.history_mib
            ));
        }
        for (key, label, value) in [
            (
                "rss_before_kib",
                "server RSS before the attacks (KiB)",
                before,
            ),
            (
                "rss_peak_kib",
                "server RSS peak during them (KiB)",
                rss_peak,
            ),
            (
                "rss_after_kib",
                "server RSS when they stop (KiB)",
                rss_after.unwrap_or(0),
            ),
        ] {
            outcome.metric(key, label, value as f64, Better::Lower);
        }
    }
    let counts = [
        ("fill_says", "fill: 4 KiB SAYs echoed", fill.get("SAY fill")),
        (
            "fill_topics",
            "fill: 4 KiB TOPICs echoed",
            fill.get("TOPIC"),
        ),
        (
            "squat0_joins",
            "squat 127.0.0.2: JOINs admitted",
            squat[0].get("NAMES #"),
        ),
        (
            "squat0_refused",
            "squat 127.0.0.2: JOINs too-many-rooms",
            squat[0].get("ERROR too-many-rooms"),
        ),
        (
            "squat1_joins",
            "squat 127.0.0.3: JOINs admitted",
            squat[1].get("NAMES #"),
        ),
        (
            "squat1_refused",
            "squat 127.0.0.3: JOINs too-many-rooms",
            squat[1].get("ERROR too-many-rooms"),
        ),
        ("spam_sent", "spam: requests written", spam.get("sent")),
        (
            "spam_history",
            "spam: HISTORY answered",
            spam.get("HISTORY"),
        ),
        ("spam_rooms", "spam: ROOMS answered", spam.get("ROOMS")),
        (
            "reconnect_admitted",
            "reconnect: logins admitted",
            reconnect.get("WELCOME"),
        ),
        (
            "reconnect_refused",
            "reconnect: refused (too-many-connections)",
            reconnect.get("ERROR too-many-connections"),
        ),
        ("flood_sent", "flood: MSGs written", flood.get("sent")),
        (
            "flood_handled",
            "flood: MSGs broadcast",
            flood.get("MSG fl") / u64::from(sizes.flooders.max(1)),
        ),
        (
            "flood_refused",
            "flood: connections refused",
            flood.get("ERROR too-many-connections") + flood.get("connect-failed"),
        ),
    ];
    for (key, label, value) in counts {
        outcome.metric(key, label, value as f64, Better::Neither);
    }
    match memory_back {
        Some(Ok(took)) => outcome.metric(
            "memory_back_s",
            "RSS back within 4 MiB of quiet (s)",
            took.as_secs_f64(),
            Better::Lower,
        ),
        Some(Err(last)) => outcome.problems.push(format!(
            "memory back within a minute NOT MET: {last} KiB after {} s, the quiet baseline \
             {} KiB (margin {RSS_MARGIN_KIB} KiB)",
            MEMORY_BACK_WITHIN.as_secs(),
            rss_before.unwrap_or(0)
        )),
        None => {}
    }
    if metrics_addr.is_some() {
        let most = siege.most_served();
        for (key, label, value) in [
            (
                "metrics_most_served",
                "metrics: most served at once (<= 64)",
                most as u64,
            ),
            (
                "metrics_refused",
                "metrics: closed at once (seen)",
                siege.refused(),
            ),
            (
                "metrics_closed_later",
                "metrics: served, then closed",
                siege.closed_later(),
            ),
        ] {
            outcome.metric(key, label, value as f64, Better::Neither);
        }
        match refused_by_server {
            Some(Ok(n)) => outcome.metric(
                "metrics_refused_server",
                "metrics: refused (server's count)",
                n as f64,
                Better::Neither,
            ),
            Some(Err(e)) => outcome
                .problems
                .push(format!("the metrics port after the siege: {e}")),
            None => {}
        }
        if most > SERVED_AT_ONCE {
            outcome.problems.push(format!(
                "the metrics port served {most} connections at once (at most {SERVED_AT_ONCE})"
            ));
        }
        if siege.failed() > 0 {
            outcome.notes.push(format!(
                "metrics: {} connections could not be opened",
                siege.failed()
            ));
        }
    }
    for (name, tally) in [
        ("fill", &fill),
        ("squat .2", &squat[0]),
        ("squat .3", &squat[1]),
        ("spam", &spam),
        ("reconnect", &reconnect),
        ("flood", &flood),
    ] {
        let map = tally.0.lock().expect("tally lock");
        let errors: Vec<String> = map
            .iter()
            .filter(|(k, _)| k.starts_with("ERROR") || k.as_str() == "connect-failed")
            .map(|(k, v)| format!("{k} x{v}"))
            .collect();
        if !errors.is_empty() {
            outcome
                .notes
                .push(format!("{name} got: {}", errors.join(", ")));
        }
    }
    Ok(())
}

/// The floor's run: the witnesses quiet, then busy; no attacks.
async fn control(
    addr: &str,
    sizes: &Sizes,
    options: &Options,
    outcome: &mut Outcome,
) -> io::Result<()> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::other(format!("server address {addr}: {e}")))?;
    let witnesses = Witnesses::start(addr, sizes, options).await?;
    sleep(sizes.quiet).await;
    let busy = busy_phase(addr, sizes, outcome).await?;
    let (mut quiet, mut chat) = (Vec::new(), Vec::new());
    for (at, rtt) in witnesses.stop(outcome).await? {
        if at < busy.started {
            quiet.push(rtt);
        } else if at < busy.end {
            chat.push(rtt);
        }
    }
    report_control(outcome, &mut quiet, &mut chat, &busy.tally);
    Ok(())
}

/// The control phase, when it ran (see [`Sizes::busy`]).
struct Busy {
    started: Instant,
    end: Instant,
    tally: Tally,
}

/// Runs the control: as much lobby traffic as the attacks get through,
/// from users who keep every rule, to tell what the attacks cost the
/// witnesses from what the chat they are allowed costs; then a second for
/// their `LEAVE`s to reach everyone.
async fn busy_phase(addr: SocketAddr, sizes: &Sizes, outcome: &mut Outcome) -> io::Result<Busy> {
    let started = Instant::now();
    let busy = Busy {
        started,
        end: started + sizes.busy,
        tally: Tally::default(),
    };
    if !sizes.busy.is_zero() {
        let plans = busy_plans(addr, sizes, &busy.tally);
        Crowd::start("busy", plans, busy.end)?
            .finish(outcome)
            .await?;
        sleep(Duration::from_secs(1)).await;
    }
    Ok(busy)
}

/// Reports the witnesses' quiet and busy round trips, and returns their
/// p99s (busy's if it ran).
fn report_control(
    outcome: &mut Outcome,
    quiet: &mut [Duration],
    chat: &mut [Duration],
    busy: &Tally,
) -> (f64, Option<f64>) {
    let quiet_p99 = p99_ms(quiet);
    outcome.metric(
        "ping_quiet_p99_ms",
        "witness PING p99, quiet (ms)",
        quiet_p99,
        Better::Lower,
    );
    outcome.notes.push(format!(
        "witness round trips (ms), quiet: {} ({} samples)",
        spread(quiet),
        quiet.len()
    ));
    if chat.is_empty() {
        return (quiet_p99, None);
    }
    let chat_p99 = p99_ms(chat);
    outcome.notes.push(format!(
        "witness round trips (ms), busy: {} ({} samples)",
        spread(chat),
        chat.len()
    ));
    outcome.metric(
        "ping_busy_p99_ms",
        "witness PING p99, busy: the attacks' traffic, allowed (ms)",
        chat_p99,
        Better::Lower,
    );
    outcome.metric(
        "ping_busy_ratio",
        "witness PING p99, busy / quiet",
        chat_p99 / quiet_p99.max(1e-3),
        Better::Lower,
    );
    outcome.metric(
        "busy_sent",
        "busy: MSGs the busy users sent",
        busy.get("sent") as f64,
        Better::Neither,
    );
    outcome.metric(
        "busy_logins",
        "busy: logins and LEAVEs",
        busy.get("visit") as f64,
        Better::Neither,
    );
    (quiet_p99, Some(chat_p99))
}

/// The witnesses, pinging on threads of their own (see [`witness_thread`]).
struct Witnesses {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Witnessed>>,
}

impl Witnesses {
    /// Logs the witnesses in and starts their pings.
    async fn start(addr: SocketAddr, sizes: &Sizes, options: &Options) -> io::Result<Witnesses> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread = {
            let (stop, every, limit) = (stop.clone(), sizes.ping_every, options.timeout);
            let count = sizes.witnesses;
            std::thread::Builder::new()
                .name("witnesses".into())
                .spawn(move || witness_thread(addr, count, stop, every, limit, ready_tx))?
        };
        ready_rx
            .await
            .map_err(|_| io::Error::other("the witnesses did not start"))??;
        Ok(Witnesses { stop, thread })
    }

    /// Stops the pings: every witness's samples (when sent, round trip);
    /// a witness that failed is a problem in `outcome`.
    async fn stop(self, outcome: &mut Outcome) -> io::Result<Vec<(Instant, Duration)>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(io::Error::other)?
            .map_err(|_| io::Error::other("a witness panicked"))?;
        let mut all = Vec::new();
        for (times, error) in joined {
            if let Some(e) = error {
                outcome.problems.push(format!("a witness failed: {e}"));
            }
            all.extend(times);
        }
        Ok(all)
    }
}

/// The most RSS the server may take under the attacks, by its budgets:
/// the quiet `before`, all the history it may keep (`history_mib`, with
/// [`HISTORY_OVERHEAD`]), every chat connection at its most
/// ([`CONNECTION_KIB`]) and the metrics port full ([`SERVED_AT_ONCE`] at
/// [`METRICS_CONNECTION_KIB`]).
fn rss_bound_kib(before: u64, history_mib: u64, chat_connections: u64) -> u64 {
    before
        + history_mib * 1024 * HISTORY_OVERHEAD
        + chat_connections * CONNECTION_KIB
        + SERVED_AT_ONCE as u64 * METRICS_CONNECTION_KIB
}

/// Samples the server's RSS every second until it is within
/// [`RSS_MARGIN_KIB`] of `before`: how long that took, or the last sample
/// if it was not back within [`MEMORY_BACK_WITHIN`].
async fn memory_back(server: &Running, before: u64) -> Result<Duration, u64> {
    let started = Instant::now();
    loop {
        let now = server.rss_kib().unwrap_or(u64::MAX);
        if now <= before + RSS_MARGIN_KIB {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= MEMORY_BACK_WITHIN {
            return Err(now);
        }
        sleep(Duration::from_secs(1)).await;
    }
}

/// A connection from `ip` (a loopback address of its own) to `addr`.
async fn connect_from(addr: SocketAddr, ip: Ipv4Addr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((ip, 0)))?;
    socket.connect(addr).await
}

/// Connects from `ip` and sends `NAME name`, without waiting for the answer.
async fn login(
    addr: SocketAddr,
    ip: Ipv4Addr,
    name: &str,
) -> io::Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> {
    let (read, mut write) = connect_from(addr, ip).await?.into_split();
    write.write_all(format!("NAME {name}\n").as_bytes()).await?;
    Ok((BufReader::new(read), write))
}

/// Reads everything the connection receives into `tally`, until it closes.
async fn drain(mut reader: BufReader<OwnedReadHalf>, tally: Tally) {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => tally.add(&kind(line.trim_end()), 1),
        }
    }
}

/// A connection's reader, stopped when the attack holding it is dropped.
struct Reading(tokio::task::JoinHandle<()>);

impl Reading {
    async fn finish(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The control's users (see [`Sizes::busy`]): idle members 8 to an
/// address from 127.0.2.N; senders from 127.0.3.N, one an address, whose
/// `MSG`s together come at `--flood-rate-per-ip` (20 a second), what the
/// flood gets through; and a login a second from 127.0.4.N, as the
/// reconnect loop gets, each user leaving once welcomed.
fn busy_plans(addr: SocketAddr, sizes: &Sizes, tally: &Tally) -> Vec<Attack> {
    const SENDERS: u32 = 5;
    const EACH_EVERY: Duration = Duration::from_millis(250);
    let mut plans: Vec<Attack> = Vec::new();
    for m in 0..sizes.busy_members {
        let ip = Ipv4Addr::new(127, 0, 2, (m / 8 + 1) as u8);
        plans.push(Box::pin(pipeline(
            addr,
            ip,
            format!("member{m}"),
            Vec::new(),
            tally.clone(),
        )));
    }
    for c in 0..SENDERS {
        let ip = Ipv4Addr::new(127, 0, 3, (c + 1) as u8);
        // Spread over the pause, as the flood's admitted frames are.
        let offset = EACH_EVERY * c / SENDERS;
        plans.push(Box::pin(chatter(
            addr,
            ip,
            c,
            offset,
            EACH_EVERY,
            tally.clone(),
        )));
    }
    plans.push(Box::pin(churn(addr, Duration::from_secs(1), tally.clone())));
    plans
}

/// A well-behaved user who says something every `every`.
async fn chatter(
    addr: SocketAddr,
    ip: Ipv4Addr,
    n: u32,
    offset: Duration,
    every: Duration,
    tally: Tally,
) {
    let Ok((reader, mut writer)) = login(addr, ip, &format!("talker{n}")).await else {
        tally.add("connect-failed", 1);
        return;
    };
    let _reading = Reading(tokio::spawn(drain(reader, tally.clone())));
    sleep(offset).await;
    for m in 0u64.. {
        let frame = format!("MSG talk {n} {m}\n");
        if writer.write_all(frame.as_bytes()).await.is_err() {
            return;
        }
        tally.add("sent", 1);
        sleep(every).await;
    }
}

/// A user logs in and leaves every `every`, each from an address of its
/// own.
async fn churn(addr: SocketAddr, every: Duration, tally: Tally) {
    for n in 0u32.. {
        let next = Instant::now() + every;
        let ip = Ipv4Addr::new(127, 0, 4, (n % 250 + 1) as u8);
        let visit = async {
            let (mut reader, mut writer) = login(addr, ip, &format!("visitor{n}")).await?;
            expect(&mut reader, "WELCOME ", Duration::from_secs(5)).await?;
            tally.add("visit", 1);
            writer.write_all(b"LEAVE\n").await
        };
        if visit.await.is_err() {
            tally.add("connect-failed", 1);
        }
        sleep_until(next).await;
    }
}

/// An attack, made ready: its frames are formatted before it starts.
type Attack = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Frames written with one `write`: an attacker who wants the most of each
/// system call sends many frames at once, and a frame per `write` would
/// have the bench, not the server, take a core.
const BATCH_BYTES: usize = 64 * 1024;

/// Frames, each with its line ending, in batches of at most
/// [`BATCH_BYTES`] (or one frame): the bytes and how many frames they hold.
fn batches(frames: impl Iterator<Item = String>) -> Vec<(Vec<u8>, u64)> {
    let mut batches: Vec<(Vec<u8>, u64)> = Vec::new();
    for frame in frames {
        match batches.last_mut() {
            Some((bytes, n)) if bytes.len() + frame.len() < BATCH_BYTES => {
                bytes.extend_from_slice(frame.as_bytes());
                bytes.push(b'\n');
                *n += 1;
            }
            _ => {
                let mut bytes = Vec::with_capacity(BATCH_BYTES);
                bytes.extend_from_slice(frame.as_bytes());
                bytes.push(b'\n');
                batches.push((bytes, 1));
            }
        }
    }
    batches
}

/// Logs in as `name` from `ip` and writes `batches` (see [`batches`]) one
/// after another, as fast as the server reads them, while another task
/// reads everything. Returns when the frames are written or the connection
/// fails (a refusal is counted, not an error); the reader goes on until the
/// attack ends.
async fn pipeline(
    addr: SocketAddr,
    ip: Ipv4Addr,
    name: String,
    batches: Vec<(Vec<u8>, u64)>,
    tally: Tally,
) {
    let Ok((reader, mut writer)) = login(addr, ip, &name).await else {
        tally.add("connect-failed", 1);
        return;
    };
    let reading = Reading(tokio::spawn(drain(reader, tally.clone())));
    for (bytes, frames) in batches {
        if writer.write_all(&bytes).await.is_err() {
            break;
        }
        tally.add("sent", frames);
    }
    reading.finish().await;
}

/// Joins `rooms` rooms, then fills their history and topics with 4 KiB
/// texts.
async fn filler(addr: SocketAddr, ip: Ipv4Addr, user: u32, rooms: u32, tally: Tally) {
    let Ok((reader, mut writer)) = login(addr, ip, &format!("fill{user}")).await else {
        tally.add("connect-failed", 1);
        return;
    };
    let reading = Reading(tokio::spawn(drain(reader, tally.clone())));
    let rooms: Vec<String> = (0..rooms.max(1)).map(|r| format!("#f{user}r{r}")).collect();
    let mut frames: Vec<String> = rooms.iter().map(|room| format!("JOIN {room}")).collect();
    'fill: for n in 0u64.. {
        for room in &rooms {
            let verb = if n % 4 == 3 { "TOPIC" } else { "SAY" };
            let prefix = format!("{verb} {room} ");
            frames.push(format!("{prefix}{}", "x".repeat(MAX_LINE - prefix.len())));
            for frame in frames.drain(..) {
                if writer
                    .write_all(format!("{frame}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break 'fill;
                }
                tally.add("sent", 1);
            }
        }
    }
    reading.finish().await;
}

/// Connects from `ip`, logs in, says a few `MSG`s and leaves, over and
/// over; a refused connection is counted and the loop goes on.
async fn reconnects(addr: SocketAddr, ip: Ipv4Addr, tally: Tally) {
    for n in 0u64.. {
        let attempt = async {
            let (mut reader, mut writer) = login(addr, ip, &format!("rc{n}")).await?;
            let mut line = String::new();
            // Until WELCOME or a refusal.
            loop {
                line.clear();
                if reader.read_line(&mut line).await? == 0 {
                    return Err(io::Error::other("closed"));
                }
                let k = kind(line.trim_end());
                if k == "WELCOME" || k.starts_with("ERROR") {
                    tally.add(&k, 1);
                    if k != "WELCOME" {
                        return Ok(());
                    }
                    break;
                }
            }
            for m in 0..3 {
                writer
                    .write_all(format!("MSG reconnect {n} {m}\n").as_bytes())
                    .await?;
            }
            writer.write_all(b"LEAVE\n").await?;
            loop {
                line.clear();
                if reader.read_line(&mut line).await? == 0 || line.starts_with("BYE") {
                    return Ok(());
                }
            }
        };
        match timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tally.add("connect-failed", 1),
            Err(_) => tally.add("timed-out", 1),
        }
        // Not a hot spin on refusals.
        sleep(Duration::from_millis(5)).await;
    }
}

/// What one witness measured: when each ping was sent and its round trip,
/// and the error that stopped it early, if one did.
type Witnessed = (Vec<(Instant, Duration)>, Option<io::Error>);

/// Attackers, or the control's busy users, running on a thread of their
/// own (see [`attacker_thread`]).
struct Crowd {
    name: &'static str,
    thread: std::thread::JoinHandle<io::Result<Option<io::Error>>>,
}

impl Crowd {
    fn start(name: &'static str, plans: Vec<Attack>, end: Instant) -> io::Result<Crowd> {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || attacker_thread(plans, end))?;
        Ok(Crowd { name, thread })
    }

    /// Waits for the crowd's thread to end (at its `end`), noting if it
    /// could not run at the lowest priority.
    async fn finish(self, outcome: &mut Outcome) -> io::Result<()> {
        let Crowd { name, thread } = self;
        let not_lowered = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(io::Error::other)?
            .map_err(|_| io::Error::other(format!("one of the {name} panicked")))??;
        if let Some(e) = not_lowered {
            outcome
                .notes
                .push(format!("{name} at normal priority: {e}"));
        }
        Ok(())
    }
}

/// Runs the attacks until `end`, on a thread of their own at the lowest
/// CPU priority (`SCHED_IDLE`). Attackers elsewhere would not take this
/// machine's CPU; here, on the server's own cores, their reading and
/// writing would otherwise stand in the server's and the witnesses' way,
/// and the witnesses would time the bench. They still get every cycle the
/// server and the witnesses leave idle, and the counts in the report show
/// what they got through.
///
/// Returns why the priority could not be lowered, if it could not: the
/// attacks then run all the same, and the report says so.
fn attacker_thread(plans: Vec<Attack>, end: Instant) -> io::Result<Option<io::Error>> {
    let lowered = lowest_priority();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut attacks = JoinSet::new();
        for plan in plans {
            attacks.spawn(timeout_at(end, plan));
        }
        while attacks.join_next().await.is_some() {}
    });
    Ok(lowered.err())
}

/// Puts the calling thread under `SCHED_IDLE`: it runs only when no other
/// thread wants the CPU. Lowering one's own priority needs no privilege.
fn lowest_priority() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    let done = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Logs `count` witnesses in, from 127.0.1.1 on, says so on `ready`, and
/// has each ping until `stop` on a thread of its own, with a blocking
/// socket. Everyone is in the lobby, so every witness receives all its
/// traffic; a witness sleeping between two pings must not be woken by it,
/// or the witnesses' own reading, many sockets at each broadcast, would
/// be what they time. A blocking socket that is not being read wakes
/// nobody: the lines wait in it and are read, quickly, at the next ping.
fn witness_thread(
    addr: SocketAddr,
    count: u32,
    stop: Arc<AtomicBool>,
    every: Duration,
    limit: Duration,
    ready: tokio::sync::oneshot::Sender<io::Result<()>>,
) -> Vec<Witnessed> {
    let logged_in = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| {
            runtime.block_on(async move {
                let mut streams = Vec::new();
                for n in 0..count {
                    let ip = Ipv4Addr::new(127, 0, 1, (n % 250 + 1) as u8);
                    let (mut reader, writer) = login(addr, ip, &format!("witness{n}")).await?;
                    expect(&mut reader, "WELCOME ", limit).await?;
                    let stream = reader
                        .into_inner()
                        .reunite(writer)
                        .map_err(io::Error::other)?
                        .into_std()?;
                    stream.set_nonblocking(false)?;
                    streams.push(stream);
                }
                Ok(streams)
            })
        });
    let streams = match logged_in {
        Ok(streams) => streams,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Vec::new();
        }
    };
    let _ = ready.send(Ok(()));
    let witnesses = streams.len() as u32;
    let pinging: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(n, stream)| {
            let stop = stop.clone();
            // Spread over the pause, so that one moment's delay is one
            // sample, not one from each witness at once.
            let offset = every * n as u32 / witnesses.max(1);
            std::thread::Builder::new()
                .name(format!("witness{n}"))
                .spawn(move || ping(stream, offset, every, &stop))
        })
        .collect();
    pinging
        .into_iter()
        .map(|spawned| match spawned {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|_| (Vec::new(), Some(io::Error::other("a witness panicked")))),
            Err(e) => (Vec::new(), Some(e)),
        })
        .collect()
}

/// Pings every `every`, after `offset`, until told to stop: when each ping
/// was sent and its round trip, and the error that stopped it early, if one
/// did.
fn ping(
    stream: std::net::TcpStream,
    offset: Duration,
    every: Duration,
    stop: &AtomicBool,
) -> Witnessed {
    use std::io::{BufRead as _, Write as _};
    let mut times = Vec::new();
    let setup = stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .and_then(|()| stream.try_clone());
    let mut writer = match setup {
        Ok(writer) => writer,
        Err(e) => return (times, Some(e)),
    };
    let mut reader = std::io::BufReader::new(stream);
    std::thread::sleep(offset);
    let mut line = String::new();
    for n in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let sent = std::time::Instant::now();
        let pong = format!("PONG w{n}");
        let round = (|| {
            writer.write_all(format!("PING w{n}\n").as_bytes())?;
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Err(io::Error::other(format!("closed before {pong}")));
                }
                if line.starts_with(&pong) {
                    return Ok(());
                }
                if line.starts_with("ERROR ") {
                    return Err(io::Error::other(line.trim_end().to_owned()));
                }
            }
        })();
        if let Err(e) = round {
            return (times, Some(e));
        }
        times.push((Instant::from_std(sent), sent.elapsed()));
        std::thread::sleep(every);
    }
    (times, None)
}

/// The p50, p90, p99 and max of sorted `times`, in ms.
fn spread(sorted: &[Duration]) -> String {
    let at = |q: f64| {
        let i = ((sorted.len() as f64) * q).ceil() as usize;
        sorted
            .get(i.clamp(1, sorted.len().max(1)) - 1)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    format!(
        "p50 {:.3}, p90 {:.3}, p99 {:.3}, max {:.3}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}

fn p99_ms(times: &mut [Duration]) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    times.sort_unstable();
    let at = ((times.len() as f64) * 0.99).ceil() as usize;
    times[at.clamp(1, times.len()) - 1].as_secs_f64() * 1e3
}
