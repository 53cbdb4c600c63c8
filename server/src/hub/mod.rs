//! The broadcaster: the task that owns the set of logged-in users, the
//! rooms, and the handle sessions use to reach them.
//!
//! As in the gopl chat server, a single task alone decides who is logged
//! in, so deciding whether a name is free needs no lock. Sessions talk to it
//! over bounded channels named for the events they carry: `entering`,
//! `leaving`, and `census` for `WHO`.
//!
//! Frames reach sessions through their [`Inbox`]: a frame is encoded once
//! and pushed, as a cheap shared reference, to the inbox of each receiver,
//! under the lock of the [`Room`] it belongs to; the lobby is a room that
//! everyone is in. Each inbox is its connection's backlog (`--client-buffer`
//! frames). Publishers wait while a session that is still draining is that
//! far behind, so overload slows the senders; only a session whose client
//! has stopped reading is skipped, and later told `DROPPED <n>`.
//!
//! Two hub tasks sit behind the same handle. The [`local`] one is the
//! default: messages are pushed straight to the receivers by their sender's
//! session. In cluster mode ([`cluster`]) every broadcast, the lobby's and
//! the rooms', goes through the bus first and reaches this node's users
//! only when it comes back, so that all users of all nodes see one order.
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

use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chat_protocol::{name_key, ErrorCode, ServerFrame};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use cluster::Bus;
pub use inbox::{drained, Inbox, STALL_LIMIT};
pub use room::{lock, Member, Room, SharedRoom};
pub use rooms::{Full, Joined, Limits, Rooms, User};

/// Requests a hub queues before senders wait: enough for a login storm,
/// small enough to bound memory.
pub(crate) const REQUEST_QUEUE: usize = 1024;

/// What a session gets for a successful login. From then on its inbox
/// receives everything broadcast after this user's `JOIN`.
pub struct Welcome {
    /// The name as the user chose it (its case kept).
    pub name: Arc<str>,
    /// The encoded `NAMES` frame, the newcomer included.
    pub names: Bytes,
    /// Cluster mode: cancelled when the node can no longer vouch for this
    /// user (it lost its lease); the session then closes. A single process
    /// never evicts anyone, and a session polls nothing for it.
    pub evicted: Option<CancellationToken>,
}

/// Where a published frame stands in the room's order, so that a later
/// `PING` can wait until the frame has come back to this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Receipt(pub(crate) u64);

pub(crate) struct Entering {
    pub name: String,
    /// Where the user's frames go once logged in.
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
    /// For a user who sent `LEAVE`: the rooms it is in, left silently
    /// together with the lobby, so that it gets every room frame before
    /// its `LEAVE` too.
    pub joined: Joined,
}

/// A `WHO`: the asker's inbox, for the `NAMES` to go into in its place
/// among the lobby's frames, and the answer once it is there.
pub(crate) type Census = (Arc<Inbox>, oneshot::Sender<Result<(), ErrorCode>>);

/// The receiving ends a hub task serves.
pub(crate) struct Requests {
    pub entering: mpsc::Receiver<Entering>,
    pub leaving: mpsc::Receiver<Leaving>,
    pub census: mpsc::Receiver<Census>,
}

