//! Runs CreateOrderSagas: every input (a new order, a reply, a deadline, an
//! operator's call) is one transition: load the saga, let the pure machine decide,
//! save with compare-and-set, and only then publish the command it decided on.
//!
//! If the save loses a race (another replica, or a reply and a deadline at once),
//! the input is decided again on the fresh state. If the publish fails after the
//! save, nothing is lost: the saga's deadline is stored, and the sweeper re-sends
//! the same command with the same message id.
//!
//! Each replica keeps the state it last saved of its running sagas in a bounded
//! cache, so a reply is usually decided without first loading the saga from Redis.
//! Redis stays the truth: a stale cached state loses the compare-and-set and the
//! input is decided again on the stored state, and an input the cached state would
//! ignore is checked against the stored state before it is dropped.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use messaging::{Publisher, envelope::now_millis};
use redis::{AsyncCommands, aio::ConnectionManager};
use saga::{
    Clock, Ignored, Outcome, SagaDefinition, SagaMachine, SagaState, SagaStatus, Transition,
    store::{LocalWatchers, SagaStore, SaveOutcome, StoreError},
};
use tracing::Instrument;

use crate::create_order_saga::{self as cos, OrderData, OrderDomain, Queues, ReplyPayload};

/// A saga as the order service stores it.
pub type OrderSaga = SagaState<OrderData>;

/// How many times one input is decided again after losing a compare-and-set race.
const MAX_CAS_ATTEMPTS: usize = 16;

/// How long an idempotency key keeps pointing at its order.
const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

/// Why an input could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("no order {0}")]
    NotFound(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("saga {0} kept changing under us; gave up after {MAX_CAS_ATTEMPTS} attempts")]
    Contention(String),
    #[error("idempotency key {0:?} was used for a different order request")]
    IdempotencyMismatch(String),
    #[error("{0}")]
    NotAllowed(String),
}

/// The result of an input.
#[derive(Debug)]
pub enum Applied {
    /// The saga moved; its new state.
    Changed(Box<OrderSaga>),
    /// Nothing to do (stale, duplicate, not due), with the reason.
    Ignored(Ignored),
}

/// The order state an index label names: what `ListOrders` filters by.
pub fn order_label(status: SagaStatus) -> &'static str {
    match status {
        SagaStatus::Approved => "APPROVED",
        SagaStatus::Rejected => "REJECTED",
        SagaStatus::Running | SagaStatus::Compensating | SagaStatus::CompensationFailed => "APPROVAL_PENDING",
    }
}

/// The span of one saga transition. Its trace is the saga's (trace id = the order
/// UUID): a child of the current span when that already belongs to the saga (a
/// reply's span), otherwise of the saga's own remote context (sweeper, API).
fn saga_span(order_id: &str, input: &'static str) -> tracing::Span {
    let span = tracing::debug_span!("saga", service = "order_service", order_id, input);
    // `traceparent` is `00-<32 hex trace id>-<span id>-<flags>`.
    let current = messaging::trace::traceparent_of(&tracing::Span::current());
    let in_saga_trace = current.as_deref().and_then(|tp| tp.get(3..35)).is_some_and(|trace| trace == hex_of(order_id));
    if !in_saga_trace {
        messaging::trace::set_parent(&span, messaging::trace::saga_context(order_id));
        // The request that caused this (CreateOrder, an operator's call) is its own
        // trace; the link lets a trace viewer walk from one to the other.
        messaging::trace::add_link(&span, &tracing::Span::current());
    }
    span
}

fn hex_of(order_id: &str) -> String {
    order_id.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_lowercase()
}

/// The orchestrator of one namespace; cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    definition: SagaDefinition,
    domain: OrderDomain,
    store: SagaStore,
    redis: ConnectionManager,
    publisher: Publisher,
    queues: Queues,
    key_prefix: String,
    /// The last saved state of running sagas, by id; `None` when disabled.
    cache: Option<Mutex<lru::LruCache<String, OrderSaga>>>,
    metrics: crate::metrics::SagaMetrics,
}

