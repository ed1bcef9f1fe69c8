//! accounting_service: owns consumers' accounts (a masked card and a credit limit)
//! and the card authorizations of orders. It answers step 4 of the
//! CreateOrderSaga, AuthorizeCard (the pivot), and its compensation
//! VoidAuthorization, which the orchestrator sends only when AuthorizeCard was
//! abandoned without an answer.
//!
//! - [`domain`]: accounts, fixtures, the checks before an authorization, outcomes.
//! - [`store`]: the Redis keys and the Lua scripts (`src/lua/*.lua`).
//! - [`commands`]: the handler of `accounting_service.commands`.
//! - [`grpc`]: the read service `ftgo.accounting.v1.AccountingService`
//!   (GetAccount, ListAuthorizations).
//!
//! The one decision to know: idempotency lives in Redis, in Lua. Each command is
//! one script that returns the outcome stored under its message id if there is
//! one, and otherwise makes its change and stores its outcome (7-day TTL) in the
//! same atomic step; the reply is built from what the script returns, so a
//! redelivered or re-sent command gets the same reply and changes nothing.
//! VoidAuthorization always leaves a tombstone for the order, and AuthorizeCard
//! refuses an order with a tombstone (`AUTHORIZATION_VOIDED`), so a late
//! AuthorizeCard cannot authorize an order whose saga has already given up on it.
//! A second AuthorizeCard for an order (another message id) returns the
//! authorization in force instead of making another one.
//!
//! Accounts come from `fixtures/accounts.json` (or `FIXTURES_PATH`), written to
//! Redis at every start; AuthorizeCard reads them through an in-memory cache that
//! keeps each record for `FIXTURE_CACHE_MS` (default 1 s). The credit limit is the
//! largest amount ONE authorization may take: the demo does not model settlement,
//! so authorizations never use up the limit and repeated demo orders keep working.
//! Consumer 3's limit is 20.00, which makes the "card declined" demo.
#![forbid(unsafe_code)]

pub mod commands;
pub mod domain;
pub mod grpc;
pub mod store;

use std::time::Duration;

use proto::accounting::v1::accounting_service_server::{self, AccountingServiceServer};
use service_kit::{
    CancellationToken,
    participant::{self, StartError},
    runtime::{RunningService, ServiceError},
    settings::CommonSettings,
};

pub use domain::{FixtureError, Fixtures};

use crate::{
    commands::AccountingCommands,
    domain::BUILTIN_FIXTURES,
    grpc::AccountingReads,
    store::{AccountingStore, Keys},
};

/// The service's name: its command queue is `{namespace}.accounting_service.commands`.
pub const SERVICE_NAME: &str = "accounting_service";
/// The base name of the command queue (without namespace), from the
/// `(ftgo.messaging.v1.saga)` option of its commands (dereferences to `&str`).
pub const COMMAND_QUEUE: &proto::contract::Queue =
    &proto::contract::Queue::of::<proto::accounting::v1::AuthorizeCardCommand>();
/// The gRPC service reported by health next to `""`.
pub const GRPC_SERVICE_NAME: &str = accounting_service_server::SERVICE_NAME;
/// The gRPC port when `GRPC_ADDR` is not set.
pub const DEFAULT_GRPC_PORT: u16 = 50054;
/// The default HTTP port (metrics and probes).
pub const DEFAULT_HTTP_PORT: u16 = 8084;
/// The short name under which this service's Redis keys live.
pub const KEY_PREFIX: &str = "accounting";
/// The variable naming a fixture file to use instead of the built-in one.
pub const FIXTURES_PATH_VAR: &str = participant::FIXTURES_PATH_VAR;

/// accounting_service failed to start.
pub type Error = StartError<FixtureError>;

/// Everything accounting_service is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    /// The accounts written to Redis at start.
    pub fixtures: Fixtures,
    /// `FIXTURE_CACHE_MS`: how long an account read for a command is reused; zero
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

    /// The common settings (default port 50054), the fixtures from
    /// `FIXTURES_PATH` (or the built-in `fixtures/accounts.json`) and
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
    let store = AccountingStore::new(conn, keys, settings.fixture_cache_ttl);
    store.load_fixtures(&settings.fixtures.accounts).await?;
    tracing::info!(accounts = settings.fixtures.accounts.len(), "fixtures loaded");
    let routes = tonic::service::Routes::new(AccountingServiceServer::new(AccountingReads::new(store.clone())));
    let service = service_kit::runtime::start_participant(
        &settings.common,
        SERVICE_NAME,
        GRPC_SERVICE_NAME,
        AccountingCommands::new(store),
        routes,
        shutdown,
    )
    .await?;
    Ok(service)
}
