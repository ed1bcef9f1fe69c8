//! The invariants of design §7, checked once every saga is terminal, against what
//! the services themselves store, read through their own gRPC read calls (never
//! their Redis keys), plus the dead-letter queues.
//!
//! The one decision to know: duplicates are found from the participants' side,
//! independently of what the orchestrator believes. Every ticket of the namespace
//! is read by id (ids are one per-namespace sequence, so 1, 2, 3… until a run of
//! NOT_FOUND) and grouped by order; every order's authorizations are listed. An
//! order with two tickets or two authorizations had a command applied twice.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    time::Duration,
};

use anyhow::Context;
use lapin::{
    BasicProperties, Connection,
    options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use messaging::envelope::HEADER_DEAD_LETTER_REASON;
use proto::{
    accounting::v1::{
        AuthorizationState, ListAuthorizationsRequest, ListAuthorizationsResponse,
        accounting_service_client::AccountingServiceClient,
    },
    restaurant::v1::{
        GetTicketByOrderRequest, GetTicketRequest, Ticket, TicketState,
        restaurant_service_client::RestaurantServiceClient,
    },
};
use tonic::{Code, transport::Channel as GrpcChannel};

use crate::{
    driver::{Expected, Final, OrderApi, SagaRecord, Scenario},
    processes::Service,
};

/// After this many NOT_FOUND ticket ids in a row, the scan stops.
const TICKET_SCAN_GAP: i64 = 25;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the check found.
#[derive(Debug, Default, Clone)]
pub struct Checked {
    /// Orders with an id that never became terminal (or no longer exist).
    pub lost: Vec<String>,
    /// Every broken invariant, one line each.
    pub violations: Vec<String>,
    /// Orders with more than one ticket or more than one authorization.
    pub duplicates_applied: Vec<String>,
    /// Things worth a look that break no invariant.
    pub findings: Vec<String>,
    /// Dead letters by queue and reason.
    pub dead_letters: BTreeMap<String, BTreeMap<String, usize>>,
    /// Messages still ready in the namespace's queues.
    pub leftovers: BTreeMap<String, u32>,
    pub tickets_scanned: usize,
    /// Orders ListOrders knows in the namespace.
    pub orders_listed: usize,
    /// APPROVED-scenario sagas rejected because a step was abandoned (TIMEOUT):
    /// legitimate under faults, but worth counting.
    pub rejected_by_timeout: usize,
}

/// The participants' read clients.
pub struct Participants {
    restaurant: RestaurantServiceClient<GrpcChannel>,
    accounting: AccountingServiceClient<GrpcChannel>,
}

impl Participants {
    pub fn new(restaurant: SocketAddr, accounting: SocketAddr) -> anyhow::Result<Self> {
        let channel = |addr: SocketAddr| -> anyhow::Result<GrpcChannel> {
            Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(Duration::from_secs(1))
                .connect_lazy())
        };
        Ok(Self {
            restaurant: RestaurantServiceClient::new(channel(restaurant)?),
            accounting: AccountingServiceClient::new(channel(accounting)?),
        })
    }

    async fn ticket(&self, ticket_id: i64) -> anyhow::Result<Option<Ticket>> {
        let mut client = self.restaurant.clone();
        let call = client.get_ticket(GetTicketRequest { ticket_id });
        match tokio::time::timeout(CALL_TIMEOUT, call).await.context("GetTicket timed out")? {
            Ok(ticket) => Ok(Some(ticket.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(anyhow::anyhow!("GetTicket {ticket_id}: {status}")),
        }
    }

    async fn ticket_by_order(&self, order_id: &str) -> anyhow::Result<(Option<Ticket>, bool)> {
        let mut client = self.restaurant.clone();
        let call = client.get_ticket_by_order(GetTicketByOrderRequest { order_id: order_id.to_owned() });
        match tokio::time::timeout(CALL_TIMEOUT, call).await.context("GetTicketByOrder timed out")? {
            Ok(response) => {
                let response = response.into_inner();
                Ok((response.ticket, response.tombstone))
            }
            Err(status) if status.code() == Code::NotFound => Ok((None, false)),
            Err(status) => Err(anyhow::anyhow!("GetTicketByOrder {order_id}: {status}")),
        }
    }

    async fn authorizations(&self, order_id: &str) -> anyhow::Result<ListAuthorizationsResponse> {
        let mut client = self.accounting.clone();
        let call = client.list_authorizations(ListAuthorizationsRequest { order_id: order_id.to_owned() });
        match tokio::time::timeout(CALL_TIMEOUT, call).await.context("ListAuthorizations timed out")? {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(anyhow::anyhow!("ListAuthorizations {order_id}: {status}")),
        }
    }

    /// Reads with a few retries (a participant may just be reconnecting).
    async fn retry<T, F, Fut>(&self, mut call: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let mut last = None;
        for attempt in 0..5u32 {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error) => last = Some(error),
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt + 1))).await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
    }

    /// Every ticket of the namespace, by reading ids 1, 2, 3… until
    /// [`TICKET_SCAN_GAP`] ids in a row do not exist.
    async fn scan_tickets(&self) -> anyhow::Result<Vec<Ticket>> {
        let mut tickets = Vec::new();
        let mut next = 1;
        let mut gap = 0;
        while gap < TICKET_SCAN_GAP {
            let batch: Vec<i64> = (next..next + 16).collect();
            next += 16;
            let found = futures::future::join_all(batch.iter().map(|id| self.retry(|| self.ticket(*id)))).await;
            for ticket in found {
                match ticket? {
                    Some(ticket) => {
                        gap = 0;
                        tickets.push(ticket);
                    }
                    None => gap += 1,
                }
            }
        }
        Ok(tickets)
    }
}

