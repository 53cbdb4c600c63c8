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
//! - `chat:history`: the lobby's last `--history` messages, a list of
//!   `<time> <from> <text>` records, oldest first.
//! - `chat:history-bytes`: what the lobby's and every room's history lists
//!   hold together, counted like a single process counts it (each
//!   message's sender and text, `--history-memory`).
//! - `chat:history-sizes`: sorted set of the history lists that hold
//!   anything, scored by what each holds, so that the one that holds the
//!   most is found at once when the total is over budget.
//! - `chat:rooms`: hash from room key (lower-cased) to the room as spelled
//!   when it was created; a room exists while it has members.
//! - `chat:room:<key>:members`: hash from lower-cased name to name.
//! - `chat:room:<key>:topic`: `<setter> <text>`.
//! - `chat:room:<key>:history`: like `chat:history`, for the room.
//! - `chat:user-rooms:<name key>`: set of the room keys a user is in, so
//!   that a leave or a reap takes the user out of each.
//! - `chat:ip-rooms`: hash from an address (`203.0.113.5`, or an IPv6
//!   `…/64`) to the memberships its users hold together, cluster-wide
//!   (`--max-rooms-per-ip`); an address with none has no field.
//! - `chat:user-ips`: hash from a user's name key to the address its
//!   memberships count under, for users whose address counts, so that a
//!   part, a leave or a reap gives them back.
//! - `chat:reconciling`, `chat:buried`: for a few leases after Redis lost
//!   its data, every name announced gone, so that the survivors' sweep of
//!   users nobody registered again announces each of them once.

use redis::{Script, Value};

pub const EPOCH: &str = "chat:epoch";
pub const SETTLE: &str = "chat:settle";
pub const STREAM: &str = "chat:stream";
pub const USERS: &str = "chat:users";
pub const NODES: &str = "chat:nodes";
pub const LOBBY_HISTORY: &str = "chat:history";
pub const ROOMS: &str = "chat:rooms";
pub const RECONCILING: &str = "chat:reconciling";
pub const BURIED: &str = "chat:buried";

/// The history list of a room, by room key.
pub fn room_history_key(room: &str) -> String {
    format!("chat:room:{room}:history")
}

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
    pub say: Script,
    pub join: Script,
    pub part: Script,
    pub tell: Script,
    pub topic: Script,
    pub who: Script,
    pub rooms: Script,
    pub history: Script,
    pub enroll: Script,
    pub bury: Script,
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
            say: say(),
            join: join(),
            part: part(),
            tell: tell(),
            topic: topic(),
            who: who(),
            rooms: rooms(),
            history: history(),
            enroll: enroll(),
            bury: bury(),
        }
    }

    pub fn all(&self) -> [&Script; 16] {
        [
            &self.hello,
            &self.renew,
            &self.login,
            &self.leave,
            &self.register,
            &self.reap,
            &self.say,
            &self.join,
            &self.part,
            &self.tell,
            &self.topic,
            &self.who,
            &self.rooms,
            &self.history,
            &self.enroll,
            &self.bury,
        ]
    }
}

/// `hello(epoch, settle, reconciling; new_epoch, knew_one, lease_ms) ->
/// epoch`: the current epoch, created if missing. A node that knew an older
/// epoch also starts the settling period, and the window in which names
/// announced gone are kept (`chat:buried`) for the survivors' sweep.
pub fn hello() -> Script {
    Script::new(
        &r#"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  if ARGV[2] == '1' then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
    redis.call('SET', KEYS[3], '1', 'PX', tonumber(ARGV[3]) * RECONCILE_LEASES)
  end
end
return epoch
"#
        .replace("RECONCILE_LEASES", &RECONCILE_LEASES.to_string()),
    )
}

/// Leases after a new epoch during which names announced gone are kept
/// for the sweep of unregistered users (`bury`), which runs after one and
/// a half.
pub const RECONCILE_LEASES: u32 = 4;

