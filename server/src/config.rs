//! Command-line flags, their environment variables, and the config file.
//!
//! Where a setting comes from, first to last: the command line, the
//! `CHAT_…` variable, the `--config` file ([`file`]), the default.

mod file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chat_protocol::{DEFAULT_ADDR, MAX_LINE};
use clap::builder::TypedValueParser as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser};

/// How a server is set up. Every flag can also come from a `CHAT_…`
/// environment variable and from a key of the `--config` file; a flag on
/// the command line wins, then the variable, then the file. The help never
/// shows those variables' values (`hide_env_values`): a `--cluster` URL may
/// carry a password, and an unset variable would show as an empty one.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-server",
    version,
    about = "A line-protocol chat server: a lobby and rooms, one order per room, no reader that keeps up loses a line.",
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

    /// Frames queued for one connection before the senders wait for it; a
    /// client whose socket has taken nothing for 250 ms with this many
    /// queued is skipped and later told `DROPPED <n>`.
    #[arg(long, env = "CHAT_CLIENT_BUFFER", hide_env_values = true, value_name = "FRAMES",
          default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20).map(|v| v as usize))]
    pub client_buffer: usize,

    /// Flood control: frames a connection may send in a burst before the
    /// server reads it more slowly (at least 1).
    #[arg(long, env = "CHAT_FLOOD_BURST", hide_env_values = true, value_name = "FRAMES",
          default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub flood_burst: u32,

    /// Flood control: frames a second a connection may send after its burst;
    /// beyond it frames wait, in order, and none is lost (0 turns it off).
    #[arg(
        long,
        env = "CHAT_FLOOD_RATE",
        hide_env_values = true,
        value_name = "FRAMES",
        default_value_t = 5
    )]
    pub flood_rate: u32,

    /// Apply --max-per-ip, --connect-burst/--connect-rate and flood control
    /// to loopback peers too (127.0.0.0/8, ::1), which are otherwise spared.
    #[arg(long, env = "CHAT_LIMITS_ON_LOOPBACK", hide_env_values = true)]
    pub limits_on_loopback: bool,

    /// Messages kept per room, and for the lobby, for `HISTORY` (0 keeps none).
    #[arg(long, env = "CHAT_HISTORY", hide_env_values = true, value_name = "N",
          default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(0..=1 << 20).map(|v| v as usize))]
    pub history: usize,

    /// Rooms one user may be in at once (the lobby does not count).
    #[arg(long, env = "CHAT_MAX_ROOMS_PER_USER", hide_env_values = true, value_name = "N",
          default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_rooms_per_user: usize,

    /// Rooms that may exist at once (the lobby does not count).
    #[arg(long, env = "CHAT_MAX_ROOMS", hide_env_values = true, value_name = "N",
          default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_rooms: usize,

    /// Rooms the users of one address (IPv6: one /64) may be in together
    /// (memberships; the lobby does not count); a JOIN beyond it gets
    /// `ERROR too-many-rooms`. Loopback is spared unless
    /// --limits-on-loopback. Single process only for now.
    #[arg(long, env = "CHAT_MAX_ROOMS_PER_IP", hide_env_values = true, value_name = "N",
          default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_rooms_per_ip: usize,

    /// Bytes of history the lobby and every room may keep in memory
    /// together (messages and their senders' names; e.g. 64MiB, 512KiB, a
    /// plain number is bytes); beyond it the oldest messages of the room
    /// that holds the most are forgotten first. Single process only.
    #[arg(long, env = "CHAT_HISTORY_MEMORY", hide_env_values = true, value_name = "SIZE",
          default_value = "64MiB", value_parser = parse_size)]
    pub history_memory: usize,

    /// A client whose socket has taken nothing for this long while output
    /// waits for it is disconnected; the others see its LEAVE (e.g. 60s,
    /// 2m; a plain number is seconds).
    #[arg(long, env = "CHAT_STALL_TIMEOUT", hide_env_values = true, value_name = "DURATION",
          default_value = "60s", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    /// Flood control shared by all connections of one address (IPv6: one
    /// /64): frames they may send together in a burst (at least 1).
    #[arg(long, env = "CHAT_FLOOD_BURST_PER_IP", hide_env_values = true, value_name = "FRAMES",
          default_value_t = 40,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub flood_burst_per_ip: u32,

    /// Frames a second all connections of one address may send together
    /// after their burst, on top of each connection's own --flood-rate;
    /// beyond it frames wait, none is lost (0 turns only this one off).
    #[arg(
        long,
        env = "CHAT_FLOOD_RATE_PER_IP",
        hide_env_values = true,
        value_name = "FRAMES",
        default_value_t = 20
    )]
    pub flood_rate_per_ip: u32,

    /// Join a cluster: several servers pointed at one Redis form one server,
    /// with one lobby and the same rooms (e.g. redis://127.0.0.1:6379).
    /// Without it the server needs nothing else.
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
          default_value = DEFAULT_TLS_ADDR, value_parser = parse_tls_addr)]
    pub tls_addr: String,

    /// Most connections open at once from one IP address (IPv6: one /64),
    /// logged in or not, over both listeners; more get
    /// `ERROR too-many-connections`. Loopback is spared unless
    /// --limits-on-loopback.
    #[arg(long, env = "CHAT_MAX_PER_IP", hide_env_values = true, value_name = "N",
          default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_per_ip: usize,

    /// New connections one IP address (IPv6: one /64) may open at once,
    /// over both listeners, before --connect-rate applies; one more gets
    /// `ERROR too-many-connections`. Loopback is spared unless
    /// --limits-on-loopback.
    #[arg(long, env = "CHAT_CONNECT_BURST", hide_env_values = true, value_name = "N",
          default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub connect_burst: u32,

    /// New connections a second one address may open after its
    /// --connect-burst (0 turns this limit off).
    #[arg(
        long,
        env = "CHAT_CONNECT_RATE",
        hide_env_values = true,
        value_name = "N",
        default_value_t = 1
    )]
    pub connect_rate: u32,

    /// Allow --metrics on an address other than loopback. The endpoint is
    /// not authenticated, so without this the server refuses to start.
    #[arg(long, env = "CHAT_METRICS_PUBLIC", hide_env_values = true)]
    pub metrics_public: bool,

    /// Serve Prometheus metrics on http://HOST:PORT/metrics, with /healthz
    /// (the process serves) and /readyz (it can log users in); port 0 picks
    /// a free port, named on stdout as `metrics on <address>`. Loopback
    /// only, unless --metrics-public.
    #[arg(long, env = "CHAT_METRICS", hide_env_values = true, value_name = "HOST:PORT",
          value_parser = parse_metrics_addr)]
    pub metrics: Option<String>,

    /// Where accounts, bans, mutes and the lobby's history are kept (an
    /// SQLite database, created at first start). In cluster mode they live
    /// in the cluster's Redis instead.
    #[arg(
        long,
        env = "CHAT_DATA_DIR",
        hide_env_values = true,
        value_name = "DIR",
        default_value = "chat-data"
    )]
    pub data_dir: PathBuf,

    /// Keep accounts, bans, mutes and history in memory only: nothing is
    /// written, and nothing survives a restart (tests, throw-away servers).
    #[arg(long, env = "CHAT_EPHEMERAL", hide_env_values = true)]
    pub ephemeral: bool,

    /// A registered name that may KICK, BAN, UNBAN, MUTE, UNMUTE and ask
    /// for BANS, once logged in with its password; repeat for more
    /// (`operators = ["alice"]` in the config file).
    #[arg(long = "operator", id = "operators", env = "CHAT_OPERATORS", hide_env_values = true,
          value_name = "NAME", value_delimiter = ',', value_parser = parse_operator)]
    pub operators: Vec<String>,

    /// Serve the browser client over HTTP on this address (host:port): the
    /// page at /, the chat as a WebSocket at /ws. Off unless given; port 0
    /// picks a free port, named on stdout as `listening for HTTP on
    /// <address>`.
    #[arg(long, env = "CHAT_WEB_ADDR", hide_env_values = true, value_name = "HOST:PORT",
          value_parser = parse_web_addr)]
    pub web_addr: Option<String>,

    /// Serve the browser client over HTTPS (and the chat over WSS) on this
    /// address, with the certificate of --tls-cert and --tls-key. Off
    /// unless given; named on stdout as `listening for HTTPS on <address>`.
    #[arg(long, env = "CHAT_WEB_TLS_ADDR", hide_env_values = true, value_name = "HOST:PORT",
          value_parser = parse_web_tls_addr)]
    pub web_tls_addr: Option<String>,

    /// A page origin (scheme://host[:port]) whose scripts may open the chat's
    /// WebSocket besides the server's own; repeat for more. Others get 403.
    #[arg(long = "web-origin", id = "web_origins", env = "CHAT_WEB_ORIGINS",
          hide_env_values = true, value_name = "ORIGIN", value_delimiter = ',',
          value_parser = crate::web::origin::parse)]
    pub web_origins: Vec<String>,

    /// A reverse proxy (an IP address or a CIDR block) whose
    /// X-Forwarded-For the web doors believe: the last address in it that
    /// is not a trusted proxy is the client's, for limits and bans. Repeat
    /// for more.
    #[arg(long = "trusted-proxy", id = "trusted_proxies", env = "CHAT_TRUSTED_PROXIES",
          hide_env_values = true, value_name = "ADDR[/BITS]", value_delimiter = ',',
          value_parser = crate::web::proxy::Net::parse)]
    pub trusted_proxies: Vec<crate::web::proxy::Net>,

    /// Read settings from this TOML file: each flag is a key (`max-clients
    /// = 500`, `idle-timeout = "10m"`); flags and CHAT_ variables override it.
    #[arg(long, env = "CHAT_CONFIG", hide_env_values = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective settings as a config file and exit.
    #[arg(long)]
    pub print_config: bool,

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
        /// Replace DIR/cert.pem and DIR/key.pem if either exists; without
        /// it, an existing pair is left alone and mkcert fails.
        #[arg(long)]
        force: bool,
    },
}

