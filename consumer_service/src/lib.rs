//! consumer_service: owns FTGO's consumers and answers step 2 of the
//! CreateOrderSaga, VerifyConsumer: may this consumer place an order?
//!
//! - [`domain`]: the consumer record, the fixture file, and the verification rule
//!   (ACTIVE passes; SUSPENDED fails with `CONSUMER_SUSPENDED`; an unknown id with
//!   `CONSUMER_NOT_FOUND`).
//! - [`store`]: the Redis keys and the reads and writes over them.
//! - [`commands`]: the handler of `consumer_service.commands`.
//! - [`grpc`]: the read service `ftgo.consumer.v1.ConsumerService` (GetConsumer).
//!
//! The one decision to know: idempotency lives in Redis. Every command's outcome is
//! stored under its message id only if none is stored yet (`SET NX`, then a `GET`
//! for a duplicate; 7-day TTL; shared by the participants in
//! `service_kit::participant`) and the reply is built from the stored outcome, so a
//! redelivered or re-sent command gets the same reply and changes nothing. VerifyConsumer changes no domain state; only its
//! outcome is stored.
//!
//! Consumers come from `fixtures/consumers.json` (or `FIXTURES_PATH`), written to
//! Redis at every start: consumer 1 Alice and 3 Carol are ACTIVE, 2 Bob is
//! SUSPENDED (the "consumer rejected" demo). Commands read them through an
//! in-memory cache that keeps each record for `FIXTURE_CACHE_MS` (default 1 s).
#![forbid(unsafe_code)]

pub mod commands;
pub mod domain;
pub mod grpc;
pub mod store;

use std::time::Duration;

use proto::consumer::v1::consumer_service_server::{self, ConsumerServiceServer};
use service_kit::{
    CancellationToken,
    participant::{self, StartError},
    runtime::{RunningService, ServiceError},
    settings::CommonSettings,
};

pub use domain::{FixtureError, Fixtures};

use crate::{
    commands::ConsumerCommands,
    domain::BUILTIN_FIXTURES,
    grpc::ConsumerReads,
    store::{ConsumerStore, Keys},
};

/// The service's name: its command queue is `{namespace}.consumer_service.commands`.
pub const SERVICE_NAME: &str = "consumer_service";
/// The base name of the command queue (without namespace), from the
/// `(ftgo.messaging.v1.saga)` option of its commands (dereferences to `&str`).
pub const COMMAND_QUEUE: &proto::contract::Queue =
    &proto::contract::Queue::of::<proto::consumer::v1::VerifyConsumerCommand>();
/// The gRPC service reported by health next to `""`.
pub const GRPC_SERVICE_NAME: &str = consumer_service_server::SERVICE_NAME;
/// The gRPC port when `GRPC_ADDR` is not set.
pub const DEFAULT_GRPC_PORT: u16 = 50052;
/// The default HTTP port (metrics and probes).
pub const DEFAULT_HTTP_PORT: u16 = 8082;
/// The short name under which this service's Redis keys live.
pub const KEY_PREFIX: &str = "consumer";
/// The variable naming a fixture file to use instead of the built-in one.
pub const FIXTURES_PATH_VAR: &str = participant::FIXTURES_PATH_VAR;

/// consumer_service failed to start.
pub type Error = StartError<FixtureError>;

/// Everything consumer_service is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    /// The consumers written to Redis at start.
    pub fixtures: Fixtures,
    /// `FIXTURE_CACHE_MS`: how long a consumer read for a command is reused; zero
    /// reads Redis for every command.
    pub fixture_cache_ttl: Duration,
}

impl Settings {
    /// `common` with the built-in fixtures and the default fixture cache (what
    /// tests and embedders use).
    pub fn new(common: CommonSettings) -> Result<Self, Error> {
        Ok(Self {
            common,
            fixtures: Fixtures::builtin().map_err(Error::Fixtures)?,
            fixture_cache_ttl: participant::DEFAULT_FIXTURE_CACHE_TTL,
        })
    }

    /// The common settings (default port 50052), the fixtures from
    /// `FIXTURES_PATH` (or the built-in `fixtures/consumers.json`) and
    /// `FIXTURE_CACHE_MS`.
    pub fn from_env() -> Result<Self, Error> {
        let common = CommonSettings::from_env(DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT)?;
        let json = participant::fixture_json_from_env(BUILTIN_FIXTURES)?;
        let fixtures = Fixtures::parse(&json).map_err(Error::Fixtures)?;
        Ok(Self { common, fixtures, fixture_cache_ttl: participant::fixture_cache_ttl_from_env()? })
    }
}

/// Connects Redis, loads the fixtures and starts the command consumer and the gRPC
/// server; returns once they run. Health reports SERVING once the consumer is
/// registered with the broker.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<RunningService, Error> {
    let (_client, conn) =
        service_kit::store::connect(settings.common.redis_url.expose(), &shutdown).await.map_err(ServiceError::from)?;
    let keys = Keys::new(settings.common.namespace.key_prefix(KEY_PREFIX));
    let store = ConsumerStore::new(conn, keys, settings.fixture_cache_ttl);
    store.load_fixtures(&settings.fixtures.consumers).await?;
    tracing::info!(consumers = settings.fixtures.consumers.len(), "fixtures loaded");
    let routes = tonic::service::Routes::new(ConsumerServiceServer::new(ConsumerReads::new(store.clone())));
    let service = service_kit::runtime::start_participant(
        &settings.common,
        SERVICE_NAME,
        GRPC_SERVICE_NAME,
        ConsumerCommands::new(store),
        routes,
        shutdown,
    )
    .await?;
    Ok(service)
}
