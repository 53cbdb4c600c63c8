//! The node's lease on its users' names, and the epoch it holds it in.
//!
//! A node keeps its users' names only while it keeps renewing its
//! heartbeat: when it stops, the others free them (see `reaper.rs`). So the
//! node must notice, on its own side, when the lease is gone (an outage
//! longer than the lease, or a renewal that finds the heartbeat lapsed)
//! and disconnect its users, who no longer exist for the rest of the
//! cluster. It must also notice when Redis lost its data (a new epoch) and
//! put its users back, since for everyone else they never left.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chat_protocol::name_key;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::pipeline::{Batch, Slot};
use super::scripts::{self, Scripts};

/// Renewals per lease: a renewal may be late or lost three times before
/// the lease runs out.
const RENEWALS_PER_LEASE: u32 = 4;

/// What a renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Renewal {
    /// The heartbeat was still there, and is extended.
    Renewed,
    /// The heartbeat had lapsed (first start, or the node was presumed
    /// dead and its users freed); it is there again now.
    Lapsed,
    /// No answer that says either (wrong epoch, refused).
    Unknown,
}

pub(super) struct Lease {
    node: Arc<str>,
    length: Duration,
    /// The Redis data set this node has been working with.
    epoch: Option<String>,
    /// Bumped at each new epoch; leaves from an older one are forced.
    generation: u64,
    /// The heartbeat is ours and was last renewed then.
    renewed: Option<Instant>,
    /// Names this node holds on the bus, by key.
    held: BTreeMap<String, Arc<str>>,
    /// The held names must be registered again (new epoch).
    register_pending: bool,
}

impl Lease {
    pub(super) fn new(node: Arc<str>, length: Duration) -> Lease {
        Lease {
            node,
            length,
            epoch: None,
            generation: 0,
            renewed: None,
            held: BTreeMap::new(),
            register_pending: false,
        }
    }

    /// Asks Redis for its epoch on a new connection, creating one if Redis
    /// has none (a node that knew an older one also starts the settling
    /// period, during which logins wait for the survivors to re-register).
    pub(super) async fn hello(
        &self,
        conn: &mut MultiplexedConnection,
        scripts: &Scripts,
    ) -> redis::RedisResult<String> {
        let fresh = format!("{:016x}", super::rand_u64());
        scripts
            .hello
            .key(scripts::EPOCH)
            .key(scripts::SETTLE)
            .key(scripts::RECONCILING)
            .arg(fresh)
            .arg(if self.epoch.is_some() { "1" } else { "0" })
            .arg(self.length.as_millis() as u64)
            .invoke_async(conn)
            .await
    }

    /// Takes the epoch a new connection found; a new one means Redis lost
    /// its data, and with it our heartbeat and our users' names.
    pub(super) fn epoch_seen(&mut self, epoch: String) {
        match &self.epoch {
            Some(old) if *old != epoch => {
                warn!("Redis lost its data; registering this node's users again");
                crate::metrics::bus_settling(self.length);
                self.generation += 1;
                self.renewed = None;
                self.register_pending = !self.held.is_empty();
            }
            _ => {}
        }
        self.epoch = Some(epoch);
    }

    /// The epoch every script call must name.
    pub(super) fn epoch(&self) -> String {
        self.epoch.clone().unwrap_or_default()
    }

    /// Bumped at each new epoch.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the heartbeat is ours.
    pub(super) fn is_held(&self) -> bool {
        self.renewed.is_some()
    }

    /// True, once, when an outage has outlasted the lease: the other nodes
    /// have announced our users gone, so they must be disconnected here too.
    pub(super) fn ran_out(&mut self) -> bool {
        let expired = self.renewed.is_some_and(|at| at.elapsed() > self.length);
        if expired {
            warn!("the cluster lease ran out; disconnecting this node's users");
            self.lose();
        }
        expired
    }

    fn lose(&mut self) {
        self.renewed = None;
        self.held.clear();
    }

    /// Adds a renewal if one is due: every quarter lease, and at once
    /// when the heartbeat is not ours.
    pub(super) fn push_renewal(&self, batch: &mut Batch<'_>, now: Instant) {
        let every = self.length / RENEWALS_PER_LEASE;
        if self.renewed.is_some_and(|at| now - at < every) {
            return;
        }
        let (loaded, epoch) = (batch.scripts(), batch.epoch());
        let heartbeat = scripts::heartbeat_key(&self.node);
        batch
            .script(
                &loaded.renew,
                &[scripts::EPOCH, &heartbeat, scripts::NODES],
                Slot::Renew,
            )
            .arg(epoch)
            .arg(self.length.as_millis() as u64)
            .arg(&*self.node);
    }

