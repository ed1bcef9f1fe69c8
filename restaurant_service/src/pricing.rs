//! Pricing a ticket: the restaurant owns the menu, so it is the restaurant that
//! turns the order's line items into unit prices and a total, and the saga
//! authorizes exactly that total. Pure functions over the fixtures, all in integer
//! minor units.
//!
//! The orchestrator validates the same bounds; they are checked again here because
//! this service must not trust a command to be well-formed, and a violation is a
//! business failure (`INVALID_ORDER`), not a dead letter: the command is decodable,
//! its content is refused.

use proto::common::v1::LineItem;
use serde::{Deserialize, Serialize};

use crate::{
    codes,
    fixtures::{Fixtures, MAX_PRICE_MINOR},
};

/// At most this many line items per ticket.
pub const MAX_LINE_ITEMS: usize = 50;
/// Each line's quantity is in `1..=MAX_QUANTITY`.
pub const MAX_QUANTITY: i32 = 100;

// Keeps every total exact in Lua's doubles (see `MAX_PRICE_MINOR`).
const _: () = assert!(MAX_PRICE_MINOR * MAX_QUANTITY as i64 * (MAX_LINE_ITEMS as i64) < 1 << 46);

/// One priced line of a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub menu_item_id: String,
    pub quantity: i32,
    /// The menu price when the ticket was created, in minor units.
    pub unit_price_minor: i64,
}

/// The line items of a ticket with their prices, and the total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedTicket {
    pub line_items: Vec<PricedLine>,
    pub total_minor: i64,
}

/// Why a ticket cannot be created for this order; each is a business failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("restaurant {0} does not exist")]
    RestaurantNotFound(i64),
    #[error("menu item {menu_item_id:?} is not on the menu of restaurant {restaurant_id}")]
    MenuItemNotFound { restaurant_id: i64, menu_item_id: String },
    #[error("{0}")]
    InvalidOrder(String),
}

impl Refusal {
    /// The failure code of the reply.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RestaurantNotFound(_) => codes::RESTAURANT_NOT_FOUND,
            Self::MenuItemNotFound { .. } => codes::MENU_ITEM_NOT_FOUND,
            Self::InvalidOrder(_) => codes::INVALID_ORDER,
        }
    }
}

/// Prices `items` at restaurant `restaurant_id`: the restaurant must exist, there
/// must be 1 to [`MAX_LINE_ITEMS`] lines, each with a quantity in
/// `1..=`[`MAX_QUANTITY`] and on the menu. Total = Σ unit price × quantity.
pub fn price_ticket(fixtures: &Fixtures, restaurant_id: i64, items: &[LineItem]) -> Result<PricedTicket, Refusal> {
    let restaurant = fixtures.restaurant(restaurant_id).ok_or(Refusal::RestaurantNotFound(restaurant_id))?;
    if items.is_empty() || items.len() > MAX_LINE_ITEMS {
        return Err(Refusal::InvalidOrder(format!(
            "an order has 1 to {MAX_LINE_ITEMS} line items, not {}",
            items.len()
        )));
    }
    let mut line_items = Vec::with_capacity(items.len());
    let mut total_minor: i64 = 0;
    for item in items {
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(Refusal::InvalidOrder(format!(
                "quantity of {:?} is {}; it must be 1 to {MAX_QUANTITY}",
                item.menu_item_id, item.quantity
            )));
        }
        let menu_item = restaurant
            .menu_item(&item.menu_item_id)
            .ok_or_else(|| Refusal::MenuItemNotFound { restaurant_id, menu_item_id: item.menu_item_id.clone() })?;
        // Cannot overflow within the bounds above; checked anyway, as the bounds
        // are constants someone may change.
        total_minor = menu_item
            .price_minor
            .checked_mul(i64::from(item.quantity))
            .and_then(|line| total_minor.checked_add(line))
            .ok_or_else(|| Refusal::InvalidOrder("the order total is too large".into()))?;
        line_items.push(PricedLine {
            menu_item_id: menu_item.id.clone(),
            quantity: item.quantity,
            unit_price_minor: menu_item.price_minor,
        });
    }
    Ok(PricedTicket { line_items, total_minor })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn item(id: &str, quantity: i32) -> LineItem {
        LineItem { menu_item_id: id.into(), quantity }
    }

    fn fixtures() -> Fixtures {
        Fixtures::builtin().unwrap()
    }

    #[test]
    fn the_total_is_the_sum_of_unit_price_times_quantity() {
        let priced = price_ticket(&fixtures(), 1, &[item("chicken-vindaloo", 2), item("naan", 3)]).unwrap();
        assert_eq!(priced.total_minor, 2 * 1295 + 3 * 350);
        assert_eq!(
            priced.line_items,
            vec![
                PricedLine { menu_item_id: "chicken-vindaloo".into(), quantity: 2, unit_price_minor: 1295 },
                PricedLine { menu_item_id: "naan".into(), quantity: 3, unit_price_minor: 350 },
            ]
        );
    }

    #[test]
    fn an_unknown_restaurant_is_refused() {
        let refusal = price_ticket(&fixtures(), 99, &[item("naan", 1)]).unwrap_err();
        assert_eq!(refusal, Refusal::RestaurantNotFound(99));
        assert_eq!(refusal.code(), "RESTAURANT_NOT_FOUND");
    }

    #[test]
    fn an_item_off_the_menu_is_refused_by_name() {
        let refusal = price_ticket(&fixtures(), 1, &[item("naan", 1), item("pizza", 1)]).unwrap_err();
        assert_eq!(refusal.code(), "MENU_ITEM_NOT_FOUND");
        assert!(refusal.to_string().contains("\"pizza\""), "{refusal}");
    }

    #[test]
    fn quantities_and_line_counts_out_of_bounds_are_invalid_orders() {
        let too_many: Vec<_> = (0..=MAX_LINE_ITEMS).map(|_| item("naan", 1)).collect();
        for items in [vec![], too_many, vec![item("naan", 0)], vec![item("naan", -1)], vec![item("naan", 101)]] {
            let refusal = price_ticket(&fixtures(), 1, &items).unwrap_err();
            assert_eq!(refusal.code(), "INVALID_ORDER", "{items:?}");
        }
    }

    #[test]
    fn the_largest_valid_order_is_priced() {
        let items: Vec<_> = (0..MAX_LINE_ITEMS).map(|_| item("chicken-tikka-masala", MAX_QUANTITY)).collect();
        let priced = price_ticket(&fixtures(), 2, &items).unwrap();
        assert_eq!(priced.total_minor, 1495 * 100 * 50);
    }
}
