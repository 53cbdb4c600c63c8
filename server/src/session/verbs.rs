//! The verbs of a logged-in user: each frame becomes one call to the hub,
//! and each refusal the human words of its `ERROR`. A new verb touches
//! this file and the hub's interface, nothing else of the session.

use chat_protocol::{ClientFrame, ErrorCode};

use crate::hub::{Hub, Outcome, User, HISTORY_DEFAULT};

/// Carries out a logged-in user's request.
pub(super) fn request(hub: &Hub, user: &mut User, frame: ClientFrame) -> Outcome {
    match frame {
        ClientFrame::Ping(token) => hub.sync(user, token),
        ClientFrame::Name(_) => Outcome::Refused(ErrorCode::AlreadyLoggedIn),
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
        ClientFrame::Login { .. } => Outcome::Refused(ErrorCode::AlreadyLoggedIn),
        ClientFrame::Register(_)
        | ClientFrame::ChangePassword { .. }
        | ClientFrame::Unregister(_)
        | ClientFrame::Kick { .. }
        | ClientFrame::Ban { .. }
        | ClientFrame::Unban(_)
        | ClientFrame::Mute { .. }
        | ClientFrame::Unmute(_)
        | ClientFrame::Bans => Outcome::Refused(ErrorCode::UnknownCommand),
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
        other => other.as_str(),
    }
}