fn state_name(state: i32) -> String {
    TicketState::try_from(state).map(|s| s.as_str_name().to_owned()).unwrap_or_else(|_| format!("state {state}"))
}

/// Checks every invariant for every saga the driver started.
pub async fn check(
    records: &[SagaRecord],
    api: &OrderApi,
    participants: &Participants,
    connection: &Connection,
    namespace: &str,
    keep: bool,
) -> anyhow::Result<Checked> {
    let mut checked = Checked::default();

    // Creation: every saga got an order, one only.
    for record in records {
        if let Some(error) = &record.create_error {
            checked.violations.push(format!(
                "saga {} ({}): CreateOrder never succeeded while a replica was up: {error}",
                record.index,
                record.scenario.as_str()
            ));
        }
        if !record.other_ids.is_empty() {
            checked.violations.push(format!(
                "saga {}: the retried CreateOrder with key {} returned other orders {:?} than {:?}",
                record.index, record.idempotency_key, record.other_ids, record.order_id
            ));
        }
        if record.created_true > 1 {
            checked.violations.push(format!(
                "saga {}: CreateOrder with key {} said `created: true` {} times",
                record.index, record.idempotency_key, record.created_true
            ));
        }
    }
    let known: HashSet<&str> = records.iter().filter_map(|r| r.order_id.as_deref()).collect();
    match api.list_all().await {
        Ok(listed) => {
            checked.orders_listed = listed.len();
            for id in listed.iter().filter(|id| !known.contains(id.as_str())) {
                checked.violations.push(format!(
                    "order {id} exists but no CreateOrder returned it (a retried CreateOrder started a second saga?)"
                ));
            }
        }
        Err(status) => checked.findings.push(format!("ListOrders failed: {status}")),
    }

    // The participants' side.
    let tickets = participants.scan_tickets().await.context("scanning tickets")?;
    checked.tickets_scanned = tickets.len();
    let mut tickets_by_order: HashMap<String, Vec<Ticket>> = HashMap::new();
    for ticket in tickets {
        if !known.contains(ticket.order_id.as_str()) {
            checked.findings.push(format!(
                "ticket {} belongs to order {}, which the driver does not know",
                ticket.ticket_id, ticket.order_id
            ));
        }
        tickets_by_order.entry(ticket.order_id.clone()).or_default().push(ticket);
    }

    let checks = futures::future::join_all(
        records.iter().filter(|r| r.order_id.is_some()).map(|r| check_order(r, api, participants, &tickets_by_order)),
    )
    .await;
    for outcome in checks {
        let outcome = outcome?;
        checked.lost.extend(outcome.lost);
        checked.violations.extend(outcome.violations);
        checked.duplicates_applied.extend(outcome.duplicates);
        checked.findings.extend(outcome.findings);
        checked.rejected_by_timeout += usize::from(outcome.rejected_by_timeout);
    }

    // Dead letters and leftovers, on a channel of their own: dead letters are
    // taken unacknowledged, then acknowledged (gone) or, with `keep`, handed back
    // by closing the channel.
    let channel = connection.create_channel().await.context("opening a channel for the DLQs")?;
    for service in Service::ALL {
        let queue = format!("{namespace}.{}", service.queue_base());
        let dlq = format!("{queue}.dlq");
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        while let Some(message) =
            channel.basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false }).await.context("draining a DLQ")?
        {
            if !keep {
                message.delivery.ack(BasicAckOptions::default()).await.context("acknowledging a dead letter")?;
            }
            let props = &message.delivery.properties;
            let reason = dead_letter_reason(props);
            *reasons.entry(reason.clone()).or_default() += 1;
            if reason != "expired" {
                let kind = props.kind().as_ref().map(|k| k.to_string()).unwrap_or_default();
                let line = format!(
                    "dead letter in {dlq}: type={kind} message_id={} order={} reason={reason}",
                    props.message_id().as_ref().map(|m| m.as_str()).unwrap_or("-"),
                    props.correlation_id().as_ref().map(|m| m.as_str()).unwrap_or("-"),
                );
                // A well-formed command or reply of ours dead-lettered for any
                // reason but expiry was refused by the service that should have
                // handled it: a message lost for the saga, so a violation. Anything
                // else (not ours) is only listed.
                if is_saga_message(&kind) {
                    checked.violations.push(line);
                } else {
                    checked.findings.push(line);
                }
            }
        }
        if !reasons.is_empty() {
            checked.dead_letters.insert(dlq, reasons);
        }
        let ready = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or_default();
        if ready > 0 {
            checked.leftovers.insert(queue, ready);
        }
    }
    let _ = channel.close(200, "dead letters read".into()).await;
    Ok(checked)
}

