//! The saga commands restaurant_service handles: CreateTicket, RejectTicket (its
//! compensation) and ApproveTicket. Each decodes its command, does what can be
//! decided in Rust against the immutable fixtures (pricing), runs its one Lua
//! script, and turns the stored outcome into the protobuf reply.
//!
//! Error mapping: an undecodable payload or an unknown `type` is `Malformed` /
//! `UnknownType` (dead-lettered); a Redis failure is `Transient` (the command is
//! requeued, and the script's processed-check makes the retry safe); everything
//! else is a reply, success or business failure.

use std::sync::Arc;

use messaging::{
    Envelope,
    participant::{Command, CommandError, CommandHandler, Reply},
};
use prost::Name;
use proto::{
    common::v1::{Failure, Money},
    restaurant::v1::{
        ApproveTicketCommand, ApproveTicketReply, CreateTicketCommand, CreateTicketReply, RejectTicketCommand,
        RejectTicketReply, TicketApproved, TicketCreated, TicketRejected, approve_ticket_reply, create_ticket_reply,
        reject_ticket_reply,
    },
};
use service_kit::participant::transient;

use crate::{
    MAX_ORDER_ID_LEN,
    fixtures::Fixtures,
    pricing::price_ticket,
    store::{Outcome, Store, TicketRecord},
};

/// Handles restaurant_service's commands.
pub struct RestaurantCommands {
    store: Store,
    fixtures: Arc<Fixtures>,
    /// `{"<restaurant id>": N}` for every restaurant with fault injection, or `{}`
    /// when it is switched off; built once, handed to the ApproveTicket script.
    fault_budgets: String,
}

impl RestaurantCommands {
    /// A handler over `store`, pricing with `fixtures`; `fault_injection` false
    /// ignores every restaurant's `approve_ticket_transient_failures`.
    pub fn new(store: Store, fixtures: Arc<Fixtures>, fault_injection: bool) -> Self {
        let fault_budgets = fault_budgets(&fixtures, fault_injection);
        Self { store, fixtures, fault_budgets }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %cmd.order_id, message_id = %envelope.message_id, restaurant_id = cmd.restaurant_id))]
    async fn create_ticket(&self, envelope: &Envelope, cmd: CreateTicketCommand) -> Result<Reply, CommandError> {
        check_order_id(&cmd.order_id)?;
        let outcome = match price_ticket(&self.fixtures, cmd.restaurant_id, &cmd.items) {
            Ok(priced) => {
                let record = TicketRecord {
                    order_id: cmd.order_id,
                    restaurant_id: cmd.restaurant_id,
                    line_items: priced.line_items,
                    total_minor: priced.total_minor,
                };
                self.store.create_ticket(&envelope.message_id, &record).await
            }
            Err(refusal) => {
                let outcome = Outcome::Failure {
                    code: refusal.code().to_owned(),
                    message: refusal.to_string(),
                    transient: false,
                };
                self.store.store_outcome(&envelope.message_id, &outcome).await
            }
        }
        .map_err(transient)?;
        log_outcome("CreateTicket", &outcome);
        let outcome = match outcome {
            Outcome::Success { ticket_id, total_minor } => {
                create_ticket_reply::Outcome::Success(TicketCreated { ticket_id, total: Some(Money::usd(total_minor)) })
            }
            Outcome::Failure { code, message, transient } => {
                create_ticket_reply::Outcome::Failure(failure(code, message, transient))
            }
        };
        Ok(Reply::of(&CreateTicketReply { outcome: Some(outcome) }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %cmd.order_id, message_id = %envelope.message_id))]
    async fn reject_ticket(&self, envelope: &Envelope, cmd: RejectTicketCommand) -> Result<Reply, CommandError> {
        check_order_id(&cmd.order_id)?;
        let outcome = self.store.reject_ticket(&envelope.message_id, &cmd.order_id).await.map_err(transient)?;
        log_outcome("RejectTicket", &outcome);
        let outcome = match outcome {
            Outcome::Success { ticket_id, .. } => reject_ticket_reply::Outcome::Success(TicketRejected { ticket_id }),
            Outcome::Failure { code, message, transient } => {
                reject_ticket_reply::Outcome::Failure(failure(code, message, transient))
            }
        };
        Ok(Reply::of(&RejectTicketReply { outcome: Some(outcome) }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %cmd.order_id, message_id = %envelope.message_id, ticket_id = cmd.ticket_id))]
    async fn approve_ticket(&self, envelope: &Envelope, cmd: ApproveTicketCommand) -> Result<Reply, CommandError> {
        check_order_id(&cmd.order_id)?;
        let outcome = self
            .store
            .approve_ticket(&envelope.message_id, &cmd.order_id, cmd.ticket_id, &self.fault_budgets)
            .await
            .map_err(transient)?;
        log_outcome("ApproveTicket", &outcome);
        let outcome = match outcome {
            Outcome::Success { ticket_id, .. } => approve_ticket_reply::Outcome::Success(TicketApproved { ticket_id }),
            Outcome::Failure { code, message, transient } => {
                approve_ticket_reply::Outcome::Failure(failure(code, message, transient))
            }
        };
        Ok(Reply::of(&ApproveTicketReply { outcome: Some(outcome) }))
    }
}

