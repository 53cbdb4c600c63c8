//! Command-line flags and the environment variables behind them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use chat_protocol::{is_valid_name, is_valid_room, name_key, Password, DEFAULT_ADDR, ROOM_RULES};
use clap::Parser;

use crate::password;
use crate::tls::Trust;

/// What the user asked for on the command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-client",
    version,
    about = "The terminal client for the chat server: type to talk, /help for commands.",
    long_about = "The terminal client for the chat server.\n\n\
        At a terminal it is a line editor: what is said appears above \
        the prompt while you type. Lines go to the current room (the lobby, \
        until you /join one); /msg, /go, /part, /who, /rooms, /history, \
        /quit [text] and /help do the rest, and Tab completes. \
        A registered name asks for its password without showing it; \
        /register, /password and /unregister manage yours, and operators \
        have /kick, /ban, /unban, /mute, /unmute and /bans. \
        With stdin or stdout redirected it behaves like netcat for scripts: \
        every stdin line is sent as a message (to the lobby, or to --room), \
        what is said is printed, and the end of stdin leaves.",
    after_help = "Examples:\n  \
        chat-client --name alice\n  \
        chat-client --name bob --addr 10.0.0.7:8000 --no-color\n  \
        printf 'hello\\nbye\\n' | chat-client --name bot --raw\n  \
        echo 'build is green' | chat-client --name ci --room '#ops'\n  \
        echo 'deployed' | chat-client --name ci --password-file ~/.chat-password\n\n\
        Environment: CHAT_PASSWORD holds the password of a registered name for \
        scripts (--password-file wins over it).\n\n\
        Exit codes: 0 left, 1 cannot connect, no chat server there or local failure, \
        2 not logged in (name refused), 3 connection closed by the server, \
        4 the server is unavailable (it could not log anyone in; try again later), \
        5 the password did not do (none given for a registered name in a pipe, \
        wrong 3 times, given for a name that is not registered, too many tries, \
        or the password file cannot be read), \
        6 logged in somewhere else (this session was closed), \
        7 kicked by an operator, 8 banned."
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

    /// File that keeps typed lines across runs, for every name; '' keeps
    /// none. Without it each name has its own file in the user's data
    /// directory (~/.local/share/chat-client/NAME.history on Linux).
    #[arg(long, value_name = "FILE")]
    pub history: Option<OsString>,

    /// Print the server's frames exactly as received instead of rendering
    /// them for people.
    #[arg(long)]
    pub raw: bool,

    /// Join this room after logging in: at a terminal it is the current
    /// room; in a pipe every stdin line is said there instead of the lobby.
    #[arg(long, env = "CHAT_ROOM", value_name = "#ROOM", value_parser = parse_room)]
    pub room: Option<String>,

    /// Send a PING after this long without sending anything, so that the
    /// server's idle timeout (300s by default) does not disconnect someone
    /// who only reads; 0 or 'off' sends none.
    #[arg(long, env = "CHAT_KEEPALIVE", value_name = "DURATION", default_value = "60s", value_parser = parse_keepalive)]
    pub keepalive: Duration,

    /// How long the server may take to answer the login before the client
    /// gives up: whatever listens at the address is not a chat server.
    #[arg(long, env = "CHAT_LOGIN_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = parse_login_timeout)]
    pub login_timeout: Duration,

    /// Connect over TLS, trusting the system's root certificates; --addr
    /// then names the server's TLS listener (its --tls-addr, port 8443 by
    /// default). A certificate that does
    /// not verify ends the attempt; there is no plaintext fallback.
    #[arg(long, env = "CHAT_TLS")]
    pub tls: bool,

    /// File whose first line is the password of the registered --name,
    /// sent with the login (CHAT_PASSWORD serves too). Without either, a
    /// registered name asks for it at a terminal, and fails in a pipe.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Trust only the certificates in this PEM file (a private CA, or a
    /// certificate made by `chat-server mkcert`); implies --tls.
    #[arg(long, env = "CHAT_CA", value_name = "PEM")]
    pub ca: Option<PathBuf>,
}

/// A duration as the server's flags take them: `500ms`, `30s`, `5m`, or
/// plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    }
}

/// A login timeout: some time, since none would refuse every server.
fn parse_login_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("the login needs some time; give more than 0".to_owned()),
        limit => Ok(limit),
    }
}

/// A room to join, as the protocol spells rooms.
fn parse_room(text: &str) -> Result<String, String> {
    if is_valid_room(text) {
        Ok(text.to_owned())
    } else {
        Err(ROOM_RULES.to_owned())
    }
}

/// A keepalive interval; `off` is zero, which turns it off.
fn parse_keepalive(text: &str) -> Result<Duration, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// Where the history of `name` is kept unless `--history` says otherwise:
/// a file of its own, so that one person's lines never come up under
/// another name, in the user's data directory (`~/.local/share` on Linux)
/// or, where there is none, the home directory; nowhere if there is neither.
///
/// Names that differ only in case are one user, and share the file. A name
/// against the rules gets none: it is not safe in a path (`../x`), and the
/// server would not have welcomed it.
fn default_history(name: &str) -> Option<PathBuf> {
    if !is_valid_name(name) {
        return None;
    }
    let file = format!("{}.history", name_key(name));
    dirs::data_dir()
        .map(|dir| dir.join("chat-client").join(&file))
        .or_else(|| dirs::home_dir().map(|home| home.join(".chat-client").join(&file)))
}

