//! The store's tests: what survives a reopen, what is refused, and what a
//! kill -9 keeps.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};

use super::*;

const KEEP: usize = 100;

fn ban(key: &str, address: Option<&str>, until_ms: i64) -> Ban {
    Ban {
        key: key.into(),
        address: address.map(Into::into),
        until_ms,
        reason: Some("spam".into()),
        by: "op".into(),
    }
}

fn mute(key: &str, until_ms: i64) -> Mute {
    Mute {
        key: key.into(),
        until_ms,
        reason: None,
        by: "op".into(),
    }
}

#[tokio::test]
async fn a_reopened_store_keeps_accounts_bans_mutes_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("chat-data");
    let store = Store::open(&data, KEEP).unwrap();
    assert!(store
        .register("alice", "Alice", "$argon2id$a")
        .await
        .unwrap());
    assert!(!store
        .register("alice", "ALICE", "$argon2id$b")
        .await
        .unwrap());
    assert!(store.register("bob", "bob", "$argon2id$b").await.unwrap());
    assert!(store
        .register("carol", "Carol", "$argon2id$c")
        .await
        .unwrap());
    assert!(store.set_password("bob", "$argon2id$b2").await.unwrap());
    assert!(!store.set_password("nobody", "$argon2id$x").await.unwrap());
    assert!(store.unregister("carol").await.unwrap());
    assert!(!store.unregister("carol").await.unwrap());
    store
        .ban(ban("mallory", Some("192.0.2.7"), 5_000))
        .await
        .unwrap();
    store.ban(ban("eve", None, 6_000)).await.unwrap();
    store.mute(mute("trent", 7_000)).await.unwrap();
    store.record_lobby(1, "alice", "hello");
    store.record_lobby(2, "bob", "hi alice");
    store.close().await;
    assert!(matches!(
        store.account("alice").await,
        Err(StoreError::Closed)
    ));

    let store = Store::open(&data, KEEP).unwrap();
    let alice = store.account("alice").await.unwrap().unwrap();
    assert_eq!(
        (alice.name.as_str(), alice.phc.as_str()),
        ("Alice", "$argon2id$a")
    );
    assert!(alice.created_ms > 0);
    assert_eq!(
        store.account("bob").await.unwrap().unwrap().phc,
        "$argon2id$b2"
    );
    assert_eq!(store.account("carol").await.unwrap(), None);
    assert_eq!(store.count_accounts().await.unwrap(), 2);
    assert_eq!(
        store.bans_in_force(1_000).await.unwrap(),
        vec![
            ban("eve", None, 6_000),
            ban("mallory", Some("192.0.2.7"), 5_000)
        ]
    );
    assert_eq!(
        store.mutes_in_force(1_000).await.unwrap(),
        vec![mute("trent", 7_000)]
    );
    let history = store.lobby_history(10).await.unwrap();
    let said: Vec<_> = history
        .iter()
        .map(|l| (l.time_ms, l.from.as_str(), l.text.as_str()))
        .collect();
    assert_eq!(said, [(1, "alice", "hello"), (2, "bob", "hi alice")]);
}

#[tokio::test]
async fn unban_lifts_the_name_and_its_address_and_a_reban_keeps_the_address() {
    let store = Store::ephemeral(KEEP);
    store
        .ban(ban("mallory", Some("2001:db8:1:2::/64"), 5_000))
        .await
        .unwrap();
    // Banned again while not logged in: the address stays banned with it.
    store.ban(ban("mallory", None, 9_000)).await.unwrap();
    assert_eq!(
        store.bans_in_force(0).await.unwrap(),
        vec![ban("mallory", Some("2001:db8:1:2::/64"), 9_000)]
    );
    assert!(store.unban("mallory").await.unwrap());
    assert!(!store.unban("mallory").await.unwrap());
    assert_eq!(store.bans_in_force(0).await.unwrap(), []);
    store.mute(mute("trent", 5_000)).await.unwrap();
    assert!(store.unmute("trent").await.unwrap());
    assert!(!store.unmute("trent").await.unwrap());
    assert_eq!(store.mutes_in_force(0).await.unwrap(), []);
}