/// Lua shared by the scripts that append, trim or delete history: the
/// bytes of every history list, counted together in `chat:history-bytes`
/// and each in `chat:history-sizes`, and the trim that keeps the total
/// within `--history-memory`.
///
/// `said(record)` is a single process's counting rule
/// ([`HistoryMemory::bytes_of`](crate::hub::room::HistoryMemory::bytes_of))
/// read off a `<time> <from> <text>` record: the sender and the text. The
/// same function counts a record in and out, so the totals cannot drift.
const HISTORY: &str = r#"
local function said(record)
  local first = string.find(record, ' ', 1, true)
  if not first then return 0 end
  return math.max(#record - first - 1, 0)
end
local function counted(list, delta)
  if delta == 0 then return end
  redis.call('INCRBY', 'chat:history-bytes', delta)
  local size = tonumber(redis.call('ZINCRBY', 'chat:history-sizes', delta, list))
  if size <= 0 then redis.call('ZREM', 'chat:history-sizes', list) end
end
local function forget_history(list)
  local size = redis.call('ZSCORE', 'chat:history-sizes', list)
  if size then
    redis.call('DECRBY', 'chat:history-bytes', size)
    redis.call('ZREM', 'chat:history-sizes', list)
  end
  redis.call('DEL', list)
end
local function trim_history(limit)
  local total = tonumber(redis.call('GET', 'chat:history-bytes') or '0')
  if total <= limit then return 0 end
  local target = limit - math.floor(limit / TRIM_SLACK)
  local forgotten = 0
  while total > target do
    local top = redis.call('ZREVRANGE', 'chat:history-sizes', 0, 1, 'WITHSCORES')
    if #top == 0 then break end
    local list, size, next = top[1], tonumber(top[2]), tonumber(top[4] or '0')
    repeat
      local oldest = redis.call('LPOP', list)
      if not oldest then
        redis.call('DECRBY', 'chat:history-bytes', size)
        redis.call('ZREM', 'chat:history-sizes', list)
        total = total - size
        break
      end
      local bytes = said(oldest)
      counted(list, -bytes)
      total, size, forgotten = total - bytes, size - bytes, forgotten + 1
    until total <= target or size < next
  end
  return forgotten
end
"#;

/// Lua shared by the scripts that take users out of rooms: gives an
/// address's memberships back (`--max-rooms-per-ip`).
const ADDRESSES: &str = r#"
local function give_back(key, n)
  if n <= 0 then return end
  local ip = redis.call('HGET', 'chat:user-ips', key)
  if ip and redis.call('HINCRBY', 'chat:ip-rooms', ip, -n) <= 0 then
    redis.call('HDEL', 'chat:ip-rooms', ip)
  end
end
local function forget_room(room)
  local base = 'chat:room:' .. room
  redis.call('DEL', base .. ':members', base .. ':topic')
  forget_history(base .. ':history')
  redis.call('HDEL', 'chat:rooms', room)
end
"#;

/// [`HISTORY`]'s and [`ADDRESSES`]' functions, then `body`.
fn with_rooms(body: &str) -> Script {
    let history = HISTORY.replace("TRIM_SLACK", &crate::hub::rooms::TRIM_SLACK.to_string());
    Script::new(&format!("{history}{ADDRESSES}{body}"))
}

/// Lua shared by the scripts that end a user: takes the user (by name key)
/// out of every room, forgetting each room it empties and giving its
/// address's memberships back, and notes the name as announced gone while
/// the cluster reconciles.
const GONE: &str = r#"
local function part_all(key)
  local mine = 'chat:user-rooms:' .. key
  local left = 0
  for _, room in ipairs(redis.call('SMEMBERS', mine)) do
    local members = 'chat:room:' .. room .. ':members'
    left = left + redis.call('HDEL', members, key)
    if redis.call('HLEN', members) == 0 then forget_room(room) end
  end
  give_back(key, left)
  redis.call('HDEL', 'chat:user-ips', key)
  redis.call('DEL', mine)
  if redis.call('EXISTS', 'chat:reconciling') == 1 then
    redis.call('SADD', 'chat:buried', key)
  end
end
"#;

/// A script that starts with [`GONE`]'s functions.
fn with_gone(body: &str) -> Script {
    with_rooms(&format!("{GONE}{body}"))
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
/// The user leaves every room with the name, silently: the `LEAVE` says it.
pub fn leave() -> Script {
    with_gone(
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
part_all(ARGV[2])
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
/// A dead node's users leave their rooms too, announced by the `LEAVE` alone.
pub fn reap() -> Script {
    with_gone(
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
        part_all(key)
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

/// `say(epoch, stream, history; epoch, frame, record, maxlen, keep, room,
/// memory) -> id | -1`: appends a `MSG` or `SAY` and keeps its record for
/// `HISTORY`, trimmed to `keep`; a room's record only while the room
/// exists. Both in one step, so history has the stream's order. If all
/// history is then over `memory` bytes (`--history-memory`, the appending
/// node's), the oldest records of the list that holds the most are
/// forgotten, then of the next, down to 1/16 below it, as in a single
/// process.
pub fn say() -> Script {
    with_rooms(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '0-*', 'f', ARGV[2])
local keep = tonumber(ARGV[5])
if keep > 0 and (ARGV[6] == '' or redis.call('HEXISTS', 'chat:rooms', ARGV[6]) == 1) then
  local delta = said(ARGV[3])
  local over = redis.call('RPUSH', KEYS[3], ARGV[3]) - keep
  if over > 0 then
    for _, old in ipairs(redis.call('LRANGE', KEYS[3], 0, over - 1)) do
      delta = delta - said(old)
    end
    redis.call('LTRIM', KEYS[3], over, -1)
  end
  counted(KEYS[3], delta)
  trim_history(tonumber(ARGV[7]))
end
return id
"#,
    )
}

/// `join(epoch, users, rooms, stream; epoch, room, spelled, key, name,
/// node, max_rooms, token, maxlen, address, max_rooms_per_ip) -> 1 | 0 |
/// -1 | -3 | -4 | -5`: puts the user in the room, creating it, and appends
/// `JOIN <room> <name>` carrying what the joiner is owed at that point: the
/// members (`n`, sorted by key) and the topic (`p`). An `address` (empty
/// when it does not count) is checked against `max_rooms_per_ip` (the
/// joining node's) and counted in the same step, so two nodes cannot both
/// admit its last room. 0: already in it; -3: this node does not hold the
/// user; -4: `--max-rooms` reached; -5: `--max-rooms-per-ip` reached.
pub fn join() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local owner = redis.call('HGET', KEYS[2], ARGV[4])
if (not owner) or string.sub(owner, 1, #ARGV[6] + 1) ~= ARGV[6] .. ' ' then return -3 end
local base = 'chat:room:' .. ARGV[2]
if redis.call('HEXISTS', base .. ':members', ARGV[4]) == 1 then return 0 end
local ip = ARGV[10]
if ip ~= '' and tonumber(redis.call('HGET', 'chat:ip-rooms', ip) or '0') >= tonumber(ARGV[11]) then
  return -5
end
local spelled = redis.call('HGET', KEYS[3], ARGV[2])
if not spelled then
  if redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[7]) then return -4 end
  spelled = ARGV[3]
  redis.call('HSET', KEYS[3], ARGV[2], spelled)
end
redis.call('HSET', base .. ':members', ARGV[4], ARGV[5])
redis.call('SADD', 'chat:user-rooms:' .. ARGV[4], ARGV[2])
if ip ~= '' then
  redis.call('HINCRBY', 'chat:ip-rooms', ip, 1)
  redis.call('HSET', 'chat:user-ips', ARGV[4], ip)
end
local all = redis.call('HGETALL', base .. ':members')
local keys, names, by_key = {}, {}, {}
for i = 1, #all, 2 do
  table.insert(keys, all[i])
  by_key[all[i]] = all[i + 1]
end
table.sort(keys)
for _, key in ipairs(keys) do table.insert(names, by_key[key]) end
local fields = {'f', 'JOIN ' .. spelled .. ' ' .. ARGV[5], 't', ARGV[8], 'n', table.concat(names, ' ')}
local topic = redis.call('GET', base .. ':topic')
if topic then
  table.insert(fields, 'p')
  table.insert(fields, topic)
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '0-*', unpack(fields))
return 1
"#,
    )
}

/// `part(epoch, rooms, stream; epoch, room, key, frame, maxlen) -> id | -1`:
/// takes the user out of the room, giving its address's membership back
/// and forgetting the room (its history counted out) if emptied, and
/// appends the room's `LEAVE`.
pub fn part() -> Script {
    with_rooms(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local members = 'chat:room:' .. ARGV[2] .. ':members'
local mine = 'chat:user-rooms:' .. ARGV[3]
give_back(ARGV[3], redis.call('HDEL', members, ARGV[3]))
redis.call('SREM', mine, ARGV[2])
if redis.call('EXISTS', mine) == 0 then redis.call('HDEL', 'chat:user-ips', ARGV[3]) end
if redis.call('HLEN', members) == 0 then forget_room(ARGV[2]) end
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '0-*', 'f', ARGV[4])
"#,
    )
}

/// `tell(epoch, users, stream; epoch, from, to_key, text, maxlen) -> id |
/// 0 | -1`: appends `TELL <from> <to> <text>`, the receiver spelled as it
/// logged in; 0 when nobody holds that name anywhere.
pub fn tell() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local owner = redis.call('HGET', KEYS[2], ARGV[3])
if not owner then return 0 end
local to = string.sub(owner, string.find(owner, ' ', 1, true) + 1)
local frame = 'TELL ' .. ARGV[2] .. ' ' .. to .. ' ' .. ARGV[4]
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '0-*', 'f', frame)
"#,
    )
}

