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

pub mod accounts;
pub mod cluster;
pub(crate) mod inbox;
pub(crate) mod local;
pub(crate) mod room;
pub(crate) mod rooms;
#[cfg(test)]
mod tests;
mod user;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chat_protocol::{name_key, ErrorCode, Password, ServerFrame};

use accounts::{Accounts, Proof};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use cluster::Bus;
pub use inbox::{drained, reading, Inbox, Outgoing, STALL_LIMIT};
pub use room::{lock, Member, Room, SharedRoom};
pub use rooms::{Full, Joined, Limits, Membership, Rooms};
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
    Refused(Refusal),
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
        result.unwrap_or_else(|code| Outcome::Refused(code.into()))
    }

    fn refused(code: ErrorCode) -> Outcome {
        Outcome::Refused(code.into())
    }
}

/// Why a request was refused: the `ERROR` to answer with. Most refusals
/// say the same every time; a ban, a mute or a kick says until when, or by
/// whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    /// The detail of the `ERROR`, when it is not the code's usual words.
    pub detail: Option<String>,
}

impl Refusal {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Refusal {
        Refusal {
            code,
            detail: Some(detail.into()),
        }
    }
}

impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Refusal {
        Refusal { code, detail: None }
    }
}

/// What a request in flight came back with.
pub enum Done {
    /// A login: the user, whose inbox has `WELCOME` and `NAMES` first.
    Entered(Result<User, Refusal>),
    /// A logged-in user's request: what changed for the user, for
    /// [`User::apply`], or why it was refused.
    Updated(Result<Update, Refusal>),
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
    /// The login proved the name's password: a connection that holds the
    /// name now loses it (`logged-in-elsewhere`).
    pub take_back: bool,
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
    /// An operator removes the user: its connection is told this and
    /// closed, once the others have heard its `LEAVE`.
    pub farewell: Option<Refusal>,
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
    /// Accounts and moderation; not served in cluster mode yet.
    accounts: Option<Arc<Accounts>>,
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
        accounts: Arc<Accounts>,
        shutdown: CancellationToken,
    ) -> (Hub, JoinHandle<()>) {
        let (hub, requests) = Hub::with_accounts(backlog, limits, None, Some(accounts));
        let local = local::Local::new(hub.lobby().clone(), hub.rooms_shared(), shutdown);
        let task = tokio::spawn(local.run(requests));
        (hub, task)
    }

    /// The handle and the requests of a hub without accounts, for tests
    /// that start its task themselves.
    #[cfg(test)]
    pub(crate) fn channels(backlog: usize, limits: Limits, bus: Option<Bus>) -> (Hub, Requests) {
        Hub::with_accounts(backlog, limits, bus, None)
    }

    pub(crate) fn with_accounts(
        backlog: usize,
        limits: Limits,
        bus: Option<Bus>,
        accounts: Option<Arc<Accounts>>,
    ) -> (Hub, Requests) {
        let (entering, entering_rx) = mpsc::channel(REQUEST_QUEUE);
        let (leaving, leaving_rx) = mpsc::channel(REQUEST_QUEUE);
        let (census, census_rx) = mpsc::channel(REQUEST_QUEUE);
        let rooms = Rooms::new(limits);
        // In cluster mode history lives in Redis, bounded there: a node
        // keeps none of its own.
        let keep = if bus.is_some() { 0 } else { limits.history };
        let lobby = Room::lobby(keep).counted_in(rooms.memory());
        let hub = Hub(Arc::new(Shared {
            entering,
            leaving,
            census,
            lobby: Arc::new(Mutex::new(lobby)),
            rooms: Arc::new(rooms),
            backlog,
            mode: bus.map_or(Mode::Local, Mode::Cluster),
            accounts,
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

    /// `NAME <name> [<password>]` from `peer`: claims `name`. Once the
    /// login is granted, `inbox` holds `WELCOME` and `NAMES`, then
    /// everything broadcast after the user's `JOIN`. A right password takes
    /// the name back from a connection that holds it.
    pub fn enter(
        &self,
        name: String,
        password: Option<Password>,
        inbox: Arc<Inbox>,
        peer: IpAddr,
    ) -> Outcome {
        let hub = self.clone();
        Outcome::Wait(Box::pin(async move {
            let key = name_key(&name);
            let proof = match (hub.accounts(), password) {
                (Some(accounts), password) => {
                    match accounts.name_banned_now(&key).await {
                        Ok(None) => {}
                        Ok(Some(banned)) | Err(banned) => return Done::Entered(Err(banned)),
                    }
                    match accounts.prove(&key, password.as_ref()).await {
                        Ok(proof) => proof,
                        Err(refusal) => return Done::Entered(Err(refusal)),
                    }
                }
                (None, None) => Proof::Unregistered,
                (None, Some(_)) => return Done::Entered(Err(not_in_cluster_mode())),
            };
            let take_back = matches!(proof, Proof::Password);
            let operator = take_back && hub.accounts().is_some_and(|a| a.is_operator(&key));
            let mut tries = 0;
            let welcome = loop {
                let welcome = hub.claim(&name, &inbox, take_back).await;
                let cluster = hub.accounts().and_then(|a| a.cluster());
                match (welcome, cluster) {
                    // In a cluster the name may be held on another node: that
                    // node closes it, and the name is free a moment later.
                    (Err(ErrorCode::NameTaken), Some(redis))
                        if take_back && tries < TAKE_BACK_TRIES =>
                    {
                        if tries == 0 {
                            let detail = explain_elsewhere();
                            if let Err(e) = redis
                                .farewell(&key, ErrorCode::LoggedInElsewhere.as_str(), detail)
                                .await
                            {
                                tracing::warn!(error = %e, "cannot take a name back");
                            }
                        }
                        tries += 1;
                        tokio::time::sleep(TAKE_BACK_PAUSE).await;
                    }
                    (welcome, _) => break welcome,
                }
            };
            Done::Entered(
                welcome
                    .map(|w| User::new(w, inbox, peer, operator))
                    .map_err(Refusal::from),
            )
        }))
    }

    /// Asks the hub task for the name; `take_back` after a right password.
    async fn claim(
        &self,
        name: &str,
        inbox: &Arc<Inbox>,
        take_back: bool,
    ) -> Result<Welcome, ErrorCode> {
        let (reply, answer) = oneshot::channel();
        let entering = Entering {
            name: name.to_owned(),
            inbox: inbox.clone(),
            take_back,
            reply,
        };
        match self.0.entering.send(entering).await {
            Ok(()) => answer.await.unwrap_or(Err(ErrorCode::ShuttingDown)),
            Err(_) => Err(ErrorCode::ShuttingDown),
        }
    }

    /// Connections from a banned address are refused at once.
    pub fn address_banned(&self, peer: IpAddr) -> Option<Refusal> {
        self.accounts()?.address_banned(peer)
    }

    fn accounts(&self) -> Option<&Arc<Accounts>> {
        self.0.accounts.as_ref()
    }

    /// The accounts, or the refusal of a version 3 request in cluster mode.
    fn accounts_or_refuse(&self) -> Result<Arc<Accounts>, Refusal> {
        self.accounts().cloned().ok_or_else(not_in_cluster_mode)
    }

    /// `MUTE` is a right, checked before the state of rooms and names.
    fn muted(&self, user: &User) -> Option<Refusal> {
        self.accounts()?.muted(&user.key())
    }

    /// `MSG` (no room) or `SAY`: every member, the sender too, gets the
    /// message, and it is kept for history.
    pub fn publish(&self, user: &mut User, room: Option<&str>, text: String) -> Outcome {
        if let Some(muted) = self.muted(user) {
            return Outcome::Refused(muted);
        }
        let room = match room.map(|room| user.room(room)).transpose() {
            Ok(room) => room,
            Err(code) => return Outcome::refused(code),
        };
        match self.bus() {
            None => {
                let store = self.accounts().and_then(|a| a.lobby_store());
                let full = local::publish(self.lobby(), store, user, room, text);
                self.rooms().trim_history(self.lobby());
                Outcome::published(full)
            }
            Some(bus) => cluster::requests::publish(bus, self.limits(), user, room, text),
        }
    }

    /// `JOIN <room>`: the joiner gets the room's `NAMES` (and `TOPIC`)
    /// after everything the room said before; the others get its `JOIN`.
    pub fn join(&self, user: &mut User, room: String) -> Outcome {
        if let Err(code) = user.may_join(&room, self.limits()) {
            return Outcome::refused(code);
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
            Err(code) => return Outcome::refused(code),
        };
        match self.bus() {
            None => Outcome::published(self.rooms().part(user, &shared, text)),
            Some(bus) => cluster::requests::part(bus, user, &shared, text),
        }
    }

    /// `TELL <name> <text>`: the receiver and the sender both get it.
    pub fn tell(&self, user: &mut User, to: &str, text: String) -> Outcome {
        if let Some(muted) = self.muted(user) {
            return Outcome::Refused(muted);
        }
        match self.bus() {
            None => Outcome::from_result(
                local::tell(self.lobby(), user, to, text).map(Outcome::published),
            ),
            Some(bus) => cluster::requests::tell(bus, user, to, text),
        }
    }

    /// `TOPIC <room> [<text>]`: sets the topic, or asks for it.
    pub fn topic(&self, user: &mut User, room: &str, text: Option<String>) -> Outcome {
        if text.is_some() {
            if let Some(muted) = self.muted(user) {
                return Outcome::Refused(muted);
            }
        }
        let shared = match user.room(room) {
            Ok(shared) => shared.clone(),
            Err(code) => return Outcome::refused(code),
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
                    Done::Updated(
                        counted
                            .await
                            .map(|()| Update::Nothing)
                            .map_err(Refusal::from),
                    )
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
                user.inbox().push_reply(self.rooms().list());
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
            Err(code) => return Outcome::refused(code),
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
            farewell: None,
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
        self.rooms()
            .leave_all(&user.key(), user.inbox(), &mut joined);
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
            farewell: None,
        };
        // Fails only when the hub has stopped, and then nobody is left to tell.
        let _ = self.0.leaving.send(gone).await;
    }

    /// `REGISTER <password>`: the name the user is logged in under.
    pub fn register(&self, user: &mut User, password: Password) -> Outcome {
        let accounts = match self.accounts_or_refuse() {
            Ok(accounts) => accounts,
            Err(refusal) => return Outcome::Refused(refusal),
        };
        let (name, inbox) = (user.member.name.clone(), user.inbox().clone());
        let operator = accounts.is_operator(&user.key());
        Outcome::Wait(Box::pin(async move {
            let registered = accounts.register(&name, &password).await.map(|()| {
                crate::metrics::account_registered(1);
                inbox.push_reply(ServerFrame::Registered(name.to_string()).to_bytes());
                Update::Proved { operator }
            });
            Done::Updated(registered)
        }))
    }

    /// `PASSWORD <old> <new>`.
    pub fn change_password(&self, user: &mut User, old: Password, new: Password) -> Outcome {
        let accounts = match self.accounts_or_refuse() {
            Ok(accounts) => accounts,
            Err(refusal) => return Outcome::Refused(refusal),
        };
        let (name, inbox) = (user.member.name.clone(), user.inbox().clone());
        Outcome::Wait(Box::pin(async move {
            let changed = accounts.change_password(&name, &old, &new).await.map(|()| {
                inbox.push_reply(ServerFrame::Registered(name.to_string()).to_bytes());
                Update::Nothing
            });
            Done::Updated(changed)
        }))
    }

    /// `UNREGISTER <password>`: the user is no operator from then on.
    pub fn unregister(&self, user: &mut User, password: Password) -> Outcome {
        let accounts = match self.accounts_or_refuse() {
            Ok(accounts) => accounts,
            Err(refusal) => return Outcome::Refused(refusal),
        };
        let (name, inbox) = (user.member.name.clone(), user.inbox().clone());
        Outcome::Wait(Box::pin(async move {
            let gone = accounts.unregister(&name, &password).await.map(|()| {
                crate::metrics::account_registered(-1);
                inbox.push_reply(ServerFrame::Unregistered(name.to_string()).to_bytes());
                Update::Unproved
            });
            Done::Updated(gone)
        }))
    }

    /// `KICK <name> [<text>]`: the user's connection is told who kicked it
    /// and closed; everyone else hears its `LEAVE`.
    pub fn kick(&self, user: &mut User, name: &str, text: Option<String>) -> Outcome {
        let target = match self.moderated(user, name) {
            Ok(target) => target,
            Err(refusal) => return Outcome::Refused(refusal),
        };
        let mut detail = user.name().to_owned();
        if let Some(text) = &text {
            detail.push(' ');
            detail.push_str(text);
        }
        let farewell = Refusal::new(ErrorCode::Kicked, detail);
        let (hub, key) = (self.clone(), name_key(name));
        let ok = ok_frame("KICK", name, user);
        Outcome::Wait(Box::pin(async move {
            let removed = match target {
                Some(target) => {
                    hub.remove(target, farewell, "kicked").await;
                    Ok(())
                }
                None => hub.remove_elsewhere(&key, &farewell).await,
            };
            Done::Updated(removed.map(|()| {
                ok.0.push_reply(ok.1);
                Update::Nothing
            }))
        }))
    }

    /// `BAN <name> <duration> [<text>]`: the name, and the address it is
    /// connected from, are refused until then; a logged-in user is told so
    /// and closed.
    pub fn ban(
        &self,
        user: &mut User,
        name: &str,
        duration: std::time::Duration,
        text: Option<String>,
    ) -> Outcome {
        let target = match self.moderated(user, name) {
            Ok(target) => target,
            Err(refusal) => return Outcome::Refused(refusal),
        };
        let Ok(accounts) = self.accounts_or_refuse() else {
            return Outcome::Refused(not_in_cluster_mode());
        };
        let (hub, key, by) = (self.clone(), name_key(name), user.name().to_owned());
        let ok = ok_frame("BAN", name, user);
        Outcome::Wait(Box::pin(async move {
            let ip = target.as_ref().map(|t| t.peer);
            let banned = match accounts.ban(&key, ip, duration, text, &by).await {
                Ok(banned) => banned,
                Err(refusal) => return Done::Updated(Err(refusal)),
            };
            match target {
                Some(target) => hub.remove(target, banned, "banned").await,
                // Logged in on another node, or nowhere: nothing to close
                // here, and a ban needs nobody logged in.
                None => match hub.remove_elsewhere(&key, &banned).await {
                    Ok(()) => {}
                    Err(refusal) if refusal.code == ErrorCode::NoSuchUser => {}
                    Err(refusal) => return Done::Updated(Err(refusal)),
                },
            }
            ok.0.push_reply(ok.1);
            Done::Updated(Ok(Update::Nothing))
        }))
    }

    /// `UNBAN <name>`: the name and its address; answered `OK` even if it
    /// was not banned.
    pub fn unban(&self, user: &mut User, name: &str) -> Outcome {
        if let Err(refusal) = self.operator(user) {
            return Outcome::Refused(refusal);
        }
        let Ok(accounts) = self.accounts_or_refuse() else {
            return Outcome::Refused(not_in_cluster_mode());
        };
        let key = name_key(name);
        let ok = ok_frame("UNBAN", name, user);
        Outcome::Wait(Box::pin(async move {
            let lifted = accounts.unban(&key).await.map(|()| {
                ok.0.push_reply(ok.1);
                Update::Nothing
            });
            Done::Updated(lifted)
        }))
    }

    /// `MUTE <name> <duration> [<text>]` of a logged-in user.
    pub fn mute(
        &self,
        user: &mut User,
        name: &str,
        duration: std::time::Duration,
        text: Option<String>,
    ) -> Outcome {
        self.silence(user, name, "MUTE", Some((duration, text)))
    }

    /// `UNMUTE <name>` of a logged-in user.
    pub fn unmute(&self, user: &mut User, name: &str) -> Outcome {
        self.silence(user, name, "UNMUTE", None)
    }

    fn silence(
        &self,
        user: &mut User,
        name: &str,
        verb: &'static str,
        mute: Option<(std::time::Duration, Option<String>)>,
    ) -> Outcome {
        let here = match self.moderated(user, name) {
            Ok(target) => target.is_some(),
            Err(refusal) => return Outcome::Refused(refusal),
        };
        let Ok(accounts) = self.accounts_or_refuse() else {
            return Outcome::Refused(not_in_cluster_mode());
        };
        let (hub, key, by) = (self.clone(), name_key(name), user.name().to_owned());
        let ok = ok_frame(verb, name, user);
        Outcome::Wait(Box::pin(async move {
            if !here {
                match hub.logged_in_elsewhere(&key).await {
                    Ok(true) => {}
                    Ok(false) => return Done::Updated(Err(ErrorCode::NoSuchUser.into())),
                    Err(refusal) => return Done::Updated(Err(refusal)),
                }
            }
            let done = match mute {
                Some((duration, text)) => accounts.mute(&key, duration, text, &by).await,
                None => accounts.unmute(&key).await,
            };
            Done::Updated(done.map(|()| {
                ok.0.push_reply(ok.1);
                Update::Nothing
            }))
        }))
    }

    /// `BANS`: the bans in force.
    pub fn bans(&self, user: &mut User) -> Outcome {
        if let Err(refusal) = self.operator(user) {
            return Outcome::Refused(refusal);
        }
        let bans = self.accounts().map(|a| a.bans()).unwrap_or_default();
        user.inbox().push_reply(ServerFrame::Bans(bans).to_bytes());
        Outcome::Done
    }

    /// `not-operator` unless the user is an operator.
    fn operator(&self, user: &User) -> Result<(), Refusal> {
        if user.operator() {
            Ok(())
        } else {
            Err(ErrorCode::NotOperator.into())
        }
    }

    /// The rights for `KICK`, `BAN`, `MUTE` and `UNMUTE` of `name`: an
    /// operator, aiming at neither itself nor another operator. Then the
    /// user logged in under `name` here, if any.
    fn moderated(&self, user: &User, name: &str) -> Result<Option<Target>, Refusal> {
        self.operator(user)?;
        let key = name_key(name);
        let is_operator = self.accounts().is_some_and(|a| a.is_operator(&key));
        if key == user.key() || is_operator {
            return Err(ErrorCode::NotOperator.into());
        }
        let lobby = lock(self.lobby());
        Ok(lobby.member(&key).map(|member| Target {
            name: member.name.clone(),
            inbox: member.inbox.clone(),
            peer: member.inbox.peer(),
        }))
    }

    /// Whether the name is logged in on another node (never, in a single
    /// process).
    async fn logged_in_elsewhere(&self, key: &str) -> Result<bool, Refusal> {
        match self.accounts().and_then(|a| a.cluster()) {
            None => Ok(false),
            Some(redis) => redis.logged_in(key).await.map_err(|e| {
                tracing::error!(error = %e, "cannot reach Redis for moderation");
                Refusal::from(ErrorCode::Unavailable)
            }),
        }
    }

    /// Closes a user logged in on another node: its node finds the
    /// farewell in Redis and closes it (`no-such-user` if it is nowhere).
    async fn remove_elsewhere(&self, key: &str, farewell: &Refusal) -> Result<(), Refusal> {
        if !self.logged_in_elsewhere(key).await? {
            return Err(ErrorCode::NoSuchUser.into());
        }
        let Some(redis) = self.accounts().and_then(|a| a.cluster()) else {
            return Err(ErrorCode::NoSuchUser.into());
        };
        let detail = farewell.detail.as_deref().unwrap_or_default();
        redis
            .farewell(key, farewell.code.as_str(), detail)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot reach Redis for moderation");
                Refusal::from(ErrorCode::Unavailable)
            })
    }

    /// Cluster mode: closes this node's users whose removal another node
    /// asked for, and reads bans and mutes again; twice a second.
    pub async fn follow_moderation(self) {
        let mut tick = tokio::time::interval(FOLLOW_MODERATION);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(accounts) = self.accounts().cloned() else {
                return;
            };
            let Some(redis) = accounts.cluster() else {
                return;
            };
            if let Err(e) = accounts.reload().await {
                tracing::debug!(error = %e, "cannot read bans and mutes now");
                continue;
            }
            let farewells: Vec<(String, String, String)> = match redis.farewells().await {
                Ok(farewells) => farewells,
                Err(_) => continue,
            };
            for (key, code, detail) in farewells {
                let target = lock(self.lobby()).member(&key).map(|member| Target {
                    name: member.name.clone(),
                    inbox: member.inbox.clone(),
                    peer: member.inbox.peer(),
                });
                let Some(target) = target else { continue };
                let code = code.parse().unwrap_or(ErrorCode::Kicked);
                let refusal = match detail.as_str() {
                    "" => Refusal::from(code),
                    detail => Refusal::new(code, detail),
                };
                self.remove(target, refusal, "removed by an operator").await;
                let _ = redis.forget_farewell(&key).await;
            }
        }
    }

    /// Takes a user out, as the hub task does for a `LEAVE`, and tells its
    /// connection why before closing it.
    fn remove(
        &self,
        target: Target,
        farewell: Refusal,
        cause: &'static str,
    ) -> impl Future<Output = ()> + Send + 'static {
        let leaving = self.0.leaving.clone();
        async move {
            let (placed, answer) = oneshot::channel();
            let gone = Leaving {
                name: target.name,
                inbox: target.inbox,
                text: None,
                cause,
                placed: Some(placed),
                joined: Joined::new(),
                farewell: Some(farewell),
            };
            if leaving.send(gone).await.is_ok() {
                let _ = answer.await;
            }
        }
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

    /// The lobby's history as the store kept it across a restart.
    pub fn restore_lobby(&self, said: Vec<crate::store::LobbyLine>) {
        let mut lobby = lock(self.lobby());
        for line in said {
            let time = chat_protocol::Timestamp::from_unix_millis(line.time_ms.max(0) as u64)
                .unwrap_or_else(chat_protocol::Timestamp::now);
            lobby.restore(time, line.from.into(), &line.text);
        }
        drop(lobby);
        self.rooms().trim_history(self.lobby());
    }

    /// Lets the hub go: in cluster mode, frees the names this node still
    /// holds so the other nodes announce them at once, not after the lease;
    /// in a single process, writes what the store has queued and lets the
    /// data directory go.
    pub async fn close(&self) {
        if let Some(bus) = self.bus() {
            bus.depart().await;
        }
        if let Some(accounts) = self.accounts() {
            accounts.close().await;
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

/// A logged-in user an operator acts on.
struct Target {
    name: Arc<str>,
    inbox: Arc<Inbox>,
    peer: IpAddr,
}

/// `OK <verb> <name>` for the operator, and where it goes.
fn ok_frame(verb: &str, name: &str, operator: &User) -> (Arc<Inbox>, bytes::Bytes) {
    let frame = ServerFrame::Ok {
        verb: verb.to_owned(),
        name: name.to_owned(),
    };
    (operator.inbox().clone(), frame.to_bytes())
}

/// How often a cluster node looks for removals other nodes asked for, and
/// reads bans and mutes again.
const FOLLOW_MODERATION: std::time::Duration = std::time::Duration::from_millis(500);
/// Taking a name back from another node: tries, and the pause between them.
const TAKE_BACK_TRIES: u32 = 20;
const TAKE_BACK_PAUSE: std::time::Duration = std::time::Duration::from_millis(150);

/// The detail of `logged-in-elsewhere` left for another node.
fn explain_elsewhere() -> &'static str {
    "you logged in on another connection; closing"
}

/// A hub made without accounts (only tests make one) serves no version 3.
fn not_in_cluster_mode() -> Refusal {
    Refusal::new(ErrorCode::Unavailable, "this server keeps no accounts")
}
