//! One connection, from accept to close: login, frames, timeouts, output.
//!
//! A session is a single task that plays both of the seed's per-connection
//! roles, reader and writer, as two arms of one `select!`: it reads and
//! handles the client's frames while it writes what is queued for it. One
//! task rather than two keeps a connected user cheap and gives one obvious
//! order for everything the client is sent: replies (`PONG`, `NAMES`) are
//! queued after every broadcast the session had already been handed, which is
//! what makes `PING` a barrier.
//!
//! The output queue is bounded twice over. Frames are taken from the
//! connection's inbox only while the queue is short, so a client that
//! stops reading leaves them in its inbox, where publishers wait for it
//! until its socket has taken nothing for a while, then skip it and later
//! report `DROPPED <n>`. And input is read only while the queue is short, so
//! a client that sends without reading is slowed down, not buffered for.
//!
//! The session never waits inside a frame's handling: a request to the hub
//! (a login, `WHO`, a publish that must wait for slow readers) becomes the
//! `pending` arm of the loop, and input stops until it completes, while the
//! arms that write to the client go on. Publishers may be waiting for this
//! very session to drain; a session that stopped writing while it waited
//! for them would stall the room.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use chat_protocol::{name_key, ClientFrame, ErrorCode, Rejection, ServerCodec, ServerFrame, Verb};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::debug;

mod cluster;

use crate::config::Config;
use crate::hub::{
    self, drained, Full, Hub, Inbox, Joined, Member, Receipt, SharedRoom, User, Welcome,
};
use crate::metrics;

/// Output queued beyond this stops the session from taking more frames
/// from its inbox or reading more input until the client catches up.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;
/// Read buffer a connection starts with; it grows for long lines.
const READ_BUFFER_START: usize = 256;
/// An empty output queue larger than this is released: after a login
/// storm (a `NAMES` of the whole lobby, a `JOIN` from everyone) an idle user
/// should not keep its burst's buffer, which is most of its memory.
const OUTPUT_KEEP: usize = 512;
/// An empty read buffer larger than this is released, after a long line.
const READ_KEEP: usize = 4 * 1024;
/// Frames handled back to back before the session lets other tasks run:
/// frames already buffered need no I/O, so without this a flooding client
/// could publish thousands of frames before any reader gets a turn.
const FRAMES_PER_TURN: u32 = 32;
/// Time allowed to deliver the last frames and see the client go before a
/// closing connection is dropped regardless.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Messages a `HISTORY` without a count asks for.
const HISTORY_DEFAULT: u64 = 50;

/// Flood control: a bucket of `--flood-burst` frames, refilled at
/// `--flood-rate` a second. A frame beyond it is not refused: the session
/// reads the connection's next frame only once the bucket allows it, so the
/// frames wait in order and only this client waits.
struct Allowance {
    frames: f64,
    burst: f64,
    rate: f64,
    refilled: Instant,
}

impl Allowance {
    /// The allowance for a connection from `peer`, if it is limited at all.
    fn for_peer(config: &Config, peer: SocketAddr) -> Option<Allowance> {
        let loopback = peer.ip().to_canonical().is_loopback();
        if config.flood_rate == 0 || (loopback && !config.limits_on_loopback) {
            return None;
        }
        Some(Allowance {
            frames: f64::from(config.flood_burst),
            burst: f64::from(config.flood_burst),
            rate: f64::from(config.flood_rate),
            refilled: Instant::now(),
        })
    }

    /// Spends one frame; returns when the next may be read, if not now.
    fn spend(&mut self, now: Instant) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.frames = (self.frames + elapsed * self.rate).min(self.burst) - 1.0;
        self.refilled = now;
        (self.frames < 1.0).then(|| now + Duration::from_secs_f64((1.0 - self.frames) / self.rate))
    }
}

/// Why a session ended.
enum End {
    /// The client sent `LEAVE`.
    Left,
    /// The client closed the connection.
    Disconnected,
    /// Reading or writing failed (reset, broken pipe, …).
    Failed(io::Error),
    /// The server closes the connection and says why.
    Closed(ErrorCode),
    /// The hub no longer vouches for the user (cluster mode: this node
    /// lost its lease, so the others have announced the user gone).
    Evicted,
}

