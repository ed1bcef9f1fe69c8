//! The CreateOrderSaga (Microservices Patterns, ch. 4) as a declared list of steps,
//! with what each step sends and what each reply means.
//!
//! | # | step | participant | action | compensation |
//! |---|---|---|---|---|
//! | 0 | CREATE_ORDER | (local) | order `APPROVAL_PENDING` | order `REJECTED` (the saga's end) |
//! | 1 | VERIFY_CONSUMER | consumer_service | VerifyConsumer | |
//! | 2 | CREATE_TICKET | restaurant_service | CreateTicket | RejectTicket |
//! | 3 | AUTHORIZE_CARD (pivot) | accounting_service | AuthorizeCard | VoidAuthorization, only if abandoned |
//! | 4 | APPROVE_TICKET (retriable) | restaurant_service | ApproveTicket | |
//! | 5 | APPROVE_ORDER | (local) | order `APPROVED` | |
//!
//! The orchestrator's own rule: an order whose total (priced by the restaurant in
//! CreateTicket's reply) exceeds the limit is rejected after the ticket exists, so
//! the ticket is compensated, as the Python original's "orchestrator fails" demo.

use std::time::Duration;

use messaging::{Envelope, OutgoingMessage, envelope::traceparent_for};
use proto::{
    accounting::v1 as accounting,
    common::v1::{Failure, LineItem, Money},
    consumer::v1 as consumer,
    restaurant::v1 as restaurant,
};
use saga::{
    Compensation, Outcome, Phase, RetryPolicy, SagaDefinition, SagaDomain, StepDefinition, StepFailure, StepKind,
};
use serde::{Deserialize, Serialize};

pub const CREATE_ORDER: usize = 0;
pub const VERIFY_CONSUMER: usize = 1;
pub const CREATE_TICKET: usize = 2;
pub const AUTHORIZE_CARD: usize = 3;
pub const APPROVE_TICKET: usize = 4;
pub const APPROVE_ORDER: usize = 5;

/// Queue base names (before the namespace) of the participants and of the replies,
/// from the `(ftgo.messaging.v1.saga)` options of the messages sent there (they
/// dereference to `&str`; see `proto::contract`).
pub const CONSUMER_QUEUE: &proto::contract::Queue = &proto::contract::Queue::of::<consumer::VerifyConsumerCommand>();
pub const RESTAURANT_QUEUE: &proto::contract::Queue = &proto::contract::Queue::of::<restaurant::CreateTicketCommand>();
pub const ACCOUNTING_QUEUE: &proto::contract::Queue = &proto::contract::Queue::of::<accounting::AuthorizeCardCommand>();
pub const REPLY_QUEUE: &proto::contract::Queue = &proto::contract::Queue::of::<consumer::VerifyConsumerReply>();

/// The orchestrator's own failure of CREATE_TICKET: the priced order is over the limit.
pub const ORDER_TOTAL_LIMIT_EXCEEDED: &str = "ORDER_TOTAL_LIMIT_EXCEEDED";

/// `code` as a code that step `step`'s action can fail with, or `None`: one its
/// reply lists in the proto contract (`failure_codes`), one the state machine
/// gives itself (`TIMEOUT`, `CANCELLED`), or the orchestrator's own limit. Codes in
/// a reply are whatever a participant sent; this is how they become bounded labels.
pub fn known_failure_code(step: usize, code: &str) -> Option<&'static str> {
    if let Some(own) = saga::machine::codes::ALL.into_iter().find(|own| *own == code) {
        return Some(own);
    }
    if step == CREATE_TICKET && code == ORDER_TOTAL_LIMIT_EXCEEDED {
        return Some(ORDER_TOTAL_LIMIT_EXCEEDED);
    }
    let reply = expected_reply_type(step, Phase::Action)?;
    proto::contract::contract().ok()?.failure_code(reply, code)
}

/// Retry settings of the saga's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaPolicy {
    /// How long one attempt waits for its reply.
    pub step_timeout: Duration,
    /// Sends of a step before the pivot (included) before it is abandoned.
    pub max_attempts: u32,
    /// Sends of a compensation before the saga parks. Generous by default: a
    /// compensation cannot give up the way an action can, so it waits out a
    /// participant's restart (about two minutes: 20 × 3 s plus capped backoff)
    /// before asking for an operator.
    pub compensation_max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for SagaPolicy {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_millis(3000),
            max_attempts: 3,
            compensation_max_attempts: 20,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_millis(5000),
        }
    }
}

