//! Every metric the server keeps: their names, their help, and the
//! functions that record them.
//!
//! Recording must cost nothing a user could notice, even for what happens
//! per frame and per recipient: each count is a plain atomic in a static,
//! labelled by an index into a fixed table of `&'static str` (a verb, an
//! error code, a cause), never a map, a lock or an allocation. The counts
//! that every session bumps (frames received, deliveries) are striped
//! across cache lines, so that sessions on different threads do not fight
//! over one. The numbers are turned into Prometheus text only when scraped,
//! by `prometheus-client`'s encoder ([`render`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use chat_protocol::{ErrorCode, Verb};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Cache lines a hot counter is spread over.
const STRIPES: usize = 8;

/// A counter bumped from many threads: each thread adds to its own stripe,
/// and a scrape adds the stripes up.
struct Striped([Padded; STRIPES]);

/// One stripe, alone on its cache line.
#[repr(align(128))]
struct Padded(AtomicU64);

impl Striped {
    const fn new() -> Striped {
        Striped([const { Padded(AtomicU64::new(0)) }; STRIPES])
    }

    fn add(&self, n: u64) {
        self.0[stripe()].0.fetch_add(n, Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Relaxed)).sum()
    }
}

/// This thread's stripe, handed out in turn.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        if stripe.get() == usize::MAX {
            stripe.set(NEXT.fetch_add(1, Relaxed) % STRIPES);
        }
        stripe.get()
    })
}

/// A plain counter, for what happens per connection rather than per frame.
type Count = AtomicU64;

const fn counts<const N: usize>() -> [Count; N] {
    [const { AtomicU64::new(0) }; N]
}

/// Why a session ended, as [`leave`] is told (the session's own words).
const LEAVE_CAUSES: [&str; 13] = [
    "left",
    "closed",
    "reset",
    "idle",
    "login timeout",
    "shutting down",
    "closed by the server",
    "evicted",
    "kicked",
    "banned",
    "logged in elsewhere",
    "stalled",
    "other",
];
const LISTENERS: [&str; 4] = ["plain", "tls", "web", "web-tls"];

/// Which door a connection came through, for the per-listener counts:
/// the plaintext and TLS listeners, and a WebSocket on `--web-addr` or
/// `--web-tls-addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Plain,
    Tls,
    Web,
    WebTls,
}

/// Which limit refused a connection at accept: finer than the error it is
/// sent (`too-many-connections` is both `--max-per-ip` and
/// `--connect-rate`), and it covers those closed without a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--max-clients`: `server-full`.
    MaxClients,
    /// `--max-per-ip`: `too-many-connections`.
    MaxPerIp,
    /// `--connect-burst` and `--connect-rate`: `too-many-connections`.
    ConnectRate,
    /// An address ban: `banned`.
    Banned,
    /// Refused on the TLS port while its address already has as many
    /// refusals waiting in a handshake as it may: closed without one.
    TlsHandshakes,
    /// Too many refusals in progress server-wide: closed without a word.
    Refusals,
    /// The web door's bound on HTTP connections (page loads and upgrades
    /// not yet made), per address or in all: closed without a word.
    HttpConnections,
}

const LIMITS: [&str; 7] = [
    "max-clients",
    "max-per-ip",
    "connect-rate",
    "banned",
    "tls-handshakes-waiting",
    "refusals-in-progress",
    "http-connections",
];
const VERBS: usize = Verb::ALL.len();
const CODES: usize = ErrorCode::ALL.len();

static ACCEPTED: [Count; LISTENERS.len()] = counts();
static OPEN: [AtomicI64; LISTENERS.len()] = [const { AtomicI64::new(0) }; LISTENERS.len()];
static REFUSED: [Count; CODES] = counts();
static REFUSED_BY_LIMIT: [Count; LIMITS.len()] = counts();
static METRICS_REFUSED: Count = AtomicU64::new(0);
static TLS_HANDSHAKES_FAILED: Count = AtomicU64::new(0);
static WEB_ORIGINS_REFUSED: Count = AtomicU64::new(0);
static LOGGED_IN: AtomicI64 = AtomicI64::new(0);
static LOGINS: Count = AtomicU64::new(0);
static LOGINS_FAILED: Count = AtomicU64::new(0);
static ACCOUNTS: AtomicI64 = AtomicI64::new(0);
/// Read when the metrics are: bans and mutes expire by themselves, and the
/// hashing pool keeps its own counts.
static ACCOUNTS_NOW: std::sync::OnceLock<Box<dyn Fn() -> AccountsNow + Send + Sync>> =
    std::sync::OnceLock::new();

