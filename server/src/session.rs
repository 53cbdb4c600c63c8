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
//! leaves them in the ring, where the oldest are overwritten and later
//! reported as `DROPPED <n>`. And input is read only while the queue is short,
//! so a client that sends without reading is slowed down, not buffered for.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chat_protocol::{ClientFrame, ErrorCode, Rejection, ServerCodec, ServerFrame, Verb};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::Config;
use crate::hub::{Hub, Receipt};

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

struct LoggedIn {
    name: Arc<str>,
    messages: broadcast::Receiver<Bytes>,
    /// The last frame this user published, for `PING` to wait on.
    published: Receipt,
}

/// Serves one accepted connection until it ends.
pub async fn run(
    mut stream: TcpStream,
    hub: Hub,
    config: Arc<Config>,
    shutdown: CancellationToken,
) {
    let peer = stream.peer_addr().ok();
    let (read, write) = stream.split();
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
        hub,
    };
    let end = session.serve(&config, &shutdown).await;
    debug!(
        ?peer,
        user = session.user.as_ref().map(|u| &*u.name),
        "connection ends"
    );
    session.finish(end).await;
}

struct Session<'a> {
    input: FramedRead<ReadHalf<'a>, ServerCodec>,
    output: WriteHalf<'a>,
    /// Encoded frames waiting for the socket.
    queue: BytesMut,
    user: Option<LoggedIn>,
    /// Fires when the room can no longer vouch for the user (set at login).
    evicted: Option<CancellationToken>,
    hub: Hub,
}