#[tokio::test]
async fn expired_bans_and_mutes_are_not_in_force() {
    let store = Store::ephemeral(KEEP);
    store
        .ban(ban("old", Some("192.0.2.1"), 1_000))
        .await
        .unwrap();
    store.ban(ban("new", None, 3_000)).await.unwrap();
    store.mute(mute("old", 1_000)).await.unwrap();
    store.mute(mute("new", 3_000)).await.unwrap();
    // A ban ending at `now` has ended.
    assert_eq!(
        store.bans_in_force(1_000).await.unwrap(),
        vec![ban("new", None, 3_000)]
    );
    assert_eq!(
        store.mutes_in_force(2_999).await.unwrap(),
        vec![mute("new", 3_000)]
    );
    assert_eq!(store.bans_in_force(3_000).await.unwrap(), []);
    assert_eq!(store.mutes_in_force(3_000).await.unwrap(), []);
}

#[tokio::test]
async fn an_ephemeral_store_keeps_nothing_across_instances() {
    let store = Store::ephemeral(KEEP);
    assert!(store
        .register("alice", "Alice", "$argon2id$a")
        .await
        .unwrap());
    store.ban(ban("mallory", None, i64::MAX)).await.unwrap();
    store.record_lobby(1, "alice", "hello");
    assert_eq!(store.lobby_history(KEEP).await.unwrap().len(), 1);
    store.close().await;

    let store = Store::ephemeral(KEEP);
    assert_eq!(store.account("alice").await.unwrap(), None);
    assert_eq!(store.count_accounts().await.unwrap(), 0);
    assert_eq!(store.bans_in_force(0).await.unwrap(), []);
    assert_eq!(store.lobby_history(KEEP).await.unwrap(), []);
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused_until_it_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), KEEP).unwrap();
    let refused = Store::open(dir.path(), KEEP).err().expect("refused");
    assert!(matches!(refused, StoreError::InUse { .. }), "{refused:?}");
    assert_eq!(
        refused.to_string(),
        format!(
            "{} is in use by another chat-server (pid {}); stop it, or give this one another --data-dir",
            dir.path().display(),
            std::process::id()
        )
    );
    store.close().await;
    let store = Store::open(dir.path(), KEEP).unwrap();
    assert_eq!(store.count_accounts().await.unwrap(), 0);
}

#[tokio::test]
async fn a_data_dir_from_a_newer_release_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path(), KEEP).unwrap().close().await;
    let database = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    database.pragma_update(None, "user_version", 3).unwrap();
    drop(database);

    let refused = Store::open(dir.path(), KEEP).err().expect("refused");
    assert_eq!(
        refused.to_string(),
        format!(
            "{} was written by a newer chat-server (schema 3, this one knows 1); upgrade chat-server",
            dir.path().display()
        )
    );
    // Refused before anything was written: still version 3.
    let database = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let version: u32 = database
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 3);
}

#[tokio::test]
async fn an_older_data_dir_is_brought_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    // Version 0: a database file that predates every migration.
    Connection::open(dir.path().join(DATABASE_FILE))
        .unwrap()
        .execute_batch("CREATE TABLE unrelated (x)")
        .unwrap();
    let store = Store::open(dir.path(), KEEP).unwrap();
    assert!(store
        .register("alice", "Alice", "$argon2id$a")
        .await
        .unwrap());
    store.close().await;
    let database = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let version: u32 = database
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, schema::known_version());
}

#[tokio::test]
async fn history_recorded_quickly_lands_in_batches_and_the_last_lines_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 20_000).unwrap();
    // Paced below the queue's size: nothing may be lost.
    for i in 0..10_000 {
        store.record_lobby(i, "alice", &format!("line {i}"));
        if i % 1_000 == 999 {
            store.count_accounts().await.unwrap();
        }
    }
    assert_eq!(store.lobby_lost(), 0);
    assert_eq!(store.lobby_history(usize::MAX).await.unwrap().len(), 10_000);
    store.close().await;

    // Reopened keeping 500: the last 500, oldest first.
    let store = Store::open(dir.path(), 500).unwrap();
    // The trim happens with the next batch.
    store.record_lobby(10_000, "bob", "line 10000");
    let history = store.lobby_history(usize::MAX).await.unwrap();
    let times: Vec<i64> = history.iter().map(|l| l.time_ms).collect();
    assert_eq!(times, (9_501..=10_000).collect::<Vec<_>>());
    assert_eq!(history[0].text, "line 9501");
    assert_eq!(store.lobby_history(3).await.unwrap()[0].time_ms, 9_998);
}