#[derive(Default)]
struct OrderOutcome {
    lost: Vec<String>,
    violations: Vec<String>,
    duplicates: Vec<String>,
    findings: Vec<String>,
    rejected_by_timeout: bool,
}

async fn check_order(
    record: &SagaRecord,
    api: &OrderApi,
    participants: &Participants,
    tickets_by_order: &HashMap<String, Vec<Ticket>>,
) -> anyhow::Result<OrderOutcome> {
    let mut out = OrderOutcome::default();
    let Some(order_id) = record.order_id.as_deref() else { return Ok(out) };
    let label = format!("order {order_id} (saga {}, {})", record.index, record.scenario.as_str());
    let order = match api.get(order_id, record.index).await {
        Ok(order) => order,
        Err(status) if status.code() == Code::NotFound => {
            out.lost.push(format!("{label}: GetOrder says NOT_FOUND"));
            return Ok(out);
        }
        Err(status) => return Err(anyhow::anyhow!("GetOrder {order_id}: {status}")),
    };
    let Some(state) = Final::of_order(&order) else {
        let saga = order.saga.clone().unwrap_or_default();
        out.lost.push(format!(
            "{label}: never terminal (saga status {}, step {}, attempt {}, compensating {})",
            saga.status, saga.current_step, saga.attempt, saga.compensating
        ));
        return Ok(out);
    };
    let saga = order.saga.clone().unwrap_or_default();

    let (by_order, _tombstone) = participants.retry(|| participants.ticket_by_order(order_id)).await?;
    let authorizations = participants.retry(|| participants.authorizations(order_id)).await?;
    let mut tickets: Vec<Ticket> = tickets_by_order.get(order_id).cloned().unwrap_or_default();
    if let Some(ticket) = &by_order
        && !tickets.iter().any(|t| t.ticket_id == ticket.ticket_id)
    {
        tickets.push(ticket.clone());
    }
    let in_force: Vec<_> =
        authorizations.authorizations.iter().filter(|a| a.state == AuthorizationState::Authorized as i32).collect();

    if tickets.len() > 1 || authorizations.authorizations.len() > 1 {
        out.duplicates.push(format!(
            "{label}: {} tickets {:?}, {} authorizations {:?}",
            tickets.len(),
            tickets.iter().map(|t| (t.ticket_id, state_name(t.state))).collect::<Vec<_>>(),
            authorizations.authorizations.len(),
            authorizations.authorizations.iter().map(|a| a.authorization_id.clone()).collect::<Vec<_>>()
        ));
    }

    match state {
        Final::Approved => {
            match &by_order {
                Some(ticket) if ticket.state == TicketState::AwaitingAcceptance as i32 => {
                    if ticket.ticket_id != order.ticket_id {
                        out.violations.push(format!(
                            "{label}: APPROVED with ticket {} but its ticket is {}",
                            order.ticket_id, ticket.ticket_id
                        ));
                    }
                }
                Some(ticket) => out.violations.push(format!(
                    "{label}: APPROVED but ticket {} is {}",
                    ticket.ticket_id,
                    state_name(ticket.state)
                )),
                None => out.violations.push(format!("{label}: APPROVED but has no ticket")),
            }
            if in_force.len() != 1 || authorizations.authorizations.len() != 1 {
                out.violations.push(format!(
                    "{label}: APPROVED with {} authorizations in force of {} (exactly one must exist)",
                    in_force.len(),
                    authorizations.authorizations.len()
                ));
            } else if in_force[0].authorization_id != order.authorization_id {
                out.violations.push(format!(
                    "{label}: APPROVED with authorization {} but accounting holds {}",
                    order.authorization_id, in_force[0].authorization_id
                ));
            }
            if record.scenario.expected() != Final::Approved {
                out.violations.push(format!(
                    "{label}: APPROVED, but this scenario must be rejected ({})",
                    record.scenario.as_str()
                ));
            }
        }
        Final::Rejected => {
            for ticket in &tickets {
                if ticket.state == TicketState::CreatePending as i32
                    || ticket.state == TicketState::AwaitingAcceptance as i32
                {
                    out.violations.push(format!(
                        "{label}: REJECTED but ticket {} is {}",
                        ticket.ticket_id,
                        state_name(ticket.state)
                    ));
                }
            }
            if !in_force.is_empty() {
                out.violations.push(format!(
                    "{label}: REJECTED but {} authorization(s) in force: {:?}",
                    in_force.len(),
                    in_force.iter().map(|a| a.authorization_id.clone()).collect::<Vec<_>>()
                ));
            }
            if record.scenario.expected() == Final::Approved {
                // Under faults a step may be abandoned (TIMEOUT) and compensated:
                // a legitimate end. Any other business failure is not.
                if saga.failure_code == "TIMEOUT" {
                    out.rejected_by_timeout = true;
                } else {
                    out.violations.push(format!(
                        "{label}: REJECTED with {} at step {} although this scenario succeeds",
                        saga.failure_code, saga.failed_step
                    ));
                }
            } else if saga.failure_code == "TIMEOUT" {
                out.rejected_by_timeout = true;
            } else {
                let expected = match record.scenario {
                    Scenario::ConsumerRejected => "CONSUMER_SUSPENDED",
                    Scenario::CardDeclined => "CARD_DECLINED",
                    Scenario::OverLimit => "ORDER_TOTAL_LIMIT_EXCEEDED",
                    Scenario::Success | Scenario::FlakyKitchen => "",
                };
                if saga.failure_code != expected {
                    out.violations.push(format!("{label}: REJECTED with {} instead of {expected}", saga.failure_code));
                }
            }
        }
        Final::Parked => out.violations.push(format!(
            "{label}: parked as COMPENSATION_FAILED ({}: {}) although compensations may retry 1000 times",
            saga.failure_code, saga.failure_reason
        )),
    }
    Ok(out)
}

