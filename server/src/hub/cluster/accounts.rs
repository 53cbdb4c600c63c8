//! Version 3 in cluster mode: accounts, bans and mutes live in the
//! cluster's Redis, shared by every node, and an operator's removal of a
//! user reaches the node that user is on.
//!
//! These are plain commands on a connection of their own, apart from the
//! driver's pipeline: they are few (a registration, a login to a registered
//! name, an operator's request), and none of them belongs in the stream's
//! order. A removal (a kick, a ban, a name taken back) of a user on another
//! node is left in `chat:farewells` for that node, which looks for its
//! users there twice a second and closes them itself.

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::sync::Mutex;

use super::scripts;
use crate::store::{Account, Ban, Mute};

/// Registered names: lower-cased name → `<name> <phc>`.
const ACCOUNTS: &str = "chat:accounts";
/// Bans in force: lower-cased name → `<until ms>\n<by>\n<address or ->\n<text>`.
const BANS: &str = "chat:bans";
/// Mutes in force: lower-cased name → `<until ms>\n<by>\n<text>`.
const MUTES: &str = "chat:mutes";
/// Removals waiting for the node of their user: lower-cased name →
/// `<code>\n<detail>`.
const FAREWELLS: &str = "chat:farewells";

/// The cluster's accounts, bans and mutes.
pub struct RedisAccounts {
    client: redis::Client,
    connection: Mutex<Option<MultiplexedConnection>>,
}

type Result<T> = std::result::Result<T, String>;

impl RedisAccounts {
    pub fn new(client: redis::Client) -> RedisAccounts {
        RedisAccounts {
            client,
            connection: Mutex::new(None),
        }
    }