/// The CreateOrderSaga's definition under `policy`.
pub fn definition(policy: SagaPolicy) -> Result<SagaDefinition, saga::DefinitionError> {
    let action = RetryPolicy {
        attempt_timeout: policy.step_timeout,
        max_attempts: policy.max_attempts,
        backoff_initial: policy.backoff_initial,
        backoff_max: policy.backoff_max,
    };
    let compensation = RetryPolicy { max_attempts: policy.compensation_max_attempts, ..action };
    let forever = RetryPolicy { max_attempts: 0, ..action };
    SagaDefinition::new(vec![
        StepDefinition::local("CREATE_ORDER", StepKind::Compensatable),
        StepDefinition::remote("VERIFY_CONSUMER", StepKind::Compensatable, action),
        StepDefinition::remote("CREATE_TICKET", StepKind::Compensatable, action)
            .compensated_by(Compensation::Always, compensation),
        StepDefinition::remote("AUTHORIZE_CARD", StepKind::Pivot, action)
            .compensated_by(Compensation::OnlyIfAbandoned, compensation),
        StepDefinition::remote("APPROVE_TICKET", StepKind::Retriable, forever),
        StepDefinition::local("APPROVE_ORDER", StepKind::Retriable),
    ])
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub menu_item_id: String,
    pub quantity: i32,
}

/// The order, as the saga carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderData {
    pub consumer_id: i64,
    pub restaurant_id: i64,
    pub items: Vec<Item>,
    /// Known once the restaurant has priced the ticket.
    pub total_minor: Option<i64>,
    pub ticket_id: Option<i64>,
    pub authorization_id: Option<String>,
    /// The client's idempotency key, if any.
    pub idempotency_key: Option<String>,
}

impl OrderData {
    /// A new order: nothing is known from the participants yet.
    pub fn new(consumer_id: i64, restaurant_id: i64, items: Vec<Item>, idempotency_key: Option<String>) -> Self {
        Self {
            consumer_id,
            restaurant_id,
            items,
            total_minor: None,
            ticket_id: None,
            authorization_id: None,
            idempotency_key,
        }
    }

    pub fn line_items(&self) -> Vec<LineItem> {
        self.items.iter().map(|i| LineItem { menu_item_id: i.menu_item_id.clone(), quantity: i.quantity }).collect()
    }
}

/// The success payload of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyPayload {
    ConsumerVerified,
    TicketCreated {
        ticket_id: i64,
        total_minor: i64,
    },
    CardAuthorized {
        authorization_id: String,
    },
    TicketApproved,
    /// RejectTicket or VoidAuthorization succeeded.
    Compensated,
}

/// The domain rules of the saga.
#[derive(Debug, Clone)]
pub struct OrderDomain {
    /// Orders above this total (minor units) are rejected after the ticket exists.
    pub max_total_minor: i64,
}

impl SagaDomain for OrderDomain {
    type Data = OrderData;
    type Payload = ReplyPayload;

    fn apply_success(&self, step: usize, payload: ReplyPayload, data: &mut OrderData) -> Result<(), StepFailure> {
        match payload {
            ReplyPayload::TicketCreated { ticket_id, total_minor } => {
                data.ticket_id = Some(ticket_id);
                data.total_minor = Some(total_minor);
                if total_minor > self.max_total_minor {
                    return Err(StepFailure::business(
                        ORDER_TOTAL_LIMIT_EXCEEDED,
                        format!(
                            "order total {} exceeds the limit of {} set by order_service",
                            format_minor(total_minor),
                            format_minor(self.max_total_minor)
                        ),
                    ));
                }
            }
            ReplyPayload::CardAuthorized { authorization_id } => data.authorization_id = Some(authorization_id),
            ReplyPayload::ConsumerVerified | ReplyPayload::TicketApproved | ReplyPayload::Compensated => {}
        }
        debug_assert!(step != CREATE_ORDER && step != APPROVE_ORDER, "local steps have no replies");
        Ok(())
    }
}

/// 1295 → "12.95".
pub fn format_minor(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", minor.unsigned_abs() / 100, minor.unsigned_abs() % 100)
}

/// The reply type expected for a step's action or compensation; `None` when the
/// step sends no command in that phase. Asked of every reply: it builds no name.
pub fn expected_reply_type(step: usize, phase: Phase) -> Option<proto::TypeName> {
    use proto::TypeName;
    Some(match (step, phase) {
        (VERIFY_CONSUMER, Phase::Action) => TypeName::of::<consumer::VerifyConsumerReply>(),
        (CREATE_TICKET, Phase::Action) => TypeName::of::<restaurant::CreateTicketReply>(),
        (CREATE_TICKET, Phase::Compensation) => TypeName::of::<restaurant::RejectTicketReply>(),
        (AUTHORIZE_CARD, Phase::Action) => TypeName::of::<accounting::AuthorizeCardReply>(),
        (AUTHORIZE_CARD, Phase::Compensation) => TypeName::of::<accounting::VoidAuthorizationReply>(),
        (APPROVE_TICKET, Phase::Action) => TypeName::of::<restaurant::ApproveTicketReply>(),
        _ => return None,
    })
}

