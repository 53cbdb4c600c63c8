//! Where the user is: the lobby, the rooms they have joined, which of them
//! is current, and who is in each.
//!
//! The server tells the client everything it needs to know here, and the
//! client only listens: a room is joined when the server's `NAMES <room>`
//! lists the user (the answer to its `JOIN`), and parted when the server
//! says `LEAVE <room> <user>`. Nothing is assumed from what was sent, so a
//! refused `JOIN` leaves no room behind. The current room is the client's
//! own business: plain lines go there, and the prompt shows it.
//!
//! The editor (for the prompt, `/go` and completion) and the conversation
//! (which sees the frames) share one [`Rooms`] behind a lock.

use std::collections::BTreeMap;

use chat_protocol::{is_valid_room, name_key, room_key, ServerFrame};

/// The user's rooms and the people in them, as the server last said.
#[derive(Debug, Default)]
pub struct Rooms {
    /// The user's name as the server welcomed it.
    me: String,
    /// Everyone logged in (the lobby's members), by name key.
    lobby: Members,
    /// The rooms the user is in, in the order they were joined.
    joined: Vec<Room>,
    /// The room plain lines go to, by room key; `None` is the lobby.
    current: Option<String>,
    /// The places that were current before, each once, most recent last,
    /// to go back to when the current room is parted.
    earlier: Vec<Option<String>>,
    /// The rooms of the last `ROOMS` answer, as spelled there.
    listed: Vec<String>,
}

/// Names by their key, each spelled as the user logged in.
type Members = BTreeMap<String, String>;

#[derive(Debug)]
struct Room {
    /// As the server spells it: as it was spelled when it was created.
    name: String,
    key: String,
    members: Members,
}

/// What a frame changed that the conversation acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The user is now in this room (as the server spells it), which is
    /// now the current room.
    Joined(String),
}

impl Rooms {
    /// Takes note of what `frame` says about names and rooms.
    pub fn observe(&mut self, frame: &ServerFrame) -> Option<Change> {
        match frame {
            ServerFrame::Welcome(name) => self.me = name.clone(),
            ServerFrame::Names(names) => self.lobby = members(names),
            ServerFrame::Join(name) => add(&mut self.lobby, name),
            ServerFrame::Leave { name, .. } => {
                // Leaving the server is leaving every room, said once.
                let key = name_key(name);
                self.lobby.remove(&key);
                for room in &mut self.joined {
                    room.members.remove(&key);
                }
            }
            ServerFrame::RoomNames { room, names } => {
                if let Some(known) = self.room_mut(room) {
                    known.members = members(names);
                } else if is_valid_room(room) && names.iter().any(|n| self.is_me(n)) {
                    return Some(self.joined(room, names));
                }
            }
            ServerFrame::RoomJoin { room, name } => {
                if let Some(known) = self.room_mut(room) {
                    add(&mut known.members, name);
                }
            }
            ServerFrame::RoomLeave { room, name, .. } if self.is_me(name) => self.parted(room),
            ServerFrame::RoomLeave { room, name, .. } => {
                if let Some(known) = self.room_mut(room) {
                    known.members.remove(&name_key(name));
                }
            }
            ServerFrame::Rooms(rooms) => {
                self.listed = rooms.iter().map(|(room, _)| room.clone()).collect();
            }
            _ => {}
        }
        None
    }

    /// The user's name, once welcomed.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Whether `name` is the user's own (in any case).
    pub fn is_me(&self, name: &str) -> bool {
        !self.me.is_empty() && name_key(name) == name_key(&self.me)
    }

    /// The current room as the server spells it; `None` is the lobby.
    pub fn current(&self) -> Option<&str> {
        let key = self.current.as_deref()?;
        self.joined
            .iter()
            .find(|r| r.key == key)
            .map(|r| r.name.as_str())
    }

    /// The joined room `room` (in any case), as the server spells it.
    pub fn joined_room(&self, room: &str) -> Option<&str> {
        let key = room_key(room);
        self.joined
            .iter()
            .find(|r| r.key == key)
            .map(|r| r.name.as_str())
    }

    /// Makes `room` current (`None`: the lobby). Only a joined room can be:
    /// otherwise nothing changes, and the answer is `false`.
    pub fn go(&mut self, room: Option<&str>) -> bool {
        let key = match room {
            None => None,
            Some(room) => match self.joined_room(room) {
                Some(_) => Some(room_key(room)),
                None => return false,
            },
        };
        self.make_current(key);
        true
    }

