//! README's demo scenarios as CreateOrder inputs, for the tools that drive the
//! system (the chaos runner, the load generator, order_service's homepage). Each
//! outcome is reached through the participants' fixture data, not through anything
//! special in a handler, so these inputs are exactly what a user types into grpcurl.
#![forbid(unsafe_code)]

use std::{fmt, str::FromStr};

use proto::{common::v1::LineItem, order::v1::CreateOrderRequest};

/// A demo scenario of README's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Alice, Ajanta, 2 × chicken-vindaloo: APPROVED.
    Success,
    /// Bob (suspended): REJECTED at VERIFY_CONSUMER.
    ConsumerRejected,
    /// Carol, 25.90 over her 20.00: REJECTED at AUTHORIZE_CARD.
    CardDeclined,
    /// 40 × chicken-vindaloo = 518.00 over order_service's 500.00: REJECTED at CREATE_TICKET.
    OverLimit,
    /// Flaky Kitchen: APPROVED after two transient ApproveTicket failures (about a second).
    FlakyKitchen,
}

impl Scenario {
    /// Every scenario, in README's order.
    pub const ALL: [Scenario; 5] = [
        Scenario::Success,
        Scenario::ConsumerRejected,
        Scenario::CardDeclined,
        Scenario::OverLimit,
        Scenario::FlakyKitchen,
    ];

    /// The name used on command lines and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Success => "success",
            Scenario::ConsumerRejected => "consumer_rejected",
            Scenario::CardDeclined => "card_declined",
            Scenario::OverLimit => "over_limit",
            Scenario::FlakyKitchen => "flaky_kitchen",
        }
    }

    /// The name README's scenario table gives it, for people (e.g. a button).
    pub fn title(self) -> &'static str {
        match self {
            Scenario::Success => "success",
            Scenario::ConsumerRejected => "consumer rejected",
            Scenario::CardDeclined => "card declined",
            Scenario::OverLimit => "orchestrator-side failure",
            Scenario::FlakyKitchen => "flaky step retried",
        }
    }

    /// One sentence on what happens, for people.
    pub fn description(self) -> &'static str {
        match self {
            Scenario::Success => "Alice orders 2 × chicken vindaloo at Ajanta: every step succeeds.",
            Scenario::ConsumerRejected => "Bob is suspended: VerifyConsumer fails, nothing to compensate.",
            Scenario::CardDeclined => "25.90 is over Carol's 20.00: AuthorizeCard fails, the ticket is rejected.",
            Scenario::OverLimit => "518.00 is over order_service's own 500.00 limit: the ticket is rejected.",
            Scenario::FlakyKitchen => "Flaky Kitchen fails ApproveTicket twice; the orchestrator retries it.",
        }
    }

    /// The CreateOrder request of this scenario (README's scenario table).
    pub fn request(self, idempotency_key: String) -> CreateOrderRequest {
        let (consumer_id, restaurant_id, item, quantity) = match self {
            Scenario::Success => (1, 1, "chicken-vindaloo", 2),
            Scenario::ConsumerRejected => (2, 1, "naan", 1),
            Scenario::CardDeclined => (3, 1, "chicken-vindaloo", 2),
            Scenario::OverLimit => (1, 1, "chicken-vindaloo", 40),
            Scenario::FlakyKitchen => (1, 2, "samosa", 2),
        };
        CreateOrderRequest {
            consumer_id,
            restaurant_id,
            items: vec![LineItem { menu_item_id: item.to_owned(), quantity }],
            idempotency_key,
        }
    }

    /// Whether the saga ends APPROVED when nothing goes wrong.
    pub fn approves(self) -> bool {
        matches!(self, Scenario::Success | Scenario::FlakyKitchen)
    }

    /// The order state it ends in when nothing goes wrong, as in the API's enum
    /// without its prefix: `APPROVED` or `REJECTED`.
    pub fn expected_state(self) -> &'static str {
        if self.approves() { "APPROVED" } else { "REJECTED" }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scenario name that is not one of [`Scenario::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScenario(pub String);

impl fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.as_str()).collect();
        write!(f, "unknown scenario {:?} (one of {})", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownScenario {}

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.as_str() == s.trim())
            .ok_or_else(|| UnknownScenario(s.trim().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_inputs_match_readme() {
        for scenario in Scenario::ALL {
            assert_eq!(scenario.as_str().parse(), Ok(scenario));
        }
        assert_eq!("nope".parse::<Scenario>(), Err(UnknownScenario("nope".into())));
        assert_eq!(Scenario::OverLimit.request("k".into()).items[0].quantity, 40);
        assert_eq!(Scenario::FlakyKitchen.request("k".into()).restaurant_id, 2);
        assert_eq!(Scenario::CardDeclined.request("k".into()).consumer_id, 3);
        assert!(Scenario::FlakyKitchen.approves() && !Scenario::CardDeclined.approves());
        assert_eq!(Scenario::ConsumerRejected.expected_state(), "REJECTED");
        assert_eq!(Scenario::OverLimit.title(), "orchestrator-side failure");
        assert!(Scenario::ALL.iter().all(|s| !s.description().is_empty()));
    }
}
