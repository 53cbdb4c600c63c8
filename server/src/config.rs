//! Command-line flags and their environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chat_protocol::{DEFAULT_ADDR, MAX_LINE};
use clap::builder::TypedValueParser as _;
use clap::Parser;

/// How a server is set up. Every flag can also come from a `CHAT_…`
/// environment variable; a flag on the command line wins. The help never
/// shows those variables' values (`hide_env_values`): a `--cluster` URL may
/// carry a password, and an unset variable would show as an empty one.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-server",
    version,
    about = "A line-protocol chat server: one room, one order of messages.",
    after_help = "Durations take a unit (500ms, 30s, 5m, 1h) or are plain seconds.\n\nExample:\n  chat-server --addr 0.0.0.0:8000 --idle-timeout 10m\n  nc 127.0.0.1 8000     # then type: NAME alice"
)]
pub struct Config {
    /// Address to listen on, as host:port; port 0 picks a free port. The
    /// first line on stdout is `listening on <address>`.
    #[arg(long, env = "CHAT_ADDR", hide_env_values = true, value_name = "HOST:PORT",
          default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: String,

    /// Longest frame a client may send, in bytes without the line ending.
    #[arg(long, env = "CHAT_MAX_LINE", hide_env_values = true, value_name = "BYTES",
          default_value_t = MAX_LINE,
          value_parser = clap::value_parser!(u32).range(16..=1 << 20).map(|v| v as usize))]
    pub max_line: usize,

    /// Time a new connection has to log in (e.g. 500ms, 30s, 5m; a plain
    /// number is seconds).
    #[arg(long, env = "CHAT_LOGIN_TIMEOUT", hide_env_values = true, value_name = "DURATION",
          default_value = "30s", value_parser = parse_duration)]
    pub login_timeout: Duration,

    /// Time a logged-in user may stay silent before being disconnected
    /// (e.g. 90s, 5m, 1h; a plain number is seconds); any frame, PING
    /// included, counts as activity. 0 means no idle timeout.
    // Spelled out in full so that clap does not read `Option` as "the flag
    // may be absent": it always has a value, and `None` means never.
    #[arg(long, env = "CHAT_IDLE_TIMEOUT", hide_env_values = true, value_name = "DURATION",
          default_value = "300s", value_parser = parse_idle_timeout)]
    pub idle_timeout: std::option::Option<Duration>,

    /// Most connections open at once (logged in or not); more get
    /// `ERROR server-full`.
    #[arg(long, env = "CHAT_MAX_CLIENTS", hide_env_values = true, value_name = "N",
          default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_clients: usize,

    /// Broadcast frames a connection may fall behind before the server skips
    /// frames for it and later sends `DROPPED <n>` (rounded up to a power of two).
    #[arg(long, env = "CHAT_CLIENT_BUFFER", hide_env_values = true, value_name = "FRAMES",
          default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20).map(|v| v as usize))]
    pub client_buffer: usize,

    /// Join a cluster: several servers pointed at one Redis form one room
    /// (e.g. redis://127.0.0.1:6379). Without it the server needs nothing else.
    #[arg(long, env = "CHAT_CLUSTER", hide_env_values = true, value_name = "URL")]
    pub cluster: Option<String>,

    /// This server's id in the cluster (letters, digits, '_', '-', '.');
    /// random when not given.
    #[arg(long, env = "CHAT_NODE_ID", hide_env_values = true, value_name = "ID",
          value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// Cluster mode: how long this server's users keep their names after it
    /// stops renewing them (it renews every quarter lease while alive); at
    /// least 1s (e.g. 10s, 1m; a plain number is seconds).
    #[arg(long, env = "CHAT_LEASE", hide_env_values = true, value_name = "DURATION",
          default_value = "10s", value_parser = parse_lease)]
    pub lease: Duration,

    /// TLS certificate chain (PEM). With --tls-key, the server also listens
    /// for TLS on --tls-addr; SIGHUP reads both files again.
    #[arg(
        long,
        env = "CHAT_TLS_CERT",
        hide_env_values = true,
        value_name = "PEM"
    )]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM), for --tls-cert.
    #[arg(long, env = "CHAT_TLS_KEY", hide_env_values = true, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// Address of the TLS listener, as host:port (with --tls-cert and
    /// --tls-key); port 0 picks a free port. Its line on stdout is
    /// `listening for TLS on <address>`.
    #[arg(long, env = "CHAT_TLS_ADDR", hide_env_values = true, value_name = "HOST:PORT",
          default_value = DEFAULT_TLS_ADDR, value_parser = parse_addr)]
    pub tls_addr: String,

    /// Most connections open at once from one IP address (IPv6: one /64),
    /// logged in or not, over both listeners; more get
    /// `ERROR too-many-connections`. Loopback is spared unless
    /// --limits-on-loopback.
    #[arg(long, env = "CHAT_MAX_PER_IP", hide_env_values = true, value_name = "N",
          default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_per_ip: usize,

    /// Frames a connection may send at once before --flood-rate applies;
    /// at least 1.
    #[arg(long, env = "CHAT_FLOOD_BURST", hide_env_values = true, value_name = "FRAMES",
          default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub flood_burst: u32,

    /// Frames a second a connection may send after its burst; beyond that
    /// the server reads it more slowly. 0 turns flood control off.
    #[arg(
        long,
        env = "CHAT_FLOOD_RATE",
        hide_env_values = true,
        value_name = "FRAMES",
        default_value_t = 5
    )]
    pub flood_rate: u32,

    /// Apply --max-per-ip and flood control to loopback peers too
    /// (127.0.0.0/8, ::1), which are otherwise spared for local tools.
    #[arg(long, env = "CHAT_LIMITS_ON_LOOPBACK", hide_env_values = true)]
    pub limits_on_loopback: bool,

    #[command(subcommand)]
    pub tool: Option<Tool>,
}

