//! The broadcaster: the one task that owns the room, and the handle sessions
//! use to reach it.
//!
//! As in the gopl chat server, a single task alone holds the set of
//! logged-in users, so deciding whether a name is free needs no lock.
//! Sessions talk to it over bounded channels named for the events they carry:
//! `entering`, `leaving`, and `census` for `WHO`.
//!
//! Broadcast frames reach sessions through `messages`, a
//! `tokio::sync::broadcast` ring: a frame is encoded once and every session
//! holds a cheap reference to it until written. The ring is each session's
//! backlog: a session that falls more than its capacity behind loses the
//! oldest frames and learns how many, which becomes `DROPPED <n>`. Sending
//! never waits for a receiver, so a slow reader cannot hold anyone back.
//!
//! Two rooms sit behind the same handle. The local [`room`] is the default:
//! `MSG` frames go straight into the ring, which already orders all senders.
//! In cluster mode ([`crate::cluster`]) every broadcast goes through the bus
//! first and the ring is fed only with what comes back from it, so that all
//! users of all nodes see one order.

pub(crate) mod room;

use std::sync::Arc;

use bytes::Bytes;
use chat_protocol::ErrorCode;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::cluster::Bus;

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
    pub messages: broadcast::Receiver<Bytes>,
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
    messages: broadcast::Sender<Bytes>,
    /// Cluster mode: where broadcasts go instead of straight to the ring.
    bus: Option<Bus>,
}

impl Hub {
    /// Starts the single-process room. `backlog` is the number of broadcast
    /// frames a session may fall behind. Once `shutdown` fires, users who go
    /// are no longer announced: everyone is being told `shutting-down`.
    pub fn start_local(
        backlog: usize,
        shutdown: CancellationToken,
    ) -> (Hub, tokio::task::JoinHandle<()>) {
        let (hub, inbox) = Hub::channels(backlog, None);
        let task = tokio::spawn(room::Room::new(hub.messages.clone(), shutdown).run(inbox));
        (hub, task)
    }

    /// The handle and the inbox of a new room; the caller starts its task.
    pub(crate) fn channels(backlog: usize, bus: Option<Bus>) -> (Hub, Inbox) {
        let (entering, entering_rx) = mpsc::channel(REQUEST_QUEUE);
        let (leaving, leaving_rx) = mpsc::channel(REQUEST_QUEUE);
        let (census, census_rx) = mpsc::channel(REQUEST_QUEUE);
        let (messages, _) = broadcast::channel(backlog);
        let hub = Hub {
            entering,
            leaving,
            census,
            messages,
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
    pub(crate) fn messages(&self) -> &broadcast::Sender<Bytes> {
        &self.messages
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
        answer.await.map_err(|_| ErrorCode::ShuttingDown)?
    }

    /// Broadcasts an encoded frame to every logged-in user, the sender too.
    /// Locally this cannot fail; in cluster mode the bus may be unreachable,
    /// and then nobody gets the frame.
    pub async fn publish(&self, frame: Bytes) -> Result<Receipt, ErrorCode> {
        match &self.bus {
            None => {
                // An error only means nobody is subscribed: nobody to tell.
                let _ = self.messages.send(frame);
                Ok(Receipt::default())
            }
            Some(bus) => bus.publish(frame).await,
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
    pub async fn sync(&self, receipt: Receipt) {
        if let Some(bus) = &self.bus {
            bus.sync(receipt).await;
        }
    }
}