/// What version 3's state looks like now, for the metrics.
pub struct AccountsNow {
    pub bans: usize,
    pub mutes: usize,
    /// Passwords waiting to be hashed or checked.
    pub hashing_waiting: usize,
    /// Hashes and checks done, and the time they took altogether.
    pub hashing_jobs: u64,
    pub hashing_seconds: f64,
}
static LEAVES: [Count; LEAVE_CAUSES.len()] = counts();
/// By verb, in [`Verb::ALL`]'s order, then lines with no known verb.
static FRAMES: [Striped; VERBS + 1] = [const { Striped::new() }; VERBS + 1];
static DELIVERIES: Striped = Striped::new();
static SKIPPED: Count = AtomicU64::new(0);
static DROPPED_NOTICES: Count = AtomicU64::new(0);
static ERRORS: [Count; CODES] = counts();
static FLOOD_DELAYED: Striped = Striped::new();
/// Bytes of history kept in memory, the lobby's and every room's.
static HISTORY_BYTES: AtomicI64 = AtomicI64::new(0);
/// Messages forgotten to keep history within `--history-memory`.
static HISTORY_FORGOTTEN: Count = AtomicU64::new(0);
static CLUSTER: AtomicBool = AtomicBool::new(false);
static BUS_UP: AtomicBool = AtomicBool::new(false);
static BUS_ROUND_TRIP_MICROS: Count = AtomicU64::new(0);
static BUS_APPENDED: Count = AtomicU64::new(0);
static BUS_READ: Count = AtomicU64::new(0);
/// Until when (milliseconds since [`EPOCH`]) the cluster settles after
/// Redis lost its data; 0 when it does not.
static BUS_SETTLING_UNTIL: Count = AtomicU64::new(0);
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// A chat connection came through `door` and was admitted; it counts as
/// open until the guard is dropped.
pub fn connection_opened(door: Door) -> OpenConnection {
    let listener = door as usize;
    ACCEPTED[listener].fetch_add(1, Relaxed);
    OPEN[listener].fetch_add(1, Relaxed);
    OpenConnection { listener }
}

/// An open connection, for the `chat_connections_open` gauge.
pub struct OpenConnection {
    listener: usize,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN[self.listener].fetch_sub(1, Relaxed);
    }
}

/// A connection was refused at accept (`server-full`,
/// `too-many-connections`, `banned`), by `limit`.
pub fn refused(code: ErrorCode, limit: Limit) {
    REFUSED[code as usize].fetch_add(1, Relaxed);
    REFUSED_BY_LIMIT[limit as usize].fetch_add(1, Relaxed);
}

/// A WebSocket upgrade was refused with 403: its page's origin is
/// neither the server's own nor a `--web-origin`.
pub fn web_origin_refused() {
    WEB_ORIGINS_REFUSED.fetch_add(1, Relaxed);
}

/// A connection to the metrics port was closed at once: it serves
/// [`crate::status::MAX_CONNECTIONS`] at a time.
pub fn metrics_refused() {
    METRICS_REFUSED.fetch_add(1, Relaxed);
}

/// A TLS handshake failed or timed out.
pub fn tls_handshake_failed() {
    TLS_HANDSHAKES_FAILED.fetch_add(1, Relaxed);
}

/// A user logged in.
pub fn login() {
    LOGINS.fetch_add(1, Relaxed);
    LOGGED_IN.fetch_add(1, Relaxed);
}

/// A logged-in user went, for `cause` (the session's word for it).
/// A login, `PASSWORD` or `UNREGISTER` with a wrong password.
pub fn login_failed() {
    LOGINS_FAILED.fetch_add(1, Relaxed);
}

