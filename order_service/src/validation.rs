//! Validation of API input, with bounds. Each violation names its field (also as a
//! `google.rpc.BadRequest` detail), so a client sees exactly what to fix.
//! Business rules (unknown consumer, prices) are the saga's job, not this module's.

use proto::order::v1::CreateOrderRequest;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::create_order_saga::{Item, OrderData};

pub const MAX_ITEMS: usize = 50;
pub const MAX_QUANTITY: i32 = 100;
pub const MAX_ID_LENGTH: usize = 64;
pub const MAX_IDEMPOTENCY_KEY_LENGTH: usize = 128;
pub const MAX_REASON_LENGTH: usize = 512;

/// Collected field violations.
#[derive(Debug, Default)]
pub struct Violations(Vec<(String, String)>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    /// `INVALID_ARGUMENT` naming every field, or `Ok` when there is none.
    pub fn into_result(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let message = self.0.iter().map(|(f, d)| format!("{f}: {d}")).collect::<Vec<_>>().join("; ");
        let mut details = ErrorDetails::new();
        for (field, description) in self.0 {
            details.add_bad_request_violation(field, description);
        }
        Err(Status::with_error_details(Code::InvalidArgument, message, details))
    }
}

/// A `CreateOrderRequest` as the saga's data, or `INVALID_ARGUMENT`.
pub fn create_order(request: &CreateOrderRequest) -> Result<OrderData, Status> {
    let mut v = Violations::default();
    if request.consumer_id <= 0 {
        v.add("consumer_id", "is required and must be a positive id");
    }
    if request.restaurant_id <= 0 {
        v.add("restaurant_id", "is required and must be a positive id");
    }
    if request.items.is_empty() {
        v.add("items", "an order needs at least one item");
    } else if request.items.len() > MAX_ITEMS {
        v.add("items", format!("at most {MAX_ITEMS} items, got {}", request.items.len()));
    }
    for (i, item) in request.items.iter().enumerate().take(MAX_ITEMS) {
        let id = item.menu_item_id.trim();
        if id.is_empty() {
            v.add(format!("items[{i}].menu_item_id"), "is required");
        } else if id.len() > MAX_ID_LENGTH {
            v.add(format!("items[{i}].menu_item_id"), format!("at most {MAX_ID_LENGTH} characters"));
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            v.add(
                format!("items[{i}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}, got {}", item.quantity),
            );
        }
    }
    if request.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LENGTH {
        v.add("idempotency_key", format!("at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters"));
    }
    v.into_result()?;
    let key = request.idempotency_key.trim();
    Ok(OrderData::new(
        request.consumer_id,
        request.restaurant_id,
        request
            .items
            .iter()
            .map(|i| Item { menu_item_id: i.menu_item_id.trim().to_owned(), quantity: i.quantity })
            .collect(),
        (!key.is_empty()).then(|| key.to_owned()),
    ))
}

/// An order id: a UUID.
pub fn order_id(field: &str, value: &str) -> Result<String, Status> {
    let mut v = Violations::default();
    let value = value.trim();
    if value.is_empty() {
        v.add(field, "is required");
    } else if value.len() > MAX_ID_LENGTH || uuid::Uuid::parse_str(value).is_err() {
        v.add(field, "is not an order id (a UUID)");
    }
    v.into_result().map(|()| value.to_ascii_lowercase())
}

/// A saga event id (`<ms>-<seq>`), or empty.
pub fn event_id(field: &str, value: &str) -> Result<Option<String>, Status> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let valid = value.split_once('-').is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok());
    let mut v = Violations::default();
    if !valid {
        v.add(field, "is not an event id (like 1732632000000-0)");
    }
    v.into_result().map(|()| Some(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use proto::common::v1::LineItem;

    use super::*;

    fn request(items: Vec<LineItem>) -> CreateOrderRequest {
        CreateOrderRequest { consumer_id: 1, restaurant_id: 1, items, idempotency_key: String::new() }
    }

    fn item(id: &str, quantity: i32) -> LineItem {
        LineItem { menu_item_id: id.into(), quantity }
    }

    #[test]
    fn a_valid_request_becomes_order_data() {
        let data = create_order(&request(vec![item(" naan ", 2)])).unwrap();
        assert_eq!(data.items, vec![Item { menu_item_id: "naan".into(), quantity: 2 }]);
        assert_eq!(data.idempotency_key, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut bad = request(vec![item("", 0), item("naan", 101)]);
        bad.consumer_id = 0;
        let status = create_order(&bad).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        for field in ["consumer_id", "items[0].menu_item_id", "items[0].quantity", "items[1].quantity"] {
            assert!(status.message().contains(field), "{field} missing from {}", status.message());
        }
        let details = status.get_error_details();
        assert_eq!(details.bad_request().map(|b| b.field_violations.len()), Some(4));
    }

    #[test]
    fn no_items_and_too_many_items_are_refused() {
        assert!(create_order(&request(vec![])).unwrap_err().message().contains("items"));
        let many = (0..51).map(|_| item("naan", 1)).collect();
        assert!(create_order(&request(many)).unwrap_err().message().contains("at most 50 items"));
    }

    #[test]
    fn ids_are_checked() {
        assert!(order_id("order_id", "").is_err());
        assert!(order_id("order_id", "nope").is_err());
        assert!(order_id("order_id", "0190B5C2-6C4E-7A1B-8F00-000000000001").is_ok());
        assert_eq!(event_id("after_event_id", "").unwrap(), None);
        assert!(event_id("after_event_id", "12-x").is_err());
        assert_eq!(event_id("after_event_id", "12-0").unwrap(), Some("12-0".into()));
    }
}
