//! What survives a restart: accounts, bans, mutes and the lobby's history,
//! in an embedded SQLite database under `--data-dir` (or in memory with
//! `--ephemeral`).
//!
//! One thread owns the connection ([`writer`]); the async API sends it
//! commands over a bounded channel and awaits its answer, so no tokio
//! worker ever waits for the disk. Accounts, bans and mutes are committed
//! (and synced) before their call returns: a kill -9, even a power cut,
//! never loses one that was answered. The lobby's history goes through
//! [`Store::record_lobby`], which never waits: the thread commits the lines
//! of each quarter second together ([`writer::LOBBY_WINDOW`]), so a kill -9
//! loses at most that (well under the contract's second).
//!
//! - [`schema`]: the tables, and the migrations that bring an older data
//!   directory up to date;
//! - [`lock`]: the lock file that keeps a second server out of a data
//!   directory;
//! - [`writer`]: the thread and what each command does.

mod lock;
mod schema;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use lock::DirLock;
use writer::{Command, Request};

/// The database's file name inside the data directory.
pub const DATABASE_FILE: &str = "chat.sqlite3";

/// Commands that may wait for the store's thread, and lobby lines that
/// may wait for their transaction: past this, async calls wait for room,
/// and the lines are committed at once.
pub const QUEUE: usize = 4096;

/// A registered name.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// The name as it was registered (the key is its lower-case form).
    pub name: String,
    /// The password's argon2id PHC string.
    pub phc: String,
    /// When it was registered, in milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// Not derived: the hash is not a password, but it is no one's business
/// in a log either.
impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("phc", &"<hidden>")
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

/// A ban: of a name, and with it the address the user was connected from
/// (IPv4, or an IPv6 /64 prefix), so that `UNBAN` lifts both at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The banned name's key (its lower-case form).
    pub key: String,
    /// The address banned with the name, if any (`None` when the user was
    /// not logged in, or came from loopback).
    pub address: Option<String>,
    /// When the ban ends, in milliseconds since the Unix epoch.
    pub until_ms: i64,
    /// The operator's text, if any.
    pub reason: Option<String>,
    /// The operator who banned.
    pub by: String,
}

/// A mute: the name may not send messages until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mute {
    /// The muted name's key (its lower-case form).
    pub key: String,
    /// When the mute ends, in milliseconds since the Unix epoch.
    pub until_ms: i64,
    /// The operator's text, if any.
    pub reason: Option<String>,
    /// The operator who muted.
    pub by: String,
}

/// One line of the lobby's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyLine {
    /// When it was said, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Who said it.
    pub from: String,
    /// What was said.
    pub text: String,
}