/// Where the TLS listener listens unless told otherwise.
pub const DEFAULT_TLS_ADDR: &str = "127.0.0.1:8443";

/// What the binary can do besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Tool {
    /// Make a self-signed certificate and key for trying TLS out, as
    /// DIR/cert.pem and DIR/key.pem; clients trust it with
    /// `chat-client --tls --ca DIR/cert.pem`.
    Mkcert {
        /// Directory to write cert.pem and key.pem to.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A host name or IP address the certificate is for; repeat for
        /// more (default: localhost, 127.0.0.1 and ::1).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
    },
}

impl Config {
    /// The TLS certificate and key files, if TLS is asked for; giving only
    /// one of them is an error.
    pub fn tls_files(&self) -> Result<Option<(&std::path::Path, &std::path::Path)>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err("--tls-cert needs --tls-key too".into()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert too".into()),
        }
    }
}

/// What `--addr` needs: a `host:port` that can be listened on. Only the
/// form is checked here; whether the host resolves is learnt when binding.
fn parse_addr(text: &str) -> Result<String, String> {
    const USAGE: &str = "--addr needs host:port, e.g. 127.0.0.1:8000 (port 0 picks a free one)";
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    // A host name: `localhost:8000`. A colon or bracket in the host part
    // is an IPv6 address that lacks its port or its brackets.
    match text.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains([':', '[', ']'])
                && port.parse::<u16>().is_ok() =>
        {
            Ok(text.to_owned())
        }
        _ => Err(USAGE.into()),
    }
}

fn parse_node_id(text: &str) -> Result<String, String> {
    if chat_protocol::is_valid_name(text) {
        Ok(text.to_owned())
    } else {
        Err("use 1 to 32 letters, digits, '_', '-' or '.', starting with a letter or digit".into())
    }
}

fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = parse_duration(text)?;
    if lease < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(lease)
}

/// An idle timeout: a duration, or 0 for none.
fn parse_idle_timeout(text: &str) -> Result<Option<Duration>, String> {
    match parse_any_duration(text)? {
        idle if idle.is_zero() => Ok(None),
        idle => Ok(Some(idle)),
    }
}

