//! A room's state: its members, topic and recent history. The lobby is a
//! room too, without a name or a topic, that every logged-in user is in.
//!
//! A room's lock is what orders it: a frame is pushed to every member's
//! inbox while the lock is held, so all members see the room's frames in
//! one order.
//!
//! What history the lobby and all rooms keep together is bounded in bytes
//! (`--history-memory`): each room counts its messages in a shared
//! [`HistoryMemory`], and once that is over its limit the oldest messages
//! of the room that holds the most are forgotten first
//! ([`Rooms::trim_history`](super::Rooms::trim_history)).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use chat_protocol::{ServerFrame, Timestamp};

use super::inbox::{fan_out, Inbox};

/// A room behind the lock that orders it.
pub type SharedRoom = Arc<Mutex<Room>>;

/// Locks a room. Every change to a room is complete before anything can
/// panic, so a poisoned lock still guards a consistent room.
pub fn lock(room: &Mutex<Room>) -> MutexGuard<'_, Room> {
    room.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A user as a room knows it.
#[derive(Clone)]
pub struct Member {
    /// Spelled as the user logged in.
    pub name: Arc<str>,
    pub inbox: Arc<Inbox>,
}

/// One message kept for `HISTORY`.
struct Said {
    time: Timestamp,
    from: Arc<str>,
    text: Box<str>,
}

impl Said {
    /// What the message counts toward `--history-memory`: its text and
    /// its sender's name.
    fn bytes(&self) -> usize {
        HistoryMemory::bytes_of(&self.from, &self.text)
    }
}

/// The bytes of history kept by the lobby and every room together, and
/// how many they may take (`--history-memory`).
#[derive(Debug)]
pub struct HistoryMemory {
    limit: usize,
    used: AtomicUsize,
    /// One trim at a time: two would each forget what the other already
    /// made room for.
    pub(super) trimming: Mutex<()>,
}

