//! The hub: who is logged in, the lobby and the rooms, and the one
//! interface sessions use to reach them, whatever the mode.
//!
//! As in the gopl chat server, a single task alone decides who is logged
//! in, so deciding whether a name is free needs no lock. Sessions talk to it
//! over bounded channels named for the events they carry: `entering`,
//! `leaving`, and `census` for the lobby's `NAMES`.
//!
//! Frames reach sessions through their [`Inbox`]: a frame is encoded once
//! and pushed, as a cheap shared reference, to the inbox of each receiver,
//! under the lock of the [`Room`] it belongs to; the lobby is a room that
//! everyone is in. Answers to a user's own requests go into its inbox too,
//! in their place among the room's frames.
//!
//! Two modes sit behind the same [`Hub`]. The [`local`] one is the default:
//! a sender's session pushes its frames straight to the receivers. In
//! [`cluster`] mode every broadcast, the lobby's and the rooms', goes
//! through the bus first and reaches this node's users only when it comes
//! back, so that all users of all nodes see one order. Every request returns
//! the same [`Outcome`] in both, and the session never learns which mode
//! served it.
//!
//! Every request that may wait returns a future that owns what it needs, so
//! a session can keep writing to its client meanwhile: a session that
//! stopped draining while waiting for a publisher that waits for it would
//! stall the room.

pub mod cluster;
pub(crate) mod inbox;
pub(crate) mod local;
pub(crate) mod room;
pub(crate) mod rooms;
#[cfg(test)]
mod tests;
mod user;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chat_protocol::{ErrorCode, ServerFrame};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use cluster::Bus;
pub use inbox::{drained, Inbox, Outgoing, STALL_LIMIT};
pub use room::{lock, Member, Room, SharedRoom};
pub use rooms::{Full, Joined, Limits, Rooms};
pub use user::{Update, User};

/// Requests a hub queues before senders wait: enough for a login storm,
/// small enough to bound memory.
pub(crate) const REQUEST_QUEUE: usize = 1024;
/// Messages a `HISTORY` without a count asks for.
pub const HISTORY_DEFAULT: u64 = 50;

/// A request in flight: the session keeps writing while it waits.
pub type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

/// What a request did, or will do once its [`Pending`] completes.
pub enum Outcome {
    /// Carried out; its answer, if it has one, is in the asker's inbox.
    Done,
    /// Refused: nothing changed and nobody heard of it.
    Refused(ErrorCode),
    /// Read nothing more from this client until it completes: a login, a
    /// publisher waiting for readers that are a backlog behind, a reply
    /// being read from the bus.
    Wait(Pending),
    /// A publish the bus will order; the client's next frames may be read
    /// meanwhile, but anything other than another publish waits for it,
    /// so that replies and errors keep the order of the frames.
    InFlight(Pending),
}

impl Outcome {
    /// The outcome of a publish: done, or a wait for the receivers it
    /// left over capacity.
    fn published(full: Full) -> Outcome {
        if full.is_empty() {
            return Outcome::Done;
        }
        Outcome::Wait(Box::pin(async move {
            drained(full).await;
            Done::Updated(Ok(Update::Nothing))
        }))
    }

    fn from_result(result: Result<Outcome, ErrorCode>) -> Outcome {
        result.unwrap_or_else(Outcome::Refused)
    }
}

/// What a request in flight came back with.
pub enum Done {
    /// A login: the user, whose inbox has `WELCOME` and `NAMES` first.
    Entered(Result<User, ErrorCode>),
    /// A logged-in user's request: what changed for the user, for
    /// [`User::apply`], or why it was refused.
    Updated(Result<Update, ErrorCode>),
    /// The user's `LEAVE` is done: its inbox holds everything it is owed.
    Left,
}

/// What the hub task answers a login with.
pub(crate) struct Welcome {
    /// The name as the user chose it (its case kept).
    pub name: Arc<str>,
    /// Cluster mode: cancelled when the node can no longer vouch for this
    /// user (it lost its lease); the session then closes. A single process
    /// never evicts anyone, and a session polls nothing for it.
    pub evicted: Option<CancellationToken>,
}

/// Where a published frame stands in the bus's order, so that a later
/// `PING` can wait until the frame has come back to this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Receipt(pub(crate) u64);

pub(crate) struct Entering {
    pub name: String,
    /// Where the user's frames go once logged in; `WELCOME` and `NAMES`
    /// go there first.
    pub inbox: Arc<Inbox>,
    pub reply: oneshot::Sender<Result<Welcome, ErrorCode>>,
}