    /// The connection, made again after it failed.
    async fn connection(&self) -> Result<MultiplexedConnection> {
        let mut connection = self.connection.lock().await;
        if let Some(connection) = connection.as_ref() {
            return Ok(connection.clone());
        }
        let made = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("cannot reach Redis for accounts: {e}"))?;
        *connection = Some(made.clone());
        Ok(made)
    }

    /// Runs a command; a failure drops the connection, for the next call to
    /// make a new one.
    async fn run<T, F>(&self, command: impl FnOnce(MultiplexedConnection) -> F) -> Result<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        match command(connection).await {
            Ok(value) => Ok(value),
            Err(e) => {
                *self.connection.lock().await = None;
                Err(format!("Redis failed an accounts command: {e}"))
            }
        }
    }

    pub async fn account(&self, key: &str) -> Result<Option<Account>> {
        let found: Option<String> = self
            .run(|mut c| async move { c.hget(ACCOUNTS, key).await })
            .await?;
        Ok(found.and_then(|value| {
            let (name, phc) = value.split_once(' ')?;
            Some(Account {
                name: name.to_owned(),
                phc: phc.to_owned(),
                created_ms: 0,
            })
        }))
    }

    pub async fn register(&self, key: &str, name: &str, phc: &str) -> Result<bool> {
        let value = format!("{name} {phc}");
        self.run(|mut c| async move { c.hset_nx(ACCOUNTS, key, value).await })
            .await
    }

    pub async fn set_password(&self, key: &str, phc: &str) -> Result<bool> {
        let script = redis::Script::new(
            r"local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local name = string.match(v, '^[^ ]+')
redis.call('HSET', KEYS[1], ARGV[1], name .. ' ' .. ARGV[2])
return 1",
        );
        let changed: i64 = self
            .run(|mut c| async move {
                script
                    .key(ACCOUNTS)
                    .arg(key)
                    .arg(phc)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(changed == 1)
    }

    pub async fn unregister(&self, key: &str) -> Result<bool> {
        let removed: i64 = self
            .run(|mut c| async move { c.hdel(ACCOUNTS, key).await })
            .await?;
        Ok(removed == 1)
    }

    pub async fn count_accounts(&self) -> Result<u64> {
        self.run(|mut c| async move { c.hlen(ACCOUNTS).await })
            .await
    }

    pub async fn ban(&self, ban: &Ban) -> Result<()> {
        let value = format!(
            "{}\n{}\n{}\n{}",
            ban.until_ms,
            ban.by,
            ban.address.as_deref().unwrap_or("-"),
            ban.reason.as_deref().unwrap_or("")
        );
        let key = ban.key.clone();
        self.run(|mut c| async move { c.hset(BANS, key, value).await })
            .await
    }

    pub async fn unban(&self, key: &str) -> Result<()> {
        self.run(|mut c| async move { c.hdel(BANS, key).await })
            .await
    }

    /// The ban of one name, read now: a login on any node sees a ban made
    /// on another at once.
    pub async fn ban_of(&self, key: &str) -> Result<Option<Ban>> {
        let found: Option<String> = self
            .run(|mut c| async move { c.hget(BANS, key).await })
            .await?;
        Ok(found.and_then(|value| read_ban(key, &value)))
    }

    pub async fn bans_in_force(&self, now_ms: i64) -> Result<Vec<Ban>> {
        let all: Vec<(String, String)> = self
            .run(|mut c| async move { c.hgetall(BANS).await })
            .await?;
        Ok(all
            .iter()
            .filter_map(|(key, value)| read_ban(key, value))
            .filter(|ban| ban.until_ms > now_ms)
            .collect())
    }

    pub async fn mute(&self, mute: &Mute) -> Result<()> {
        let value = format!(
            "{}\n{}\n{}",
            mute.until_ms,
            mute.by,
            mute.reason.as_deref().unwrap_or("")
        );
        let key = mute.key.clone();
        self.run(|mut c| async move { c.hset(MUTES, key, value).await })
            .await
    }

    pub async fn unmute(&self, key: &str) -> Result<()> {
        self.run(|mut c| async move { c.hdel(MUTES, key).await })
            .await
    }

    pub async fn mutes_in_force(&self, now_ms: i64) -> Result<Vec<Mute>> {
        let all: Vec<(String, String)> = self
            .run(|mut c| async move { c.hgetall(MUTES).await })
            .await?;
        Ok(all
            .iter()
            .filter_map(|(key, value)| {
                let mut fields = value.splitn(3, '\n');
                let until_ms = fields.next()?.parse().ok()?;
                let by = fields.next()?.to_owned();
                let reason = fields.next().filter(|r| !r.is_empty()).map(str::to_owned);
                Some(Mute {
                    key: key.clone(),
                    until_ms,
                    reason,
                    by,
                })
            })
            .filter(|mute| mute.until_ms > now_ms)
            .collect())
    }

    /// Whether the name is logged in on any node.
    pub async fn logged_in(&self, key: &str) -> Result<bool> {
        self.run(|mut c| async move { c.hexists(scripts::USERS, key).await })
            .await
    }

    /// Leaves a removal for the node the user is on.
    pub async fn farewell(&self, key: &str, code: &str, detail: &str) -> Result<()> {
        let value = format!("{code}\n{detail}");
        self.run(|mut c| async move { c.hset(FAREWELLS, key, value).await })
            .await
    }

    /// The removals waiting, as (name key, code, detail).
    pub async fn farewells(&self) -> Result<Vec<(String, String, String)>> {
        let all: Vec<(String, String)> = self
            .run(|mut c| async move { c.hgetall(FAREWELLS).await })
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(key, value)| {
                let (code, detail) = value.split_once('\n')?;
                Some((key, code.to_owned(), detail.to_owned()))
            })
            .collect())
    }

    /// A removal was carried out.
    pub async fn forget_farewell(&self, key: &str) -> Result<()> {
        self.run(|mut c| async move { c.hdel(FAREWELLS, key).await })
            .await
    }
}

fn read_ban(key: &str, value: &str) -> Option<Ban> {
    let mut fields = value.splitn(4, '\n');
    let until_ms = fields.next()?.parse().ok()?;
    let by = fields.next()?.to_owned();
    let address = fields.next().filter(|a| *a != "-").map(str::to_owned);
    let reason = fields.next().filter(|r| !r.is_empty()).map(str::to_owned);
    Some(Ban {
        key: key.to_owned(),
        address,
        until_ms,
        reason,
        by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_read_back_with_or_without_address_and_text() {
        let ban = read_ban("bob", "1700000000000\ncarol\n203.0.113.5\nspam and more").unwrap();
        assert_eq!(ban.until_ms, 1_700_000_000_000);
        assert_eq!(ban.by, "carol");
        assert_eq!(ban.address.as_deref(), Some("203.0.113.5"));
        assert_eq!(ban.reason.as_deref(), Some("spam and more"));
        let bare = read_ban("bob", "5\ncarol\n-\n").unwrap();
        assert_eq!((bare.address, bare.reason), (None, None));
        assert!(read_ban("bob", "garbage").is_none());
    }
}
