//! `--config chat.toml`: every flag as a key of a TOML file.
//!
//! The file only supplies defaults: a key's value is used where neither the
//! command line nor the `CHAT_…` variable gives the flag. Keys are the flags'
//! names without the dashes in front (`max-clients = 500`); each value must
//! be of the kind its flag takes (a string, a whole number, `true`/`false`;
//! a duration is a string such as `"30s"` or a whole number of seconds), and
//! passes the flag's own checks. Anything else names the file, the line and
//! the key, and says what the key wants with an example
//! (`flood-rate: expected a whole number of frames a second …, like
//! `flood-rate = 5`, not `2.5``).

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A value as its flag would take it on the command line.
trait FlagText {
    fn flag_text(&self) -> String;

    /// Every value, for a flag that may be repeated.
    fn flag_texts(&self) -> Vec<String> {
        vec![self.flag_text()]
    }
}

impl FlagText for Vec<String> {
    fn flag_text(&self) -> String {
        self.join(" ")
    }

    fn flag_texts(&self) -> Vec<String> {
        self.clone()
    }
}

impl FlagText for String {
    fn flag_text(&self) -> String {
        self.clone()
    }
}

impl FlagText for u32 {
    fn flag_text(&self) -> String {
        self.to_string()
    }
}

impl FlagText for bool {
    fn flag_text(&self) -> String {
        self.to_string()
    }
}

/// A duration: `"30s"`, `"5m"`, … or a whole number of seconds.
#[derive(Debug)]
pub(super) enum DurationValue {
    Text(String),
    Seconds(u64),
}

