//! One connection, from accept to close: reading frames, writing what the
//! hub queued for it, timers and flow control. What a frame does is the
//! hub's business ([`verbs`] maps one to the other); the session only
//! moves bytes and decides when to read.
//!
//! A session is a single task that plays both of the seed's per-connection
//! roles, reader and writer, as two arms of one `select!`. Everything the
//! client is sent, broadcasts and the answers to its own requests alike,
//! comes through its [`Inbox`] in one order, which is what makes `PING` a
//! barrier.
//!
//! What the session reads and what it writes are gated apart:
//! - It takes frames from the inbox only while its output is short. A
//!   client that stops reading leaves them in its inbox, where publishers
//!   wait for it until its socket has taken nothing for a while, then skip
//!   it and later report `DROPPED <n>`.
//! - A socket that has taken nothing for `--stall-timeout` while output
//!   waits for it ends the session: a client that stopped reading holds
//!   its slot, its name and its unread output (at most
//!   [`MAX_UNREAD`](crate::hub::inbox::MAX_UNREAD)) no longer than that.
//! - It reads input unless answers to the client's own requests, more
//!   than [`UNREAD_REPLIES`] of them, wait unread. Broadcasts the client
//!   does not read never stop it: a client that sends without reading is a
//!   slow reader like any other, and its own frames still reach everyone.
//!
//! The session never waits inside a frame's handling: a request to the hub
//! (a login, a publish that must wait for slow readers, a reply read from
//! the bus) becomes the `pending` arm of the loop, and input stops until it
//! completes, while the arms that write to the client go on. Publishers may
//! be waiting for this very session to drain; a session that stopped
//! writing while it waited for them would stall the room.

mod connection;
mod flood;
mod verbs;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use chat_protocol::{ClientFrame, ErrorCode, Rejection, ServerFrame, Verb};
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWrite;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use connection::{Connection, Incoming, Lines};
pub(crate) use verbs::explain;

use crate::config::Config;
use crate::hub::{reading, Done, Hub, Inbox, Outcome, Outgoing, Pending, Refusal, User};
use crate::metrics;
use flood::Allowance;

/// Output queued beyond this stops the session from taking more frames
/// from its inbox until the client catches up.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;
/// Answers to the client's own requests that may wait unread before the
/// session stops reading its input (the contract's 64 KiB).
pub const UNREAD_REPLIES: usize = 64 * 1024;
/// An empty output queue larger than this is released: after a login
/// storm (a `NAMES` of the whole lobby, a `JOIN` from everyone) an idle user
/// should not keep its burst's buffer, which is most of its memory.
const OUTPUT_KEEP: usize = 512;
/// Frames handled back to back before the session lets other tasks run:
/// frames already buffered need no I/O, so without this a flooding client
/// could publish thousands of frames before any reader gets a turn.
const FRAMES_PER_TURN: u32 = 32;
/// Time allowed to deliver the last frames and see the client go before a
/// closing connection is dropped regardless.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Publishes one session may have waiting for the bus: a client that
/// pipelines is held to this many per round trip, not one.
const MAX_IN_FLIGHT: usize = 64;

/// Why a session ended.
enum End {
    /// The client sent `LEAVE`.
    Left,
    /// The client closed the connection.
    Disconnected,
    /// Reading or writing failed (reset, broken pipe, …).
    Failed(io::Error),
    /// The server closes the connection and says why.
    Closed(Refusal),
    /// The hub no longer vouches for the user (cluster mode: this node
    /// lost its lease, so the others have announced the user gone).
    Evicted,
    /// The client's socket took nothing for `--stall-timeout` while output
    /// waited for it: it is dropped without a goodbye it would not read.
    Stalled,
}

impl End {
    /// Why the user went, in a word or two, for the log.
    fn cause(&self) -> &'static str {
        match self {
            End::Left => "left",
            End::Disconnected => "closed",
            End::Failed(_) => "reset",
            End::Closed(refusal) => match refusal.code {
                ErrorCode::IdleTimeout => "idle",
                ErrorCode::LoginTimeout => "login timeout",
                ErrorCode::ShuttingDown => "shutting down",
                ErrorCode::Kicked => "kicked",
                ErrorCode::Banned => "banned",
                ErrorCode::LoggedInElsewhere => "logged in elsewhere",
                _ => "closed by the server",
            },
            End::Evicted => "evicted",
            End::Stalled => "stalled",
        }
    }
}

