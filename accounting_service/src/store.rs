//! accounting_service's Redis data. Keys, under the service's prefix (`accounting:`,
//! or `{namespace}:accounting:` in a test namespace):
//!
//! | key | value |
//! |---|---|
//! | `{prefix}account:{consumer_id}` | the account, JSON (from the fixtures) |
//! | `{prefix}authorization:{authorization_id}` | hash: id, order, consumer, amount, currency, state |
//! | `{prefix}order:{order_id}:authorizations` | set of the order's authorization ids |
//! | `{prefix}tombstone:{order_id}` | written by VoidAuthorization; refuses later AuthorizeCards |
//! | `{prefix}processed:{message_id}` | the outcome of a handled command, JSON, 7-day TTL |
//!
//! Each command is one Lua script (one round trip, atomic, EVALSHA) that replays the
//! stored outcome or makes its change and stores the outcome with it; a refusal
//! decided in Rust is stored by [`service_kit::participant::record_outcome`].
//! WATCH/MULTI would mean nothing on the multiplexed connection. The scripts derive
//! the keys of an order's authorizations from its index set, so they assume a single
//! Redis (not Cluster), like the rest of the participants. The account AuthorizeCard
//! checks comes from a [`FixtureCache`] (records change only at a replica's
//! restart), so in steady state its script is the command's only round trip.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
    time::Duration,
};

use redis::aio::ConnectionManager;
use serde::{Serialize, de::DeserializeOwned};
use service_kit::participant::{self, FixtureCache, OUTCOME_TTL, Stored};

use crate::domain::{Account, Authorization, AuthorizeOutcome, VoidOutcome};

/// AuthorizeCard after the checks: tombstone, existing authorization, or a new one.
static AUTHORIZE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(include_str!("lua/authorize.lua")));
/// VoidAuthorization: void what is in force, write the tombstone.
static VOID: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(include_str!("lua/void.lua")));

/// A Redis read or write failed, or what it read is not what this service wrote.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed, or a value is not the JSON this service writes.
    #[error(transparent)]
    Common(#[from] participant::StoreError),
    #[error("authorization at {key} is not valid: {reason}")]
    Record { key: String, reason: String },
}

impl From<redis::RedisError> for StoreError {
    fn from(error: redis::RedisError) -> Self {
        Self::Common(error.into())
    }
}

/// The key layout of one deployment (namespace).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (from `Namespace::key_prefix("accounting")`, ends in `:`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The account of a consumer.
    pub fn account(&self, consumer_id: i64) -> String {
        format!("{}account:{consumer_id}", self.prefix)
    }

    /// What every authorization hash's key starts with.
    pub fn authorization_prefix(&self) -> String {
        format!("{}authorization:", self.prefix)
    }

    /// The hash of one authorization.
    pub fn authorization(&self, authorization_id: &str) -> String {
        format!("{}{authorization_id}", self.authorization_prefix())
    }

    /// The set of an order's authorization ids.
    pub fn order_authorizations(&self, order_id: &str) -> String {
        format!("{}order:{order_id}:authorizations", self.prefix)
    }

    /// The tombstone VoidAuthorization leaves for an order.
    pub fn tombstone(&self, order_id: &str) -> String {
        format!("{}tombstone:{order_id}", self.prefix)
    }

    /// The stored outcome of the command with this message id.
    pub fn processed(&self, message_id: &str) -> String {
        participant::processed_key(&self.prefix, message_id)
    }
}

/// An authorization to create if the order has none in force.
#[derive(Debug, Clone)]
pub struct NewAuthorization<'a> {
    /// A fresh UUID v7; unused when the order already has an authorization.
    pub authorization_id: String,
    pub order_id: &'a str,
    pub consumer_id: i64,
    pub amount_minor: i64,
    pub currency_code: &'a str,
}

/// Every authorization of an order, and whether it was voided by a compensation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderAuthorizations {
    /// Oldest first (UUID v7 ids sort by creation time).
    pub authorizations: Vec<Authorization>,
    pub tombstone: bool,
}

/// accounting_service's handle on Redis; cheap to clone.
#[derive(Clone)]
pub struct AccountingStore {
    conn: ConnectionManager,
    keys: Keys,
    accounts: FixtureCache<Account>,
}

impl AccountingStore {
    /// `fixture_cache_ttl`: how long an account read for a command is reused
    /// (`FIXTURE_CACHE_MS`; zero reads Redis every time).
    pub fn new(conn: ConnectionManager, keys: Keys, fixture_cache_ttl: Duration) -> Self {
        let accounts = FixtureCache::new(conn.clone(), fixture_cache_ttl);
        Self { conn, keys, accounts }
    }

