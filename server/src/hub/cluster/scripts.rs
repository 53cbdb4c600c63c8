//! The Redis keys and the Lua scripts that change them.
//!
//! Every change to names or presence is one script, so it is atomic: a name
//! is claimed and its `JOIN` appended in one step, a dead node's users are
//! freed and their `LEAVE`s appended in one step, whichever node runs it.
//! Scripts report outcomes as numbers rather than errors, because one error
//! reply fails a whole pipeline.
//!
//! Keys (all under the `chat:` prefix):
//! - `chat:epoch`: a random id, created by the first node to connect. A new
//!   value means Redis lost its data; every script checks it.
//! - `chat:settle`: present for one lease after a new epoch was created by a
//!   node that knew an old one; logins wait while the survivors re-register.
//! - `chat:stream`: the broadcast frames, a stream with ids `0-1`, `0-2`, …
//!   so that a gap in ids is a count of frames a node can no longer get.
//!   Field `f` is the frame, `t` the login token of a `JOIN`.
//! - `chat:users`: hash from lower-cased name to `<node> <name>`.
//! - `chat:nodes`: set of nodes that may hold users.
//! - `chat:node:<id>`: a node's heartbeat, expiring after one lease.
//! - `chat:node-users:<id>`: set of the lower-cased names a node holds.

use redis::{Script, Value};

pub const EPOCH: &str = "chat:epoch";
pub const SETTLE: &str = "chat:settle";
pub const STREAM: &str = "chat:stream";
pub const USERS: &str = "chat:users";
pub const NODES: &str = "chat:nodes";

/// Entries the stream keeps (approximately): at 100 000 messages/s, a
/// second's worth for a node that was cut off.
pub const STREAM_MAXLEN: u64 = 100_000;

pub fn heartbeat_key(node: &str) -> String {
    format!("chat:node:{node}")
}

pub fn node_users_key(node: &str) -> String {
    format!("chat:node-users:{node}")
}

/// The sequence number of a stream id `0-<n>`.
pub fn seq_of_id(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse().ok()
}

/// The sequence number of a stream id as Redis replies with it.
pub fn stream_seq(value: &Value) -> Option<u64> {
    match value {
        Value::BulkString(bytes) => seq_of_id(std::str::from_utf8(bytes).ok()?),
        Value::SimpleString(s) => seq_of_id(s),
        _ => None,
    }
}

/// The name in a `chat:users` value, `<node> <name>`.
pub fn held_name(owner: &str) -> Option<&str> {
    owner.split_once(' ').map(|(_, name)| name)
}

/// Returned by every script when `chat:epoch` is not the caller's.
pub const WRONG_EPOCH: i64 = -1;

/// The scripts the driver runs, compiled once and loaded into Redis on
/// every connection, so that a pipeline can call them by hash.
pub struct Scripts {
    pub hello: Script,
    pub renew: Script,
    pub login: Script,
    pub leave: Script,
    pub register: Script,
    pub reap: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            hello: hello(),
            renew: renew(),
            login: login(),
            leave: leave(),
            register: register(),
            reap: reap(),
        }
    }

    pub fn all(&self) -> [&Script; 6] {
        [
            &self.hello,
            &self.renew,
            &self.login,
            &self.leave,
            &self.register,
            &self.reap,
        ]
    }
}

/// `hello(epoch, settle; new_epoch, knew_one, lease_ms) -> epoch`: the
/// current epoch, created if missing. A node that knew an older epoch also
/// starts the settling period.
pub fn hello() -> Script {
    Script::new(
        r#"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  if ARGV[2] == '1' then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  end
end
return epoch
"#,
    )
}

/// `snapshot(epoch, users, stream, settle) -> {epoch, settling, users, last}`:
/// the room as of one stream position, for a node that starts reading.
pub fn snapshot() -> Script {
    Script::new(
        r#"
local epoch = redis.call('GET', KEYS[1])
if not epoch then return {false, 0, {}, '0-0'} end
local last = '0-0'
local tail = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if tail[1] then last = tail[1][1] end
return {epoch, redis.call('EXISTS', KEYS[4]), redis.call('HVALS', KEYS[2]), last}
"#,
    )
}

/// `renew(epoch, heartbeat, nodes; epoch, lease_ms, node) -> 1 | 0 | -1`:
/// extends the node's lease; 0 when the heartbeat had lapsed (first start,
/// or the node was presumed dead and its users freed).
pub fn renew() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local old = redis.call('SET', KEYS[2], '1', 'PX', ARGV[2], 'GET')
redis.call('SADD', KEYS[3], ARGV[3])
if old then return 1 end
return 0
"#,
    )
}

