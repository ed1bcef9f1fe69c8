//! order_service: the FTGO order API (`ftgo.order.v1.OrderService`) and the
//! orchestrator of the CreateOrderSaga.
//!
//! - [`create_order_saga`]: the saga's steps, commands and replies.
//! - [`orchestrator`]: load, decide (the pure machine of the `saga` crate), save
//!   with compare-and-set, then publish.
//! - [`replies`]: the reply queue's handler; [`sweeper`]: deadlines and recovery.
//! - [`api`], [`validation`]: the gRPC API.
//! - [`homepage`]: the scenario homepage at `/` on the HTTP port, over [`api`].
//!
//! The one decision to know: nothing lives only in memory. A saga is a Redis record
//! plus an entry in the deadline index, so any replica can take any reply or
//! deadline, and a restarted process simply carries on.
#![forbid(unsafe_code)]

pub mod api;
pub mod create_order_saga;
pub mod homepage;
pub mod metrics;
pub mod orchestrator;
pub mod replies;
pub mod sweeper;
pub mod validation;
pub mod watch;

use std::{sync::Arc, time::Duration};

use messaging::{Broker, Publisher, QueueSpec};
use proto::order::v1::order_service_server::OrderServiceServer;
use service_kit::{
    CancellationToken,
    runtime::{self, ConsumerSpec, RunningService, ServiceError, ServiceParts},
    settings::{CommonSettings, SettingsError, env_millis, env_or},
};

use crate::{
    api::OrderApi,
    create_order_saga::{OrderDomain, Queues, SagaPolicy},
    orchestrator::Orchestrator,
    replies::ReplyHandler,
    sweeper::SweeperSettings,
};

/// The default gRPC port.
pub const GRPC_PORT: u16 = 50051;
/// The default HTTP port (metrics and probes).
pub const HTTP_PORT: u16 = 8081;

/// order_service settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub saga: SagaPolicy,
    /// Orders whose total exceeds this (minor units) are rejected by the orchestrator.
    pub max_order_total_minor: i64,
    pub sweeper: SweeperSettings,
    /// Concurrent `WatchOrder` streams per replica.
    pub max_watch_streams: usize,
    /// How long a watch stream waits without a wake-up before it reads its saga
    /// again (a lost notification costs at most this much delay).
    pub watch_recheck: Duration,
    /// Running sagas whose last saved state a replica keeps in memory, so most
    /// replies need no load from Redis (0 disables; Redis stays the truth).
    pub state_cache_entries: usize,
}

impl Settings {
    /// Local-development defaults.
    pub fn local() -> Self {
        Self {
            common: CommonSettings::local(GRPC_PORT, HTTP_PORT),
            saga: SagaPolicy::default(),
            max_order_total_minor: 50_000,
            sweeper: SweeperSettings {
                interval: Duration::from_millis(200),
                lease: Duration::from_secs(5),
                batch: 256,
                concurrency: 32,
                stuck_threshold: Duration::from_secs(60),
                retention: Some(Duration::from_secs(7 * 24 * 3600)),
            },
            max_watch_streams: 4096,
            watch_recheck: Duration::from_secs(5),
            state_cache_entries: 8192,
        }
    }

