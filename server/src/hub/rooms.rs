//! The rooms of version 2: the directory that creates and forgets them,
//! and the requests that change them.
//!
//! In a single process, sessions carry these requests out themselves,
//! under two kinds of lock taken in one order: the directory, then a room.
//! `SAY` takes only its room's lock, so a message to a room of 10 costs the
//! same whether 10 or 10 000 users are logged in. Each request returns the
//! inboxes it left over capacity, for the session to wait on before its
//! client's next frame.
//!
//! The directory also counts the memberships of each address's users
//! (`--max-rooms-per-ip`): a few addresses must not be able to fill the
//! server's rooms for everyone. Every way into a room and out of one goes
//! through here, so the count cannot drift. In cluster mode rooms are
//! joined through the bus and the count is kept in Redis by the scripts
//! that join and part (`cluster/scripts.rs`); which address a user counts
//! under is decided here for both modes ([`Limits::rooms_address`]).

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chat_protocol::{room_key, ErrorCode, ServerFrame};

use super::inbox::Inbox;
use super::room::{lock, HistoryMemory, Member, Room, SharedRoom};
use super::{Receipt, Update, User};
use crate::limits::Key;

/// The rooms a user is in, by room key.
pub type Joined = BTreeMap<String, SharedRoom>;

/// Inboxes a request left over capacity.
pub type Full = Vec<Arc<Inbox>>;

/// Limits on rooms (`--max-rooms`, `--max-rooms-per-user`,
/// `--max-rooms-per-ip`, `--history`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rooms: usize,
    pub max_rooms_per_user: usize,
    /// Memberships the users of one address may hold together.
    pub max_rooms_per_ip: usize,
    /// Whether loopback peers count toward `max_rooms_per_ip`.
    pub limits_on_loopback: bool,
    pub history: usize,
    /// Bytes of history the lobby and every room may keep together.
    pub history_memory: usize,
}

impl Limits {
    /// What the memberships of a user connected from `peer` count under
    /// for `--max-rooms-per-ip`, if they count at all: loopback is spared
    /// unless `--limits-on-loopback`. One rule for both modes.
    pub fn rooms_address(&self, peer: IpAddr) -> Option<Key> {
        Key::of(peer, self.limits_on_loopback)
    }
}

/// A trim of history over `--history-memory` forgets down to this
/// fraction below it (1/16), so that one pass over the rooms makes room
/// for many messages, not one.
pub(crate) const TRIM_SLACK: usize = 16;

/// Every room that exists, by room key.
pub struct Rooms {
    directory: Mutex<Directory>,
    limits: Limits,
    /// The history of the lobby and every room, counted together.
    memory: Arc<HistoryMemory>,
}

/// What the directory's lock guards.
#[derive(Default)]
struct Directory {
    rooms: HashMap<String, SharedRoom>,
    /// Rooms the users of each address are in, together; an address with
    /// none has no entry.
    memberships: HashMap<Key, usize>,
    /// The encoded `ROOMS` answer, until a room is created or forgotten or
    /// its number of members changes: a listing of 10 000 rooms is sorted
    /// once per change, not once per `ROOMS`.
    listing: Option<Bytes>,
}

impl Directory {
    /// One membership fewer for `address`.
    fn left(&mut self, address: Option<Key>) {
        let Some(address) = address else { return };
        if let Some(count) = self.memberships.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                self.memberships.remove(&address);
            }
        }
    }

    /// A room was created or forgotten, or its members changed.
    fn changed(&mut self) {
        self.listing = None;
    }

    fn forget_if_empty(&mut self, key: &str, room: &mut Room) {
        if room.is_empty() && !room.is_forgotten() {
            room.forget();
            self.rooms.remove(key);
        }
    }
}

impl Rooms {
    pub fn new(limits: Limits) -> Rooms {
        Rooms {
            directory: Mutex::new(Directory::default()),
            limits,
            memory: HistoryMemory::new(limits.history_memory),
        }
    }

    /// Where the lobby's history is counted with the rooms'.
    pub fn memory(&self) -> &Arc<HistoryMemory> {
        &self.memory
    }

