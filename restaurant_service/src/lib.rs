//! restaurant_service: the FTGO participant that owns restaurants, their menus and
//! prices, and the kitchen tickets of the CreateOrderSaga.
//!
//! - [`fixtures`]: the restaurants (and the demo's fault injection), parsed from a
//!   JSON file and written to Redis at start.
//! - [`pricing`]: a ticket's line items priced against the menu; the total is what
//!   the saga then authorizes, because the restaurant owns the prices.
//! - [`handler`]: the saga commands CreateTicket, RejectTicket (its compensation)
//!   and ApproveTicket, from the queue `restaurant_service.commands`.
//! - [`store`]: the Redis key layout and the Lua scripts.
//! - [`grpc`]: the read API `ftgo.restaurant.v1.RestaurantService`.
//!
//! The one decision to know: **every command is idempotent through one Lua
//! script**. The script returns the outcome stored under the command's message id
//! if there is one; otherwise it makes the domain change and stores the outcome in
//! the same atomic step. Redelivery (a lost reply, a crash before the ack, a re-send
//! by the orchestrator) therefore gets the same reply and changes nothing, and
//! RejectTicket leaves a tombstone so a CreateTicket that arrives after it is
//! refused ("empty rollback" and "anti-suspension").
#![forbid(unsafe_code)]

pub mod fixtures;
pub mod grpc;
pub mod handler;
pub mod pricing;
pub mod store;

use std::sync::Arc;

use proto::restaurant::v1::restaurant_service_server::RestaurantServiceServer;
use service_kit::{
    participant::{self, StartError},
    runtime::{RunningService, ServiceError, start_participant},
    settings::{CommonSettings, env_bool},
};
use tokio_util::sync::CancellationToken;

use crate::{
    fixtures::{BUILTIN_FIXTURES, FixtureError, Fixtures},
    grpc::RestaurantReads,
    handler::RestaurantCommands,
    store::Store,
};

/// The service's name: its command queue is `{namespace}.restaurant_service.commands`.
pub const SERVICE_NAME: &str = "restaurant_service";
/// The base name of the command queue (without namespace), from the
/// `(ftgo.messaging.v1.saga)` option of its commands (dereferences to `&str`).
pub const COMMAND_QUEUE: &proto::contract::Queue =
    &proto::contract::Queue::of::<proto::restaurant::v1::CreateTicketCommand>();
/// The gRPC service whose health is reported.
pub const GRPC_SERVICE_NAME: &str = "ftgo.restaurant.v1.RestaurantService";
/// The gRPC port when `GRPC_ADDR` is not set.
pub const DEFAULT_GRPC_PORT: u16 = 50053;
/// The default HTTP port (metrics and probes).
pub const DEFAULT_HTTP_PORT: u16 = 8083;
/// The Redis key prefix of the service (under the namespace).
pub const KEY_PREFIX: &str = "restaurant";
/// The longest order id a command or read call may name.
pub const MAX_ORDER_ID_LEN: usize = participant::MAX_ORDER_ID_LEN;

/// Failure codes of the replies (see `restaurant.proto`). The Lua scripts spell
/// TICKET_CANCELLED, TICKET_ALREADY_ACCEPTED, TICKET_NOT_FOUND, TICKET_REJECTED and
/// KITCHEN_UNAVAILABLE themselves.
pub mod codes {
    pub const RESTAURANT_NOT_FOUND: &str = "RESTAURANT_NOT_FOUND";
    pub const MENU_ITEM_NOT_FOUND: &str = "MENU_ITEM_NOT_FOUND";
    /// Item count or quantity out of bounds (the orchestrator checks them too).
    pub const INVALID_ORDER: &str = "INVALID_ORDER";
    /// A RejectTicket for the order came first.
    pub const TICKET_CANCELLED: &str = "TICKET_CANCELLED";
    pub const TICKET_ALREADY_ACCEPTED: &str = "TICKET_ALREADY_ACCEPTED";
    pub const TICKET_NOT_FOUND: &str = "TICKET_NOT_FOUND";
    pub const TICKET_REJECTED: &str = "TICKET_REJECTED";
    /// Transient: the fault injection of "Flaky Kitchen".
    pub const KITCHEN_UNAVAILABLE: &str = "KITCHEN_UNAVAILABLE";
}

/// restaurant_service could not start.
pub type Error = StartError<FixtureError>;

/// Everything restaurant_service is configured by.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    /// The restaurants (`FIXTURES_PATH`, default: the file compiled in).
    pub fixtures: Fixtures,
    /// `RESTAURANT_FAULT_INJECTION` (default true): false ignores every
    /// restaurant's `approve_ticket_transient_failures`.
    pub fault_injection: bool,
}

impl Settings {
    /// Local defaults around `common`: the built-in fixtures, fault injection on.
    pub fn new(common: CommonSettings) -> Result<Self, Error> {
        Ok(Self { common, fixtures: Fixtures::builtin().map_err(Error::Fixtures)?, fault_injection: true })
    }

    /// Reads the common variables (gRPC port 50053 by default), `FIXTURES_PATH`
    /// and `RESTAURANT_FAULT_INJECTION`.
    pub fn from_env() -> Result<Self, Error> {
        let common = CommonSettings::from_env(DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT)?;
        let json = participant::fixture_json_from_env(BUILTIN_FIXTURES)?;
        let fixtures = Fixtures::parse(&json).map_err(Error::Fixtures)?;
        let fault_injection = env_bool("RESTAURANT_FAULT_INJECTION", true)?;
        Ok(Self { common, fixtures, fault_injection })
    }
}

/// Connects Redis, loads the fixtures, and starts consuming commands and serving
/// gRPC until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<RunningService, Error> {
    let (_client, conn) =
        service_kit::store::connect(settings.common.redis_url.expose(), &shutdown).await.map_err(ServiceError::from)?;
    let store = Store::new(conn, settings.common.namespace.key_prefix(KEY_PREFIX));
    store.load_fixtures(&settings.fixtures).await?;
    tracing::info!(
        restaurants = settings.fixtures.restaurants().len(),
        fault_injection = settings.fault_injection,
        "fixtures loaded"
    );
    let handler = RestaurantCommands::new(store.clone(), Arc::new(settings.fixtures), settings.fault_injection);
    let routes = tonic::service::Routes::new(RestaurantServiceServer::new(RestaurantReads::new(store)));
    Ok(start_participant(&settings.common, SERVICE_NAME, GRPC_SERVICE_NAME, handler, routes, shutdown).await?)
}
