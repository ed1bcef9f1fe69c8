//! The life cycle every service shares. `start` binds the gRPC port first (so a
//! test can ask for port 0 and learn the real one), then starts consumers and the
//! gRPC server; health says `SERVING` only while every consumer is registered with
//! the broker, so Kubernetes and the tests wait for a service that can really work.
//!
//! Shutdown order: health goes `NOT_SERVING`, consumers stop taking deliveries and
//! finish the ones in flight, the gRPC server drains, the AMQP connection closes.

use std::{net::SocketAddr, sync::Arc};

use messaging::{
    Broker, BrokerSettings, MessageHandler, Publisher, QueueSpec,
    consumer::{ConsumerSettings, run_consumer},
    participant::{CommandHandler, ParticipantLoop},
    topology,
};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::settings::{CommonSettings, QueueType};

/// A service failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot bind the gRPC address {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("Redis: {0}")]
    Store(#[from] crate::store::StoreConnectError),
    #[error("a service task panicked: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("shutdown did not finish within {0:?}")]
    DrainTimeout(std::time::Duration),
    #[error("the messaging contract of the protos: {0}")]
    Contract(#[from] proto::contract::ContractError),
    #[error("the AsyncAPI document: {0}")]
    AsyncApi(#[from] asyncapi::Error),
}

/// The broker settings of a service, from its common settings.
pub fn broker_settings(settings: &CommonSettings, service_name: &str) -> BrokerSettings {
    BrokerSettings {
        url: settings.amqp_url.expose().to_owned(),
        // Shown by `rabbitmqctl list_connections client_properties` and the
        // management UI: which service, namespace and process a connection is.
        connection_name: format!(
            "{service_name} ns={} pid={} host={}",
            settings.namespace.prefix(),
            std::process::id(),
            hostname()
        ),
        queue_type: match settings.queue_type {
            QueueType::Classic => topology::QueueType::Classic,
            QueueType::Quorum => topology::QueueType::Quorum,
        },
        queue_expires: settings.queue_expires,
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A consumer a service runs: a queue and the handler of its messages.
pub struct ConsumerSpec {
    pub queue: QueueSpec,
    pub handler: Arc<dyn MessageHandler>,
}

/// Everything a service runs besides its consumers: its gRPC routes, and any
/// background task (the orchestrator's deadline sweeper), which must end when the
/// shutdown token is cancelled.
pub struct ServiceParts {
    pub name: &'static str,
    /// The gRPC service name reported by health next to `""`.
    pub grpc_service_name: &'static str,
    pub routes: Routes,
    pub consumers: Vec<ConsumerSpec>,
    pub background: Vec<JoinHandle<()>>,
    /// The service's own pages on its HTTP port, served next to the operators'
    /// endpoints (an empty router when it has none).
    pub http: axum::Router,
}

/// A started service.
pub struct RunningService {
    /// The address the gRPC server listens on (the real port when 0 was asked for).
    pub grpc_addr: SocketAddr,
    /// The address of the operators' HTTP port (`/metrics`, `/healthz`, `/readyz`).
    pub http_addr: SocketAddr,
    task: JoinHandle<Result<(), ServiceError>>,
}

impl RunningService {
    /// Waits until the service has shut down (its token was cancelled).
    pub async fn wait(self) -> Result<(), ServiceError> {
        self.task.await?
    }

    /// Waits until the service has shut down, but once `shutdown` is cancelled no
    /// longer than `drain`: a process must exit within its orchestrator's grace
    /// period (Kubernetes sends SIGKILL after 30 s by default), and whatever was not
    /// acknowledged by then is redelivered anyway.
    pub async fn wait_at_most(
        self,
        shutdown: &CancellationToken,
        drain: std::time::Duration,
    ) -> Result<(), ServiceError> {
        let task = self.task;
        tokio::pin!(task);
        tokio::select! {
            result = &mut task => return result?,
            _ = shutdown.cancelled() => {}
        }
        match tokio::time::timeout(drain, &mut task).await {
            Ok(result) => result?,
            Err(_) => {
                tracing::warn!(drain_secs = drain.as_secs(), "shutdown did not finish in time; exiting anyway");
                task.abort();
                Err(ServiceError::DrainTimeout(drain))
            }
        }
    }
}

/// How long a binary drains after SIGTERM before it exits anyway; below
/// Kubernetes' default grace period of 30 s.
pub const DRAIN_CAP: std::time::Duration = std::time::Duration::from_secs(20);

/// The bound ports of a service.
pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    pub http: tokio::net::TcpListener,
}

/// Installs the process's metrics recorder and binds the gRPC and HTTP ports
/// first, so a failure to bind is reported before anything connects, and port 0
/// (tests) is resolved before the service starts.
pub async fn bind(settings: &CommonSettings) -> Result<Listeners, ServiceError> {
    // The metrics recorder first: a handle made before it is installed (the
    // participant loop's and the consumers' counters are made once, at start)
    // would count into nothing for the life of the process.
    let _ = crate::http::metrics_handle();
    let grpc = crate::grpc::bind(settings.grpc_addr)
        .await
        .map_err(|source| ServiceError::Bind { addr: settings.grpc_addr, source })?;
    let http = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .map_err(|source| ServiceError::Bind { addr: settings.http_addr, source })?;
    Ok(Listeners { grpc, http })
}

/// Starts consumers, background tasks and the gRPC server of a service. The HTTP
/// port serves, besides the operators' endpoints and `parts.http`, the service's
/// AsyncAPI document (`/asyncapi.yaml`, `/asyncapi.json`, the page `/asyncapi`),
/// generated here once from the proto contract for `parts.name`.
pub async fn start(
    listeners: Listeners,
    settings: &CommonSettings,
    broker: Broker,
    publisher: Publisher,
    parts: ServiceParts,
    shutdown: CancellationToken,
) -> Result<RunningService, ServiceError> {
    let Listeners { grpc: listener, http } = listeners;
    let grpc_addr = listener.local_addr().map_err(|source| ServiceError::Bind { addr: settings.grpc_addr, source })?;
    let http_addr = http.local_addr().map_err(|source| ServiceError::Bind { addr: settings.http_addr, source })?;
    // Before anything is spawned: a contract that cannot be documented is a start-up error.
    let asyncapi = crate::http::asyncapi_routes(parts.name)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    crate::grpc::set_health(&health, parts.grpc_service_name, false).await;
    // Liveness is separate from readiness: a broker outage makes the service not
    // ready, but restarting it would not help, so Kubernetes' liveness probe asks
    // for this name, which is SERVING for as long as the process answers.
    health.set_service_status(crate::grpc::LIVENESS_SERVICE, tonic_health::ServingStatus::Serving).await;

    // Stop consumers only after the gRPC server is told to stop, but independently
    // of it: a consumer's drain must not wait for streaming RPCs.
    let consumers_token = shutdown.child_token();
    let mut readiness = Vec::new();
    let mut consumer_tasks = Vec::new();
    for spec in parts.consumers {
        let (ready_tx, ready_rx) = watch::channel(false);
        readiness.push(ready_rx);
        let consumer_settings =
            ConsumerSettings { ack_delay: settings.ack_delay, ..ConsumerSettings::new(spec.queue, settings.prefetch) };
        consumer_tasks.push(tokio::spawn(run_consumer(
            broker.clone(),
            publisher.clone(),
            consumer_settings,
            spec.handler,
            ready_tx,
            consumers_token.clone(),
        )));
    }
    let (ready_tx, ready_rx) = watch::channel(false);
    let health_task =
        tokio::spawn(report_health(health.clone(), parts.grpc_service_name, readiness, ready_tx, shutdown.clone()));
    let http_shutdown = shutdown.clone();
    let pages = parts.http.merge(asyncapi);
    let http_task = tokio::spawn(async move {
        if let Err(error) = crate::http::serve(http, ready_rx, pages, http_shutdown).await {
            tracing::error!(%error, "the operators' HTTP port failed");
        }
    });

    let routes = parts
        .routes
        .add_service(health_service)
        .add_service(crate::grpc::reflection_v1(parts.grpc_service_name)?)
        .add_service(crate::grpc::reflection_v1alpha(parts.grpc_service_name)?);
    let server_shutdown = shutdown.clone();
    let name = parts.name;
    let background = parts.background;
    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_routes(routes)
            // TCP_NODELAY: without it, Nagle's algorithm meets the client's delayed
            // ACKs and every small gRPC reply (a WatchOrder event) waits ~40 ms.
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                server_shutdown.cancelled_owned(),
            )
            .await;
        consumers_token.cancel();
        for task in consumer_tasks {
            let _ = task.await;
        }
        for task in background {
            let _ = task.await;
        }
        health_task.abort();
        let _ = http_task.await;
        publisher.close().await;
        broker.close().await;
        tracing::info!(service = name, "stopped");
        served.map_err(ServiceError::from)
    });
    tracing::info!(service = name, %grpc_addr, %http_addr, "gRPC and HTTP servers listening");
    Ok(RunningService { grpc_addr, http_addr, task })
}