/// Accounts registered (or, negative, unregistered).
pub fn account_registered(n: i64) {
    ACCOUNTS.fetch_add(n, Relaxed);
}

/// Where the metrics read bans, mutes and the hashing pool from.
pub fn accounts_from(now: impl Fn() -> AccountsNow + Send + Sync + 'static) {
    let _ = ACCOUNTS_NOW.set(Box::new(now));
}

pub fn leave(cause: &'static str) {
    let index = LEAVE_CAUSES
        .iter()
        .position(|c| *c == cause)
        .unwrap_or(LEAVE_CAUSES.len() - 1);
    LEAVES[index].fetch_add(1, Relaxed);
    LOGGED_IN.fetch_sub(1, Relaxed);
}

/// A frame came in from a client: its verb, or `None` for a line with no
/// known verb (or none at all: too long, not UTF-8).
pub fn frame_received(verb: Option<Verb>) {
    FRAMES[verb.map_or(VERBS, |v| v as usize)].add(1);
}

/// `frames` frames were taken from a client's inbox to be written to it.
pub fn delivered(frames: u64) {
    DELIVERIES.add(frames);
}

/// A client that stopped reading was told `DROPPED <skipped>`.
pub fn dropped(skipped: u64) {
    SKIPPED.fetch_add(skipped, Relaxed);
    DROPPED_NOTICES.fetch_add(1, Relaxed);
}

/// An `ERROR <code>` was sent.
pub fn error_sent(code: ErrorCode) {
    ERRORS[code as usize].fetch_add(1, Relaxed);
}

/// Flood control held a frame back.
pub fn flood_delayed() {
    FLOOD_DELAYED.add(1);
}

/// History kept in memory grew (or, negative, shrank) by `bytes`.
pub fn history_bytes(bytes: i64) {
    HISTORY_BYTES.fetch_add(bytes, Relaxed);
}

/// `messages` were forgotten to keep history within `--history-memory`.
pub fn history_forgotten(messages: u64) {
    if messages > 0 {
        HISTORY_FORGOTTEN.fetch_add(messages, Relaxed);
    }
}

/// The server runs in cluster mode: the bus metrics mean something.
pub fn cluster_mode() {
    CLUSTER.store(true, Relaxed);
}

/// The link to the cluster bus came up or went down.
pub fn bus_link(up: bool) {
    BUS_UP.store(up, Relaxed);
}

/// One round trip to the bus took `took`.
pub fn bus_round_trip(took: Duration) {
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    BUS_ROUND_TRIP_MICROS.store(micros, Relaxed);
}

/// This node appended the stream entry numbered `seq`.
pub fn bus_appended(seq: u64) {
    BUS_APPENDED.store(seq, Relaxed);
}

/// This node has read the stream up to the entry numbered `seq`.
pub fn bus_read(seq: u64) {
    BUS_READ.store(seq, Relaxed);
}

/// Redis lost its data and the stream starts again from its first entry:
/// what this node appended and read belongs to the stream that is gone.
/// Left as they were, an idle node would go on reporting the old stream's
/// last append less what it reads of the new one, until its next message.
pub fn bus_stream_restarted() {
    BUS_APPENDED.store(0, Relaxed);
    BUS_READ.store(0, Relaxed);
}

/// Redis lost its data and this node started the cluster's settling: no
/// login is accepted for up to `lease`, while the nodes put back the users
/// who stayed connected.
pub fn bus_settling(lease: Duration) {
    let until = EPOCH.elapsed() + lease;
    let until = u64::try_from(until.as_millis()).unwrap_or(u64::MAX);
    BUS_SETTLING_UNTIL.store(until, Relaxed);
}

/// Whether the cluster may still be settling (see [`bus_settling`]).
pub fn bus_settling_now() -> bool {
    let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX);
    now < BUS_SETTLING_UNTIL.load(Relaxed)
}

/// The registry a scrape encodes: one collector that reads the statics.
static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Statics));
    registry
});

/// Every metric, as Prometheus text.
pub fn render() -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &REGISTRY);
    text
}

#[derive(Debug)]
struct Statics;

