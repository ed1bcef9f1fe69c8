//! The consumer domain without I/O: the consumer record, the fixture file that
//! seeds it, and the decision VerifyConsumer makes. Kept pure so it is unit-tested
//! here and the store and handler only move data.

use std::collections::HashSet;

use proto::consumer::v1 as pb;
use serde::{Deserialize, Serialize};

/// Failure code: no consumer has the id.
pub const CONSUMER_NOT_FOUND: &str = "CONSUMER_NOT_FOUND";
/// Failure code: the consumer exists but may not order.
pub const CONSUMER_SUSPENDED: &str = "CONSUMER_SUSPENDED";

/// Whether a consumer may place orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsumerStatus {
    Active,
    Suspended,
}

impl From<ConsumerStatus> for pb::ConsumerStatus {
    fn from(status: ConsumerStatus) -> Self {
        match status {
            ConsumerStatus::Active => Self::Active,
            ConsumerStatus::Suspended => Self::Suspended,
        }
    }
}

/// A consumer as stored in Redis (JSON) and in the fixture file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    pub consumer_id: i64,
    pub name: String,
    pub status: ConsumerStatus,
}

impl From<Consumer> for pb::Consumer {
    fn from(consumer: Consumer) -> Self {
        Self {
            consumer_id: consumer.consumer_id,
            name: consumer.name,
            status: pb::ConsumerStatus::from(consumer.status) as i32,
        }
    }
}

/// The fixture file's data is not usable.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("fixture file is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("consumer_id must be 1 or more, found {0}")]
    InvalidId(i64),
    #[error("consumer {0} appears more than once")]
    Duplicate(i64),
    #[error("consumer {0} has an empty name")]
    EmptyName(i64),
}

/// The consumers loaded into Redis at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Fixtures {
    pub consumers: Vec<Consumer>,
}

/// The fixture file compiled into the binary (`fixtures/consumers.json`).
pub const BUILTIN_FIXTURES: &str = include_str!("../fixtures/consumers.json");

impl Fixtures {
    /// Parses and validates fixture JSON (unknown top-level fields such as
    /// `description` are ignored).
    pub fn parse(json: &str) -> Result<Self, FixtureError> {
        let fixtures: Self = serde_json::from_str(json)?;
        let mut seen = HashSet::new();
        for consumer in &fixtures.consumers {
            if consumer.consumer_id <= 0 {
                return Err(FixtureError::InvalidId(consumer.consumer_id));
            }
            if !seen.insert(consumer.consumer_id) {
                return Err(FixtureError::Duplicate(consumer.consumer_id));
            }
            if consumer.name.trim().is_empty() {
                return Err(FixtureError::EmptyName(consumer.consumer_id));
            }
        }
        Ok(fixtures)
    }

    /// The built-in fixtures.
    pub fn builtin() -> Result<Self, FixtureError> {
        Self::parse(BUILTIN_FIXTURES)
    }
}

/// What VerifyConsumer decided; stored as JSON under the command's message id, so a
/// redelivered command gets this same outcome even if the consumer changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum VerifyOutcome {
    Verified { consumer_id: i64 },
    Failed { code: String, message: String },
}

impl VerifyOutcome {
    /// The reply this outcome is sent as.
    pub fn into_reply(self) -> pb::VerifyConsumerReply {
        use pb::verify_consumer_reply::Outcome;
        let outcome = match self {
            Self::Verified { consumer_id } => Outcome::Success(pb::ConsumerVerified { consumer_id }),
            Self::Failed { code, message } => Outcome::Failure(proto::common::v1::Failure::business(&code, message)),
        };
        pb::VerifyConsumerReply { outcome: Some(outcome) }
    }
}

/// May consumer `consumer_id` (found as `consumer`, if any) place an order?
pub fn verify(consumer_id: i64, consumer: Option<&Consumer>) -> VerifyOutcome {
    match consumer {
        None => VerifyOutcome::Failed {
            code: CONSUMER_NOT_FOUND.to_owned(),
            message: format!("consumer {consumer_id} does not exist"),
        },
        Some(consumer) if consumer.status == ConsumerStatus::Suspended => VerifyOutcome::Failed {
            code: CONSUMER_SUSPENDED.to_owned(),
            message: format!("consumer {consumer_id} ({}) is suspended", consumer.name),
        },
        Some(consumer) => VerifyOutcome::Verified { consumer_id: consumer.consumer_id },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_failure_codes_are_the_ones_the_proto_contract_lists() {
        let checked = test_support::assert_failure_codes_listed::<pb::VerifyConsumerReply>(
            &[CONSUMER_NOT_FOUND, CONSUMER_SUSPENDED],
            &[],
        );
        assert_eq!(checked, 2);
    }

    fn consumer(id: i64, status: ConsumerStatus) -> Consumer {
        Consumer { consumer_id: id, name: format!("c{id}"), status }
    }

    #[test]
    fn builtin_fixtures_hold_the_demo_consumers() {
        let fixtures = Fixtures::builtin().expect("built-in fixtures parse");
        let summary: Vec<_> = fixtures.consumers.iter().map(|c| (c.consumer_id, c.name.as_str(), c.status)).collect();
        assert_eq!(
            summary,
            vec![
                (1, "Alice", ConsumerStatus::Active),
                (2, "Bob", ConsumerStatus::Suspended),
                (3, "Carol", ConsumerStatus::Active),
            ]
        );
    }

    #[test]
    fn fixtures_with_a_duplicate_or_invalid_id_are_refused() {
        let dup = r#"{"consumers":[{"consumer_id":1,"name":"a","status":"ACTIVE"},{"consumer_id":1,"name":"b","status":"ACTIVE"}]}"#;
        assert!(matches!(Fixtures::parse(dup), Err(FixtureError::Duplicate(1))));
        let zero = r#"{"consumers":[{"consumer_id":0,"name":"a","status":"ACTIVE"}]}"#;
        assert!(matches!(Fixtures::parse(zero), Err(FixtureError::InvalidId(0))));
        let status = r#"{"consumers":[{"consumer_id":1,"name":"a","status":"GONE"}]}"#;
        assert!(matches!(Fixtures::parse(status), Err(FixtureError::Json(_))));
        let name = r#"{"consumers":[{"consumer_id":1,"name":" ","status":"ACTIVE"}]}"#;
        assert!(matches!(Fixtures::parse(name), Err(FixtureError::EmptyName(1))));
    }

    #[test]
    fn an_active_consumer_is_verified() {
        assert_eq!(verify(1, Some(&consumer(1, ConsumerStatus::Active))), VerifyOutcome::Verified { consumer_id: 1 });
    }

    #[test]
    fn a_suspended_or_unknown_consumer_is_refused_with_its_code() {
        let suspended = verify(2, Some(&consumer(2, ConsumerStatus::Suspended)));
        assert!(matches!(suspended, VerifyOutcome::Failed { ref code, .. } if code == CONSUMER_SUSPENDED));
        let unknown = verify(9, None);
        assert!(matches!(unknown, VerifyOutcome::Failed { ref code, .. } if code == CONSUMER_NOT_FOUND));
    }

    #[test]
    fn an_outcome_survives_its_json_form() {
        let outcome = VerifyOutcome::Failed { code: CONSUMER_SUSPENDED.into(), message: "no".into() };
        let json = serde_json::to_string(&outcome).expect("serializes");
        assert_eq!(json, r#"{"result":"failed","code":"CONSUMER_SUSPENDED","message":"no"}"#);
        assert_eq!(serde_json::from_str::<VerifyOutcome>(&json).expect("parses"), outcome);
    }
}