impl Config {
    /// The settings from the process's arguments, variables and config
    /// file. Bad flags end the process as clap does (usage, exit 2); a bad
    /// config file is an error naming its file, line and key.
    pub fn load() -> Result<Config, String> {
        Config::load_from(std::env::args_os())
    }

    /// [`load`](Config::load) from the given arguments (the first is the
    /// program's name).
    pub fn load_from<I, T>(args: I) -> Result<Config, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        match Config::try_load_from(&args) {
            Ok(config) => config.and_then(Config::checked),
            Err(e) => e.exit(),
        }
    }

    /// The checks that need more than one value at a time, or that must not
    /// go through clap, whose errors repeat the value given: a `--cluster`
    /// URL may carry a password.
    fn checked(self) -> Result<Config, String> {
        if let Some(url) = &self.cluster {
            if let Err(e) = redis::Client::open(url.as_str()) {
                return Err(format!(
                    "--cluster {}: {e}; expected redis://[user:password@]host[:port][/db]",
                    redact_url(url)
                ));
            }
        }
        Ok(self)
    }

    /// The work of [`load_from`](Config::load_from): the outer error is
    /// clap's, the inner one the config file's.
    fn try_load_from(args: &[std::ffi::OsString]) -> Result<Result<Config, String>, clap::Error> {
        let mut command = Config::command();
        let first = command.clone().try_get_matches_from(args)?;
        let Some(path) = first.get_one::<PathBuf>("config") else {
            return Config::from_arg_matches(&first).map(Ok);
        };
        let (text, file) = match file::read(path) {
            Ok(read) => read,
            Err(e) => return Ok(Err(e)),
        };
        // The file's values become the flags' defaults, so a flag or a
        // variable still wins; each is checked as its flag would be.
        for entry in file.entries() {
            let Some(arg) = command.get_arguments().find(|a| a.get_id() == entry.id) else {
                continue;
            };
            // The flag alone, without its variable: its own check only.
            if arg.get_action().takes_values() {
                for value in &entry.texts {
                    let alone = clap::Command::new("chat-server")
                        .no_binary_name(true)
                        .arg(arg.clone().env(None).required(false));
                    let flag = format!("--{}", arg.get_long().unwrap_or(entry.id));
                    if let Err(e) = alone.try_get_matches_from([flag, value.clone()]) {
                        let place = file::Place::find(path, &text, &entry.span);
                        let why = place.wrong_value().unwrap_or_else(|| {
                            place.told(&clap_reason(&e).unwrap_or_else(|| e.kind().to_string()))
                        });
                        return Ok(Err(why));
                    }
                }
            }
            let values = entry.texts.clone();
            command = command.mut_arg(entry.id, |arg| arg.default_values(values));
        }
        let matches = command.try_get_matches_from(args)?;
        Config::from_arg_matches(&matches).map(Ok)
    }

    /// The effective settings as TOML that `--config` reads back.
    pub fn to_toml(&self) -> String {
        file::render(self)
    }

    /// The TLS certificate and key files, if TLS is asked for; giving only
    /// one of them is an error, and so is `--web-tls-addr` without them.
    pub fn tls_files(&self) -> Result<Option<(&std::path::Path, &std::path::Path)>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) if self.web_tls_addr.is_some() => Err(
                "--web-tls-addr serves HTTPS with the certificate of --tls-cert and --tls-key; \
                 give both, or leave --web-tls-addr out"
                    .into(),
            ),
            (None, None) => Ok(None),
            (Some(_), None) => Err("--tls-cert needs --tls-key too".into()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert too".into()),
        }
    }
}

