//! Version 3: registered names, operators, bans and mutes, and what the
//! server remembers of them across a restart.
//!
//! The durable truth is the [`Store`]; what every request must check at
//! once (is this name banned, this address, this user muted, has this name
//! seen too many wrong passwords) is kept here in memory as well, so that
//! checking costs a lock, not a trip to the disk. Passwords are hashed and
//! checked by the [`Hasher`]'s own threads, never on the async workers: a
//! storm of registered logins delays those logins only.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use chat_protocol::{name_key, ErrorCode, Password, Timestamp};

use super::cluster::accounts::RedisAccounts;
use super::Refusal;
use crate::limits::Key as Address;
use crate::passwords::Hasher;
use crate::store::{Account, Ban, Mute, Store};

/// Wrong passwords for one name, within [`TRIES_WINDOW`], after which every
/// login to it is refused for that long.
const MAX_TRIES: usize = 5;
const TRIES_WINDOW: Duration = Duration::from_secs(60);

/// The accounts and moderation of one server.
pub struct Accounts {
    store: Backend,
    hasher: Hasher,
    /// Names (keys) that are operators once logged in with their password.
    operators: HashSet<String>,
    /// Whether loopback addresses may be banned (`--limits-on-loopback`).
    on_loopback: bool,
    state: Mutex<Moderation>,
}

/// What is in force now, as the store has it.
#[derive(Default)]
struct Moderation {
    /// Bans by name key.
    bans: HashMap<String, Ban>,
    /// The name key each banned address was banned with.
    addresses: HashMap<String, String>,
    mutes: HashMap<String, Mute>,
    /// The times of the last wrong passwords, by name key.
    tries: HashMap<String, VecDeque<Instant>>,
}

/// Whether a login proved the name's password.
pub enum Proof {
    /// The name is not registered: an ordinary login.
    Unregistered,
    /// The right password: the name may be taken back from another
    /// connection.
    Password,
}

impl Accounts {
    /// Accounts over `store`, with the bans and mutes it holds in force.
    pub async fn load(
        store: Backend,
        hasher: Hasher,
        operators: &[String],
        on_loopback: bool,
    ) -> Result<Accounts, String> {
        let accounts = Accounts::new(store, hasher, operators, on_loopback);
        accounts.reload().await?;
        Ok(accounts)
    }

    /// Accounts over `store`, with nothing in force yet.
    pub fn new(
        store: Backend,
        hasher: Hasher,
        operators: &[String],
        on_loopback: bool,
    ) -> Accounts {
        Accounts {
            store,
            hasher,
            operators: operators.iter().map(|name| name_key(name)).collect(),
            on_loopback,
            state: Mutex::new(Moderation::default()),
        }
    }

    /// Where the lobby's history is kept across restarts: a single
    /// server's store (a cluster keeps it in Redis already).
    pub fn lobby_store(&self) -> Option<&Store> {
        match &self.store {
            Backend::Disk(store) => Some(store),
            Backend::Cluster(_) => None,
        }
    }

    /// The cluster's side, for what only a cluster does.
    pub fn cluster(&self) -> Option<&RedisAccounts> {
        match &self.store {
            Backend::Disk(_) => None,
            Backend::Cluster(redis) => Some(redis),
        }
    }

    /// Writes what is queued and lets the data directory go.
    pub async fn close(&self) {
        if let Backend::Disk(store) = &self.store {
            store.close().await;
        }
    }

    /// Reads bans and mutes again (cluster mode: other nodes change them).
    pub async fn reload(&self) -> Result<(), String> {
        let now = now_ms();
        let bans = self.store.bans_in_force(now).await?;
        let mutes = self.store.mutes_in_force(now).await?;
        let mut state = self.state();
        state.bans.clear();
        state.addresses.clear();
        for ban in bans {
            if let Some(address) = &ban.address {
                state.addresses.insert(address.clone(), ban.key.clone());
            }
            state.bans.insert(ban.key.clone(), ban);
        }
        state.mutes = mutes.into_iter().map(|m| (m.key.clone(), m)).collect();
        Ok(())
    }