/// Everything that can go wrong with the store; the `Display` says what and
/// where, in words an operator can act on. No variant holds a password.
#[derive(Debug)]
pub enum StoreError {
    /// Another server (or another `Store` in this process) has the data
    /// directory open.
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The other server's process id, as it wrote it in the lock file.
        pid: Option<u32>,
    },
    /// The data directory was written by a newer release, whose schema this
    /// one does not know.
    Newer {
        /// The data directory.
        dir: PathBuf,
        /// The schema version found in the database.
        found: u32,
        /// The newest schema version this release knows.
        known: u32,
    },
    /// A file or directory could not be created, opened or written.
    Io {
        /// What was being done ("create", "lock", ...).
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// SQLite failed.
    Sqlite {
        /// The database file (or `:memory:`).
        path: PathBuf,
        /// Why it failed.
        source: rusqlite::Error,
    },
    /// The store was closed (or its thread died) before it could answer.
    Closed,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::InUse { dir, pid } => {
                write!(f, "{} is in use by another chat-server", dir.display())?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                f.write_str("; stop it, or give this one another --data-dir")
            }
            StoreError::Newer { dir, found, known } => write!(
                f,
                "{} was written by a newer chat-server (schema {found}, this one knows {known}); \
                 upgrade chat-server",
                dir.display()
            ),
            StoreError::Io {
                doing,
                path,
                source,
            } => write!(f, "cannot {doing} {}: {source}", path.display()),
            StoreError::Sqlite { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Closed => f.write_str("the store is closed"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Sqlite { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The server's durable state. Cheap to clone: the clones share one
/// thread, which ends at [`Store::close`] or when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    commands: mpsc::Sender<Command>,
    lobby: Arc<writer::Lobby>,
}

impl Store {
    /// Opens (creating it if need be) the data directory `dir`, brings its
    /// schema up to date, and keeps at most `keep_history` lobby lines.
    /// Refuses a directory another server holds, or a newer release wrote.
    pub fn open(dir: &Path, keep_history: usize) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            doing: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = DirLock::take(dir)?;
        let path = dir.join(DATABASE_FILE);
        let mut connection = Connection::open(&path).map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        schema::prepare(&mut connection, dir, &path, true)?;
        Ok(Store::start(connection, path, Some(lock), keep_history))
    }

    /// The same store in memory, for `--ephemeral` and tests: each one
    /// starts empty and forgets everything when closed.
    pub fn ephemeral(keep_history: usize) -> Store {
        let path = PathBuf::from(":memory:");
        let mut connection = Connection::open_in_memory().expect("SQLite opens a memory database");
        schema::prepare(&mut connection, &path, &path, false)
            .expect("a memory database takes the schema");
        Store::start(connection, path, None, keep_history)
    }

    fn start(
        connection: Connection,
        path: PathBuf,
        lock: Option<DirLock>,
        keep_history: usize,
    ) -> Store {
        let (commands, queue) = mpsc::channel(QUEUE);
        let lobby = Arc::new(writer::Lobby::default());
        let writer = writer::Writer::new(connection, path, lock, keep_history, &lobby);
        // The thread's own runtime only keeps time, for the lobby's batches.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime with only a clock builds");
        thread::Builder::new()
            .name("store".into())
            .spawn(move || writer.run(runtime, queue))
            .expect("spawn the store's thread");
        Store { commands, lobby }
    }

    /// Sends a request and waits for its answer.
    async fn ask<T>(
        &self,
        request: impl FnOnce(writer::Reply<T>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Ask(request(reply)))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The account registered under `key`, if any: what a login checks.
    pub async fn account(&self, key: &str) -> Result<Option<Account>, StoreError> {
        let key = key.to_owned();
        self.ask(|reply| Request::Account { key, reply }).await
    }

    /// Registers `name` (whose lower-case form is `key`) with the hash
    /// `phc`; `false` if the key is registered already. Durable on return.
    pub async fn register(&self, key: &str, name: &str, phc: &str) -> Result<bool, StoreError> {
        let (key, name, phc) = (key.to_owned(), name.to_owned(), phc.to_owned());
        self.ask(|reply| Request::Register {
            key,
            name,
            phc,
            reply,
        })
        .await
    }

    /// Replaces the hash of `key`'s password; `false` if it is not
    /// registered. Durable on return.
    pub async fn set_password(&self, key: &str, phc: &str) -> Result<bool, StoreError> {
        let (key, phc) = (key.to_owned(), phc.to_owned());
        self.ask(|reply| Request::SetPassword { key, phc, reply })
            .await
    }

    /// Forgets the account `key`; `false` if it was not registered.
    /// Durable on return.
    pub async fn unregister(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.ask(|reply| Request::Unregister { key, reply }).await
    }

    /// Bans a name, and the address with it if `ban.address` is given,
    /// replacing any ban of that name (a new ban without an address keeps
    /// the address of the one it replaces). Durable on return.
    pub async fn ban(&self, ban: Ban) -> Result<(), StoreError> {
        self.ask(|reply| Request::Ban { ban, reply }).await
    }

    /// Lifts the ban of the name `key` and of the address banned with it;
    /// `false` if there was none. Durable on return.
    pub async fn unban(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.ask(|reply| Request::Unban { key, reply }).await
    }

    /// The bans that end after `now_ms`, by key: what `BANS` lists and what
    /// a login or a new connection is checked against. Forgets the others.
    pub async fn bans_in_force(&self, now_ms: i64) -> Result<Vec<Ban>, StoreError> {
        self.ask(|reply| Request::BansInForce { now_ms, reply })
            .await
    }

    /// Mutes a name, replacing any mute of it. Durable on return.
    pub async fn mute(&self, mute: Mute) -> Result<(), StoreError> {
        self.ask(|reply| Request::Mute { mute, reply }).await
    }

    /// Lifts the mute of `key`; `false` if there was none. Durable on return.
    pub async fn unmute(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.ask(|reply| Request::Unmute { key, reply }).await
    }

    /// The mutes that end after `now_ms`, by key. Forgets the others.
    pub async fn mutes_in_force(&self, now_ms: i64) -> Result<Vec<Mute>, StoreError> {
        self.ask(|reply| Request::MutesInForce { now_ms, reply })
            .await
    }

    /// Keeps a lobby line for the history of a restarted server. Never
    /// waits: if too many wait already the line is dropped and counted
    /// ([`Store::lobby_lost`]), the newest lost rather than the caller held.
    pub fn record_lobby(&self, time_ms: i64, from: &str, text: &str) {
        self.lobby.record(LobbyLine {
            time_ms,
            from: from.to_owned(),
            text: text.to_owned(),
        });
    }

    /// The last `limit` lobby lines (at most the `keep_history` given at
    /// open), oldest first: the history a starting server begins with.
    /// Includes every line recorded before the call.
    pub async fn lobby_history(&self, limit: usize) -> Result<Vec<LobbyLine>, StoreError> {
        self.ask(|reply| Request::LobbyHistory { limit, reply })
            .await
    }

    /// How many names are registered, for the metrics.
    pub async fn count_accounts(&self) -> Result<u64, StoreError> {
        self.ask(|reply| Request::CountAccounts { reply }).await
    }

    /// Lobby lines lost so far: dropped because too many waited, or in a
    /// batch that failed to commit. For the metrics.
    pub fn lobby_lost(&self) -> u64 {
        self.lobby.lost()
    }

    /// Commits what is queued, closes the database and releases the data
    /// directory, for every clone: what a server does last on shutdown.
    /// Calls made afterwards answer [`StoreError::Closed`].
    pub async fn close(&self) {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Close { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }
}

#[cfg(test)]
mod tests;