    /// Once history takes more than `--history-memory`, forgets the oldest
    /// messages of the room that holds the most (the lobby included), then
    /// of the next, until it is back within it. Called after a message is
    /// kept, with no room's lock held.
    pub fn trim_history(&self, lobby: &SharedRoom) {
        let memory = &self.memory;
        if !memory.over() {
            return;
        }
        let _one = memory
            .trimming
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !memory.over() {
            return;
        }
        let target = memory.limit() - memory.limit() / TRIM_SLACK;
        let mut rooms: Vec<SharedRoom> = self.directory().rooms.values().cloned().collect();
        rooms.push(lobby.clone());
        let mut biggest: BinaryHeap<(usize, usize)> = rooms
            .iter()
            .enumerate()
            .map(|(at, room)| (lock(room).history_bytes(), at))
            .filter(|(bytes, _)| *bytes > 0)
            .collect();
        let mut forgotten = 0;
        while memory.used() > target {
            let Some((_, at)) = biggest.pop() else {
                break;
            };
            let next = biggest.peek().map_or(0, |(bytes, _)| *bytes);
            let mut room = lock(&rooms[at]);
            while memory.used() > target && room.history_bytes() >= next && room.forget_oldest() {
                forgotten += 1;
            }
            if room.history_bytes() > 0 {
                biggest.push((room.history_bytes(), at));
            }
        }
        crate::metrics::history_forgotten(forgotten);
    }

    /// What the memberships of a connection's user count under, if they
    /// count at all (loopback is spared unless `--limits-on-loopback`).
    fn address(&self, inbox: &Inbox) -> Option<Key> {
        self.limits.rooms_address(inbox.peer())
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn directory(&self) -> MutexGuard<'_, Directory> {
        // Changes to the map are single calls: a poisoned lock still guards
        // a consistent map.
        self.directory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `JOIN <room>` of a user who may join it (see [`User::may_join`]):
    /// the joiner gets `NAMES` (and `TOPIC`) through its inbox, after
    /// everything the room said before; the others get `JOIN <room> <name>`.
    /// Refused when the server has `--max-rooms` rooms and this is a new
    /// one, or the users of the joiner's address are in
    /// `--max-rooms-per-ip` rooms already.
    pub fn join(&self, user: &mut User, room: &str) -> Result<Full, ErrorCode> {
        let key = room_key(room);
        let address = self.address(user.inbox());
        let mut directory = self.directory();
        if let Some(address) = address {
            let held = directory.memberships.get(&address).copied().unwrap_or(0);
            if held >= self.limits.max_rooms_per_ip {
                return Err(ErrorCode::TooManyRooms);
            }
        }
        let shared = match directory.rooms.get(&key) {
            Some(shared) => shared.clone(),
            None => {
                if directory.rooms.len() >= self.limits.max_rooms {
                    return Err(ErrorCode::TooManyRooms);
                }
                let room = Room::new(room, self.limits.history).counted_in(&self.memory);
                let shared = Arc::new(Mutex::new(room));
                directory.rooms.insert(key.clone(), shared.clone());
                shared
            }
        };
        if let Some(address) = address {
            *directory.memberships.entry(address).or_insert(0) += 1;
        }
        directory.changed();
        let mut full = Vec::new();
        {
            let mut room = lock(&shared);
            let join = ServerFrame::RoomJoin {
                room: room.name().to_owned(),
                name: user.name().to_owned(),
            };
            room.publish(&join.to_bytes(), &mut full);
            room.add(user.key(), user.member.clone());
            user.inbox().push_reply(room.names());
            if room.has_topic() {
                user.inbox().push_reply(room.topic().to_bytes());
            }
        }
        drop(directory);
        user.apply(Update::Joined(key, shared));
        Ok(full)
    }

    /// `PART <room> [<text>]` of a room the user is in: every member, the
    /// leaver included, gets `LEAVE <room> <name> [<text>]`; an emptied
    /// room is forgotten.
    pub fn part(&self, user: &mut User, shared: &SharedRoom, text: Option<String>) -> Full {
        let mut full = Vec::new();
        let mut directory = self.directory();
        let mut room = lock(shared);
        let key = room_key(room.name());
        let leave = ServerFrame::RoomLeave {
            room: room.name().to_owned(),
            name: user.name().to_owned(),
            text,
        };
        room.publish(&leave.to_bytes(), &mut full);
        if room.remove(&user.key()).is_some() {
            directory.left(self.address(user.inbox()));
            directory.changed();
        }
        directory.forget_if_empty(&key, &mut room);
        user.apply(Update::Parted(key, Receipt::default()));
        full
    }

    /// Takes a user who leaves the server out of every room, silently: the
    /// lobby's `LEAVE` tells everyone. Only the member with `inbox` goes: a
    /// connection that took the name back may be in a room already.
    pub fn leave_all(&self, key: &str, inbox: &Arc<Inbox>, joined: &mut Joined) {
        if joined.is_empty() {
            return;
        }
        let address = self.address(inbox);
        let mut directory = self.directory();
        for (room_key, shared) in std::mem::take(joined) {
            let mut room = lock(&shared);
            if room.remove_exact(key, inbox).is_some() {
                directory.left(address);
                directory.changed();
            }
            directory.forget_if_empty(&room_key, &mut room);
        }
    }

    /// `WHO <room>`: its `NAMES`, empty for a room that does not exist.
    pub fn who(&self, room: &str) -> Bytes {
        let shared = self.directory().rooms.get(&room_key(room)).cloned();
        match shared {
            Some(shared) => lock(&shared).names(),
            None => ServerFrame::room_names_bytes(room, std::iter::empty()),
        }
    }

    /// `ROOMS`: every room with its number of members, sorted like names;
    /// built once and kept until the rooms change.
    pub fn list(&self) -> Bytes {
        let mut directory = self.directory();
        if let Some(listing) = &directory.listing {
            return listing.clone();
        }
        let mut listed: Vec<(&String, String, u64)> = directory
            .rooms
            .iter()
            .map(|(key, shared)| {
                let room = lock(shared);
                (key, room.name().to_owned(), room.len() as u64)
            })
            .filter(|(_, _, count)| *count > 0)
            .collect();
        listed.sort_unstable();
        let listing =
            ServerFrame::Rooms(listed.into_iter().map(|(_, name, n)| (name, n)).collect())
                .to_bytes();
        directory.listing = Some(listing.clone());
        listing
    }
}

/// In cluster mode the directory holds the rooms as this node sees them:
/// its own members only, added and taken out by the cluster's hub task as
/// the rooms' `JOIN`s and `LEAVE`s come back from the stream, so that a
/// room's frames reach this node's members in the stream's order. The
/// cluster-wide state (every member, the limits) lives in Redis.
impl Rooms {
    /// The room of this key, if a user of this node is in it.
    pub fn here(&self, key: &str) -> Option<SharedRoom> {
        self.directory().rooms.get(key).cloned()
    }

