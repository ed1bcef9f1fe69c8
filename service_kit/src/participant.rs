//! What the saga participants (consumer_service, restaurant_service,
//! accounting_service) share besides the [`runtime`](crate::runtime), so that each
//! participant crate holds only its domain:
//!
//! - **Idempotent outcomes.** The outcome of a handled command is stored under
//!   `{prefix}processed:{message_id}` ([`processed_key`]) for [`OUTCOME_TTL`], and the
//!   reply is built from what is stored, so a redelivered command gets the same
//!   reply and changes nothing. [`record_outcome`] stores an outcome decided in Rust
//!   (`SET NX`, then a `GET` for a duplicate); a participant's own scripts, which make a
//!   domain change and store its outcome in the same atomic step, stay in the
//!   participant and may return the same `{outcome JSON, fresh}` pair, read by
//!   [`Stored::from_reply`].
//! - **Fixtures.** The JSON of the file named by `FIXTURES_PATH` or of the built-in
//!   file ([`fixture_json_from_env`]), and the records written to Redis at every
//!   start ([`write_fixtures`]). Parsing and validating them is the participant's.
//! - **Fixture cache.** [`FixtureCache`]: the fixture record a command reads, kept
//!   in memory for `FIXTURE_CACHE_MS` ([`fixture_cache_ttl_from_env`]) so that a
//!   command in steady state makes one Redis round trip (storing its outcome), not
//!   two. Redis stays the truth; the TTL bounds how stale a copy can be.
//! - **Errors.** [`StoreError`] from the Redis helpers here, [`StartError`] from a
//!   participant's `run`, [`transient`] for a store failure in a command handler, and
//!   [`ReadError`], which becomes a `tonic::Status` in one place.

use std::{
    borrow::Cow,
    ffi::OsString,
    fmt,
    num::NonZeroUsize,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lru::LruCache;
use messaging::participant::CommandError;
use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Serialize, de::DeserializeOwned};
use tonic::Status;

use crate::{
    runtime::ServiceError,
    settings::{SettingsError, env_millis},
};

/// How long the outcome of a command is kept under its message id: far longer
/// than any command can be redelivered or re-sent (commands carry deadlines).
pub const OUTCOME_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The variable naming a fixture file to use instead of the built-in one.
pub const FIXTURES_PATH_VAR: &str = "FIXTURES_PATH";

/// The longest order id a command or read call may name (they are UUIDs).
pub const MAX_ORDER_ID_LEN: usize = 128;

/// The most times [`record_outcome_json`] tries to store-or-read an outcome: a
/// second try is needed only if the stored outcome vanished between its `SET NX`
/// and its `GET` (deleted by hand, or evicted), and then stores this one.
const RECORD_ATTEMPTS: usize = 3;

/// A Redis read or write failed, or what it read is not what the service wrote.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("value at {key} is not the JSON this service writes: {source}")]
    Json {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The key of the stored outcome of the command with this message id, under a
/// participant's key prefix (from `Namespace::key_prefix`, ends in `:`).
pub fn processed_key(prefix: &str, message_id: &str) -> String {
    format!("{prefix}processed:{message_id}")
}

/// An outcome as the store returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<T> {
    pub outcome: T,
    /// False when the outcome was stored by an earlier delivery of the command.
    pub fresh: bool,
}

impl<T: DeserializeOwned> Stored<T> {
    /// Reads the `{outcome JSON, 1 if decided now / 0 if replayed}` pair that a
    /// participant's command scripts return; `key`, the
    /// processed key, names the value if it is not the expected JSON.
    pub fn from_reply(key: String, (json, fresh): (String, i64)) -> Result<Self, StoreError> {
        let outcome = serde_json::from_str(&json).map_err(|source| StoreError::Json { key, source })?;
        Ok(Self { outcome, fresh: fresh == 1 })
    }
}

impl<T: fmt::Debug> Stored<T> {
    /// Logs the outcome once per command, with `decided` when this delivery decided
    /// it. Debug, not info: a line per command costs CPU on the hot path, and the
    /// outcome is in the reply, the metrics and the command's span anyway.
    pub fn log(&self, decided: &str) {
        if self.fresh {
            tracing::debug!(outcome = ?self.outcome, "{decided}");
        } else {
            tracing::debug!(outcome = ?self.outcome, "duplicate command; replying the stored outcome");
        }
    }
}