/// A cloneable handle to the hub task, one per session.
#[derive(Clone)]
pub struct Hub {
    entering: mpsc::Sender<Entering>,
    leaving: mpsc::Sender<Leaving>,
    census: mpsc::Sender<Census>,
    /// Everyone logged in here, for lobby broadcasts and `TELL`.
    lobby: SharedRoom,
    rooms: Arc<Rooms>,
    /// Frames each connection's inbox holds (`--client-buffer`).
    backlog: usize,
    /// Cluster mode: where broadcasts go instead of straight to the ring.
    bus: Option<Bus>,
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
        let local = local::Local::new(hub.lobby.clone(), hub.rooms.clone(), shutdown);
        let task = tokio::spawn(local.run(requests));
        (hub, task)
    }

    /// The handle and the requests of a new hub; the caller starts its task.
    pub(crate) fn channels(backlog: usize, limits: Limits, bus: Option<Bus>) -> (Hub, Requests) {
        let (entering, entering_rx) = mpsc::channel(REQUEST_QUEUE);
        let (leaving, leaving_rx) = mpsc::channel(REQUEST_QUEUE);
        let (census, census_rx) = mpsc::channel(REQUEST_QUEUE);
        let hub = Hub {
            entering,
            leaving,
            census,
            lobby: Arc::new(Mutex::new(Room::lobby(limits.history))),
            rooms: Arc::new(Rooms::new(limits)),
            backlog,
            bus,
        };
        let requests = Requests {
            entering: entering_rx,
            leaving: leaving_rx,
            census: census_rx,
        };
        (hub, requests)
    }

    /// The lobby: this node's users.
    pub(crate) fn lobby(&self) -> &SharedRoom {
        &self.lobby
    }

    /// The rooms, for the requests of version 2.
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// The rooms, for the cluster's hub task to deliver to.
    pub(crate) fn rooms_shared(&self) -> Arc<Rooms> {
        self.rooms.clone()
    }

    /// Cluster mode: the bus that rooms, `TELL` and history go through.
    pub(crate) fn bus(&self) -> Option<&Bus> {
        self.bus.as_ref()
    }

    /// A new connection's inbox.
    pub fn inbox(&self) -> Arc<Inbox> {
        Inbox::new(self.backlog)
    }

    /// Claims `name`; once the answer comes, `inbox` gets everything
    /// broadcast after the user's `JOIN`.
    pub fn enter(
        &self,
        name: String,
        inbox: Arc<Inbox>,
    ) -> impl Future<Output = Result<Welcome, ErrorCode>> + Send + 'static {
        let entering = self.entering.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            entering
                .send(Entering { name, inbox, reply })
                .await
                .map_err(|_| ErrorCode::ShuttingDown)?;
            answer.await.map_err(|_| ErrorCode::ShuttingDown)?
        }
    }

    /// Frees the name and tells everyone else the user is gone; `cause`
    /// says why, for the log.
    pub async fn leave(
        &self,
        name: Arc<str>,
        inbox: Arc<Inbox>,
        text: Option<String>,
        cause: &'static str,
    ) {
        let gone = Leaving {
            name,
            inbox,
            text,
            cause,
            placed: None,
            joined: Joined::new(),
        };
        // Fails only when the hub has stopped, and then nobody is left to tell.
        let _ = self.leaving.send(gone).await;
    }

    /// Leaves on the user's own `LEAVE`, the lobby and the rooms in
    /// `joined`; resolves once the user's inbox holds everything broadcast
    /// before that `LEAVE`, and nothing after.
    pub fn leave_in_order(
        &self,
        name: Arc<str>,
        inbox: Arc<Inbox>,
        text: Option<String>,
        joined: Joined,
    ) -> impl Future<Output = ()> + Send + 'static {
        let leaving = self.leaving.clone();
        async move {
            let (placed, answer) = oneshot::channel();
            let gone = Leaving {
                name,
                inbox,
                text,
                cause: "left",
                placed: Some(placed),
                joined,
            };
            if leaving.send(gone).await.is_ok() {
                let _ = answer.await;
            }
        }
    }

    /// Whether the hub can serve a login now: it answers a `WHO`.
    pub async fn serves(&self) -> bool {
        self.who(self.inbox()).await.is_ok()
    }

    /// Puts the lobby's `NAMES` into `inbox`, after the `JOIN`s and
    /// `LEAVE`s it reflects and before any other.
    pub fn who(
        &self,
        inbox: Arc<Inbox>,
    ) -> impl Future<Output = Result<(), ErrorCode>> + Send + 'static {
        let census = self.census.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            census
                .send((inbox, reply))
                .await
                .map_err(|_| ErrorCode::ShuttingDown)?;
            answer.await.map_err(|_| ErrorCode::ShuttingDown)?
        }
    }

    /// `MSG` of the single process: pushes the frame to every logged-in
    /// user, the sender too, and keeps it for history; the inboxes left
    /// over capacity come back, to wait on. (In cluster mode the frame goes
    /// through the bus instead.)
    pub fn say(&self, from: &Arc<str>, text: String) -> Full {
        let msg = ServerFrame::Msg {
            from: from.to_string(),
            text,
        };
        let frame = msg.to_bytes();
        let mut full = Vec::new();
        let mut lobby = lock(&self.lobby);
        lobby.publish(&frame, &mut full);
        if let ServerFrame::Msg { text, .. } = &msg {
            lobby.record(from, text);
        }
        full
    }

    /// `TELL`: the receiver and the sender both get the frame.
    pub fn tell(&self, from: &Member, to: &str, text: String) -> Result<Full, ErrorCode> {
        let lobby = lock(&self.lobby);
        let Some(receiver) = lobby.member(&name_key(to)) else {
            return Err(ErrorCode::NoSuchUser);
        };
        let frame = ServerFrame::Tell {
            from: from.name.to_string(),
            to: receiver.name.to_string(),
            text,
        }
        .to_bytes();
        let mut full = Vec::new();
        let both = [&receiver.inbox, &from.inbox];
        let receivers = if Arc::ptr_eq(both[0], both[1]) {
            &both[..1]
        } else {
            &both[..]
        };
        inbox::fan_out(receivers.iter().copied(), &frame, &mut full);
        Ok(full)
    }

    /// `HISTORY [<n>]` of the lobby, queued in the asker's inbox in its
    /// place among the lobby's messages.
    pub fn lobby_history(&self, asker: &Inbox, count: u64) {
        let lobby = lock(&self.lobby);
        let mut out = bytes::BytesMut::new();
        lobby.write_history(count, &mut out);
        asker.push_reply(out.freeze());
    }

    /// `WHO` of the single-process lobby: its `NAMES`, queued in the
    /// asker's inbox after the `JOIN`s and `LEAVE`s it reflects.
    pub fn lobby_names(&self, asker: &Inbox) {
        let mut lobby = lock(&self.lobby);
        asker.push_reply(lobby.names());
    }

    /// Lets the hub go: in cluster mode, frees the names this node still
    /// holds so the other nodes announce them at once, not after the lease.
    pub async fn close(&self) {
        if let Some(bus) = &self.bus {
            bus.depart().await;
        }
    }

    /// Waits until a published frame has come back to this node, so that
    /// what the session takes from its inbox next includes it.
    pub fn sync(&self, receipt: Receipt) -> impl Future<Output = ()> + Send + 'static {
        let bus = self.bus.clone();
        async move {
            if let Some(bus) = bus {
                bus.sync(receipt).await;
            }
        }
    }

    /// Whether [`Hub::sync`] has anything to wait for.
    pub fn needs_sync(&self, receipt: Receipt) -> bool {
        self.bus.is_some() && receipt != Receipt::default()
    }
}
