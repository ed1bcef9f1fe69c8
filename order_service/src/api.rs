//! `ftgo.order.v1.OrderService`: the order API over the orchestrator. This module
//! converts between the protobuf API and the saga's state, and is the one place
//! where errors become gRPC statuses.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
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
};

/// The gRPC service.
#[derive(Clone)]
pub struct OrderApi {
    pub orchestrator: Orchestrator,
    pub redis: redis::Client,
    /// Bounds concurrent watch streams: each holds a Redis connection of its own.
    pub watchers: Arc<Semaphore>,
    /// Connections of ended watch streams, for the next ones.
    pub watch_connections: WatchConnections,
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

fn step_enum(name: &str) -> i32 {
    api::SagaStep::from_str_name(&format!("SAGA_STEP_{name}")).unwrap_or(api::SagaStep::Unspecified) as i32
}

fn status_enum(name: &str) -> i32 {
    api::SagaStatus::from_str_name(&format!("SAGA_STATUS_{name}")).unwrap_or(api::SagaStatus::Unspecified) as i32
}

fn state_enum(label: &str) -> i32 {
    api::OrderState::from_str_name(&format!("ORDER_STATE_{label}")).unwrap_or(api::OrderState::Unspecified) as i32
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
        Some(k) => api::SagaEventType::from_str_name(&format!("SAGA_EVENT_TYPE_{}", k.as_str()))
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

type EventSender = tokio::sync::mpsc::Sender<Result<SagaEvent, Status>>;

const PAGE_SIZE_DEFAULT: usize = 50;
const PAGE_SIZE_MAX: usize = 500;
/// Events replayed per Redis read.
const REPLAY_BATCH: usize = 256;
/// How long one blocking read waits before checking whether the client is gone.
const WATCH_BLOCK_MS: usize = 5_000;

/// What sending a batch of events led to.
enum Sent {
    /// The client is gone.
    Closed,
    /// The batch ended with a terminal event: the stream ends unless more events
    /// follow it (a parked saga that an operator retried goes on).
    Terminal,
    More,
}

/// Sends `events`, remembering the last id in `after`.
async fn send_events(order_id: &str, events: &[StoredEvent], after: &mut Option<String>, tx: &EventSender) -> Sent {
    let mut last_terminal = false;
    for event in events {
        let (message, terminal) = saga_event(order_id, event);
        *after = Some(event.id.clone());
        last_terminal = terminal;
        if tx.send(Ok(message)).await.is_err() {
            return Sent::Closed;
        }
    }
    match (tx.is_closed(), last_terminal) {
        (true, _) => Sent::Closed,
        (false, true) => Sent::Terminal,
        (false, false) => Sent::More,
    }
}

/// Idle Redis connections of ended watch streams, reused by the next ones: a
/// watcher blocks on a connection of its own, and opening one per watched saga
/// cost more than the watch itself (docs/performance.md).
#[derive(Clone, Default)]
pub struct WatchConnections(Arc<std::sync::Mutex<Vec<redis::aio::MultiplexedConnection>>>);

/// Idle watch connections kept; more are closed when their watch ends.
const IDLE_WATCH_CONNECTIONS: usize = 64;

impl WatchConnections {
    fn take(&self) -> Option<redis::aio::MultiplexedConnection> {
        self.0.lock().ok()?.pop()
    }

    fn give_back(&self, conn: redis::aio::MultiplexedConnection) {
        if let Ok(mut idle) = self.0.lock()
            && idle.len() < IDLE_WATCH_CONNECTIONS
        {
            idle.push(conn);
        }
    }
}

/// Replays a saga's stored events after `after`, then tails the stream until a
/// terminal event that nothing follows. Any replica can serve any watcher: all of
/// it is in Redis. The blocking connection goes back to `idle` only when the watch
/// ended cleanly (not mid-read, not on an error).
async fn stream_events(
    store: &saga::store::SagaStore,
    client: &redis::Client,
    idle: &WatchConnections,
    order_id: &str,
    after: Option<String>,
    tx: &EventSender,
) -> Result<(), Status> {
    let mut conn = None;
    let result = tail_events(store, client, idle, &mut conn, order_id, after, tx).await;
    if let (Ok(()), Some(conn)) = (&result, conn) {
        idle.give_back(conn);
    }
    result
}

async fn tail_events(
    store: &saga::store::SagaStore,
    client: &redis::Client,
    idle: &WatchConnections,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    order_id: &str,
    mut after: Option<String>,
    tx: &EventSender,
) -> Result<(), Status> {
    let unavailable = |e: saga::store::StoreError| Status::unavailable(format!("event stream interrupted: {e}"));
    // After a blocking read returned events that were not terminal, the next ones
    // come from the stream too: no replay and no state check in between.
    let mut tailing = false;
    loop {
        if !tailing {
            let events = store.events_after(order_id, after.as_deref(), REPLAY_BATCH).await.map_err(unavailable)?;
            match send_events(order_id, &events, &mut after, tx).await {
                Sent::Closed => return Ok(()),
                Sent::Terminal if events.len() < REPLAY_BATCH => return Ok(()),
                _ if events.len() == REPLAY_BATCH => continue,
                _ => {}
            }
            // Caught up. A settled saga wrote its terminal event with its state: if
            // the replay did not end on one, the client resumed after it, and there
            // is nothing more to send.
            let saga = store.load::<OrderData>(order_id).await.map_err(unavailable)?;
            if saga.is_none_or(|s| !s.status.is_active()) {
                let newer = store.events_after(order_id, after.as_deref(), 1).await.map_err(unavailable)?;
                if newer.is_empty() {
                    return Ok(());
                }
                continue;
            }
        }
        // Live: block for new events on a connection of this watcher's own (a
        // blocking read would stall a shared multiplexed connection).
        if conn.is_none() {
            *conn = match idle.take() {
                Some(reused) => Some(reused),
                None => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_response_timeout(Some(std::time::Duration::from_millis(WATCH_BLOCK_MS as u64 + 5_000)));
                    Some(
                        client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await
                            .map_err(|e| Status::unavailable(format!("cannot watch: {e}")))?,
                    )
                }
            };
        }
        let Some(c) = conn.as_mut() else { continue };
        let from = after.clone().unwrap_or_else(|| "0".to_owned());
        let events = store.wait_for_events(c, order_id, &from, WATCH_BLOCK_MS).await.map_err(unavailable)?;
        tailing = false;
        match send_events(order_id, &events, &mut after, tx).await {
            Sent::Closed => return Ok(()),
            Sent::More if !events.is_empty() => tailing = true,
            // A timeout, or a terminal event: the replay step checks whether the
            // saga is still running and whether anything follows.
            Sent::Terminal | Sent::More => {}
        }
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    #[tracing::instrument(skip_all, fields(consumer_id = request.get_ref().consumer_id, order_id))]
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

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn get_order(&self, request: Request<GetOrderRequest>) -> Result<Response<GetOrderResponse>, Status> {
        let order_id = validation::order_id("order_id", &request.get_ref().order_id)?;
        let saga = self.load(&order_id).await?;
        Ok(Response::new(GetOrderResponse { order: Some(self.order(&saga)) }))
    }

    type WatchOrderStream = EventStream;

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn watch_order(&self, request: Request<WatchOrderRequest>) -> Result<Response<EventStream>, Status> {
        let order_id = validation::order_id("order_id", &request.get_ref().order_id)?;
        let after = validation::event_id("after_event_id", &request.get_ref().after_event_id)?;
        self.load(&order_id).await?;
        let permit = self
            .watchers
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("too many watch streams on this replica; retry later"))?;
        let store = self.orchestrator.store().clone();
        let client = self.redis.clone();
        let idle = self.watch_connections.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<SagaEvent, Status>>(64);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = tokio::select! {
                result = stream_events(&store, &client, &idle, &order_id, after, &tx) => result,
                _ = shutdown.cancelled() => {
                    Err(Status::unavailable("order_service is shutting down; resume the watch with after_event_id"))
                }
            };
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all)]
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

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
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

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn retry_saga(&self, request: Request<RetrySagaRequest>) -> Result<Response<RetrySagaResponse>, Status> {
        let order_id = validation::order_id("order_id", &request.get_ref().order_id)?;
        let saga = self.orchestrator.retry(&order_id).await?;
        tracing::info!(order_id, "parked saga retried by an operator");
        Ok(Response::new(RetrySagaResponse { order: Some(self.order(&saga)) }))
    }
}
