//! `ftgo.order.v1.OrderService`: the order API over the orchestrator. This module
//! converts between the protobuf API and the saga's state, and is the one place
//! where errors become gRPC statuses.

use std::{pin::Pin, sync::Arc};

use futures::{FutureExt, Stream, StreamExt, stream::PollNext};
use proto::{
    common::v1::{LineItem, Money},
    order::v1::{
        self as api, CancelOrderRequest, CancelOrderResponse, CreateOrderRequest, CreateOrderResponse, GetOrderRequest,
        GetOrderResponse, ListOrdersRequest, ListOrdersResponse, RetrySagaRequest, RetrySagaResponse, SagaEvent,
        WatchOrderRequest, order_service_server::OrderService,
    },
};
use saga::{EventKind, Phase, store::StoredEvent};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::{
    create_order_saga::OrderData,
    orchestrator::{Orchestrator, OrchestratorError, OrderSaga, order_label},
    validation::{self, MAX_REASON_LENGTH, Violations},
    watch::{EventNotifier, start_watch, stream_events},
};

/// The gRPC service.
#[derive(Clone)]
pub struct OrderApi {
    pub orchestrator: Orchestrator,
    /// Wakes watch streams when their saga stores events.
    pub notifier: EventNotifier,
    /// Bounds concurrent watch streams (each is a task and a buffer).
    pub watchers: Arc<Semaphore>,
    /// A watch stream's read when no wake-up came (`WATCH_RECHECK_MS`).
    pub watch_recheck: std::time::Duration,
    /// Ends open watch streams at shutdown, so they do not hold the server's drain;
    /// clients resume on another replica with `after_event_id`.
    pub shutdown: service_kit::CancellationToken,
}

impl From<OrchestratorError> for Status {
    fn from(error: OrchestratorError) -> Self {
        match error {
            OrchestratorError::NotFound(id) => Status::not_found(format!("no order {id}")),
            OrchestratorError::NotAllowed(reason) => Status::failed_precondition(reason),
            e @ OrchestratorError::IdempotencyMismatch(_) => {
                let mut v = Violations::default();
                v.add("idempotency_key", e.to_string());
                v.into_result().err().unwrap_or_else(|| Status::invalid_argument(e.to_string()))
            }
            e @ OrchestratorError::Contention(_) => Status::aborted(e.to_string()),
            e @ (OrchestratorError::Store(_) | OrchestratorError::Redis(_)) => {
                // Redis unreachable is an operational condition the client retries,
                // not a bug: warn, and answer UNAVAILABLE.
                tracing::warn!(error = %e, "order API cannot reach the store");
                Status::unavailable("the order store is unavailable; retry later")
            }
        }
    }
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// `from_str_name(prefix + name)` without allocating the joined name: this runs
/// for every field of every event a watch sends. No proto enum name is longer
/// than the buffer; a longer one is no name.
fn by_name<T>(prefix: &str, name: &str, from_str_name: impl Fn(&str) -> Option<T>) -> Option<T> {
    let mut joined = [0u8; 64];
    let len = prefix.len() + name.len();
    if len > joined.len() {
        return None;
    }
    joined[..prefix.len()].copy_from_slice(prefix.as_bytes());
    joined[prefix.len()..len].copy_from_slice(name.as_bytes());
    std::str::from_utf8(&joined[..len]).ok().and_then(from_str_name)
}

fn step_enum(name: &str) -> i32 {
    by_name("SAGA_STEP_", name, api::SagaStep::from_str_name).unwrap_or(api::SagaStep::Unspecified) as i32
}

fn status_enum(name: &str) -> i32 {
    by_name("SAGA_STATUS_", name, api::SagaStatus::from_str_name).unwrap_or(api::SagaStatus::Unspecified) as i32
}

fn state_enum(label: &str) -> i32 {
    by_name("ORDER_STATE_", label, api::OrderState::from_str_name).unwrap_or(api::OrderState::Unspecified) as i32
}

impl OrderApi {
    fn order(&self, saga: &OrderSaga) -> api::Order {
        let definition = self.orchestrator.definition();
        let data: &OrderData = &saga.data;
        let (failed_step, failure_code, failure_reason, failed_at) = match &saga.failure {
            Some(f) => (step_enum(&f.step), f.code.clone(), f.reason.clone(), Some(timestamp(f.at_ms))),
            None => (0, String::new(), String::new(), None),
        };
        let failure_reason = match &saga.parked {
            Some(p) => format!("{failure_reason} (parked: {} {} {})", p.step, p.code, p.reason),
            None => failure_reason,
        };
        let current_step = saga.step;
        api::Order {
            order_id: saga.saga_id.clone(),
            state: state_enum(order_label(saga.status)),
            consumer_id: data.consumer_id,
            restaurant_id: data.restaurant_id,
            items: data
                .items
                .iter()
                .map(|i| LineItem { menu_item_id: i.menu_item_id.clone(), quantity: i.quantity })
                .collect(),
            total: data.total_minor.map(Money::usd),
            ticket_id: data.ticket_id.unwrap_or_default(),
            authorization_id: data.authorization_id.clone().unwrap_or_default(),
            saga: Some(api::SagaInfo {
                status: status_enum(saga.status.as_str()),
                current_step: step_enum(definition.step_name(current_step)),
                compensating: saga.pending.as_ref().is_some_and(|p| p.phase == Phase::Compensation),
                attempt: saga.pending.as_ref().map(|p| p.attempt).unwrap_or_default(),
                failed_step,
                failure_code,
                failure_reason,
                failed_at,
            }),
            created_at: Some(timestamp(saga.created_at_ms)),
            updated_at: Some(timestamp(saga.updated_at_ms)),
        }
    }