/// `topic(epoch, rooms, stream; epoch, room, record, frame, maxlen) -> id |
/// -1`: sets the topic (`<setter> <text>`) and appends its `TOPIC`.
pub fn topic() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  redis.call('SET', 'chat:room:' .. ARGV[2] .. ':topic', ARGV[3])
end
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '0-*', 'f', ARGV[4])
"#,
    )
}

/// Lua for the scripts that read: `last()` is the id of the stream's last
/// entry, so that the node can place the answer right after it.
const LAST: &str = r#"
local function last()
  local tail = redis.call('XREVRANGE', 'chat:stream', '+', '-', 'COUNT', 1)
  if tail[1] then return tail[1][1] end
  return '0-0'
end
"#;

/// A script that starts with [`LAST`]'s function.
fn with_last(body: &str) -> Script {
    Script::new(&format!("{LAST}{body}"))
}

/// `who(epoch, rooms; epoch, room) -> {last, spelled, key, name, …} | -1`:
/// the room as spelled (empty if it does not exist) and its members.
pub fn who() -> Script {
    with_last(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local out = {last(), redis.call('HGET', KEYS[2], ARGV[2]) or ''}
for _, v in ipairs(redis.call('HGETALL', 'chat:room:' .. ARGV[2] .. ':members')) do
  table.insert(out, v)
end
return out
"#,
    )
}