impl FlagText for DurationValue {
    fn flag_text(&self) -> String {
        match self {
            DurationValue::Text(text) => text.clone(),
            DurationValue::Seconds(seconds) => seconds.to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Expecting;
        impl Visitor<'_> for Expecting {
            type Value = DurationValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"30s\" or a whole number of seconds")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<DurationValue, E> {
                Ok(DurationValue::Text(text.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<DurationValue, E> {
                Ok(DurationValue::Seconds(seconds))
            }
            fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<DurationValue, E> {
                u64::try_from(seconds)
                    .map(DurationValue::Seconds)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
        }
        deserializer.deserialize_any(Expecting)
    }
}

/// A size: `"64MiB"`, `"512KiB"`, … or a whole number of bytes.
#[derive(Debug)]
pub(super) enum SizeValue {
    Text(String),
    Bytes(u64),
}

impl FlagText for SizeValue {
    fn flag_text(&self) -> String {
        match self {
            SizeValue::Text(text) => text.clone(),
            SizeValue::Bytes(bytes) => bytes.to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Expecting;
        impl Visitor<'_> for Expecting {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size such as \"64MiB\" or a whole number of bytes")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(text.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(bytes))
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<SizeValue, E> {
                u64::try_from(bytes)
                    .map(SizeValue::Bytes)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        deserializer.deserialize_any(Expecting)
    }
}

/// One key the file gave: the flag's id, where the value is, and the value
/// as the flag's text.
pub(super) struct Entry {
    pub id: &'static str,
    pub span: Range<usize>,
    /// One value, or several for a flag that may be repeated.
    pub texts: Vec<String>,
}

macro_rules! keys {
    ($($field:ident: $kind:ty),* $(,)?) => {
        /// The file's keys, one for each flag, each of its flag's kind.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub(super) struct File {
            $($field: Option<Spanned<$kind>>,)*
        }

        impl File {
            /// The flag ids that have a key.
            #[cfg(test)]
            pub(super) const IDS: &'static [&'static str] = &[$(stringify!($field)),*];

            pub(super) fn entries(&self) -> Vec<Entry> {
                let mut entries = Vec::new();
                $(if let Some(value) = &self.$field {
                    entries.push(Entry {
                        id: stringify!($field),
                        span: value.span(),
                        texts: value.get_ref().flag_texts(),
                    });
                })*
                entries
            }
        }
    };
}

keys! {
    addr: String,
    max_line: u32,
    login_timeout: DurationValue,
    idle_timeout: DurationValue,
    max_clients: u32,
    client_buffer: u32,
    history: u32,
    max_rooms_per_user: u32,
    max_rooms: u32,
    max_rooms_per_ip: u32,
    history_memory: SizeValue,
    stall_timeout: DurationValue,
    flood_burst_per_ip: u32,
    flood_rate_per_ip: u32,
    cluster: String,
    node_id: String,
    lease: DurationValue,
    tls_cert: String,
    tls_key: String,
    tls_addr: String,
    max_per_ip: u32,
    connect_burst: u32,
    connect_rate: u32,
    metrics_public: bool,
    flood_burst: u32,
    flood_rate: u32,
    limits_on_loopback: bool,
    metrics: String,
    data_dir: String,
    ephemeral: bool,
    operators: Vec<String>,
    web_addr: String,
    web_tls_addr: String,
    web_origins: Vec<String>,
    trusted_proxies: Vec<String>,
}

/// What each key takes, in words, and a value it would take: an error
/// about a key says both, so that whoever reads it can mend the file
/// without looking anything up.
pub(super) const WANTS: &[(&str, &str, &str)] = &[
    ("addr", "a host:port to listen on", "\"127.0.0.1:8000\""),
    (
        "max-line",
        "a whole number of bytes from 16 to 1048576",
        "4096",
    ),
    (
        "login-timeout",
        "a duration longer than zero, as a string with a unit or a whole number of seconds",
        "\"30s\"",
    ),
    (
        "idle-timeout",
        "a duration, as a string with a unit or a whole number of seconds (0 for none)",
        "\"5m\"",
    ),
    (
        "max-clients",
        "a whole number of connections, at least 1",
        "10000",
    ),
    (
        "client-buffer",
        "a whole number of frames from 1 to 1048576",
        "1024",
    ),
    (
        "history",
        "a whole number of messages from 0 to 1048576",
        "100",
    ),
    (
        "max-rooms-per-user",
        "a whole number of rooms, at least 1",
        "50",
    ),
    ("max-rooms", "a whole number of rooms, at least 1", "10000"),
    (
        "max-rooms-per-ip",
        "a whole number of rooms, at least 1",
        "200",
    ),
    (
        "history-memory",
        "a size, as a string with a unit (B, KiB, MiB, GiB) or a whole number of bytes",
        "\"64MiB\"",
    ),
    (
        "stall-timeout",
        "a duration longer than zero, as a string with a unit or a whole number of seconds",
        "\"60s\"",
    ),
    (
        "flood-burst-per-ip",
        "a whole number of frames, at least 1",
        "40",
    ),
    (
        "flood-rate-per-ip",
        "a whole number of frames a second (0 turns the per-address allowance off)",
        "20",
    ),
    (
        "cluster",
        "a Redis URL, in quotes",
        "\"redis://127.0.0.1:6379\"",
    ),
    (
        "node-id",
        "1 to 32 letters, digits, '_', '-' or '.', starting with a letter or digit, in quotes",
        "\"n1\"",
    ),
    (
        "lease",
        "a duration of at least 1s, as a string with a unit or a whole number of seconds",
        "\"10s\"",
    ),
    (
        "tls-cert",
        "the path of a PEM file, in quotes",
        "\"/etc/chat-server/tls/fullchain.pem\"",
    ),
    (
        "tls-key",
        "the path of a PEM file, in quotes",
        "\"/etc/chat-server/tls/privkey.pem\"",
    ),
    (
        "tls-addr",
        "a host:port to listen on for TLS",
        "\"0.0.0.0:8443\"",
    ),
    (
        "max-per-ip",
        "a whole number of connections, at least 1",
        "16",
    ),
    (
        "connect-burst",
        "a whole number of connections, at least 1",
        "16",
    ),
    (
        "connect-rate",
        "a whole number of connections a second (0 turns this limit off)",
        "1",
    ),
    ("metrics-public", "true or false, without quotes", "true"),
    ("flood-burst", "a whole number of frames, at least 1", "10"),
    (
        "flood-rate",
        "a whole number of frames a second (0 turns flood control off)",
        "5",
    ),
    (
        "limits-on-loopback",
        "true or false, without quotes",
        "true",
    ),
    (
        "metrics",
        "a host:port to serve metrics on",
        "\"127.0.0.1:9100\"",
    ),
    (
        "data-dir",
        "the path of a directory, in quotes",
        "\"/var/lib/chat-server\"",
    ),
    ("ephemeral", "true or false, without quotes", "true"),
    (
        "operators",
        "a list of registered names, in quotes",
        "[\"alice\", \"bob\"]",
    ),
    (
        "web-addr",
        "a host:port to serve the browser client on",
        "\"127.0.0.1:8080\"",
    ),
    (
        "web-tls-addr",
        "a host:port to serve the browser client on over HTTPS",
        "\"0.0.0.0:8444\"",
    ),
    (
        "web-origins",
        "a list of origins (scheme://host[:port]), in quotes",
        "[\"https://chat.example.com\"]",
    ),
    (
        "trusted-proxies",
        "a list of IP addresses or CIDR blocks, in quotes",
        "[\"127.0.0.1\", \"10.0.0.0/8\"]",
    ),
];

/// The largest config file the server reads: far more than every key
/// written out with comments, and little enough to read whole at start.
pub(super) const MAX_FILE: u64 = 1 << 20;

/// Reads and parses the file; an error names the file, the line and the
/// key, and says what the key wants.
pub(super) fn read(path: &Path) -> Result<(String, File), String> {
    let text = read_text(path)?;
    let file = parse(path, &text)?;
    Ok((text, file))
}

/// The file's text, if it is a regular file of at most [`MAX_FILE`] bytes
/// of UTF-8. Anything else is refused before a byte is read: a FIFO would
/// block start-up until something writes to it, `/dev/zero` would be read
/// until memory runs out. It is opened without blocking (a FIFO with no
/// writer), and what is checked is the file opened, not the path, so a
/// file swapped in meanwhile is checked too; a file that grows after the
/// check is read no further than the limit.
fn read_text(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path.display();
    let cannot = |e: std::io::Error| format!("cannot read the config file {name}: {e}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let metadata = file.metadata().map_err(cannot)?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if std::os::unix::fs::FileTypeExt::is_fifo(&kind) {
            "a FIFO"
        } else if std::os::unix::fs::FileTypeExt::is_char_device(&kind)
            || std::os::unix::fs::FileTypeExt::is_block_device(&kind)
        {
            "a device"
        } else if std::os::unix::fs::FileTypeExt::is_socket(&kind) {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(format!(
            "the config file {name} is {what}; give --config a regular TOML file"
        ));
    }
    let too_big = || {
        format!(
            "the config file {name} is larger than 1 MiB ({MAX_FILE} bytes), the most it may \
             be; is it the right file?"
        )
    };
    if metadata.len() > MAX_FILE {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(too_big());
    }
    String::from_utf8(bytes)
        .map_err(|_| format!("cannot read the config file {name}: it is not UTF-8 text"))
}

pub(super) fn parse(path: &Path, text: &str) -> Result<File, String> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end();
        let Some(span) = e.span() else {
            return format!("{}: {message}", path.display());
        };
        let place = Place::find(path, text, &span);
        if let Some(unknown) = message.strip_prefix("unknown field `") {
            let unknown = unknown.split('`').next().unwrap_or_default();
            return place.unknown_key(unknown);
        }
        if message.starts_with("duplicate key") {
            return format!("{}: {} is set twice; keep one", place.at, place.key);
        }
        place.wrong_value().unwrap_or_else(|| {
            format!(
                "{}: expected `key = value`, like `max-clients = 10000` (TOML says: {message})",
                place.at
            )
        })
    })
}

