//! The driver: the one task that writes to Redis.
//!
//! Everything a node changes on the bus goes through here, batched: each
//! round trip carries every command queued since the last one, as one
//! pipeline, so a busy node pays one round trip per batch, not per message.
//! The driver also keeps the node's lease (heartbeat), reaps dead nodes,
//! and owns the link's health: it reconnects with a bounded backoff, logs
//! an outage and its end once each, notices when Redis lost its data (a new
//! epoch) and puts this node's users back, and declares the lease lost when
//! an outage outlasts it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_protocol::{name_key, ErrorCode, ServerFrame};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Pipeline, Script, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::scripts::{self, WRONG_EPOCH};
use crate::hub::Receipt;
use crate::metrics;

/// Most commands sent in one round trip.
const MAX_BATCH: usize = 512;
/// How often the driver wakes up to renew, reap or reconnect.
const TICK: Duration = Duration::from_millis(100);
/// First pause after a failed connection attempt; it doubles up to a cap
/// well under the lease.
const BACKOFF_START: Duration = Duration::from_millis(100);

/// A request to change the bus.
pub(crate) enum Command {
    /// Append a frame to the stream.
    Publish {
        frame: Bytes,
        reply: oneshot::Sender<Result<Receipt, ErrorCode>>,
    },
    /// Claim a name and append its `JOIN`, tagged with `token`.
    Login {
        name: Arc<str>,
        token: String,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
    },
    /// Free a name and append its `LEAVE`. Never refused: kept until the
    /// bus takes it.
    Leave {
        name: Arc<str>,
        text: Option<String>,
    },
    /// Free every name this node holds (shutdown).
    Depart { reply: oneshot::Sender<()> },
}

/// The link's health, for the room to read without ever waiting on the
/// driver.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkState {
    /// Commands can be carried out now.
    pub up: bool,
    /// Bumped each time the node lost its lease: its users are gone from
    /// the cluster and must be disconnected.
    pub leases_lost: u64,
    /// Names that could not be put back after Redis lost its data, because
    /// someone else took them meanwhile; bumped with `conflicts_seen`.
    pub conflicts: Arc<Vec<Arc<str>>>,
    pub conflicts_seen: u64,
}

/// The compiled scripts, loaded into Redis on every connection.
struct Scripts {
    hello: Script,
    renew: Script,
    login: Script,
    leave: Script,
    register: Script,
    reap: Script,
}

/// A leave waiting for the bus, with the epoch generation it happened in.
struct PendingLeave {
    name: Arc<str>,
    text: Option<String>,
    generation: u64,
}

/// What a result in a pipeline answers.
enum Slot {
    Renew,
    Reap,
    Register(Vec<Arc<str>>),
    Leave(PendingLeave),
    Publish(oneshot::Sender<Result<Receipt, ErrorCode>>),
    Login(Arc<str>, oneshot::Sender<Result<(), ErrorCode>>),
    Depart(oneshot::Sender<()>),
}

pub(crate) struct Driver {
    client: redis::Client,
    node: Arc<str>,
    lease: Duration,
    scripts: Scripts,
    state: watch::Sender<LinkState>,
    conn: Option<MultiplexedConnection>,
    /// The Redis data set this node has been working with.
    epoch: Option<String>,
    /// Bumped at each new epoch; leaves from an older one are forced.
    generation: u64,
    /// Names this node holds on the bus, by key.
    held: BTreeMap<String, Arc<str>>,
    /// The held names must be registered again (new epoch).
    register_pending: bool,
    leaves: VecDeque<PendingLeave>,
    /// The heartbeat is ours and was last renewed then.
    renewed: Option<Instant>,
    reaped: Instant,
    next_attempt: Instant,
    backoff: Duration,
    down_since: Option<Instant>,
}

impl Driver {
    pub(crate) fn new(
        client: redis::Client,
        node: Arc<str>,
        lease: Duration,
        state: watch::Sender<LinkState>,
    ) -> Driver {
        let now = Instant::now();
        Driver {
            client,
            node,
            lease,
            scripts: Scripts {
                hello: scripts::hello(),
                renew: scripts::renew(),
                login: scripts::login(),
                leave: scripts::leave(),
                register: scripts::register(),
                reap: scripts::reap(),
            },
            state,
            conn: None,
            epoch: None,
            generation: 0,
            held: BTreeMap::new(),
            register_pending: false,
            leaves: VecDeque::new(),
            renewed: None,
            reaped: now,
            next_attempt: now,
            backoff: BACKOFF_START,
            down_since: Some(now),
        }
    }