    /// Reads the environment over [`Self::local`]; see README for the variables.
    pub fn from_env() -> Result<Self, SettingsError> {
        let local = Self::local();
        Ok(Self {
            common: CommonSettings::from_env(GRPC_PORT, HTTP_PORT)?,
            saga: SagaPolicy {
                step_timeout: env_millis("SAGA_STEP_TIMEOUT_MS", local.saga.step_timeout.as_millis() as u64)?,
                max_attempts: env_or("SAGA_MAX_ATTEMPTS", local.saga.max_attempts)?.max(1),
                compensation_max_attempts: env_or(
                    "SAGA_COMPENSATION_MAX_ATTEMPTS",
                    local.saga.compensation_max_attempts,
                )?
                .max(1),
                backoff_initial: env_millis("SAGA_BACKOFF_INITIAL_MS", local.saga.backoff_initial.as_millis() as u64)?,
                backoff_max: env_millis("SAGA_BACKOFF_MAX_MS", local.saga.backoff_max.as_millis() as u64)?,
            },
            max_order_total_minor: env_or("ORDER_MAX_TOTAL_MINOR", local.max_order_total_minor)?,
            sweeper: SweeperSettings {
                interval: env_millis("SAGA_SWEEP_INTERVAL_MS", local.sweeper.interval.as_millis() as u64)?,
                stuck_threshold: Duration::from_secs(env_or(
                    "SAGA_STUCK_THRESHOLD_SECS",
                    local.sweeper.stuck_threshold.as_secs(),
                )?),
                // 0 keeps finished sagas forever.
                retention: match env_or("SAGA_RETENTION_SECS", local.sweeper.retention.map_or(0, |r| r.as_secs()))? {
                    0 => None,
                    secs => Some(Duration::from_secs(secs)),
                },
                ..local.sweeper
            },
            max_watch_streams: env_or("WATCH_MAX_STREAMS", local.max_watch_streams)?,
            watch_recheck: env_millis("WATCH_RECHECK_MS", local.watch_recheck.as_millis() as u64)?,
            state_cache_entries: env_or("SAGA_STATE_CACHE_ENTRIES", local.state_cache_entries)?,
        })
    }
}

/// Why order_service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("invalid saga definition: {0}")]
    Definition(#[from] saga::DefinitionError),
    #[error("Redis: {0}")]
    Store(#[from] service_kit::store::StoreConnectError),
    #[error(transparent)]
    Notifier(#[from] watch::NotifierError),
}

/// Starts order_service: the reply consumer, the deadline sweeper and the gRPC
/// API, until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<RunningService, StartError> {
    let common = &settings.common;
    // The recorder first, so the metrics' descriptions reach it.
    service_kit::http::metrics_handle();
    metrics::describe();
    let listeners = runtime::bind(common).await?;
    let (redis_client, redis) = service_kit::store::connect(common.redis_url.expose(), &shutdown).await?;
    let queues = Queues::new(&common.namespace);
    let broker = Broker::new(runtime::broker_settings(common, "order_service"));
    // Declaring the participants' queues too means a command is kept even when it
    // is sent before its participant ever started.
    let publisher = Publisher::new(
        broker.clone(),
        [&queues.consumer, &queues.restaurant, &queues.accounting, &queues.replies]
            .into_iter()
            .map(|q| QueueSpec::new(q.clone()))
            .collect(),
    );
    let watchers = watch::WatcherMap::default();
    // A new id per process: a watcher does not outlive it, so neither may the id
    // its watches mark sagas with. 64 random bits: every watched saga's hash keeps
    // it, and two processes sharing one would only cost a watcher its notices
    // until WATCH_RECHECK_MS.
    let replica = format!("{:016x}", uuid::Uuid::new_v4().as_u64_pair().0);
    let orchestrator = Orchestrator::new(
        create_order_saga::definition(settings.saga)?,
        OrderDomain { max_total_minor: settings.max_order_total_minor },
        redis,
        common.namespace.key_prefix("order"),
        publisher.clone(),
        queues.clone(),
        settings.state_cache_entries,
        Some(watchers.local(replica)),
    );
    let channels = [Some(orchestrator.store().events_channel()), orchestrator.store().replica_events_channel()];
    let notifier =
        watch::EventNotifier::connect(&redis_client, channels.into_iter().flatten().collect(), watchers, &shutdown)
            .await?;
    let api = OrderApi {
        orchestrator: orchestrator.clone(),
        notifier,
        watchers: Arc::new(tokio::sync::Semaphore::new(settings.max_watch_streams)),
        watch_recheck: settings.watch_recheck,
        shutdown: shutdown.clone(),
    };
    let homepage = homepage::router(api.clone());
    let sweeper = tokio::spawn(sweeper::run(orchestrator.clone(), settings.sweeper, shutdown.clone()));
    let parts = ServiceParts {
        name: "order_service",
        grpc_service_name: "ftgo.order.v1.OrderService",
        routes: tonic::service::Routes::new(OrderServiceServer::new(api)),
        consumers: vec![ConsumerSpec {
            queue: QueueSpec::new(queues.replies.clone()),
            handler: Arc::new(ReplyHandler { orchestrator }),
        }],
        background: vec![sweeper],
        http: homepage,
    };
    Ok(runtime::start(listeners, common, broker, publisher, parts, shutdown).await?)
}
