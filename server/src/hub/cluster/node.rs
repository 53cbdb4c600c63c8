//! The node: the hub task of a server in cluster mode.
//!
//! It owns the same things as the local hub task, and one more: a replica of
//! the cluster's user list, kept by applying the stream's `JOIN` and
//! `LEAVE` frames in stream order. Because the replica moves with the
//! stream, the `NAMES` a newcomer gets describes the lobby at exactly the
//! point from which it receives broadcasts: a login is completed when its
//! own `JOIN` comes back from the stream, not when Redis answers the login.
//!
//! Rooms work the same way. Every room frame comes through the stream, and
//! this task pushes it to the room's members on this node only. A room
//! join is completed when its `JOIN` comes back, which carries the
//! members and topic as of that point for the joiner's `NAMES` and
//! `TOPIC`; a room's `LEAVE` takes the member out once delivered.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_protocol::{name_key, room_key, ErrorCode, ServerFrame, ServerFrameRef};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::calls::{Call, Joining};
use super::driver::{Command, LinkState};
use super::pipeline::Reply;
use super::reader::{Delivery, Entry};
use super::replica::{self, Replica};
use crate::hub::inbox::{fan_out, once_each};
use crate::hub::{
    drained, lock, Entering, Inbox, Joined, Leaving, Member, Receipt, Requests, Rooms, SharedRoom,
    Welcome,
};

/// How often stale logins are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// Something that waits for the stream's entry `Receipt` to be delivered
/// here.
pub(crate) enum Waiter {
    /// A `PING` waiting for its user's last frame to come back.
    Wake(oneshot::Sender<()>),
    /// A reply read from Redis when the stream ended at that entry: it goes
    /// into the asker's inbox right after that entry, where it belongs
    /// among the frames.
    /// The session is told once it is there.
    Place(Arc<Inbox>, Bytes, oneshot::Sender<()>),
}

impl Waiter {
    fn release(self) {
        match self {
            Waiter::Wake(waiter) => {
                let _ = waiter.send(());
            }
            Waiter::Place(inbox, reply, placed) => {
                inbox.push_reply(reply);
                let _ = placed.send(());
            }
        }
    }
}

pub(crate) type SyncRequest = (Receipt, Waiter);

/// A request to enter a room, from a session.
pub(crate) struct RoomEntering {
    /// As the user typed it; a new room keeps this spelling.
    pub room: String,
    pub member: Member,
    pub reply: oneshot::Sender<Result<SharedRoom, ErrorCode>>,
}

/// Redis's answer to a login or a room join, by token.
enum Answer {
    Login(String, Result<(), ErrorCode>),
    Join(String, Result<(), ErrorCode>),
}

type Answering = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// A user who sent `LEAVE`, waiting for it to come back.
struct Departing {
    inbox: Arc<Inbox>,
    joined: Joined,
    placed: oneshot::Sender<()>,
    since: Instant,
}

/// A room join waiting for its `JOIN` to come back.
struct PendingJoin {
    member: Member,
    reply: oneshot::Sender<Result<SharedRoom, ErrorCode>>,
    since: Instant,
}

struct Pending {
    name: Arc<str>,
    inbox: Arc<Inbox>,
    reply: oneshot::Sender<Result<Welcome, ErrorCode>>,
    since: Instant,
}

pub(crate) struct Node {
    node: Arc<str>,
    lease: Duration,
    /// Everyone in the cluster, as of `delivered`.
    replica: Replica,
    /// This node's users and what ends each session.
    local: HashMap<String, CancellationToken>,
    /// Logins waiting for their `JOIN` to come back, by token.
    pending: HashMap<String, Pending>,
    /// Users who sent `LEAVE`, until it comes back, by name key.
    departing: HashMap<String, Departing>,
    /// Room joins waiting for their `JOIN` to come back, by token.
    joining: HashMap<String, PendingJoin>,
    /// The rooms with members on this node.
    rooms: Arc<Rooms>,
    /// After Redis lost its data: when to announce the users nobody
    /// registered again.
    reconcile_at: Option<Instant>,
    /// After Redis lost its data: Redis's answer to putting this node's
    /// users back in their rooms, until it has taken it.
    enrolling: Option<oneshot::Receiver<Result<Reply, ErrorCode>>>,
    next_token: u64,
    /// Whether the reader has told where the stream starts.
    started: bool,
    /// The number of the last entry delivered to this node's inboxes.
    delivered: u64,
    waiters: BTreeMap<u64, Vec<Waiter>>,
    /// This node's users, for delivering what the stream brings.
    lobby: SharedRoom,
    /// Parent of every user's token; replaced when the lease is lost.
    vouched: CancellationToken,
    commands: mpsc::Sender<Command>,
    link: watch::Receiver<LinkState>,
    leases_lost: u64,
    conflicts_seen: u64,
}

