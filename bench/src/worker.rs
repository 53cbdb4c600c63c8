//! A worker process: holds a share of the users' connections and does what
//! the coordinator says (see [`crate::control`]).
//!
//! One thread serves thousands of connections: the bench shares two cores
//! with the server it measures, so it spends as little as it can. All
//! connections read into one scratch buffer (a connection keeps bytes only
//! for a line cut in two), each read takes the clock once for all the lines
//! it brought, and no delivery allocates.
//!
//! Users connect over TCP or, with `--transport ws`, over WebSockets to the
//! server's web door ([`crate::transport`]): the worker reads and writes
//! lines either way, a WebSocket's messages gathered into one batch of
//! lines per wake-up as a TCP read brings them.
//!
//! A run is the lobby's (senders `MSG`, everyone checks everything) or, once
//! the users joined rooms ([`Command::Join`]), the rooms' (the first senders
//! of each room `SAY`, each member checks its own room's messages, and
//! anything of another room counts as foreign).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, Instant};

use crate::check::Checker;
use crate::clock::now_ns;
use crate::control::{histogram, Command, Tally, MAX_ERRORS};
use crate::dialect::{self, number, Dialect, Event, Payload};
use crate::proto;
use crate::transport::{self, Batch, Reader, Transport, Writer};

/// One read's worth of bytes; shared by every connection of the worker.
const SCRATCH: usize = 256 * 1024;
/// Messages a flat-out sender writes with one syscall at most.
const SEND_BATCH: u64 = 32;
/// How long stuck users get to answer a probe.
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// How long no message may arrive before users still missing messages
/// after a `DROPPED` are taken to have had all they will get.
const QUIET: Duration = Duration::from_secs(2);
/// The `PING` token a sender writes after its last message.
const SENT_TOKEN: &str = "sent";
/// A (first, last) pair of times before anything happened.
const NEVER: (u64, u64) = (u64::MAX, 0);
/// A sender number no run has: the checker counts its messages as foreign.
const FOREIGN: usize = usize::MAX;

/// Widens the (first, last) times in `cell` to take in `now`.
fn widen(cell: &Cell<(u64, u64)>, now: u64) {
    let (first, last) = cell.get();
    cell.set((first.min(now), last.max(now)));
}

/// Who this worker is: its users are `first..first + count`.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The server's address (its web door's with WebSockets); a
    /// cluster's, separated by commas.
    pub addr: String,
    pub dialect: Dialect,
    pub transport: Transport,
    pub first: u32,
    pub count: u32,
    /// Names are `<prefix><id>`; only those count as this run's users.
    pub prefix: String,
    /// Loopback addresses the users connect from: user `id` from
    /// [`source`]`(id % addresses)`, so that a server counting per address
    /// (`--limits-on-loopback`) sees `addresses` peers. 0: the system's
    /// choice (127.0.0.1 for a loopback server).
    pub addresses: u32,
}

/// The first of the loopback addresses users connect from when spread:
/// clear of 127.0.0.N, which the hostile scenario's attackers use.
const FIRST_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 1);

/// The `n`th loopback address users connect from when spread.
pub fn source(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(FIRST_SOURCE) + n)
}

/// Who is in which room: users `0..size * rooms` are in room `id / size`
/// (named `#<prefix>r<room>`), the others in the lobby only. A `size` of 0
/// means no rooms: runs are the lobby's.
#[derive(Debug, Clone, Copy, Default)]
struct Layout {
    size: u32,
    rooms: u32,
}

impl Layout {
    fn room(self, id: u32) -> Option<u32> {
        (self.size > 0 && id / self.size < self.rooms).then(|| id / self.size)
    }

    /// Whether user `id` sends in a run of `senders` senders (per room).
    fn sends(self, id: u32, senders: u32) -> bool {
        match self.size {
            0 => id < senders,
            size => self.room(id).is_some() && id % size < senders,
        }
    }

    /// User `id`'s sender number in its receivers' checkers.
    fn sender(self, id: u32) -> usize {
        match self.size {
            0 => id as usize,
            size => (id % size) as usize,
        }
    }
}

/// Serves commands from stdin until it closes.
pub fn main(assignment: Assignment) -> io::Result<()> {
    // Each user is a file descriptor; allow as many as the hard limit does.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(assignment))
}