impl Options {
    /// Whom to trust over TLS, if the connection is to use TLS at all.
    pub fn trust(&self) -> Option<Trust> {
        match &self.ca {
            Some(ca) => Some(Trust::Ca(ca.clone())),
            None => self.tls.then_some(Trust::System),
        }
    }

    /// The history file to use for `name`, if any: the one `--history`
    /// names (`''` keeps none), or the name's own.
    pub fn history_file(&self, name: &str) -> Option<PathBuf> {
        match &self.history {
            Some(file) => (!file.is_empty()).then(|| PathBuf::from(file)),
            None => default_history(name),
        }
    }

    /// How long the client may send nothing before it sends a `PING`, if
    /// it keeps the connection alive at all.
    pub fn keepalive(&self) -> Option<Duration> {
        (!self.keepalive.is_zero()).then_some(self.keepalive)
    }

    /// The password given up front, from `--password-file` or else
    /// `CHAT_PASSWORD`, if any; why it cannot be used, without what it is.
    pub fn password(&self) -> Result<Option<Password>, String> {
        password::given(
            self.password_file.as_deref(),
            std::env::var_os(password::PASSWORD_VAR),
        )
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
            parse(&["--name", "a", "--history", ""]).history_file("a"),
            None
        );
        assert_eq!(
            parse(&["--name", "a", "--history", "/tmp/h"]).history_file("b"),
            Some(PathBuf::from("/tmp/h"))
        );
    }

    #[test]
    fn each_name_has_its_own_history() {
        let options = parse(&["--name", "alice"]);
        let Some(alice) = options.history_file("alice") else {
            // No data or home directory here: no history for anyone.
            return;
        };
        assert!(alice.ends_with("chat-client/alice.history"), "{alice:?}");
        assert_eq!(options.history_file("Alice"), Some(alice.clone()));
        let bob = options.history_file("bob").expect("a history for bob");
        assert_ne!(bob, alice);
        assert_eq!(bob.parent(), alice.parent());
        assert_eq!(options.history_file("../etc/x"), None);
        assert_eq!(options.history_file(""), None);
    }

    #[test]
    fn address_defaults_to_the_protocols() {
        assert_eq!(parse(&["--name", "a"]).addr, DEFAULT_ADDR);
    }

    #[test]
    fn keepalive_defaults_to_a_minute_and_can_be_turned_off() {
        assert_eq!(
            parse(&["--name", "a"]).keepalive(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse(&["--name", "a", "--keepalive", "250ms"]).keepalive(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse(&["--name", "a", "--keepalive", "90"]).keepalive(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse(&["--name", "a", "--keepalive", "0"]).keepalive(),
            None
        );
        assert_eq!(
            parse(&["--name", "a", "--keepalive", "off"]).keepalive(),
            None
        );
        assert!(
            Options::try_parse_from(["chat-client", "--name", "a", "--keepalive", "soon"]).is_err()
        );
    }

    #[test]
    fn login_timeout_defaults_to_five_seconds_and_is_never_zero() {
        assert_eq!(
            parse(&["--name", "a"]).login_timeout,
            Duration::from_secs(5)
        );
        assert_eq!(
            parse(&["--name", "a", "--login-timeout", "1m"]).login_timeout,
            Duration::from_secs(60)
        );
        assert!(
            Options::try_parse_from(["chat-client", "--name", "a", "--login-timeout", "0"])
                .is_err()
        );
    }

    #[test]
    fn a_room_must_be_one() {
        assert_eq!(parse(&["--name", "a"]).room, None);
        assert_eq!(
            parse(&["--name", "a", "--room", "#Ops"]).room.as_deref(),
            Some("#Ops")
        );
        for bad in ["ops", "#", "#a b", "#b!d"] {
            assert!(
                Options::try_parse_from(["chat-client", "--name", "a", "--room", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn tls_is_off_unless_asked_and_ca_implies_it() {
        assert_eq!(parse(&["--name", "a"]).trust(), None);
        assert_eq!(
            parse(&["--name", "a", "--tls"]).trust(),
            Some(Trust::System)
        );
        assert_eq!(
            parse(&["--name", "a", "--ca", "ca.pem"]).trust(),
            Some(Trust::Ca("ca.pem".into()))
        );
    }

    #[test]
    fn a_password_file_is_a_path_and_no_password_is_a_flag() {
        assert_eq!(parse(&["--name", "a"]).password_file, None);
        assert_eq!(
            parse(&["--name", "a", "--password-file", "/run/pw"]).password_file,
            Some(PathBuf::from("/run/pw"))
        );
        // A password on the command line would show in `ps`.
        assert!(
            Options::try_parse_from(["chat-client", "--name", "a", "--password", "x"]).is_err()
        );
        let missing = parse(&["--name", "a", "--password-file", "/nonexistent/pw"]);
        assert!(missing
            .password()
            .unwrap_err()
            .starts_with("cannot read /nonexistent/pw: "));
    }

    #[test]
    fn no_color_flag_wins() {
        assert!(!parse(&["--name", "a", "--no-color"]).colors());
    }
}
