//! restaurant_service's Redis: the key layout, the Lua scripts that make every
//! command idempotent, and the reads behind the gRPC API.
//!
//! Keys, all under the service prefix `P` (e.g. `restaurant:` or
//! `{namespace}:restaurant:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P restaurant:{id}` | string | the fixture record (JSON), rewritten at every start |
//! | `P ticket_seq` | string | the last ticket id handed out (`INCR`) |
//! | `P tickets` | hash | ticket id → immutable ticket record (JSON) |
//! | `P ticket_states` | hash | ticket id → `CREATE_PENDING`, `AWAITING_ACCEPTANCE` or `REJECTED` |
//! | `P order_ticket:{order_id}` | string | the order's ticket id |
//! | `P tombstone:{order_id}` | string | present once RejectTicket ran for the order |
//! | `P processed:{message_id}` | string | the outcome of a handled command (JSON, 7-day TTL) |
//! | `P approve_attempts:{ticket_id}` | string | ApproveTicket deliveries seen, for fault injection |
//!
//! Why hashes for tickets: a ticket's id is born inside the CreateTicket script
//! (`INCR`), and a script must name every key it touches in `KEYS` before it runs.
//! A hash field can be chosen inside the script; a key could not. The immutable
//! record and the mutable state are kept apart so that no script ever decodes and
//! re-encodes a record to change a state.
//!
//! Why Lua: each command is one script (EVALSHA, one round trip) that returns the
//! stored outcome of its message id if there is one, and otherwise makes the domain
//! change and stores the outcome in the same atomic step. A redelivered command
//! therefore gets the same reply and changes nothing. WATCH/MULTI would not do:
//! on the shared multiplexed connection other tasks' commands interleave with the
//! transaction (see the field notes).

use std::sync::LazyLock;

use proto::{common::v1::Money, restaurant::v1 as pb};
use redis::{Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use service_kit::participant::{self, OUTCOME_TTL};

use crate::{
    fixtures::{Fixtures, Restaurant},
    pricing::PricedLine,
};

static CREATE_TICKET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/create_ticket.lua")));
static REJECT_TICKET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/reject_ticket.lua")));
static APPROVE_TICKET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/approve_ticket.lua")));

/// A Redis failure, or data in Redis that this service did not write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unreadable record {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

impl From<participant::StoreError> for StoreError {
    fn from(error: participant::StoreError) -> Self {
        match error {
            participant::StoreError::Redis(error) => Self::Redis(error),
            participant::StoreError::Json { key, source } => Self::Corrupt { key, reason: source.to_string() },
        }
    }
}

/// The outcome of a command as stored under its message id: the reply is built
/// from it, so every delivery of one message id gets the same reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Success {
        /// 0 when RejectTicket only wrote a tombstone.
        ticket_id: i64,
        /// Set by CreateTicket only.
        #[serde(default)]
        total_minor: i64,
    },
    Failure {
        code: String,
        message: String,
        #[serde(default)]
        transient: bool,
    },
}

impl Outcome {
    fn parse(json: &str, what: &str) -> Result<Self, StoreError> {
        serde_json::from_str(json)
            .map_err(|e| StoreError::Corrupt { key: format!("outcome of {what}"), reason: format!("{e}: {json}") })
    }
}

/// The immutable part of a ticket, as stored in `P tickets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRecord {
    pub order_id: String,
    pub restaurant_id: i64,
    pub line_items: Vec<PricedLine>,
    pub total_minor: i64,
}

/// A ticket's state, as stored in `P ticket_states`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketState {
    CreatePending,
    AwaitingAcceptance,
    Rejected,
}

impl TicketState {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "CREATE_PENDING" => Some(Self::CreatePending),
            "AWAITING_ACCEPTANCE" => Some(Self::AwaitingAcceptance),
            "REJECTED" => Some(Self::Rejected),
            _ => None,
        }
    }

    fn to_proto(self) -> pb::TicketState {
        match self {
            Self::CreatePending => pb::TicketState::CreatePending,
            Self::AwaitingAcceptance => pb::TicketState::AwaitingAcceptance,
            Self::Rejected => pb::TicketState::Rejected,
        }
    }
}

/// The key names, in one place.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn restaurant(&self, id: i64) -> String {
        format!("{}restaurant:{id}", self.prefix)
    }
    fn ticket_seq(&self) -> String {
        format!("{}ticket_seq", self.prefix)
    }
    fn tickets(&self) -> String {
        format!("{}tickets", self.prefix)
    }
    fn ticket_states(&self) -> String {
        format!("{}ticket_states", self.prefix)
    }
    fn order_ticket(&self, order_id: &str) -> String {
        format!("{}order_ticket:{order_id}", self.prefix)
    }
    fn tombstone(&self, order_id: &str) -> String {
        format!("{}tombstone:{order_id}", self.prefix)
    }
    fn processed(&self, message_id: &str) -> String {
        participant::processed_key(&self.prefix, message_id)
    }
    fn approve_attempts(&self, ticket_id: i64) -> String {
        format!("{}approve_attempts:{ticket_id}", self.prefix)
    }
}