    /// `ERROR banned …` if the name is banned, as the store has it now (in
    /// cluster mode another node may have banned it a moment ago).
    pub async fn name_banned_now(&self, key: &str) -> Result<Option<Refusal>, Refusal> {
        if let Backend::Cluster(redis) = &self.store {
            let ban = redis.ban_of(key).await.map_err(unavailable)?;
            let mut state = self.state();
            match ban {
                Some(ban) => {
                    state.bans.insert(key.to_owned(), ban);
                }
                None => {
                    state.bans.remove(key);
                }
            }
        }
        Ok(self.name_banned(key))
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Whether the name of this key is an operator's (once logged in with
    /// its password).
    pub fn is_operator(&self, key: &str) -> bool {
        self.operators.contains(key)
    }

    /// `ERROR banned <until> [<text>]` if the name of this key is banned.
    pub fn name_banned(&self, key: &str) -> Option<Refusal> {
        let state = self.state();
        let ban = state.bans.get(key).filter(|b| b.until_ms > now_ms())?;
        Some(banned(ban))
    }

    /// `ERROR banned <until> [<text>]` if connections from `ip` are refused.
    pub fn address_banned(&self, ip: IpAddr) -> Option<Refusal> {
        let address = Address::of(ip, self.on_loopback)?.to_string();
        let state = self.state();
        let key = state.addresses.get(&address)?;
        let ban = state.bans.get(key).filter(|b| b.until_ms > now_ms())?;
        Some(banned(ban))
    }

    /// `ERROR muted <until>` if the user of this key may not send messages.
    pub fn muted(&self, key: &str) -> Option<Refusal> {
        let state = self.state();
        let mute = state.mutes.get(key).filter(|m| m.until_ms > now_ms())?;
        Some(Refusal::new(ErrorCode::Muted, until(mute.until_ms)))
    }

    /// Checks a login's password against the name's account: the
    /// contract's order is `name-registered` / `not-registered`, then
    /// `too-many-tries`, then `bad-password`.
    pub async fn prove(&self, key: &str, password: Option<&Password>) -> Result<Proof, Refusal> {
        let account = self.account(key).await?;
        match (account, password) {
            (None, None) => Ok(Proof::Unregistered),
            (Some(_), None) => Err(ErrorCode::NameRegistered.into()),
            (None, Some(_)) => Err(ErrorCode::NotRegistered.into()),
            (Some(account), Some(password)) => {
                self.check_password(key, &account, password).await?;
                Ok(Proof::Password)
            }
        }
    }

    /// `REGISTER <password>` of the name logged in as `name`.
    pub async fn register(&self, name: &str, password: &Password) -> Result<(), Refusal> {
        let key = name_key(name);
        if self.account(&key).await?.is_some() {
            return Err(ErrorCode::AlreadyRegistered.into());
        }
        let phc = self.hash(password).await?;
        match self.store.register(&key, name, &phc).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ErrorCode::AlreadyRegistered.into()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// `PASSWORD <old> <new>`.
    pub async fn change_password(
        &self,
        name: &str,
        old: &Password,
        new: &Password,
    ) -> Result<(), Refusal> {
        let key = name_key(name);
        let account = self.registered(&key).await?;
        self.check_password(&key, &account, old).await?;
        let phc = self.hash(new).await?;
        match self.store.set_password(&key, &phc).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ErrorCode::NotRegistered.into()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// `UNREGISTER <password>`.
    pub async fn unregister(&self, name: &str, password: &Password) -> Result<(), Refusal> {
        let key = name_key(name);
        let account = self.registered(&key).await?;
        self.check_password(&key, &account, password).await?;
        match self.store.unregister(&key).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ErrorCode::NotRegistered.into()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// `BAN`: the name (and `ip`, the address it is connected from, if
    /// any) until `duration` from now; written before it is answered.
    pub async fn ban(
        &self,
        key: &str,
        ip: Option<IpAddr>,
        duration: Duration,
        text: Option<String>,
        by: &str,
    ) -> Result<Refusal, Refusal> {
        let ban = Ban {
            key: key.to_owned(),
            address: ip
                .and_then(|ip| Address::of(ip, self.on_loopback))
                .map(|a| a.to_string()),
            until_ms: now_ms().saturating_add(duration.as_millis() as i64),
            reason: text,
            by: by.to_owned(),
        };
        self.store.ban(&ban).await.map_err(unavailable)?;
        let refusal = banned(&ban);
        let mut state = self.state();
        if let Some(old) = state.bans.remove(key) {
            if let Some(address) = old.address {
                state.addresses.remove(&address);
            }
        }
        if let Some(address) = &ban.address {
            state.addresses.insert(address.clone(), key.to_owned());
        }
        state.bans.insert(key.to_owned(), ban);
        Ok(refusal)
    }

    /// `UNBAN`: the name and the address banned with it.
    pub async fn unban(&self, key: &str) -> Result<(), Refusal> {
        self.store.unban(key).await.map_err(unavailable)?;
        let mut state = self.state();
        if let Some(ban) = state.bans.remove(key) {
            if let Some(address) = ban.address {
                state.addresses.remove(&address);
            }
        }
        Ok(())
    }

    /// `MUTE` until `duration` from now; written before it is answered.
    pub async fn mute(
        &self,
        key: &str,
        duration: Duration,
        text: Option<String>,
        by: &str,
    ) -> Result<(), Refusal> {
        let mute = Mute {
            key: key.to_owned(),
            until_ms: now_ms().saturating_add(duration.as_millis() as i64),
            reason: text,
            by: by.to_owned(),
        };
        self.store.mute(&mute).await.map_err(unavailable)?;
        self.state().mutes.insert(key.to_owned(), mute);
        Ok(())
    }

    /// `UNMUTE`.
    pub async fn unmute(&self, key: &str) -> Result<(), Refusal> {
        self.store.unmute(key).await.map_err(unavailable)?;
        self.state().mutes.remove(key);
        Ok(())
    }

    /// The bans in force, as (name key, until), sorted like names.
    pub fn bans(&self) -> Vec<(String, Timestamp)> {
        let now = now_ms();
        let state = self.state();
        let mut bans: Vec<(String, Timestamp)> = state
            .bans
            .values()
            .filter(|b| b.until_ms > now)
            .map(|b| (b.key.clone(), timestamp(b.until_ms)))
            .collect();
        bans.sort();
        bans
    }

    /// How many bans and mutes are in force, for the metrics.
    pub fn in_force(&self) -> (usize, usize) {
        let now = now_ms();
        let state = self.state();
        let bans = state.bans.values().filter(|b| b.until_ms > now).count();
        let mutes = state.mutes.values().filter(|m| m.until_ms > now).count();
        (bans, mutes)
    }

    async fn account(&self, key: &str) -> Result<Option<Account>, Refusal> {
        self.store.account(key).await.map_err(unavailable)
    }

    async fn registered(&self, key: &str) -> Result<Account, Refusal> {
        self.account(key)
            .await?
            .ok_or_else(|| ErrorCode::NotRegistered.into())
    }

    /// `too-many-tries` before the password is even looked at; a wrong one
    /// counts toward it.
    async fn check_password(
        &self,
        key: &str,
        account: &Account,
        password: &Password,
    ) -> Result<(), Refusal> {
        if self.too_many_tries(key) {
            return Err(ErrorCode::TooManyTries.into());
        }
        let right = password.is_acceptable()
            && self
                .hasher
                .verify(password.expose().to_owned(), account.phc.clone())
                .await;
        if right {
            return Ok(());
        }
        self.wrong_password(key);
        crate::metrics::login_failed();
        Err(ErrorCode::BadPassword.into())
    }

    async fn hash(&self, password: &Password) -> Result<String, Refusal> {
        self.hasher
            .hash(password.expose().to_owned())
            .await
            .map_err(|_| Refusal::new(ErrorCode::Unavailable, "cannot hash passwords right now"))
    }

    /// Whether the name saw [`MAX_TRIES`] wrong passwords within a minute,
    /// and that minute has not passed since the last of them.
    fn too_many_tries(&self, key: &str) -> bool {
        let state = self.state();
        let Some(tries) = state.tries.get(key) else {
            return false;
        };
        match (tries.front(), tries.back()) {
            (Some(first), Some(last)) if tries.len() >= MAX_TRIES => {
                last.duration_since(*first) <= TRIES_WINDOW && last.elapsed() < TRIES_WINDOW
            }
            _ => false,
        }
    }

    fn wrong_password(&self, key: &str) {
        let mut state = self.state();
        let now = Instant::now();
        state.tries.retain(|_, tries| {
            tries
                .back()
                .is_some_and(|t| now.duration_since(*t) < TRIES_WINDOW)
        });
        let tries = state.tries.entry(key.to_owned()).or_default();
        if tries.len() == MAX_TRIES {
            tries.pop_front();
        }
        tries.push_back(now);
    }

    fn state(&self) -> MutexGuard<'_, Moderation> {
        // Each change is one insert or remove: a poisoned lock still guards
        // consistent maps.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `ERROR banned <until> [<text>]` for a ban.
fn banned(ban: &Ban) -> Refusal {
    let mut detail = until(ban.until_ms);
    if let Some(text) = &ban.reason {
        detail.push(' ');
        detail.push_str(text);
    }
    Refusal::new(ErrorCode::Banned, detail)
}

/// The store failed: nothing was done.
fn unavailable(error: impl std::fmt::Display) -> Refusal {
    tracing::error!(%error, "the data store failed");
    Refusal::new(
        ErrorCode::Unavailable,
        "the server cannot reach its data store; nothing was done",
    )
}

fn until(ms: i64) -> String {
    timestamp(ms).to_string()
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms.max(0) as u64).unwrap_or_else(Timestamp::now)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where accounts, bans and mutes are kept: a single server's data
/// directory, or the cluster's Redis.
pub enum Backend {
    Disk(Store),
    Cluster(Box<RedisAccounts>),
}

impl Backend {
    async fn account(&self, key: &str) -> Result<Option<Account>, String> {
        match self {
            Backend::Disk(store) => store.account(key).await.map_err(|e| e.to_string()),
            Backend::Cluster(redis) => redis.account(key).await,
        }
    }

    async fn register(&self, key: &str, name: &str, phc: &str) -> Result<bool, String> {
        match self {
            Backend::Disk(store) => store
                .register(key, name, phc)
                .await
                .map_err(|e| e.to_string()),
            Backend::Cluster(redis) => redis.register(key, name, phc).await,
        }
    }

    async fn set_password(&self, key: &str, phc: &str) -> Result<bool, String> {
        match self {
            Backend::Disk(store) => store
                .set_password(key, phc)
                .await
                .map_err(|e| e.to_string()),
            Backend::Cluster(redis) => redis.set_password(key, phc).await,
        }
    }

    async fn unregister(&self, key: &str) -> Result<bool, String> {
        match self {
            Backend::Disk(store) => store.unregister(key).await.map_err(|e| e.to_string()),
            Backend::Cluster(redis) => redis.unregister(key).await,
        }
    }

    async fn ban(&self, ban: &Ban) -> Result<(), String> {
        match self {
            Backend::Disk(store) => store.ban(ban.clone()).await.map_err(|e| e.to_string()),
            Backend::Cluster(redis) => redis.ban(ban).await,
        }
    }

    async fn unban(&self, key: &str) -> Result<(), String> {
        match self {
            Backend::Disk(store) => store.unban(key).await.map(drop).map_err(|e| e.to_string()),
            Backend::Cluster(redis) => redis.unban(key).await,
        }
    }

    async fn bans_in_force(&self, now_ms: i64) -> Result<Vec<Ban>, String> {
        match self {
            Backend::Disk(store) => store.bans_in_force(now_ms).await.map_err(|e| e.to_string()),
            Backend::Cluster(redis) => redis.bans_in_force(now_ms).await,
        }
    }

    async fn mute(&self, mute: &Mute) -> Result<(), String> {
        match self {
            Backend::Disk(store) => store.mute(mute.clone()).await.map_err(|e| e.to_string()),
            Backend::Cluster(redis) => redis.mute(mute).await,
        }
    }

    async fn unmute(&self, key: &str) -> Result<(), String> {
        match self {
            Backend::Disk(store) => store.unmute(key).await.map(drop).map_err(|e| e.to_string()),
            Backend::Cluster(redis) => redis.unmute(key).await,
        }
    }

    async fn mutes_in_force(&self, now_ms: i64) -> Result<Vec<Mute>, String> {
        match self {
            Backend::Disk(store) => store
                .mutes_in_force(now_ms)
                .await
                .map_err(|e| e.to_string()),
            Backend::Cluster(redis) => redis.mutes_in_force(now_ms).await,
        }
    }
}
