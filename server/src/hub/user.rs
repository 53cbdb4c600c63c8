//! A logged-in user as the hub knows it. The session holds it and hands
//! it to every request, without looking inside: which rooms the user is
//! in, and where its last publish stands on the bus, are the hub's to
//! keep. The rules that depend only on the user (`not-in-room`,
//! `already-in-room`, `--max-rooms-per-user`) are checked here, once for
//! both modes.

use std::net::IpAddr;
use std::sync::Arc;

use chat_protocol::{name_key, room_key, ErrorCode};
use tokio_util::sync::CancellationToken;

use super::{Inbox, Joined, Limits, Member, Receipt, SharedRoom, Welcome};

pub struct User {
    /// The name as logged in, and this connection's inbox.
    pub(crate) member: Member,
    /// The rooms the user is in.
    pub(crate) joined: Joined,
    /// The last frame this user published through the bus, for `PING` to
    /// wait on; the default when there is nothing to wait for.
    pub(crate) published: Receipt,
    /// The user sent `LEAVE`: the hub has been told, once.
    pub(crate) leaving: bool,
    /// Cluster mode: fires when this node can no longer vouch for the user.
    evicted: Option<CancellationToken>,
    /// Logged in with the password of a name listed as an operator's.
    operator: bool,
}

/// What a request changed for its user, once it completed.
pub enum Update {
    Nothing,
    /// A publish is on the bus at this place.
    Published(Receipt),
    /// In the room of this key now.
    Joined(String, SharedRoom),
    /// Out of the room of this key; the `LEAVE` is on the bus at this place.
    Parted(String, Receipt),
    /// A `PING` was answered: everything published before it was delivered.
    Synced,
    /// The user proved the name's password (it registered the name): an
    /// operator if the name is listed as one.
    Proved {
        operator: bool,
    },
    /// The name is no longer registered: no operator any more.
    Unproved,
}

impl User {
    pub(crate) fn new(welcome: Welcome, inbox: Arc<Inbox>, peer: IpAddr, operator: bool) -> User {
        inbox.set_peer(peer);
        User {
            member: Member {
                name: welcome.name,
                inbox,
            },
            joined: Joined::new(),
            published: Receipt::default(),
            leaving: false,
            evicted: welcome.evicted,
            operator,
        }
    }

    /// Whether the user may `KICK`, `BAN`, `MUTE` and ask for `BANS`.
    pub fn operator(&self) -> bool {
        self.operator
    }

    /// The name as logged in.
    pub fn name(&self) -> &str {
        &self.member.name
    }

    /// Where this user's frames and answers go.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.member.inbox
    }

    /// Fires when the hub can no longer vouch for this user; `None` in a
    /// single process, which never evicts anyone.
    pub fn evicted(&self) -> Option<&CancellationToken> {
        self.evicted.as_ref()
    }

    /// The name lower-cased, as rooms and the lobby key their members.
    pub(crate) fn key(&self) -> String {
        name_key(&self.member.name)
    }

    /// Applies what a completed request changed.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Nothing => {}
            Update::Published(receipt) => self.published = receipt,
            Update::Joined(key, room) => {
                self.joined.insert(key, room);
            }
            Update::Parted(key, receipt) => {
                self.joined.remove(&key);
                self.published = receipt;
            }
            // Delivered now; later `PING`s need not wait for it.
            Update::Synced => self.published = Receipt::default(),
            Update::Proved { operator } => self.operator = operator,
            Update::Unproved => self.operator = false,
        }
    }

    /// A room the user is in, or `not-in-room`.
    pub(crate) fn room(&self, room: &str) -> Result<&SharedRoom, ErrorCode> {
        self.joined.get(&room_key(room)).ok_or(ErrorCode::NotInRoom)
    }

    /// Whether the user may enter `room`: not in it already, and below
    /// `--max-rooms-per-user`.
    pub(crate) fn may_join(&self, room: &str, limits: Limits) -> Result<(), ErrorCode> {
        if self.joined.contains_key(&room_key(room)) {
            return Err(ErrorCode::AlreadyInRoom);
        }
        if self.joined.len() >= limits.max_rooms_per_user {
            return Err(ErrorCode::TooManyRooms);
        }
        Ok(())
    }
}