/// `login(epoch, settle, heartbeat, users, node_users, stream, nodes;
/// epoch, key, node, name, token, frame, maxlen) -> 1 | 0 | -1 | -2 | -3`:
/// claims the name and appends its `JOIN`. 0: taken; -2: settling; -3: the
/// node holds no lease.
pub fn login() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -2 end
if redis.call('EXISTS', KEYS[3]) == 0 then return -3 end
if redis.call('HEXISTS', KEYS[4], ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3] .. ' ' .. ARGV[4])
redis.call('SADD', KEYS[5], ARGV[2])
redis.call('SADD', KEYS[7], ARGV[3])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[7], '0-*', 'f', ARGV[6], 't', ARGV[5])
return 1
"#,
    )
}

/// `leave(epoch, users, node_users, stream; epoch, key, node, frame, force,
/// maxlen) -> 1 | 0 | -1`: frees the name if this node holds it and appends
/// the `LEAVE`. With `force`, a name nobody holds is announced too: the
/// user left during an outage that cost Redis its data.
pub fn leave() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if owner then
  if string.sub(owner, 1, #ARGV[3] + 1) ~= ARGV[3] .. ' ' then return 0 end
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('SREM', KEYS[3], ARGV[2])
elseif ARGV[5] ~= '1' then
  return 0
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '0-*', 'f', ARGV[4])
return 1
"#,
    )
}

/// `register(epoch, users, node_users, nodes; epoch, node, key1, name1, …)
/// -> {conflicting names}`: after Redis lost its data, puts back the users
/// this node still serves. No frames: for everyone else they never left.
pub fn register() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('SADD', KEYS[4], ARGV[2])
local conflicts = {}
for i = 3, #ARGV, 2 do
  local owner = redis.call('HGET', KEYS[2], ARGV[i])
  if (not owner) or string.sub(owner, 1, #ARGV[2] + 1) == ARGV[2] .. ' ' then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[2] .. ' ' .. ARGV[i + 1])
    redis.call('SADD', KEYS[3], ARGV[i])
  else
    table.insert(conflicts, ARGV[i + 1])
  end
end
return conflicts
"#,
    )
}

/// `reap(epoch, nodes, users, stream; epoch, maxlen, only) -> freed`: frees
/// the users of every node whose heartbeat lapsed (or, with `only`, of that
/// node, for a clean departure) and appends one `LEAVE` each. Atomic, so
/// whichever node runs it first announces each user exactly once.
pub fn reap() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local freed = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local dead
  if ARGV[3] ~= '' then
    dead = node == ARGV[3]
  else
    dead = redis.call('EXISTS', 'chat:node:' .. node) == 0
  end
  if dead then
    local held = 'chat:node-users:' .. node
    for _, key in ipairs(redis.call('SMEMBERS', held)) do
      local owner = redis.call('HGET', KEYS[3], key)
      if owner and string.sub(owner, 1, #node + 1) == node .. ' ' then
        redis.call('HDEL', KEYS[3], key)
        local name = string.sub(owner, #node + 2)
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '0-*', 'f', 'LEAVE ' .. name)
        freed = freed + 1
      end
    end
    redis.call('DEL', held)
    redis.call('SREM', KEYS[2], node)
    if ARGV[3] ~= '' then redis.call('DEL', 'chat:node:' .. node) end
  end
end
return freed
"#,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_read_as_their_sequence_number() {
        assert_eq!(seq_of_id("0-42"), Some(42));
        assert_eq!(seq_of_id("0-0"), Some(0));
        assert_eq!(seq_of_id("1-42"), None);
        assert_eq!(seq_of_id("0-x"), None);
        assert_eq!(stream_seq(&Value::BulkString(b"0-7".to_vec())), Some(7));
        assert_eq!(stream_seq(&Value::SimpleString("0-8".into())), Some(8));
        assert_eq!(stream_seq(&Value::BulkString(vec![0xff])), None);
        assert_eq!(stream_seq(&Value::Int(7)), None);
        assert_eq!(stream_seq(&Value::Nil), None);
    }

    #[test]
    fn an_owner_names_its_user() {
        assert_eq!(held_name("node-a Bob"), Some("Bob"));
        assert_eq!(held_name("node-a"), None);
    }
}