pub(crate) struct Leaving {
    pub name: Arc<str>,
    /// The leaver's inbox: only the session that holds the name now may
    /// free it.
    pub inbox: Arc<Inbox>,
    pub text: Option<String>,
    /// Why the user went, for the log.
    pub cause: &'static str,
    /// For a user who sent `LEAVE`: told once the user is out of the
    /// lobby, when its inbox holds everything broadcast before its `LEAVE`
    /// and will get nothing after.
    pub placed: Option<oneshot::Sender<()>>,
    /// The rooms it is in, left silently together with the lobby, so that
    /// a user who sent `LEAVE` gets every room frame before it too.
    pub joined: Joined,
}

/// A request for the lobby's `NAMES`: the asker's inbox, for the `NAMES`
/// to go into in its place among the lobby's frames, and the answer once
/// it is there.
pub(crate) type Census = (Arc<Inbox>, oneshot::Sender<Result<(), ErrorCode>>);

/// The receiving ends a hub task serves.
pub(crate) struct Requests {
    pub entering: mpsc::Receiver<Entering>,
    pub leaving: mpsc::Receiver<Leaving>,
    pub census: mpsc::Receiver<Census>,
}

/// The sessions' way to the hub: one cheap clone each.
#[derive(Clone)]
pub struct Hub(Arc<Shared>);

struct Shared {
    entering: mpsc::Sender<Entering>,
    leaving: mpsc::Sender<Leaving>,
    census: mpsc::Sender<Census>,
    /// Everyone logged in here, for lobby broadcasts and `TELL`.
    lobby: SharedRoom,
    rooms: Arc<Rooms>,
    /// Frames each connection's inbox holds (`--client-buffer`).
    backlog: usize,
    mode: Mode,
}

/// Which hub serves the requests.
enum Mode {
    Local,
    /// Broadcasts, rooms, `TELL` and history go through the bus.
    Cluster(Bus),
}