impl Node {
    pub(crate) fn new(
        node: Arc<str>,
        lease: Duration,
        lobby: SharedRoom,
        rooms: Arc<Rooms>,
        commands: mpsc::Sender<Command>,
        link: watch::Receiver<LinkState>,
    ) -> Node {
        Node {
            node,
            lease,
            replica: Replica::default(),
            local: HashMap::new(),
            pending: HashMap::new(),
            departing: HashMap::new(),
            joining: HashMap::new(),
            rooms,
            reconcile_at: None,
            enrolling: None,
            next_token: 0,
            started: false,
            delivered: 0,
            waiters: BTreeMap::new(),
            lobby,
            vouched: CancellationToken::new(),
            commands,
            link,
            leases_lost: 0,
            conflicts_seen: 0,
        }
    }

    pub(crate) async fn run(
        mut self,
        requests: Requests,
        mut syncs: mpsc::Receiver<SyncRequest>,
        mut deliveries: mpsc::Receiver<Delivery>,
        mut joins: mpsc::Receiver<RoomEntering>,
    ) {
        let Requests {
            mut entering,
            mut leaving,
            mut census,
        } = requests;
        let mut answers: FuturesUnordered<Answering> = FuturesUnordered::new();
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                biased;
                Some(delivery) = deliveries.recv() => self.deliver(delivery).await,
                Ok(()) = self.link.changed() => self.link_changed(),
                Some(answer) = answers.next() => self.answered(answer),
                Some(gone) = leaving.recv() => self.leave(gone).await,
                Some(newcomer) = entering.recv() => {
                    if let Some(answer) = self.enter(newcomer).await {
                        answers.push(answer);
                    }
                }
                Some(joiner) = joins.recv() => {
                    if let Some(answer) = self.enter_room(joiner).await {
                        answers.push(answer);
                    }
                }
                Some((inbox, reply)) = census.recv() => {
                    let answer = if self.available() {
                        inbox.push_reply(self.replica.names());
                        Ok(())
                    } else {
                        Err(ErrorCode::Unavailable)
                    };
                    let _ = reply.send(answer);
                }
                Some((receipt, waiter)) = syncs.recv() => {
                    if receipt.0 <= self.delivered {
                        waiter.release();
                    } else {
                        self.waiters.entry(receipt.0).or_default().push(waiter);
                    }
                }
                _ = sweep.tick() => self.sweep().await,
                else => break,
            }
        }
    }

    fn available(&self) -> bool {
        self.started && self.link.borrow().up
    }

    async fn enter(&mut self, entering: Entering) -> Option<Answering> {
        // Taking a name back is not served in cluster mode yet.
        let Entering {
            name, inbox, reply, ..
        } = entering;
        if !self.available() {
            let _ = reply.send(Err(ErrorCode::Unavailable));
            return None;
        }
        let key = name_key(&name);
        let pending_same = self.pending.values().any(|p| name_key(&p.name) == key);
        if self.replica.contains(&key) || pending_same {
            let _ = reply.send(Err(ErrorCode::NameTaken));
            return None;
        }
        self.next_token += 1;
        let token = format!("{}:{}", self.node, self.next_token);
        let name: Arc<str> = name.into();
        let (answer, outcome) = oneshot::channel();
        let command = Command::Login {
            name: name.clone(),
            token: token.clone(),
            reply: answer,
        };
        if self.commands.send(command).await.is_err() {
            let _ = reply.send(Err(ErrorCode::ShuttingDown));
            return None;
        }
        self.pending.insert(
            token.clone(),
            Pending {
                name,
                inbox,
                reply,
                since: Instant::now(),
            },
        );
        Some(Box::pin(async move {
            Answer::Login(token, outcome.await.unwrap_or(Err(ErrorCode::Unavailable)))
        }))
    }

    /// Asks Redis to put a user in a room; the join completes when its
    /// `JOIN` comes back from the stream.
    async fn enter_room(&mut self, entering: RoomEntering) -> Option<Answering> {
        let RoomEntering {
            room,
            member,
            reply,
        } = entering;
        if !self.available() {
            let _ = reply.send(Err(ErrorCode::Unavailable));
            return None;
        }
        self.next_token += 1;
        let token = format!("{}:{}", self.node, self.next_token);
        let user_key = name_key(&member.name);
        let room_key = room_key(&room);
        let limits = self.rooms.limits();
        let joining = Joining {
            key: &room_key,
            spelled: &room,
            user_key: &user_key,
            user: &member.name,
            address: limits.rooms_address(member.inbox.peer()),
        };
        let call = Call::join(&joining, &self.node, &limits, &token);
        let (answer, outcome) = oneshot::channel();
        let command = Command::Call {
            call,
            reply: answer,
        };
        if self.commands.send(command).await.is_err() {
            let _ = reply.send(Err(ErrorCode::ShuttingDown));
            return None;
        }
        self.joining.insert(
            token.clone(),
            PendingJoin {
                member,
                reply,
                since: Instant::now(),
            },
        );
        Some(Box::pin(async move {
            let outcome = match outcome.await {
                Ok(Ok(reply)) => reply.joined(),
                Ok(Err(code)) => Err(code),
                Err(_) => Err(ErrorCode::Unavailable),
            };
            Answer::Join(token, outcome)
        }))
    }

    /// Redis answered a login or a join. Success needs nothing more: the
    /// request completes when its `JOIN` is delivered, which may already
    /// have been.
    fn answered(&mut self, answer: Answer) {
        match answer {
            Answer::Login(token, Err(code)) => {
                if let Some(pending) = self.pending.remove(&token) {
                    let _ = pending.reply.send(Err(code));
                }
            }
            Answer::Join(token, Err(code)) => {
                if let Some(pending) = self.joining.remove(&token) {
                    let _ = pending.reply.send(Err(code));
                }
            }
            Answer::Login(_, Ok(())) | Answer::Join(_, Ok(())) => {}
        }
    }

    async fn leave(&mut self, gone: Leaving) {
        let Leaving {
            name,
            inbox,
            text,
            cause,
            placed,
            mut joined,
            farewell,
        } = gone;
        let key = name_key(&name);
        match placed {
            // A user who sent LEAVE stays in the lobby and its rooms until
            // its LEAVE comes back from the stream: it is owed everything
            // before it, its own last messages included. (In an outage
            // nothing comes back: it goes at once.)
            Some(placed) if self.available() && farewell.is_none() => {
                let departing = Departing {
                    inbox,
                    joined,
                    placed,
                    since: Instant::now(),
                };
                self.departing.insert(key.clone(), departing);
            }
            // A connection that is gone, or that an operator removes, is
            // owed nothing more: out at once. The LEAVE comes back from the
            // stream later (or, in an outage, much later) for the others.
            placed => {
                self.rooms.leave_all(&key, &inbox, &mut joined);
                let removed = lock(&self.lobby).remove_exact(&key, &inbox).is_some();
                if let (true, Some(farewell)) = (removed, farewell) {
                    inbox.end(farewell);
                }
                if let Some(placed) = placed {
                    let _ = placed.send(());
                }
                if !removed {
                    // Removed already (kicked, banned, its name taken
                    // back): its LEAVE is on its way, and the name may be
                    // someone else's by now.
                    return;
                }
            }
        }
        self.local.remove(&key);
        info!(user = %name, cause, "leave");
        // The driver keeps leaves until the bus takes them.
        let _ = self.commands.send(Command::Leave { name, text }).await;
    }

    /// Takes a departing user out of the lobby and its rooms, and tells
    /// its session that its inbox holds all it is owed.
    fn departed(&mut self, key: &str) {
        if let Some(mut gone) = self.departing.remove(key) {
            self.rooms.leave_all(key, &gone.inbox, &mut gone.joined);
            lock(&self.lobby).remove_exact(key, &gone.inbox);
            let _ = gone.placed.send(());
        }
    }

    /// Pushes what the stream delivered into this node's inboxes, waiting
    /// (and so reading the stream more slowly) while users that read are a
    /// whole backlog behind.
    async fn deliver(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Snapshot { users, position } => {
                self.replica.reset(users);
                self.delivered = position;
                self.started = true;
                info!(users = self.replica.len(), "following the cluster stream");
            }
            Delivery::Restart => {
                self.delivered = 0;
                self.release_waiters(u64::MAX);
                self.send_enroll();
                // Once the survivors have registered their users again,
                // whoever nobody registered is gone.
                self.reconcile_at = Some(Instant::now() + self.lease * 3 / 2);
            }
            Delivery::Entries(entries) => {
                for entry in entries {
                    self.apply(entry).await;
                    self.release_waiters(self.delivered);
                }
            }
        }
    }

    async fn apply(&mut self, entry: Entry) {
        let seq = entry.seq;
        if seq <= self.delivered {
            return;
        }
        let missed = seq - self.delivered - 1;
        if missed > 0 {
            // The stream no longer holds what this node did not read in time.
            self.deliver_here(&ServerFrame::Dropped(missed).to_bytes(), None)
                .await;
        }
        self.delivered = seq;
        match ServerFrameRef::from_bytes(&entry.frame) {
            Ok(ServerFrameRef::RoomJoin { room, name }) => {
                let (room, name) = (room.to_owned(), name_key(name));
                self.room_joined(&room, &name, &entry).await;
            }
            Ok(ServerFrameRef::RoomLeave { room, name, .. }) => {
                let (key, name) = (room_key(room), name_key(name));
                self.deliver_in_room(&key, &entry.frame, None).await;
                self.rooms.release(&key, &name);
            }
            Ok(ServerFrameRef::Say { room, .. }) => {
                self.deliver_in_room(&room_key(room), &entry.frame, None)
                    .await;
            }
            Ok(ServerFrameRef::Topic { room, setter, text }) => {
                let topic = (Arc::from(setter), text.to_owned());
                self.deliver_in_room(&room_key(room), &entry.frame, Some(topic))
                    .await;
            }
            Ok(ServerFrameRef::Tell { from, to, .. }) => {
                let (from, to) = (name_key(from), name_key(to));
                self.deliver_tell(&from, &to, &entry.frame).await;
            }
            // The lobby's frames: the replica follows its JOINs and LEAVEs.
            Ok(ServerFrameRef::Join(name)) => {
                self.replica.join(name);
                self.apply_lobby(entry).await;
            }
            Ok(ServerFrameRef::Leave { name, .. }) => {
                let key = name_key(name);
                self.replica.leave(&key);
                // A user of ours who sent LEAVE: out before its own LEAVE.
                self.departed(&key);
                self.apply_lobby(entry).await;
            }
            _ => self.apply_lobby(entry).await,
        }
    }

    /// A room's `JOIN`: the members here hear of it; if it is one of this
    /// node's joins, the joiner is added after it and gets the room's
    /// `NAMES` and `TOPIC` as of that point, carried by the entry.
    async fn room_joined(&mut self, room: &str, user_key: &str, entry: &Entry) {
        let key = room_key(room);
        self.deliver_in_room(&key, &entry.frame, None).await;
        let pending = entry.token.as_ref().and_then(|t| self.joining.remove(t));
        let Some(pending) = pending else {
            if self.is_ours(&entry.token) {
                // Refused here already (swept, or its answer lost with the
                // link), yet in the room: take the user out again.
                let frame = ServerFrame::RoomLeave {
                    room: room.to_owned(),
                    name: user_key.to_owned(),
                    text: None,
                }
                .to_bytes();
                let (reply, _) = oneshot::channel();
                let call = Call::part(&key, user_key, &frame);
                let _ = self.commands.try_send(Command::Call { call, reply });
            }
            return;
        };
        let shared = self.rooms.admit(room, user_key, pending.member.clone());
        {
            let mut joined = lock(&shared);
            let topic = entry.topic.as_deref().and_then(|t| t.split_once(' '));
            if let Some((setter, text)) = topic {
                joined.set_topic(&Arc::from(setter), text.to_owned());
            }
            let names = entry.names.as_deref().unwrap_or_default();
            let names = names.split(' ').filter(|n| !n.is_empty());
            let inbox = &pending.member.inbox;
            inbox.push_reply(ServerFrame::room_names_bytes(joined.name(), names));
            if joined.has_topic() {
                inbox.push_reply(joined.topic().to_bytes());
            }
        }
        if pending.reply.send(Ok(shared)).is_err() {
            // The session is gone; its leave takes it out of the room in
            // Redis.
            self.rooms.release(&key, user_key);
        }
    }

    /// Whether a `JOIN`'s token was handed out by this node.
    fn is_ours(&self, token: &Option<String>) -> bool {
        token
            .as_deref()
            .and_then(|t| t.split_once(':'))
            .is_some_and(|(node, _)| node == &*self.node)
    }

    /// Pushes a room's frame to its members on this node, setting its
    /// topic first if the frame says one; waits while members that read
    /// are a whole backlog behind.
    async fn deliver_in_room(&self, key: &str, frame: &Bytes, topic: Option<(Arc<str>, String)>) {
        let Some(shared) = self.rooms.here(key) else {
            return;
        };
        let mut full = Vec::new();
        {
            let mut room = lock(&shared);
            if let Some((setter, text)) = topic {
                room.set_topic(&setter, text);
            }
            room.publish(frame, &mut full);
        }
        drained(full).await;
    }

    /// A `TELL` reaches its receiver and its sender, once each, where they
    /// are logged in here.
    async fn deliver_tell(&self, from: &str, to: &str, frame: &Bytes) {
        let mut full = Vec::new();
        {
            let lobby = lock(&self.lobby);
            let receivers = [to, from].map(|key| lobby.member(key).map(|m| &m.inbox));
            fan_out(once_each(receivers.into_iter().flatten()), frame, &mut full);
        }
        drained(full).await;
    }

    /// After Redis lost its data: puts this node's users back in their
    /// rooms (again, if a try failed: it changes nothing twice).
    fn send_enroll(&mut self) {
        self.enrolling = None;
        let memberships = self.rooms.memberships();
        if memberships.is_empty() {
            return;
        }
        let (reply, answer) = oneshot::channel();
        let call = Call::enroll(&memberships);
        if self
            .commands
            .try_send(Command::Call { call, reply })
            .is_ok()
        {
            self.enrolling = Some(answer);
        } else {
            // Tried again at the next sweep.
            let (_, closed) = oneshot::channel();
            self.enrolling = Some(closed);
        }
    }

    /// Carries on putting this node's users back in their rooms after
    /// Redis lost its data, until Redis has taken it: the first try may
    /// come before the driver is back on the new data.
    fn enroll_again(&mut self) {
        let Some(answer) = &mut self.enrolling else {
            return;
        };
        match answer.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => {}
            Ok(Ok(reply)) if reply.enrolled() => self.enrolling = None,
            _ => self.send_enroll(),
        }
    }

    /// After the survivors registered their users again: announces, once
    /// across the cluster, the users this node still lists that nobody
    /// registered (their node died while Redis was down).
    async fn reconcile(&mut self) {
        self.reconcile_at = None;
        if self.replica.len() == 0 {
            return;
        }
        let call = Call::bury(self.replica.users());
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Call { call, reply })
            .await
            .is_ok()
        {
            tokio::spawn(async move {
                if let Ok(Ok(reply)) = answer.await {
                    if let Some(n) = reply.freed().filter(|n| *n > 0) {
                        info!(
                            users = n,
                            "announced users nobody registered after Redis lost its data"
                        );
                    }
                }
            });
        }
    }

    /// A lobby frame, the replica already moved: a login of this node's
    /// completes with its own `JOIN`.
    async fn apply_lobby(&mut self, Entry { frame, token, .. }: Entry) {
        let pending = token.as_ref().and_then(|token| self.pending.remove(token));
        let Some(pending) = pending else {
            self.deliver_here(&frame, None).await;
            if token.is_some_and(|t| t.starts_with(&format!("{}:", self.node))) {
                // A login of ours that was already refused (its answer was
                // lost with the link): give the name back.
                self.free_orphan(&frame);
            }
            return;
        };
        info!(user = %pending.name, users = self.replica.len(), "login");
        // Added right after its own JOIN: the newcomer gets its WELCOME and
        // the NAMES as of that JOIN, then what follows.
        let inbox = &pending.inbox;
        inbox.push_reply(ServerFrame::Welcome(pending.name.to_string()).to_bytes());
        inbox.push_reply(self.replica.names());
        let newcomer = Member {
            name: pending.name.clone(),
            inbox: pending.inbox.clone(),
        };
        self.deliver_here(&frame, Some(newcomer)).await;
        let evicted = self.vouched.child_token();
        let welcome = Welcome {
            name: pending.name.clone(),
            evicted: Some(evicted.clone()),
        };
        if pending.reply.send(Ok(welcome)).is_ok() {
            self.local.insert(name_key(&pending.name), evicted);
        } else {
            lock(&self.lobby).remove(&name_key(&pending.name));
            let leave = Command::Leave {
                name: pending.name,
                text: None,
            };
            if self.commands.try_send(leave).is_err() {
                warn!("could not free the name of a login nobody waited for");
            }
        }
    }

    /// Pushes a frame from the stream to this node's users, then adds a
    /// newcomer after it; waits (reading the stream more slowly) while
    /// users that read are a whole backlog behind.
    async fn deliver_here(&self, frame: &Bytes, newcomer: Option<Member>) {
        let mut full = Vec::new();
        {
            let mut lobby = lock(&self.lobby);
            lobby.publish(frame, &mut full);
            if let Some(member) = newcomer {
                lobby.add(name_key(&member.name), member);
            }
        }
        drained(full).await;
    }

    fn free_orphan(&mut self, join: &[u8]) {
        if let Some(name) = replica::joined(join) {
            let leave = Command::Leave {
                name: Arc::from(name),
                text: None,
            };
            if self.commands.try_send(leave).is_err() {
                warn!("could not free the name of a refused login");
            }
        }
    }

    fn release_waiters(&mut self, upto: u64) {
        while let Some(entry) = self.waiters.first_entry() {
            if *entry.key() > upto {
                break;
            }
            for waiter in entry.remove() {
                waiter.release();
            }
        }
    }

    fn link_changed(&mut self) {
        let state = self.link.borrow_and_update().clone();
        if state.leases_lost != self.leases_lost {
            self.leases_lost = state.leases_lost;
            warn!(
                users = self.local.len(),
                "lease lost; disconnecting this node's users"
            );
            self.vouched.cancel();
            self.vouched = CancellationToken::new();
            self.local.clear();
        }
        if state.conflicts_seen != self.conflicts_seen {
            self.conflicts_seen = state.conflicts_seen;
            for name in state.conflicts.iter() {
                if let Some(user) = self.local.remove(&name_key(name)) {
                    user.cancel();
                }
            }
        }
    }

    /// A login or a room join whose `JOIN` never came back within a lease
    /// is refused; a reconciliation that is due runs.
    async fn sweep(&mut self) {
        self.enroll_again();
        if self.reconcile_at.is_some_and(|at| at <= Instant::now()) {
            self.reconcile().await;
        }
        // A LEAVE the bus has not taken in time (an outage): the user is
        // let go anyway, as before a LEAVE that never comes back.
        let late: Vec<String> = self
            .departing
            .iter()
            .filter(|(_, gone)| gone.since.elapsed() > super::SYNC_LIMIT)
            .map(|(key, _)| key.clone())
            .collect();
        for key in late {
            self.departed(&key);
        }
        let lease = self.lease;
        self.joining.retain(|_, pending| {
            let stale = pending.since.elapsed() > lease;
            if stale {
                let (reply, _) = oneshot::channel();
                let _ =
                    std::mem::replace(&mut pending.reply, reply).send(Err(ErrorCode::Unavailable));
            }
            !stale
        });
        let stale: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.since.elapsed() > self.lease)
            .map(|(token, _)| token.clone())
            .collect();
        for token in stale {
            if let Some(pending) = self.pending.remove(&token) {
                let _ = pending.reply.send(Err(ErrorCode::Unavailable));
                let _ = self
                    .commands
                    .send(Command::Leave {
                        name: pending.name,
                        text: None,
                    })
                    .await;
            }
        }
    }
}