impl End {
    /// Why the user went, in a word or two, for the log.
    fn cause(&self) -> &'static str {
        match self {
            End::Left => "left",
            End::Disconnected => "closed",
            End::Failed(_) => "reset",
            End::Closed(ErrorCode::IdleTimeout) => "idle",
            End::Closed(ErrorCode::LoginTimeout) => "login timeout",
            End::Closed(ErrorCode::ShuttingDown) => "shutting down",
            End::Closed(_) => "closed by the server",
            End::Evicted => "evicted",
        }
    }
}

struct LoggedIn {
    /// The name as logged in, and this connection's inbox.
    member: Member,
    /// The name lower-cased.
    key: String,
    /// The rooms the user is in.
    joined: Joined,
    /// The last frame this user published through the cluster bus, for
    /// `PING` to wait on.
    published: Receipt,
    /// The user sent `LEAVE`: the hub has been told, once.
    leaving: bool,
}

/// A request to the hub in flight; input waits until it completes.
type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

/// What a request in flight came back with.
enum Done {
    Entered(Result<Welcome, ErrorCode>),
    /// A cluster publish was confirmed, or refused.
    Published(Result<Receipt, ErrorCode>),
    /// The receivers a publish left over capacity have drained.
    Drained,
    /// A reply worked out by the hub or read from Redis went into the
    /// inbox, or the request was refused.
    Placed(Result<(), ErrorCode>),
    /// Cluster mode: the user is in the room of this key now, or not.
    Joined(String, Result<SharedRoom, ErrorCode>),
    /// Cluster mode: the user's `PART` of the room of this key is in the
    /// stream, or was refused.
    Parted(String, Result<Receipt, ErrorCode>),
    /// Everything this user published has come back: answer `PING`.
    Synced(Option<String>),
    /// The user is out of the lobby: its inbox holds all it is owed.
    Left,
}

/// What a logged-in user's request did.
enum Outcome {
    /// Pushed to its receivers; wait for those left over capacity before
    /// reading on.
    Published(Full),
    /// A reply that follows everything already sent to this user.
    Reply(Bytes),
    /// The reply went into the user's inbox, in its place among the frames
    /// of the room it is about.
    Queued,
    Pong(Option<String>),
    Refused(ErrorCode),
    /// Wait for the hub.
    Wait(Pending),
    /// Cluster mode: a publish that may be answered after the next frames
    /// are read (see [`InFlight`]).
    InFlight(Pending),
}

/// Serves one accepted connection until it ends. The two halves of the
/// connection may be a TCP socket's or a TLS stream's: the session does not
/// know which listener the client came through.
pub async fn run<R, W>(
    read: R,
    write: W,
    socket: std::os::fd::RawFd,
    peer: SocketAddr,
    hub: Hub,
    config: Arc<Config>,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let inbox = hub.inbox();
    // Publishers ask the socket itself before they skip this client.
    inbox.watch_socket(socket);
    let mut session = Session {
        input: FramedRead::with_capacity(
            read,
            ServerCodec::new(config.max_line),
            READ_BUFFER_START,
        ),
        output: write,
        queue: BytesMut::new(),
        inbox,
        allowance: Allowance::for_peer(&config, peer),
        held_until: None,
        user: None,
        evicted: None,
        pending: None,
        in_flight: None,
        hub,
    };
    let end = session.serve(&config, &shutdown).await;
    debug!(
        ?peer,
        user = session.user.as_ref().map(|u| &*u.member.name),
        "connection ends"
    );
    session.finish(end).await;
}

struct Session<R, W> {
    input: FramedRead<R, ServerCodec>,
    output: W,
    /// Encoded frames waiting for the socket.
    queue: BytesMut,
    /// Frames for this connection, once logged in.
    inbox: Arc<Inbox>,
    /// Flood control, unless this peer is spared.
    allowance: Option<Allowance>,
    /// Flood control holds the next frame back until then.
    held_until: Option<Instant>,
    user: Option<LoggedIn>,
    /// Fires when the hub can no longer vouch for the user (set at login).
    evicted: Option<CancellationToken>,
    /// A request in flight.
    pending: Option<Pending>,
    /// Cluster mode: publishes in flight, and a frame waiting for them.
    in_flight: Option<Box<InFlight>>,
    hub: Hub,
}

/// Cluster mode: publishes (`MSG`, `SAY`, `TELL`, a `TOPIC` set) waiting
/// for Redis. Up to [`MAX_IN_FLIGHT`] of them go out without waiting for
/// the one before, since the bus appends them in the order sent; they are
/// answered in that order too. Any other frame waits until all are
/// answered, so that replies and errors keep the order of the frames.
#[derive(Default)]
struct InFlight {
    publishes: FuturesOrdered<Pending>,
    waiting: Option<Result<ClientFrame, Rejection>>,
}

