//! A logged-in user's requests in cluster mode, where the lobby's `MSG`
//! and every request of version 2 go through the bus: each becomes one
//! script call that Redis runs atomically, appending its frame to the
//! stream that every node delivers from. The session waits for the answer
//! with input stopped and output flowing, as for any request to the hub.
//!
//! Whether the user is in a room is this session's to know, as in the
//! single process; what only the cluster knows (the other members, the
//! rooms, a name on another node, history) is asked of Redis.

use std::sync::Arc;

use chat_protocol::{name_key, room_key, ClientFrame, ErrorCode, ServerFrame};

use super::{queued, Done, LoggedIn, Outcome, HISTORY_DEFAULT};
use crate::hub::cluster::calls::{self, Call, Placed};
use crate::hub::cluster::{scripts, Bus, Reply};
use crate::hub::{self, lock, Hub, Inbox};

pub(super) fn request(hub: &Hub, bus: &Bus, user: &mut LoggedIn, frame: ClientFrame) -> Outcome {
    let limits = hub.rooms().limits();
    let from = &user.member.name;
    match frame {
        ClientFrame::Msg(text) => {
            let record = calls::record(from, &text);
            let frame = ServerFrame::Msg {
                from: from.to_string(),
                text,
            }
            .to_bytes();
            let call = Call::say(&frame, record, scripts::LOBBY_HISTORY, "", limits.history);
            appended(bus, call)
        }
        // After the user's own messages have come back, so that its
        // `NAMES` follows them as in a single process.
        ClientFrame::Who => {
            let synced = hub.sync(user.published);
            let counted = hub.who(user.member.inbox.clone());
            Outcome::Wait(Box::pin(async move {
                synced.await;
                Done::Placed(counted.await)
            }))
        }
        ClientFrame::Join(room) => {
            let key = room_key(&room);
            if user.joined.contains_key(&key) {
                return Outcome::Refused(ErrorCode::AlreadyInRoom);
            }
            if user.joined.len() >= limits.max_rooms_per_user {
                return Outcome::Refused(ErrorCode::TooManyRooms);
            }
            let (bus, member) = (bus.clone(), user.member.clone());
            Outcome::Wait(Box::pin(async move {
                Done::Joined(key, bus.join(room, member).await)
            }))
        }
        ClientFrame::Part { room, text } => {
            let Ok(shared) = hub::rooms::joined_room(&user.joined, &room) else {
                return Outcome::Refused(ErrorCode::NotInRoom);
            };
            let frame = ServerFrame::RoomLeave {
                room: lock(shared).name().to_owned(),
                name: from.to_string(),
                text,
            }
            .to_bytes();
            let key = room_key(&room);
            let call = Call::part(&key, &user.key, &frame);
            let bus = bus.clone();
            Outcome::Wait(Box::pin(async move {
                let parted = bus.call(call).await.and_then(|r| calls::appended(&r));
                Done::Parted(key, parted)
            }))
        }
        ClientFrame::Say { room, text } => {
            let Ok(shared) = hub::rooms::joined_room(&user.joined, &room) else {
                return Outcome::Refused(ErrorCode::NotInRoom);
            };
            let record = calls::record(from, &text);
            let frame = ServerFrame::Say {
                room: lock(shared).name().to_owned(),
                from: from.to_string(),
                text,
            }
            .to_bytes();
            let key = room_key(&room);
            let history = scripts::room_history_key(&key);
            appended(
                bus,
                Call::say(&frame, record, &history, &key, limits.history),
            )
        }
        ClientFrame::Tell { to, text } => {
            let call = Call::tell(from, &name_key(&to), &text);
            let bus = bus.clone();
            Outcome::InFlight(Box::pin(async move {
                Done::Published(bus.call(call).await.and_then(|r| calls::told(&r)))
            }))
        }
        ClientFrame::Topic {
            room,
            text: Some(text),
        } => {
            let Ok(shared) = hub::rooms::joined_room(&user.joined, &room) else {
                return Outcome::Refused(ErrorCode::NotInRoom);
            };
            let key = room_key(&room);
            let frame = ServerFrame::Topic {
                room: lock(shared).name().to_owned(),
                setter: from.to_string(),
                text: text.clone(),
            }
            .to_bytes();
            appended(bus, Call::topic(&key, from, &text, &frame))
        }
        // The topic as this node's copy of the room has it, which follows
        // the stream: in its place among the room's frames.
        ClientFrame::Topic { room, text: None } => {
            queued(hub::rooms::topic(&user.joined, &user.member, &room))
        }
        ClientFrame::RoomWho(room) => {
            let call = Call::who(&room_key(&room));
            answered(bus, &user.member.inbox, call, move |reply| {
                calls::names(reply, &room)
            })
        }
        ClientFrame::Rooms => answered(bus, &user.member.inbox, Call::rooms(), calls::rooms),
        ClientFrame::History { room, count } => {
            let count = count.map_or(HISTORY_DEFAULT, |n| n.get());
            let count = count.min(limits.history as u64);
            let (list, spelled) = match room {
                None => (scripts::LOBBY_HISTORY.to_owned(), None),
                Some(room) => {
                    let Ok(shared) = hub::rooms::joined_room(&user.joined, &room) else {
                        return Outcome::Refused(ErrorCode::NotInRoom);
                    };
                    let spelled = lock(shared).name().to_owned();
                    (scripts::room_history_key(&room_key(&room)), Some(spelled))
                }
            };
            if count == 0 {
                return Outcome::Reply(calls::no_history(spelled.as_deref()));
            }
            answered(
                bus,
                &user.member.inbox,
                Call::history(&list, count),
                move |reply| calls::history(reply, spelled.as_deref()),
            )
        }
        // Answered the same way in both modes, before this is called.
        ClientFrame::Ping(_) | ClientFrame::Name(_) | ClientFrame::Leave(_) => {
            Outcome::Refused(ErrorCode::UnknownCommand)
        }
    }
}

/// A call that appends a frame: the session learns where it stands, so
/// that a later `PING` can wait for it to come back. The next frames may be
/// read meanwhile.
fn appended(bus: &Bus, call: Call) -> Outcome {
    let bus = bus.clone();
    Outcome::InFlight(Box::pin(async move {
        Done::Published(bus.call(call).await.and_then(|r| calls::appended(&r)))
    }))
}

/// A call whose answer, read by `read`, is the reply: it goes into the
/// asker's inbox right after the stream entry that was last when Redis
/// read it, so it never runs ahead of the frames it reflects.
fn answered(
    bus: &Bus,
    inbox: &Arc<Inbox>,
    call: Call,
    read: impl FnOnce(Reply) -> Result<Placed, ErrorCode> + Send + 'static,
) -> Outcome {
    let (bus, inbox) = (bus.clone(), inbox.clone());
    Outcome::Wait(Box::pin(async move {
        match bus.call(call).await.and_then(read) {
            Ok((last, reply)) => {
                bus.place(last, inbox, reply).await;
                Done::Placed(Ok(()))
            }
            Err(code) => Done::Placed(Err(code)),
        }
    }))
}
