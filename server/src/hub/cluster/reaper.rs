//! Finding dead nodes and freeing their names.
//!
//! A node that dies cannot say so; its heartbeat just lapses. Every node
//! that holds a lease therefore runs the reap script now and then, which
//! frees the names of every node whose heartbeat is gone and announces one
//! `LEAVE` for each, atomically, so however many survivors notice at once,
//! each user is announced exactly once. A node that stops cleanly runs the
//! same script for itself, so its users are announced at once.

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::pipeline::{Batch, Slot};
use super::scripts;

/// Reaps per lease: a dead node's users are announced within one lease
/// plus an eighth.
const REAPS_PER_LEASE: u32 = 8;

pub(super) struct Reaper {
    every: Duration,
    last: Instant,
}

impl Reaper {
    pub(super) fn new(lease: Duration) -> Reaper {
        Reaper {
            every: lease / REAPS_PER_LEASE,
            last: Instant::now(),
        }
    }

    /// Adds a reap if one is due. Only a node that holds its lease reaps:
    /// one cut off from the cluster is in no position to judge the others.
    pub(super) fn push(&mut self, batch: &mut Batch<'_>, lease_held: bool, now: Instant) {
        if lease_held && now - self.last >= self.every {
            push_reap(batch, "", Slot::Reap);
            self.last = now;
        }
    }

    /// Logs what a reap freed.
    pub(super) fn reaped(freed: Option<u64>) {
        if let Some(n) = freed.filter(|n| *n > 0) {
            info!(users = n, "freed the names of a node that stopped");
        }
    }
}

/// Adds the departure of this node: its names freed and announced now,
/// not a lease from now.
pub(super) fn push_depart(batch: &mut Batch<'_>, slot: Slot) {
    let node = batch.node();
    push_reap(batch, node, slot);
}

/// The reap script on every dead node, or with `only`, on that node.
fn push_reap(batch: &mut Batch<'_>, only: &str, slot: Slot) {
    let (loaded, epoch) = (batch.scripts(), batch.epoch());
    batch
        .script(
            &loaded.reap,
            &[
                scripts::EPOCH,
                scripts::NODES,
                scripts::USERS,
                scripts::STREAM,
            ],
            slot,
        )
        .arg(epoch)
        .arg(scripts::STREAM_MAXLEN)
        .arg(only);
}