/// Why a value parser refused a value, without clap's usage lines.
fn clap_reason(error: &clap::Error) -> Option<String> {
    use clap::error::ContextKind;
    let value = error.get(ContextKind::InvalidValue)?;
    let text = error.to_string();
    let reason = text
        .lines()
        .next()
        .and_then(|line| line.split_once("': ").map(|(_, why)| why.to_owned()));
    Some(match reason {
        Some(why) => format!("invalid value {value}: {why}"),
        None => format!("invalid value {value}"),
    })
}

/// `url` with its password, if any, replaced by `***`, for anything the
/// server prints (logs, errors, `--print-config`): `redis://:secret@host`
/// becomes `redis://:***@host`, and so does a bare `redis://secret@host`.
/// A `pass` or `password` in the query (a Unix socket's URL) is hidden too.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if matches!(key, "pass" | "password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// What `--addr` needs: a `host:port` that can be listened on.
fn parse_addr(text: &str) -> Result<String, String> {
    parse_host_port(
        text,
        "--addr needs host:port, e.g. 127.0.0.1:8000 (port 0 picks a free one)",
    )
}

/// What `--tls-addr` needs, as `--addr`.
fn parse_tls_addr(text: &str) -> Result<String, String> {
    parse_host_port(
        text,
        "--tls-addr needs host:port, e.g. 0.0.0.0:8443 (port 0 picks a free one)",
    )
}