/// Publishes one cluster session may have waiting for Redis: a client
/// that pipelines is held to this many per round trip, not one.
const MAX_IN_FLIGHT: usize = 64;

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
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
            let has_room = self.queue.len() < OUTPUT_HIGH_WATER;
            let reading = has_room
                && self.pending.is_none()
                && self.held_until.is_none()
                && self
                    .in_flight
                    .as_ref()
                    .is_none_or(|f| f.waiting.is_none() && f.publishes.len() < MAX_IN_FLIGHT);
            tokio::select! {
                biased;
                () = &mut stopping => return End::Closed(ErrorCode::ShuttingDown),
                () = evicted(&self.evicted) => return End::Evicted,
                written = write(&mut self.output, &mut self.queue, &self.inbox), if !self.queue.is_empty() => {
                    if let Err(e) = written {
                        return End::Failed(e);
                    }
                    if self.queue.is_empty() && self.queue.capacity() > OUTPUT_KEEP {
                        self.queue = BytesMut::new();
                    }
                }
                done = pending(&mut self.pending), if self.pending.is_some() => {
                    self.pending = None;
                    let was_logged_in = self.user.is_some();
                    if let Some(end) = self.complete(done) {
                        return end;
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
                () = ready(&self.inbox), if has_room && self.user.is_some() => {
                    self.inbox.take(&mut self.queue, OUTPUT_HIGH_WATER);
                }
                item = self.input.next(), if reading => {
                    last_frame = Instant::now();
                    let frame = match item {
                        None => return End::Disconnected,
                        Some(Err(e)) => return End::Failed(e),
                        Some(Ok(frame)) => frame,
                    };
                    if let Some(end) = self.handle(frame) {
                        return end;
                    }
                    if let Some(allowance) = &mut self.allowance {
                        self.held_until = allowance.spend(last_frame);
                        if self.held_until.is_some() {
                            metrics::flood_delayed();
                            self.rearm(timer.as_mut(), config, connected, last_frame);
                        }
                    }
                    self.release_idle_read_buffer();
                    frames_this_turn += 1;
                    if frames_this_turn == FRAMES_PER_TURN {
                        frames_this_turn = 0;
                        tokio::task::yield_now().await;
                    }
                }
                () = &mut timer, if self.timer_armed(config) => {
                    let now = Instant::now();
                    if self.held_until.is_some_and(|until| until <= now) {
                        self.held_until = None;
                    }
                    // A client whose frames are held back, by flood control
                    // or a request in flight, is not idle.
                    if self.held_until.is_some() || self.pending.is_some() || self.publishing() {
                        last_frame = now;
                    }
                    if let Some(code) = self.timed_out(config, connected, last_frame, now) {
                        return End::Closed(code);
                    }
                    self.rearm(timer.as_mut(), config, connected, last_frame);
                }
            }
        }
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
        self.user.is_none() || config.idle_timeout.is_some() || self.held_until.is_some()
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
        let deadline = self.deadline(config, connected, last_frame);
        let next = match (deadline, self.held_until) {
            (Some(deadline), Some(held)) => deadline.min(held),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) => return,
        };
        timer.reset(next);
    }

    /// Acts on one decoded line; returns how the session ends, if it does.
    /// Anything that must wait is left in `pending`.
    fn handle(&mut self, frame: Result<ClientFrame, Rejection>) -> Option<End> {
        if self.publishing() && !matches!(frame, Ok(ref f) if publishes(f)) {
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
                    self.reply(&ServerFrame::error(code, rejection.detail));
                } else {
                    self.refuse(code);
                }
                return None;
            }
        };
        let outcome = match (frame, &mut self.user) {
            (ClientFrame::Ping(token), None) => Outcome::Pong(token),
            (ClientFrame::Name(name), None) => {
                let entered = self.hub.enter(name, self.inbox.clone());
                Outcome::Wait(Box::pin(async move { Done::Entered(entered.await) }))
            }
            (_, None) => Outcome::Refused(ErrorCode::NotLoggedIn),
            (frame, Some(user)) => request(&self.hub, user, frame),
        };
        match outcome {
            Outcome::Published(full) if full.is_empty() => {}
            Outcome::Published(full) => self.wait(async move {
                drained(full).await;
                Done::Drained
            }),
            Outcome::Reply(reply) => {
                self.catch_up();
                self.queue.extend_from_slice(&reply);
            }
            Outcome::Pong(token) => self.pong(token),
            Outcome::Queued => {}
            Outcome::Refused(code) => return self.refused(code),
            Outcome::Wait(request) => self.pending = Some(request),
            Outcome::InFlight(request) => self
                .in_flight
                .get_or_insert_with(Box::default)
                .publishes
                .push_back(request),
        }
        None
    }

    /// Whether publishes are waiting for Redis.
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

    fn wait(&mut self, request: impl Future<Output = Done> + Send + 'static) {
        self.pending = Some(Box::pin(request));
    }

    /// Acts on what a request in flight came back with; returns how the
    /// session ends, if it does.
    fn complete(&mut self, done: Done) -> Option<End> {
        match done {
            Done::Entered(Ok(welcome)) => {
                metrics::login();
                self.reply(&ServerFrame::Welcome(welcome.name.to_string()));
                self.queue.extend_from_slice(&welcome.names);
                self.evicted = welcome.evicted;
                self.user = Some(LoggedIn {
                    key: name_key(&welcome.name),
                    member: Member {
                        name: welcome.name,
                        inbox: self.inbox.clone(),
                    },
                    joined: BTreeMap::new(),
                    published: Receipt::default(),
                    leaving: false,
                });
            }
            Done::Published(Ok(receipt)) => {
                if let Some(user) = &mut self.user {
                    user.published = receipt;
                }
            }
            Done::Drained | Done::Placed(Ok(())) => {}
            Done::Joined(key, Ok(room)) => {
                if let Some(user) = &mut self.user {
                    user.joined.insert(key, room);
                }
            }
            Done::Parted(key, Ok(receipt)) => {
                if let Some(user) = &mut self.user {
                    user.joined.remove(&key);
                    user.published = receipt;
                }
            }
            Done::Synced(token) => {
                if let Some(user) = &mut self.user {
                    // Delivered now; later PINGs need not wait for it.
                    user.published = Receipt::default();
                }
                self.pong(token);
            }
            Done::Left => {
                self.catch_up();
                return Some(End::Left);
            }
            Done::Entered(Err(code))
            | Done::Published(Err(code))
            | Done::Placed(Err(code))
            | Done::Joined(_, Err(code))
            | Done::Parted(_, Err(code)) => return self.refused(code),
        }
        None
    }

    /// A request refused: `shutting-down` ends the session, as the
    /// contract says; anything else is only an `ERROR`.
    fn refused(&mut self, code: ErrorCode) -> Option<End> {
        if code == ErrorCode::ShuttingDown {
            return Some(End::Closed(code));
        }
        self.refuse(code);
        None
    }

    /// Answers `PING` after everything already sent to this user.
    fn pong(&mut self, token: Option<String>) {
        self.catch_up();
        self.reply(&ServerFrame::Pong(token));
    }

    fn reply(&mut self, frame: &ServerFrame) {
        if let ServerFrame::Error { code, .. } = frame {
            metrics::error_sent(*code)
        }
        frame.write_to(&mut self.queue);
    }

    fn refuse(&mut self, code: ErrorCode) {
        self.reply(&ServerFrame::error(code, explain(code)));
    }

    /// Queues everything in the inbox, however long the queue gets (at
    /// most an inbox's worth), ahead of a reply that must follow it.
    fn catch_up(&mut self) {
        if self.user.is_some() {
            self.inbox.take(&mut self.queue, usize::MAX);
        }
    }

    fn release_idle_read_buffer(&mut self) {
        let buffer = self.input.read_buffer_mut();
        if buffer.is_empty() && buffer.capacity() > READ_KEEP {
            *buffer = BytesMut::with_capacity(READ_BUFFER_START);
        }
    }

    /// Says goodbye as the end requires, tells the hub, and closes.
    async fn finish(mut self, end: End) {
        let mut user = self.user.take();
        // Nothing more is delivered, and no publisher waits for this inbox.
        self.inbox.close();
        if user.is_none() {
            // A login the hub may have granted just as the session ended:
            // its answer is awaited, so that the name is not left held.
            if let Some(pending) = self.pending.take() {
                if let Ok(Done::Entered(Ok(welcome))) =
                    tokio::time::timeout(CLOSE_GRACE, pending).await
                {
                    let cause = end.cause();
                    metrics::leave(cause);
                    self.hub
                        .leave(welcome.name, self.inbox.clone(), None, cause)
                        .await;
                }
            }
        }
        let failed = matches!(end, End::Failed(_));
        match &end {
            End::Left => self.reply(&ServerFrame::Bye),
            End::Closed(code) => self.refuse(*code),
            End::Evicted => self.reply(&ServerFrame::error(
                ErrorCode::Unavailable,
                "lost contact with the rest of the cluster; closing",
            )),
            End::Disconnected => {}
            End::Failed(e) => debug!(error = %e, "connection failed"),
        }
        if let Some(user) = &mut user {
            metrics::leave(end.cause());
            // After its own LEAVE the hub knows already.
            if !user.leaving {
                self.hub.rooms().leave_all(&user.key, &mut user.joined);
                let name = user.member.name.clone();
                self.hub
                    .leave(name, self.inbox.clone(), None, end.cause())
                    .await;
            }
        }
        if failed {
            return;
        }
        // Boxed: the closing steps are rare and would otherwise enlarge every
        // session's future.
        Box::pin(close(
            self.input.get_mut(),
            &mut self.output,
            &mut self.queue,
        ))
        .await;
    }
}

