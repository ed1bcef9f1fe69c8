//! The restaurant fixtures: restaurants with their menus and prices, parsed and
//! checked once at start-up, then written to Redis.
//!
//! Restaurant data is immutable while the service runs (only a restart with another
//! fixture file changes it), which is why command handlers may price an order
//! against it in Rust before the idempotent Lua script runs.
//!
//! The file is strict (`deny_unknown_fields`): a misspelt fault-injection field
//! must fail the start, not silently turn the flaky demo restaurant into a
//! reliable one. `_comment` fields are allowed for documentation.

use std::collections::{HashMap, HashSet};

use proto::{common::v1::Money, restaurant::v1 as pb};
use serde::{Deserialize, Serialize};

/// The fixture file compiled into the binary, used when `FIXTURES_PATH` is unset.
pub const BUILTIN_FIXTURES: &str = include_str!("../fixtures/restaurants.json");

/// The most a menu item may cost, in minor units (10,000.00). With the order limits
/// this keeps every total far below 2^53, so it survives Lua's double-precision
/// numbers (and `cjson`'s 14 significant digits) exactly.
pub const MAX_PRICE_MINOR: i64 = 1_000_000;

/// A fixture file that cannot be used; says which record and why.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("fixtures are not valid JSON for this schema: {0}")]
    Json(#[from] serde_json::Error),
    #[error("fixture restaurant {restaurant_id}: {reason}")]
    Invalid { restaurant_id: i64, reason: String },
    #[error("fixtures define restaurant {0} twice")]
    DuplicateRestaurant(i64),
}

/// Every restaurant of the fixture file, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixtures {
    restaurants: HashMap<i64, Restaurant>,
}

/// One restaurant: its menu and, for the demo, its fault injection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restaurant {
    pub id: i64,
    pub name: String,
    pub menu: Vec<MenuItem>,
    /// Fault injection: the first N `ApproveTicket` deliveries for each ticket of
    /// this restaurant reply the transient failure `KITCHEN_UNAVAILABLE`. Zero (the
    /// default) for a well-behaved restaurant; ignored when fault injection is off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub approve_ticket_transient_failures: u32,
    #[serde(default, rename = "_comment", skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One dish and its price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuItem {
    pub id: String,
    pub name: String,
    /// Integer minor units (cents, USD).
    pub price_minor: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    #[serde(default, rename = "_comment")]
    _comment: Option<String>,
    restaurants: Vec<Restaurant>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Fixtures {
    /// Parses and checks a fixture file: positive unique restaurant ids, non-empty
    /// names, a non-empty menu of unique item ids with prices in `1..=MAX_PRICE_MINOR`.
    pub fn parse(json: &str) -> Result<Self, FixtureError> {
        let file: FixtureFile = serde_json::from_str(json)?;
        let mut restaurants = HashMap::new();
        for restaurant in file.restaurants {
            restaurant.check()?;
            let id = restaurant.id;
            if restaurants.insert(id, restaurant).is_some() {
                return Err(FixtureError::DuplicateRestaurant(id));
            }
        }
        Ok(Self { restaurants })
    }

    /// The fixtures compiled into the binary.
    pub fn builtin() -> Result<Self, FixtureError> {
        Self::parse(BUILTIN_FIXTURES)
    }

    /// The restaurant with this id, if there is one.
    pub fn restaurant(&self, id: i64) -> Option<&Restaurant> {
        self.restaurants.get(&id)
    }

    /// Every restaurant, in id order.
    pub fn restaurants(&self) -> Vec<&Restaurant> {
        let mut all: Vec<_> = self.restaurants.values().collect();
        all.sort_by_key(|r| r.id);
        all
    }
}

impl Restaurant {
    fn check(&self) -> Result<(), FixtureError> {
        let invalid = |reason: String| FixtureError::Invalid { restaurant_id: self.id, reason };
        if self.id <= 0 {
            return Err(invalid("id must be positive".into()));
        }
        if self.name.trim().is_empty() {
            return Err(invalid("name is empty".into()));
        }
        if self.menu.is_empty() {
            return Err(invalid("menu is empty".into()));
        }
        let mut seen = HashSet::new();
        for item in &self.menu {
            if item.id.trim().is_empty() || item.name.trim().is_empty() {
                return Err(invalid(format!("menu item {:?} needs an id and a name", item.id)));
            }
            if !seen.insert(item.id.as_str()) {
                return Err(invalid(format!("menu item {:?} appears twice", item.id)));
            }
            if !(1..=MAX_PRICE_MINOR).contains(&item.price_minor) {
                return Err(invalid(format!(
                    "menu item {:?} costs {}; prices are 1..={MAX_PRICE_MINOR} minor units",
                    item.id, item.price_minor
                )));
            }
        }
        Ok(())
    }