#[async_trait::async_trait]
impl CommandHandler for RestaurantCommands {
    fn command_types(&self) -> Vec<String> {
        vec![CreateTicketCommand::full_name(), RejectTicketCommand::full_name(), ApproveTicketCommand::full_name()]
    }

    async fn handle(&self, command: Command<'_>) -> Result<Reply, CommandError> {
        let kind = command.envelope.type_name.as_str();
        if proto::is_type::<CreateTicketCommand>(kind) {
            self.create_ticket(command.envelope, command.decode_for_order(|c: &CreateTicketCommand| &c.order_id)?).await
        } else if proto::is_type::<RejectTicketCommand>(kind) {
            self.reject_ticket(command.envelope, command.decode_for_order(|c: &RejectTicketCommand| &c.order_id)?).await
        } else if proto::is_type::<ApproveTicketCommand>(kind) {
            self.approve_ticket(command.envelope, command.decode_for_order(|c: &ApproveTicketCommand| &c.order_id)?)
                .await
        } else {
            Err(CommandError::UnknownType(kind.to_owned()))
        }
    }
}

/// The JSON object of fault budgets the ApproveTicket script reads.
fn fault_budgets(fixtures: &Fixtures, enabled: bool) -> String {
    let budgets: serde_json::Map<String, serde_json::Value> = fixtures
        .restaurants()
        .into_iter()
        .filter(|r| enabled && r.approve_ticket_transient_failures > 0)
        .map(|r| (r.id.to_string(), r.approve_ticket_transient_failures.into()))
        .collect();
    serde_json::Value::Object(budgets).to_string()
}

/// Every command is keyed by its order (index, tombstone): a command without a
/// usable order id is a broken sender, not a business case, so it is dead-lettered.
fn check_order_id(order_id: &str) -> Result<(), CommandError> {
    if order_id.is_empty() || order_id.len() > MAX_ORDER_ID_LEN {
        return Err(CommandError::Malformed(format!(
            "order_id must be 1 to {MAX_ORDER_ID_LEN} bytes, got {}",
            order_id.len()
        )));
    }
    Ok(())
}

fn failure(code: String, message: String, transient: bool) -> Failure {
    if transient { Failure::transient(&code, message) } else { Failure::business(&code, message) }
}

/// Debug, not info: a line per command costs CPU on the hot path, and the
/// outcome is in the reply, the metrics and the command's span anyway.
fn log_outcome(command: &'static str, outcome: &Outcome) {
    match outcome {
        Outcome::Success { ticket_id, .. } => tracing::debug!(command, ticket_id, "succeeded"),
        Outcome::Failure { code, transient, .. } => tracing::debug!(command, code = %code, transient, "failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_budgets_name_the_flaky_kitchen_only_when_enabled() -> Result<(), crate::fixtures::FixtureError> {
        let fixtures = Fixtures::builtin()?;
        assert_eq!(fault_budgets(&fixtures, true), r#"{"2":2}"#);
        assert_eq!(fault_budgets(&fixtures, false), "{}");
        Ok(())
    }

    #[test]
    fn a_command_without_an_order_id_is_malformed() {
        assert!(matches!(check_order_id(""), Err(CommandError::Malformed(_))));
        assert!(matches!(check_order_id(&"x".repeat(MAX_ORDER_ID_LEN + 1)), Err(CommandError::Malformed(_))));
        assert!(check_order_id("0190b5c2-6c4e-7a1b-8f00-000000000001").is_ok());
    }
}
