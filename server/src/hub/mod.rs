//! The broadcaster: the one task that owns the room, and the handle sessions
//! use to reach it.
//!
//! As in the gopl chat server, a single task alone holds the set of
//! logged-in users, so deciding whether a name is free needs no lock.
//! Sessions talk to it over bounded channels named for the events they carry:
//! `entering`, `leaving`, and `census` for `WHO`.
//!
//! Broadcast frames reach sessions through `messages`, a [`Ring`]: a frame
//! is encoded once and every session holds a cheap reference to it until
//! written. The ring is each session's backlog (`--client-buffer` frames).
//! Publishers wait while a session that is still draining is that far
//! behind, so overload slows the senders; only a session whose client has
//! stopped reading is skipped, and later told `DROPPED <n>`.
//!
//! Two rooms sit behind the same handle. The local [`room`] is the default:
//! `MSG` frames go straight into the ring, which already orders all senders.
//! In cluster mode ([`crate::cluster`]) every broadcast goes through the bus
//! first and the ring is fed only with what comes back from it, so that all
//! users of all nodes see one order.
//!
//! Every request returns a future that owns what it needs, so a session
//! can keep writing to its client while it waits: a session that stopped
//! draining while waiting for a publisher that waits for it would stall the
//! room.

pub(crate) mod ring;
pub(crate) mod room;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use chat_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::Bus;
pub use ring::{Next, Reader, Ring, Socket};

/// Requests a hub queues before senders wait: enough for a login storm,
/// small enough to bound memory.
pub(crate) const REQUEST_QUEUE: usize = 1024;

/// What a session gets for a successful login.
pub struct Welcome {
    /// The name as the user chose it (its case kept).
    pub name: Arc<str>,
    /// The encoded `NAMES` frame, the newcomer included.
    pub names: Bytes,
    /// Every broadcast after this user's `JOIN`, and nothing before.
    pub messages: Reader,
    /// Cancelled when the room can no longer vouch for this user (cluster
    /// mode: the node lost its lease); the session then closes.
    pub evicted: CancellationToken,
}

/// Where a published frame stands in the room's order, so that a later
/// `PING` can wait until the frame has come back to this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Receipt(pub(crate) u64);

pub(crate) struct Entering {
    pub name: String,
    pub reply: oneshot::Sender<Result<Welcome, ErrorCode>>,
}

pub(crate) struct Leaving {
    pub name: Arc<str>,
    pub text: Option<String>,
    /// Why the user went, for the log.
    pub cause: &'static str,
    /// For a user who sent `LEAVE`: told whether the user's own `LEAVE`
    /// is coming through the ring, so that its session delivers everything
    /// broadcast before it, and stops there.
    pub placed: Option<oneshot::Sender<bool>>,
}

pub(crate) type Census = oneshot::Sender<Result<Bytes, ErrorCode>>;

/// The receiving ends a room task serves.
pub(crate) struct Inbox {
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
    messages: Arc<Ring>,
    /// Cluster mode: where broadcasts go instead of straight to the ring.
    bus: Option<Bus>,
}

impl Hub {
    /// Starts the single-process room. `backlog` is the number of broadcast
    /// frames a session may fall behind. Once `shutdown` fires, users who go
    /// are no longer announced: everyone is being told `shutting-down`.
    /// The room's task is returned so the server can watch it.
    pub fn start_local(backlog: usize, shutdown: CancellationToken) -> (Hub, JoinHandle<()>) {
        let (hub, inbox) = Hub::channels(backlog, None);
        let task = tokio::spawn(room::Room::new(hub.messages.clone(), shutdown).run(inbox));
        (hub, task)
    }