/// What `--web-addr` needs, as `--addr`.
fn parse_web_addr(text: &str) -> Result<String, String> {
    parse_host_port(
        text,
        "--web-addr needs host:port, e.g. 127.0.0.1:8080 (port 0 picks a free one)",
    )
}

/// What `--web-tls-addr` needs, as `--addr`.
fn parse_web_tls_addr(text: &str) -> Result<String, String> {
    parse_host_port(
        text,
        "--web-tls-addr needs host:port, e.g. 0.0.0.0:8444 (port 0 picks a free one)",
    )
}

/// What `--metrics` needs, as `--addr`.
fn parse_metrics_addr(text: &str) -> Result<String, String> {
    parse_host_port(
        text,
        "--metrics needs host:port, e.g. 127.0.0.1:9464 (port 0 picks a free one)",
    )
}

/// A `host:port` that can be listened on, or `usage`, which names the
/// flag. Only the form is checked here; whether the host resolves is
/// learnt when binding.
fn parse_host_port(text: &str, usage: &str) -> Result<String, String> {
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
        _ => Err(usage.into()),
    }
}

fn parse_operator(text: &str) -> Result<String, String> {
    if chat_protocol::is_valid_name(text) {
        Ok(text.to_owned())
    } else {
        Err(chat_protocol::NAME_RULES.into())
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

/// A size such as `64MiB`, `512KiB`, `1GiB` or `4096B`; a bare number is
/// bytes. `KB`, `MB` and `GB` are taken as their binary kin.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: usize = number
        .parse()
        .map_err(|_| "expected a size such as 64MiB, 512KiB or a number of bytes".to_owned())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown unit `{other}`; use B, KiB, MiB or GiB")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| "too large".to_owned())
}

/// A size as [`parse_size`] reads it back: the largest unit that divides it.
pub(crate) fn format_size(bytes: usize) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A duration such as `500ms`, `30s`, `5m` or `1h 30m`; a bare number is seconds.
fn parse_any_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    }
}