impl Orchestrator {
    /// `cache_entries`: how many running sagas' states to keep in memory (0: none).
    /// `local_watchers`: this replica's watchers, which its saves then feed
    /// directly ([`saga::store::LocalWatchers`]); `None` publishes every notice.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        definition: SagaDefinition,
        domain: OrderDomain,
        redis: ConnectionManager,
        key_prefix: String,
        publisher: Publisher,
        queues: Queues,
        cache_entries: usize,
        local_watchers: Option<LocalWatchers>,
    ) -> Self {
        let mut store = SagaStore::new(redis.clone(), key_prefix.clone());
        if let Some(local) = local_watchers {
            store = store.with_local_watchers(local);
        }
        let cache = NonZeroUsize::new(cache_entries).map(|n| Mutex::new(lru::LruCache::new(n)));
        let metrics = crate::metrics::SagaMetrics::new(&definition);
        Self {
            inner: Arc::new(Inner { definition, domain, store, redis, publisher, queues, key_prefix, cache, metrics }),
        }
    }

    /// Takes the cached state of a saga out of the cache.
    fn take_cached(&self, order_id: &str) -> Option<OrderSaga> {
        self.inner.cache.as_ref()?.lock().ok()?.pop(order_id)
    }

    /// Caches the state just saved while the saga runs; a finished or parked saga
    /// leaves the cache (its next input, if any, is rare and loads it).
    fn cache_saved(&self, state: &OrderSaga) {
        let Some(cache) = &self.inner.cache else { return };
        let Ok(mut cache) = cache.lock() else { return };
        if state.status.is_active() {
            cache.put(state.saga_id.clone(), state.clone());
        } else {
            cache.pop(&state.saga_id);
        }
    }

    pub fn store(&self) -> &SagaStore {
        &self.inner.store
    }

    pub fn definition(&self) -> &SagaDefinition {
        &self.inner.definition
    }

    fn machine(&self) -> SagaMachine<'_, OrderDomain> {
        SagaMachine::new(&self.inner.definition, &self.inner.domain)
    }

    fn clock() -> Clock {
        Clock { now_ms: now_millis(), jitter: rand::random::<f64>() }
    }

    /// Creates an order and starts its saga. With an idempotency key, a retried
    /// call returns the order the first call created (`false`: not created now);
    /// the key reused for a different request is refused.
    pub async fn create(&self, data: OrderData) -> Result<(OrderSaga, bool), OrchestratorError> {
        let mut order_id = uuid::Uuid::now_v7().to_string();
        if let Some(key) = &data.idempotency_key {
            // Keys are global, not per consumer: one key never starts two sagas.
            let idem_key = self.idempotency_key(key);
            let mut redis = self.inner.redis.clone();
            let claimed: bool = redis::cmd("SET")
                .arg(&idem_key)
                .arg(&order_id)
                .arg("NX")
                .arg("EX")
                .arg(IDEMPOTENCY_TTL_SECS)
                .query_async::<Option<String>>(&mut redis)
                .await?
                .is_some();
            if !claimed {
                let existing: Option<String> = redis.get(&idem_key).await?;
                if let Some(existing) = existing {
                    order_id = existing;
                    if let Some(saga) = self.inner.store.load::<OrderData>(&order_id).await? {
                        return Self::same_request(saga, &data).map(|s| (s, false));
                    }
                    // The first call claimed the key but died before saving its
                    // saga (or is saving it right now): create it under that id.
                }
            }
        }
        let span = saga_span(&order_id, "create");
        self.start_saga(order_id, data).instrument(span).await
    }

    fn idempotency_key(&self, key: &str) -> String {
        format!("{}idem:{}", self.inner.key_prefix, key)
    }

    async fn start_saga(&self, order_id: String, data: OrderData) -> Result<(OrderSaga, bool), OrchestratorError> {
        let (state, transition) = self.machine().start(order_id.clone(), data.clone(), Self::clock());
        // Pruning the saga after its retention deletes its idempotency key with it.
        let idem_key = data.idempotency_key.as_deref().map(|key| self.idempotency_key(key));
        match self
            .inner
            .store
            .save(
                &self.inner.definition,
                &state,
                &transition.events,
                None,
                order_label(state.status),
                idem_key.as_deref(),
            )
            .await?
        {
            SaveOutcome::Saved(version) => {
                let state = SagaState { version, ..state };
                self.cache_saved(&state);
                self.inner.metrics.record(None, &state, &transition, state.updated_at_ms);
                self.publish(&state, &transition).await;
                tracing::debug!(order_id = %state.saga_id, "order created; saga started");
                Ok((state, true))
            }
            SaveOutcome::AlreadyExists | SaveOutcome::Conflict => {
                let saga = self
                    .inner
                    .store
                    .load::<OrderData>(&order_id)
                    .await?
                    .ok_or(OrchestratorError::NotFound(order_id))?;
                Self::same_request(saga, &data).map(|s| (s, false))
            }
        }
    }

    fn same_request(saga: OrderSaga, data: &OrderData) -> Result<OrderSaga, OrchestratorError> {
        let same = saga.data.consumer_id == data.consumer_id
            && saga.data.restaurant_id == data.restaurant_id
            && saga.data.items == data.items;
        if same {
            Ok(saga)
        } else {
            Err(OrchestratorError::IdempotencyMismatch(data.idempotency_key.clone().unwrap_or_default()))
        }
    }

    /// Applies the reply to command `command_id` of saga `order_id`. A reply whose
    /// type does not answer the awaited command is ignored like a stale one.
    pub async fn on_reply(
        &self,
        order_id: &str,
        command_id: &str,
        reply_type: &str,
        outcome: Outcome<ReplyPayload>,
    ) -> Result<Applied, OrchestratorError> {
        self.transition(order_id, "reply", |machine, state, clock| {
            let expected = state
                .pending
                .as_ref()
                .filter(|p| p.message_id == command_id)
                .and_then(|p| cos::expected_reply_type(p.step, p.phase));
            if let Some(expected) = expected
                && !expected.matches(reply_type)
            {
                tracing::warn!(order_id, command_id, reply_type, %expected, "reply of the wrong type; ignored");
                return Err(Ignored::NotAwaited);
            }
            machine.on_reply(state, command_id, outcome.clone(), clock)
        })
        .await
    }

    /// The sweeper's input for a claimed saga. When nothing is due, the saga is
    /// saved unchanged so that its wake time (pushed forward by the claim's lease)
    /// is set back to the real one.
    pub async fn wake(&self, order_id: &str) -> Result<Applied, OrchestratorError> {
        let applied = self.transition(order_id, "wake", |machine, state, clock| machine.on_wake(state, clock)).await?;
        if let Applied::Ignored(_) = &applied {
            self.transition(order_id, "reindex", |_, _, _| Ok(Transition::default())).await?;
        }
        Ok(applied)
    }

    /// Operator: cancel (compensate) a running saga before its pivot.
    pub async fn cancel(&self, order_id: &str, reason: &str) -> Result<OrderSaga, OrchestratorError> {
        self.operator(order_id, "cancel", |machine, state, clock| machine.cancel(state, reason, clock)).await
    }

    /// Operator: retry the compensation of a parked saga.
    pub async fn retry(&self, order_id: &str) -> Result<OrderSaga, OrchestratorError> {
        self.operator(order_id, "retry", |machine, state, clock| machine.retry_parked(state, clock)).await
    }

    async fn operator<F>(&self, order_id: &str, input: &'static str, decide: F) -> Result<OrderSaga, OrchestratorError>
    where
        F: Fn(&SagaMachine<'_, OrderDomain>, &mut OrderSaga, Clock) -> Result<Transition, Ignored>,
    {
        match self.transition(order_id, input, decide).await? {
            Applied::Changed(state) => Ok(*state),
            Applied::Ignored(reason) => Err(OrchestratorError::NotAllowed(reason.to_string())),
        }
    }

    /// Loads, decides, saves with compare-and-set (deciding again on a lost race),
    /// then publishes the decided command.
    async fn transition<F>(&self, order_id: &str, input: &'static str, decide: F) -> Result<Applied, OrchestratorError>
    where
        F: Fn(&SagaMachine<'_, OrderDomain>, &mut OrderSaga, Clock) -> Result<Transition, Ignored>,
    {
        let span = saga_span(order_id, input);
        self.transition_in_span(order_id, decide).instrument(span).await
    }

    async fn transition_in_span<F>(&self, order_id: &str, decide: F) -> Result<Applied, OrchestratorError>
    where
        F: Fn(&SagaMachine<'_, OrderDomain>, &mut OrderSaga, Clock) -> Result<Transition, Ignored>,
    {
        let machine = self.machine();
        // Only the first attempt may use the cache: after a lost race, the stored
        // state is the one to decide on.
        let mut cached = self.take_cached(order_id);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let from_cache = cached.is_some();
            let mut state = match cached.take() {
                Some(state) => state,
                None => match self.inner.store.load::<OrderData>(order_id).await? {
                    Some(state) => state,
                    None => return Err(OrchestratorError::NotFound(order_id.to_owned())),
                },
            };
            let old_label = order_label(state.status);
            let before = state.pending.clone();
            let clock = Self::clock();
            let transition = match decide(&machine, &mut state, clock) {
                Ok(transition) => transition,
                // The cached state may be behind the stored one (another replica
                // moved the saga): decide again on the stored state before ignoring.
                Err(_) if from_cache => continue,
                Err(ignored) => return Ok(Applied::Ignored(ignored)),
            };
            let label = order_label(state.status);
            match self
                .inner
                .store
                .save(&self.inner.definition, &state, &transition.events, Some(old_label), label, None)
                .await?
            {
                SaveOutcome::Saved(version) => {
                    state.version = version;
                    self.cache_saved(&state);
                    self.inner.metrics.record(before.as_ref(), &state, &transition, clock.now_ms);
                    self.publish(&state, &transition).await;
                    for event in &transition.events {
                        tracing::debug!(
                            order_id,
                            event = event.kind.as_str(),
                            step = self.inner.definition.step_name(event.step),
                            "saga event"
                        );
                    }
                    // Per-saga lines are debug (metrics, traces and the saga's own event
                    // stream carry every saga); a parked saga needs an operator: warn.
                    if state.status == SagaStatus::CompensationFailed {
                        tracing::warn!(order_id, "saga parked: a compensation keeps failing; RetrySaga resumes it");
                    } else if !state.status.is_active() && old_label != label {
                        tracing::debug!(order_id, status = state.status.as_str(), "saga finished");
                    }
                    return Ok(Applied::Changed(Box::new(state)));
                }
                SaveOutcome::Conflict | SaveOutcome::AlreadyExists => continue,
            }
        }
        Err(OrchestratorError::Contention(order_id.to_owned()))
    }

    /// Publishes the transition's command, if any. A failure is logged, not
    /// returned: the state is saved with its deadline, so the sweeper re-sends.
    async fn publish(&self, state: &OrderSaga, transition: &Transition) {
        let Some(cmd) = &transition.send else { return };
        // The command carries the transition's span, so the participant's span is its child.
        let traceparent = messaging::trace::traceparent_of(&tracing::Span::current());
        let Some(message) =
            cos::command(&self.inner.queues, &self.inner.definition, &state.saga_id, &state.data, cmd, traceparent)
        else {
            tracing::error!(order_id = %state.saga_id, step = cmd.step, "no command defined for this step; the saga will time out");
            return;
        };
        if let Err(error) = self.inner.publisher.publish(&message).await {
            tracing::warn!(order_id = %state.saga_id, message_id = %cmd.message_id, %error, "command not confirmed; the sweeper will re-send it");
        }
    }
}