impl Session<'_> {
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
                written = self.output.write_buf(&mut self.queue), if !self.queue.is_empty() => {
                    if let Err(e) = written {
                        return End::Failed(e);
                    }
                    if self.queue.is_empty() && self.queue.capacity() > OUTPUT_KEEP {
                        self.queue = BytesMut::new();
                    }
                }
                received = recv(&mut self.user), if has_room => {
                    self.take_broadcast(received);
                }
                item = self.input.next(), if has_room => {
                    last_frame = Instant::now();
                    let frame = match item {
                        None => return End::Disconnected,
                        Some(Err(e)) => return End::Failed(e),
                        Some(Ok(frame)) => frame,
                    };
                    let was_logged_in = self.user.is_some();
                    if let Some(end) = self.handle(frame).await {
                        return end;
                    }
                    if !was_logged_in && self.user.is_some() {
                        timer.as_mut().reset(last_frame + config.idle_timeout);
                    }
                    self.release_idle_read_buffer();
                    frames_this_turn += 1;
                    if frames_this_turn == FRAMES_PER_TURN {
                        frames_this_turn = 0;
                        tokio::task::yield_now().await;
                    }
                }
                () = &mut timer => {
                    let Some(_) = &self.user else {
                        return End::Closed(ErrorCode::LoginTimeout);
                    };
                    let deadline = last_frame + config.idle_timeout;
                    if deadline <= Instant::now() {
                        return End::Closed(ErrorCode::IdleTimeout);
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }

    /// Acts on one decoded line; returns how the session ends, if it does.
    async fn handle(&mut self, frame: Result<ClientFrame, Rejection>) -> Option<End> {
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
            (ClientFrame::Ping(token), user) => {
                if let Some(user) = user {
                    self.hub.sync(user.published).await;
                    if let Some(user) = &mut self.user {
                        // Delivered now; later PINGs need not wait for it.
                        user.published = Receipt::default();
                    }
                }
                self.catch_up();
                self.reply(&ServerFrame::Pong(token));
            }
            (ClientFrame::Name(_), Some(_)) => self.refuse(ErrorCode::AlreadyLoggedIn),
            (ClientFrame::Name(name), None) => match self.hub.enter(name).await {
                Ok(welcome) => {
                    self.reply(&ServerFrame::Welcome(welcome.name.to_string()));
                    self.queue.extend_from_slice(&welcome.names);
                    self.evicted = Some(welcome.evicted);
                    self.user = Some(LoggedIn {
                        name: welcome.name,
                        messages: welcome.messages,
                        published: Receipt::default(),
                    });
                }
                Err(code) => self.refuse(code),
            },
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
                match self
                    .hub
                    .publish(ServerFrame::Msg { from, text }.to_bytes())
                    .await
                {
                    Ok(receipt) => {
                        if let Some(user) = &mut self.user {
                            user.published = receipt;
                        }
                    }
                    Err(code) => self.refuse(code),
                }
            }
            (ClientFrame::Who, Some(_)) => match self.hub.who().await {
                Ok(names) => {
                    // Whatever the hub had broadcast when it counted goes
                    // first, so the list never runs ahead of the JOINs.
                    self.catch_up();
                    self.queue.extend_from_slice(&names);
                }
                Err(code) => self.refuse(code),
            },
            (ClientFrame::Leave(text), Some(_)) => return Some(End::Left(text)),
        }
        None
    }

    fn reply(&mut self, frame: &ServerFrame) {
        frame.write_to(&mut self.queue);
    }

    fn refuse(&mut self, code: ErrorCode) {
        self.reply(&ServerFrame::error(code, explain(code)));
    }

    /// Queues one broadcast frame and whatever else the ring already holds,
    /// so one write carries them all.
    fn take_broadcast(&mut self, first: Result<Bytes, broadcast::error::RecvError>) {
        let skipped = match first {
            Ok(frame) => {
                self.queue.extend_from_slice(&frame);
                0
            }
            Err(broadcast::error::RecvError::Lagged(n)) => n,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        self.drain_ring(skipped, OUTPUT_HIGH_WATER);
    }

    /// Queues everything already broadcast, however long the queue gets
    /// (at most one ring's worth), ahead of a reply that must follow it.
    fn catch_up(&mut self) {
        self.drain_ring(0, usize::MAX);
    }

    /// Moves frames from the ring to the queue until the ring is empty or
    /// the queue reaches `limit`; frames the ring no longer had (`skipped`
    /// so far, and any found now) become one `DROPPED` in their place.
    fn drain_ring(&mut self, mut skipped: u64, limit: usize) {
        if let Some(user) = &mut self.user {
            while self.queue.len() < limit {
                match user.messages.try_recv() {
                    Ok(frame) => {
                        flush_dropped(&mut self.queue, &mut skipped);
                        self.queue.extend_from_slice(&frame);
                    }
                    Err(TryRecvError::Lagged(n)) => skipped += n,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
        }
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
            drop(messages);
            let text = match end {
                End::Left(text) => text,
                _ => None,
            };
            self.hub.leave(name, text).await;
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
async fn recv(user: &mut Option<LoggedIn>) -> Result<Bytes, broadcast::error::RecvError> {
    match user {
        Some(user) => user.messages.recv().await,
        None => std::future::pending().await,
    }
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
        ErrorCode::ShuttingDown => "the server is shutting down",
        ErrorCode::Unavailable => "the room is unreachable; nothing was done",
        other => other.as_str(),
    }
}

/// Flushes what is queued, half-closes, and reads until the client closes
/// too (within [`CLOSE_GRACE`]). Closing with unread input would make the
/// kernel send a reset, which can destroy the last frames before the client
/// reads them.
async fn close(input: &mut ReadHalf<'_>, output: &mut WriteHalf<'_>, queue: &mut BytesMut) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        output.write_all_buf(queue).await?;
        output.shutdown().await?;
        let mut sink = vec![0; 4096];
        while input.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Refuses a connection over the limit with `ERROR server-full`.
pub async fn refuse_full(mut stream: TcpStream) {
    let mut queue = BytesMut::new();
    ServerFrame::error(ErrorCode::ServerFull, explain(ErrorCode::ServerFull)).write_to(&mut queue);
    let (mut input, mut output) = stream.split();
    close(&mut input, &mut output, &mut queue).await;
}
