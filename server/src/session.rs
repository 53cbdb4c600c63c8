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
//! The output queue is bounded twice over. Broadcasts are taken from the
//! hub's ring only while the queue is short, so a client that stops reading
//! leaves them in the ring, where publishers wait for it until its socket
//! has taken nothing for a while, then skip it and later report
//! `DROPPED <n>`. And input is read only while the queue is short, so a
//! client that sends without reading is slowed down, not buffered for.
//!
//! The session never waits inside a frame's handling: a request to the hub
//! (a login, `WHO`, a publish that must wait for slow readers) becomes the
//! `pending` arm of the loop, and input stops until it completes, while the
//! arms that write to the client go on. Publishers may be waiting for this
//! very session to drain; a session that stopped writing while it waited
//! for them would stall the room.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use chat_protocol::{ClientFrame, ErrorCode, Rejection, ServerCodec, ServerFrame, Verb};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::Config;
use crate::hub::{Hub, Next, Reader, Receipt, Socket, Welcome};
use crate::metrics;

/// Output queued beyond this stops the session from taking more broadcasts
/// or reading more input until the client catches up.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;
/// Read buffer a connection starts with; it grows for long lines.
const READ_BUFFER_START: usize = 256;
/// An empty output queue larger than this is released: after a login
/// storm (a `NAMES` of the whole room, a `JOIN` from everyone) an idle user
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

/// Why a session ended.
enum End {
    /// The client sent `LEAVE`.
    Left(Option<String>),
    /// The client closed the connection.
    Disconnected,
    /// Reading or writing failed (reset, broken pipe, …).
    Failed(io::Error),
    /// The server closes the connection and says why.
    Closed(ErrorCode),
    /// The room no longer vouches for the user (cluster mode: this node
    /// lost its lease, so the others have announced the user gone).
    Evicted,
}

