//! One round trip to Redis: the round's commands batched into one
//! pipeline, and its replies decoded.
//!
//! A busy node would be bound by latency if each message cost a round
//! trip, so each round carries everything queued since the last one. Every
//! command in a [`Batch`] leaves a [`Slot`] that says what its reply
//! answers, and the replies come back in the same order. The pipeline
//! ignores errors, so that one refused command does not fail the others;
//! the scripts report their outcomes as numbers, read by [`Reply`].

use std::sync::Arc;
use std::time::Duration;

use chat_protocol::{name_key, ErrorCode, ServerFrame};
use redis::aio::MultiplexedConnection;
use redis::{Pipeline, Script, ServerError, Value};
use tokio::sync::oneshot;

use super::calls::Call;
use super::lease::Renewal;
use super::scripts::{self, Scripts, WRONG_EPOCH};
use crate::hub::Receipt;

/// A leave waiting for the bus, with the epoch generation it happened in.
pub(super) struct PendingLeave {
    pub name: Arc<str>,
    pub text: Option<String>,
    pub generation: u64,
}

/// What a reply in a pipeline answers.
pub(super) enum Slot {
    Renew,
    Reap,
    /// The held names, this many of them, put back after a new epoch.
    Register(usize),
    Leave(PendingLeave),
    /// A session's script call, answered with the raw reply.
    Call(oneshot::Sender<Result<Reply, ErrorCode>>),
    Login(Arc<str>, oneshot::Sender<Result<(), ErrorCode>>),
    Depart(oneshot::Sender<()>),
}

/// The commands of one round trip, being gathered.
pub(super) struct Batch<'a> {
    scripts: &'a Scripts,
    node: &'a str,
    epoch: &'a str,
    pipe: Pipeline,
    slots: Vec<Slot>,
}

/// Why a round trip failed as a whole: nothing in it counts as done.
#[derive(Debug)]
pub(super) enum Failure {
    Redis(redis::RedisError),
    OutOfStep,
    NoAnswer,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Redis(e) => e.fmt(f),
            Failure::OutOfStep => f.write_str("pipeline answered out of step"),
            Failure::NoAnswer => f.write_str("no answer in time"),
        }
    }
}

impl<'a> Batch<'a> {
    /// An empty batch for `node`, whose scripts all name `epoch`.
    pub(super) fn new(scripts: &'a Scripts, node: &'a str, epoch: &'a str) -> Batch<'a> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        Batch {
            scripts,
            node,
            epoch,
            pipe,
            slots: Vec::new(),
        }
    }

