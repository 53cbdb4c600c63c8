//! `chat-client`: the terminal client for the chat line protocol.
//!
//! Two ways of running share one connection layer:
//!
//! - **Interactive** ([`interactive`]), when stdin and stdout are terminals:
//!   a line editor (rustyline) with history, where what is said appears
//!   above the prompt without disturbing what the user is typing; rooms
//!   with a current one shown in the prompt, direct messages, history and
//!   the other [`commands`], Tab completion ([`complete`]), colored names
//!   and `HH:MM` timestamps.
//! - **Piped** ([`piped`]), otherwise: the seed's netcat behavior for scripts
//!   and tests. Every stdin line is a message (to the lobby, or to the room
//!   of `--room`), the frames go to stdout (rendered for people, or exactly
//!   as received with `--raw`), and the end of stdin leaves.
//!
//! Both speak to the server only through `chat-protocol`: [`connection`]
//! connects and logs in, [`session`] follows the conversation until it ends,
//! [`render`] turns frames into lines for people, and [`rooms`] keeps track
//! of where the user is. [`password`] gets the password of a registered
//! name without showing it.
//!
//! The exit code tells a script how things ended: see [`Exit`].

pub mod color;
pub mod commands;
pub mod complete;
pub mod connection;
pub mod interactive;
pub mod options;
pub mod password;
pub mod piped;
pub mod reflow;
pub mod render;
pub mod rooms;
pub mod screen;
pub mod session;
pub mod tls;

use std::io::IsTerminal as _;
use std::process::ExitCode;

pub use options::Options;

/// How a run ended. Each ending has its own exit code so that scripts can
/// tell "the server is not there" from "that name is taken" from "the server
/// went away".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The user left (`/quit`, Ctrl-D, end of stdin): exit code 0.
    Left,
    /// No connection could be made (or the user gave up connecting), what
    /// answered is not a chat server, or the client itself failed (its
    /// terminal or stdout): exit code 1.
    Failed,
    /// Connected, but not logged in: the name was refused, the server
    /// closed the connection before accepting one, or the user gave up
    /// logging in: exit code 2.
    NotLoggedIn,
    /// The server closed the connection, or it broke, while logged in:
    /// exit code 3.
    Disconnected,
    /// The server could not log anyone in (`ERROR unavailable`), not even
    /// after the client tried again for a while: exit code 4. Nothing is
    /// wrong with the name; later, the same command may work.
    Unavailable,
    /// The password did not do: the name is registered and no password
    /// was at hand (piped mode), it was wrong [`password::PASSWORD_TRIES`]
    /// times (or once, given up front in piped mode), one was given for a
    /// name that is not registered, the name had too many wrong passwords
    /// in the last minute, or the password file could not be read: exit
    /// code 5.
    Password,
    /// The same registered name logged in on another connection, and the
    /// server closed this one (`ERROR logged-in-elsewhere`): exit code 6.
    LoggedInElsewhere,
    /// An operator kicked this user (`ERROR kicked`): exit code 7.
    Kicked,
    /// The name or the address is banned (`ERROR banned`), at login or
    /// while logged in: exit code 8.
    Banned,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(match exit {
            Exit::Left => 0,
            Exit::Failed => 1,
            Exit::NotLoggedIn => 2,
            Exit::Disconnected => 3,
            Exit::Unavailable => 4,
            Exit::Password => 5,
            Exit::LoggedInElsewhere => 6,
            Exit::Kicked => 7,
            Exit::Banned => 8,
        })
    }
}

/// Runs the client as the terminal allows: interactive when a person is at
/// the keyboard and screen, piped otherwise.
pub fn run(options: Options) -> Exit {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chat-client: cannot start: {e}");
            return Exit::Failed;
        }
    };
    let exit = if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        interactive::run(&options, &runtime)
    } else {
        runtime.block_on(piped::run(&options))
    };
    // Whatever the runtime still runs (a writer stuck on a dead socket, the
    // interactive mode's wake-up loop) must not hold the exit up.
    runtime.shutdown_background();
    exit
}