    /// The handle and the inbox of a new room; the caller starts its task.
    pub(crate) fn channels(backlog: usize, bus: Option<Bus>) -> (Hub, Inbox) {
        let (entering, entering_rx) = mpsc::channel(REQUEST_QUEUE);
        let (leaving, leaving_rx) = mpsc::channel(REQUEST_QUEUE);
        let (census, census_rx) = mpsc::channel(REQUEST_QUEUE);
        let hub = Hub {
            entering,
            leaving,
            census,
            messages: Ring::new(backlog),
            bus,
        };
        let inbox = Inbox {
            entering: entering_rx,
            leaving: leaving_rx,
            census: census_rx,
        };
        (hub, inbox)
    }

    /// The ring sessions receive broadcasts from.
    pub(crate) fn messages(&self) -> &Arc<Ring> {
        &self.messages
    }

    /// Claims `name` and subscribes to the room's broadcasts.
    pub fn enter(
        &self,
        name: String,
    ) -> impl Future<Output = Result<Welcome, ErrorCode>> + Send + 'static {
        let entering = self.entering.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            entering
                .send(Entering { name, reply })
                .await
                .map_err(|_| ErrorCode::ShuttingDown)?;
            answer.await.map_err(|_| ErrorCode::ShuttingDown)?
        }
    }

    /// Frees the name and tells everyone else the user is gone; `cause`
    /// says why, for the log.
    pub async fn leave(&self, name: Arc<str>, text: Option<String>, cause: &'static str) {
        let gone = Leaving {
            name,
            text,
            cause,
            placed: None,
        };
        // Fails only when the hub has stopped, and then nobody is left to tell.
        let _ = self.leaving.send(gone).await;
    }

    /// Leaves on the user's own `LEAVE`; resolves to whether that `LEAVE`
    /// is coming through the ring, where the leaver's session stops.
    pub fn leave_in_order(
        &self,
        name: Arc<str>,
        text: Option<String>,
    ) -> impl Future<Output = bool> + Send + 'static {
        let leaving = self.leaving.clone();
        async move {
            let (placed, answer) = oneshot::channel();
            let gone = Leaving {
                name,
                text,
                cause: "left",
                placed: Some(placed),
            };
            leaving.send(gone).await.is_ok() && answer.await.unwrap_or(false)
        }
    }

    /// The encoded `NAMES` frame for the room as it is now.
    pub fn who(&self) -> impl Future<Output = Result<Bytes, ErrorCode>> + Send + 'static {
        let census = self.census.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            census
                .send(reply)
                .await
                .map_err(|_| ErrorCode::ShuttingDown)?;
            answer.await.map_err(|_| ErrorCode::ShuttingDown)?
        }
    }

    /// Broadcasts an encoded frame at once if nothing stands in the way:
    /// locally, when no session that reads is a whole backlog behind. Hands
    /// the frame back otherwise, for [`Hub::publish`].
    pub fn try_publish(&self, frame: Bytes) -> Result<Receipt, Bytes> {
        match &self.bus {
            None => self
                .messages
                .try_publish(frame)
                .map(|()| Receipt::default()),
            Some(_) => Err(frame),
        }
    }

    /// Broadcasts an encoded frame to every logged-in user, the sender too,
    /// waiting while sessions that read are a whole backlog behind. In
    /// cluster mode the bus may be unreachable, and then nobody gets it.
    pub fn publish(
        &self,
        frame: Bytes,
    ) -> impl Future<Output = Result<Receipt, ErrorCode>> + Send + 'static {
        let (messages, bus) = (self.messages.clone(), self.bus.clone());
        async move {
            match bus {
                None => {
                    messages.publish(frame).await;
                    Ok(Receipt::default())
                }
                Some(bus) => bus.publish(frame).await,
            }
        }
    }

    /// Lets the room go: in cluster mode, frees the names this node still
    /// holds so the other nodes announce them at once, not after the lease.
    pub async fn close(&self) {
        if let Some(bus) = &self.bus {
            bus.depart().await;
        }
    }

    /// Waits until a published frame has reached this node's ring, so that
    /// what the session takes from the ring next includes it.
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