/// Why a message was dead-lettered: the services' own reason header, else the
/// broker's (`x-death`, e.g. `expired`).
pub fn dead_letter_reason(props: &BasicProperties) -> String {
    let Some(headers) = props.headers().as_ref().map(|h| h.inner()) else { return "no reason".into() };
    let text = |value: &AMQPValue| match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    };
    if let Some(reason) = headers.get(HEADER_DEAD_LETTER_REASON).and_then(text) {
        return reason;
    }
    if let Some(AMQPValue::FieldArray(deaths)) = headers.get("x-death")
        && let Some(AMQPValue::FieldTable(first)) = deaths.as_slice().first()
        && let Some(reason) = first.inner().get("reason").and_then(text)
    {
        return reason;
    }
    headers.get("x-first-death-reason").and_then(text).unwrap_or_else(|| "no reason".into())
}

/// Whether `type` names one of the saga's commands or replies.
fn is_saga_message(kind: &str) -> bool {
    const TYPES: &[&str] = &[
        "ftgo.consumer.v1.VerifyConsumerCommand",
        "ftgo.consumer.v1.VerifyConsumerReply",
        "ftgo.restaurant.v1.CreateTicketCommand",
        "ftgo.restaurant.v1.CreateTicketReply",
        "ftgo.restaurant.v1.RejectTicketCommand",
        "ftgo.restaurant.v1.RejectTicketReply",
        "ftgo.restaurant.v1.ApproveTicketCommand",
        "ftgo.restaurant.v1.ApproveTicketReply",
        "ftgo.accounting.v1.AuthorizeCardCommand",
        "ftgo.accounting.v1.AuthorizeCardReply",
        "ftgo.accounting.v1.VoidAuthorizationCommand",
        "ftgo.accounting.v1.VoidAuthorizationReply",
    ];
    TYPES.contains(&kind)
}

#[cfg(test)]
mod tests {
    use lapin::types::{FieldArray, LongString};

    use super::*;

    #[test]
    fn the_reason_is_the_services_header_else_the_brokers_x_death() {
        let mut headers = FieldTable::default();
        headers.insert(HEADER_DEAD_LETTER_REASON.into(), AMQPValue::LongString(LongString::from("malformed")));
        assert_eq!(dead_letter_reason(&BasicProperties::default().with_headers(headers)), "malformed");

        let mut death = FieldTable::default();
        death.insert("reason".into(), AMQPValue::LongString(LongString::from("expired")));
        let mut headers = FieldTable::default();
        headers.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])));
        assert_eq!(dead_letter_reason(&BasicProperties::default().with_headers(headers)), "expired");
        assert_eq!(dead_letter_reason(&BasicProperties::default()), "no reason");
    }
}