impl<R, W> Drop for Session<R, W> {
    /// A session that ends without [`Session::finish`] (a panic) must not
    /// leave publishers waiting for its inbox, nor its name held.
    fn drop(&mut self) {
        self.inbox.close();
        if let Some(user) = self.user.take() {
            let runtime = tokio::runtime::Handle::try_current();
            if let (false, Ok(runtime)) = (user.leaving, runtime) {
                let (hub, inbox) = (self.hub.clone(), self.inbox.clone());
                runtime.spawn(async move {
                    let mut joined = user.joined;
                    hub.rooms().leave_all(&user.key, &mut joined);
                    hub.leave(user.member.name, inbox, None, "failed").await;
                });
            }
        }
    }
}

/// Carries out a logged-in user's request.
fn request(hub: &Hub, user: &mut LoggedIn, frame: ClientFrame) -> Outcome {
    let common = matches!(
        frame,
        ClientFrame::Ping(_) | ClientFrame::Name(_) | ClientFrame::Leave(_)
    );
    if let (Some(bus), false) = (hub.bus(), common) {
        return cluster::request(hub, bus, user, frame);
    }
    let rooms = hub.rooms();
    let refused = |result: Result<Full, ErrorCode>| match result {
        Ok(full) => Outcome::Published(full),
        Err(code) => Outcome::Refused(code),
    };
    match frame {
        ClientFrame::Ping(token) if hub.needs_sync(user.published) => {
            let synced = hub.sync(user.published);
            Outcome::Wait(Box::pin(async move {
                synced.await;
                Done::Synced(token)
            }))
        }
        ClientFrame::Ping(token) => Outcome::Pong(token),
        ClientFrame::Name(_) => Outcome::Refused(ErrorCode::AlreadyLoggedIn),
        ClientFrame::Msg(text) => Outcome::Published(hub.say(&user.member.name, text)),
        ClientFrame::Who => {
            hub.lobby_names(&user.member.inbox);
            Outcome::Queued
        }
        ClientFrame::Leave(text) => {
            // Out of every room silently, with the lobby: its LEAVE tells
            // everyone.
            let joined = std::mem::take(&mut user.joined);
            user.leaving = true;
            // In cluster mode the user's own last messages come back from
            // the bus first, so the leaver gets them before BYE.
            let synced = hub.sync(user.published);
            let left = hub.leave_in_order(
                user.member.name.clone(),
                user.member.inbox.clone(),
                text,
                joined,
            );
            Outcome::Wait(Box::pin(async move {
                synced.await;
                left.await;
                Done::Left
            }))
        }
        ClientFrame::Join(room) => {
            let user = User {
                key: &user.key,
                member: &user.member,
                joined: &mut user.joined,
            };
            refused(rooms.join(user, &room))
        }
        ClientFrame::Part { room, text } => {
            let user = User {
                key: &user.key,
                member: &user.member,
                joined: &mut user.joined,
            };
            refused(rooms.part(user, &room, text))
        }
        ClientFrame::Say { room, text } => {
            refused(hub::rooms::say(&user.joined, &user.member, &room, &text))
        }
        ClientFrame::Tell { to, text } => refused(hub.tell(&user.member, &to, text)),
        ClientFrame::Topic {
            room,
            text: Some(text),
        } => refused(hub::rooms::set_topic(
            &user.joined,
            &user.member,
            &room,
            text,
        )),
        ClientFrame::Topic { room, text: None } => {
            queued(hub::rooms::topic(&user.joined, &user.member, &room))
        }
        ClientFrame::RoomWho(room) => match hub::rooms::joined_room(&user.joined, &room) {
            Ok(shared) => {
                hub::rooms::who_member(shared, &user.member);
                Outcome::Queued
            }
            Err(_) => Outcome::Reply(rooms.who(&room)),
        },
        ClientFrame::Rooms => Outcome::Reply(rooms.list().to_bytes()),
        ClientFrame::History { room, count } => {
            let count = count.map_or(HISTORY_DEFAULT, |n| n.get());
            match room {
                None => {
                    hub.lobby_history(&user.member.inbox, count);
                    Outcome::Queued
                }
                Some(room) => queued(hub::rooms::history(
                    &user.joined,
                    &user.member,
                    &room,
                    count,
                )),
            }
        }
    }
}