    /// Makes the place `step` places away current, in the order the lobby
    /// and then the joined rooms; past either end it wraps around. Whether
    /// there was anywhere else to go.
    pub fn cycle(&mut self, step: isize) -> bool {
        if self.joined.is_empty() {
            return false;
        }
        // Place 0 is the lobby, place i the i-th joined room.
        let places = self.joined.len() + 1;
        let here = match &self.current {
            None => 0,
            Some(key) => self
                .joined
                .iter()
                .position(|r| &r.key == key)
                .map_or(0, |i| i + 1),
        };
        let there = (here as isize + step).rem_euclid(places as isize) as usize;
        let key = there.checked_sub(1).map(|i| self.joined[i].key.clone());
        self.make_current(key);
        true
    }

    /// The joined rooms, in the order they were joined.
    pub fn joined_rooms(&self) -> impl Iterator<Item = &str> {
        self.joined.iter().map(|r| r.name.as_str())
    }

    /// Every room the client knows of: the joined ones, then those of the
    /// last `ROOMS` answer, each once.
    pub fn known_rooms(&self) -> Vec<&str> {
        let mut rooms: Vec<&str> = self.joined_rooms().collect();
        for room in &self.listed {
            if self.joined_room(room).is_none() {
                rooms.push(room);
            }
        }
        rooms
    }

    /// Everyone the client knows is logged in, sorted like `NAMES`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.lobby.values().map(String::as_str)
    }

    /// The members of the current room (everyone, in the lobby).
    pub fn names_here(&self) -> impl Iterator<Item = &str> {
        let key = self.current.as_deref();
        let here = self.joined.iter().find(|r| Some(r.key.as_str()) == key);
        here.map_or(&self.lobby, |r| &r.members)
            .values()
            .map(String::as_str)
    }

    fn room_mut(&mut self, room: &str) -> Option<&mut Room> {
        let key = room_key(room);
        self.joined.iter_mut().find(|r| r.key == key)
    }

    fn joined(&mut self, room: &str, names: &[String]) -> Change {
        let key = room_key(room);
        self.joined.push(Room {
            name: room.to_owned(),
            key: key.clone(),
            members: members(names),
        });
        self.make_current(Some(key));
        Change::Joined(room.to_owned())
    }

    fn parted(&mut self, room: &str) {
        let key = room_key(room);
        self.joined.retain(|r| r.key != key);
        self.earlier.retain(|place| place.as_ref() != Some(&key));
        if self.current.as_deref() == Some(key.as_str()) {
            // Back to where the user was before: every place left in
            // `earlier` is one the user is still in.
            self.current = self.earlier.pop().flatten();
        }
    }

    fn make_current(&mut self, key: Option<String>) {
        if self.current == key {
            return;
        }
        let before = std::mem::replace(&mut self.current, key);
        self.earlier.retain(|place| place != &before);
        self.earlier.push(before);
    }
}

fn members(names: &[String]) -> Members {
    names.iter().map(|n| (name_key(n), n.clone())).collect()
}