/// Serves one accepted connection until it ends. The session does not
/// know which door the client came through.
pub async fn run<I, W>(
    connection: Connection<I, W>,
    peer: SocketAddr,
    hub: Hub,
    config: Arc<Config>,
    shutdown: CancellationToken,
) where
    I: Stream<Item = Incoming> + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let inbox = hub.inbox();
    // Publishers ask the socket itself before they skip this client.
    inbox.watch_socket(connection.socket);
    let mut session = Session {
        frames: connection.frames,
        output: connection.output,
        out: Outgoing::default(),
        unflushed: false,
        inbox,
        peer: peer.ip(),
        allowance: Allowance::for_peer(&config, peer),
        held_until: None,
        owed: 0,
        measuring: None,
        user: None,
        pending: None,
        in_flight: None,
        hub,
    };
    let inbox = Arc::clone(&session.inbox);
    let end = reading(&inbox, session.serve(&config, &shutdown)).await;
    debug!(
        ?peer,
        user = session.user.as_ref().map(User::name),
        "connection ends"
    );
    // Boxed: the goodbye (telling the hub, flushing, waiting for the client
    // to close) is larger than the whole loop, and every idle user's task
    // would otherwise carry room for it.
    Box::pin(session.finish(end)).await;
}

struct Session<I, W> {
    frames: I,
    output: W,
    /// Encoded frames waiting for the socket.
    out: Outgoing,
    /// Bytes were written since the writer was last flushed.
    unflushed: bool,
    /// Everything for this connection: replies from the first frame on,
    /// broadcasts once logged in.
    inbox: Arc<Inbox>,
    /// The client's address, for a ban.
    peer: std::net::IpAddr,
    /// Flood control, unless this peer is spared.
    allowance: Option<Allowance>,
    /// Flood control holds the next frame back until then.
    held_until: Option<Instant>,
    /// Frames to spend beyond the one being handled: what its answer cost.
    owed: u32,
    /// A request in flight whose answer is paid by size: the inbox's
    /// [`Inbox::answered`] when it was asked.
    measuring: Option<u64>,
    user: Option<User>,
    /// A request in flight.
    pending: Option<Pending>,
    /// Publishes in flight on the bus, and a frame waiting for them.
    in_flight: Option<Box<InFlight>>,
    hub: Hub,
}

/// Publishes (`MSG`, `SAY`, `TELL`, a `TOPIC` set) waiting for the bus.
/// Up to [`MAX_IN_FLIGHT`] of them go out without waiting for the one
/// before, since the bus appends them in the order sent; they are answered
/// in that order too. Any other frame waits until all are answered, so
/// that replies and errors keep the order of the frames.
#[derive(Default)]
struct InFlight {
    publishes: FuturesOrdered<Pending>,
    waiting: Option<Result<ClientFrame, Rejection>>,
}