    async fn load(&self, order_id: &str) -> Result<OrderSaga, Status> {
        self.orchestrator
            .store()
            .load::<OrderData>(order_id)
            .await
            .map_err(OrchestratorError::from)?
            .ok_or_else(|| Status::not_found(format!("no order {order_id}")))
    }
}

/// A stored event as the API's `SagaEvent`.
pub fn saga_event(order_id: &str, event: &StoredEvent) -> (SagaEvent, bool) {
    let kind = EventKind::parse(event.field("kind"));
    let terminal = kind.is_some_and(EventKind::is_terminal);
    let event_type = match kind {
        Some(EventKind::SagaApproved) => api::SagaEventType::OrderApproved,
        Some(EventKind::SagaRejected) => api::SagaEventType::OrderRejected,
        Some(k) => by_name("SAGA_EVENT_TYPE_", k.as_str(), api::SagaEventType::from_str_name)
            .unwrap_or(api::SagaEventType::Unspecified),
        None => api::SagaEventType::Unspecified,
    };
    let at = event.field("at").parse::<i64>().ok().map(timestamp);
    let message = SagaEvent {
        event_id: event.id.clone(),
        order_id: order_id.to_owned(),
        r#type: event_type as i32,
        step: step_enum(event.field("step")),
        attempt: event.field("attempt").parse().unwrap_or_default(),
        code: event.field("code").to_owned(),
        message: event.field("message").to_owned(),
        saga_status: status_enum(event.field("status")),
        order_state: state_enum(event.field("label")),
        terminal,
        at,
    };
    (message, terminal)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<SagaEvent, Status>> + Send>>;

const PAGE_SIZE_DEFAULT: usize = 50;
const PAGE_SIZE_MAX: usize = 500;

#[tonic::async_trait]
impl OrderService for OrderApi {
    #[tracing::instrument(level = "debug", skip_all, fields(consumer_id = request.get_ref().consumer_id, order_id))]
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let data = validation::create_order(request.get_ref())?;
        let (saga, created) = self.orchestrator.create(data).await?;
        tracing::Span::current().record("order_id", saga.saga_id.as_str());
        Ok(Response::new(CreateOrderResponse {
            order_id: saga.saga_id.clone(),
            state: state_enum(order_label(saga.status)),
            created,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn get_order(&self, request: Request<GetOrderRequest>) -> Result<Response<GetOrderResponse>, Status> {
        let order_id = validation::order_id("order_id", &request.get_ref().order_id)?;
        let saga = self.load(&order_id).await?;
        Ok(Response::new(GetOrderResponse { order: Some(self.order(&saga)) }))
    }

    type WatchOrderStream = EventStream;

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn watch_order(&self, request: Request<WatchOrderRequest>) -> Result<Response<EventStream>, Status> {
        let order_id = validation::order_id("order_id", &request.get_ref().order_id)?;
        let after = validation::event_id("after_event_id", &request.get_ref().after_event_id)?;
        let permit = self
            .watchers
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("too many watch streams on this replica; retry later"))?;
        let store = self.orchestrator.store().clone();
        // NOT_FOUND now rather than an empty stream. The saga and the first replay
        // come in one round trip.
        let start = start_watch(&store, &self.notifier, &order_id, after.as_deref())
            .await
            .map_err(OrchestratorError::from)?
            .ok_or_else(|| Status::not_found(format!("no order {order_id}")))?;
        let recheck = self.watch_recheck;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<SagaEvent, Status>>(64);
        let shutdown = self.shutdown.clone();
        let producer = async move {
            let _permit = permit;
            let result = tokio::select! {
                result = stream_events(&store, recheck, &order_id, after, start, &tx) => result,
                _ = shutdown.cancelled() => {
                    Err(Status::unavailable("order_service is shutting down; resume the watch with after_event_id"))
                }
            };
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
        };
        // The producer runs inside the response stream, polled by the stream's own
        // task rather than spawned: one task and one cross-task wake-up less per
        // notice, and a client that goes away drops it (and its registration).
        // Polling the producer first lets what it just sent go out in the same poll.
        let producer = producer.into_stream().filter_map(|()| std::future::ready(None));
        let events = tokio_stream::wrappers::ReceiverStream::new(rx);
        let stream = futures::stream::select_with_strategy(producer, events, |_: &mut ()| PollNext::Left);
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_orders(&self, request: Request<ListOrdersRequest>) -> Result<Response<ListOrdersResponse>, Status> {
        let request = request.into_inner();
        let mut v = Violations::default();
        if request.page_size as usize > PAGE_SIZE_MAX {
            v.add("page_size", format!("at most {PAGE_SIZE_MAX}"));
        }
        let label = match api::OrderState::try_from(request.state) {
            Ok(api::OrderState::Unspecified) => None,
            Ok(state) => Some(state.as_str_name().trim_start_matches("ORDER_STATE_").to_owned()),
            Err(_) => {
                v.add("state", "unknown order state");
                None
            }
        };
        v.into_result()?;
        let page_size = if request.page_size == 0 { PAGE_SIZE_DEFAULT } else { request.page_size as usize };
        let store = self.orchestrator.store();
        let (ids, next_page_token) = if request.stuck_for_seconds > 0 {
            let offset: usize = if request.page_token.is_empty() {
                0
            } else {
                request
                    .page_token
                    .parse()
                    .map_err(|_| Status::invalid_argument("page_token: not a token of this listing"))?
            };
            let before = messaging::now_millis() - i64::from(request.stuck_for_seconds) * 1000;
            let ids = store.stuck(before, offset, page_size + 1).await.map_err(OrchestratorError::from)?;
            let next = if ids.len() > page_size { (offset + page_size).to_string() } else { String::new() };
            (ids.into_iter().take(page_size).collect::<Vec<_>>(), next)
        } else {
            let after = if request.page_token.is_empty() {
                None
            } else {
                Some(validation::order_id("page_token", &request.page_token)?)
            };
            let ids =
                store.list(label.as_deref(), after.as_deref(), page_size + 1).await.map_err(OrchestratorError::from)?;
            let next = if ids.len() > page_size { ids[page_size - 1].clone() } else { String::new() };
            (ids.into_iter().take(page_size).collect::<Vec<_>>(), next)
        };
        let mut orders = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(saga) = store.load::<OrderData>(&id).await.map_err(OrchestratorError::from)? {
                let order = self.order(&saga);
                if label.as_deref().is_none_or(|l| order_label(saga.status) == l) {
                    orders.push(order);
                }
            }
        }
        Ok(Response::new(ListOrdersResponse { orders, next_page_token }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        let request = request.into_inner();
        let order_id = validation::order_id("order_id", &request.order_id)?;
        let mut v = Violations::default();
        if request.reason.len() > MAX_REASON_LENGTH {
            v.add("reason", format!("at most {MAX_REASON_LENGTH} characters"));
        }
        v.into_result()?;
        let reason = if request.reason.trim().is_empty() { "cancelled by an operator" } else { request.reason.trim() };
        let saga = self.orchestrator.cancel(&order_id, reason).await?;
        tracing::info!(order_id, reason, "saga cancelled by an operator");
        Ok(Response::new(CancelOrderResponse { order: Some(self.order(&saga)) }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn retry_saga(&self, request: Request<RetrySagaRequest>) -> Result<Response<RetrySagaResponse>, Status> {
        let order_id = validation::order_id("order_id", &request.get_ref().order_id)?;
        let saga = self.orchestrator.retry(&order_id).await?;
        tracing::info!(order_id, "parked saga retried by an operator");
        Ok(Response::new(RetrySagaResponse { order: Some(self.order(&saga)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, step: &str, status: &str, label: &str) -> StoredEvent {
        let fields = [("kind", kind), ("step", step), ("attempt", "2"), ("status", status), ("label", label)];
        StoredEvent { id: "7-1".into(), fields: fields.iter().map(|(f, v)| ((*f).into(), (*v).to_owned())).collect() }
    }

    #[test]
    fn a_stored_event_becomes_the_api_event_of_its_names() {
        let (message, terminal) =
            saga_event("o-1", &event("COMMAND_SENT", "AUTHORIZE_CARD", "RUNNING", "APPROVAL_PENDING"));
        assert_eq!(message.r#type, api::SagaEventType::CommandSent as i32);
        assert_eq!(message.step, api::SagaStep::AuthorizeCard as i32);
        assert_eq!(message.saga_status, api::SagaStatus::Running as i32);
        assert_eq!(message.order_state, api::OrderState::ApprovalPending as i32);
        assert_eq!((message.attempt, message.event_id.as_str(), terminal), (2, "7-1", false));
        let (approved, terminal) = saga_event("o-1", &event("SAGA_APPROVED", "APPROVE_ORDER", "APPROVED", "APPROVED"));
        assert_eq!((approved.r#type, terminal), (api::SagaEventType::OrderApproved as i32, true));
    }

    #[test]
    fn unknown_or_overlong_names_are_unspecified() {
        assert_eq!(step_enum("NO_SUCH_STEP"), api::SagaStep::Unspecified as i32);
        assert_eq!(status_enum(&"X".repeat(100)), api::SagaStatus::Unspecified as i32);
        assert_eq!(by_name("SAGA_STEP_", "", api::SagaStep::from_str_name), None);
    }
}
