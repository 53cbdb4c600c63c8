//! Cluster mode: several nodes, one server, over Redis.
//!
//! Every broadcast frame, the lobby's and the rooms', goes through one Redis
//! stream, and each node delivers to its own users only what comes back
//! from it, so all users of all nodes see one order. Names, presence and
//! rooms live in Redis too, changed only by atomic scripts that also append
//! the frame ([`requests`] turns users' requests into them, [`calls`]
//! builds them); each node holds its users' names on a lease it renews, and when a node stops renewing, whichever survivor notices first
//! frees its names and announces each `LEAVE` once.
//!
//! Three tasks per node share the work:
//! - the [`node`](node::Node): the node's hub task, which owns its users,
//!   their rooms and a replica of the cluster's user list;
//! - the [`driver`](driver::Driver): the only writer to Redis, batching
//!   commands into pipelines ([`pipeline`]) and keeping the [`link`], the
//!   [`lease`] and the [`reaper`];
//! - the [`reader`](reader::run): follows the stream on its own connection.
//!
//! `docs/CLUSTER.md` describes the design and what it guarantees.

pub mod accounts;
pub(crate) mod calls;
mod driver;
mod lease;
mod link;
mod node;
mod pipeline;
mod reader;
mod reaper;
mod replica;
pub(crate) mod requests;
pub(crate) mod scripts;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;

use crate::essential::Essential;
use crate::hub::accounts::{Accounts, Backend};
use crate::hub::{Hub, Inbox, Limits, Member, Receipt, SharedRoom, REQUEST_QUEUE};
use calls::Call;
use driver::{Command, Driver, LinkState};
use node::{Node, RoomEntering, SyncRequest, Waiter};
pub(crate) use pipeline::Reply;

/// Longest a `PING` waits for the sender's earlier messages to come back
/// from the bus before it is answered anyway.
const SYNC_LIMIT: Duration = Duration::from_secs(2);
/// Longest a stopping node waits to free its users' names.
const DEPART_LIMIT: Duration = Duration::from_secs(1);
/// Commands queued for the driver before publishers wait.
const COMMAND_QUEUE: usize = 4096;

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// This node's name in Redis.
    pub node_id: String,
    /// How long the node's users keep their names after it stops renewing.
    pub lease: Duration,
}

/// What a node needs for version 3: accounts, bans and mutes live in the
/// cluster's Redis.
pub struct ModerationConfig {
    pub hasher: crate::passwords::Hasher,
    pub operators: Vec<String>,
    pub on_loopback: bool,
}

/// A session's way onto the bus: publishing and waiting for delivery.
#[derive(Clone)]
pub(crate) struct Bus {
    commands: mpsc::Sender<Command>,
    syncs: mpsc::Sender<SyncRequest>,
    joins: mpsc::Sender<RoomEntering>,
}

impl Bus {
    /// Runs a script for a session in the driver's next round trip.
    pub(crate) async fn call(&self, call: Call) -> Result<Reply, ErrorCode> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Call { call, reply })
            .await
            .map_err(|_| ErrorCode::ShuttingDown)?;
        answer.await.map_err(|_| ErrorCode::Unavailable)?
    }

    /// Enters a room; once answered, the member's inbox gets the room's
    /// `NAMES` (and `TOPIC`) and then everything the room says after its
    /// `JOIN`.
    pub(crate) async fn join(&self, room: String, member: Member) -> Result<SharedRoom, ErrorCode> {
        let (reply, answer) = oneshot::channel();
        let entering = RoomEntering {
            room,
            member,
            reply,
        };
        self.joins
            .send(entering)
            .await
            .map_err(|_| ErrorCode::ShuttingDown)?;
        answer.await.map_err(|_| ErrorCode::Unavailable)?
    }

    pub(crate) async fn sync(&self, receipt: Receipt) {
        let (reply, answer) = oneshot::channel();
        if self
            .syncs
            .send((receipt, Waiter::Wake(reply)))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(SYNC_LIMIT, answer).await;
        }
    }

    /// Puts a reply read from Redis into `inbox` right after the stream's
    /// entry `at`, the last one when Redis read it.
    /// Resolves once it is there, so that the session's next reply
    /// follows it.
    pub(crate) async fn place(&self, at: Receipt, inbox: Arc<Inbox>, reply: Bytes) {
        let (placed, answer) = oneshot::channel();
        let waiter = Waiter::Place(inbox, reply, placed);
        if self.syncs.send((at, waiter)).await.is_ok() {
            let _ = tokio::time::timeout(SYNC_LIMIT, answer).await;
        }
    }

    /// Frees every name this node still holds, announcing each `LEAVE`.
    pub(crate) async fn depart(&self) {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Depart { reply }).await.is_ok() {
            let _ = tokio::time::timeout(DEPART_LIMIT, answer).await;
        }
    }
}

/// Starts this node's cluster tasks and returns the hub its sessions use,
/// with the tasks themselves: the node cannot serve without any of them.
/// Fails only on a malformed URL: an unreachable Redis is an outage, served
/// with `ERROR unavailable` until it ends.
pub fn start(
    config: &ClusterConfig,
    backlog: usize,
    limits: Limits,
    moderation: ModerationConfig,
) -> Result<(Hub, Vec<Essential>), String> {
    let client = redis::Client::open(config.url.as_str())
        .map_err(|e| format!("bad --cluster URL {:?}: {e}", config.url))?;
    let node: Arc<str> = config.node_id.as_str().into();
    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (syncs, syncs_rx) = mpsc::channel(REQUEST_QUEUE);
    let (deliveries, deliveries_rx) = mpsc::channel(REQUEST_QUEUE);
    let (joins, joins_rx) = mpsc::channel(REQUEST_QUEUE);
    let (state, link) = watch::channel(LinkState::default());
    let bus = Bus {
        commands: commands.clone(),
        syncs,
        joins,
    };
    let accounts = Accounts::new(
        Backend::Cluster(Box::new(accounts::RedisAccounts::new(client.clone()))),
        moderation.hasher,
        &moderation.operators,
        moderation.on_loopback,
    );
    let (hub, requests) = Hub::with_accounts(backlog, limits, Some(bus), Some(Arc::new(accounts)));
    let driver = Driver::new(client.clone(), node.clone(), config.lease, state);
    let read_timeout = driver.command_timeout();
    let driver = tokio::spawn(driver.run(commands_rx));
    let reader = tokio::spawn(reader::run(client, deliveries, read_timeout));
    let node_task = Node::new(
        node,
        config.lease,
        hub.lobby().clone(),
        hub.rooms_shared(),
        commands,
        link,
    );
    let node_task = tokio::spawn(node_task.run(requests, syncs_rx, deliveries_rx, joins_rx));
    info!(node = %config.node_id, lease = ?config.lease, "cluster mode");
    crate::metrics::cluster_mode();
    let moderated = tokio::spawn(hub.clone().follow_moderation());
    let tasks = vec![
        ("cluster moderation", moderated),
        ("cluster node", node_task),
        ("cluster driver", driver),
        ("cluster reader", reader),
    ];
    Ok((hub, tasks))
}

/// A random node id, for when none is given.
pub fn random_node_id() -> String {
    format!("node-{:08x}", rand_u64() as u32)
}

/// A random number for epoch and node ids, from the standard library's
/// randomly seeded hasher: no dependency needed for a few unguessable bits.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}