fn add(members: &mut Members, name: &str) {
    members.insert(name_key(name), name.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(line: &str) -> ServerFrame {
        ServerFrame::parse(line).expect("a frame")
    }

    /// alice, logged in with bob and carol around.
    fn alice() -> Rooms {
        let mut rooms = Rooms::default();
        for line in ["WELCOME alice", "NAMES alice Bob carol"] {
            assert_eq!(rooms.observe(&frame(line)), None);
        }
        rooms
    }

    fn join(rooms: &mut Rooms, answer: &str) -> Option<Change> {
        rooms.observe(&frame(answer))
    }

    #[test]
    fn the_lobby_is_everyone() {
        let mut rooms = alice();
        assert_eq!(rooms.me(), "alice");
        assert!(rooms.is_me("ALICE"));
        assert_eq!(rooms.current(), None);
        rooms.observe(&frame("JOIN dave"));
        rooms.observe(&frame("LEAVE carol bye"));
        assert_eq!(rooms.names().collect::<Vec<_>>(), ["alice", "Bob", "dave"]);
        assert_eq!(rooms.names_here().count(), 3);
    }

    #[test]
    fn a_join_answer_makes_the_room_current() {
        let mut rooms = alice();
        assert_eq!(
            join(&mut rooms, "NAMES #Rust alice bob"),
            Some(Change::Joined("#Rust".into()))
        );
        assert_eq!(rooms.current(), Some("#Rust"));
        assert_eq!(rooms.joined_room("#rust"), Some("#Rust"));
        assert_eq!(rooms.names_here().collect::<Vec<_>>(), ["alice", "bob"]);
        // A later NAMES of the same room (a /who) is not a second join.
        assert_eq!(join(&mut rooms, "NAMES #rust alice bob carol"), None);
        assert_eq!(rooms.names_here().count(), 3);
    }

    #[test]
    fn names_of_a_room_without_the_user_is_no_join() {
        let mut rooms = alice();
        assert_eq!(join(&mut rooms, "NAMES #ops bob"), None);
        assert_eq!(join(&mut rooms, "NAMES #empty"), None);
        assert_eq!(rooms.current(), None);
        assert_eq!(rooms.joined_rooms().count(), 0);
    }

    #[test]
    fn a_room_against_the_rules_is_never_joined() {
        let mut rooms = alice();
        // The protocol crate may not read such a line as a frame at all;
        // if it does, the client must not take it for a room it joined.
        if let Ok(frame) = ServerFrame::parse("NAMES #\x1b[2J alice") {
            assert_eq!(rooms.observe(&frame), None);
        }
        assert_eq!(rooms.current(), None);
    }

    #[test]
    fn members_come_and_go() {
        let mut rooms = alice();
        join(&mut rooms, "NAMES #rust alice");
        rooms.observe(&frame("JOIN #rust bob"));
        rooms.observe(&frame("JOIN #rust carol"));
        rooms.observe(&frame("LEAVE #RUST bob later"));
        assert_eq!(rooms.names_here().collect::<Vec<_>>(), ["alice", "carol"]);
        // Leaving the server is leaving every room.
        rooms.observe(&frame("LEAVE carol"));
        assert_eq!(rooms.names_here().collect::<Vec<_>>(), ["alice"]);
        // Rooms the user is not in are not tracked.
        rooms.observe(&frame("JOIN #elsewhere bob"));
        assert_eq!(rooms.joined_room("#elsewhere"), None);
    }

    #[test]
    fn parting_the_current_room_goes_back_to_where_the_user_was() {
        let mut rooms = alice();
        join(&mut rooms, "NAMES #a alice");
        join(&mut rooms, "NAMES #b alice");
        join(&mut rooms, "NAMES #c alice");
        assert!(rooms.go(Some("#A")));
        assert_eq!(rooms.current(), Some("#a"));
        // #a was entered from #c: back there.
        rooms.observe(&frame("LEAVE #a alice"));
        assert_eq!(rooms.current(), Some("#c"));
        rooms.observe(&frame("LEAVE #b alice"));
        assert_eq!(rooms.current(), Some("#c"));
        // #c was entered from #b, and #b from #a, both parted since: the
        // lobby, where it all began.
        rooms.observe(&frame("LEAVE #c alice bye"));
        assert_eq!(rooms.current(), None);
        assert_eq!(rooms.joined_rooms().count(), 0);
    }

    #[test]
    fn parting_another_room_stays_put() {
        let mut rooms = alice();
        join(&mut rooms, "NAMES #a alice");
        join(&mut rooms, "NAMES #b alice");
        rooms.observe(&frame("LEAVE #a alice"));
        assert_eq!(rooms.current(), Some("#b"));
        assert_eq!(rooms.joined_rooms().collect::<Vec<_>>(), ["#b"]);
    }

    #[test]
    fn only_joined_rooms_can_be_current() {
        let mut rooms = alice();
        assert!(!rooms.go(Some("#nowhere")));
        join(&mut rooms, "NAMES #a alice");
        assert!(rooms.go(None));
        assert_eq!(rooms.current(), None);
        assert!(rooms.go(Some("#a")));
        assert_eq!(rooms.current(), Some("#a"));
    }

    #[test]
    fn cycling_goes_through_the_lobby_and_the_rooms_in_order() {
        let mut rooms = alice();
        assert!(!rooms.cycle(1), "nowhere to go");
        join(&mut rooms, "NAMES #a alice");
        join(&mut rooms, "NAMES #b alice");
        assert_eq!(rooms.current(), Some("#b"));
        let mut seen = Vec::new();
        for _ in 0..3 {
            rooms.cycle(1);
            seen.push(rooms.current().map(str::to_owned));
        }
        assert_eq!(seen, [None, Some("#a".into()), Some("#b".into())]);
        rooms.cycle(-1);
        assert_eq!(rooms.current(), Some("#a"));
        rooms.cycle(-2);
        assert_eq!(rooms.current(), Some("#b"));
    }

    #[test]
    fn known_rooms_are_the_joined_and_the_listed() {
        let mut rooms = alice();
        join(&mut rooms, "NAMES #Rust alice");
        rooms.observe(&frame("ROOMS #ops 2 #rust 1 #zig 3"));
        assert_eq!(rooms.known_rooms(), ["#Rust", "#ops", "#zig"]);
    }
}