    /// Adds a member whose `JOIN` came back, creating the room here.
    pub fn admit(&self, spelled: &str, user_key: &str, member: Member) -> SharedRoom {
        let mut directory = self.directory();
        let shared = directory
            .rooms
            .entry(room_key(spelled))
            .or_insert_with(|| Arc::new(Mutex::new(Room::new(spelled, 0))))
            .clone();
        lock(&shared).add(user_key.to_owned(), member);
        directory.changed();
        shared
    }

    /// Takes out a member whose room `LEAVE` came back.
    pub fn release(&self, key: &str, user_key: &str) {
        let mut directory = self.directory();
        if let Some(shared) = directory.rooms.get(key).cloned() {
            let mut room = lock(&shared);
            room.remove(user_key);
            directory.forget_if_empty(key, &mut room);
            directory.changed();
        }
    }

    /// Every membership here.
    pub fn memberships(&self) -> Vec<Membership> {
        let rooms: Vec<(String, SharedRoom)> = self
            .directory()
            .rooms
            .iter()
            .map(|(key, room)| (key.clone(), room.clone()))
            .collect();
        let mut out = Vec::new();
        for (key, shared) in rooms {
            let room = lock(&shared);
            for (user_key, member) in room.members() {
                out.push(Membership {
                    room_key: key.clone(),
                    room: room.name().to_owned(),
                    user_key: user_key.clone(),
                    user: member.name.to_string(),
                    address: self.address(&member.inbox),
                });
            }
        }
        out
    }
}

/// A user of this node in a room, as Redis is told it again after it lost
/// its data.
pub struct Membership {
    pub room_key: String,
    /// The room as spelled.
    pub room: String,
    pub user_key: String,
    /// The user as logged in.
    pub user: String,
    /// What the membership counts under for `--max-rooms-per-ip`.
    pub address: Option<Key>,
}
