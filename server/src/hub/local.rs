//! The single-process hub: who is logged in, when there is no cluster,
//! and the publishes that sessions carry out themselves.
//!
//! The hub task alone adds users to the lobby and takes them out, so a
//! name is checked and claimed in one step. A publish needs no task: the
//! sender's session pushes the frame to every receiver under the lock of
//! the room it belongs to, which is what orders the room.

use std::sync::Arc;

use chat_protocol::{name_key, ErrorCode, ServerFrame};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::inbox::drained;
use super::room::{lock, Member};
use super::{Entering, Full, Leaving, Requests, Rooms, SharedRoom, User, Welcome};
use crate::store::Store;

/// The state the hub task owns, besides the lobby it shares with sessions
/// for their broadcasts.
pub(crate) struct Local {
    lobby: SharedRoom,
    rooms: Arc<Rooms>,
    shutdown: CancellationToken,
}

impl Local {
    pub(crate) fn new(lobby: SharedRoom, rooms: Arc<Rooms>, shutdown: CancellationToken) -> Local {
        Local {
            lobby,
            rooms,
            shutdown,
        }
    }

    pub(crate) async fn run(self, requests: Requests) {
        let Requests {
            mut entering,
            mut leaving,
            mut census,
        } = requests;
        loop {
            tokio::select! {
                // Leaves first: a name freed by a disconnect is free for the
                // next login.
                biased;
                Some(gone) = leaving.recv() => self.leave(gone).await,
                Some(newcomer) = entering.recv() => self.enter(newcomer).await,
                Some((inbox, reply)) = census.recv() => {
                    inbox.push_reply(lock(&self.lobby).names());
                    let _ = reply.send(Ok(()));
                }
                else => break,
            }
        }
    }

    async fn enter(&self, entering: Entering) {
        let Entering {
            name,
            inbox,
            take_back,
            reply,
        } = entering;
        let key = name_key(&name);
        if reply.is_closed() || inbox.is_closed() {
            // The session vanished while its NAME waited: nobody to log in.
            return;
        }
        let name: Arc<str> = name.into();
        // Only this task changes who is in the lobby, so the name is still
        // free when it is added below.
        let holder = lock(&self.lobby).member(&key).cloned();
        if let Some(holder) = holder {
            if !take_back {
                let _ = reply.send(Err(ErrorCode::NameTaken));
                return;
            }
            // The right password takes the name back: the others see the
            // old connection's LEAVE, then the JOIN.
            let stale = Leaving {
                name: holder.name,
                inbox: holder.inbox,
                text: None,
                cause: "logged in elsewhere",
                placed: None,
                joined: Default::default(),
                farewell: Some(ErrorCode::LoggedInElsewhere.into()),
            };
            self.leave(stale).await;
        }
        let users = lock(&self.lobby).len() + 1;
        info!(user = %name, users, "login");
        let mut full = Vec::new();
        {
            let mut lobby = lock(&self.lobby);
            // Everyone else hears of the newcomer; the newcomer's inbox gets
            // its WELCOME and NAMES, then what follows its JOIN.
            lobby.publish(&ServerFrame::Join(name.to_string()).to_bytes(), &mut full);
            let member = Member {
                name: name.clone(),
                inbox: inbox.clone(),
            };
            lobby.add(key, member);
            inbox.push_reply(ServerFrame::Welcome(name.to_string()).to_bytes());
            inbox.push_reply(lobby.names());
        }
        let welcome = Welcome {
            name: name.clone(),
            evicted: None,
        };
        let welcome_inbox = inbox;
        if reply.send(Ok(welcome)).is_err() {
            // The session vanished meanwhile; undo the login so the name
            // is not held by nobody.
            let gone = Leaving {
                name,
                inbox: welcome_inbox,
                text: None,
                cause: "closed during login",
                placed: None,
                joined: Default::default(),
                farewell: None,
            };
            self.leave(gone).await;
        }
        // Logins wait for the readers, like any publisher.
        drained(full).await;
    }

    async fn leave(&self, gone: Leaving) {
        let Leaving {
            name,
            inbox,
            text,
            cause,
            placed,
            mut joined,
            farewell,
        } = gone;
        self.rooms.leave_all(&name_key(&name), &inbox, &mut joined);
        let mut full = Vec::new();
        let (removed, users) = {
            let mut lobby = lock(&self.lobby);
            // Out of the lobby first: the leaver does not hear of itself.
            let removed = lobby.remove_exact(&name_key(&name), &inbox).is_some();
            if removed && !self.shutdown.is_cancelled() {
                let leave = ServerFrame::Leave {
                    name: name.to_string(),
                    text,
                };
                lobby.publish(&leave.to_bytes(), &mut full);
            }
            (removed, lobby.len())
        };
        if let (true, Some(farewell)) = (removed, farewell) {
            // After its LEAVE went out: it hears nothing more.
            inbox.end(farewell);
        }
        if let Some(placed) = placed {
            let _ = placed.send(());
        }
        if removed {
            info!(user = %name, cause, users, "leave");
        }
        drained(full).await;
    }
}

/// `MSG` (no room) or `SAY`: pushes the frame to every member, the sender
/// too, and keeps it for history; the lobby's also in `store`, which
/// survives a restart.
pub(super) fn publish(
    lobby: &SharedRoom,
    store: Option<&Store>,
    user: &User,
    room: Option<&SharedRoom>,
    text: String,
) -> Full {
    let shared = room.unwrap_or(lobby);
    let mut full = Vec::new();
    let mut room = lock(shared);
    let time = room.record(&user.member.name, &text);
    if let (Some(store), None) = (store, room.name_if_room()) {
        store.record_lobby(time.unix_millis() as i64, user.name(), &text);
    }
    let from = user.name().to_owned();
    let frame = match room.name() {
        "" => ServerFrame::Msg { from, text }.to_bytes(),
        name => ServerFrame::Say {
            room: name.to_owned(),
            from,
            text,
        }
        .to_bytes(),
    };
    room.publish(&frame, &mut full);
    full
}

/// `TELL`: the receiver and the sender both get the frame, once each.
pub(super) fn tell(
    lobby: &SharedRoom,
    user: &User,
    to: &str,
    text: String,
) -> Result<Full, ErrorCode> {
    let lobby = lock(lobby);
    let Some(receiver) = lobby.member(&name_key(to)) else {
        return Err(ErrorCode::NoSuchUser);
    };
    let frame = ServerFrame::Tell {
        from: user.name().to_owned(),
        to: receiver.name.to_string(),
        text,
    }
    .to_bytes();
    let mut full = Vec::new();
    super::inbox::fan_out(
        super::inbox::once_each([&receiver.inbox, user.inbox()]),
        &frame,
        &mut full,
    );
    Ok(full)
}

/// `TOPIC <room> <text>`: sets it, and every member hears who did.
pub(super) fn set_topic(shared: &SharedRoom, user: &User, text: String) -> Full {
    let mut full = Vec::new();
    let mut room = lock(shared);
    room.set_topic(&user.member.name, text);
    let topic = room.topic().to_bytes();
    room.publish(&topic, &mut full);
    full
}