impl<I, W> Session<I, W>
where
    I: Stream<Item = Incoming> + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    async fn serve(&mut self, config: &Config, shutdown: &CancellationToken) -> End {
        // One timer, re-armed lazily: frames only note the time, and when the
        // timer fires it checks whether the user really was silent, whether
        // flood control lets the next frame in, and what comes next.
        let connected = Instant::now();
        let mut last_frame = connected;
        let mut frames_this_turn = 0;
        let timer = sleep_until(connected + config.login_timeout);
        tokio::pin!(timer);
        // Made once: a fresh one each turn of the loop would register with
        // the token, and unregister, under its lock every time.
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        loop {
            let reading = self.pending.is_none()
                && self.held_until.is_none()
                && self.unread_replies() <= UNREAD_REPLIES
                && self
                    .in_flight
                    .as_ref()
                    .is_none_or(|f| f.waiting.is_none() && f.publishes.len() < MAX_IN_FLIGHT);
            // `ready` is polled after `pending` and `published`: what they
            // push to this session's own inbox wakes nobody (see
            // `hub::reading`), so it must be seen in the same turn.
            tokio::select! {
                biased;
                () = &mut stopping => return End::Closed(ErrorCode::ShuttingDown.into()),
                () = evicted(self.user.as_ref()) => return End::Evicted,
                written = write(&mut self.output, &mut self.out, &self.inbox), if !self.out.is_empty() || self.unflushed => {
                    match written {
                        Err(e) => return End::Failed(e),
                        // The socket has just stopped taking bytes: the
                        // timer now watches for the stall timeout too.
                        Ok(Written::Stalling) => {
                            self.rearm(timer.as_mut(), config, connected, last_frame);
                        }
                        Ok(Written::Some) => {
                            self.unflushed = true;
                            self.out.shrink(OUTPUT_KEEP);
                        }
                        Ok(Written::Flushed) => self.unflushed = false,
                    }
                }
                done = pending(&mut self.pending), if self.pending.is_some() => {
                    self.pending = None;
                    let was_logged_in = self.user.is_some();
                    if let Some(end) = self.complete(done) {
                        return end;
                    }
                    if let Some(asked) = self.measuring.take() {
                        let cost = flood::answer_cost(self.inbox.answered() - asked);
                        if self.charge(cost, Instant::now()) {
                            self.rearm(timer.as_mut(), config, connected, last_frame);
                        }
                    }
                    if !was_logged_in && self.user.is_some() {
                        self.rearm(timer.as_mut(), config, connected, last_frame);
                    }
                }
                Some(done) = published(&mut self.in_flight), if self.publishing() => {
                    if let Some(end) = self.complete(done) {
                        return end;
                    }
                    if let Some(end) = self.after_publishes() {
                        return end;
                    }
                }
                () = ready(&self.inbox), if self.out.len() < OUTPUT_HIGH_WATER || self.inbox.is_ending() => {
                    if let Some(farewell) = self.inbox.farewell() {
                        return End::Closed(farewell);
                    }
                    self.inbox.take(&mut self.out, OUTPUT_HIGH_WATER);
                }
                item = self.frames.next(), if reading => {
                    last_frame = Instant::now();
                    let frame = match item {
                        None => return End::Disconnected,
                        Some(Err(e)) => return End::Failed(e),
                        Some(Ok(frame)) => frame,
                    };
                    if let Some(end) = self.handle(frame) {
                        return end;
                    }
                    let frames = 1 + std::mem::take(&mut self.owed);
                    if self.charge(frames, last_frame) {
                        metrics::flood_delayed();
                        self.rearm(timer.as_mut(), config, connected, last_frame);
                    }
                    frames_this_turn += 1;
                    if frames_this_turn == FRAMES_PER_TURN {
                        frames_this_turn = 0;
                        tokio::task::yield_now().await;
                    }
                }
                () = &mut timer, if self.timer_armed(config) => {
                    let now = Instant::now();
                    if self.stall_deadline(config).is_some_and(|at| at <= now) {
                        debug!("the client's socket took nothing for the stall timeout");
                        return End::Stalled;
                    }
                    if self.held_until.is_some_and(|until| until <= now) {
                        self.held_until = None;
                    }
                    // A client whose frames are held back, by flood control
                    // or a request in flight, is not idle.
                    if self.held_until.is_some() || self.pending.is_some() || self.publishing() {
                        last_frame = now;
                    }
                    if let Some(code) = self.timed_out(config, connected, last_frame, now) {
                        return End::Closed(code.into());
                    }
                    self.rearm(timer.as_mut(), config, connected, last_frame);
                }
            }
        }
    }

    /// Spends `frames` of the client's flood allowance; returns whether its
    /// next frame must wait.
    fn charge(&mut self, frames: u32, now: Instant) -> bool {
        let Some(allowance) = &mut self.allowance else {
            return false;
        };
        if frames == 0 {
            return false;
        }
        let until = allowance.spend(frames, now);
        self.held_until = self.held_until.max(until);
        self.held_until.is_some()
    }

    /// Bytes of answers to this client's own requests not yet written to
    /// its socket.
    fn unread_replies(&self) -> usize {
        self.out.reply_bytes() + self.inbox.reply_bytes()
    }

    /// The login or idle deadline, whichever applies now.
    fn deadline(
        &self,
        config: &Config,
        connected: Instant,
        last_frame: Instant,
    ) -> Option<Instant> {
        match (&self.user, config.idle_timeout) {
            (None, _) => Some(connected + config.login_timeout),
            (Some(_), Some(idle)) => Some(last_frame + idle),
            (Some(_), None) => None,
        }
    }

    fn timer_armed(&self, config: &Config) -> bool {
        self.user.is_none()
            || config.idle_timeout.is_some()
            || self.held_until.is_some()
            || self.stall_deadline(config).is_some()
    }

    /// When the client is dropped if its socket takes nothing more: output
    /// waits, and the socket stopped taking bytes at some point.
    fn stall_deadline(&self, config: &Config) -> Option<Instant> {
        if self.out.is_empty() {
            return None;
        }
        Some(self.inbox.stalled_since()? + config.stall_timeout)
    }

    /// A `NAME` in flight: the login timeout waits for its answer, since
    /// the login may already have succeeded.
    fn logging_in(&self) -> bool {
        self.user.is_none() && self.pending.is_some()
    }

    /// The timeout that has passed at `now`, if one has.
    fn timed_out(
        &self,
        config: &Config,
        connected: Instant,
        last_frame: Instant,
        now: Instant,
    ) -> Option<ErrorCode> {
        let deadline = self.deadline(config, connected, last_frame)?;
        if deadline > now || self.logging_in() {
            return None;
        }
        Some(match self.user {
            None => ErrorCode::LoginTimeout,
            Some(_) => ErrorCode::IdleTimeout,
        })
    }

    /// Sets the timer to the next thing it must look at.
    fn rearm(
        &self,
        timer: Pin<&mut tokio::time::Sleep>,
        config: &Config,
        connected: Instant,
        last_frame: Instant,
    ) {
        let next = [
            self.deadline(config, connected, last_frame),
            self.held_until,
            self.stall_deadline(config),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(next) = next {
            timer.reset(next);
        }
    }

    /// Acts on one decoded line; returns how the session ends, if it does.
    /// Anything that must wait is left in `pending` or `in_flight`.
    fn handle(&mut self, frame: Result<ClientFrame, Rejection>) -> Option<End> {
        if self.publishing() && !matches!(frame, Ok(ref f) if verbs::publishes(f)) {
            if let Some(in_flight) = &mut self.in_flight {
                in_flight.waiting = Some(frame);
            }
            return None;
        }
        metrics::frame_received(frame.as_ref().map_or_else(|r| r.verb, |f| Some(f.verb())));
        let logged_in = self.user.is_some();
        let frame = match frame {
            Ok(frame) => frame,
            Err(rejection) => {
                let code = match rejection.verb {
                    Some(Verb::Name) if logged_in => ErrorCode::AlreadyLoggedIn,
                    Some(verb) if !logged_in && !verb.allowed_before_login() => {
                        ErrorCode::NotLoggedIn
                    }
                    _ => rejection.code,
                };
                if code == rejection.code {
                    self.reply(ServerFrame::error(code, rejection.detail));
                } else {
                    self.refuse(code);
                }
                return None;
            }
        };
        let outcome = match (frame, &mut self.user) {
            (ClientFrame::Ping(token), None) => {
                self.reply(ServerFrame::Pong(token));
                Outcome::Done
            }
            (ClientFrame::Name(name), None) => {
                self.hub.enter(name, None, self.inbox.clone(), self.peer)
            }
            (ClientFrame::Login { name, password }, None) => {
                self.hub
                    .enter(name, Some(password), self.inbox.clone(), self.peer)
            }
            (_, None) => Outcome::Refused(ErrorCode::NotLoggedIn.into()),
            (frame, Some(user)) => {
                let asked = verbs::answer_costs(&frame).then(|| self.inbox.answered());
                let outcome = verbs::request(&self.hub, user, frame);
                match (asked, &outcome) {
                    (Some(asked), Outcome::Done) => {
                        self.owed = self
                            .owed
                            .saturating_add(flood::answer_cost(self.inbox.answered() - asked));
                    }
                    (Some(asked), Outcome::Wait(_)) => self.measuring = Some(asked),
                    _ => {}
                }
                outcome
            }
        };
        match outcome {
            Outcome::Done => {}
            Outcome::Refused(refusal) => return self.refused(refusal),
            Outcome::Wait(request) => self.pending = Some(request),
            Outcome::InFlight(request) => self
                .in_flight
                .get_or_insert_with(Box::default)
                .publishes
                .push_back(request),
        }
        None
    }

    /// Whether publishes are waiting for the bus.
    fn publishing(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|f| !f.publishes.is_empty())
    }

    /// Once every publish is answered, handles the frame that waited.
    fn after_publishes(&mut self) -> Option<End> {
        if self.publishing() {
            return None;
        }
        let frame = self.in_flight.as_mut()?.waiting.take()?;
        self.handle(frame)
    }

    /// Acts on what a request in flight came back with; returns how the
    /// session ends, if it does.
    fn complete(&mut self, done: Done) -> Option<End> {
        match done {
            Done::Entered(Ok(user)) => {
                metrics::login();
                self.user = Some(user);
            }
            Done::Updated(Ok(update)) => {
                if let Some(user) = &mut self.user {
                    user.apply(update);
                }
            }
            Done::Left => return Some(End::Left),
            Done::Entered(Err(refusal)) | Done::Updated(Err(refusal)) => {
                return self.refused(refusal)
            }
        }
        None
    }

    /// A request refused: `shutting-down` and `banned` end the session, as
    /// the contract says; anything else is only an `ERROR`.
    fn refused(&mut self, refusal: Refusal) -> Option<End> {
        if matches!(refusal.code, ErrorCode::ShuttingDown | ErrorCode::Banned) {
            return Some(End::Closed(refusal));
        }
        self.reply(error_frame(refusal));
        None
    }

    /// Answers the client, after everything already queued for it.
    fn reply(&mut self, frame: ServerFrame) {
        if let ServerFrame::Error { code, .. } = &frame {
            metrics::error_sent(*code)
        }
        self.inbox.push_reply(frame.to_bytes());
    }

    fn refuse(&mut self, code: ErrorCode) {
        self.reply(ServerFrame::error(code, explain(code)));
    }

    /// Says goodbye as the end requires, tells the hub, and closes.
    async fn finish(mut self, end: End) {
        let failed = matches!(end, End::Failed(_) | End::Stalled);
        let stopping = matches!(&end, End::Closed(r) if r.code == ErrorCode::ShuttingDown);
        if !failed && !stopping {
            // What the client is owed before the goodbye: after its own
            // LEAVE, everything broadcast before it; before a kick, what
            // came before the kick. A stopping server says so at once:
            // what others do meanwhile (their LEAVEs) is not news.
            self.inbox.take(&mut self.out, usize::MAX);
        }
        // Nothing more is delivered, and no publisher waits for this inbox.
        self.inbox.close();
        let mut user = self.user.take();
        if user.is_none() {
            // A login the hub may have granted just as the session ended:
            // its answer is awaited, so that the name is not left held.
            if let Some(pending) = self.pending.take() {
                if let Ok(Done::Entered(Ok(granted))) =
                    tokio::time::timeout(CLOSE_GRACE, pending).await
                {
                    metrics::login();
                    user = Some(granted);
                }
            }
        }
        let goodbye = match &end {
            End::Left => Some(ServerFrame::Bye),
            End::Closed(refusal) => {
                metrics::error_sent(refusal.code);
                Some(error_frame(refusal.clone()))
            }
            End::Evicted => Some(ServerFrame::error(
                ErrorCode::Unavailable,
                "lost contact with the rest of the cluster; closing",
            )),
            End::Disconnected | End::Stalled => None,
            End::Failed(e) => {
                debug!(error = %e, "connection failed");
                None
            }
        };
        if let Some(frame) = goodbye {
            frame.write_to(&mut self.out.bytes);
        }
        if let Some(user) = user {
            metrics::leave(end.cause());
            self.hub.quit(user, end.cause()).await;
        }
        if failed {
            return;
        }
        connection::close(&mut self.frames, &mut self.output, &mut self.out.bytes).await;
    }
}