async fn serve(assignment: Assignment) -> io::Result<()> {
    let shared = Rc::new(Shared::new(assignment));
    let mut commands = commands();
    let mut replies = tokio::io::stdout();
    while let Some(line) = commands.recv().await {
        let command = Command::parse(&line).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad command {line:?}"))
        })?;
        let reply = match command {
            Command::Connect {
                concurrency,
                start_ns,
                timeout_ms,
            } => {
                shared
                    .connect(concurrency, start_ns, deadline(timeout_ms))
                    .await
            }
            Command::Sync {
                round,
                send,
                timeout_ms,
            } => shared.sync(round, send, deadline(timeout_ms)).await,
            Command::Arm { senders, messages } => shared.arm(senders, messages),
            Command::Run {
                senders,
                messages,
                rate,
                window,
                timeout_ms,
            } => {
                let plan = Plan {
                    senders,
                    messages,
                    rate,
                    window,
                };
                shared.run(plan, deadline(timeout_ms)).await
            }
            Command::Join {
                size,
                rooms,
                timeout_ms,
            } => {
                shared
                    .join(Layout { size, rooms }, deadline(timeout_ms))
                    .await
            }
            Command::Report => shared.tally().to_lines(),
        };
        replies.write_all(reply.as_bytes()).await?;
        replies.flush().await?;
    }
    Ok(())
}

/// The coordinator's commands, read apart from their handling: when the
/// coordinator goes away (its end of stdin closes), the worker exits at
/// once rather than holding thousands of connections until the deadline of
/// the command in hand.
fn commands() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::task::spawn_local(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
        std::process::exit(0);
    });
    rx
}

fn own_cpu_ns() -> u64 {
    crate::server::cpu_ns(std::process::id()).unwrap_or(0)
}

/// Connects user `id` to `addr`, from its own loopback address when the
/// users are spread over `addresses` of them.
async fn connect(addr: &str, addresses: u32, id: u32) -> io::Result<TcpStream> {
    if addresses == 0 {
        return TcpStream::connect(addr).await;
    }
    let addr = tokio::net::lookup_host(addr)
        .await?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| io::Error::other(format!("{addr}: no IPv4 address to spread users to")))?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source(id % addresses), 0)))?;
    socket.connect(addr).await
}

fn deadline(timeout_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(timeout_ms)
}

/// Where a user's login stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Login {
    Pending,
    In,
    Full,
    Failed,
}

/// Where a user's `JOIN` of its room stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joining {
    /// Not asked to join (the lobby only).
    No,
    Asked,
    In,
    Refused,
}

/// What one user has seen.
struct Inbox {
    login: Login,
    /// Highest barrier round seen.
    round: u32,
    /// Other users of this run it learned of, and when it last did.
    known: u64,
    membership_ns: u64,
    joining: Joining,
    checker: Checker,
    complete: bool,
}

/// How the current run sends.
#[derive(Debug, Clone, Copy)]
struct Plan {
    senders: u32,
    messages: u64,
    rate: f64,
    window: u64,
}

/// The worker's state, shared by its connection tasks. One thread, so
/// `Rc`, `Cell` and `RefCell`; no borrow is held across an `.await`.
struct Shared {
    assignment: Assignment,
    prefix: Vec<u8>,
    scratch: RefCell<Vec<u8>>,
    /// The lines of a WebSocket's messages at hand (see
    /// [`transport::poll_lines`]); shared by every connection too.
    batch: RefCell<Vec<u8>>,
    inboxes: RefCell<Vec<Inbox>>,
    writers: RefCell<Vec<Option<Writer>>>,
    latency: RefCell<Histogram<u64>>,
    first_ns: Cell<u64>,
    last_ns: Cell<u64>,
    /// When senders of this worker finished writing, and when the server
    /// had handled all they wrote (their `PONG`): first and last.
    written: Cell<(u64, u64)>,
    handled: Cell<(u64, u64)>,
    start_ns: Cell<u64>,
    errors: RefCell<Vec<String>>,
    /// `DROPPED` counts seen before the current run (while logging in).
    dropped_earlier: Cell<u64>,
    /// This process's CPU time when the run was armed.
    armed_cpu_ns: Cell<u64>,
    // Counters the coordinator's commands wait on.
    logged_in: Cell<usize>,
    full: Cell<usize>,
    failed: Cell<usize>,
    complete: Cell<usize>,
    /// `at_least[r]`: users that have seen barrier round `r` or a later one.
    at_least: RefCell<Vec<usize>>,
    /// Woken when a counter above moves.
    progress: Notify,
    /// Rooms, once the users joined them.
    layout: Cell<Layout>,
    /// `JOIN`s answered with the room's `NAMES`, and refused.
    joined: Cell<usize>,
    join_refused: Cell<usize>,
    /// Woken when users received bench messages (senders wait on it): one
    /// for the lobby, then one per room this worker holds members of, so
    /// that a sender wakes only for its own room's deliveries.
    delivered: RefCell<Rc<[Notify]>>,
}