/// Stores `outcome` under `key` (the [`processed_key`] of the command) unless an
/// earlier delivery stored one; returns whichever is stored. For outcomes that
/// change nothing else.
pub async fn record_outcome<T: Serialize + DeserializeOwned>(
    conn: &ConnectionManager,
    key: String,
    outcome: &T,
) -> Result<Stored<T>, StoreError> {
    let json = serde_json::to_string(outcome).map_err(|source| StoreError::Json { key: key.clone(), source })?;
    let stored = record_outcome_json(conn, &key, json).await?;
    let outcome = serde_json::from_str(&stored.outcome).map_err(|source| StoreError::Json { key, source })?;
    Ok(Stored { outcome, fresh: stored.fresh })
}

/// [`record_outcome`] for an outcome already in JSON, returning the stored JSON:
/// for a participant that reads every stored outcome with its own parser.
///
/// "SET NX, then GET": two plain commands rather than a Lua script, because in
/// the running system a script costs Redis several times a plain command, and a
/// fresh command (nearly all of them) needs only the `SET`. Each command is atomic
/// on its own: the `SET NX` stores this outcome only if none is stored, and a
/// refused one means an earlier delivery stored the outcome that the `GET` reads.
pub async fn record_outcome_json(
    conn: &ConnectionManager,
    key: &str,
    json: String,
) -> Result<Stored<String>, redis::RedisError> {
    let mut conn = conn.clone();
    let options = redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::EX(OUTCOME_TTL.as_secs()));
    for _ in 0..RECORD_ATTEMPTS {
        let stored_now: Option<String> = conn.set_options(key, &json, options.clone()).await?;
        if stored_now.is_some() {
            return Ok(Stored { outcome: json, fresh: true });
        }
        if let Some(outcome) = conn.get::<_, Option<String>>(key).await? {
            return Ok(Stored { outcome, fresh: false });
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Client,
        "the stored outcome kept vanishing between SET NX and GET",
        key.to_owned(),
    )))
}

/// The JSON value at `key` (a fixture record), if there is one.
pub async fn get_json<T: DeserializeOwned>(conn: &ConnectionManager, key: String) -> Result<Option<T>, StoreError> {
    let raw: Option<String> = conn.clone().get(&key).await?;
    raw.map(|json| serde_json::from_str(&json).map_err(|source| StoreError::Json { key, source })).transpose()
}

