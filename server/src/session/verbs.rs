//! The verbs of a logged-in user: each frame becomes one call to the hub,
//! and each refusal the human words of its `ERROR`. A new verb touches
//! this file and the hub's interface, nothing else of the session.

use chat_protocol::{ClientFrame, ErrorCode};

use crate::hub::{Hub, Outcome, User, HISTORY_DEFAULT};

/// Carries out a logged-in user's request.
pub(super) fn request(hub: &Hub, user: &mut User, frame: ClientFrame) -> Outcome {
    match frame {
        ClientFrame::Ping(token) => hub.sync(user, token),
        ClientFrame::Name(_) => Outcome::Refused(ErrorCode::AlreadyLoggedIn.into()),
        ClientFrame::Msg(text) => hub.publish(user, None, text),
        ClientFrame::Who => hub.who(user, None),
        ClientFrame::Leave(text) => hub.leave(user, text),
        ClientFrame::Join(room) => hub.join(user, room),
        ClientFrame::Part { room, text } => hub.part(user, &room, text),
        ClientFrame::Say { room, text } => hub.publish(user, Some(&room), text),
        ClientFrame::Tell { to, text } => hub.tell(user, &to, text),
        ClientFrame::Topic { room, text } => hub.topic(user, &room, text),
        ClientFrame::RoomWho(room) => hub.who(user, Some(&room)),
        ClientFrame::Rooms => hub.list_rooms(user),
        ClientFrame::History { room, count } => {
            let count = count.map_or(HISTORY_DEFAULT, |n| n.get());
            hub.history(user, room.as_deref(), count)
        }
        ClientFrame::Login { .. } => Outcome::Refused(ErrorCode::AlreadyLoggedIn.into()),
        ClientFrame::Register(password) => hub.register(user, password),
        ClientFrame::ChangePassword { old, new } => hub.change_password(user, old, new),
        ClientFrame::Unregister(password) => hub.unregister(user, password),
        ClientFrame::Kick { name, text } => hub.kick(user, &name, text),
        ClientFrame::Ban {
            name,
            duration,
            text,
        } => hub.ban(user, &name, duration, text),
        ClientFrame::Unban(name) => hub.unban(user, &name),
        ClientFrame::Mute {
            name,
            duration,
            text,
        } => hub.mute(user, &name, duration, text),
        ClientFrame::Unmute(name) => hub.unmute(user, &name),
        ClientFrame::Bans => hub.bans(user),
    }
}

/// Whether a frame is a publish that may go out while earlier ones wait
/// for the bus (see [`Outcome::InFlight`]).
pub(super) fn publishes(frame: &ClientFrame) -> bool {
    matches!(
        frame,
        ClientFrame::Msg(_)
            | ClientFrame::Say { .. }
            | ClientFrame::Tell { .. }
            | ClientFrame::Topic { text: Some(_), .. }
    )
}

/// Whether a frame asks for an answer whose size it pays for (see
/// [`super::flood::answer_cost`]): `ROOMS`, `WHO`, `HISTORY`.
pub(super) fn answer_costs(frame: &ClientFrame) -> bool {
    matches!(
        frame,
        ClientFrame::Rooms
            | ClientFrame::Who
            | ClientFrame::RoomWho(_)
            | ClientFrame::History { .. }
    )
}

/// The human detail that goes with each refusal the server decides.
pub(crate) fn explain(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NameTaken => "that name is in use; choose another",
        ErrorCode::NotLoggedIn => "log in first with NAME <name>",
        ErrorCode::AlreadyLoggedIn => "you are already logged in",
        ErrorCode::LoginTimeout => "no login in time; closing",
        ErrorCode::IdleTimeout => "idle for too long; closing",
        ErrorCode::ServerFull => "too many connections; try again later",
        ErrorCode::TooManyConnections => "too many connections from your address",
        ErrorCode::ShuttingDown => "the server is shutting down",
        ErrorCode::Unavailable => {
            "the server cannot reach the rest of the cluster; nothing was done"
        }
        ErrorCode::NotInRoom => "you are not in that room; JOIN it first",
        ErrorCode::AlreadyInRoom => "you are in that room already",
        ErrorCode::NoSuchUser => "nobody is logged in under that name",
        ErrorCode::TooManyRooms => "too many rooms; PART one first",
        ErrorCode::NameRegistered => "that name is registered; log in with NAME <name> <password>",
        ErrorCode::BadPassword => "wrong password",
        ErrorCode::WeakPassword => chat_protocol::PASSWORD_RULES,
        ErrorCode::NotRegistered => "that name is not registered",
        ErrorCode::AlreadyRegistered => "that name is registered already",
        ErrorCode::TooManyTries => "too many wrong passwords for that name; wait a minute",
        ErrorCode::LoggedInElsewhere => "you logged in on another connection; closing",
        ErrorCode::NotOperator => "only an operator may do that, and not to an operator",
        ErrorCode::BadDuration => chat_protocol::DURATION_RULES,
        other => other.as_str(),
    }
}