/// A reply queued in the inbox, or the refusal.
fn queued(result: Result<(), ErrorCode>) -> Outcome {
    match result {
        Ok(()) => Outcome::Queued,
        Err(code) => Outcome::Refused(code),
    }
}

/// The next answer to a publish in flight, in the order sent.
async fn published(in_flight: &mut Option<Box<InFlight>>) -> Option<Done> {
    match in_flight {
        Some(in_flight) => in_flight.publishes.next().await,
        None => None,
    }
}

/// Whether a frame is a cluster publish that may go out while earlier ones
/// wait (see [`InFlight`]).
fn publishes(frame: &ClientFrame) -> bool {
    matches!(
        frame,
        ClientFrame::Msg(_)
            | ClientFrame::Say { .. }
            | ClientFrame::Tell { .. }
            | ClientFrame::Topic { text: Some(_), .. }
    )
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

/// Writes what is queued, telling the inbox whether the client's socket
/// takes bytes: publishers skip a reader only once its socket has taken
/// nothing for a while.
async fn write<W: AsyncWrite + Unpin>(
    output: &mut W,
    queue: &mut BytesMut,
    inbox: &Inbox,
) -> io::Result<()> {
    std::future::poll_fn(|cx| {
        let polled = Pin::new(&mut *output).poll_write(cx, queue);
        inbox.socket_flowing(polled.is_ready());
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                queue.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    })
    .await
}

/// Fires when the hub evicts the user; never before login.
async fn evicted(token: &Option<CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// The human detail that goes with each refusal the server decides.
fn explain(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NameTaken => "that name is in use; choose another",
        ErrorCode::NotLoggedIn => "log in first with NAME <name>",
        ErrorCode::AlreadyLoggedIn => "you are already logged in",
        ErrorCode::LoginTimeout => "no login in time; closing",
        ErrorCode::IdleTimeout => "idle for too long; closing",
        ErrorCode::ServerFull => "too many connections; try again later",
        ErrorCode::TooManyConnections => "too many connections from your address",
        ErrorCode::ShuttingDown => "the server is shutting down",
        ErrorCode::Unavailable => "the room is unreachable; nothing was done",
        ErrorCode::NotInRoom => "you are not in that room; JOIN it first",
        ErrorCode::AlreadyInRoom => "you are in that room already",
        ErrorCode::NoSuchUser => "nobody is logged in under that name",
        ErrorCode::TooManyRooms => "too many rooms; PART one first",
        other => other.as_str(),
    }
}

/// Flushes what is queued, half-closes, and reads until the client closes
/// too (within [`CLOSE_GRACE`]). Closing with unread input would make the
/// kernel send a reset, which can destroy the last frames before the client
/// reads them.
async fn close<R, W>(input: &mut R, output: &mut W, queue: &mut BytesMut)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        output.write_all_buf(queue).await?;
        output.shutdown().await?;
        let mut sink = vec![0; 4096];
        while input.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Refuses a connection over a limit with `ERROR <code>` (`server-full`,
/// `too-many-connections`) and closes it.
pub async fn refuse<R, W>(mut input: R, mut output: W, code: ErrorCode)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut queue = BytesMut::new();
    ServerFrame::error(code, explain(code)).write_to(&mut queue);
    close(&mut input, &mut output, &mut queue).await;
}