async fn report_health(
    health: tonic_health::server::HealthReporter,
    service_name: &'static str,
    mut readiness: Vec<watch::Receiver<bool>>,
    ready_tx: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut last = None;
    loop {
        let ready = !shutdown.is_cancelled() && readiness.iter().all(|r| *r.borrow());
        if last != Some(ready) {
            ready_tx.send_replace(ready);
            crate::grpc::set_health(&health, service_name, ready).await;
            tracing::info!(service = service_name, serving = ready, "health");
            last = Some(ready);
        }
        let changes = any_changed(&mut readiness);
        tokio::select! {
            _ = changes => {}
            _ = shutdown.cancelled() => {
                ready_tx.send_replace(false);
                crate::grpc::set_health(&health, service_name, false).await;
                return;
            }
        }
    }
}

/// Resolves when any receiver sees a change (or its sender is gone).
async fn any_changed(receivers: &mut [watch::Receiver<bool>]) {
    if receivers.is_empty() {
        return std::future::pending().await;
    }
    let futures = receivers.iter_mut().map(|r| Box::pin(r.changed()));
    let (result, _, _) = futures::future::select_all(futures).await;
    if result.is_err() {
        // A consumer task ended; nothing will change any more.
        std::future::pending::<()>().await;
    }
}

/// Runs a saga participant: its command queue (the `queue` option of the commands
/// whose `receiver` is `name`, e.g. `consumer_service.commands`, in the namespace)
/// handled by `handler`, plus its gRPC read `routes`, until `shutdown`.
pub async fn start_participant<H: CommandHandler>(
    settings: &CommonSettings,
    name: &'static str,
    grpc_service_name: &'static str,
    handler: H,
    routes: Routes,
    shutdown: CancellationToken,
) -> Result<RunningService, ServiceError> {
    let queue = QueueSpec::new(settings.namespace.queue(proto::contract::contract()?.command_queue(name)?));
    let listeners = bind(settings).await?;
    let broker = Broker::new(broker_settings(settings, name));
    let publisher = Publisher::new(broker.clone(), Vec::new());
    let handler: Arc<dyn MessageHandler> = Arc::new(ParticipantLoop::new(handler, publisher.clone(), name));
    let parts = ServiceParts {
        name,
        grpc_service_name,
        routes,
        consumers: vec![ConsumerSpec { queue, handler }],
        background: Vec::new(),
        http: axum::Router::new(),
    };
    start(listeners, settings, broker, publisher, parts, shutdown).await
}