    pub(super) fn scripts(&self) -> &'a Scripts {
        self.scripts
    }

    pub(super) fn node(&self) -> &'a str {
        self.node
    }

    pub(super) fn epoch(&self) -> &'a str {
        self.epoch
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Appends `EVALSHA <script> <keys>`, answered as `slot`, ready for the
    /// script's arguments (scripts are loaded when the connection opens).
    pub(super) fn script(&mut self, script: &Script, keys: &[&str], slot: Slot) -> &mut Pipeline {
        self.slots.push(slot);
        self.pipe
            .cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(keys.len())
            .arg(keys)
    }

    /// Appends a session's script call.
    pub(super) fn call(&mut self, call: Call, reply: oneshot::Sender<Result<Reply, ErrorCode>>) {
        let Call { script, keys, args } = call;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let epoch = self.epoch;
        self.script(script(self.scripts), &keys, Slot::Call(reply))
            .arg(epoch)
            .arg(args);
    }

    /// Claims `name` for this node and appends its `JOIN`, tagged with
    /// `token` so that the room knows its own login when it comes back.
    pub(super) fn login(
        &mut self,
        name: Arc<str>,
        token: String,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
    ) {
        let (loaded, node, epoch) = (self.scripts, self.node, self.epoch);
        let frame = ServerFrame::Join(name.to_string()).to_string();
        let heartbeat = scripts::heartbeat_key(node);
        let node_users = scripts::node_users_key(node);
        let key = name_key(&name);
        self.script(
            &loaded.login,
            &[
                scripts::EPOCH,
                scripts::SETTLE,
                &heartbeat,
                scripts::USERS,
                &node_users,
                scripts::STREAM,
                scripts::NODES,
            ],
            Slot::Login(name.clone(), reply),
        )
        .arg(epoch)
        .arg(key)
        .arg(node)
        .arg(&*name)
        .arg(token)
        .arg(frame)
        .arg(scripts::STREAM_MAXLEN);
    }

    /// Frees the name and appends its `LEAVE`; `forced` announces it even
    /// if nobody holds the name (it was lost with Redis's data).
    pub(super) fn leave(&mut self, leave: PendingLeave, forced: bool) {
        let (loaded, node, epoch) = (self.scripts, self.node, self.epoch);
        let frame = ServerFrame::Leave {
            name: leave.name.to_string(),
            text: leave.text.clone(),
        }
        .to_string();
        let node_users = scripts::node_users_key(node);
        let key = name_key(&leave.name);
        self.script(
            &loaded.leave,
            &[scripts::EPOCH, scripts::USERS, &node_users, scripts::STREAM],
            Slot::Leave(leave),
        )
        .arg(epoch)
        .arg(key)
        .arg(node)
        .arg(frame)
        .arg(if forced { "1" } else { "0" })
        .arg(scripts::STREAM_MAXLEN);
    }

    /// Sends the batch as one pipeline; each slot comes back with its reply.
    pub(super) async fn send(
        self,
        conn: &mut MultiplexedConnection,
        timeout: Duration,
    ) -> Result<Vec<(Slot, Reply)>, (Vec<Slot>, Failure)> {
        let Batch { pipe, slots, .. } = self;
        let started = std::time::Instant::now();
        let sent = tokio::time::timeout(timeout, pipe.query_async::<Vec<Value>>(conn)).await;
        if matches!(sent, Ok(Ok(_))) {
            crate::metrics::bus_round_trip(started.elapsed());
        }
        match sent {
            Ok(Ok(values)) if values.len() == slots.len() => Ok(slots
                .into_iter()
                .zip(values.into_iter().map(Reply))
                .collect()),
            Ok(Ok(_)) => Err((slots, Failure::OutOfStep)),
            Ok(Err(e)) => Err((slots, Failure::Redis(e))),
            Err(_) => Err((slots, Failure::NoAnswer)),
        }
    }
}

/// One reply of a pipeline. The scripts report their outcomes as numbers
/// (`scripts.rs` says which); this is the one place that reads them.
#[derive(Debug)]
pub(crate) struct Reply(pub Value);

impl Reply {
    /// A script's outcome number.
    fn number(&self) -> Option<i64> {
        match self.0 {
            Value::Int(n) => Some(n),
            _ => None,
        }
    }

    /// The join script's answer: 1 the `JOIN` is in the stream, 0 already
    /// in the room, -4 too many rooms on the server, -5 too many for the
    /// joiner's address; anything else not now.
    pub(crate) fn joined(&self) -> Result<(), ErrorCode> {
        match self.number() {
            Some(1) => Ok(()),
            Some(0) => Err(ErrorCode::AlreadyInRoom),
            Some(-4 | -5) => Err(ErrorCode::TooManyRooms),
            _ => Err(ErrorCode::Unavailable),
        }
    }

    /// The tell script's answer: 0 nobody by that name, else where the
    /// `TELL` stands in the stream.
    pub(crate) fn told(&self) -> Result<Receipt, ErrorCode> {
        match self.number() {
            Some(0) => Err(ErrorCode::NoSuchUser),
            _ => self.receipt(),
        }
    }

    /// The renew script's answer: 1 renewed, 0 lapsed.
    pub(super) fn renewal(&self) -> Renewal {
        match self.number() {
            Some(1) => Renewal::Renewed,
            Some(0) => Renewal::Lapsed,
            _ => Renewal::Unknown,
        }
    }

    /// How many users a reaping or burying script freed; `None` if it did
    /// not run.
    pub(super) fn freed(&self) -> Option<u64> {
        self.number().and_then(|n| u64::try_from(n).ok())
    }

    /// The enroll script's answer: 1 when Redis took this node's rooms back.
    pub(super) fn enrolled(&self) -> bool {
        self.number() == Some(1)
    }

    /// Why Redis refused the command: `NOSCRIPT` after a restart, or worse.
    pub(super) fn refusal(&self) -> Option<&ServerError> {
        match &self.0 {
            Value::ServerError(e) => Some(e),
            _ => None,
        }
    }

    /// The command did not run against the data this node knows: the link
    /// must start afresh, and whatever it was must be tried again.
    pub(super) fn wrong_epoch(&self) -> bool {
        self.refusal().is_some() || self.number() == Some(WRONG_EPOCH)
    }