    /// Adds the held names, to be registered again, after a new epoch.
    pub(super) fn push_register(&self, batch: &mut Batch<'_>) {
        if !self.register_pending {
            return;
        }
        let (loaded, epoch) = (batch.scripts(), batch.epoch());
        let node_users = scripts::node_users_key(&self.node);
        let call = batch.script(
            &loaded.register,
            &[scripts::EPOCH, scripts::USERS, &node_users, scripts::NODES],
            Slot::Register(self.held.len()),
        );
        call.arg(epoch).arg(&*self.node);
        for name in self.held.values() {
            call.arg(name_key(name)).arg(&**name);
        }
    }

    /// Takes a renewal's answer; true if it found the lease lost.
    pub(super) fn renewed(&mut self, renewal: Renewal) -> bool {
        match renewal {
            Renewal::Renewed => {
                self.renewed = Some(Instant::now());
                false
            }
            Renewal::Lapsed => {
                let lost = self.renewed.is_some();
                if lost {
                    warn!("this node was presumed dead by the cluster");
                    self.lose();
                }
                self.renewed = Some(Instant::now());
                lost
            }
            Renewal::Unknown => false,
        }
    }

    /// Takes the names the register script could not put back, because
    /// someone else took them meanwhile; they are no longer ours.
    pub(super) fn registered(&mut self, count: usize, conflicts: &[Arc<str>]) {
        self.register_pending = false;
        if !conflicts.is_empty() {
            warn!(count = conflicts.len(), "names taken meanwhile by others");
            for name in conflicts {
                self.held.remove(&name_key(name));
            }
        }
        debug!(users = count, "registered again");
    }

    /// A login succeeded: the name is ours.
    pub(super) fn hold(&mut self, name: Arc<str>) {
        self.held.insert(name_key(&name), name);
    }

    /// A user left: the name is no longer ours to register again.
    pub(super) fn release(&mut self, name: &str) {
        self.held.remove(&name_key(name));
    }

    /// The node departed: it holds no names any more.
    pub(super) fn release_all(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease::new(Arc::from("a"), Duration::from_secs(10))
    }

    #[test]
    fn a_lapsed_heartbeat_loses_the_lease_only_if_it_was_held() {
        let mut lease = lease();
        assert!(!lease.renewed(Renewal::Lapsed), "first start");
        assert!(lease.is_held());
        lease.hold(Arc::from("Bob"));
        assert!(lease.renewed(Renewal::Lapsed));
        assert!(lease.held.is_empty());
        assert!(lease.is_held(), "held again from now on");
    }

    #[test]
    fn a_new_epoch_registers_the_held_names_again() {
        let mut lease = lease();
        lease.epoch_seen("e1".into());
        assert_eq!(lease.generation(), 0);
        lease.renewed(Renewal::Lapsed);
        lease.hold(Arc::from("Bob"));
        lease.hold(Arc::from("amy"));
        lease.epoch_seen("e1".into());
        assert!(!lease.register_pending, "same epoch");
        lease.epoch_seen("e2".into());
        assert_eq!(lease.generation(), 1);
        assert!(!lease.is_held(), "the heartbeat went with the data");
        assert!(lease.register_pending);
        lease.registered(2, &[Arc::from("BOB")]);
        assert!(!lease.register_pending);
        assert_eq!(
            lease.held.values().map(|n| &**n).collect::<Vec<_>>(),
            ["amy"]
        );
    }

    #[test]
    fn a_new_epoch_with_nobody_held_registers_nothing() {
        let mut lease = lease();
        lease.epoch_seen("e1".into());
        lease.epoch_seen("e2".into());
        assert!(!lease.register_pending);
    }

    #[test]
    fn names_are_held_by_key() {
        let mut lease = lease();
        lease.hold(Arc::from("Bob"));
        lease.release("bob");
        assert!(lease.held.is_empty());
        lease.hold(Arc::from("Bob"));
        lease.release_all();
        assert!(lease.held.is_empty());
    }
}