impl Collector for Statics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut out = Out(&mut encoder);
        out.counters(
            "chat_connections_accepted",
            "Chat connections admitted, by listener (web and web-tls: WebSockets).",
            "listener",
            LISTENERS.iter().zip(&ACCEPTED).map(|(l, c)| (*l, load(c))),
        )?;
        out.gauges(
            "chat_connections_open",
            "Connections open now, logged in or not, by listener.",
            "listener",
            LISTENERS
                .iter()
                .zip(&OPEN)
                .map(|(l, g)| (*l, g.load(Relaxed))),
        )?;
        out.counters(
            "chat_connections_refused",
            "Connections refused at accept, by the error they were sent (or would have been, when closed without a word).",
            "reason",
            [
                ErrorCode::ServerFull,
                ErrorCode::TooManyConnections,
                ErrorCode::Banned,
            ]
            .iter()
            .map(|c| (c.as_str(), load(&REFUSED[*c as usize]))),
        )?;
        out.counters(
            "chat_connections_refused_by_limit",
            "Connections refused at accept, by the limit that refused them (tls-handshakes-waiting, \
             refusals-in-progress and http-connections: closed without a word).",
            "limit",
            LIMITS
                .iter()
                .zip(&REFUSED_BY_LIMIT)
                .map(|(l, n)| (*l, load(n))),
        )?;
        out.counter(
            "chat_metrics_connections_refused",
            "Connections to the metrics port closed at once: it serves 64 at a time.",
            load(&METRICS_REFUSED),
        )?;
        out.counter(
            "chat_web_origins_refused",
            "WebSocket upgrades refused with 403 for their page's origin.",
            load(&WEB_ORIGINS_REFUSED),
        )?;
        out.counter(
            "chat_tls_handshakes_failed",
            "TLS handshakes that failed or timed out.",
            load(&TLS_HANDSHAKES_FAILED),
        )?;
        out.gauge(
            "chat_users_logged_in",
            "Users logged in on this server now.",
            LOGGED_IN.load(Relaxed),
        )?;
        out.counter("chat_logins", "Successful logins.", load(&LOGINS))?;
        out.counter(
            "chat_logins_failed",
            "Wrong passwords: at login, PASSWORD and UNREGISTER.",
            load(&LOGINS_FAILED),
        )?;
        out.gauge("chat_accounts", "Registered names.", ACCOUNTS.load(Relaxed))?;
        if let Some(now) = ACCOUNTS_NOW.get() {
            let now = now();
            out.gauge("chat_bans", "Bans in force.", now.bans as i64)?;
            out.gauge("chat_mutes", "Mutes in force.", now.mutes as i64)?;
            out.gauge(
                "chat_hashing_waiting",
                "Passwords waiting to be hashed or checked.",
                now.hashing_waiting as i64,
            )?;
            out.counter(
                "chat_hashing_jobs",
                "Passwords hashed or checked.",
                now.hashing_jobs,
            )?;
            out.gauge(
                "chat_hashing_seconds_total",
                "Time spent hashing and checking passwords, in seconds.",
                now.hashing_seconds,
            )?;
        }
        out.counters(
            "chat_leaves",
            "Logged-in users gone, by cause.",
            "cause",
            LEAVE_CAUSES.iter().zip(&LEAVES).map(|(c, n)| (*c, load(n))),
        )?;
        out.counters(
            "chat_frames_received",
            "Frames received from clients, by verb (unknown: no known verb).",
            "verb",
            Verb::ALL
                .iter()
                .map(|v| v.as_str())
                .chain(["unknown"])
                .zip(&FRAMES)
                .map(|(v, n)| (v, n.get())),
        )?;
        out.counter(
            "chat_deliveries",
            "Broadcast frames queued for a client, counted per recipient.",
            DELIVERIES.get(),
        )?;
        out.counter(
            "chat_frames_skipped",
            "Broadcast frames skipped for clients that stopped reading.",
            load(&SKIPPED),
        )?;
        out.counter(
            "chat_dropped_notices",
            "DROPPED notices sent to clients that stopped reading.",
            load(&DROPPED_NOTICES),
        )?;
        out.counters(
            "chat_errors_sent",
            "ERROR frames sent, by code.",
            "code",
            ErrorCode::ALL
                .iter()
                .zip(&ERRORS)
                .map(|(c, n)| (c.as_str(), load(n))),
        )?;
        out.counter(
            "chat_flood_delayed_frames",
            "Frames flood control held back.",
            FLOOD_DELAYED.get(),
        )?;
        out.gauge(
            "chat_history_bytes",
            "Bytes of history kept in memory (messages and their senders' names), the lobby's and every room's.",
            HISTORY_BYTES.load(Relaxed),
        )?;
        out.counter(
            "chat_history_forgotten_messages",
            "Messages forgotten, the oldest of the room that held the most, to keep history within --history-memory.",
            load(&HISTORY_FORGOTTEN),
        )?;
        if CLUSTER.load(Relaxed) {
            out.gauge(
                "chat_bus_link_up",
                "Cluster mode: 1 while the link to the bus is up.",
                i64::from(BUS_UP.load(Relaxed)),
            )?;
            out.gauge(
                "chat_bus_round_trip_seconds",
                "Cluster mode: how long the last round trip to the bus took.",
                load(&BUS_ROUND_TRIP_MICROS) as f64 / 1e6,
            )?;
            out.gauge(
                "chat_bus_settling",
                "Cluster mode: 1 while logins wait for the cluster to settle after Redis lost its data.",
                i64::from(bus_settling_now()),
            )?;
            let lag = load(&BUS_APPENDED).saturating_sub(load(&BUS_READ));
            out.gauge(
                "chat_bus_stream_lag",
                "Cluster mode: entries between the last this node appended to the stream and the last it read back.",
                i64::try_from(lag).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

fn load(count: &Count) -> u64 {
    count.load(Relaxed)
}

/// Shorthands over prometheus-client's encoder.
struct Out<'a, 'b>(&'a mut DescriptorEncoder<'b>);

impl Out<'_, '_> {
    fn counter(&mut self, name: &str, help: &str, value: u64) -> std::fmt::Result {
        let counter = ConstCounter::new(value);
        let metric = self
            .0
            .encode_descriptor(name, help, None, counter.metric_type())?;
        counter.encode(metric)
    }

    fn gauge<N>(&mut self, name: &str, help: &str, value: N) -> std::fmt::Result
    where
        ConstGauge<N>: prometheus_client::encoding::EncodeMetric,
    {
        let gauge = ConstGauge::new(value);
        let metric = self
            .0
            .encode_descriptor(name, help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }

    fn counters<'l>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        values: impl Iterator<Item = (&'l str, u64)>,
    ) -> std::fmt::Result {
        let mut metric = self.0.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (value, count) in values {
            let labels = [(label, value)];
            ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn gauges<'l>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        values: impl Iterator<Item = (&'l str, i64)>,
    ) -> std::fmt::Result {
        let mut metric = self.0.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (value, gauge) in values {
            let labels = [(label, value)];
            ConstGauge::new(gauge).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_counts_show_in_the_text() {
        frame_received(Some(Verb::Msg));
        frame_received(None);
        error_sent(ErrorCode::NameTaken);
        leave("idle");
        leave("something new");
        let text = render();
        for line in [
            "# TYPE chat_frames_received_total counter",
            "chat_errors_sent_total{code=\"name-taken\"} ",
            "chat_leaves_total{cause=\"idle\"} ",
            "chat_leaves_total{cause=\"other\"} ",
            "chat_frames_received_total{verb=\"unknown\"} ",
            "chat_connections_open{listener=\"tls\"} ",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("chat_bus_"), "not in cluster mode");
    }

    #[test]
    fn striped_counts_add_up_across_threads() {
        let counter = Box::leak(Box::new(Striped::new()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter: &'static Striped = counter;
                std::thread::spawn(move || (0..1000).for_each(|_| counter.add(1)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(counter.get(), 4000);
    }

    #[test]
    fn labels_are_the_contracts_words() {
        assert_eq!(Verb::ALL.len(), FRAMES.len() - 1);
        for (i, verb) in Verb::ALL.iter().enumerate() {
            assert_eq!(*verb as usize, i);
        }
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i);
        }
    }
}
