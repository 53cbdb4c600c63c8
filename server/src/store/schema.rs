//! The tables, and the migrations that bring an older data directory up to
//! date.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Each is
//! applied in its own transaction, so a server killed mid-upgrade leaves
//! the database at the previous version, to be upgraded again. A release
//! only ever appends to [`MIGRATIONS`]; a database with more than it knows
//! came from a newer release and is refused, not guessed at.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// The migrations, in order: the database is at version `n` once the first
/// `n` have been applied.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, bans, mutes and the lobby's history.
    "CREATE TABLE accounts (
         key TEXT PRIMARY KEY NOT NULL,
         name TEXT NOT NULL,
         phc TEXT NOT NULL,
         created_ms INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE bans (
         key TEXT PRIMARY KEY NOT NULL,
         address TEXT,
         until_ms INTEGER NOT NULL,
         reason TEXT,
         set_by TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE mutes (
         key TEXT PRIMARY KEY NOT NULL,
         until_ms INTEGER NOT NULL,
         reason TEXT,
         set_by TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE lobby (
         id INTEGER PRIMARY KEY,
         time_ms INTEGER NOT NULL,
         sender TEXT NOT NULL,
         text TEXT NOT NULL
     );",
];

/// The schema version this release writes.
pub(super) fn known_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).expect("fewer than 2^32 migrations")
}

/// Sets the connection up and migrates it: refuses a newer schema, then
/// (on disk) turns WAL on, then applies the missing migrations. `dir` is
/// what errors name; `path` is the database file.
pub(super) fn prepare(
    connection: &mut Connection,
    dir: &Path,
    path: &Path,
    on_disk: bool,
) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let found: u32 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    let known = known_version();
    if found > known {
        return Err(StoreError::Newer {
            dir: dir.to_path_buf(),
            found,
            known,
        });
    }
    if on_disk {
        // WAL: a commit appends to the log, readers never block the writer,
        // and a killed process loses nothing that was committed.
        // synchronous=NORMAL is the default for the lobby's history (no
        // fsync a commit); the writer raises it to FULL around accounts,
        // bans and mutes (writer.rs).
        let mode: String = connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sqlite)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(sqlite(rusqlite::Error::InvalidParameterName(format!(
                "journal_mode stays {mode}, not WAL"
            ))));
        }
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
    }
    for version in found..known {
        let transaction = connection.transaction().map_err(sqlite)?;
        transaction
            .execute_batch(MIGRATIONS[version as usize])
            .map_err(sqlite)?;
        transaction
            .pragma_update(None, "user_version", version + 1)
            .map_err(sqlite)?;
        transaction.commit().map_err(sqlite)?;
    }
    Ok(())
}
