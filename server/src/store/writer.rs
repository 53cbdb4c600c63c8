//! The store's thread: the one owner of the database connection, applying
//! commands in the order they were sent.
//!
//! Accounts, bans and mutes are each committed in a transaction with
//! `synchronous=FULL` (the WAL is fsynced before the caller hears back), so
//! an answered change outlives a kill -9 and a power cut alike. Lobby lines
//! are batched: the lines of each [`LOBBY_WINDOW`] go into one transaction
//! with `synchronous=NORMAL` (no fsync: a killed process loses nothing
//! committed; a power cut may lose the lines since the last fsync, which
//! the next account, ban or mute, or checkpoint, provides). So history
//! never waits a second to reach the database, and a command that needs
//! the lines (the history at start, a close) commits them first.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::{sleep_until, Duration, Instant};

use super::lock::DirLock;
use super::{Account, Ban, LobbyLine, Mute, StoreError, QUEUE};

/// Where a command's answer goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the async API sends the thread.
pub(super) enum Command {
    /// A call that waits for its answer.
    Ask(Request),
    /// Commit, close, release the directory, then answer.
    Close { reply: oneshot::Sender<()> },
}

/// A call of the async API that waits for its answer, one variant a call.
pub(super) enum Request {
    Account {
        key: String,
        reply: Reply<Option<Account>>,
    },
    Register {
        key: String,
        name: String,
        phc: String,
        reply: Reply<bool>,
    },
    SetPassword {
        key: String,
        phc: String,
        reply: Reply<bool>,
    },
    Unregister {
        key: String,
        reply: Reply<bool>,
    },
    Ban {
        ban: Ban,
        reply: Reply<()>,
    },
    Unban {
        key: String,
        reply: Reply<bool>,
    },
    BansInForce {
        now_ms: i64,
        reply: Reply<Vec<Ban>>,
    },
    Mute {
        mute: Mute,
        reply: Reply<()>,
    },
    Unmute {
        key: String,
        reply: Reply<bool>,
    },
    MutesInForce {
        now_ms: i64,
        reply: Reply<Vec<Mute>>,
    },
    LobbyHistory {
        limit: usize,
        reply: Reply<Vec<LobbyLine>>,
    },
    CountAccounts {
        reply: Reply<u64>,
    },
}

/// Lobby lines that may wait for their transaction. Past this, the thread
/// commits at once; and while that commit runs, lines beyond twice this are
/// lost (counted by [`Store::lobby_lost`](super::Store::lobby_lost)).
const MAX_BATCH: usize = QUEUE;

/// How long a lobby line waits for others to share its transaction. A
/// commit for each line would wake this thread for every lobby message, on
/// the cores that are delivering that message at that moment: at 20
/// messages a second that alone doubled a pinging user's p99 (see
/// `docs/PERFORMANCE.md`). A quarter second keeps it to four commits a
/// second, well inside the contract's "a kill -9 loses at most the last
/// second of lobby history".
pub const LOBBY_WINDOW: Duration = Duration::from_millis(250);

/// The lobby lines waiting for the thread. Recording one takes a lock and
/// wakes the thread only for the first line of a window, so a lobby message
/// costs the store no wake-up of its own.
#[derive(Default)]
pub(super) struct Lobby {
    lines: Mutex<Vec<LobbyLine>>,
    /// The first line of a window arrived, or the lines reached
    /// [`MAX_BATCH`].
    waiting: Notify,
    lost: AtomicU64,
}