/// Why a reply cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("unknown reply type {0:?}")]
    UnknownType(String),
    #[error("undecodable {type_name}: {reason}")]
    Undecodable { type_name: String, reason: String },
    #[error("{0} has neither success nor failure")]
    Empty(String),
}

/// Decodes a reply by its AMQP `type`.
pub fn decode_reply(type_name: &str, payload: &[u8]) -> Result<Outcome<ReplyPayload>, ReplyError> {
    use prost::Message;
    fn decode<M: Message + Default>(type_name: &str, payload: &[u8]) -> Result<M, ReplyError> {
        M::decode(payload)
            .map_err(|e| ReplyError::Undecodable { type_name: type_name.to_owned(), reason: e.to_string() })
    }
    fn failure(f: Failure) -> Outcome<ReplyPayload> {
        Outcome::Failure(StepFailure { code: f.code, message: f.message, transient: f.transient })
    }
    let empty = || ReplyError::Empty(type_name.to_owned());
    if proto::is_type::<consumer::VerifyConsumerReply>(type_name) {
        use consumer::verify_consumer_reply::Outcome as O;
        return match decode::<consumer::VerifyConsumerReply>(type_name, payload)?.outcome.ok_or_else(empty)? {
            O::Success(_) => Ok(Outcome::Success(ReplyPayload::ConsumerVerified)),
            O::Failure(f) => Ok(failure(f)),
        };
    }
    if proto::is_type::<restaurant::CreateTicketReply>(type_name) {
        use restaurant::create_ticket_reply::Outcome as O;
        return match decode::<restaurant::CreateTicketReply>(type_name, payload)?.outcome.ok_or_else(empty)? {
            O::Success(s) => Ok(Outcome::Success(ReplyPayload::TicketCreated {
                ticket_id: s.ticket_id,
                total_minor: s.total.map(|m| m.amount_minor).unwrap_or_default(),
            })),
            O::Failure(f) => Ok(failure(f)),
        };
    }
    if proto::is_type::<restaurant::RejectTicketReply>(type_name) {
        use restaurant::reject_ticket_reply::Outcome as O;
        return match decode::<restaurant::RejectTicketReply>(type_name, payload)?.outcome.ok_or_else(empty)? {
            O::Success(_) => Ok(Outcome::Success(ReplyPayload::Compensated)),
            O::Failure(f) => Ok(failure(f)),
        };
    }
    if proto::is_type::<accounting::AuthorizeCardReply>(type_name) {
        use accounting::authorize_card_reply::Outcome as O;
        return match decode::<accounting::AuthorizeCardReply>(type_name, payload)?.outcome.ok_or_else(empty)? {
            O::Success(s) => {
                Ok(Outcome::Success(ReplyPayload::CardAuthorized { authorization_id: s.authorization_id }))
            }
            O::Failure(f) => Ok(failure(f)),
        };
    }
    if proto::is_type::<accounting::VoidAuthorizationReply>(type_name) {
        use accounting::void_authorization_reply::Outcome as O;
        return match decode::<accounting::VoidAuthorizationReply>(type_name, payload)?.outcome.ok_or_else(empty)? {
            O::Success(_) => Ok(Outcome::Success(ReplyPayload::Compensated)),
            O::Failure(f) => Ok(failure(f)),
        };
    }
    if proto::is_type::<restaurant::ApproveTicketReply>(type_name) {
        use restaurant::approve_ticket_reply::Outcome as O;
        return match decode::<restaurant::ApproveTicketReply>(type_name, payload)?.outcome.ok_or_else(empty)? {
            O::Success(_) => Ok(Outcome::Success(ReplyPayload::TicketApproved)),
            O::Failure(f) => Ok(failure(f)),
        };
    }
    Err(ReplyError::UnknownType(type_name.to_owned()))
}

/// Where the saga's queues are, in one namespace.
#[derive(Debug, Clone)]
pub struct Queues {
    pub consumer: String,
    pub restaurant: String,
    pub accounting: String,
    pub replies: String,
}

