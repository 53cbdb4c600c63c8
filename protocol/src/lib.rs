#![doc = include_str!("../../docs/PROTOCOL.md")]

mod account;
mod client_frame;
mod codec;
mod error;
mod server_frame;
mod server_frame_ref;
mod text;
mod time;

pub use account::{
    format_duration, parse_duration, Password, DURATION_RULES, MAX_DURATION, PASSWORD_LEN,
    PASSWORD_RULES,
};
pub use client_frame::{ClientFrame, Rejection, Verb, COUNT_RULES, NAME_RULES, ROOM_RULES};
pub use codec::{
    ClientCodec, ClientDecodeError, LineCodec, LineError, ServerCodec, MAX_LINE, MAX_SERVER_LINE,
};
pub use error::{ErrorCode, UnknownErrorCode};
pub use server_frame::{MalformedFrame, ServerFrame};
pub use server_frame_ref::{BanList, NameList, RoomList, ServerFrameRef};
pub use text::{
    forbidden_char, forbidden_char_description, is_blank, is_valid_name, is_valid_room, name_key,
    room_key, MAX_NAME_LEN, MAX_ROOM_LEN,
};
pub use time::{BadTimestamp, Timestamp};

/// The address servers listen on and clients connect to unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8000";