    /// The menu item with this id, if the restaurant offers it.
    pub fn menu_item(&self, id: &str) -> Option<&MenuItem> {
        self.menu.iter().find(|item| item.id == id)
    }

    /// The restaurant as the gRPC API shows it (without the fault injection).
    pub fn to_proto(&self) -> pb::Restaurant {
        pb::Restaurant {
            restaurant_id: self.id,
            name: self.name.clone(),
            menu: self
                .menu
                .iter()
                .map(|item| pb::MenuItem {
                    menu_item_id: item.id.clone(),
                    name: item.name.clone(),
                    price: Some(Money::usd(item.price_minor)),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_fixtures_have_ajanta_and_the_flaky_kitchen() {
        let fixtures = Fixtures::builtin().unwrap();
        let ajanta = fixtures.restaurant(1).unwrap();
        assert_eq!(ajanta.name, "Ajanta");
        assert_eq!(ajanta.approve_ticket_transient_failures, 0);
        assert_eq!(ajanta.menu_item("chicken-vindaloo").unwrap().price_minor, 1295);
        assert_eq!(ajanta.menu_item("naan").unwrap().price_minor, 350);
        assert_eq!(ajanta.menu_item("mango-lassi").unwrap().price_minor, 425);
        let flaky = fixtures.restaurant(2).unwrap();
        assert_eq!(flaky.name, "Flaky Kitchen");
        assert_eq!(flaky.approve_ticket_transient_failures, 2);
        assert_eq!(flaky.menu, ajanta.menu);
        assert_eq!(fixtures.restaurants().iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_restaurant_survives_a_round_trip_through_its_redis_json() {
        let fixtures = Fixtures::builtin().unwrap();
        let flaky = fixtures.restaurant(2).unwrap();
        let json = serde_json::to_string(flaky).unwrap();
        assert_eq!(&serde_json::from_str::<Restaurant>(&json).unwrap(), flaky);
    }

    #[test]
    fn a_misspelt_field_is_refused() {
        let json = r#"{"restaurants": [{"id": 1, "name": "A", "approve_ticket_transient_failure": 2,
            "menu": [{"id": "naan", "name": "Naan", "price_minor": 350}]}]}"#;
        assert!(matches!(Fixtures::parse(json), Err(FixtureError::Json(_))));
    }

    #[test]
    fn bad_records_are_refused_with_the_restaurant_named() {
        let cases = [
            (r#"{"id": 0, "name": "A", "menu": [{"id": "n", "name": "N", "price_minor": 1}]}"#, "positive"),
            (r#"{"id": 1, "name": " ", "menu": [{"id": "n", "name": "N", "price_minor": 1}]}"#, "name"),
            (r#"{"id": 1, "name": "A", "menu": []}"#, "menu is empty"),
            (r#"{"id": 1, "name": "A", "menu": [{"id": "n", "name": "N", "price_minor": 0}]}"#, "costs 0"),
            (
                r#"{"id": 1, "name": "A", "menu": [{"id": "n", "name": "N", "price_minor": 1},
                    {"id": "n", "name": "M", "price_minor": 2}]}"#,
                "twice",
            ),
        ];
        for (restaurant, expected) in cases {
            let json = format!(r#"{{"restaurants": [{restaurant}]}}"#);
            let error = Fixtures::parse(&json).unwrap_err().to_string();
            assert!(error.contains(expected), "{error} should mention {expected}");
        }
    }

    #[test]
    fn a_restaurant_id_may_appear_only_once() {
        let one = r#"{"id": 7, "name": "A", "menu": [{"id": "n", "name": "N", "price_minor": 1}]}"#;
        let json = format!(r#"{{"restaurants": [{one}, {one}]}}"#);
        assert!(matches!(Fixtures::parse(&json), Err(FixtureError::DuplicateRestaurant(7))));
    }

    #[test]
    fn the_proto_restaurant_carries_prices_in_usd_minor_units() {
        let fixtures = Fixtures::builtin().unwrap();
        let proto = fixtures.restaurant(1).unwrap().to_proto();
        assert_eq!(proto.restaurant_id, 1);
        let vindaloo = proto.menu.iter().find(|m| m.menu_item_id == "chicken-vindaloo").unwrap();
        assert_eq!(vindaloo.price, Some(Money::usd(1295)));
    }
}
