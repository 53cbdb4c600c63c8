//! The cluster's user list as this node's room sees it.
//!
//! The room keeps a replica of who is logged in anywhere, by applying the
//! stream's `JOIN` and `LEAVE` frames in stream order rather than asking
//! Redis. Because the replica moves with the stream, the `NAMES` a
//! newcomer gets describes the room at exactly the point from which it
//! receives broadcasts. Frames are read through the protocol crate's
//! borrowed view, like every other reader of server frames.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chat_protocol::{name_key, ServerFrame, ServerFrameRef};

/// Everyone in the cluster as of the last entry delivered.
#[derive(Debug, Default)]
pub(super) struct Replica {
    /// By lower-cased name.
    users: BTreeMap<String, Arc<str>>,
    /// The encoded `NAMES` of `users`, kept until they change.
    names: Option<Bytes>,
}

impl Replica {
    /// Starts again from a snapshot of the users.
    pub(super) fn reset(&mut self, users: Vec<Arc<str>>) {
        self.users = users.into_iter().map(|n| (name_key(&n), n)).collect();
        self.names = None;
    }

    /// Whether a user holds the name of this key.
    pub(super) fn contains(&self, key: &str) -> bool {
        self.users.contains_key(key)
    }

    /// Everyone, as (lower-cased name, name).
    pub(super) fn users(&self) -> impl Iterator<Item = (&str, &str)> {
        self.users.iter().map(|(key, name)| (key.as_str(), &**name))
    }

    pub(super) fn len(&self) -> usize {
        self.users.len()
    }

    /// A lobby `JOIN` from the stream: its user is in.
    pub(super) fn join(&mut self, name: &str) {
        self.users.insert(name_key(name), Arc::from(name));
        self.names = None;
    }

    /// A lobby `LEAVE` from the stream: the user of this key is gone.
    pub(super) fn leave(&mut self, key: &str) {
        if self.users.remove(key).is_some() {
            self.names = None;
        }
    }

    /// Applies a frame from the stream as the room does: a `JOIN` adds
    /// its user, a `LEAVE` removes its user, anything else changes nothing.
    #[cfg(test)]
    fn track(&mut self, frame: &[u8]) {
        match ServerFrameRef::from_bytes(frame) {
            Ok(ServerFrameRef::Join(name)) => self.join(name),
            Ok(ServerFrameRef::Leave { name, .. }) => self.leave(&name_key(name)),
            _ => {}
        }
    }

    /// The encoded `NAMES` frame.
    pub(super) fn names(&mut self) -> Bytes {
        let users = &self.users;
        self.names
            .get_or_insert_with(|| ServerFrame::names_bytes(users.values().map(|n| &**n)))
            .clone()
    }
}

/// The name a `JOIN` frame announces; `None` for any other frame.
pub(super) fn joined(frame: &[u8]) -> Option<&str> {
    match ServerFrameRef::from_bytes(frame) {
        Ok(ServerFrameRef::Join(name)) => Some(name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(replica: &mut Replica) -> String {
        String::from_utf8(replica.names().to_vec()).unwrap()
    }

    #[test]
    fn joins_and_leaves_move_the_list() {
        let mut replica = Replica::default();
        replica.reset(vec![Arc::from("carol")]);
        replica.track(b"JOIN Bob\n");
        replica.track(b"JOIN amy\n");
        assert_eq!(replica.len(), 3);
        assert!(replica.contains("bob"));
        replica.track(b"LEAVE carol gone for lunch\n");
        replica.track(b"LEAVE AMY\n");
        assert_eq!(replica.len(), 1);
        assert!(!replica.contains("carol") && !replica.contains("amy"));
        assert_eq!(names(&mut replica), "NAMES Bob\n");
    }

    #[test]
    fn other_frames_change_nothing() {
        let mut replica = Replica::default();
        replica.track(b"JOIN bob\n");
        let before = names(&mut replica);
        for frame in [
            &b"MSG bob JOIN amy\n"[..],
            b"MSG bob LEAVE bob\n",
            b"DROPPED 3\n",
            b"JOIN\n",
            b"not a frame\n",
        ] {
            replica.track(frame);
        }
        assert_eq!(names(&mut replica), before);
        assert_eq!(replica.len(), 1);
    }

    #[test]
    fn names_follow_every_change() {
        let mut replica = Replica::default();
        assert_eq!(names(&mut replica), "NAMES\n");
        replica.track(b"JOIN bob\n");
        assert_eq!(names(&mut replica), "NAMES bob\n");
        replica.reset(vec![Arc::from("amy"), Arc::from("Zed")]);
        assert_eq!(names(&mut replica), "NAMES amy Zed\n");
        replica.track(b"LEAVE zed\n");
        assert_eq!(names(&mut replica), "NAMES amy\n");
    }

    #[test]
    fn only_a_join_names_who_joined() {
        assert_eq!(joined(b"JOIN bob\n"), Some("bob"));
        assert_eq!(joined(b"LEAVE bob\n"), None);
        assert_eq!(joined(b"MSG bob JOIN amy\n"), None);
    }
}