/// `rooms(epoch, rooms; epoch) -> {last, key, spelled, count, …} | -1`.
pub fn rooms() -> Script {
    with_last(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local out = {last()}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local count = redis.call('HLEN', 'chat:room:' .. all[i] .. ':members')
  if count > 0 then
    table.insert(out, all[i])
    table.insert(out, all[i + 1])
    table.insert(out, count)
  end
end
return out
"#,
    )
}

/// `history(epoch, list; epoch, count) -> {last, record, …} | -1`: the
/// last `count` records, oldest first.
pub fn history() -> Script {
    with_last(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local out = {last()}
for _, record in ipairs(redis.call('LRANGE', KEYS[2], -tonumber(ARGV[2]), -1)) do
  table.insert(out, record)
end
return out
"#,
    )
}

/// `enroll(epoch, rooms; epoch, room, spelled, key, name, address, …) ->
/// 1 | -1`: after Redis lost its data, puts this node's users back in their
/// rooms, each membership counted again under its address (empty when it
/// does not count), beyond `--max-rooms-per-ip` if need be: the users are
/// in those rooms already. No frames, as for names; topics and history
/// were lost with the data. A membership put back twice counts once.
pub fn enroll() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
for i = 2, #ARGV, 5 do
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
  local added = redis.call('HSET', 'chat:room:' .. ARGV[i] .. ':members', ARGV[i + 2], ARGV[i + 3])
  redis.call('SADD', 'chat:user-rooms:' .. ARGV[i + 2], ARGV[i])
  local ip = ARGV[i + 4]
  if added == 1 and ip ~= '' then
    redis.call('HINCRBY', 'chat:ip-rooms', ip, 1)
    redis.call('HSET', 'chat:user-ips', ARGV[i + 2], ip)
  end
end
return 1
"#,
    )
}

/// `bury(epoch, users, stream, buried; epoch, maxlen, key, name, …) ->
/// announced | -1`: after Redis lost its data and the survivors registered
/// their users again, announces the `LEAVE` of each listed user that nobody
/// registered (their node died meanwhile) and that was not announced gone
/// already, by this sweep on another node or by a leave.
pub fn bury() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local announced = 0
for i = 3, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 and redis.call('SISMEMBER', KEYS[4], ARGV[i]) == 0 then
    redis.call('SADD', KEYS[4], ARGV[i])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '0-*', 'f', 'LEAVE ' .. ARGV[i + 1])
    announced = announced + 1
  end
end
return announced
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