    /// Longest wait for one round trip before the link counts as down.
    pub(crate) fn command_timeout(&self) -> Duration {
        (self.lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(2))
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => batch.push(command),
                    None => return,
                },
                _ = tick.tick() => {}
            }
            while batch.len() < MAX_BATCH {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.check_lease();
            if self.conn.is_none() && Instant::now() >= self.next_attempt {
                self.connect().await;
            }
            self.round(batch).await;
        }
    }

    /// An outage longer than the lease: the other nodes have announced our
    /// users gone, so they must be disconnected here too.
    fn check_lease(&mut self) {
        if let Some(renewed) = self.renewed {
            if renewed.elapsed() > self.lease {
                warn!("the cluster lease ran out; disconnecting this node's users");
                self.lose_lease();
            }
        }
    }

    fn lose_lease(&mut self) {
        self.renewed = None;
        self.held.clear();
        self.state.send_modify(|s| s.leases_lost += 1);
    }

    async fn connect(&mut self) {
        match self.open().await {
            Ok((conn, epoch)) => {
                if let Some(since) = self.down_since.take() {
                    if self.epoch.is_none() {
                        info!("joined the cluster bus");
                    } else {
                        info!(after = ?since.elapsed(), "cluster bus reachable again");
                    }
                }
                match &self.epoch {
                    Some(old) if *old != epoch => {
                        warn!("Redis lost its data; registering this node's users again");
                        metrics::bus_settling(self.lease);
                        self.generation += 1;
                        self.renewed = None;
                        self.register_pending = !self.held.is_empty();
                    }
                    _ => {}
                }
                self.epoch = Some(epoch);
                self.conn = Some(conn);
                self.backoff = BACKOFF_START;
                self.state.send_modify(|s| s.up = true);
                metrics::bus_link(true);
            }
            Err(e) => {
                self.mark_down(&e);
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(self.lease / 4);
            }
        }
    }

    async fn open(&self) -> redis::RedisResult<(MultiplexedConnection, String)> {
        let timeout = self.command_timeout();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let s = &self.scripts;
        for script in [&s.hello, &s.renew, &s.login, &s.leave, &s.register, &s.reap] {
            script.prepare_invoke().load_async(&mut conn).await?;
        }
        let fresh = format!("{:016x}", rand_u64());
        let epoch: String = s
            .hello
            .key(scripts::EPOCH)
            .key(scripts::SETTLE)
            .arg(fresh)
            .arg(if self.epoch.is_some() { "1" } else { "0" })
            .arg(self.lease.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok((conn, epoch))
    }

    fn mark_down(&mut self, error: &dyn std::fmt::Display) {
        self.conn = None;
        if self.down_since.is_none() {
            warn!(%error, "lost the cluster bus; refusing requests until it returns");
            self.down_since = Some(Instant::now());
        } else {
            debug!(%error, "cluster bus still unreachable");
        }
        self.state.send_modify(|s| s.up = false);
        metrics::bus_link(false);
    }

    /// One round trip: housekeeping plus the batch, or, with no link, the
    /// batch refused (and leaves kept for later).
    async fn round(&mut self, batch: Vec<Command>) {
        let Some(mut conn) = self.conn.clone() else {
            self.refuse(batch);
            return;
        };
        let epoch = self.epoch.clone().unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut slots = Vec::new();
        let now = Instant::now();
        if self.renewed.is_none_or(|at| now - at >= self.lease / 4) {
            self.push_renew(&mut pipe, &epoch);
            slots.push(Slot::Renew);
        }
        if self.renewed.is_some() && now - self.reaped >= self.lease / 8 {
            self.push_reap(&mut pipe, &epoch, "");
            slots.push(Slot::Reap);
            self.reaped = now;
        }
        if self.register_pending {
            let names: Vec<Arc<str>> = self.held.values().cloned().collect();
            let node_users = scripts::node_users_key(&self.node);
            let call = evalsha(
                &mut pipe,
                &self.scripts.register,
                &[scripts::EPOCH, scripts::USERS, &node_users, scripts::NODES],
            );
            call.arg(&epoch).arg(&*self.node);
            for name in &names {
                call.arg(name_key(name)).arg(&**name);
            }
            slots.push(Slot::Register(names));
        }
        for leave in std::mem::take(&mut self.leaves) {
            self.push_leave(&mut pipe, &epoch, &leave);
            slots.push(Slot::Leave(leave));
        }
        for command in batch {
            match command {
                Command::Publish { frame, reply } => {
                    let line = &frame[..frame.len().saturating_sub(1)];
                    pipe.cmd("XADD")
                        .arg(scripts::STREAM)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(scripts::STREAM_MAXLEN)
                        .arg("0-*")
                        .arg("f")
                        .arg(line);
                    slots.push(Slot::Publish(reply));
                }
                Command::Login { name, token, reply } => {
                    let frame = ServerFrame::Join(name.to_string()).to_string();
                    let heartbeat = scripts::heartbeat_key(&self.node);
                    let node_users = scripts::node_users_key(&self.node);
                    evalsha(
                        &mut pipe,
                        &self.scripts.login,
                        &[
                            scripts::EPOCH,
                            scripts::SETTLE,
                            &heartbeat,
                            scripts::USERS,
                            &node_users,
                            scripts::STREAM,
                            scripts::NODES,
                        ],
                    )
                    .arg(&epoch)
                    .arg(name_key(&name))
                    .arg(&*self.node)
                    .arg(&*name)
                    .arg(token)
                    .arg(frame)
                    .arg(scripts::STREAM_MAXLEN);
                    slots.push(Slot::Login(name, reply));
                }
                Command::Leave { name, text } => {
                    self.held.remove(&name_key(&name));
                    let leave = PendingLeave {
                        name,
                        text,
                        generation: self.generation,
                    };
                    self.push_leave(&mut pipe, &epoch, &leave);
                    slots.push(Slot::Leave(leave));
                }
                Command::Depart { reply } => {
                    let node = self.node.clone();
                    self.push_reap(&mut pipe, &epoch, &node);
                    slots.push(Slot::Depart(reply));
                }
            }
        }
        if slots.is_empty() {
            return;
        }
        let started = Instant::now();
        let sent = tokio::time::timeout(
            self.command_timeout(),
            pipe.query_async::<Vec<Value>>(&mut conn),
        )
        .await;
        if matches!(sent, Ok(Ok(_))) {
            metrics::bus_round_trip(started.elapsed());
        }
        let values = match sent {
            Ok(Ok(values)) if values.len() == slots.len() => values,
            Ok(Ok(_)) => {
                self.fail(slots, &"pipeline answered out of step");
                return;
            }
            Ok(Err(e)) => {
                self.fail(slots, &e);
                return;
            }
            Err(_) => {
                self.fail(slots, &"no answer in time");
                return;
            }
        };
        let mut wrong_epoch = false;
        for (slot, value) in slots.into_iter().zip(values) {
            if let Value::ServerError(e) = &value {
                // NOSCRIPT after a restart, or worse: start the link afresh.
                debug!(error = ?e, "command refused by Redis");
                wrong_epoch = true;
            }
            let number = match &value {
                Value::Int(n) => Some(*n),
                _ => None,
            };
            wrong_epoch |= number == Some(WRONG_EPOCH);
            match slot {
                Slot::Renew => match number {
                    Some(1) => self.renewed = Some(Instant::now()),
                    Some(0) => {
                        if self.renewed.is_some() {
                            warn!("this node was presumed dead by the cluster");
                            self.lose_lease();
                        }
                        self.renewed = Some(Instant::now());
                    }
                    _ => {}
                },
                Slot::Reap => {
                    if let Some(n) = number.filter(|n| *n > 0) {
                        info!(users = n, "freed the names of a node that stopped");
                    }
                }
                Slot::Register(names) => {
                    if let Value::Array(conflicts) = value {
                        self.register_pending = false;
                        let conflicts: Vec<Arc<str>> = conflicts
                            .into_iter()
                            .filter_map(|v| redis::from_redis_value::<String>(v).ok())
                            .map(Arc::from)
                            .collect();
                        if !conflicts.is_empty() {
                            warn!(count = conflicts.len(), "names taken meanwhile by others");
                            for name in &conflicts {
                                self.held.remove(&name_key(name));
                            }
                            self.state.send_modify(|s| {
                                s.conflicts = Arc::new(conflicts);
                                s.conflicts_seen += 1;
                            });
                        }
                        debug!(users = names.len(), "registered again");
                    }
                }
                Slot::Leave(leave) => {
                    if number == Some(WRONG_EPOCH) || !value_ok(&value) {
                        self.leaves.push_back(leave);
                    }
                }
                Slot::Publish(reply) => {
                    if let Some(seq) = stream_seq(&value) {
                        metrics::bus_appended(seq);
                    }
                    let _ = reply.send(
                        stream_seq(&value)
                            .map(Receipt)
                            .ok_or(ErrorCode::Unavailable),
                    );
                }
                Slot::Login(name, reply) => {
                    let outcome = match number {
                        Some(1) => {
                            self.held.insert(name_key(&name), name);
                            Ok(())
                        }
                        Some(0) => Err(ErrorCode::NameTaken),
                        _ => Err(ErrorCode::Unavailable),
                    };
                    let _ = reply.send(outcome);
                }
                Slot::Depart(reply) => {
                    self.held.clear();
                    let _ = reply.send(());
                }
            }
        }
        if wrong_epoch {
            // Redis changed under us: reconnect, which detects the new epoch.
            self.conn = None;
        }
    }

    fn push_renew(&self, pipe: &mut Pipeline, epoch: &str) {
        let heartbeat = scripts::heartbeat_key(&self.node);
        evalsha(
            pipe,
            &self.scripts.renew,
            &[scripts::EPOCH, &heartbeat, scripts::NODES],
        )
        .arg(epoch)
        .arg(self.lease.as_millis() as u64)
        .arg(&*self.node);
    }

    fn push_reap(&self, pipe: &mut Pipeline, epoch: &str, only: &str) {
        evalsha(
            pipe,
            &self.scripts.reap,
            &[
                scripts::EPOCH,
                scripts::NODES,
                scripts::USERS,
                scripts::STREAM,
            ],
        )
        .arg(epoch)
        .arg(scripts::STREAM_MAXLEN)
        .arg(only);
    }

    fn push_leave(&self, pipe: &mut Pipeline, epoch: &str, leave: &PendingLeave) {
        let frame = ServerFrame::Leave {
            name: leave.name.to_string(),
            text: leave.text.clone(),
        }
        .to_string();
        let forced = leave.generation < self.generation;
        let node_users = scripts::node_users_key(&self.node);
        evalsha(
            pipe,
            &self.scripts.leave,
            &[scripts::EPOCH, scripts::USERS, &node_users, scripts::STREAM],
        )
        .arg(epoch)
        .arg(name_key(&leave.name))
        .arg(&*self.node)
        .arg(frame)
        .arg(if forced { "1" } else { "0" })
        .arg(scripts::STREAM_MAXLEN);
    }

    /// The link failed during a round trip: nothing in it counts as done.
    fn fail(&mut self, slots: Vec<Slot>, error: &dyn std::fmt::Display) {
        self.mark_down(error);
        self.next_attempt = Instant::now();
        for slot in slots {
            match slot {
                Slot::Publish(reply) => {
                    let _ = reply.send(Err(ErrorCode::Unavailable));
                }
                Slot::Login(_, reply) => {
                    let _ = reply.send(Err(ErrorCode::Unavailable));
                }
                Slot::Depart(reply) => {
                    let _ = reply.send(());
                }
                Slot::Leave(leave) => self.leaves.push_back(leave),
                Slot::Renew | Slot::Reap | Slot::Register(_) => {}
            }
        }
    }

    /// No link: refuse what needs one now, keep leaves for when it returns.
    fn refuse(&mut self, batch: Vec<Command>) {
        for command in batch {
            match command {
                Command::Publish { reply, .. } => {
                    let _ = reply.send(Err(ErrorCode::Unavailable));
                }
                Command::Login { reply, .. } => {
                    let _ = reply.send(Err(ErrorCode::Unavailable));
                }
                Command::Leave { name, text } => {
                    self.held.remove(&name_key(&name));
                    self.leaves.push_back(PendingLeave {
                        name,
                        text,
                        generation: self.generation,
                    });
                }
                Command::Depart { reply } => {
                    let _ = reply.send(());
                }
            }
        }
    }
}

/// Appends `EVALSHA <script> <keys>` to the pipeline, ready for the
/// script's arguments (scripts are loaded when the connection opens).
fn evalsha<'p>(pipe: &'p mut Pipeline, script: &Script, keys: &[&str]) -> &'p mut Pipeline {
    pipe.cmd("EVALSHA")
        .arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
}

fn value_ok(value: &Value) -> bool {
    !matches!(value, Value::ServerError(_))
}

/// The sequence number of a stream id `0-<n>`.
pub(crate) fn stream_seq(value: &Value) -> Option<u64> {
    let id = match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?,
        Value::SimpleString(s) => s.as_str(),
        _ => return None,
    };
    id.strip_prefix("0-")?.parse().ok()
}

/// A random number for epoch and node ids, from the standard library's
/// randomly seeded hasher: no dependency needed for a few unguessable bits.
pub(crate) fn rand_u64() -> u64 {
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