impl Shared {
    fn new(assignment: Assignment) -> Shared {
        let count = assignment.count as usize;
        Shared {
            prefix: assignment.prefix.clone().into_bytes(),
            assignment,
            scratch: RefCell::new(vec![0; SCRATCH]),
            batch: RefCell::new(Vec::new()),
            inboxes: RefCell::new(
                (0..count)
                    .map(|_| Inbox {
                        login: Login::Pending,
                        round: 0,
                        known: 0,
                        membership_ns: 0,
                        joining: Joining::No,
                        checker: Checker::new(0, 0),
                        complete: true,
                    })
                    .collect(),
            ),
            writers: RefCell::new((0..count).map(|_| None).collect()),
            latency: RefCell::new(histogram()),
            first_ns: Cell::new(u64::MAX),
            last_ns: Cell::new(0),
            written: Cell::new(NEVER),
            handled: Cell::new(NEVER),
            start_ns: Cell::new(0),
            errors: RefCell::new(Vec::new()),
            dropped_earlier: Cell::new(0),
            armed_cpu_ns: Cell::new(0),
            logged_in: Cell::new(0),
            full: Cell::new(0),
            failed: Cell::new(0),
            complete: Cell::new(0),
            at_least: RefCell::new(vec![0]),
            progress: Notify::new(),
            layout: Cell::new(Layout::default()),
            joined: Cell::new(0),
            join_refused: Cell::new(0),
            delivered: RefCell::new(Rc::new([Notify::new()])),
        }
    }

    /// Waits until `done()` or the deadline; returns whether it was done.
    async fn wait(&self, deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
        loop {
            if done() {
                return true;
            }
            tokio::select! {
                () = self.progress.notified() => {}
                () = sleep_until(deadline) => return done(),
            }
        }
    }

    fn settled(&self) -> usize {
        self.logged_in.get() + self.full.get() + self.failed.get()
    }

    fn error(&self, message: String) {
        let mut errors = self.errors.borrow_mut();
        if errors.len() < MAX_ERRORS {
            errors.push(message);
        }
    }

    async fn connect(
        self: &Rc<Self>,
        concurrency: usize,
        start_ns: u64,
        deadline: Instant,
    ) -> String {
        self.start_ns.set(start_ns);
        let total = self.assignment.count as usize;
        let mut started = 0;
        let done = self
            .wait(deadline, || {
                while started < total && started - self.settled() < concurrency.max(1) {
                    tokio::task::spawn_local(self.clone().user(started));
                    started += 1;
                }
                self.settled() == total
            })
            .await;
        if !done {
            self.error(format!(
                "connect: {} of {total} users not in before the timeout",
                total - self.settled()
            ));
        }
        format!(
            "connected {} {} {}\n",
            self.logged_in.get(),
            self.full.get(),
            self.failed.get()
        )
    }

