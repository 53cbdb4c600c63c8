//! A logged-in user's requests in cluster mode, where the lobby's `MSG`
//! and every request of version 2 go through the bus: each becomes one
//! script call that Redis runs atomically, appending its frame to the
//! stream that every node delivers from.
//!
//! Whether the user is in a room is the user's own state, checked by the
//! [`Hub`](crate::hub::Hub) before these are called, as in a single
//! process; what only the cluster knows (the other members, the rooms, a
//! name on another node, history) is asked of Redis.

use std::sync::Arc;

use chat_protocol::{name_key, room_key, ErrorCode, ServerFrame};

use super::calls::{self, Call, Placed};
use super::{scripts, Bus, Reply};
use crate::hub::{lock, Done, Inbox, Limits, Outcome, Refusal, SharedRoom, Update, User};

/// `MSG` (no room) or `SAY` in a room the user is in.
pub(crate) fn publish(
    bus: &Bus,
    limits: Limits,
    user: &User,
    room: Option<&SharedRoom>,
    text: String,
) -> Outcome {
    let from = user.name().to_owned();
    let record = calls::record(&from, &text);
    let call = match room {
        None => {
            let frame = ServerFrame::Msg { from, text }.to_bytes();
            Call::say(&frame, record, scripts::LOBBY_HISTORY, "", &limits)
        }
        Some(shared) => {
            let room = lock(shared).name().to_owned();
            let key = room_key(&room);
            let frame = ServerFrame::Say { room, from, text }.to_bytes();
            let history = scripts::room_history_key(&key);
            Call::say(&frame, record, &history, &key, &limits)
        }
    };
    appended(bus, call)
}

/// `JOIN`: done once the user's `JOIN` comes back from the stream.
pub(crate) fn join(bus: &Bus, user: &User, room: String) -> Outcome {
    let key = room_key(&room);
    let (bus, member) = (bus.clone(), user.member.clone());
    Outcome::Wait(Box::pin(async move {
        let joined = bus.join(room, member).await;
        Done::Updated(
            joined
                .map(|shared| Update::Joined(key, shared))
                .map_err(Refusal::from),
        )
    }))
}

/// `PART` of a room the user is in.
pub(crate) fn part(bus: &Bus, user: &User, shared: &SharedRoom, text: Option<String>) -> Outcome {
    let room = lock(shared).name().to_owned();
    let key = room_key(&room);
    let frame = ServerFrame::RoomLeave {
        room,
        name: user.name().to_owned(),
        text,
    }
    .to_bytes();
    let call = Call::part(&key, &user.key(), &frame);
    let bus = bus.clone();
    Outcome::Wait(Box::pin(async move {
        let parted = bus.call(call).await.and_then(|r| r.receipt());
        Done::Updated(
            parted
                .map(|receipt| Update::Parted(key, receipt))
                .map_err(Refusal::from),
        )
    }))
}

/// `TELL`: the receiver may be on any node.
pub(crate) fn tell(bus: &Bus, user: &User, to: &str, text: String) -> Outcome {
    let call = Call::tell(user.name(), &name_key(to), &text);
    let bus = bus.clone();
    Outcome::InFlight(Box::pin(async move {
        let told = bus.call(call).await.and_then(|r| r.told());
        Done::Updated(told.map(Update::Published).map_err(Refusal::from))
    }))
}

/// `TOPIC <room> <text>` in a room the user is in.
pub(crate) fn set_topic(bus: &Bus, user: &User, shared: &SharedRoom, text: String) -> Outcome {
    let room = lock(shared).name().to_owned();
    let key = room_key(&room);
    let setter = user.name().to_owned();
    let call_text = text.clone();
    let frame = ServerFrame::Topic {
        room,
        setter: setter.clone(),
        text,
    }
    .to_bytes();
    appended(bus, Call::topic(&key, &setter, &call_text, &frame))
}

/// `WHO <room>` of a room the user is not in: read from Redis.
pub(crate) fn who(bus: &Bus, user: &User, room: &str) -> Outcome {
    let call = Call::who(&room_key(room));
    let room = room.to_owned();
    answered(bus, user.inbox(), call, move |reply| {
        calls::names(reply, &room)
    })
}

/// `ROOMS`, read from Redis.
pub(crate) fn list_rooms(bus: &Bus, user: &User) -> Outcome {
    answered(bus, user.inbox(), Call::rooms(), calls::rooms)
}

/// `HISTORY` of the lobby, or of a room the user is in, read from Redis.
pub(crate) fn history(bus: &Bus, user: &User, room: Option<&SharedRoom>, count: u64) -> Outcome {
    let (list, spelled) = match room {
        None => (scripts::LOBBY_HISTORY.to_owned(), None),
        Some(shared) => {
            let spelled = lock(shared).name().to_owned();
            (
                scripts::room_history_key(&room_key(&spelled)),
                Some(spelled),
            )
        }
    };
    if count == 0 {
        user.inbox()
            .push_reply(calls::no_history(spelled.as_deref()));
        return Outcome::Done;
    }
    answered(
        bus,
        user.inbox(),
        Call::history(&list, count),
        move |reply| calls::history(reply, spelled.as_deref()),
    )
}

/// A call that appends a frame: the user learns where it stands, so that
/// a later `PING` can wait for it to come back. The next frames may be
/// read meanwhile.
fn appended(bus: &Bus, call: Call) -> Outcome {
    let bus = bus.clone();
    Outcome::InFlight(Box::pin(async move {
        let appended = bus.call(call).await.and_then(|r| r.receipt());
        Done::Updated(appended.map(Update::Published).map_err(Refusal::from))
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
                Done::Updated(Ok(Update::Nothing))
            }
            Err(code) => Done::Updated(Err(code.into())),
        }
    }))
}