impl End {
    /// Why the user went, in a word or two, for the log.
    fn cause(&self) -> &'static str {
        match self {
            End::Left(_) => "left",
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
    name: Arc<str>,
    messages: Reader,
    /// The last frame this user published, for `PING` to wait on.
    published: Receipt,
}

/// A request to the hub in flight; input waits until it completes.
type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

/// What a request to the hub came back with.
enum Done {
    Entered(Result<Welcome, ErrorCode>),
    Published(Result<Receipt, ErrorCode>),
    Counted(Result<Bytes, ErrorCode>),
    /// Everything this user published has reached the ring: answer `PING`.
    Synced(Option<String>),
    /// The hub has taken this user's `LEAVE`; `true` when the `LEAVE`
    /// frame comes through the ring, where this user's broadcasts end.
    Left(bool),
}

/// A user who sent `LEAVE` gets what was broadcast before it, then `BYE`.
struct Farewell {
    /// The user's own `LEAVE` frame, as the ring will carry it.
    frame: Bytes,
    text: Option<String>,
    /// It has come through the ring: nothing more is owed.
    reached: bool,
    /// The hub's answer has come.
    answered: bool,
}

/// Serves one accepted connection until it ends. The two halves of the
/// connection may be a TCP socket's or a TLS stream's: the session does not
/// know which listener the client came through.
pub async fn run<R, W>(
    read: R,
    write: W,
    peer: SocketAddr,
    hub: Hub,
    config: Arc<Config>,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut session = Session {
        input: FramedRead::with_capacity(
            read,
            ServerCodec::new(config.max_line),
            READ_BUFFER_START,
        ),
        output: write,
        queue: BytesMut::new(),
        user: None,
        evicted: None,
        pending: None,
        farewell: None,
        socket: None,
        hub,
    };
    let end = session.serve(&config, &shutdown).await;
    debug!(
        %peer,
        user = session.user.as_ref().map(|u| &*u.name),
        "connection ends"
    );
    session.finish(end).await;
}

struct Session<R, W> {
    input: FramedRead<R, ServerCodec>,
    output: W,
    /// Encoded frames waiting for the socket.
    queue: BytesMut,
    user: Option<LoggedIn>,
    /// Fires when the room can no longer vouch for the user (set at login).
    evicted: Option<CancellationToken>,
    /// A request to the hub in flight.
    pending: Option<Pending>,
    /// Set once the user sent `LEAVE`.
    farewell: Option<Farewell>,
    /// Where the writer reports whether the client's socket takes bytes.
    socket: Option<Socket>,
    hub: Hub,
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    async fn serve(&mut self, config: &Config, shutdown: &CancellationToken) -> End {
        // One timer, re-armed lazily: frames only note the time, and when the
        // timer fires it checks whether the user really was silent.
        let mut last_frame = Instant::now();
        let mut frames_this_turn = 0;
        let timer = sleep_until(last_frame + config.login_timeout);
        tokio::pin!(timer);
        loop {
            let has_room = self.queue.len() < OUTPUT_HIGH_WATER;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Closed(ErrorCode::ShuttingDown),
                () = evicted(&self.evicted) => return End::Evicted,
                written = write(&mut self.output, &mut self.queue, &self.socket), if !self.queue.is_empty() => {
                    if let Err(e) = written {
                        return End::Failed(e);
                    }
                    if self.queue.is_empty() && self.queue.capacity() > OUTPUT_KEEP {
                        self.queue = BytesMut::new();
                    }
                }
                // Before the ring: a leaver must stop at its own LEAVE.
                done = pending(&mut self.pending), if self.pending.is_some() => {
                    self.pending = None;
                    let was_logged_in = self.user.is_some();
                    if let Some(end) = self.complete(done) {
                        return end;
                    }
                    if let (false, Some(_), Some(idle)) = (was_logged_in, &self.user, config.idle_timeout) {
                        timer.as_mut().reset(last_frame + idle);
                    }
                }
                received = recv(&mut self.user), if has_room && !self.farewell_reached() => {
                    self.take_broadcast(received);
                    if let Some(end) = self.farewell_done() {
                        return end;
                    }
                }
                // Nothing is read after LEAVE.
                item = self.input.next(), if has_room && self.pending.is_none() && self.farewell.is_none() => {
                    last_frame = Instant::now();
                    let frame = match item {
                        None => return End::Disconnected,
                        Some(Err(e)) => return End::Failed(e),
                        Some(Ok(frame)) => frame,
                    };
                    if let Some(end) = self.handle(frame) {
                        return end;
                    }
                    self.release_idle_read_buffer();
                    frames_this_turn += 1;
                    if frames_this_turn == FRAMES_PER_TURN {
                        frames_this_turn = 0;
                        tokio::task::yield_now().await;
                    }
                }
                // After login the timer is the idle timeout, if there is one.
                () = &mut timer, if self.user.is_none() || config.idle_timeout.is_some() => {
                    let (Some(_), Some(idle_timeout)) = (&self.user, config.idle_timeout) else {
                        return End::Closed(ErrorCode::LoginTimeout);
                    };
                    // Frames held back by a pending request are activity.
                    if self.pending.is_some() {
                        last_frame = Instant::now();
                    }
                    let deadline = last_frame + idle_timeout;
                    if deadline <= Instant::now() {
                        return End::Closed(ErrorCode::IdleTimeout);
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }

    /// Acts on one decoded line; returns how the session ends, if it does.
    /// Anything that must wait for the hub is left in `pending`.
    fn handle(&mut self, frame: Result<ClientFrame, Rejection>) -> Option<End> {
        metrics::frame_received(frame.as_ref().map_or_else(|r| r.verb, |f| Some(f.verb())));
        let logged_in = self.user.is_some();
        let frame = match frame {
            Ok(frame) => frame,
            Err(rejection) => {
                let code = match rejection.verb {
                    // Version 2 is not served yet: its verbs stay unknown.
                    Some(
                        Verb::Join
                        | Verb::Part
                        | Verb::Say
                        | Verb::Tell
                        | Verb::Topic
                        | Verb::Rooms
                        | Verb::History,
                    ) => ErrorCode::UnknownCommand,
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
        match (frame, &self.user) {
            (ClientFrame::Ping(token), Some(user)) if self.hub.needs_sync(user.published) => {
                let synced = self.hub.sync(user.published);
                self.wait(async move {
                    synced.await;
                    Done::Synced(token)
                });
            }
            (ClientFrame::Ping(token), _) => self.pong(token),
            (ClientFrame::Name(_), Some(_)) => self.refuse(ErrorCode::AlreadyLoggedIn),
            (ClientFrame::Name(name), None) => {
                let entered = self.hub.enter(name);
                self.wait(async move { Done::Entered(entered.await) });
            }
            (
                ClientFrame::Join(_)
                | ClientFrame::Part { .. }
                | ClientFrame::Say { .. }
                | ClientFrame::Tell { .. }
                | ClientFrame::Topic { .. }
                | ClientFrame::RoomWho(_)
                | ClientFrame::Rooms
                | ClientFrame::History { .. },
                _,
            ) => self.refuse(ErrorCode::UnknownCommand),
            (_, None) => self.refuse(ErrorCode::NotLoggedIn),
            (ClientFrame::Msg(text), Some(user)) => {
                let from = user.name.to_string();
                let frame = ServerFrame::Msg { from, text }.to_bytes();
                match self.hub.try_publish(frame) {
                    Ok(receipt) => return self.published(Ok(receipt)),
                    Err(frame) => {
                        let published = self.hub.publish(frame);
                        self.wait(async move { Done::Published(published.await) });
                    }
                }
            }
            (ClientFrame::Who, Some(_)) => {
                let counted = self.hub.who();
                self.wait(async move { Done::Counted(counted.await) });
            }
            (ClientFrame::Leave(text), Some(user)) => {
                // Everything broadcast before this user's LEAVE still
                // reaches it, then BYE.
                let frame = ServerFrame::Leave {
                    name: user.name.to_string(),
                    text: text.clone(),
                };
                let left = self.hub.leave_in_order(user.name.clone(), text.clone());
                self.farewell = Some(Farewell {
                    frame: frame.to_bytes(),
                    text,
                    reached: false,
                    answered: false,
                });
                self.wait(async move { Done::Left(left.await) });
            }
        }
        None
    }

    fn wait(&mut self, request: impl Future<Output = Done> + Send + 'static) {
        self.pending = Some(Box::pin(request));
    }

    /// Acts on what the hub answered; returns how the session ends, if it
    /// does.
    fn complete(&mut self, done: Done) -> Option<End> {
        match done {
            Done::Entered(Ok(welcome)) => {
                metrics::login();
                self.reply(&ServerFrame::Welcome(welcome.name.to_string()));
                self.queue.extend_from_slice(&welcome.names);
                self.evicted = Some(welcome.evicted);
                self.socket = Some(welcome.messages.socket());
                self.user = Some(LoggedIn {
                    name: welcome.name,
                    messages: welcome.messages,
                    published: Receipt::default(),
                });
            }
            Done::Published(published) => return self.published(published),
            Done::Counted(Ok(names)) => {
                // Whatever the hub had broadcast when it counted goes
                // first, so the list never runs ahead of the JOINs.
                self.catch_up();
                self.queue.extend_from_slice(&names);
            }
            Done::Synced(token) => {
                if let Some(user) = &mut self.user {
                    // Delivered now; later PINGs need not wait for it.
                    user.published = Receipt::default();
                }
                self.pong(token);
            }
            Done::Left(in_ring) => {
                if let Some(farewell) = &mut self.farewell {
                    farewell.answered = true;
                    // Without a LEAVE in the ring there is nothing to wait for.
                    farewell.reached |= !in_ring;
                }
                return self.farewell_done();
            }
            Done::Entered(Err(code)) | Done::Counted(Err(code)) => return self.refused(code),
        }
        None
    }

    fn farewell_reached(&self) -> bool {
        self.farewell.as_ref().is_some_and(|f| f.reached)
    }

    /// Ends the session once a leaver has been given everything before its
    /// own `LEAVE` and the hub has answered.
    fn farewell_done(&mut self) -> Option<End> {
        let farewell = self.farewell.as_mut()?;
        if !(farewell.reached && farewell.answered) {
            return None;
        }
        Some(End::Left(farewell.text.take()))
    }

    /// A request the hub refused: `shutting-down` ends the session, as the
    /// contract says; anything else is only an `ERROR`.
    fn refused(&mut self, code: ErrorCode) -> Option<End> {
        if code == ErrorCode::ShuttingDown {
            return Some(End::Closed(code));
        }
        self.refuse(code);
        None
    }

    fn published(&mut self, published: Result<Receipt, ErrorCode>) -> Option<End> {
        match published {
            Ok(receipt) => {
                if let Some(user) = &mut self.user {
                    user.published = receipt;
                }
                None
            }
            Err(code) => self.refused(code),
        }
    }

    /// Answers `PING` after everything already broadcast to this user.
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

    /// Queues one broadcast frame and whatever else the ring already holds,
    /// so one write carries them all.
    fn take_broadcast(&mut self, first: Option<Next>) {
        self.drain_ring(first, OUTPUT_HIGH_WATER);
    }

    /// Queues everything already broadcast, however long the queue gets
    /// (at most one ring's worth), ahead of a reply that must follow it.
    fn catch_up(&mut self) {
        self.drain_ring(None, usize::MAX);
    }

    /// Moves `first` and then frames from the ring to the queue until the
    /// ring is empty, the queue reaches `limit` bytes or a leaver reaches
    /// its own `LEAVE`; frames the ring no longer had become one `DROPPED`
    /// in their place.
    fn drain_ring(&mut self, first: Option<Next>, limit: usize) {
        let Some(user) = &mut self.user else { return };
        let mut skipped = 0;
        let mut next = first;
        loop {
            match next {
                Some(Next::Frame(frame)) => {
                    if let Some(farewell) = &mut self.farewell {
                        if frame == farewell.frame {
                            farewell.reached = true;
                            break;
                        }
                    }
                    flush_dropped(&mut self.queue, &mut skipped);
                    metrics::delivered();
                    self.queue.extend_from_slice(&frame);
                }
                Some(Next::Lost(n)) => skipped += n,
                Some(Next::Empty) => break,
                None => {}
            }
            if self.queue.len() >= limit {
                break;
            }
            next = Some(user.messages.try_recv());
        }
        user.messages.advance();
        flush_dropped(&mut self.queue, &mut skipped);
    }

    fn release_idle_read_buffer(&mut self) {
        let buffer = self.input.read_buffer_mut();
        if buffer.is_empty() && buffer.capacity() > READ_KEEP {
            *buffer = BytesMut::with_capacity(READ_BUFFER_START);
        }
    }

    /// Says goodbye as the end requires, tells the hub, and closes.
    async fn finish(mut self, end: End) {
        // Stop taking broadcasts before the hub announces this user's
        // LEAVE: the leaver does not need to hear of itself.
        let user = self.user.take();
        self.socket = None;
        let failed = matches!(end, End::Failed(_));
        match &end {
            End::Left(_) => self.reply(&ServerFrame::Bye),
            End::Closed(code) => self.refuse(*code),
            End::Evicted => self.reply(&ServerFrame::error(
                ErrorCode::Unavailable,
                "lost contact with the rest of the cluster; closing",
            )),
            End::Disconnected => {}
            End::Failed(e) => debug!(error = %e, "connection failed"),
        }
        if let Some(LoggedIn { name, messages, .. }) = user {
            // Publishers must not wait for a reader that is going.
            drop(messages);
            let cause = end.cause();
            metrics::leave(cause);
            let text = match end {
                End::Left(text) => text,
                _ => None,
            };
            // After its own LEAVE the hub knows already.
            if self.farewell.is_none() {
                self.hub.leave(name, text, cause).await;
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

/// Waits for the next broadcast, or forever before login.
async fn recv(user: &mut Option<LoggedIn>) -> Option<Next> {
    match user {
        Some(user) => user.messages.recv().await,
        None => std::future::pending().await,
    }
}

/// The hub's answer to the request in flight.
async fn pending(request: &mut Option<Pending>) -> Done {
    match request {
        Some(request) => request.await,
        None => std::future::pending().await,
    }
}

/// Writes what is queued, telling the user's ring reader whether the
/// client's socket takes bytes: publishers skip a reader only once its
/// socket has taken nothing for a while.
async fn write<W: AsyncWrite + Unpin>(
    output: &mut W,
    queue: &mut BytesMut,
    socket: &Option<Socket>,
) -> io::Result<()> {
    std::future::poll_fn(|cx| {
        let polled = Pin::new(&mut *output).poll_write(cx, queue);
        if let Some(socket) = socket {
            socket.flowing(polled.is_ready());
        }
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

/// Fires when the room evicts the user; never before login.
async fn evicted(token: &Option<CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

fn flush_dropped(queue: &mut BytesMut, skipped: &mut u64) {
    if *skipped > 0 {
        metrics::dropped(*skipped);
        ServerFrame::Dropped(*skipped).write_to(queue);
        *skipped = 0;
    }
}

/// The human detail that goes with each refusal the session itself decides.
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