/// Where in the file something went wrong: `file:line`, the key on that
/// line and its value as written.
pub(super) struct Place {
    at: String,
    key: String,
    value: String,
}

impl Place {
    /// The place of whatever lies at `span` of `text`.
    pub(super) fn find(path: &Path, text: &str, span: &Range<usize>) -> Place {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = &text[line_start..line_end];
        let number = text[..start].matches('\n').count() + 1;
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key.trim(), value.trim()),
            None => (text[start..span.end.min(text.len()).max(start)].trim(), ""),
        };
        // A comment after a value that is not a string is no part of it.
        let value = match value.starts_with(['"', '\'']) {
            true => value,
            false => value.split('#').next().unwrap_or_default().trim(),
        };
        Place {
            at: format!("{}:{number}", path.display()),
            key: key.trim_matches(['"', '\'']).to_owned(),
            value: value.to_owned(),
        }
    }

    /// `file:line: key: expected …, like `key = …`, not …`, if the key is
    /// one of ours.
    pub(super) fn wrong_value(&self) -> Option<String> {
        let (_, what, example) = WANTS.iter().find(|(key, ..)| *key == self.key)?;
        let got = match self.value.as_str() {
            "" => "but it has no value".to_owned(),
            value if self.key == "cluster" => format!("not `{}`", super::redact_url(value)),
            value => format!("not `{value}`"),
        };
        Some(format!(
            "{}: {}: expected {what}, like `{} = {example}`, {got}",
            self.at, self.key, self.key
        ))
    }

    /// `file:line: key: why`, for a reason of someone else's words.
    pub(super) fn told(&self, why: &str) -> String {
        format!("{}: {}: {why}", self.at, self.key)
    }

    /// A key the server does not know, with the one that was probably meant.
    fn unknown_key(&self, unknown: &str) -> String {
        let guess = WANTS
            .iter()
            .map(|(key, ..)| *key)
            .find(|key| near(key, unknown))
            .map(|key| format!("did you mean `{key}`? "))
            .unwrap_or_default();
        let keys: Vec<&str> = WANTS.iter().map(|(key, ..)| *key).collect();
        format!(
            "{}: unknown key `{unknown}`; {guess}the keys are the flags' names: {}",
            self.at,
            keys.join(", ")
        )
    }
}