impl HistoryMemory {
    pub fn new(limit: usize) -> Arc<HistoryMemory> {
        Arc::new(HistoryMemory {
            limit,
            used: AtomicUsize::new(0),
            trimming: Mutex::new(()),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What one message counts toward `--history-memory`: its text and
    /// its sender's name, in both modes (the cluster's scripts count a
    /// record of `<time> <from> <text>` the same way).
    pub fn bytes_of(from: &str, text: &str) -> usize {
        text.len() + from.len()
    }

    /// Bytes of history kept now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether history takes more than its limit.
    pub fn over(&self) -> bool {
        self.used() > self.limit
    }

    fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        crate::metrics::history_bytes(bytes as i64);
    }

    fn sub(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        crate::metrics::history_bytes(-(bytes as i64));
    }
}

pub struct Room {
    /// `#name` as spelled when the room was created; `None` for the lobby.
    name: Option<Arc<str>>,
    /// By lower-cased name, which is also `NAMES` order.
    members: BTreeMap<String, Member>,
    /// Who set the topic, and the topic.
    topic: Option<(Arc<str>, String)>,
    history: VecDeque<Said>,
    /// Messages kept (`--history`).
    keep: usize,
    /// Bytes of `history`, as counted in `memory`.
    history_bytes: usize,
    /// Where this room's history is counted with everyone's, if it is.
    memory: Option<Arc<HistoryMemory>>,
    /// The encoded `NAMES` frame, until the members change.
    names: Option<Bytes>,
    /// The room was emptied and forgotten; a late `JOIN` creates a new one.
    forgotten: bool,
}

impl Room {
    /// The lobby, keeping `keep` messages of history.
    pub fn lobby(keep: usize) -> Room {
        Room::with_name(None, keep)
    }

    /// A new, empty room.
    pub fn new(name: &str, keep: usize) -> Room {
        Room::with_name(Some(name.into()), keep)
    }

    fn with_name(name: Option<Arc<str>>, keep: usize) -> Room {
        Room {
            name,
            members: BTreeMap::new(),
            topic: None,
            history: VecDeque::new(),
            keep,
            history_bytes: 0,
            memory: None,
            names: None,
            forgotten: false,
        }
    }

    /// Counts this room's history in `memory`, with the lobby's and every
    /// other room's.
    pub fn counted_in(mut self, memory: &Arc<HistoryMemory>) -> Room {
        self.memory = Some(memory.clone());
        self
    }

    /// Bytes of history this room keeps.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    /// Forgets the oldest message kept; returns whether there was one.
    pub fn forget_oldest(&mut self) -> bool {
        let Some(said) = self.history.pop_front() else {
            return false;
        };
        self.uncount(said.bytes());
        if self.history.is_empty() {
            self.history = VecDeque::new();
        }
        true
    }

    fn uncount(&mut self, bytes: usize) {
        self.history_bytes -= bytes;
        if let Some(memory) = &self.memory {
            memory.sub(bytes);
        }
    }

    /// `#name` as created.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// `#name`, or `None` for the lobby.
    pub fn name_if_room(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn is_forgotten(&self) -> bool {
        self.forgotten
    }

    /// Marks an emptied room as gone from the directory.
    pub fn forget(&mut self) {
        self.forgotten = true;
        self.topic = None;
        self.history = VecDeque::new();
        self.uncount(self.history_bytes);
    }

    /// The members by lower-cased name.
    pub fn members(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.members.iter()
    }

    pub fn member(&self, key: &str) -> Option<&Member> {
        self.members.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.members.contains_key(key)
    }

    pub fn add(&mut self, key: String, member: Member) {
        self.members.insert(key, member);
        self.names = None;
    }

    /// Takes out the member under `key` if it is the one with `inbox`:
    /// a late leave must not remove someone who took the name since.
    pub fn remove_exact(&mut self, key: &str, inbox: &Arc<Inbox>) -> Option<Member> {
        match self.members.get(key) {
            Some(member) if Arc::ptr_eq(&member.inbox, inbox) => self.remove(key),
            _ => None,
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Member> {
        let gone = self.members.remove(key);
        if gone.is_some() {
            self.names = None;
        }
        gone
    }

    /// Pushes `frame` to every member; inboxes left over capacity go to
    /// `full`, for the publisher to wait on.
    pub fn publish(&self, frame: &Bytes, full: &mut Vec<Arc<Inbox>>) {
        fan_out(self.members.values().map(|m| &m.inbox), frame, full);
    }

    /// Keeps a message for `HISTORY`; returns the time it was said.
    pub fn record(&mut self, from: &Arc<str>, text: &str) -> Timestamp {
        let time = Timestamp::now();
        self.restore(time, from.clone(), text);
        time
    }

    /// Keeps a message said at `time` (one the store kept across a restart).
    pub fn restore(&mut self, time: Timestamp, from: Arc<str>, text: &str) {
        if self.keep == 0 {
            return;
        }
        if self.history.len() == self.keep {
            self.forget_oldest();
        }
        let said = Said {
            time,
            from,
            text: text.into(),
        };
        let bytes = said.bytes();
        self.history.push_back(said);
        self.history_bytes += bytes;
        if let Some(memory) = &self.memory {
            memory.add(bytes);
        }
    }

    /// The room's `NAMES` frame: `NAMES a b` for the lobby, `NAMES #r a b`
    /// for a room.
    pub fn names(&mut self) -> Bytes {
        let (name, members) = (&self.name, &self.members);
        self.names
            .get_or_insert_with(|| {
                let names = members.values().map(|m| &*m.name);
                match name {
                    None => ServerFrame::names_bytes(names),
                    Some(room) => ServerFrame::room_names_bytes(room, names),
                }
            })
            .clone()
    }

    /// The `TOPIC` frame that answers a question about it.
    pub fn topic(&self) -> ServerFrame {
        let room = self.name().to_owned();
        match &self.topic {
            Some((setter, text)) => ServerFrame::Topic {
                room,
                setter: setter.to_string(),
                text: text.clone(),
            },
            None => ServerFrame::NoTopic(room),
        }
    }

    pub fn has_topic(&self) -> bool {
        self.topic.is_some()
    }

    pub fn set_topic(&mut self, setter: &Arc<str>, text: String) {
        self.topic = Some((setter.clone(), text));
    }

    /// Writes a `HISTORY` reply of the last `count` messages (at most what
    /// is kept) to `out`, all at once so nothing comes between its frames.
    pub fn write_history(&self, count: u64, out: &mut BytesMut) {
        let room = self.name.as_ref().map(|r| r.to_string());
        let count = (count.min(self.history.len() as u64)) as usize;
        ServerFrame::History {
            room: room.clone(),
            count: count as u64,
        }
        .write_to(out);
        for said in self.history.iter().skip(self.history.len() - count) {
            ServerFrame::Hist {
                room: room.clone(),
                time: said.time,
                from: said.from.to_string(),
                text: said.text.to_string(),
            }
            .write_to(out);
        }
    }
}

impl Drop for Room {
    /// A room that goes away (the lobby at shutdown, a test's) gives its
    /// history's bytes back to the count.
    fn drop(&mut self) {
        self.uncount(self.history_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            inbox: Inbox::new(16),
        }
    }

    fn text(out: &BytesMut) -> String {
        String::from_utf8(out.to_vec()).expect("UTF-8")
    }

    #[test]
    fn names_are_sorted_by_lower_cased_name_and_kept_as_spelled() {
        let mut room = Room::new("#Rust", 10);
        room.add("bob".into(), member("Bob"));
        room.add("alice".into(), member("alice"));
        assert_eq!(&room.names()[..], b"NAMES #Rust alice Bob\n");
        room.remove("bob");
        assert_eq!(&room.names()[..], b"NAMES #Rust alice\n");
        let mut lobby = Room::lobby(10);
        lobby.add("zed".into(), member("Zed"));
        assert_eq!(&lobby.names()[..], b"NAMES Zed\n");
    }

    #[test]
    fn history_keeps_the_last_messages_oldest_first() {
        let mut room = Room::new("#r", 2);
        let from: Arc<str> = "a".into();
        for text in ["one", "two", "three"] {
            room.record(&from, text);
        }
        let mut out = BytesMut::new();
        room.write_history(50, &mut out);
        let lines: Vec<String> = text(&out).lines().map(str::to_owned).collect();
        assert_eq!(lines[0], "HISTORY #r 2");
        assert!(lines[1].starts_with("HIST #r ") && lines[1].ends_with(" a two"));
        assert!(lines[2].ends_with(" a three"));
        let mut out = BytesMut::new();
        room.write_history(1, &mut out);
        assert_eq!(text(&out).lines().count(), 2);
    }

    #[test]
    fn history_bytes_are_counted_in_the_shared_memory_until_forgotten() {
        let memory = HistoryMemory::new(1000);
        let mut room = Room::new("#r", 2).counted_in(&memory);
        let mut lobby = Room::lobby(10).counted_in(&memory);
        let from: Arc<str> = "ann".into();
        room.record(&from, "hello");
        room.record(&from, "hi");
        lobby.record(&from, "hey");
        assert_eq!(memory.used(), 8 + 5 + 6);
        room.record(&from, "x");
        assert_eq!(memory.used(), 5 + 4 + 6, "--history pushed out the oldest");
        room.forget();
        assert_eq!(memory.used(), 6);
        drop(lobby);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn no_history_is_kept_at_zero() {
        let mut lobby = Room::lobby(0);
        lobby.record(&"a".into(), "hi");
        let mut out = BytesMut::new();
        lobby.write_history(50, &mut out);
        assert_eq!(text(&out), "HISTORY 0\n");
    }

    #[test]
    fn a_topic_is_answered_with_its_setter() {
        let mut room = Room::new("#r", 0);
        assert_eq!(room.topic().to_string(), "TOPIC #r");
        room.set_topic(&"bob".into(), "async book club".into());
        assert_eq!(room.topic().to_string(), "TOPIC #r bob async book club");
    }

    #[test]
    fn publishing_reaches_every_member() {
        let mut room = Room::new("#r", 0);
        let (a, b) = (member("a"), member("b"));
        room.add("a".into(), a.clone());
        room.add("b".into(), b.clone());
        let mut full = Vec::new();
        room.publish(&Bytes::from_static(b"SAY #r a hi\n"), &mut full);
        assert!(full.is_empty());
        for inbox in [&a.inbox, &b.inbox] {
            let mut out = crate::hub::Outgoing::default();
            inbox.take(&mut out, usize::MAX);
            assert_eq!(text(&out.bytes), "SAY #r a hi\n");
        }
    }
}
