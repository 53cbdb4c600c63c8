//! The error codes of `ERROR <code> [<detail>]`.

use std::fmt;
use std::str::FromStr;

/// Why the server refused a request or is closing a connection.
///
/// The text forms are the contract's codes exactly; clients match on them, so
/// they never change once published. This is the set this crate knows; a
/// client reading an `ERROR` with any other code gets
/// [`ServerFrame::UnknownError`](crate::ServerFrame::UnknownError) instead, so
/// that a newer server's codes can still be shown as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The name breaks the naming rules.
    BadName,
    /// Someone connected already uses the name (compared case-insensitively).
    NameTaken,
    /// A frame other than `NAME` or `PING` arrived before login.
    NotLoggedIn,
    /// A second `NAME` on a logged-in connection.
    AlreadyLoggedIn,
    /// The verb is not one of the protocol's.
    UnknownCommand,
    /// `MSG` without text, or with spaces only.
    EmptyMessage,
    /// A forbidden character in a text or a name: a control character
    /// other than TAB, or a bidirectional embedding, override or isolate.
    BadText,
    /// The frame was longer than the line limit; the rest of it was discarded.
    LineTooLong,
    /// The frame was not UTF-8 and was discarded.
    InvalidUtf8,
    /// No successful login in time; the connection closes.
    LoginTimeout,
    /// A logged-in user was silent for too long; the connection closes.
    IdleTimeout,
    /// The server is at its connection limit; the connection closes.
    ServerFull,
    /// The server is stopping; the connection closes.
    ShuttingDown,
    /// Cluster mode: the node cannot reach the bus, so nothing was done.
    Unavailable,
    /// `--max-per-ip` connections from this address are open; the connection
    /// closes.
    TooManyConnections,
    /// A room name that breaks the room rules, or a missing room.
    BadRoom,
    /// `SAY`, `PART`, `TOPIC` or `HISTORY` on a room the user is not in.
    NotInRoom,
    /// `JOIN` of a room the user is already in.
    AlreadyInRoom,
    /// `TELL` to a name nobody is logged in under.
    NoSuchUser,
    /// A `HISTORY` count that is not a decimal number from 1, or an argument
    /// too many.
    BadCount,
    /// `JOIN` beyond the per-user room limit, or a new room beyond the
    /// server's room limit.
    TooManyRooms,
    /// `NAME` of a registered name without a password.
    NameRegistered,
    /// A wrong password (one that breaks the password rules is always wrong).
    BadPassword,
    /// The password of `REGISTER`, or the new one of `PASSWORD`, breaks the
    /// password rules.
    WeakPassword,
    /// A password for a name that is not registered; `PASSWORD` or
    /// `UNREGISTER` by a user whose name is not registered.
    NotRegistered,
    /// `REGISTER` of a name that is registered.
    AlreadyRegistered,
    /// A login to a name that had 5 wrong passwords in the last minute.
    TooManyTries,
    /// The same registered name logged in on another connection; this one
    /// closes.
    LoggedInElsewhere,
    /// A moderation verb from a user who is not an operator, or aimed at an
    /// operator or at oneself.
    NotOperator,
    /// An operator kicked this user: `ERROR kicked <by> [<text>]`; closes.
    Kicked,
    /// The name or the address is banned: `ERROR banned <until> [<text>]`;
    /// closes.
    Banned,
    /// The user may not send messages until then: `ERROR muted <until>`.
    Muted,
    /// A `<duration>` that is not a number and a unit (`s`, `m`, `h`, `d`)
    /// from 1 second to 365 days.
    BadDuration,
}