impl Config {
    /// The limits on rooms and history.
    pub fn room_limits(&self) -> crate::hub::Limits {
        crate::hub::Limits {
            max_rooms: self.max_rooms,
            max_rooms_per_user: self.max_rooms_per_user,
            max_rooms_per_ip: self.max_rooms_per_ip,
            limits_on_loopback: self.limits_on_loopback,
            history: self.history,
            history_memory: self.history_memory,
        }
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
    fn passwords_in_urls_are_hidden() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://:s3cret@10.0.0.5:6379/2",
                "redis://:***@10.0.0.5:6379/2",
            ),
            ("redis://chat:s3cret@redis", "redis://chat:***@redis"),
            ("redis://s3cret@redis:6379", "redis://***@redis:6379"),
            ("redis://u:p@ss:w@rd@host", "redis://u:***@host"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn a_bad_cluster_url_is_refused_without_its_password() {
        let error = Config::load_from(["chat-server", "--cluster", "redis://:s3cret@host:port"])
            .expect_err("a bad URL");
        assert!(
            error.starts_with("--cluster redis://:***@host:port: "),
            "{error}"
        );
        assert!(!error.contains("s3cret"), "{error}");
        let error = Config::load_from(["chat-server", "--cluster", "http://u:s3cret@host"])
            .expect_err("not Redis");
        assert!(!error.contains("s3cret"), "{error}");
        Config::load_from([
            "chat-server",
            "--cluster",
            "redis://:s3cret@127.0.0.1:6379/1",
        ])
        .expect("a good URL");
    }

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
    fn sizes_take_binary_units_or_bytes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        for size in [64 << 20, 512 << 10, 1000, 0] {
            assert_eq!(parse_size(&format_size(size)), Ok(size));
        }
        assert_eq!(format_size(64 << 20), "64MiB");
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
        assert_eq!(config.history, 100);
        assert_eq!(config.max_rooms_per_user, 50);
        assert_eq!(config.max_rooms, 10_000);
        assert_eq!(config.max_rooms_per_ip, 200);
        assert_eq!(config.history_memory, 64 << 20);
        assert_eq!(config.stall_timeout, Duration::from_secs(60));
        assert_eq!(config.flood_burst_per_ip, 40);
        assert_eq!(config.flood_rate_per_ip, 20);
        assert_eq!(config.tls_addr, "127.0.0.1:8443");
        assert_eq!((config.tls_cert, config.tls_key), (None, None));
        assert_eq!(config.max_per_ip, 16);
        assert_eq!((config.connect_burst, config.connect_rate), (16, 1));
        assert!(!config.metrics_public);
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
    fn each_address_flag_names_itself_when_wrong() {
        for flag in ["--tls-addr", "--metrics"] {
            let error = Config::try_parse_from(["chat-server", flag, "9464"]).expect_err(flag);
            let error = error.to_string();
            assert!(
                error.contains(&format!("{flag} needs host:port")),
                "{flag}: {error}"
            );
            assert!(!error.contains("--addr needs"), "{flag}: {error}");
        }
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

    /// A config file in a scratch directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let path = std::env::temp_dir()
                .join(format!("chat-config-{}-{name}.toml", std::process::id()));
            std::fs::write(&path, text).expect("write the config file");
            TempFile(path)
        }

        fn load(&self, flags: &[&str]) -> Result<Config, String> {
            let mut args = vec!["chat-server", "--config", self.0.to_str().unwrap()];
            args.extend_from_slice(flags);
            let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
            Config::try_load_from(&args).expect("valid flags")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn flag_beats_variable_beats_file_beats_default() {
        let file = TempFile::new(
            "precedence",
            "# a comment\nnode-id = \"from-file\"\nmax-line = 512\n",
        );
        // Only this test sets CHAT_NODE_ID, and no other test looks at it.
        std::env::remove_var("CHAT_NODE_ID");
        let config = file.load(&[]).expect("valid file");
        assert_eq!(config.node_id.as_deref(), Some("from-file"));
        assert_eq!(config.max_line, 512);
        assert_eq!(config.max_clients, 10_000, "a default the file leaves");
        std::env::set_var("CHAT_NODE_ID", "from-env");
        let config = file.load(&[]).expect("valid file");
        assert_eq!(config.node_id.as_deref(), Some("from-env"));
        let config = file.load(&["--node-id", "from-flag"]).expect("valid file");
        std::env::remove_var("CHAT_NODE_ID");
        assert_eq!(config.node_id.as_deref(), Some("from-flag"));
        assert_eq!(config.max_line, 512);
    }

    #[test]
    fn operators_come_from_the_file_or_the_flags_and_print_back() {
        let file = TempFile::new(
            "operators",
            "operators = [\"alice\", \"Bob\"]\ndata-dir = \"/tmp/x\"\nephemeral = true\n",
        );
        let config = file.load(&[]).expect("valid file");
        assert_eq!(config.operators, ["alice", "Bob"]);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert!(config.ephemeral);
        let printed = config.to_toml();
        assert!(
            printed.contains("operators = [\"alice\", \"Bob\"]"),
            "{printed}"
        );
        let config = file
            .load(&["--operator", "carol", "--operator", "dave"])
            .expect("valid file");
        assert_eq!(
            config.operators,
            ["carol", "dave"],
            "flags replace the file's list"
        );
        let bad = TempFile::new("bad-operator", "operators = [\"b!d\"]\n");
        assert!(bad.load(&[]).unwrap_err().contains("operators"));
        let defaults = Config::default();
        assert_eq!(defaults.data_dir, PathBuf::from("chat-data"));
        assert!(!defaults.ephemeral && defaults.operators.is_empty());
    }

    #[test]
    fn durations_and_switches_take_their_kinds() {
        let file = TempFile::new(
            "kinds",
            "login-timeout = \"250ms\"\nidle-timeout = 0\nlease = 20\nlimits-on-loopback = true\n",
        );
        let config = file.load(&[]).expect("valid file");
        assert_eq!(config.login_timeout, Duration::from_millis(250));
        assert_eq!(config.idle_timeout, None);
        assert_eq!(config.lease, Duration::from_secs(20));
        assert!(config.limits_on_loopback);
    }

    #[test]
    fn file_errors_name_the_file_line_and_key_and_say_what_it_wants() {
        let cases = [
            (
                "unknown",
                "addr = \"127.0.0.1:0\"\n\nmax-client = 5\n",
                ":3: unknown key `max-client`; did you mean `max-clients`? the keys are \
                 the flags' names: addr, max-line,",
            ),
            (
                "kind",
                "max-clients = \"many\"\n",
                ":1: max-clients: expected a whole number of connections, at least 1, \
                 like `max-clients = 10000`, not `\"many\"`",
            ),
            (
                "range",
                "max-line = 512\nmax-clients = 0\n",
                ":2: max-clients: expected a whole number of connections, at least 1, \
                 like `max-clients = 10000`, not `0`",
            ),
            (
                "duration",
                "\nidle-timeout = \"soon\"\n",
                ":2: idle-timeout: expected a duration, as a string with a unit or a whole \
                 number of seconds (0 for none), like `idle-timeout = \"5m\"`, not `\"soon\"`",
            ),
            (
                "switch",
                "limits-on-loopback = \"yes\"\n",
                ":1: limits-on-loopback: expected true or false, without quotes, \
                 like `limits-on-loopback = true`, not `\"yes\"`",
            ),
            (
                "syntax",
                "addr = \n",
                ":1: addr: expected a host:port to listen on, like \
                 `addr = \"127.0.0.1:8000\"`, but it has no value",
            ),
            (
                "burst",
                "flood-burst = 0 # at least one\n",
                ":1: flood-burst: expected a whole number of frames, at least 1, \
                 like `flood-burst = 10`, not `0`",
            ),
            (
                "float",
                "flood-rate = 2.5\n",
                ":1: flood-rate: expected a whole number of frames a second (0 turns flood \
                 control off), like `flood-rate = 5`, not `2.5`",
            ),
            (
                "bad-float",
                "flood-rate = 2.5.1\n",
                ":1: flood-rate: expected a whole number of frames a second (0 turns flood \
                 control off), like `flood-rate = 5`, not `2.5.1`",
            ),
            (
                "twice",
                "history = 5\nhistory = 6\n",
                ":2: history is set twice; keep one",
            ),
            (
                "no-key",
                "max-clients\n",
                ":1: expected `key = value`, like `max-clients = 10000` (TOML says:",
            ),
        ];
        for (name, text, wanted) in cases {
            let file = TempFile::new(name, text);
            let error = file.load(&[]).expect_err(name);
            let path = file.0.display().to_string();
            assert!(
                error.starts_with(&format!("{path}{wanted}")),
                "{name}: {error}"
            );
            for unhelpful in ["expected u32", "expected nothing", "4294967295"] {
                assert!(!error.contains(unhelpful), "{name}: {error}");
            }
        }
        let missing = TempFile::new("missing", "");
        std::fs::remove_file(&missing.0).unwrap();
        let error = missing.load(&[]).expect_err("missing");
        assert!(error.contains("cannot read the config file"), "{error}");
    }

    #[test]
    fn printed_config_loads_back_the_same() {
        let file = TempFile::new(
            "print",
            "addr = \"0.0.0.0:7000\"\nidle-timeout = \"90s\"\ncluster = \"redis://127.0.0.1:6379\"\n\
             tls-cert = \"/etc/chat/cert.pem\"\ntls-key = \"/etc/chat/key.pem\"\nmax-per-ip = 4\n",
        );
        let config = file.load(&["--flood-rate", "0"]).expect("valid file");
        let printed = TempFile::new("printed", &config.to_toml());
        let again = printed.load(&[]).expect("the printed config loads");
        assert_eq!(
            format!("{again:?}"),
            format!("{config:?}").replace(
                &file.0.display().to_string(),
                &printed.0.display().to_string(),
            )
        );
        let default = TempFile::new("default", &Config::default().to_toml());
        let again = default.load(&[]).expect("the default config loads");
        assert_eq!(again.idle_timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn every_flag_has_a_key() {
        let meta = ["help", "version", "config", "print_config"];
        for arg in Config::command().get_arguments() {
            let id = arg.get_id().as_str();
            if !meta.contains(&id) {
                assert!(file::File::IDS.contains(&id), "no config key for --{id}");
                let key = id.replace('_', "-");
                assert!(
                    file::WANTS.iter().any(|(k, ..)| *k == key),
                    "no words for what `{key}` wants"
                );
            }
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