impl<I, W> Drop for Session<I, W> {
    /// A session that ends without [`Session::finish`] (a panic) must not
    /// leave publishers waiting for its inbox, nor its name held.
    fn drop(&mut self) {
        self.inbox.close();
        if let Some(user) = self.user.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let hub = self.hub.clone();
                runtime.spawn(async move { hub.quit(user, "failed").await });
            }
        }
    }
}

/// The next answer to a publish in flight, in the order sent.
async fn published(in_flight: &mut Option<Box<InFlight>>) -> Option<Done> {
    match in_flight {
        Some(in_flight) => in_flight.publishes.next().await,
        None => None,
    }
}

/// Waits until the inbox holds frames.
async fn ready(inbox: &Inbox) {
    std::future::poll_fn(|cx| inbox.poll_ready(cx)).await
}

/// The answer to the request in flight.
async fn pending(request: &mut Option<Pending>) -> Done {
    match request {
        Some(request) => request.await,
        None => std::future::pending().await,
    }
}

/// What a write did.
enum Written {
    /// The socket took some bytes.
    Some,
    /// The socket has just stopped taking bytes (it took none this time,
    /// and did before): the session starts watching for the stall timeout.
    Stalling,
    /// Nothing was queued, and what the writer held is out.
    Flushed,
}

