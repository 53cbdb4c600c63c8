//! The cluster room: the hub task of a node in cluster mode.
//!
//! It owns the same things as the local room, and one more: a replica of
//! the cluster's user list, kept by applying the stream's `JOIN` and
//! `LEAVE` frames in stream order. Because the replica moves with the
//! stream, the `NAMES` a newcomer gets describes the room at exactly the
//! point from which it receives broadcasts: a login is completed when its
//! own `JOIN` comes back from the stream, not when Redis answers the login.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_protocol::{name_key, ErrorCode, ServerFrame};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::driver::{Command, LinkState};
use super::reader::{Delivery, Entry};
use super::replica::{self, Replica};
use crate::hub::{
    drained, lock, Entering, Inbox, Leaving, Member, Receipt, Requests, SharedRoom, Welcome,
};

/// How often stale logins are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// A `PING` waiting for a published frame to come back.
pub(crate) type SyncRequest = (Receipt, oneshot::Sender<()>);

type LoginOutcome = Pin<Box<dyn Future<Output = (String, Result<(), ErrorCode>)> + Send>>;

struct Pending {
    name: Arc<str>,
    inbox: Arc<Inbox>,
    reply: oneshot::Sender<Result<Welcome, ErrorCode>>,
    since: Instant,
}

pub(crate) struct ClusterRoom {
    node: Arc<str>,
    lease: Duration,
    /// Everyone in the cluster, as of `delivered`.
    replica: Replica,
    /// This node's users and what ends each session.
    local: HashMap<String, CancellationToken>,
    /// Logins waiting for their `JOIN` to come back, by token.
    pending: HashMap<String, Pending>,
    next_token: u64,
    /// Whether the reader has told where the stream starts.
    started: bool,
    /// The number of the last entry put into the ring.
    delivered: u64,
    waiters: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
    /// This node's users, for delivering what the stream brings.
    lobby: SharedRoom,
    /// Parent of every user's token; replaced when the lease is lost.
    vouched: CancellationToken,
    commands: mpsc::Sender<Command>,
    link: watch::Receiver<LinkState>,
    leases_lost: u64,
    conflicts_seen: u64,
}

impl ClusterRoom {
    pub(crate) fn new(
        node: Arc<str>,
        lease: Duration,
        lobby: SharedRoom,
        commands: mpsc::Sender<Command>,
        link: watch::Receiver<LinkState>,
    ) -> ClusterRoom {
        ClusterRoom {
            node,
            lease,
            replica: Replica::default(),
            local: HashMap::new(),
            pending: HashMap::new(),
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
    ) {
        let Requests {
            mut entering,
            mut leaving,
            mut census,
        } = requests;
        let mut logins: FuturesUnordered<LoginOutcome> = FuturesUnordered::new();
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                biased;
                Some(delivery) = deliveries.recv() => self.deliver(delivery).await,
                Ok(()) = self.link.changed() => self.link_changed(),
                Some((token, outcome)) = logins.next() => self.login_answered(token, outcome),
                Some(gone) = leaving.recv() => self.leave(gone).await,
                Some(newcomer) = entering.recv() => {
                    if let Some(outcome) = self.enter(newcomer).await {
                        logins.push(outcome);
                    }
                }
                Some(reply) = census.recv() => {
                    let names = if self.available() { Ok(self.replica.names()) } else { Err(ErrorCode::Unavailable) };
                    let _ = reply.send(names);
                }
                Some((receipt, reply)) = syncs.recv() => {
                    if receipt.0 <= self.delivered {
                        let _ = reply.send(());
                    } else {
                        self.waiters.entry(receipt.0).or_default().push(reply);
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

    async fn enter(&mut self, Entering { name, inbox, reply }: Entering) -> Option<LoginOutcome> {
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
            (token, outcome.await.unwrap_or(Err(ErrorCode::Unavailable)))
        }))
    }

    /// Redis answered a login. Success needs nothing more: the login
    /// completes when its `JOIN` is delivered, which may already have been.
    fn login_answered(&mut self, token: String, outcome: Result<(), ErrorCode>) {
        if let Err(code) = outcome {
            if let Some(pending) = self.pending.remove(&token) {
                let _ = pending.reply.send(Err(code));
            }
        }
    }

    async fn leave(&mut self, gone: Leaving) {
        let Leaving {
            name,
            inbox,
            text,
            cause,
            placed,
        } = gone;
        // Out of the delivery list now; the LEAVE comes back from the
        // stream later (or, in an outage, much later) for the others.
        let key = name_key(&name);
        lock(&self.lobby).remove_exact(&key, &inbox);
        if let Some(placed) = placed {
            let _ = placed.send(());
        }
        self.local.remove(&key);
        info!(user = %name, cause, "leave");
        // The driver keeps leaves until the bus takes them.
        let _ = self.commands.send(Command::Leave { name, text }).await;
    }

    /// Puts what the stream delivered into the ring, waiting (and so
    /// reading the stream more slowly) while this node's users that read
    /// are a whole backlog behind.
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
            }
            Delivery::Entries(entries) => {
                for entry in entries {
                    self.apply(entry).await;
                }
                self.release_waiters(self.delivered);
            }
        }
    }

    async fn apply(&mut self, Entry { seq, frame, token }: Entry) {
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
        self.replica.track(&frame);
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
        // Added right after its own JOIN: the newcomer gets what follows.
        let newcomer = Member {
            name: pending.name.clone(),
            inbox: pending.inbox.clone(),
        };
        self.deliver_here(&frame, Some(newcomer)).await;
        let evicted = self.vouched.child_token();
        let welcome = Welcome {
            name: pending.name.clone(),
            names: self.replica.names(),
            evicted: evicted.clone(),
        };
        info!(user = %pending.name, users = self.replica.len(), "login");
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
                let _ = waiter.send(());
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

    /// A login whose `JOIN` never came back within a lease is refused.
    async fn sweep(&mut self) {
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