/// restaurant_service's Redis. Cheap to clone: the connection is multiplexed.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    keys: Keys,
}

impl Store {
    /// A store over `conn` with every key under `prefix` (ending in `:`).
    pub fn new(conn: ConnectionManager, prefix: String) -> Self {
        Self { conn, keys: Keys { prefix } }
    }

    /// Writes every fixture restaurant (SET: a restart with a changed file
    /// overwrites the old records). Tickets are never touched.
    pub async fn load_fixtures(&self, fixtures: &Fixtures) -> Result<(), participant::StoreError> {
        participant::write_fixtures(
            &self.conn,
            fixtures.restaurants().into_iter().map(|r| (self.keys.restaurant(r.id), r)),
        )
        .await
    }

    /// CreateTicket: refused after a tombstone, the existing ticket if the order
    /// has one, otherwise a new `CREATE_PENDING` ticket.
    pub async fn create_ticket(&self, message_id: &str, record: &TicketRecord) -> Result<Outcome, StoreError> {
        let json = serde_json::to_string(record)
            .map_err(|e| StoreError::Corrupt { key: self.keys.tickets(), reason: e.to_string() })?;
        let outcome: String = CREATE_TICKET
            .key(self.keys.processed(message_id))
            .key(self.keys.tombstone(&record.order_id))
            .key(self.keys.order_ticket(&record.order_id))
            .key(self.keys.ticket_seq())
            .key(self.keys.tickets())
            .key(self.keys.ticket_states())
            .arg(OUTCOME_TTL.as_secs())
            .arg(json)
            .arg(record.total_minor)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Outcome::parse(&outcome, message_id)
    }

    /// RejectTicket: tombstone the order, and reject its ticket if it is pending.
    pub async fn reject_ticket(&self, message_id: &str, order_id: &str) -> Result<Outcome, StoreError> {
        let outcome: String = REJECT_TICKET
            .key(self.keys.processed(message_id))
            .key(self.keys.tombstone(order_id))
            .key(self.keys.order_ticket(order_id))
            .key(self.keys.ticket_states())
            .arg(OUTCOME_TTL.as_secs())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Outcome::parse(&outcome, message_id)
    }

    /// ApproveTicket. `fault_budgets` is the JSON object `{"<restaurant id>": N}`
    /// of the restaurants whose first N approvals per ticket fail transiently.
    pub async fn approve_ticket(
        &self,
        message_id: &str,
        order_id: &str,
        ticket_id: i64,
        fault_budgets: &str,
    ) -> Result<Outcome, StoreError> {
        let outcome: String = APPROVE_TICKET
            .key(self.keys.processed(message_id))
            .key(self.keys.tickets())
            .key(self.keys.ticket_states())
            .key(self.keys.approve_attempts(ticket_id))
            .arg(OUTCOME_TTL.as_secs())
            .arg(ticket_id)
            .arg(order_id)
            .arg(fault_budgets)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Outcome::parse(&outcome, message_id)
    }

    /// Stores an outcome decided in Rust under the message id, unless one is there
    /// already ([`service_kit::participant::record_outcome_json`]), and returns the
    /// stored one.
    pub async fn store_outcome(&self, message_id: &str, outcome: &Outcome) -> Result<Outcome, StoreError> {
        let json = serde_json::to_string(outcome)
            .map_err(|e| StoreError::Corrupt { key: self.keys.processed(message_id), reason: e.to_string() })?;
        let stored = participant::record_outcome_json(&self.conn, &self.keys.processed(message_id), json).await?;
        Outcome::parse(&stored.outcome, message_id)
    }

    /// A restaurant as loaded from the fixtures.
    pub async fn restaurant(&self, id: i64) -> Result<Option<Restaurant>, StoreError> {
        Ok(participant::get_json(&self.conn, self.keys.restaurant(id)).await?)
    }

    /// A ticket by id, with its current state.
    pub async fn ticket(&self, ticket_id: i64) -> Result<Option<pb::Ticket>, StoreError> {
        let (record, state): (Option<String>, Option<String>) = redis::pipe()
            .hget(self.keys.tickets(), ticket_id)
            .hget(self.keys.ticket_states(), ticket_id)
            .query_async(&mut self.conn.clone())
            .await?;
        let Some(record) = record else { return Ok(None) };
        let corrupt =
            |reason: String| StoreError::Corrupt { key: format!("{}[{ticket_id}]", self.keys.tickets()), reason };
        let record: TicketRecord = serde_json::from_str(&record).map_err(|e| corrupt(e.to_string()))?;
        let state =
            state.as_deref().and_then(TicketState::parse).ok_or_else(|| corrupt(format!("ticket state {state:?}")))?;
        Ok(Some(pb::Ticket {
            ticket_id,
            order_id: record.order_id,
            restaurant_id: record.restaurant_id,
            state: state.to_proto().into(),
            line_items: record
                .line_items
                .into_iter()
                .map(|line| pb::TicketLineItem {
                    menu_item_id: line.menu_item_id,
                    quantity: line.quantity,
                    unit_price: Some(Money::usd(line.unit_price_minor)),
                })
                .collect(),
            total: Some(Money::usd(record.total_minor)),
        }))
    }

