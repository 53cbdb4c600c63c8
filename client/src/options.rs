//! Command-line flags and the environment variables behind them.

use std::ffi::OsString;
use std::path::PathBuf;

use chat_protocol::DEFAULT_ADDR;
use clap::Parser;

/// What the user asked for on the command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-client",
    version,
    about = "The terminal client for the chat server: type to talk, /help for commands.",
    long_about = "The terminal client for the chat server.\n\n\
        At a terminal it is a line editor: the room's messages appear above \
        the prompt while you type, with /who, /quit [text] and /help. \
        With stdin or stdout redirected it behaves like netcat for scripts: \
        every stdin line is sent as a message, what the room says is printed, \
        and the end of stdin leaves the room.",
    after_help = "Examples:\n  \
        chat-client --name alice\n  \
        chat-client --name bob --addr 10.0.0.7:8000 --no-color\n  \
        printf 'hello\\nbye\\n' | chat-client --name bot --raw\n\n\
        Exit codes: 0 left, 1 cannot connect or local failure, \
        2 not logged in (name refused), 3 connection closed by the server."
)]
pub struct Options {
    /// Name to log in with: 1 to 32 letters, digits, '_', '-' or '.',
    /// starting with a letter or digit.
    #[arg(long, env = "CHAT_NAME")]
    pub name: String,

    /// Address of the chat server, as host:port.
    #[arg(long, env = "CHAT_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,

    /// Do not color names (colors are also off when NO_COLOR is set).
    #[arg(long)]
    pub no_color: bool,

    /// File that keeps typed lines across runs; '' keeps none.
    #[arg(long, value_name = "FILE", default_value_os_t = default_history())]
    pub history: OsString,

    /// Print the server's frames exactly as received instead of rendering
    /// them for people.
    #[arg(long)]
    pub raw: bool,
}

/// Where history is kept unless `--history` says otherwise: in the user's
/// data directory (`~/.local/share` on Linux) or, where there is none, the
/// home directory; nowhere if there is neither.
fn default_history() -> OsString {
    dirs::data_dir()
        .map(|dir| dir.join("chat-client").join("history"))
        .or_else(|| dirs::home_dir().map(|home| home.join(".chat-client-history")))
        .map(PathBuf::into_os_string)
        .unwrap_or_default()
}

impl Options {
    /// The history file to use, if any: `--history ''` keeps none.
    pub fn history_file(&self) -> Option<PathBuf> {
        (!self.history.is_empty()).then(|| PathBuf::from(&self.history))
    }

    /// Whether names may be colored: not with `--no-color`, nor when
    /// `NO_COLOR` is set to anything but the empty string (no-color.org).
    pub fn colors(&self) -> bool {
        !self.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("chat-client").chain(args.iter().copied()))
            .expect("valid flags")
    }

    #[test]
    fn empty_history_flag_turns_history_off() {
        assert_eq!(
            parse(&["--name", "a", "--history", ""]).history_file(),
            None
        );
        assert_eq!(
            parse(&["--name", "a", "--history", "/tmp/h"]).history_file(),
            Some(PathBuf::from("/tmp/h"))
        );
    }

    #[test]
    fn address_defaults_to_the_protocols() {
        assert_eq!(parse(&["--name", "a"]).addr, DEFAULT_ADDR);
    }

    #[test]
    fn no_color_flag_wins() {
        assert!(!parse(&["--name", "a", "--no-color"]).colors());
    }
}
