//! The scenario homepage on order_service's HTTP port: `/` starts README's demo
//! scenarios with one click, lists recent orders and shows one saga's events live
//! (server-sent events), with links to the services' AsyncAPI pages and to
//! RabbitMQ's management UI. JSON endpoints live under `/api/`:
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/scenarios` | the scenarios: name, title, description, expected state |
//! | `POST /api/scenarios/{name}` | starts one (`random` picks one): `{order_id, scenario, …}` |
//! | `GET /api/orders?limit=20` | recent orders, newest first |
//! | `GET /api/orders/{id}` | one order |
//! | `GET /api/orders/{id}/events` | its saga's events as SSE (`saga` per event, then `end`) |
//!
//! The one decision to know: every endpoint calls the gRPC service implementation
//! ([`OrderApi`]) in-process, so the page creates, lists and watches orders through
//! exactly the validation, store reads and event stream of CreateOrder, ListOrders
//! and WatchOrder; this module only translates HTTP to those calls and their answers
//! to JSON. The page itself is static HTML, CSS and vanilla JS compiled into the
//! binary: no CDN, so it works on a closed network.

use std::convert::Infallible;

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        Html, IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{any, get, post},
};
use futures::{Stream, StreamExt};
use proto::order::v1::{
    self as api, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, SagaEvent, WatchOrderRequest,
    order_service_server::OrderService,
};
use rand::seq::IndexedRandom;
use scenarios::{Scenario, UnknownScenario};
use serde::{Deserialize, Serialize};
use tonic::{Code, Request};

use crate::api::OrderApi;

const INDEX_HTML: &str = include_str!("homepage/index.html");
const APP_JS: &str = include_str!("homepage/app.js");
const STYLE_CSS: &str = include_str!("homepage/style.css");

/// Orders listed when the request names no `limit`.
pub const DEFAULT_LIST_LIMIT: u32 = 20;
/// The largest `limit` of `GET /api/orders`.
pub const MAX_LIST_LIMIT: u32 = 100;
/// The scenario name that picks one of [`Scenario::ALL`] on the server.
pub const RANDOM: &str = "random";

/// The services whose AsyncAPI pages the homepage links to, on the HTTP ports that
/// `scripts/run-local.sh` and the compose file publish. order_service's own link
/// uses the address the browser reached instead, so it is right on any port.
const PARTICIPANT_PAGES: [(&str, u16); 3] =
    [("consumer_service", 8082), ("restaurant_service", 8083), ("accounting_service", 8084)];
/// RabbitMQ's management UI (compose publishes it on the same port).
const RABBITMQ_MANAGEMENT_PORT: u16 = 15672;

/// The homepage's HTTP routes over the order API; merged into the HTTP port.
pub fn router(api: OrderApi) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .route("/api/scenarios", get(list_scenarios))
        .route("/api/scenarios/{name}", post(start_scenario))
        .route("/api/orders", get(list_orders))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/orders/{id}/events", get(watch_order))
        .route("/api/{*rest}", any(no_such_endpoint))
        .with_state(Homepage { api })
}

#[derive(Clone)]
struct Homepage {
    api: OrderApi,
}

/// Why a homepage request failed; answered as `{"error": …, "code": …}` with a
/// matching HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum HomepageError {
    #[error("{0}; or \"random\" for any of them")]
    UnknownScenario(#[from] UnknownScenario),
    #[error("limit: must be between 1 and {MAX_LIST_LIMIT}, got {0}")]
    Limit(u32),
    #[error("query string: {0}")]
    Query(String),
    #[error("Idempotency-Key header: {0}")]
    IdempotencyKey(&'static str),
    #[error("no endpoint {0}; see GET /api/scenarios and /api/orders")]
    NoSuchEndpoint(String),
    /// What the order API answered (its message names the bad field, if any).
    #[error("{message}")]
    Api { code: Code, message: String },
}

impl From<tonic::Status> for HomepageError {
    fn from(status: tonic::Status) -> Self {
        Self::Api { code: status.code(), message: status.message().to_owned() }
    }
}

impl From<QueryRejection> for HomepageError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Query(rejection.body_text())
    }
}

impl HomepageError {
    /// The HTTP status and a stable machine-readable code (gRPC's, in snake case).
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::UnknownScenario(_) | Self::Limit(_) | Self::Query(_) | Self::IdempotencyKey(_) => {
                (StatusCode::BAD_REQUEST, "invalid_argument")
            }
            Self::NoSuchEndpoint(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Api { code, .. } => http_status(*code),
        }
    }
}

fn http_status(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, "invalid_argument"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        Code::FailedPrecondition => (StatusCode::CONFLICT, "failed_precondition"),
        Code::Aborted | Code::AlreadyExists => (StatusCode::CONFLICT, "aborted"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// The JSON body of an error.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
    code: &'static str,
}

impl IntoResponse for HomepageError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        (status, Json(ErrorBody { error: self.to_string(), code })).into_response()
    }
}

/// Any other path under `/api/`: a JSON 404 like every other API error.
async fn no_such_endpoint(uri: axum::http::Uri) -> HomepageError {
    HomepageError::NoSuchEndpoint(uri.path().to_owned())
}

// ---- the page ----

async fn index(headers: HeaderMap) -> Html<String> {
    let host = RequestHost::of(&headers);
    let buttons: String = Scenario::ALL.iter().map(|s| scenario_button(*s)).collect();
    let random = format!(
        r#"<button type="button" class="scenario random" data-scenario="{RANDOM}" data-expected="">
  <span class="title">random</span>
  <span class="desc">One of the above, picked by the server.</span>
  <span class="expect">→ ?</span>
</button>
"#
    );
    let mut links = format!(
        r#"<a href="http://{}/asyncapi">order_service AsyncAPI</a>
"#,
        escape(&host.authority())
    );
    for (service, port) in PARTICIPANT_PAGES {
        links.push_str(&format!(
            r#"<a href="http://{}:{port}/asyncapi">{service} AsyncAPI</a>
"#,
            escape(&host.name)
        ));
    }
    links.push_str(&format!(
        r#"<a href="http://{}:{RABBITMQ_MANAGEMENT_PORT}/">RabbitMQ management</a>
<a href="/metrics">metrics</a>
"#,
        escape(&host.name)
    ));
    Html(INDEX_HTML.replace("{{SCENARIOS}}", &(buttons + &random)).replace("{{LINKS}}", &links))
}

fn scenario_button(scenario: Scenario) -> String {
    let expected = scenario.expected_state();
    format!(
        r#"<button type="button" class="scenario" data-scenario="{name}" data-expected="{expected}">
  <span class="title">{title}</span>
  <span class="desc">{desc}</span>
  <span class="expect {class}">→ {expected}</span>
</button>
"#,
        name = escape(scenario.as_str()),
        title = escape(scenario.title()),
        desc = escape(scenario.description()),
        class = expected.to_ascii_lowercase(),
    )
}

/// Escapes text for HTML content and double-quoted attributes.
fn escape(text: &str) -> String {
    html_escape::encode_safe(text).into_owned()
}

/// The host the browser reached, from the `Host` header, so links to the other
/// services' ports work beyond localhost. It is written into the page, so anything
/// but a plain host name (letters, digits, `.`, `-`, an IPv6 literal in brackets)
/// falls back to `localhost`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestHost {
    /// `example.org`, `10.0.0.5`, `[::1]`.
    name: String,
    port: Option<u16>,
}

impl RequestHost {
    fn of(headers: &HeaderMap) -> Self {
        headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .and_then(Self::parse)
            .unwrap_or_else(|| Self { name: "localhost".to_owned(), port: None })
    }

    fn parse(host: &str) -> Option<Self> {
        let host = host.trim();
        let (name, port) = if host.starts_with('[') {
            let end = host.find(']')?;
            let (name, rest) = host.split_at(end + 1);
            let valid = name[1..name.len() - 1].chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
            if !valid || name.len() < 3 {
                return None;
            }
            (name, rest.strip_prefix(':'))
        } else {
            match host.split_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            }
        };
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
        if name.is_empty() || name.len() > 253 || !(name.starts_with('[') || name.chars().all(plain)) {
            return None;
        }
        let port = match port {
            Some(port) => Some(port.parse::<u16>().ok()?),
            None => None,
        };
        Some(Self { name: name.to_owned(), port })
    }

    /// `name:port` as the browser wrote it (`name` alone without a port).
    fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.name),
            None => self.name.clone(),
        }
    }
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}

async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

// ---- the JSON API ----

/// A scenario as `GET /api/scenarios` lists it.
#[derive(Debug, Serialize)]
struct ScenarioView {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    expected_state: &'static str,
}

async fn list_scenarios() -> Json<Vec<ScenarioView>> {
    Json(
        Scenario::ALL
            .iter()
            .map(|s| ScenarioView {
                name: s.as_str(),
                title: s.title(),
                description: s.description(),
                expected_state: s.expected_state(),
            })
            .collect(),
    )
}

/// The answer to `POST /api/scenarios/{name}`.
#[derive(Debug, Serialize)]
struct Started {
    order_id: String,
    /// The scenario run (the one picked, for `random`).
    scenario: &'static str,
    title: &'static str,
    /// The order state the saga should end in.
    expected_state: &'static str,
    /// The order's state now.
    state: &'static str,
    /// False when an `Idempotency-Key` named an existing order.
    created: bool,
}

async fn start_scenario(
    State(page): State<Homepage>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Started>), HomepageError> {
    let scenario = if name.trim() == RANDOM {
        // ALL is not empty; the fallback only keeps this free of unwrap.
        *Scenario::ALL.choose(&mut rand::rng()).unwrap_or(&Scenario::Success)
    } else {
        name.parse::<Scenario>()?
    };
    let key = match headers.get("idempotency-key") {
        Some(value) => value.to_str().map_err(|_| HomepageError::IdempotencyKey("not visible ASCII text"))?.to_owned(),
        None => String::new(),
    };
    let request: CreateOrderRequest = scenario.request(key);
    let response = OrderService::create_order(&page.api, Request::new(request)).await?.into_inner();
    let status = if response.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((
        status,
        Json(Started {
            order_id: response.order_id,
            scenario: scenario.as_str(),
            title: scenario.title(),
            expected_state: scenario.expected_state(),
            state: order_state(response.state),
            created: response.created,
        }),
    ))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<u32>,
}

/// The answer to `GET /api/orders`.
#[derive(Debug, Serialize)]
struct OrderList {
    orders: Vec<OrderView>,
}

async fn list_orders(
    State(page): State<Homepage>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<OrderList>, HomepageError> {
    let limit = params?.0.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(HomepageError::Limit(limit));
    }
    let request = ListOrdersRequest { page_size: limit, ..ListOrdersRequest::default() };
    let response = OrderService::list_orders(&page.api, Request::new(request)).await?.into_inner();
    Ok(Json(OrderList { orders: response.orders.iter().map(OrderView::from).collect() }))
}

async fn get_order(State(page): State<Homepage>, Path(id): Path<String>) -> Result<Json<OrderView>, HomepageError> {
    let response = OrderService::get_order(&page.api, Request::new(GetOrderRequest { order_id: id })).await?;
    let order = response.into_inner().order.ok_or_else(|| HomepageError::Api {
        code: Code::Internal,
        message: "GetOrder answered without an order".to_owned(),
    })?;
    Ok(Json(OrderView::from(&order)))
}

/// Streams the saga's events as SSE through WatchOrder: a `saga` event per saga
/// event (its SSE id is the event id), then `end` once the saga is settled. If the
/// watch breaks (e.g. this replica shuts down), a `problem` event is sent and the
/// response ends without `end`: the browser's EventSource reconnects with
/// `Last-Event-ID`, which resumes the watch after that event.
async fn watch_order(
    State(page): State<Homepage>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HomepageError> {
    let after_event_id =
        headers.get("last-event-id").and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
    let request = WatchOrderRequest { order_id: id, after_event_id };
    let stream = OrderService::watch_order(&page.api, Request::new(request)).await?.into_inner();
    let events = futures::stream::unfold(Some(stream), |stream| async move {
        let mut stream = stream?;
        let (event, rest) = match stream.next().await {
            Some(Ok(event)) => (saga_sse(&event), Some(stream)),
            Some(Err(status)) => (problem_sse(HomepageError::from(status)), None),
            None => (Event::default().event("end").data("{}"), None),
        };
        Some((Ok(event), rest))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn saga_sse(event: &SagaEvent) -> Event {
    match serde_json::to_string(&EventView::from(event)) {
        Ok(json) => {
            let sse = Event::default().event("saga").data(json);
            // Stream ids are `<ms>-<seq>`; `id` panics on a line break, so check.
            if event.event_id.chars().all(|c| c.is_ascii_graphic()) { sse.id(&event.event_id) } else { sse }
        }
        // Plain strings and numbers always encode; this keeps the stream going anyway.
        Err(error) => problem_sse(HomepageError::Api {
            code: Code::Internal,
            message: format!("cannot encode an event: {error}"),
        }),
    }
}

fn problem_sse(error: HomepageError) -> Event {
    let (_, code) = error.status();
    let body = ErrorBody { error: error.to_string(), code };
    let data = serde_json::to_string(&body).unwrap_or_else(|_| r#"{"error":"the watch broke"}"#.to_owned());
    Event::default().event("problem").retry(std::time::Duration::from_secs(1)).data(data)
}

// ---- JSON views of the API's messages ----

fn order_state(value: i32) -> &'static str {
    api::OrderState::try_from(value)
        .map(|s| s.as_str_name().trim_start_matches("ORDER_STATE_"))
        .unwrap_or("UNSPECIFIED")
}

fn saga_status(value: i32) -> &'static str {
    api::SagaStatus::try_from(value)
        .map(|s| s.as_str_name().trim_start_matches("SAGA_STATUS_"))
        .unwrap_or("UNSPECIFIED")
}

fn saga_step(value: i32) -> &'static str {
    api::SagaStep::try_from(value).map(|s| s.as_str_name().trim_start_matches("SAGA_STEP_")).unwrap_or("UNSPECIFIED")
}

fn event_type(value: i32) -> &'static str {
    api::SagaEventType::try_from(value)
        .map(|s| s.as_str_name().trim_start_matches("SAGA_EVENT_TYPE_"))
        .unwrap_or("UNSPECIFIED")
}

fn millis(timestamp: Option<&prost_types::Timestamp>) -> Option<i64> {
    timestamp.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// A saga event as JSON: enums by name without their prefix (`STEP_SUCCEEDED`).
#[derive(Debug, Serialize)]
struct EventView<'a> {
    event_id: &'a str,
    order_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    step: &'static str,
    attempt: u32,
    code: &'a str,
    message: &'a str,
    saga_status: &'static str,
    order_state: &'static str,
    terminal: bool,
    at_ms: Option<i64>,
}

impl<'a> From<&'a SagaEvent> for EventView<'a> {
    fn from(e: &'a SagaEvent) -> Self {
        Self {
            event_id: &e.event_id,
            order_id: &e.order_id,
            kind: event_type(e.r#type),
            step: saga_step(e.step),
            attempt: e.attempt,
            code: &e.code,
            message: &e.message,
            saga_status: saga_status(e.saga_status),
            order_state: order_state(e.order_state),
            terminal: e.terminal,
            at_ms: millis(e.at.as_ref()),
        }
    }
}

#[derive(Debug, Serialize)]
struct ItemView {
    menu_item_id: String,
    quantity: i32,
}

/// An order as JSON: GetOrder's `Order`, flattened.
#[derive(Debug, Serialize)]
struct OrderView {
    order_id: String,
    state: &'static str,
    consumer_id: i64,
    restaurant_id: i64,
    items: Vec<ItemView>,
    /// Minor units, once CreateTicket priced the order.
    total_minor: Option<i64>,
    currency: Option<String>,
    ticket_id: Option<i64>,
    authorization_id: Option<String>,
    saga_status: &'static str,
    current_step: &'static str,
    compensating: bool,
    attempt: u32,
    failed_step: Option<&'static str>,
    failure_code: Option<String>,
    failure_reason: Option<String>,
    created_at_ms: Option<i64>,
    updated_at_ms: Option<i64>,
}

impl From<&api::Order> for OrderView {
    fn from(o: &api::Order) -> Self {
        let saga = o.saga.clone().unwrap_or_default();
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            order_id: o.order_id.clone(),
            state: order_state(o.state),
            consumer_id: o.consumer_id,
            restaurant_id: o.restaurant_id,
            items: o
                .items
                .iter()
                .map(|i| ItemView { menu_item_id: i.menu_item_id.clone(), quantity: i.quantity })
                .collect(),
            total_minor: o.total.as_ref().map(|m| m.amount_minor),
            currency: o.total.as_ref().map(|m| m.currency_code.clone()),
            ticket_id: (o.ticket_id > 0).then_some(o.ticket_id),
            authorization_id: non_empty(&o.authorization_id),
            saga_status: saga_status(saga.status),
            current_step: saga_step(saga.current_step),
            compensating: saga.compensating,
            attempt: saga.attempt,
            failed_step: (saga.failed_step != 0).then(|| saga_step(saga.failed_step)),
            failure_code: non_empty(&saga.failure_code),
            failure_reason: non_empty(&saga.failure_reason),
            created_at_ms: millis(o.created_at.as_ref()),
            updated_at_ms: millis(o.updated_at.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_gives_a_plain_host_name_or_localhost() {
        let parse = |h: &str| RequestHost::parse(h).map(|h| (h.name, h.port));
        assert_eq!(parse("example.org:8081"), Some(("example.org".into(), Some(8081))));
        assert_eq!(parse("10.0.0.5"), Some(("10.0.0.5".into(), None)));
        assert_eq!(parse("[::1]:8081"), Some(("[::1]".into(), Some(8081))));
        assert_eq!(parse("evil\"><script>:80"), None);
        assert_eq!(parse("host:notaport"), None);
        assert_eq!(parse(""), None);
        assert_eq!(RequestHost::of(&HeaderMap::new()).name, "localhost");
    }

    #[test]
    fn the_page_names_every_scenario_and_escapes_text() {
        for scenario in Scenario::ALL {
            assert!(scenario_button(scenario).contains(&format!(r#"data-scenario="{}""#, scenario.as_str())));
        }
        assert_eq!(escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;");
    }

    #[test]
    fn grpc_codes_become_http_statuses() {
        assert_eq!(http_status(Code::InvalidArgument).0, StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound).0, StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::Unavailable).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status(Code::Internal).0, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