impl Queues {
    pub fn new(namespace: &service_kit::Namespace) -> Self {
        Self {
            consumer: namespace.queue(CONSUMER_QUEUE),
            restaurant: namespace.queue(RESTAURANT_QUEUE),
            accounting: namespace.queue(ACCOUNTING_QUEUE),
            replies: namespace.queue(REPLY_QUEUE),
        }
    }
}

/// The command of a step's action or compensation, ready to publish.
pub fn command(
    queues: &Queues,
    definition: &SagaDefinition,
    order_id: &str,
    data: &OrderData,
    cmd: &saga::CommandRef,
    traceparent: Option<String>,
) -> Option<OutgoingMessage> {
    let envelope = Envelope {
        message_id: cmd.message_id.clone(),
        correlation_id: order_id.to_owned(),
        reply_to: Some(queues.replies.clone()),
        type_name: String::new(),
        step: Some(definition.step_name(cmd.step).to_owned()),
        attempt: cmd.attempt,
        deadline_ms: Some(cmd.deadline_ms),
        command_id: None,
        traceparent: traceparent.or_else(|| traceparent_for(order_id)),
    };
    let order_id = order_id.to_owned();
    Some(match (cmd.step, cmd.phase) {
        (VERIFY_CONSUMER, Phase::Action) => OutgoingMessage::protobuf(
            &queues.consumer,
            envelope,
            &consumer::VerifyConsumerCommand { order_id, consumer_id: data.consumer_id },
        ),
        (CREATE_TICKET, Phase::Action) => OutgoingMessage::protobuf(
            &queues.restaurant,
            envelope,
            &restaurant::CreateTicketCommand { order_id, restaurant_id: data.restaurant_id, items: data.line_items() },
        ),
        (CREATE_TICKET, Phase::Compensation) => {
            OutgoingMessage::protobuf(&queues.restaurant, envelope, &restaurant::RejectTicketCommand { order_id })
        }
        (AUTHORIZE_CARD, Phase::Action) => OutgoingMessage::protobuf(
            &queues.accounting,
            envelope,
            &accounting::AuthorizeCardCommand {
                order_id,
                consumer_id: data.consumer_id,
                amount: Some(Money::usd(data.total_minor.unwrap_or_default())),
            },
        ),
        (AUTHORIZE_CARD, Phase::Compensation) => {
            OutgoingMessage::protobuf(&queues.accounting, envelope, &accounting::VoidAuthorizationCommand { order_id })
        }
        (APPROVE_TICKET, Phase::Action) => OutgoingMessage::protobuf(
            &queues.restaurant,
            envelope,
            &restaurant::ApproveTicketCommand { order_id, ticket_id: data.ticket_id.unwrap_or_default() },
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn the_definition_is_valid_with_default_policy() {
        let def = definition(SagaPolicy::default()).unwrap();
        assert_eq!(def.step_name(AUTHORIZE_CARD), "AUTHORIZE_CARD");
        assert_eq!(def.len(), 6);
    }

    #[test]
    fn money_is_formatted_from_minor_units() {
        assert_eq!(format_minor(1295), "12.95");
        assert_eq!(format_minor(50000), "500.00");
        assert_eq!(format_minor(-5), "-0.05");
    }

    #[test]
    fn an_order_over_the_limit_fails_after_recording_its_ticket() {
        let domain = OrderDomain { max_total_minor: 50_000 };
        let mut data = OrderData::new(1, 1, vec![], None);
        let result = domain.apply_success(
            CREATE_TICKET,
            ReplyPayload::TicketCreated { ticket_id: 4, total_minor: 50_001 },
            &mut data,
        );
        assert_eq!(result.map_err(|f| f.code), Err("ORDER_TOTAL_LIMIT_EXCEEDED".to_owned()));
        assert_eq!(data.ticket_id, Some(4));
    }

    #[test]
    fn replies_decode_by_type_and_garbage_does_not() {
        let reply = restaurant::CreateTicketReply {
            outcome: Some(restaurant::create_ticket_reply::Outcome::Success(restaurant::TicketCreated {
                ticket_id: 3,
                total: Some(Money::usd(2590)),
            })),
        };
        let name = "ftgo.restaurant.v1.CreateTicketReply";
        assert_eq!(
            decode_reply(name, &reply.encode_to_vec()),
            Ok(Outcome::Success(ReplyPayload::TicketCreated { ticket_id: 3, total_minor: 2590 }))
        );
        assert!(matches!(decode_reply(name, b"\xff\xff\xff"), Err(ReplyError::Undecodable { .. })));
        assert_eq!(decode_reply(name, &[]), Err(ReplyError::Empty(name.into())));
        assert_eq!(decode_reply("x.Y", &[]), Err(ReplyError::UnknownType("x.Y".into())));
    }
}
