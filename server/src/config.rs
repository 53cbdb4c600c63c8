//! Command-line flags and their environment variables.

use std::time::Duration;

use chat_protocol::{DEFAULT_ADDR, MAX_LINE};
use clap::builder::TypedValueParser as _;
use clap::Parser;

/// How a server is set up. Every flag can also come from a `CHAT_…`
/// environment variable; a flag on the command line wins.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-server",
    version,
    about = "A line-protocol chat server: one room, one order of messages.",
    after_help = "Example:\n  chat-server --addr 0.0.0.0:8000 --idle-timeout 10m\n  nc 127.0.0.1 8000     # then type: NAME alice"
)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port. The first line on
    /// stdout is `listening on <address>`.
    #[arg(long, env = "CHAT_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,

    /// Longest frame a client may send, in bytes without the line ending.
    #[arg(long, env = "CHAT_MAX_LINE", default_value_t = MAX_LINE,
          value_parser = clap::value_parser!(u32).range(16..=1 << 20).map(|v| v as usize))]
    pub max_line: usize,

    /// Time a new connection has to log in (e.g. 500ms, 30s, 5m).
    #[arg(long, env = "CHAT_LOGIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub login_timeout: Duration,

    /// Time a logged-in user may stay silent before being disconnected;
    /// any frame, PING included, counts as activity.
    #[arg(long, env = "CHAT_IDLE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Most connections open at once (logged in or not); more get
    /// `ERROR server-full`.
    #[arg(long, env = "CHAT_MAX_CLIENTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_clients: usize,

    /// Broadcast frames a connection may fall behind before the server skips
    /// frames for it and later sends `DROPPED <n>` (rounded up to a power of two).
    #[arg(long, env = "CHAT_CLIENT_BUFFER", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20).map(|v| v as usize))]
    pub client_buffer: usize,

    /// Join a cluster: several servers pointed at one Redis form one room
    /// (e.g. redis://127.0.0.1:6379). Without it the server needs nothing else.
    #[arg(long, env = "CHAT_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,

    /// This server's id in the cluster (letters, digits, '_', '-', '.');
    /// random when not given.
    #[arg(long, env = "CHAT_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// Cluster mode: how long this server's users keep their names after it
    /// stops renewing them (it renews every quarter lease while alive).
    #[arg(long, env = "CHAT_LEASE", default_value = "10s", value_parser = parse_lease)]
    pub lease: Duration,
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

/// A duration such as `500ms`, `30s`, `5m` or `1h 30m`; a bare number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = match text.trim().parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string())?,
    };
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["chat-server"])
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(config.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.max_clients, 10_000);
        assert_eq!(config.client_buffer, 1024);
    }

    #[test]
    fn flags_are_checked() {
        assert!(Config::try_parse_from(["chat-server", "--max-clients", "0"]).is_err());
        assert!(Config::try_parse_from(["chat-server", "--idle-timeout", "never"]).is_err());
        let config =
            Config::try_parse_from(["chat-server", "--login-timeout", "250ms"]).expect("valid");
        assert_eq!(config.login_timeout, Duration::from_millis(250));
    }
}