#[tokio::test]
async fn history_past_the_queue_is_counted_as_lost_and_never_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1_000_000).unwrap();
    // Unpaced: whatever does not fit is dropped (the newest), and counted.
    let recorded = 3 * QUEUE as i64;
    for i in 0..recorded {
        store.record_lobby(i, "alice", &format!("line {i}"));
    }
    let history = store.lobby_history(usize::MAX).await.unwrap();
    let lost = store.lobby_lost();
    assert_eq!(history.len() as u64 + lost, recorded as u64);
    assert!(history.len() >= QUEUE - 1, "{} landed", history.len());
    assert!(history.windows(2).all(|w| w[0].time_ms < w[1].time_ms));
    assert!(history
        .iter()
        .all(|l| l.text == format!("line {}", l.time_ms)));
}

#[tokio::test]
async fn a_hash_is_kept_in_the_accounts_table_only() {
    const SECRET: &str = "hunter2-looks-like-a-password";
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), KEEP).unwrap();
    assert!(store.register("alice", "Alice", SECRET).await.unwrap());
    store
        .ban(ban("mallory", Some("192.0.2.7"), i64::MAX))
        .await
        .unwrap();
    store.mute(mute("trent", i64::MAX)).await.unwrap();
    store.record_lobby(1, "alice", "hello");
    let alice = store.account("alice").await.unwrap().unwrap();
    assert!(!format!("{alice:?}").contains(SECRET));
    store.close().await;

    let lock = std::fs::read_to_string(dir.path().join(lock::LOCK_FILE)).unwrap();
    assert!(!lock.contains(SECRET));
    let database = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let tables: Vec<String> = database
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables.len(), 4, "{tables:?}");
    for table in tables {
        let mut rows = database.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let columns = rows.column_count();
        let mut rows = rows.query([]).unwrap();
        let mut found = false;
        while let Some(row) = rows.next().unwrap() {
            for column in 0..columns {
                let value: rusqlite::types::Value = row.get(column).unwrap();
                found |= matches!(value, rusqlite::types::Value::Text(t) if t.contains(SECRET));
            }
        }
        assert_eq!(found, table == "accounts", "in {table}");
    }
}

/// Set in the child of [`an_answered_register_survives_a_kill_9`]: the data
/// directory to register in.
const KILL_DIR: &str = "CHAT_STORE_TEST_KILL_DIR";
/// What the child prints once `register` has returned.
const REGISTERED: &str = "store-test: registered";

#[tokio::test]
async fn an_answered_register_survives_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args([
            "store::tests::child_registers_then_waits_to_be_killed",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut registered = false;
    for line in stdout.lines() {
        if line.unwrap().contains(REGISTERED) {
            registered = true;
            break;
        }
    }
    // `kill` is SIGKILL: no destructor, no flush, no checkpoint.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(registered, "the child never registered");

    // The kernel released the lock with the process.
    let store = Store::open(dir.path(), KEEP).unwrap();
    let alice = store.account("alice").await.unwrap().expect("kept");
    assert_eq!(alice.phc, "$argon2id$kept");
    assert_eq!(store.lobby_history(KEEP).await.unwrap().len(), 1);
}

/// Not a test of its own: the child process of
/// [`an_answered_register_survives_a_kill_9`] (does nothing without its
/// environment variable).
#[tokio::test]
async fn child_registers_then_waits_to_be_killed() {
    let Some(dir) = std::env::var_os(KILL_DIR) else {
        return;
    };
    let store = Store::open(Path::new(&dir), KEEP).unwrap();
    store.record_lobby(1, "alice", "hello");
    assert!(store
        .register("alice", "Alice", "$argon2id$kept")
        .await
        .unwrap());
    println!("{REGISTERED}");
    std::thread::sleep(std::time::Duration::from_secs(60));
}