/// Writes fixture records as JSON, one SET per `(key, record)` in one pipeline
/// (overwriting those keys, nothing else). Idempotent, so every replica does it at
/// start. No records writes nothing (an empty pipeline is an error to Redis).
pub async fn write_fixtures<'a, T: Serialize + 'a>(
    conn: &ConnectionManager,
    records: impl IntoIterator<Item = (String, &'a T)>,
) -> Result<(), StoreError> {
    let mut pipe = redis::pipe();
    let mut any = false;
    for (key, record) in records {
        let json = serde_json::to_string(record).map_err(|source| StoreError::Json { key: key.clone(), source })?;
        pipe.set(key, json).ignore();
        any = true;
    }
    if any {
        let () = pipe.query_async(&mut conn.clone()).await?;
    }
    Ok(())
}

/// The variable setting how long a [`FixtureCache`] keeps a record, in
/// milliseconds; `0` reads Redis on every command.
pub const FIXTURE_CACHE_MS_VAR: &str = "FIXTURE_CACHE_MS";

/// `FIXTURE_CACHE_MS` when it is unset.
pub const DEFAULT_FIXTURE_CACHE_TTL: Duration = Duration::from_millis(DEFAULT_FIXTURE_CACHE_MS);
const DEFAULT_FIXTURE_CACHE_MS: u64 = 1000;

/// Records one [`FixtureCache`] keeps: far more than the fixture files hold, so
/// the bound only matters for commands naming ids that do not exist (each cached
/// as missing), which must not grow the cache without limit.
pub const FIXTURE_CACHE_CAPACITY: NonZeroUsize = NonZeroUsize::new(4096).expect("4096 is not zero");

/// `FIXTURE_CACHE_MS` ([`DEFAULT_FIXTURE_CACHE_TTL`] when unset).
pub fn fixture_cache_ttl_from_env() -> Result<Duration, SettingsError> {
    env_millis(FIXTURE_CACHE_MS_VAR, DEFAULT_FIXTURE_CACHE_MS)
}

/// A read-through cache of fixture records over [`get_json`], keyed by the Redis
/// key, so that a command in steady state makes one Redis round trip (its outcome
/// script) instead of two.
///
/// Why a copy may be served: fixture records change only when a replica restarts
/// with another fixture file and rewrites them ([`write_fixtures`]). Each entry is
/// used for the TTL only, counted from before the read that filled it, so a record
/// another replica rewrote is seen by every read that starts a TTL after the
/// rewrite. Redis stays the truth: nothing is written through the cache, and a
/// missing record is cached as `None` for the same TTL, so a record created by a
/// restart is found within the TTL too. A Redis or JSON error is returned, never
/// cached. A zero TTL disables the cache: every read goes to Redis.
///
/// Concurrent misses of one key each read Redis (no single flight): at most one
/// extra read per key and task per TTL, not worth a wait queue. Cheap to clone:
/// the clones share the entries.
pub struct FixtureCache<T> {
    conn: ConnectionManager,
    /// `None` when the TTL is zero.
    memory: Option<Arc<Memory<T>>>,
}

impl<T> Clone for FixtureCache<T> {
    fn clone(&self) -> Self {
        Self { conn: self.conn.clone(), memory: self.memory.clone() }
    }
}

impl<T: DeserializeOwned> FixtureCache<T> {
    /// A cache over `conn` keeping each record for `ttl` (zero: no caching), at
    /// most [`FIXTURE_CACHE_CAPACITY`] records.
    pub fn new(conn: ConnectionManager, ttl: Duration) -> Self {
        Self { conn, memory: Memory::new(ttl, FIXTURE_CACHE_CAPACITY).map(Arc::new) }
    }

    /// The record at `key` (`None` if there is none): the cached copy while it is
    /// younger than the TTL, otherwise what Redis holds now.
    pub async fn get(&self, key: String) -> Result<Option<Arc<T>>, StoreError> {
        let Some(memory) = &self.memory else {
            return Ok(get_json(&self.conn, key).await?.map(Arc::new));
        };
        if let Some(cached) = memory.lookup(&key, Instant::now()) {
            return Ok(cached);
        }
        // Stamped before the read: the copy then expires no later than a TTL after
        // any rewrite that the read might have missed.
        let read_at = Instant::now();
        let record = get_json(&self.conn, key.clone()).await?.map(Arc::new);
        memory.remember(key, record.clone(), read_at);
        Ok(record)
    }
}

/// The entries of a [`FixtureCache`], apart from Redis so that expiry can be
/// tested with chosen instants.
struct Memory<T> {
    ttl: Duration,
    /// A std mutex: it is held for a map operation only, never across an await.
    entries: Mutex<LruCache<String, Entry<T>>>,
}

/// A record as read from Redis (`None`: there was none), and when the read began.
struct Entry<T> {
    record: Option<Arc<T>>,
    read_at: Instant,
}

impl<T> Memory<T> {
    /// `None` for a zero TTL: nothing would ever be fresh.
    fn new(ttl: Duration, capacity: NonZeroUsize) -> Option<Self> {
        (!ttl.is_zero()).then(|| Self { ttl, entries: Mutex::new(LruCache::new(capacity)) })
    }

    /// The cached record at `key` if it is younger than the TTL at `now`: `Some(None)`
    /// is a cached miss, `None` means Redis must be read. A lock poisoned by a
    /// panic elsewhere also means "read Redis": the cache is an optimisation only.
    fn lookup(&self, key: &str, now: Instant) -> Option<Option<Arc<T>>> {
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get(key)?;
        (now.saturating_duration_since(entry.read_at) < self.ttl).then(|| entry.record.clone())
    }

    /// Keeps `record`, read from Redis at `read_at`, replacing an older entry.
    fn remember(&self, key: String, record: Option<Arc<T>>, read_at: Instant) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.put(key, Entry { record, read_at });
        }
    }
}