    /// An `XADD`'s answer: where the frame stands in the stream's order.
    pub(crate) fn receipt(&self) -> Result<Receipt, ErrorCode> {
        scripts::stream_seq(&self.0)
            .map(Receipt)
            .ok_or(ErrorCode::Unavailable)
    }

    /// The login script's answer: 1 claimed, 0 taken, anything else (the
    /// wrong epoch, settling, no lease) not now.
    pub(super) fn login(&self) -> Result<(), ErrorCode> {
        match self.number() {
            Some(1) => Ok(()),
            Some(0) => Err(ErrorCode::NameTaken),
            _ => Err(ErrorCode::Unavailable),
        }
    }

    /// The register script's answer: the names someone else took
    /// meanwhile; `None` if it did not run.
    pub(super) fn conflicts(self) -> Option<Vec<Arc<str>>> {
        let Value::Array(names) = self.0 else {
            return None;
        };
        Some(
            names
                .into_iter()
                .filter_map(|v| redis::from_redis_value::<String>(v).ok())
                .map(Arc::from)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as Redis sends it.
    fn wire(resp: &str) -> Reply {
        Reply(redis::parse_redis_value(resp.as_bytes()).unwrap())
    }

    #[test]
    fn numbers_are_outcomes() {
        assert_eq!(Reply(Value::Int(3)).number(), Some(3));
        assert_eq!(Reply(Value::Nil).number(), None);
        assert_eq!(Reply(Value::Okay).number(), None);
        assert_eq!(Reply(Value::Int(1)).renewal(), Renewal::Renewed);
        assert_eq!(Reply(Value::Int(0)).renewal(), Renewal::Lapsed);
        assert_eq!(Reply(Value::Int(WRONG_EPOCH)).renewal(), Renewal::Unknown);
        assert_eq!(Reply(Value::Nil).renewal(), Renewal::Unknown);
        assert_eq!(Reply(Value::Int(2)).freed(), Some(2));
        assert_eq!(Reply(Value::Int(-1)).freed(), None);
        assert!(Reply(Value::Int(1)).enrolled() && !Reply(Value::Int(0)).enrolled());
    }

    #[test]
    fn a_wrong_epoch_is_a_number_or_a_refusal() {
        assert!(Reply(Value::Int(WRONG_EPOCH)).wrong_epoch());
        assert!(!Reply(Value::Int(0)).wrong_epoch());
        assert!(!Reply(Value::Int(1)).wrong_epoch());
        assert!(!Reply(Value::Nil).wrong_epoch());
    }

    #[test]
    fn a_refusal_is_told_apart() {
        let refused = wire("-NOSCRIPT No matching script.\r\n");
        assert_eq!(refused.refusal().map(|e| e.code()), Some("NOSCRIPT"));
        assert!(refused.wrong_epoch());
        assert_eq!(refused.login(), Err(ErrorCode::Unavailable));
        assert!(refused.conflicts().is_none());
        assert!(wire(":1\r\n").refusal().is_none());
    }

    #[test]
    fn an_xadd_id_is_a_receipt() {
        assert_eq!(wire("$4\r\n0-42\r\n").receipt(), Ok(Receipt(42)));
        assert_eq!(Reply(Value::Nil).receipt(), Err(ErrorCode::Unavailable));
    }

    #[test]
    fn logins_are_claimed_taken_or_not_now() {
        assert_eq!(Reply(Value::Int(1)).login(), Ok(()));
        assert_eq!(Reply(Value::Int(0)).login(), Err(ErrorCode::NameTaken));
        for not_now in [WRONG_EPOCH, -2, -3] {
            assert_eq!(
                Reply(Value::Int(not_now)).login(),
                Err(ErrorCode::Unavailable)
            );
        }
    }

    #[test]
    fn conflicts_are_the_names_returned() {
        let reply = wire("*2\r\n$3\r\nBob\r\n$3\r\namy\r\n");
        let names = reply.conflicts().unwrap();
        assert_eq!(
            names.iter().map(|n| &**n).collect::<Vec<_>>(),
            ["Bob", "amy"]
        );
        assert_eq!(
            Reply(Value::Array(Vec::new())).conflicts().map(|c| c.len()),
            Some(0)
        );
        assert!(Reply(Value::Int(WRONG_EPOCH)).conflicts().is_none());
    }
}