    /// Writes the fixture accounts (overwriting those records, never an
    /// authorization). Idempotent, so every replica does it at start.
    pub async fn load_fixtures(&self, accounts: &[Account]) -> Result<(), participant::StoreError> {
        participant::write_fixtures(&self.conn, accounts.iter().map(|a| (self.keys.account(a.consumer_id), a))).await
    }

    /// The account of a consumer, if there is one, as of at most the cache's TTL
    /// ago: for commands, which run on every saga.
    pub async fn account(&self, consumer_id: i64) -> Result<Option<Arc<Account>>, StoreError> {
        Ok(self.accounts.get(self.keys.account(consumer_id)).await?)
    }

    /// The account of a consumer as Redis holds it now: for read calls, which are
    /// rare enough to skip the cache, so they always show what Redis holds.
    pub async fn account_now(&self, consumer_id: i64) -> Result<Option<Account>, StoreError> {
        Ok(participant::get_json(&self.conn, self.keys.account(consumer_id)).await?)
    }

    /// Stores `outcome` under `message_id` unless an earlier delivery stored one;
    /// returns whichever is stored. For outcomes that change nothing else.
    pub async fn record_outcome<T: Serialize + DeserializeOwned>(
        &self,
        message_id: &str,
        outcome: &T,
    ) -> Result<Stored<T>, StoreError> {
        Ok(participant::record_outcome(&self.conn, self.keys.processed(message_id), outcome).await?)
    }

    /// Authorizes (see `lua/authorize.lua`): replays the stored outcome of
    /// `message_id`, refuses after a void, returns the order's authorization in
    /// force, or creates `new`.
    pub async fn authorize(
        &self,
        message_id: &str,
        new: &NewAuthorization<'_>,
    ) -> Result<Stored<AuthorizeOutcome>, StoreError> {
        let key = self.keys.processed(message_id);
        let reply = AUTHORIZE
            .key(&key)
            .key(self.keys.tombstone(new.order_id))
            .key(self.keys.order_authorizations(new.order_id))
            .key(self.keys.authorization(&new.authorization_id))
            .arg(OUTCOME_TTL.as_secs())
            .arg(&new.authorization_id)
            .arg(new.order_id)
            .arg(new.consumer_id)
            .arg(new.amount_minor)
            .arg(new.currency_code)
            .arg(self.keys.authorization_prefix())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Stored::from_reply(key, reply)?)
    }

    /// Voids (see `lua/void.lua`): replays the stored outcome of `message_id`, or
    /// voids the order's authorizations in force and writes its tombstone.
    pub async fn void(&self, message_id: &str, order_id: &str) -> Result<Stored<VoidOutcome>, StoreError> {
        let key = self.keys.processed(message_id);
        let reply = VOID
            .key(&key)
            .key(self.keys.tombstone(order_id))
            .key(self.keys.order_authorizations(order_id))
            .arg(OUTCOME_TTL.as_secs())
            .arg(self.keys.authorization_prefix())
            .arg(message_id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Stored::from_reply(key, reply)?)
    }

    /// Every authorization of an order, in any state, and its tombstone flag. Two
    /// round trips, not a snapshot: the states read in the second may be newer than
    /// the tombstone flag read in the first (a read API can live with that).
    pub async fn authorizations(&self, order_id: &str) -> Result<OrderAuthorizations, StoreError> {
        let (mut ids, tombstone): (Vec<String>, bool) = redis::pipe()
            .smembers(self.keys.order_authorizations(order_id))
            .exists(self.keys.tombstone(order_id))
            .query_async(&mut self.conn.clone())
            .await?;
        ids.sort();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.authorization(id));
        }
        let hashes: Vec<HashMap<String, String>> =
            if ids.is_empty() { Vec::new() } else { pipe.query_async(&mut self.conn.clone()).await? };
        let authorizations = ids
            .iter()
            .zip(&hashes)
            .map(|(id, fields)| {
                Authorization::from_hash(fields)
                    .map_err(|reason| StoreError::Record { key: self.keys.authorization(id), reason })
            })
            .collect::<Result<_, _>>()?;
        Ok(OrderAuthorizations { authorizations, tombstone })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_service_prefix() {
        let keys = Keys::new("t-x:accounting:");
        assert_eq!(keys.account(3), "t-x:accounting:account:3");
        assert_eq!(keys.authorization("a-1"), "t-x:accounting:authorization:a-1");
        assert_eq!(keys.order_authorizations("o-1"), "t-x:accounting:order:o-1:authorizations");
        assert_eq!(keys.tombstone("o-1"), "t-x:accounting:tombstone:o-1");
        assert_eq!(keys.processed("m-1"), "t-x:accounting:processed:m-1");
    }
}