/// Writes what is queued, telling the inbox whether the client's socket
/// takes bytes: publishers skip a reader only once its socket has taken
/// nothing for a while, and the session drops it after the stall timeout.
/// With nothing queued, flushes: a writer that frames what it is given (a
/// WebSocket's) may hold the tail of it until then; a socket's flush is
/// done at once.
async fn write<W: AsyncWrite + Unpin>(
    output: &mut W,
    out: &mut Outgoing,
    inbox: &Inbox,
) -> io::Result<Written> {
    std::future::poll_fn(|cx| {
        if out.is_empty() {
            return Pin::new(&mut *output)
                .poll_flush(cx)
                .map_ok(|()| Written::Flushed);
        }
        let polled = Pin::new(&mut *output).poll_write(cx, &out.bytes);
        let stalling = inbox.socket_flowing(polled.is_ready());
        match polled {
            Poll::Pending if stalling => Poll::Ready(Ok(Written::Stalling)),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                out.sent(n);
                inbox.output_queued(out.len());
                Poll::Ready(Ok(Written::Some))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    })
    .await
}

/// Fires when the hub evicts the user; never before login, nor in a
/// single process.
async fn evicted(user: Option<&User>) {
    match user.and_then(User::evicted) {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// The `ERROR` frame of a refusal: its own detail, or the code's words.
fn error_frame(refusal: Refusal) -> ServerFrame {
    let detail = refusal
        .detail
        .unwrap_or_else(|| explain(refusal.code).to_owned());
    ServerFrame::error(refusal.code, detail)
}

/// Refuses a connection with `ERROR <code>` (`server-full`,
/// `too-many-connections`, `banned`) and closes it.
pub async fn refuse<I, W>(mut connection: Connection<I, W>, refusal: Refusal)
where
    I: Stream<Item = Incoming> + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut queue = error_frame(refusal).to_bytes().into();
    connection::close(&mut connection.frames, &mut connection.output, &mut queue).await;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hub::Limits;

    /// A hub with small room limits, and the end its requests arrive at
    /// (keep it, or the hub is gone): enough to size a session.
    pub(crate) fn small_hub() -> (Hub, impl Sized) {
        let limits = Limits {
            max_rooms: 10,
            max_rooms_per_user: 10,
            max_rooms_per_ip: 10,
            limits_on_loopback: false,
            history: 10,
            history_memory: 1 << 20,
        };
        Hub::channels(16, limits, None)
    }

    /// What one idle user's session costs in its task, before anything it
    /// allocates: `docs/PERFORMANCE.md` keeps the breakdown. Not a target
    /// to assert, since the compiler decides it; printed for the record,
    /// and bounded so that a change that doubles it is noticed.
    #[tokio::test]
    async fn the_session_future_stays_small() {
        let (hub, _requests) = small_hub();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let socket = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let (read, write) = stream.split();
        let connection = Connection::lines(read, write, socket, 4096);
        let config = Arc::new(Config::default());
        let mut parts = Session {
            frames: connection.frames,
            output: connection.output,
            out: Outgoing::default(),
            unflushed: false,
            inbox: hub.inbox(),
            peer: addr.ip(),
            allowance: None,
            held_until: None,
            owed: 0,
            measuring: None,
            user: None,
            pending: None,
            in_flight: None,
            hub: hub.clone(),
        };
        println!("Session: {} bytes", std::mem::size_of_val(&parts));
        println!("frames: {} bytes", std::mem::size_of_val(&parts.frames));
        println!("Outgoing: {} bytes", std::mem::size_of_val(&parts.out));
        let shutdown = CancellationToken::new();
        {
            let serve = parts.serve(&config, &shutdown);
            println!("serve: {} bytes", std::mem::size_of_val(&serve));
        }
        let finish = parts.finish(End::Disconnected);
        println!("finish: {} bytes", std::mem::size_of_val(&finish));
        drop(finish);
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (read, write) = stream.split();
        let connection = Connection::lines(read, write, socket, 4096);
        let session = run(connection, addr, hub, config, CancellationToken::new());
        let size = std::mem::size_of_val(&session);
        println!("session future: {size} bytes");
        assert!(size <= 2048, "the session future grew to {size} bytes");
    }
}
