//! consumer_service's Redis data. Keys, under the service's prefix (`consumer:`, or
//! `{namespace}:consumer:` in a test namespace):
//!
//! | key | value |
//! |---|---|
//! | `{prefix}consumer:{consumer_id}` | the consumer, JSON (from the fixtures) |
//! | `{prefix}processed:{message_id}` | the outcome of a handled command, JSON, 7-day TTL |
//!
//! Every write that answers a command goes through
//! [`service_kit::participant::record_outcome`] (`SET NX`, atomic on its own)
//! instead of WATCH/MULTI, which means nothing on a multiplexed connection. The
//! consumer a command reads comes from a [`FixtureCache`] (records change only at a
//! replica's restart), so in steady state that `SET` is the command's only round
//! trip.

use std::{sync::Arc, time::Duration};

use redis::aio::ConnectionManager;
use service_kit::participant::{self, FixtureCache, Stored};

use crate::domain::{Consumer, VerifyOutcome};

/// A Redis read or write failed, or what it read is not what this service wrote.
pub use service_kit::participant::StoreError;

/// The key layout of one deployment (namespace).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (from `Namespace::key_prefix("consumer")`, ends in `:`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The consumer record.
    pub fn consumer(&self, consumer_id: i64) -> String {
        format!("{}consumer:{consumer_id}", self.prefix)
    }

    /// The stored outcome of the command with this message id.
    pub fn processed(&self, message_id: &str) -> String {
        participant::processed_key(&self.prefix, message_id)
    }
}

/// consumer_service's handle on Redis; cheap to clone.
#[derive(Clone)]
pub struct ConsumerStore {
    conn: ConnectionManager,
    keys: Keys,
    consumers: FixtureCache<Consumer>,
}

impl ConsumerStore {
    /// `fixture_cache_ttl`: how long a consumer read for a command is reused
    /// (`FIXTURE_CACHE_MS`; zero reads Redis every time).
    pub fn new(conn: ConnectionManager, keys: Keys, fixture_cache_ttl: Duration) -> Self {
        let consumers = FixtureCache::new(conn.clone(), fixture_cache_ttl);
        Self { conn, keys, consumers }
    }

    /// Writes the fixture consumers (overwriting those records, nothing else).
    /// Idempotent, so every replica does it at start.
    pub async fn load_fixtures(&self, consumers: &[Consumer]) -> Result<(), StoreError> {
        participant::write_fixtures(&self.conn, consumers.iter().map(|c| (self.keys.consumer(c.consumer_id), c))).await
    }

    /// The consumer with this id, if there is one, as of at most the cache's TTL
    /// ago: for commands, which run on every saga.
    pub async fn consumer(&self, consumer_id: i64) -> Result<Option<Arc<Consumer>>, StoreError> {
        self.consumers.get(self.keys.consumer(consumer_id)).await
    }

    /// The consumer with this id as Redis holds it now: for read calls, which are
    /// rare enough to skip the cache, so they always show what Redis holds.
    pub async fn consumer_now(&self, consumer_id: i64) -> Result<Option<Consumer>, StoreError> {
        participant::get_json(&self.conn, self.keys.consumer(consumer_id)).await
    }

    /// Stores `outcome` under `message_id` unless an earlier delivery stored one;
    /// returns whichever is stored.
    pub async fn record_outcome(
        &self,
        message_id: &str,
        outcome: &VerifyOutcome,
    ) -> Result<Stored<VerifyOutcome>, StoreError> {
        participant::record_outcome(&self.conn, self.keys.processed(message_id), outcome).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_service_prefix() {
        let keys = Keys::new("t-x:consumer:");
        assert_eq!(keys.consumer(7), "t-x:consumer:consumer:7");
        assert_eq!(keys.processed("m-1"), "t-x:consumer:processed:m-1");
    }
}