impl Hub {
    /// Starts the single-process hub. `backlog` is the number of frames
    /// a session may fall behind. Once `shutdown` fires, users who go are no
    /// longer announced: everyone is being told `shutting-down`. The hub's
    /// task is returned so the server can watch it.
    pub fn start_local(
        backlog: usize,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> (Hub, JoinHandle<()>) {
        let (hub, requests) = Hub::channels(backlog, limits, None);
        let local = local::Local::new(hub.lobby().clone(), hub.rooms_shared(), shutdown);
        let task = tokio::spawn(local.run(requests));
        (hub, task)
    }

    /// The handle and the requests of a new hub; the caller starts its task.
    pub(crate) fn channels(backlog: usize, limits: Limits, bus: Option<Bus>) -> (Hub, Requests) {
        let (entering, entering_rx) = mpsc::channel(REQUEST_QUEUE);
        let (leaving, leaving_rx) = mpsc::channel(REQUEST_QUEUE);
        let (census, census_rx) = mpsc::channel(REQUEST_QUEUE);
        let hub = Hub(Arc::new(Shared {
            entering,
            leaving,
            census,
            lobby: Arc::new(Mutex::new(Room::lobby(limits.history))),
            rooms: Arc::new(Rooms::new(limits)),
            backlog,
            mode: bus.map_or(Mode::Local, Mode::Cluster),
        }));
        let requests = Requests {
            entering: entering_rx,
            leaving: leaving_rx,
            census: census_rx,
        };
        (hub, requests)
    }

    /// The lobby: this node's users.
    pub(crate) fn lobby(&self) -> &SharedRoom {
        &self.0.lobby
    }

    /// The rooms with members here.
    pub(crate) fn rooms(&self) -> &Rooms {
        &self.0.rooms
    }

    /// The rooms, for the cluster's hub task to deliver to.
    pub(crate) fn rooms_shared(&self) -> Arc<Rooms> {
        self.0.rooms.clone()
    }

    fn bus(&self) -> Option<&Bus> {
        match &self.0.mode {
            Mode::Local => None,
            Mode::Cluster(bus) => Some(bus),
        }
    }

    /// A new connection's inbox.
    pub fn inbox(&self) -> Arc<Inbox> {
        Inbox::new(self.0.backlog)
    }

    /// `NAME`: claims `name`. Once the login is granted, `inbox` holds
    /// `WELCOME` and `NAMES`, then everything broadcast after the user's
    /// `JOIN`.
    pub fn enter(&self, name: String, inbox: Arc<Inbox>) -> Outcome {
        let entering = self.0.entering.clone();
        let inbox_kept = inbox.clone();
        Outcome::Wait(Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let sent = entering.send(Entering { name, inbox, reply }).await;
            let welcome = match sent {
                Ok(()) => answer.await.unwrap_or(Err(ErrorCode::ShuttingDown)),
                Err(_) => Err(ErrorCode::ShuttingDown),
            };
            Done::Entered(welcome.map(|w| User::new(w, inbox_kept)))
        }))
    }

    /// `MSG` (no room) or `SAY`: every member, the sender too, gets the
    /// message, and it is kept for history.
    pub fn publish(&self, user: &mut User, room: Option<&str>, text: String) -> Outcome {
        let room = match room.map(|room| user.room(room)).transpose() {
            Ok(room) => room,
            Err(code) => return Outcome::Refused(code),
        };
        match self.bus() {
            None => Outcome::published(local::publish(self.lobby(), user, room, text)),
            Some(bus) => cluster::requests::publish(bus, self.limits(), user, room, text),
        }
    }

    /// `JOIN <room>`: the joiner gets the room's `NAMES` (and `TOPIC`)
    /// after everything the room said before; the others get its `JOIN`.
    pub fn join(&self, user: &mut User, room: String) -> Outcome {
        if let Err(code) = user.may_join(&room, self.limits()) {
            return Outcome::Refused(code);
        }
        match self.bus() {
            None => Outcome::from_result(self.rooms().join(user, &room).map(Outcome::published)),
            Some(bus) => cluster::requests::join(bus, user, room),
        }
    }

    /// `PART <room> [<text>]`: every member, the leaver too, hears it.
    pub fn part(&self, user: &mut User, room: &str, text: Option<String>) -> Outcome {
        let shared = match user.room(room) {
            Ok(shared) => shared.clone(),
            Err(code) => return Outcome::Refused(code),
        };
        match self.bus() {
            None => Outcome::published(self.rooms().part(user, &shared, text)),
            Some(bus) => cluster::requests::part(bus, user, &shared, text),
        }
    }

    /// `TELL <name> <text>`: the receiver and the sender both get it.
    pub fn tell(&self, user: &mut User, to: &str, text: String) -> Outcome {
        match self.bus() {
            None => Outcome::from_result(
                local::tell(self.lobby(), user, to, text).map(Outcome::published),
            ),
            Some(bus) => cluster::requests::tell(bus, user, to, text),
        }
    }

    /// `TOPIC <room> [<text>]`: sets the topic, or asks for it.
    pub fn topic(&self, user: &mut User, room: &str, text: Option<String>) -> Outcome {
        let shared = match user.room(room) {
            Ok(shared) => shared.clone(),
            Err(code) => return Outcome::Refused(code),
        };
        match (text, self.bus()) {
            // The topic as this node's copy of the room has it, which in
            // cluster mode follows the stream: in its place among the
            // room's frames.
            (None, _) => {
                let room = lock(&shared);
                user.inbox().push_reply(room.topic().to_bytes());
                Outcome::Done
            }
            (Some(text), None) => Outcome::published(local::set_topic(&shared, user, text)),
            (Some(text), Some(bus)) => cluster::requests::set_topic(bus, user, &shared, text),
        }
    }

    /// `WHO` (no room) or `WHO <room>`: the `NAMES`, in its place among
    /// the `JOIN`s and `LEAVE`s it reflects.
    pub fn who(&self, user: &mut User, room: Option<&str>) -> Outcome {
        match (room, self.bus()) {
            (None, None) => {
                user.inbox().push_reply(lock(self.lobby()).names());
                Outcome::Done
            }
            (None, Some(_)) => {
                // After the user's own messages have come back, so that
                // its `NAMES` follows them as in a single process.
                let synced = self.sync_published(user);
                let counted = self.census(user.inbox().clone());
                Outcome::Wait(Box::pin(async move {
                    synced.await;
                    Done::Updated(counted.await.map(|()| Update::Nothing))
                }))
            }
            // A member's room here has its members on this node only, so
            // in cluster mode the room's NAMES is read from Redis.
            (Some(room), Some(bus)) => cluster::requests::who(bus, user, room),
            (Some(room), None) => {
                let names = match user.room(room) {
                    Ok(shared) => lock(shared).names(),
                    Err(_) => self.rooms().who(room),
                };
                user.inbox().push_reply(names);
                Outcome::Done
            }
        }
    }

    /// `ROOMS`: every room with its number of members.
    pub fn list_rooms(&self, user: &mut User) -> Outcome {
        match self.bus() {
            None => {
                user.inbox().push_reply(self.rooms().list().to_bytes());
                Outcome::Done
            }
            Some(bus) => cluster::requests::list_rooms(bus, user),
        }
    }

    /// `HISTORY [<room>] [<n>]` of the lobby or a room the user is in,
    /// all its frames at once, in its place among the messages.
    pub fn history(&self, user: &mut User, room: Option<&str>, count: u64) -> Outcome {
        let shared = match room.map(|room| user.room(room)).transpose() {
            Ok(shared) => shared.cloned(),
            Err(code) => return Outcome::Refused(code),
        };
        let count = count.min(self.limits().history as u64);
        match self.bus() {
            None => {
                let room = shared.as_ref().unwrap_or(self.lobby());
                let mut out = bytes::BytesMut::new();
                lock(room).write_history(count, &mut out);
                user.inbox().push_reply(out.freeze());
                Outcome::Done
            }
            Some(bus) => cluster::requests::history(bus, user, shared.as_ref(), count),
        }
    }

    /// `PING`: `PONG` once everything the user published has reached
    /// everyone here (at once, in a single process).
    pub fn sync(&self, user: &mut User, token: Option<String>) -> Outcome {
        let pong = ServerFrame::Pong(token).to_bytes();
        if !self.needs_sync(user) {
            user.inbox().push_reply(pong);
            return Outcome::Done;
        }
        let synced = self.sync_published(user);
        let inbox = user.inbox().clone();
        Outcome::Wait(Box::pin(async move {
            synced.await;
            inbox.push_reply(pong);
            Done::Updated(Ok(Update::Synced))
        }))
    }

    /// `LEAVE [<text>]`: out of the lobby and every room; the others hear
    /// the lobby's `LEAVE`. Done once the user's inbox holds everything
    /// broadcast before it.
    pub fn leave(&self, user: &mut User, text: Option<String>) -> Outcome {
        let joined = std::mem::take(&mut user.joined);
        user.leaving = true;
        // In cluster mode the user's own last messages come back from the
        // bus first, so the leaver gets them before BYE.
        let synced = self.sync_published(user);
        let leaving = self.0.leaving.clone();
        let gone = Leaving {
            name: user.member.name.clone(),
            inbox: user.inbox().clone(),
            text,
            cause: "left",
            placed: None,
            joined,
        };
        Outcome::Wait(Box::pin(async move {
            synced.await;
            let (placed, answer) = oneshot::channel();
            let gone = Leaving {
                placed: Some(placed),
                ..gone
            };
            if leaving.send(gone).await.is_ok() {
                let _ = answer.await;
            }
            Done::Left
        }))
    }

    /// The user is gone without `LEAVE` (closed, timed out, evicted…):
    /// frees the name and tells everyone else; `cause` says why, for the
    /// log.
    pub async fn quit(&self, mut user: User, cause: &'static str) {
        if user.leaving {
            // Its own LEAVE told the hub already.
            return;
        }
        let mut joined = std::mem::take(&mut user.joined);
        self.rooms().leave_all(&user.key(), &mut joined);
        self.forget(user.member.name.clone(), user.member.inbox.clone(), cause)
            .await;
    }

    /// Frees a name granted to a connection that ended before it heard.
    pub(crate) async fn forget(&self, name: Arc<str>, inbox: Arc<Inbox>, cause: &'static str) {
        let gone = Leaving {
            name,
            inbox,
            text: None,
            cause,
            placed: None,
            joined: Joined::new(),
        };
        // Fails only when the hub has stopped, and then nobody is left to tell.
        let _ = self.0.leaving.send(gone).await;
    }

    /// Whether the hub can serve a login now: it answers a census.
    pub async fn serves(&self) -> bool {
        self.census(self.inbox()).await.is_ok()
    }

    /// Puts the lobby's `NAMES` into `inbox`, after the `JOIN`s and
    /// `LEAVE`s it reflects and before any other.
    fn census(
        &self,
        inbox: Arc<Inbox>,
    ) -> impl Future<Output = Result<(), ErrorCode>> + Send + 'static {
        let census = self.0.census.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            census
                .send((inbox, reply))
                .await
                .map_err(|_| ErrorCode::ShuttingDown)?;
            answer.await.map_err(|_| ErrorCode::ShuttingDown)?
        }
    }

    /// Lets the hub go: in cluster mode, frees the names this node still
    /// holds so the other nodes announce them at once, not after the lease.
    pub async fn close(&self) {
        if let Some(bus) = self.bus() {
            bus.depart().await;
        }
    }

    /// Waits until what the user published has come back to this node, so
    /// that what the session takes from its inbox next includes it.
    fn sync_published(&self, user: &mut User) -> impl Future<Output = ()> + Send + 'static {
        let bus = self.needs_sync(user).then(|| self.bus().cloned()).flatten();
        let receipt = std::mem::take(&mut user.published);
        async move {
            if let Some(bus) = bus {
                bus.sync(receipt).await;
            }
        }
    }

    fn needs_sync(&self, user: &User) -> bool {
        self.bus().is_some() && user.published != Receipt::default()
    }

    fn limits(&self) -> Limits {
        self.rooms().limits()
    }
}