impl ErrorCode {
    /// Every code, in the contract's order.
    pub const ALL: [ErrorCode; 33] = [
        ErrorCode::BadName,
        ErrorCode::NameTaken,
        ErrorCode::NotLoggedIn,
        ErrorCode::AlreadyLoggedIn,
        ErrorCode::UnknownCommand,
        ErrorCode::EmptyMessage,
        ErrorCode::BadText,
        ErrorCode::LineTooLong,
        ErrorCode::InvalidUtf8,
        ErrorCode::LoginTimeout,
        ErrorCode::IdleTimeout,
        ErrorCode::ServerFull,
        ErrorCode::ShuttingDown,
        ErrorCode::Unavailable,
        ErrorCode::TooManyConnections,
        ErrorCode::BadRoom,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyInRoom,
        ErrorCode::NoSuchUser,
        ErrorCode::BadCount,
        ErrorCode::TooManyRooms,
        ErrorCode::NameRegistered,
        ErrorCode::BadPassword,
        ErrorCode::WeakPassword,
        ErrorCode::NotRegistered,
        ErrorCode::AlreadyRegistered,
        ErrorCode::TooManyTries,
        ErrorCode::LoggedInElsewhere,
        ErrorCode::NotOperator,
        ErrorCode::Kicked,
        ErrorCode::Banned,
        ErrorCode::Muted,
        ErrorCode::BadDuration,
    ];

    /// The code as it travels on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadName => "bad-name",
            ErrorCode::NameTaken => "name-taken",
            ErrorCode::NotLoggedIn => "not-logged-in",
            ErrorCode::AlreadyLoggedIn => "already-logged-in",
            ErrorCode::UnknownCommand => "unknown-command",
            ErrorCode::EmptyMessage => "empty-message",
            ErrorCode::BadText => "bad-text",
            ErrorCode::LineTooLong => "line-too-long",
            ErrorCode::InvalidUtf8 => "invalid-utf8",
            ErrorCode::LoginTimeout => "login-timeout",
            ErrorCode::IdleTimeout => "idle-timeout",
            ErrorCode::ServerFull => "server-full",
            ErrorCode::ShuttingDown => "shutting-down",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::TooManyConnections => "too-many-connections",
            ErrorCode::BadRoom => "bad-room",
            ErrorCode::NotInRoom => "not-in-room",
            ErrorCode::AlreadyInRoom => "already-in-room",
            ErrorCode::NoSuchUser => "no-such-user",
            ErrorCode::BadCount => "bad-count",
            ErrorCode::TooManyRooms => "too-many-rooms",
            ErrorCode::NameRegistered => "name-registered",
            ErrorCode::BadPassword => "bad-password",
            ErrorCode::WeakPassword => "weak-password",
            ErrorCode::NotRegistered => "not-registered",
            ErrorCode::AlreadyRegistered => "already-registered",
            ErrorCode::TooManyTries => "too-many-tries",
            ErrorCode::LoggedInElsewhere => "logged-in-elsewhere",
            ErrorCode::NotOperator => "not-operator",
            ErrorCode::Kicked => "kicked",
            ErrorCode::Banned => "banned",
            ErrorCode::Muted => "muted",
            ErrorCode::BadDuration => "bad-duration",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the contract's error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownErrorCode(pub String);

impl fmt::Display for UnknownErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown error code {:?}", self.0)
    }
}

impl std::error::Error for UnknownErrorCode {}

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_text() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
        }
    }

    #[test]
    fn texts_are_the_contracts() {
        let texts: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            texts,
            [
                "bad-name",
                "name-taken",
                "not-logged-in",
                "already-logged-in",
                "unknown-command",
                "empty-message",
                "bad-text",
                "line-too-long",
                "invalid-utf8",
                "login-timeout",
                "idle-timeout",
                "server-full",
                "shutting-down",
                "unavailable",
                "too-many-connections",
                "bad-room",
                "not-in-room",
                "already-in-room",
                "no-such-user",
                "bad-count",
                "too-many-rooms",
                "name-registered",
                "bad-password",
                "weak-password",
                "not-registered",
                "already-registered",
                "too-many-tries",
                "logged-in-elsewhere",
                "not-operator",
                "kicked",
                "banned",
                "muted",
                "bad-duration",
            ]
        );
    }

    #[test]
    fn unknown_codes_are_refused() {
        assert!("Bad-Name".parse::<ErrorCode>().is_err());
        assert!("".parse::<ErrorCode>().is_err());
    }
}
