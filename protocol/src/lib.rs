//! The chat line protocol, version 1: the only place that knows the wire
//! format. The server, the client and the benchmark speak through it.
//!
//! # The protocol in brief
//!
//! A connection carries UTF-8 text lines over TCP, one frame per line. A line
//! ends with `\n`; a `\r\n` ending is accepted from clients, and the server
//! always sends a bare `\n`. A frame is a verb, optionally followed by one
//! space and the rest of the line. A client's frames may be at most 4096
//! bytes, not counting the line ending; the server's own lines have no such
//! limit, because `NAMES` grows with the room.
//!
//! A client first logs in with `NAME <name>`. A name is 1 to 32 ASCII letters,
//! digits, `_`, `-` or `.`, starting with a letter or digit, and no two
//! connected users may have names that differ only in letter case. The server
//! answers `WELCOME <name>` and then `NAMES …`, the whole room sorted by
//! lower-cased name; everyone else sees `JOIN <name>`. A failed login is
//! answered with an `ERROR` and the client may try another name on the same
//! connection.
//!
//! Once in, `MSG <text>` reaches every user, the sender included, as
//! `MSG <from> <text>`, with the text exactly as typed (inner and trailing
//! spaces too). `WHO` asks for `NAMES` again. `PING [<token>]` is answered
//! with `PONG [<token>]` only after every earlier frame of the connection has
//! been handled, so a client can use it as a barrier; it works before login
//! too. `LEAVE [<text>]` ends the session: the others see
//! `LEAVE <name> [<text>]`, the leaver gets `BYE`, and the connection closes.
//! Whenever a user disappears for any other reason (a dropped connection, an
//! idle timeout) the others see `LEAVE <name>` once.
//!
//! All users see the broadcast frames (`JOIN`, `MSG`, `LEAVE`) in one order,
//! and each sees exactly those broadcast after its `WELCOME`. A user whose
//! terminal reads too slowly never slows anyone else: once its backlog is
//! full the server skips frames for it alone and later sends `DROPPED <n>`,
//! after which frames are in order again.
//!
//! Refusals are `ERROR <code> [<detail>]`; the codes are [`ErrorCode`].
//! Most leave the connection open; `login-timeout`, `idle-timeout`,
//! `server-full` and `shutting-down` announce a close.
//!
//! ```text
//! C: NAME alice
//! S: WELCOME alice
//! S: NAMES alice bob
//! C: MSG hi bob
//! S: MSG alice hi bob
//! C: LEAVE see you
//! S: BYE
//! ```
//! Meanwhile bob saw `JOIN alice`, `MSG alice hi bob`, `LEAVE alice see you`.
//!
//! # Choices where the contract is silent
//!
//! - An unknown verb is `unknown-command` even before login; a known verb
//!   other than `NAME`/`PING` before login is `not-logged-in`, whatever its
//!   arguments. An empty line is an unknown command.
//! - Forbidden characters are checked in every argument, `PING` tokens
//!   included. Besides the contract's control characters, the Unicode
//!   bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069) are
//!   `bad-text`: they make a line display as something it does not say.
//! - `WHO` ignores anything after the verb. A `LEAVE` text of spaces only is
//!   no text. A `PING` token is echoed exactly.
//! - A final line cut off by the end of the connection, without `\n`, is
//!   still handled.

mod client_frame;
mod codec;
mod error;
mod server_frame;
mod text;

pub use client_frame::{ClientFrame, Rejection, Verb, NAME_RULES};
pub use codec::{
    ClientCodec, ClientDecodeError, LineCodec, LineError, ServerCodec, MAX_LINE, MAX_SERVER_LINE,
};
pub use error::{ErrorCode, UnknownErrorCode};
pub use server_frame::{MalformedFrame, ServerFrame};
pub use text::{forbidden_char, is_blank, is_valid_name, name_key, MAX_NAME_LEN};

/// The address servers listen on and clients connect to unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8000";