/// A fixture file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the fixture file {path}: {source}")]
pub struct FixtureFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The fixture JSON a participant starts with: the file named by `FIXTURES_PATH`,
/// or `builtin` (its file compiled in) when the variable is unset or blank.
pub fn fixture_json_from_env(builtin: &'static str) -> Result<Cow<'static, str>, FixtureFileError> {
    fixture_json(fixtures_path(std::env::var_os(FIXTURES_PATH_VAR)), builtin)
}

/// The file a `FIXTURES_PATH` value names: trimmed like every other setting, none
/// when blank. A value that is not UTF-8 is taken as it is.
fn fixtures_path(value: Option<OsString>) -> Option<PathBuf> {
    let value = value?;
    match value.to_str() {
        Some(text) => Some(text.trim()).filter(|path| !path.is_empty()).map(PathBuf::from),
        None => Some(PathBuf::from(value)),
    }
}

/// The contents of the file at `path`, or `builtin` when there is no path.
fn fixture_json(path: Option<PathBuf>, builtin: &'static str) -> Result<Cow<'static, str>, FixtureFileError> {
    match path {
        None => Ok(Cow::Borrowed(builtin)),
        Some(path) => {
            std::fs::read_to_string(&path).map(Cow::Owned).map_err(|source| FixtureFileError { path, source })
        }
    }
}

/// Why a participant did not start: its settings, its fixtures (`F` is the
/// participant's own validation error), Redis, or the service runtime.
#[derive(Debug, thiserror::Error)]
pub enum StartError<F> {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    FixtureFile(#[from] FixtureFileError),
    #[error("invalid fixtures: {0}")]
    Fixtures(#[source] F),
    #[error("loading fixtures into Redis: {0}")]
    LoadFixtures(#[from] StoreError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// A store failure while handling a command: the command is requeued. Every
/// command's write is one atomic script, so either nothing was stored and the retry
/// decides afresh, or the outcome was stored (only reading it back failed) and the
/// retry replays it.
pub fn transient<E: fmt::Display>(error: E) -> CommandError {
    // The participant loop logs it at warn, with the command's order and message ids.
    tracing::debug!(error = %error, "store failure; the command will be retried");
    CommandError::Transient(error.to_string())
}

/// Why a read call failed: the caller's mistake, a missing record, or ours (`E`, the
/// participant's store error). It becomes a `tonic::Status` in one place, its `From`.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    /// `INVALID_ARGUMENT`, naming the field.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// `NOT_FOUND`, with this message.
    #[error("{0}")]
    NotFound(String),
    /// `INTERNAL`: the cause chain is logged, not sent to the caller.
    #[error("reading the store failed")]
    Store(#[from] E),
}

impl<E> ReadError<E> {
    /// `INVALID_ARGUMENT` unless `order_id` is 1 to [`MAX_ORDER_ID_LEN`] bytes.
    pub fn check_order_id(order_id: &str) -> Result<(), Self> {
        if order_id.is_empty() || order_id.len() > MAX_ORDER_ID_LEN {
            return Err(Self::InvalidArgument {
                field: "order_id",
                reason: format!("must be 1 to {MAX_ORDER_ID_LEN} bytes"),
            });
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> From<ReadError<E>> for Status {
    fn from(error: ReadError<E>) -> Self {
        match error {
            ReadError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            ReadError::NotFound(what) => Status::not_found(what),
            ReadError::Store(cause) => {
                tracing::error!(error = %error_chain(&cause), "read call failed");
                Status::internal("reading the store failed")
            }
        }
    }
}

/// `error` and its sources, `: `-separated, for one log field.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        chain.push_str(": ");
        chain.push_str(&inner.to_string());
        source = inner.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_processed_key_lives_under_the_service_prefix() {
        assert_eq!(processed_key("t-x:consumer:", "m-1"), "t-x:consumer:processed:m-1");
    }

    #[test]
    fn a_script_reply_is_read_as_the_stored_outcome_and_whether_it_is_new() {
        let fresh: Stored<Vec<i64>> = Stored::from_reply("k".into(), ("[1,2]".into(), 1)).expect("valid JSON");
        assert_eq!(fresh, Stored { outcome: vec![1, 2], fresh: true });
        let replayed: Stored<Vec<i64>> = Stored::from_reply("k".into(), ("[]".into(), 0)).expect("valid JSON");
        assert!(!replayed.fresh);
        let corrupt = Stored::<Vec<i64>>::from_reply("p:processed:m".into(), ("{".into(), 1));
        assert!(matches!(corrupt, Err(StoreError::Json { ref key, .. }) if key == "p:processed:m"));
    }

    #[test]
    fn a_blank_fixtures_path_means_the_builtin_file() {
        assert_eq!(fixtures_path(None), None);
        assert_eq!(fixtures_path(Some("".into())), None);
        assert_eq!(fixtures_path(Some("  ".into())), None);
        assert_eq!(fixtures_path(Some(" /etc/ftgo/f.json ".into())), Some(PathBuf::from("/etc/ftgo/f.json")));
        assert!(matches!(fixture_json(None, "{}"), Ok(Cow::Borrowed("{}"))));
    }

    #[test]
    fn an_unreadable_fixture_file_is_named_in_the_error() {
        let error = fixture_json(Some("/no/such/fixtures.json".into()), "{}").expect_err("no such file");
        assert!(error.to_string().starts_with("cannot read the fixture file /no/such/fixtures.json: "), "{error}");
    }

    #[test]
    fn caller_mistakes_and_missing_things_are_not_internal_errors() {
        type Read = ReadError<std::io::Error>;
        let status = Status::from(Read::InvalidArgument { field: "ticket_id", reason: "must be positive".into() });
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("ticket_id"));
        assert_eq!(Status::from(Read::NotFound("ticket 9".into())).code(), tonic::Code::NotFound);
        let status = Status::from(Read::Store(std::io::Error::other("bad json")));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("bad json"), "internal details stay in the log");
    }

    #[test]
    fn a_cached_record_is_fresh_for_the_ttl_and_stale_from_then_on() {
        let memory = Memory::new(Duration::from_secs(1), NonZeroUsize::MIN).expect("a non-zero TTL caches");
        let read_at = Instant::now();
        memory.remember("k".into(), Some(Arc::new(7)), read_at);
        assert_eq!(memory.lookup("k", read_at), Some(Some(Arc::new(7))));
        assert_eq!(memory.lookup("k", read_at + Duration::from_millis(999)), Some(Some(Arc::new(7))));
        assert_eq!(memory.lookup("k", read_at + Duration::from_secs(1)), None);
        assert_eq!(memory.lookup("other", read_at), None);
    }

    #[test]
    fn a_cached_miss_is_a_known_none_and_the_oldest_entry_goes_first() {
        let memory = Memory::<i64>::new(Duration::from_secs(60), NonZeroUsize::MIN).expect("a non-zero TTL caches");
        let now = Instant::now();
        memory.remember("missing".into(), None, now);
        assert_eq!(memory.lookup("missing", now), Some(None));
        memory.remember("k".into(), Some(Arc::new(1)), now);
        assert_eq!(memory.lookup("missing", now), None, "capacity 1: the older entry was evicted");
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        assert!(Memory::<i64>::new(Duration::ZERO, FIXTURE_CACHE_CAPACITY).is_none());
    }

    /// Fixture records of one test on the real Redis (`REDIS_URL`, by default
    /// 127.0.0.1:6379), under a key prefix of its own.
    struct Scratch {
        conn: ConnectionManager,
        prefix: String,
    }

    impl Scratch {
        async fn new(label: &str) -> Result<Self, StoreError> {
            let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let conn = ConnectionManager::new(redis::Client::open(url)?).await?;
            Ok(Self { conn, prefix: crate::Namespace::random(label).key_prefix("fixture-cache") })
        }

        fn key(&self, name: &str) -> String {
            format!("{}{name}", self.prefix)
        }

        fn cache(&self, ttl: Duration) -> FixtureCache<i64> {
            FixtureCache::new(self.conn.clone(), ttl)
        }

        /// Writes `json` as the record at `key`; it expires by itself in case the
        /// test fails before [`Self::cleanup`].
        async fn set(&self, key: &str, json: &str) -> Result<(), StoreError> {
            let () = self.conn.clone().set_ex(key, json, 600).await?;
            Ok(())
        }

        async fn cleanup(mut self) -> Result<(), StoreError> {
            crate::store::delete_prefix(&mut self.conn, &self.prefix).await?;
            Ok(())
        }
    }

    #[tokio::test]
    async fn within_the_ttl_a_changed_record_is_not_seen() -> Result<(), StoreError> {
        let redis = Scratch::new("cache-hit").await?;
        let key = redis.key("consumer:1");
        let cache = redis.cache(Duration::from_secs(60));
        redis.set(&key, "1").await?;
        assert_eq!(cache.get(key.clone()).await?.as_deref(), Some(&1));

        redis.set(&key, "2").await?;
        assert_eq!(cache.get(key.clone()).await?.as_deref(), Some(&1));
        assert_eq!(cache.clone().get(key.clone()).await?.as_deref(), Some(&1), "clones share the entries");
        assert_eq!(redis.cache(Duration::ZERO).get(key).await?.as_deref(), Some(&2), "Redis has the new record");
        redis.cleanup().await
    }

    #[tokio::test]
    async fn after_the_ttl_the_changed_record_is_read() -> Result<(), StoreError> {
        let redis = Scratch::new("cache-expiry").await?;
        let key = redis.key("consumer:1");
        let cache = redis.cache(Duration::from_millis(50));
        redis.set(&key, "1").await?;
        assert_eq!(cache.get(key.clone()).await?.as_deref(), Some(&1));

        redis.set(&key, "2").await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(cache.get(key).await?.as_deref(), Some(&2));
        redis.cleanup().await
    }

    #[tokio::test]
    async fn the_first_outcome_stored_under_a_key_is_the_one_every_later_call_gets() -> Result<(), StoreError> {
        let redis = Scratch::new("outcome").await?;
        let key = redis.key("processed:m-1");
        let first = record_outcome_json(&redis.conn, &key, "\"verified\"".into()).await?;
        assert_eq!(first, Stored { outcome: "\"verified\"".into(), fresh: true });
        let again = record_outcome_json(&redis.conn, &key, "\"rejected\"".into()).await?;
        assert_eq!(again, Stored { outcome: "\"verified\"".into(), fresh: false }, "a duplicate gets the first");
        let ttl: i64 = redis.conn.clone().ttl(&key).await?;
        assert!(ttl > 0 && ttl <= OUTCOME_TTL.as_secs() as i64, "stored with the outcome TTL, got {ttl}");
        redis.cleanup().await
    }

    #[tokio::test]
    async fn a_zero_ttl_reads_redis_every_time() -> Result<(), StoreError> {
        let redis = Scratch::new("cache-off").await?;
        let key = redis.key("consumer:1");
        let cache = redis.cache(Duration::ZERO);
        redis.set(&key, "1").await?;
        assert_eq!(cache.get(key.clone()).await?.as_deref(), Some(&1));
        redis.set(&key, "2").await?;
        assert_eq!(cache.get(key.clone()).await?.as_deref(), Some(&2));
        let () = redis.conn.clone().del(&key).await?;
        assert_eq!(cache.get(key).await?, None);
        redis.cleanup().await
    }

    #[tokio::test]
    async fn a_missing_record_is_cached_as_none() -> Result<(), StoreError> {
        let redis = Scratch::new("cache-miss").await?;
        let key = redis.key("consumer:99");
        let cache = redis.cache(Duration::from_secs(60));
        assert_eq!(cache.get(key.clone()).await?, None);

        redis.set(&key, "99").await?;
        assert_eq!(cache.get(key.clone()).await?, None);
        assert_eq!(redis.cache(Duration::ZERO).get(key).await?.as_deref(), Some(&99), "Redis has the record");
        redis.cleanup().await
    }

    #[tokio::test]
    async fn an_unreadable_record_is_an_error_and_not_cached() -> Result<(), StoreError> {
        let redis = Scratch::new("cache-corrupt").await?;
        let key = redis.key("consumer:1");
        let cache = redis.cache(Duration::from_secs(60));
        redis.set(&key, "{").await?;
        let error = cache.get(key.clone()).await.expect_err("not an i64");
        assert!(matches!(error, StoreError::Json { key: ref at, .. } if *at == key), "{error}");

        redis.set(&key, "1").await?;
        assert_eq!(cache.get(key).await?.as_deref(), Some(&1));
        redis.cleanup().await
    }

    #[test]
    fn an_order_id_must_be_one_to_max_bytes() {
        type Read = ReadError<std::io::Error>;
        let status = Status::from(Read::check_order_id("").expect_err("empty"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("order_id"), "{}", status.message());
        assert!(Read::check_order_id(&"x".repeat(MAX_ORDER_ID_LEN + 1)).is_err());
        assert!(Read::check_order_id(&"x".repeat(MAX_ORDER_ID_LEN)).is_ok());
    }
}