/// A duration longer than zero.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_any_duration(text)?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// A duration such as `500ms`, `30s`, `5m` or `1h 30m`; a bare number is seconds.
fn parse_any_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["chat-server"])
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn defaults_are_the_contracts() {
        let config = Config::default();
        assert_eq!(config.addr, "127.0.0.1:8000");
        assert_eq!(config.max_line, 4096);
        assert_eq!(config.login_timeout, Duration::from_secs(30));
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(config.max_clients, 10_000);
        assert_eq!(config.client_buffer, 1024);
        assert_eq!(config.tls_addr, "127.0.0.1:8443");
        assert_eq!((config.tls_cert, config.tls_key), (None, None));
        assert_eq!(config.max_per_ip, 16);
        assert_eq!(config.flood_burst, 10);
        assert_eq!(config.flood_rate, 5);
        assert!(!config.limits_on_loopback);
    }

    #[test]
    fn tls_needs_both_files() {
        let both = Config::try_parse_from(["chat-server", "--tls-cert", "c", "--tls-key", "k"])
            .expect("valid");
        assert!(matches!(both.tls_files(), Ok(Some(_))));
        let cert = Config::try_parse_from(["chat-server", "--tls-cert", "c"]).expect("valid");
        assert!(cert.tls_files().expect_err("no key").contains("--tls-key"));
        let key = Config::try_parse_from(["chat-server", "--tls-key", "k"]).expect("valid");
        assert!(key.tls_files().expect_err("no cert").contains("--tls-cert"));
    }

    #[test]
    fn flags_are_checked() {
        assert!(Config::try_parse_from(["chat-server", "--max-clients", "0"]).is_err());
        assert!(Config::try_parse_from(["chat-server", "--idle-timeout", "never"]).is_err());
        let config =
            Config::try_parse_from(["chat-server", "--login-timeout", "250ms"]).expect("valid");
        assert_eq!(config.login_timeout, Duration::from_millis(250));
    }

    #[test]
    fn idle_timeout_zero_means_none_but_login_timeout_must_be_positive() {
        for zero in ["0", "0s", "0ms"] {
            let config =
                Config::try_parse_from(["chat-server", "--idle-timeout", zero]).expect("valid");
            assert_eq!(config.idle_timeout, None, "{zero}");
        }
        let config =
            Config::try_parse_from(["chat-server", "--idle-timeout", "90s"]).expect("valid");
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(90)));
        assert!(Config::try_parse_from(["chat-server", "--login-timeout", "0"]).is_err());
    }

    #[test]
    fn addr_needs_host_and_port() {
        for good in [
            "127.0.0.1:0",
            "0.0.0.0:8000",
            "[::1]:8000",
            "localhost:8000",
        ] {
            let config = Config::try_parse_from(["chat-server", "--addr", good]);
            assert_eq!(config.expect(good).addr, good);
        }
        for bad in [
            "127.0.0.1",
            "localhost",
            ":8000",
            "::1",
            "::1:8000",
            "host:port",
            "a:99999",
        ] {
            let error = Config::try_parse_from(["chat-server", "--addr", bad]).expect_err(bad);
            assert!(
                error
                    .to_string()
                    .contains("--addr needs host:port, e.g. 127.0.0.1:8000"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn help_wraps_names_its_placeholders_and_hides_env_values() {
        let help = Config::command()
            .term_width(80)
            .render_long_help()
            .to_string();
        for line in help.lines() {
            assert!(line.chars().count() <= 80, "too long: {line:?}");
        }
        for placeholder in [
            "--addr <HOST:PORT>",
            "--max-line <BYTES>",
            "--login-timeout <DURATION>",
            "--idle-timeout <DURATION>",
            "--max-clients <N>",
            "--client-buffer <FRAMES>",
            "--cluster <URL>",
            "--node-id <ID>",
            "--lease <DURATION>",
        ] {
            assert!(help.contains(placeholder), "{placeholder} missing:\n{help}");
        }
        assert!(help.contains("[env: CHAT_ADDR]"), "{help}");
        assert!(!help.contains("=]"), "an env value shows:\n{help}");
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains("0 means no idle timeout"), "{help}");
    }
}