/// Whether `typed` is one slip away from `key`: a letter missing, extra,
/// changed, `_` for `-`, or another case.
fn near(key: &str, typed: &str) -> bool {
    let typed = typed.to_ascii_lowercase().replace('_', "-");
    let (a, b) = (key.as_bytes(), typed.as_bytes());
    if a == b {
        return true;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    match long.len() - short.len() {
        0 => a.iter().zip(b).filter(|(x, y)| x != y).count() == 1,
        1 => (0..long.len())
            .any(|skip| long[..skip] == short[..skip] && long[skip + 1..] == short[skip..]),
        _ => false,
    }
}

/// The effective settings as a file `--config` reads back.
pub(super) fn render(config: &super::Config) -> String {
    use toml::Value;
    let duration = |d: Duration| Value::String(humantime::format_duration(d).to_string());
    let number = |n: usize| Value::Integer(n as i64);
    let path = |p: &Path| Value::String(p.display().to_string());
    let mut table = toml::Table::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            table.insert(key.to_owned(), value);
        }
    };
    put("addr", Some(Value::String(config.addr.clone())));
    put("max-line", Some(number(config.max_line)));
    put("login-timeout", Some(duration(config.login_timeout)));
    put(
        "idle-timeout",
        Some(config.idle_timeout.map_or(Value::Integer(0), duration)),
    );
    put("max-clients", Some(number(config.max_clients)));
    put("client-buffer", Some(number(config.client_buffer)));
    put("history", Some(number(config.history)));
    put(
        "max-rooms-per-user",
        Some(number(config.max_rooms_per_user)),
    );
    put("max-rooms", Some(number(config.max_rooms)));
    put("max-rooms-per-ip", Some(number(config.max_rooms_per_ip)));
    put(
        "history-memory",
        Some(Value::String(super::format_size(config.history_memory))),
    );
    put("stall-timeout", Some(duration(config.stall_timeout)));
    put(
        "flood-burst-per-ip",
        Some(Value::Integer(config.flood_burst_per_ip.into())),
    );
    put(
        "flood-rate-per-ip",
        Some(Value::Integer(config.flood_rate_per_ip.into())),
    );
    let cluster = config.cluster.as_deref().map(super::redact_url);
    let hidden = cluster.as_deref() != config.cluster.as_deref();
    put("cluster", cluster.map(Value::String));
    put("node-id", config.node_id.clone().map(Value::String));
    put("lease", Some(duration(config.lease)));
    put("tls-cert", config.tls_cert.as_deref().map(path));
    put("tls-key", config.tls_key.as_deref().map(path));
    put("tls-addr", Some(Value::String(config.tls_addr.clone())));
    put("max-per-ip", Some(number(config.max_per_ip)));
    put(
        "connect-burst",
        Some(Value::Integer(config.connect_burst.into())),
    );
    put(
        "connect-rate",
        Some(Value::Integer(config.connect_rate.into())),
    );
    put(
        "metrics-public",
        Some(Value::Boolean(config.metrics_public)),
    );
    put(
        "flood-burst",
        Some(Value::Integer(config.flood_burst.into())),
    );
    put("flood-rate", Some(Value::Integer(config.flood_rate.into())));
    put(
        "limits-on-loopback",
        Some(Value::Boolean(config.limits_on_loopback)),
    );
    put("metrics", config.metrics.clone().map(Value::String));
    put("data-dir", Some(path(&config.data_dir)));
    put("ephemeral", Some(Value::Boolean(config.ephemeral)));
    put(
        "operators",
        Some(Value::Array(
            config
                .operators
                .iter()
                .cloned()
                .map(Value::String)
                .collect(),
        )),
    );
    put("web-addr", config.web_addr.clone().map(Value::String));
    put(
        "web-tls-addr",
        config.web_tls_addr.clone().map(Value::String),
    );
    let strings =
        |values: Vec<String>| Value::Array(values.into_iter().map(Value::String).collect());
    put("web-origins", Some(strings(config.web_origins.clone())));
    put(
        "trusted-proxies",
        Some(strings(
            config
                .trusted_proxies
                .iter()
                .map(|n| n.to_string())
                .collect(),
        )),
    );
    let mut out = String::from(
        "# chat-server's effective settings (chat-server --print-config);\n\
         # load them with --config. Unset options (cluster, node-id, tls-cert,\n\
         # tls-key, metrics, web-addr, web-tls-addr) are left out.\n",
    );
    if hidden {
        out.push_str(
            "# The password in cluster is shown as ***: put it back, or give the\n\
             # URL with CHAT_CLUSTER instead of in the file.\n",
        );
    }
    out.push_str(&toml::to_string(&table).unwrap_or_default());
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}
