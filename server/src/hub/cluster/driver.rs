//! The driver: the one task that writes to Redis.
//!
//! Everything a node changes on the bus goes through here, so that one
//! task alone decides what each round trip carries. Each round it wakes up
//! for a command or a tick, then ties together the parts that each keep
//! one job:
//! - [`link`](super::link): the connection, its backoff and its outages;
//! - [`lease`](super::lease): the heartbeat, the epoch, the names held;
//! - [`reaper`](super::reaper): freeing the names of nodes that died;
//! - [`pipeline`](super::pipeline): the round's commands as one pipeline,
//!   and its replies decoded.
//!
//! The room reads the outcome in a [`LinkState`], never waiting on the
//! driver.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chat_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::debug;

use super::calls::Call;
use super::lease::Lease;
use super::link::{self, Link};
use super::pipeline::{Batch, Failure, PendingLeave, Reply, Slot};
use super::reaper::{self, Reaper};
use super::scripts::Scripts;
use crate::hub::Receipt;
use crate::metrics;

/// Most commands sent in one round trip.
const MAX_BATCH: usize = 512;
/// How often the driver wakes up to renew, reap or reconnect.
const TICK: Duration = Duration::from_millis(100);

/// A request to change the bus.
pub(crate) enum Command {
    /// Run a script for a session: rooms, `TELL`, a message kept for
    /// history. Answered with the raw reply, read by [`calls`](super::calls).
    Call {
        call: Call,
        reply: oneshot::Sender<Result<Reply, ErrorCode>>,
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

pub(crate) struct Driver {
    node: Arc<str>,
    lease_length: Duration,
    scripts: Scripts,
    link: Link,
    lease: Lease,
    reaper: Reaper,
    /// Leaves the bus has not taken yet, sent again each round.
    leaves: VecDeque<PendingLeave>,
    state: watch::Sender<LinkState>,
}

impl Driver {
    pub(crate) fn new(
        client: redis::Client,
        node: Arc<str>,
        lease: Duration,
        state: watch::Sender<LinkState>,
    ) -> Driver {
        Driver {
            node: node.clone(),
            lease_length: lease,
            scripts: Scripts::new(),
            link: Link::new(client, lease),
            lease: Lease::new(node, lease),
            reaper: Reaper::new(lease),
            leaves: VecDeque::new(),
            state,
        }
    }

    /// Longest wait for one round trip before the link counts as down.
    pub(crate) fn command_timeout(&self) -> Duration {
        link::command_timeout(self.lease_length)
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
            if self.lease.ran_out() {
                self.lease_lost();
            }
            if self.link.should_connect() {
                self.connect().await;
            }
            self.round(batch).await;
        }
    }

    async fn connect(&mut self) {
        let opened = match self.link.open(&self.scripts).await {
            Ok(mut conn) => match self.lease.hello(&mut conn, &self.scripts).await {
                Ok(epoch) => Ok((conn, epoch)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match opened {
            Ok((conn, epoch)) => {
                self.link.up(conn);
                self.lease.epoch_seen(epoch);
                self.state.send_modify(|s| s.up = true);
                metrics::bus_link(true);
            }
            Err(e) => {
                self.link.attempt_failed(&e);
                self.state.send_modify(|s| s.up = false);
                metrics::bus_link(false);
            }
        }
    }

    /// One round trip: housekeeping plus the batch, or, with no link, the
    /// batch refused (and leaves kept for later).
    async fn round(&mut self, commands: Vec<Command>) {
        let Some(mut conn) = self.link.conn() else {
            self.refuse(commands);
            return;
        };
        let epoch = self.lease.epoch();
        let mut batch = Batch::new(&self.scripts, &self.node, &epoch);
        let now = Instant::now();
        self.lease.push_renewal(&mut batch, now);
        self.reaper.push(&mut batch, self.lease.is_held(), now);
        self.lease.push_register(&mut batch);
        let generation = self.lease.generation();
        for leave in std::mem::take(&mut self.leaves) {
            let forced = leave.generation < generation;
            batch.leave(leave, forced);
        }
        for command in commands {
            match command {
                Command::Call { call, reply } => batch.call(call, reply),
                Command::Login { name, token, reply } => batch.login(name, token, reply),
                Command::Leave { name, text } => {
                    self.lease.release(&name);
                    let leave = PendingLeave {
                        name,
                        text,
                        generation,
                    };
                    batch.leave(leave, false);
                }
                Command::Depart { reply } => reaper::push_depart(&mut batch, Slot::Depart(reply)),
            }
        }
        if batch.is_empty() {
            return;
        }
        match batch.send(&mut conn, self.command_timeout()).await {
            Ok(answers) => self.take_answers(answers),
            Err((slots, failure)) => self.fail(slots, &failure),
        }
    }

    /// Hands each reply to the part that asked.
    fn take_answers(&mut self, answers: Vec<(Slot, Reply)>) {
        let mut wrong_epoch = false;
        for (slot, reply) in answers {
            if let Some(e) = reply.refusal() {
                // NOSCRIPT after a restart, or worse: start the link afresh.
                debug!(error = ?e, "command refused by Redis");
            }
            wrong_epoch |= reply.wrong_epoch();
            match slot {
                Slot::Renew => {
                    if self.lease.renewed(reply.renewal()) {
                        self.lease_lost();
                    }
                }
                Slot::Reap => Reaper::reaped(reply.freed()),
                Slot::Register(count) => {
                    if let Some(conflicts) = reply.conflicts() {
                        self.lease.registered(count, &conflicts);
                        if !conflicts.is_empty() {
                            self.state.send_modify(|s| {
                                s.conflicts = Arc::new(conflicts);
                                s.conflicts_seen += 1;
                            });
                        }
                    }
                }
                Slot::Leave(leave) => {
                    if reply.wrong_epoch() {
                        self.leaves.push_back(leave);
                    }
                }
                Slot::Call(answer) => {
                    if let Ok(Receipt(seq)) = reply.receipt() {
                        metrics::bus_appended(seq);
                    }
                    let answer_is = if reply.wrong_epoch() {
                        Err(ErrorCode::Unavailable)
                    } else {
                        Ok(reply)
                    };
                    let _ = answer.send(answer_is);
                }
                Slot::Login(name, answer) => {
                    let outcome = reply.login();
                    if outcome.is_ok() {
                        self.lease.hold(name);
                    }
                    let _ = answer.send(outcome);
                }
                Slot::Depart(answer) => {
                    self.lease.release_all();
                    let _ = answer.send(());
                }
            }
        }
        if wrong_epoch {
            // Redis changed under us: reconnect, which detects the new epoch.
            self.link.restart();
        }
    }

    fn lease_lost(&mut self) {
        self.state.send_modify(|s| s.leases_lost += 1);
    }

    /// The link failed during a round trip: nothing in it counts as done.
    fn fail(&mut self, slots: Vec<Slot>, failure: &Failure) {
        self.link.broke(failure);
        self.state.send_modify(|s| s.up = false);
        metrics::bus_link(false);
        for slot in slots {
            match slot {
                Slot::Call(reply) => {
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
    fn refuse(&mut self, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::Call { reply, .. } => {
                    let _ = reply.send(Err(ErrorCode::Unavailable));
                }
                Command::Login { reply, .. } => {
                    let _ = reply.send(Err(ErrorCode::Unavailable));
                }
                Command::Leave { name, text } => {
                    self.lease.release(&name);
                    self.leaves.push_back(PendingLeave {
                        name,
                        text,
                        generation: self.lease.generation(),
                    });
                }
                Command::Depart { reply } => {
                    let _ = reply.send(());
                }
            }
        }
    }
}