impl Lobby {
    /// Queues a line; never waits.
    pub(super) fn record(&self, line: LobbyLine) {
        let mut lines = self.lock();
        if lines.len() >= 2 * MAX_BATCH {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        lines.push(line);
        let len = lines.len();
        drop(lines);
        if len == 1 || len == MAX_BATCH {
            self.waiting.notify_one();
        }
    }

    /// Lines lost so far: over the bound, or in a batch that failed.
    pub(super) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    fn take(&self) -> Vec<LobbyLine> {
        std::mem::take(&mut *self.lock())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<LobbyLine>> {
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The connection and what the thread needs beside it.
pub(super) struct Writer {
    connection: Connection,
    /// The database file, for error messages.
    path: PathBuf,
    /// Held until the thread ends, with the connection.
    _lock: Option<DirLock>,
    keep_history: usize,
    lobby: Arc<Lobby>,
}

impl Writer {
    pub(super) fn new(
        connection: Connection,
        path: PathBuf,
        lock: Option<DirLock>,
        keep_history: usize,
        lobby: &Arc<Lobby>,
    ) -> Writer {
        Writer {
            connection,
            path,
            _lock: lock,
            keep_history,
            lobby: Arc::clone(lobby),
        }
    }

    /// Applies commands until [`Command::Close`] or until every `Store` is
    /// gone, committing the lobby's lines once a [`LOBBY_WINDOW`] in
    /// between. `runtime` only keeps the window's time.
    pub(super) fn run(self, runtime: Runtime, queue: mpsc::Receiver<Command>) {
        runtime.block_on(self.serve(queue));
    }

    async fn serve(mut self, mut queue: mpsc::Receiver<Command>) {
        // When the lines waiting must be committed.
        let mut due: Option<Instant> = None;
        let lobby = Arc::clone(&self.lobby);
        loop {
            tokio::select! {
                biased;
                command = queue.recv() => match command {
                    None => break,
                    Some(Command::Close { reply }) => {
                        self.commit_lobby();
                        // Closes the database and releases the directory
                        // before the caller hears that it is done.
                        drop(self);
                        let _ = reply.send(());
                        return;
                    }
                    Some(Command::Ask(request)) => {
                        // Lines recorded before a request are in the
                        // database when it runs.
                        self.commit_lobby();
                        due = None;
                        self.apply(request);
                    }
                },
                () = lobby.waiting.notified() => match lobby.len() {
                    // Taken already, by a request's commit.
                    0 => {}
                    full if full >= MAX_BATCH => {
                        self.commit_lobby();
                        due = None;
                    }
                    _ => {
                        due.get_or_insert_with(|| Instant::now() + LOBBY_WINDOW);
                    }
                },
                () = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.commit_lobby();
                    due = None;
                }
            }
        }
        self.commit_lobby();
    }

    fn apply(&mut self, request: Request) {
        match request {
            Request::Account { key, reply } => {
                let account = self.account(&key);
                self.answer(reply, account);
            }
            Request::Register {
                key,
                name,
                phc,
                reply,
            } => {
                let created_ms = now_ms();
                let registered = self.durably(|tx| {
                    let added = tx.execute(
                        "INSERT INTO accounts (key, name, phc, created_ms) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (key) DO NOTHING",
                        params![key, name, phc, created_ms],
                    )?;
                    Ok(added == 1)
                });
                self.answer(reply, registered);
            }
            Request::SetPassword { key, phc, reply } => {
                let changed = self.durably(|tx| {
                    let changed = tx.execute(
                        "UPDATE accounts SET phc = ?2 WHERE key = ?1",
                        params![key, phc],
                    )?;
                    Ok(changed == 1)
                });
                self.answer(reply, changed);
            }
            Request::Unregister { key, reply } => {
                let removed = self.durably(|tx| {
                    Ok(tx.execute("DELETE FROM accounts WHERE key = ?1", [key])? == 1)
                });
                self.answer(reply, removed);
            }
            Request::Ban { ban, reply } => {
                let done = self.durably(|tx| {
                    tx.execute(
                        "INSERT INTO bans (key, address, until_ms, reason, set_by)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (key) DO UPDATE SET
                             address = coalesce(excluded.address, bans.address),
                             until_ms = excluded.until_ms,
                             reason = excluded.reason,
                             set_by = excluded.set_by",
                        params![ban.key, ban.address, ban.until_ms, ban.reason, ban.by],
                    )?;
                    Ok(())
                });
                self.answer(reply, done);
            }
            Request::Unban { key, reply } => {
                let lifted = self
                    .durably(|tx| Ok(tx.execute("DELETE FROM bans WHERE key = ?1", [key])? == 1));
                self.answer(reply, lifted);
            }
            Request::BansInForce { now_ms, reply } => {
                let bans = self.bans_in_force(now_ms);
                self.answer(reply, bans);
            }
            Request::Mute { mute, reply } => {
                let done = self.durably(|tx| {
                    tx.execute(
                        "INSERT OR REPLACE INTO mutes (key, until_ms, reason, set_by)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![mute.key, mute.until_ms, mute.reason, mute.by],
                    )?;
                    Ok(())
                });
                self.answer(reply, done);
            }
            Request::Unmute { key, reply } => {
                let lifted = self
                    .durably(|tx| Ok(tx.execute("DELETE FROM mutes WHERE key = ?1", [key])? == 1));
                self.answer(reply, lifted);
            }
            Request::MutesInForce { now_ms, reply } => {
                let mutes = self.mutes_in_force(now_ms);
                self.answer(reply, mutes);
            }
            Request::LobbyHistory { limit, reply } => {
                let lines = self.lobby_history(limit);
                self.answer(reply, lines);
            }
            Request::CountAccounts { reply } => {
                let count = self
                    .connection
                    .query_row("SELECT count(*) FROM accounts", [], |row| {
                        row.get::<_, i64>(0)
                    })
                    .map(|count| u64::try_from(count).unwrap_or(0));
                self.answer(reply, count);
            }
        }
    }

    fn answer<T>(&self, reply: Reply<T>, result: rusqlite::Result<T>) {
        let result = result.map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        });
        // A caller that gave up needs no answer.
        let _ = reply.send(result);
    }

    /// Runs `change` in a transaction that is on disk (fsynced) when this
    /// returns.
    fn durably<T>(
        &mut self,
        change: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.connection.pragma_update(None, "synchronous", "FULL")?;
        let connection = &mut self.connection;
        let result: rusqlite::Result<T> = (|| {
            let transaction = connection.transaction()?;
            let value = change(&transaction)?;
            transaction.commit()?;
            Ok(value)
        })();
        let restored = self.connection.pragma_update(None, "synchronous", "NORMAL");
        let value = result?;
        restored?;
        Ok(value)
    }

    fn account(&self, key: &str) -> rusqlite::Result<Option<Account>> {
        self.connection
            .prepare_cached("SELECT name, phc, created_ms FROM accounts WHERE key = ?1")?
            .query_row([key], |row| {
                Ok(Account {
                    name: row.get(0)?,
                    phc: row.get(1)?,
                    created_ms: row.get(2)?,
                })
            })
            .optional()
    }

    fn bans_in_force(&self, now_ms: i64) -> rusqlite::Result<Vec<Ban>> {
        self.connection
            .execute("DELETE FROM bans WHERE until_ms <= ?1", [now_ms])?;
        let mut statement = self.connection.prepare_cached(
            "SELECT key, address, until_ms, reason, set_by FROM bans ORDER BY key",
        )?;
        let bans = statement.query_map([], |row| {
            Ok(Ban {
                key: row.get(0)?,
                address: row.get(1)?,
                until_ms: row.get(2)?,
                reason: row.get(3)?,
                by: row.get(4)?,
            })
        })?;
        bans.collect()
    }

    fn mutes_in_force(&self, now_ms: i64) -> rusqlite::Result<Vec<Mute>> {
        self.connection
            .execute("DELETE FROM mutes WHERE until_ms <= ?1", [now_ms])?;
        let mut statement = self
            .connection
            .prepare_cached("SELECT key, until_ms, reason, set_by FROM mutes ORDER BY key")?;
        let mutes = statement.query_map([], |row| {
            Ok(Mute {
                key: row.get(0)?,
                until_ms: row.get(1)?,
                reason: row.get(2)?,
                by: row.get(3)?,
            })
        })?;
        mutes.collect()
    }

    fn lobby_history(&self, limit: usize) -> rusqlite::Result<Vec<LobbyLine>> {
        let limit = i64::try_from(limit.min(self.keep_history)).unwrap_or(i64::MAX);
        let mut statement = self.connection.prepare_cached(
            "SELECT time_ms, sender, text FROM
                 (SELECT id, time_ms, sender, text FROM lobby ORDER BY id DESC LIMIT ?1)
             ORDER BY id",
        )?;
        let lines = statement.query_map([limit], |row| {
            Ok(LobbyLine {
                time_ms: row.get(0)?,
                from: row.get(1)?,
                text: row.get(2)?,
            })
        })?;
        lines.collect()
    }

    /// Commits the lobby's waiting lines in one transaction and forgets
    /// all but the last `keep_history`. A batch that fails is counted as
    /// lost.
    fn commit_lobby(&mut self) {
        let lines = self.lobby.take();
        if lines.is_empty() {
            return;
        }
        let keep = i64::try_from(self.keep_history).unwrap_or(i64::MAX);
        let committed: rusqlite::Result<()> = (|| {
            let transaction = self.connection.transaction()?;
            {
                let mut insert = transaction.prepare_cached(
                    "INSERT INTO lobby (time_ms, sender, text) VALUES (?1, ?2, ?3)",
                )?;
                for line in lines.iter() {
                    insert.execute(params![line.time_ms, line.from, line.text])?;
                }
            }
            transaction
                .prepare_cached("DELETE FROM lobby WHERE id <= (SELECT max(id) FROM lobby) - ?1")?
                .execute([keep])?;
            transaction.commit()
        })();
        if let Err(error) = committed {
            let lost = u64::try_from(lines.len()).unwrap_or(u64::MAX);
            self.lobby.lost.fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(%error, lines = lost, path = %self.path.display(), "lobby history not saved");
        }
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