    /// The order's ticket (if any) and whether the order has a tombstone.
    pub async fn ticket_by_order(&self, order_id: &str) -> Result<(Option<pb::Ticket>, bool), StoreError> {
        let (ticket_id, tombstone): (Option<i64>, bool) = redis::pipe()
            .get(self.keys.order_ticket(order_id))
            .exists(self.keys.tombstone(order_id))
            .query_async(&mut self.conn.clone())
            .await?;
        let ticket = match ticket_id {
            Some(id) => Some(self.ticket(id).await?.ok_or_else(|| StoreError::Corrupt {
                key: self.keys.order_ticket(order_id),
                reason: format!("points at ticket {id}, which does not exist"),
            })?),
            None => None,
        };
        Ok((ticket, tombstone))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn its_failure_codes_are_the_ones_the_proto_contract_lists() {
        use crate::codes::*;
        use test_support::assert_failure_codes_listed as listed;
        let create = listed::<pb::CreateTicketReply>(
            &[RESTAURANT_NOT_FOUND, MENU_ITEM_NOT_FOUND, INVALID_ORDER, TICKET_CANCELLED],
            &[include_str!("lua/create_ticket.lua")],
        );
        let reject =
            listed::<pb::RejectTicketReply>(&[TICKET_ALREADY_ACCEPTED], &[include_str!("lua/reject_ticket.lua")]);
        let approve = listed::<pb::ApproveTicketReply>(
            &[TICKET_NOT_FOUND, TICKET_REJECTED, KITCHEN_UNAVAILABLE],
            &[include_str!("lua/approve_ticket.lua")],
        );
        // Each script's codes besides the constants: CreateTicket's one, RejectTicket's
        // one, ApproveTicket's three.
        assert_eq!((create, reject, approve), (5, 2, 6));
    }

    #[test]
    fn outcomes_read_what_the_lua_scripts_write() {
        // cjson's spelling: keys in any order, no `transient` unless set.
        let created = r#"{"total_minor":2590,"outcome":"success","ticket_id":7}"#;
        assert_eq!(Outcome::parse(created, "m").unwrap(), Outcome::Success { ticket_id: 7, total_minor: 2590 });
        let tombstone = r#"{"outcome":"success","ticket_id":0}"#;
        assert_eq!(Outcome::parse(tombstone, "m").unwrap(), Outcome::Success { ticket_id: 0, total_minor: 0 });
        let flaky = r#"{"code":"KITCHEN_UNAVAILABLE","message":"m","outcome":"failure","transient":true}"#;
        assert_eq!(
            Outcome::parse(flaky, "m").unwrap(),
            Outcome::Failure { code: "KITCHEN_UNAVAILABLE".into(), message: "m".into(), transient: true }
        );
        assert!(matches!(Outcome::parse("{}", "m"), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn an_outcome_written_in_rust_is_read_back_unchanged() {
        let refusal = Outcome::Failure { code: "INVALID_ORDER".into(), message: "no items".into(), transient: false };
        let json = serde_json::to_string(&refusal).unwrap();
        assert_eq!(Outcome::parse(&json, "m").unwrap(), refusal);
    }

    #[test]
    fn every_stored_state_maps_to_a_proto_state() {
        assert_eq!(
            TicketState::parse("CREATE_PENDING").map(TicketState::to_proto),
            Some(pb::TicketState::CreatePending)
        );
        assert_eq!(
            TicketState::parse("AWAITING_ACCEPTANCE").map(TicketState::to_proto),
            Some(pb::TicketState::AwaitingAcceptance)
        );
        assert_eq!(TicketState::parse("REJECTED").map(TicketState::to_proto), Some(pb::TicketState::Rejected));
        assert_eq!(TicketState::parse("ACCEPTED"), None);
    }

    #[test]
    fn keys_live_under_the_service_prefix() {
        let keys = Keys { prefix: "t-x:restaurant:".into() };
        assert_eq!(keys.processed("m-1"), "t-x:restaurant:processed:m-1");
        assert_eq!(keys.tombstone("o-1"), "t-x:restaurant:tombstone:o-1");
        assert_eq!(keys.order_ticket("o-1"), "t-x:restaurant:order_ticket:o-1");
        assert_eq!(keys.restaurant(2), "t-x:restaurant:restaurant:2");
    }
}