    /// One user's connection: connect, log in, then read until it closes.
    async fn user(self: Rc<Self>, index: usize) {
        let id = self.assignment.first as usize + index;
        // Several addresses (a cluster's nodes): users round-robin over them.
        let addr = {
            let addrs: Vec<&str> = self.assignment.addr.split(',').collect();
            addrs[id % addrs.len()].to_owned()
        };
        let stream = match connect(&addr, self.assignment.addresses, id as u32).await {
            Ok(stream) => stream,
            Err(e) => {
                self.error(format!("connect: {e}"));
                self.set_login(index, Login::Failed);
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut write, read) = match self.assignment.transport {
            Transport::Tcp => {
                let (read, write) = stream.into_split();
                (Writer::Tcp(write), Reader::Tcp(read))
            }
            Transport::Ws => match transport::handshake(stream, &addr).await {
                Ok(halves) => halves,
                Err(e) => {
                    self.error(format!("connect: {e}"));
                    self.set_login(index, Login::Failed);
                    return;
                }
            },
        };
        let name = format!("{}{id}", self.assignment.prefix);
        if let Some(login) = self.assignment.dialect.login(&name) {
            if let Err(e) = write.write_all(login.as_bytes()).await {
                self.error(format!("login: {e}"));
                self.set_login(index, Login::Failed);
                return;
            }
        }
        self.writers.borrow_mut()[index] = Some(write);
        self.read(index, read).await;
    }

    fn set_login(&self, index: usize, login: Login) {
        let mut inboxes = self.inboxes.borrow_mut();
        let inbox = &mut inboxes[index];
        if inbox.login != Login::Pending {
            return;
        }
        inbox.login = login;
        let counter = match login {
            Login::In => &self.logged_in,
            Login::Full => &self.full,
            Login::Failed | Login::Pending => &self.failed,
        };
        counter.set(counter.get() + 1);
        self.progress.notify_waiters();
    }

    async fn read(&self, index: usize, reader: Reader) {
        match reader {
            Reader::Tcp(stream) => self.read_tcp(index, stream).await,
            Reader::Ws(stream) => self.read_ws(index, stream).await,
        }
        if self.inboxes.borrow()[index].login == Login::In {
            let id = self.assignment.first as usize + index;
            self.error(format!("user {id}: the server closed the connection"));
        }
        // A connection that ends before it is in was not let in.
        self.set_login(index, Login::Failed);
    }

    /// Reads a TCP connection's lines until it closes.
    async fn read_tcp(&self, index: usize, stream: OwnedReadHalf) {
        // The start of a line that the last read cut in two.
        let mut tail = Vec::new();
        loop {
            if let Err(e) = stream.readable().await {
                self.error(format!("read: {e}"));
                break;
            }
            let mut scratch = self.scratch.borrow_mut();
            match stream.try_read(&mut scratch) {
                Ok(0) => break,
                Ok(n) => {
                    let now = now_ns();
                    if tail.is_empty() {
                        let used = self.lines(index, &scratch[..n], now);
                        tail.extend_from_slice(&scratch[used..n]);
                    } else {
                        tail.extend_from_slice(&scratch[..n]);
                        drop(scratch);
                        let used = self.lines(index, &tail, now);
                        tail.drain(..used);
                        if tail.is_empty() {
                            tail = Vec::new();
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.error(format!("read: {e}"));
                    break;
                }
            }
        }
    }

    /// Reads a WebSocket's messages until it closes: all those at hand at
    /// each wake-up as one batch of lines, handled at once. A message is
    /// a whole line, so nothing is ever left over for the next batch.
    async fn read_ws(&self, index: usize, mut stream: transport::WsReader) {
        loop {
            let batch = std::future::poll_fn(|cx| {
                let mut lines = self.batch.borrow_mut();
                lines.clear();
                transport::poll_lines(&mut stream, cx, &mut lines)
            })
            .await;
            let lines = self.batch.borrow();
            if !lines.is_empty() {
                self.lines(index, &lines, now_ns());
            }
            match batch {
                Batch::More => {}
                Batch::End(None) => break,
                Batch::End(Some(e)) => {
                    self.error(format!("read: {e}"));
                    break;
                }
            }
        }
    }

    /// Handles the complete lines at the start of `data`; returns how many
    /// bytes they took.
    fn lines(&self, index: usize, data: &[u8], now: u64) -> usize {
        let mut inboxes = self.inboxes.borrow_mut();
        let mut latency = self.latency.borrow_mut();
        let inbox = &mut inboxes[index];
        let dialect = self.assignment.dialect;
        let layout = self.layout.get();
        let id = self.assignment.first + index as u32;
        let (mut login, mut moved) = (None, false);
        let mut used = 0;
        let mut last_message = false;
        for end in memchr::memchr_iter(b'\n', data) {
            let line = &data[used..end];
            used = end + 1;
            match dialect.parse(line) {
                Event::Welcome => {
                    login = Some(Login::In);
                    inbox.membership_ns = now;
                }
                Event::Names(names) => {
                    let ours = names
                        .split(|&b| b == b' ')
                        .filter(|n| n.starts_with(&self.prefix))
                        .count() as u64;
                    inbox.known += ours.saturating_sub(1);
                    inbox.membership_ns = now;
                }
                Event::Join(who) => {
                    if dialect == Dialect::Raw || who.starts_with(&self.prefix) {
                        inbox.known += 1;
                        inbox.membership_ns = now;
                    }
                }
                Event::Text(text) => match Payload::parse(text) {
                    Some(Payload::Message {
                        sender,
                        seq,
                        sent_ns,
                    }) => {
                        // With rooms, the bench says nothing in the lobby.
                        let sender = match layout.size {
                            0 => sender as usize,
                            _ => FOREIGN,
                        };
                        moved |= self.take(inbox, sender, seq);
                        latency.saturating_record(now.saturating_sub(sent_ns) / 1000);
                        last_message = true;
                    }
                    Some(Payload::Sync(round)) if round > inbox.round => {
                        let mut at_least = self.at_least.borrow_mut();
                        if at_least.len() <= round as usize {
                            at_least.resize(round as usize + 1, 0);
                        }
                        for r in inbox.round + 1..=round {
                            at_least[r as usize] += 1;
                        }
                        inbox.round = round;
                        moved = true;
                    }
                    Some(Payload::Sync(_)) | None => {}
                },
                Event::Say { room, text } => {
                    if let Some(Payload::Message {
                        sender,
                        seq,
                        sent_ns,
                    }) = Payload::parse(text)
                    {
                        // Only the receiver's own room, from one of its
                        // members: anything else broke the rooms' isolation.
                        let mine = layout.room(id);
                        let ours = mine.is_some()
                            && self.room_number(room) == mine
                            && layout.room(sender) == mine;
                        let sender = if ours { layout.sender(sender) } else { FOREIGN };
                        moved |= self.take(inbox, sender, seq);
                        latency.saturating_record(now.saturating_sub(sent_ns) / 1000);
                        last_message = true;
                    }
                }
                Event::RoomNames(room) => {
                    if inbox.joining == Joining::Asked && self.room_number(room) == layout.room(id)
                    {
                        inbox.joining = Joining::In;
                        self.joined.set(self.joined.get() + 1);
                        moved = true;
                    }
                }
                Event::Dropped(n) => inbox.checker.dropped(n),
                Event::Pong(token) if token == SENT_TOKEN.as_bytes() => widen(&self.handled, now),
                Event::Full => login = Some(Login::Full),
                Event::Error(line) => {
                    if inbox.login == Login::Pending {
                        login = Some(Login::Failed);
                    }
                    if inbox.joining == Joining::Asked {
                        inbox.joining = Joining::Refused;
                        self.join_refused.set(self.join_refused.get() + 1);
                        moved = true;
                    }
                    self.error(String::from_utf8_lossy(line).into_owned());
                }
                Event::Pong(_) | Event::Other => {}
            }
        }
        if last_message {
            self.first_ns.set(self.first_ns.get().min(now));
            self.last_ns.set(self.last_ns.get().max(now));
        }
        drop(latency);
        drop(inboxes);
        if let Some(login) = login {
            self.set_login(index, login);
        }
        if moved {
            self.progress.notify_waiters();
        }
        if last_message {
            self.delivered.borrow()[self.group(index)].notify_waiters();
        }
        used
    }

    /// Takes message `seq` of checker sender `sender` into `inbox`; true if
    /// that made the inbox complete.
    fn take(&self, inbox: &mut Inbox, sender: usize, seq: u64) -> bool {
        inbox.checker.message(sender, seq);
        if !inbox.complete && inbox.checker.is_complete() {
            inbox.complete = true;
            self.complete.set(self.complete.get() + 1);
            return true;
        }
        false
    }

    /// `#<prefix>r<room>`: the name of room `room`.
    fn room_name(&self, room: u32) -> String {
        format!("#{}r{room}", self.assignment.prefix)
    }

    /// The room a room name is the name of, if it is one of this run's.
    fn room_number(&self, name: &[u8]) -> Option<u32> {
        let digits = name
            .strip_prefix(b"#")?
            .strip_prefix(&self.prefix[..])?
            .strip_prefix(b"r")?;
        u32::try_from(number(digits)?).ok()
    }

    /// The delivery notice local user `index` wakes: 0 for the lobby (and
    /// users in no room), then one per room from this worker's first.
    fn group(&self, index: usize) -> usize {
        let layout = self.layout.get();
        let first = self.assignment.first;
        match layout.room(first + index as u32) {
            Some(room) => (room - first / layout.size) as usize + 1,
            None => 0,
        }
    }

    /// The local indexes of the users who receive what user `id` sends:
    /// everyone in the lobby, the members of its room with rooms.
    fn audience(&self, id: u32) -> Range<usize> {
        let layout = self.layout.get();
        let (first, count) = (self.assignment.first, self.assignment.count);
        match layout.room(id) {
            None => 0..count as usize,
            Some(room) => {
                let start = (room * layout.size).clamp(first, first + count);
                let end = ((room + 1) * layout.size).clamp(first, first + count);
                (start - first) as usize..(end - first) as usize
            }
        }
    }

    /// Has every logged-in user of the room layout `JOIN` its room, and
    /// waits until each was answered.
    async fn join(&self, layout: Layout, deadline: Instant) -> String {
        let (first, count) = (self.assignment.first, self.assignment.count);
        self.layout.set(layout);
        self.joined.set(0);
        self.join_refused.set(0);
        let groups = match layout.size {
            0 => 1,
            size => (first + count.max(1) - 1) / size - first / size + 2,
        };
        *self.delivered.borrow_mut() = (0..groups).map(|_| Notify::new()).collect();
        let mut asked = 0;
        for index in 0..count as usize {
            let Some(room) = layout.room(first + index as u32) else {
                continue;
            };
            if self.inboxes.borrow()[index].login != Login::In {
                continue;
            }
            let writer = self.writers.borrow_mut()[index].take();
            let Some(mut writer) = writer else {
                continue;
            };
            self.inboxes.borrow_mut()[index].joining = Joining::Asked;
            asked += 1;
            let line = proto::join(&self.room_name(room));
            if let Err(e) = writer.write_all(line.as_bytes()).await {
                self.error(format!("join: {e}"));
                if self.inboxes.borrow()[index].joining == Joining::Asked {
                    self.inboxes.borrow_mut()[index].joining = Joining::Refused;
                    self.join_refused.set(self.join_refused.get() + 1);
                }
            }
            self.writers.borrow_mut()[index] = Some(writer);
        }
        let answered = || self.joined.get() + self.join_refused.get();
        self.wait(deadline, || answered() >= asked).await;
        let (joined, refused) = (self.joined.get(), self.join_refused.get());
        format!(
            "joined {joined} {refused} {}\n",
            asked.saturating_sub(joined + refused)
        )
    }

    async fn sync(&self, round: u32, send: bool, deadline: Instant) -> String {
        if send {
            let mut line = Vec::new();
            self.assignment.dialect.write_sync(&mut line, round);
            let writer = self.writers.borrow_mut()[0].take();
            if let Some(mut writer) = writer {
                if let Err(e) = writer.write_all(&line).await {
                    self.error(format!("sync: {e}"));
                }
                self.writers.borrow_mut()[0] = Some(writer);
            }
        }
        let seen = || {
            self.at_least
                .borrow()
                .get(round as usize)
                .copied()
                .unwrap_or(0)
        };
        self.wait(deadline, || seen() >= self.logged_in.get()).await;
        format!("synced {}\n", self.logged_in.get().saturating_sub(seen()))
    }

    /// Resets every user's checker for a run of `messages` from each of
    /// `senders`.
    fn arm(&self, senders: u32, messages: u64) -> String {
        let layout = self.layout.get();
        // Users in who expect nothing (in no room) are done from the start.
        let mut complete = 0;
        for (index, inbox) in self.inboxes.borrow_mut().iter_mut().enumerate() {
            let earlier = inbox.checker.counts().dropped_frames;
            self.dropped_earlier
                .set(self.dropped_earlier.get() + earlier);
            // With rooms, a user in none of them is to get nothing.
            let id = self.assignment.first + index as u32;
            let senders = match layout.room(id) {
                None if layout.size > 0 => 0,
                _ => senders,
            };
            inbox.checker = Checker::new(senders as usize, messages);
            inbox.complete = inbox.checker.is_complete() || inbox.login != Login::In;
            complete += usize::from(inbox.complete && inbox.login == Login::In);
        }
        self.complete.set(complete);
        self.armed_cpu_ns.set(own_cpu_ns());
        self.latency.borrow_mut().reset();
        self.first_ns.set(u64::MAX);
        self.last_ns.set(0);
        self.written.set(NEVER);
        self.handled.set(NEVER);
        "armed\n".to_owned()
    }

    async fn run(self: &Rc<Self>, plan: Plan, deadline: Instant) -> String {
        let users_in = self
            .inboxes
            .borrow()
            .iter()
            .filter(|inbox| inbox.login == Login::In)
            .count();
        let first = self.assignment.first;
        let layout = self.layout.get();
        let start = Instant::now();
        for index in 0..self.assignment.count {
            let id = first + index;
            if !layout.sends(id, plan.senders) {
                continue;
            }
            let writer = self.writers.borrow_mut()[index as usize].take();
            if let Some(writer) = writer {
                let shared = self.clone();
                tokio::task::spawn_local(async move {
                    let writer = shared.send(id, writer, plan, start).await;
                    shared.writers.borrow_mut()[index as usize] = writer;
                });
            }
        }
        let done = self.finish(users_in, now_ns(), deadline).await;
        if !done {
            let missing = users_in - self.complete.get();
            self.error(format!(
                "run: {missing} of {users_in} users did not see every message before the timeout"
            ));
            self.probe_stuck().await;
        }
        format!("ran {}\n", users_in - self.complete.get().min(users_in))
    }

    /// Waits until every user has had the whole run, or until the others
    /// have had all they will get: each of them was told `DROPPED` (what it
    /// misses may be what was skipped, which the tally counts as skipped),
    /// and nothing arrived for [`QUIET`]. Without this, a run whose last
    /// messages were skipped for some users would wait for the deadline.
    /// False at the deadline.
    async fn finish(&self, users_in: usize, start_ns: u64, deadline: Instant) -> bool {
        loop {
            let check = (Instant::now() + QUIET / 4).min(deadline);
            if self.wait(check, || self.complete.get() >= users_in).await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let quiet_ns = now_ns().saturating_sub(self.last_ns.get().max(start_ns));
            if quiet_ns >= QUIET.as_nanos() as u64 && self.settle_dropped() {
                return true;
            }
        }
    }

    /// If every user still missing messages has seen a `DROPPED`, takes
    /// them as done and says so.
    fn settle_dropped(&self) -> bool {
        let mut inboxes = self.inboxes.borrow_mut();
        let mut missing = inboxes
            .iter_mut()
            .filter(|inbox| inbox.login == Login::In && !inbox.complete);
        if !missing.all(|inbox| inbox.checker.saw_dropped()) {
            return false;
        }
        for inbox in inboxes
            .iter_mut()
            .filter(|inbox| inbox.login == Login::In && !inbox.complete)
        {
            inbox.complete = true;
            self.complete.set(self.complete.get() + 1);
        }
        true
    }

    /// Asks each user still missing messages for a `PONG`, which the server
    /// sends only after everything broadcast before it. If the missing
    /// messages come with it, the server had them but did not send them
    /// until poked: it missed a wake-up.
    async fn probe_stuck(&self) {
        let Some(ping) = self.assignment.dialect.ping("probe") else {
            return;
        };
        let stuck: Vec<usize> = (self.inboxes.borrow().iter().enumerate())
            .filter(|(_, inbox)| inbox.login == Login::In && !inbox.complete)
            .map(|(index, _)| index)
            .collect();
        for &index in &stuck {
            let writer = self.writers.borrow_mut()[index].take();
            if let Some(mut writer) = writer {
                let _ = writer.write_all(ping.as_bytes()).await;
                self.writers.borrow_mut()[index] = Some(writer);
            }
        }
        let before = self.complete.get();
        let target = before + stuck.len();
        self.wait(Instant::now() + PROBE_WAIT, || {
            self.complete.get() >= target
        })
        .await;
        let freed = self.complete.get() - before;
        self.error(format!(
            "probe: after a PING, {freed} of {} stuck users got their messages (first stuck user: {})",
            stuck.len(),
            stuck.first().map_or(0, |i| *i as u64 + u64::from(self.assignment.first))
        ));
    }

    /// How far the slowest of `audience` (local indexes) got in the
    /// messages of checker sender `sender`.
    fn slowest(&self, audience: &Range<usize>, sender: usize) -> u64 {
        self.inboxes.borrow()[audience.clone()]
            .iter()
            .filter(|inbox| inbox.login == Login::In)
            .map(|inbox| inbox.checker.next(sender))
            .min()
            .unwrap_or(0)
    }

    /// One sender: `plan.messages` messages, paced by the rate or by how
    /// many of them some user of this worker (of its room, with rooms)
    /// still waits for (the window).
    async fn send(
        &self,
        id: u32,
        mut writer: Writer,
        plan: Plan,
        start: Instant,
    ) -> Option<Writer> {
        let dialect = self.assignment.dialect;
        let layout = self.layout.get();
        let room = layout.room(id).map(|room| self.room_name(room));
        let (audience, sender) = (self.audience(id), layout.sender(id));
        let delivered = self.delivered.borrow().clone();
        let wake = &delivered[self.group((id - self.assignment.first) as usize)];
        let mut buf = Vec::with_capacity(96 * SEND_BATCH as usize);
        let mut seq = 0;
        while seq < plan.messages {
            let mut batch = if plan.rate > 0.0 {
                // Senders take turns, so the offered load is even rather
                // than every sender's message landing at the same instant.
                let turn = sender as f64 / f64::from(plan.senders);
                sleep_until(start + Duration::from_secs_f64((seq as f64 + turn) / plan.rate)).await;
                1
            } else {
                SEND_BATCH
            };
            if plan.window > 0 {
                loop {
                    let in_flight = seq - self.slowest(&audience, sender).min(seq);
                    if in_flight < plan.window {
                        batch = batch.min(plan.window - in_flight);
                        break;
                    }
                    wake.notified().await;
                }
            }
            batch = batch.min(plan.messages - seq);
            buf.clear();
            let now = now_ns();
            for s in seq..seq + batch {
                match &room {
                    None => dialect.write_message(&mut buf, id, s, now),
                    Some(room) => dialect::write_say(&mut buf, room, id, s, now),
                }
            }
            if let Err(e) = writer.write_all(&buf).await {
                self.error(format!("send: {e}"));
                return None;
            }
            seq += batch;
        }
        widen(&self.written, now_ns());
        // The server answers only once it has handled every message above.
        if let Some(ping) = dialect.ping(SENT_TOKEN) {
            if let Err(e) = writer.write_all(ping.as_bytes()).await {
                self.error(format!("send: {e}"));
                return None;
            }
        }
        Some(writer)
    }

    fn tally(&self) -> Tally {
        let mut tally = Tally {
            logged_in: self.logged_in.get() as u64,
            full: self.full.get() as u64,
            failed: self.failed.get() as u64,
            first_ns: self.first_ns.get(),
            last_ns: self.last_ns.get(),
            written_first_ns: self.written.get().0,
            written_last_ns: self.written.get().1,
            handled_first_ns: self.handled.get().0,
            handled_last_ns: self.handled.get().1,
            latency: self.latency.borrow().clone(),
            errors: self.errors.borrow().clone(),
            ..Tally::default()
        };
        tally.counts.dropped_frames = self.dropped_earlier.get();
        tally.bench_cpu_ns = own_cpu_ns().saturating_sub(self.armed_cpu_ns.get());
        let start_ns = self.start_ns.get();
        let layout = self.layout.get();
        // With rooms: (room, order) of each member that vouches for one.
        let mut room_orders: Vec<(u32, u64)> = Vec::new();
        for (index, inbox) in self.inboxes.borrow().iter().enumerate() {
            if inbox.login != Login::In {
                continue;
            }
            let counts = inbox.checker.counts();
            tally.counts.add(&counts);
            tally.incomplete += u64::from(!inbox.complete);
            // Only a receiver that saw the whole run can vouch for its order.
            if inbox.complete && counts.dropped_frames == 0 && counts.skipped == 0 {
                match layout.room(self.assignment.first + index as u32) {
                    None if layout.size == 0 => tally.add_order(inbox.checker.order(), 1),
                    None => {}
                    Some(room) => room_orders.push((room, inbox.checker.order())),
                }
            }
            tally.known_sum += inbox.known;
            tally.known_min = tally.known_min.min(inbox.known);
            tally.known_max = tally.known_max.max(inbox.known);
            tally
                .membership
                .saturating_record(inbox.membership_ns.saturating_sub(start_ns) / 1000);
        }
        self.tally_rooms(&mut tally, &room_orders);
        tally
    }

    /// Each room must have one order for all its members: checked here for
    /// the rooms this worker holds whole, left to the coordinator (as
    /// `room_orders`) for the ones it shares with another worker.
    fn tally_rooms(&self, tally: &mut Tally, room_orders: &[(u32, u64)]) {
        let layout = self.layout.get();
        let (first, count) = (self.assignment.first, self.assignment.count);
        for members in room_orders.chunk_by(|a, b| a.0 == b.0) {
            let room = members[0].0;
            let whole = room * layout.size >= first && (room + 1) * layout.size <= first + count;
            if whole {
                let order = members[0].1;
                tally.rooms_disordered += u64::from(members.iter().any(|m| m.1 != order));
            } else {
                for &(room, order) in members {
                    tally.add_room_order(room, order, 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker holding users `first..first + count` of rooms of `size`.
    fn worker(first: u32, count: u32, size: u32, rooms: u32) -> Shared {
        let shared = Shared::new(Assignment {
            addr: "127.0.0.1:1".into(),
            dialect: Dialect::Chat,
            transport: Transport::Tcp,
            first,
            count,
            prefix: "b7_".into(),
            addresses: 0,
        });
        shared.layout.set(Layout { size, rooms });
        shared
    }

    #[test]
    fn rooms_hold_the_first_users_and_their_first_members_send() {
        let layout = Layout { size: 10, rooms: 3 };
        assert_eq!(layout.room(0), Some(0));
        assert_eq!(layout.room(29), Some(2));
        assert_eq!(layout.room(30), None);
        assert!(layout.sends(21, 2) && !layout.sends(22, 2) && !layout.sends(30, 2));
        assert_eq!(layout.sender(21), 1);
        let lobby = Layout::default();
        assert_eq!(lobby.room(3), None);
        assert!(lobby.sends(1, 2) && !lobby.sends(2, 2));
        assert_eq!(lobby.sender(7), 7);
    }

    #[test]
    fn room_names_read_back_only_for_this_run() {
        let shared = worker(0, 10, 10, 1);
        assert_eq!(shared.room_name(42), "#b7_r42");
        assert_eq!(shared.room_number(b"#b7_r42"), Some(42));
        assert_eq!(shared.room_number(b"#b8_r42"), None);
        assert_eq!(shared.room_number(b"#b7_rx"), None);
    }

    #[test]
    fn a_sender_waits_only_for_its_rooms_members_in_this_worker() {
        // Users 15..40 in rooms of 10: room 1 is cut, room 3 is lobby only.
        let shared = worker(15, 25, 10, 3);
        assert_eq!(shared.audience(15), 0..5);
        assert_eq!(shared.audience(21), 5..15);
        assert!(shared.audience(0).is_empty(), "a room with no member here");
        assert_eq!(shared.audience(35), 0..25, "no room: the lobby");
        assert_eq!(shared.group(0), 1);
        assert_eq!(shared.group(5), 2);
        assert_eq!(shared.group(24), 0);
    }

    #[test]
    fn whole_rooms_are_checked_here_and_cut_ones_passed_on() {
        let shared = worker(15, 30, 10, 5);
        let mut tally = Tally::default();
        let orders = [(1, 7), (1, 7), (2, 5), (2, 5), (3, 1), (3, 2), (4, 9)];
        shared.tally_rooms(&mut tally, &orders);
        assert_eq!(tally.rooms_disordered, 1, "room 3 has two orders");
        assert_eq!(tally.room_orders, vec![(1, 7, 2), (4, 9, 1)]);
    }
}
