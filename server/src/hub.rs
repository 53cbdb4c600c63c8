//! The broadcaster: the one task that owns the room.
//!
//! As in the gopl chat server, a single task alone holds the set of logged-in
//! users, so deciding whether a name is free needs no lock. Sessions talk to
//! it over two bounded channels named for the events they carry, `entering`
//! and `leaving`, plus `census` for `WHO`.
//!
//! Broadcast frames travel on `messages`, a `tokio::sync::broadcast` ring: a
//! frame is encoded once and every session holds a cheap reference to it
//! until written. The ring is each session's backlog: a session that falls
//! more than its capacity behind loses the oldest frames and learns how many,
//! which becomes `DROPPED <n>`. Sending never waits for a receiver, so a slow
//! reader cannot hold anyone back.
//!
//! `MSG` frames are sent to the ring by the sessions themselves: the ring
//! already puts all senders in one order, and keeping chat traffic off this
//! task lets it scale with the cores. `JOIN` and `LEAVE` are sent here, at
//! the moment the user set changes, so that a newcomer's `NAMES` and the
//! point from which it receives broadcasts are the same instant.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chat_protocol::{name_key, ErrorCode, ServerFrame};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Requests a hub queues before senders wait: enough for a login storm,
/// small enough to bound memory.
const REQUEST_QUEUE: usize = 1024;

/// What a session gets for a successful login.
pub struct Welcome {
    /// The name as the user chose it (its case kept).
    pub name: Arc<str>,
    /// The encoded `NAMES` frame, the newcomer included.
    pub names: Bytes,
    /// Every broadcast after this user's `JOIN`, and nothing before.
    pub messages: broadcast::Receiver<Bytes>,
}

struct Entering {
    name: String,
    reply: oneshot::Sender<Result<Welcome, ErrorCode>>,
}

struct Leaving {
    name: Arc<str>,
    text: Option<String>,
}

/// A cloneable handle to the hub task, one per session.
#[derive(Clone)]
pub struct Hub {
    entering: mpsc::Sender<Entering>,
    leaving: mpsc::Sender<Leaving>,
    census: mpsc::Sender<oneshot::Sender<Bytes>>,
    messages: broadcast::Sender<Bytes>,
}

impl Hub {
    /// Starts the hub task. `backlog` is the number of broadcast frames a
    /// session may fall behind. Once `shutdown` fires, users who go are no
    /// longer announced: everyone is being told `shutting-down` instead.
    pub fn start(backlog: usize, shutdown: CancellationToken) -> Hub {
        let (entering, entering_rx) = mpsc::channel(REQUEST_QUEUE);
        let (leaving, leaving_rx) = mpsc::channel(REQUEST_QUEUE);
        let (census, census_rx) = mpsc::channel(REQUEST_QUEUE);
        let (messages, _) = broadcast::channel(backlog);
        let room = Room {
            users: BTreeMap::new(),
            names: None,
            messages: messages.clone(),
            shutdown,
        };
        tokio::spawn(room.run(entering_rx, leaving_rx, census_rx));
        Hub {
            entering,
            leaving,
            census,
            messages,
        }
    }

    /// Claims `name` and subscribes to the room's broadcasts.
    pub async fn enter(&self, name: String) -> Result<Welcome, ErrorCode> {
        let (reply, answer) = oneshot::channel();
        self.entering
            .send(Entering { name, reply })
            .await
            .map_err(|_| ErrorCode::ShuttingDown)?;
        answer.await.map_err(|_| ErrorCode::ShuttingDown)?
    }

    /// Frees the name and tells everyone else the user is gone.
    pub async fn leave(&self, name: Arc<str>, text: Option<String>) {
        // Fails only when the hub has stopped, and then nobody is left to tell.
        let _ = self.leaving.send(Leaving { name, text }).await;
    }

    /// The encoded `NAMES` frame for the room as it is now.
    pub async fn who(&self) -> Result<Bytes, ErrorCode> {
        let (reply, answer) = oneshot::channel();
        self.census
            .send(reply)
            .await
            .map_err(|_| ErrorCode::ShuttingDown)?;
        answer.await.map_err(|_| ErrorCode::ShuttingDown)
    }

    /// Broadcasts an encoded frame to every logged-in user, the sender too.
    pub fn publish(&self, frame: Bytes) {
        // An error only means nobody is subscribed, so nobody is to be told.
        let _ = self.messages.send(frame);
    }
}

/// The state the hub task owns.
struct Room {
    /// Logged-in users by lower-cased name, which is also `NAMES` order.
    users: BTreeMap<String, Arc<str>>,
    /// The encoded `NAMES` frame, kept until the user set changes.
    names: Option<Bytes>,
    messages: broadcast::Sender<Bytes>,
    shutdown: CancellationToken,
}

impl Room {
    async fn run(
        mut self,
        mut entering: mpsc::Receiver<Entering>,
        mut leaving: mpsc::Receiver<Leaving>,
        mut census: mpsc::Receiver<oneshot::Sender<Bytes>>,
    ) {
        loop {
            tokio::select! {
                // Leaves first: a name freed by a disconnect is free for the
                // next login.
                biased;
                Some(gone) = leaving.recv() => self.leave(gone),
                Some(newcomer) = entering.recv() => self.enter(newcomer),
                Some(reply) = census.recv() => {
                    let _ = reply.send(self.names());
                }
                else => break,
            }
        }
    }

    fn enter(&mut self, Entering { name, reply }: Entering) {
        let key = name_key(&name);
        if self.users.contains_key(&key) {
            let _ = reply.send(Err(ErrorCode::NameTaken));
            return;
        }
        let name: Arc<str> = name.into();
        self.broadcast(ServerFrame::Join(name.to_string()));
        // Subscribed after its own JOIN: a newcomer sees only what follows.
        let messages = self.messages.subscribe();
        self.users.insert(key, name.clone());
        self.names = None;
        let welcome = Welcome {
            name: name.clone(),
            names: self.names(),
            messages,
        };
        info!(user = %name, users = self.users.len(), "login");
        if reply.send(Ok(welcome)).is_err() {
            // The session vanished while waiting; undo the login so the name
            // is not held by nobody.
            self.leave(Leaving { name, text: None });
        }
    }

    fn leave(&mut self, Leaving { name, text }: Leaving) {
        if self.users.remove(&name_key(&name)).is_none() {
            return;
        }
        self.names = None;
        info!(user = %name, users = self.users.len(), "leave");
        if !self.shutdown.is_cancelled() {
            self.broadcast(ServerFrame::Leave {
                name: name.to_string(),
                text,
            });
        }
    }

    fn names(&mut self) -> Bytes {
        self.names
            .get_or_insert_with(|| {
                ServerFrame::Names(self.users.values().map(|n| n.to_string()).collect()).to_bytes()
            })
            .clone()
    }

    fn broadcast(&self, frame: ServerFrame) {
        let _ = self.messages.send(frame.to_bytes());
    }
}
