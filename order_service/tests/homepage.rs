//! The scenario homepage on order_service's HTTP port, over plain HTTP/1.1: the
//! page, its JSON endpoints and the saga's server-sent events. As in
//! `orchestrator.rs`, the test plays the participant; the full saga in a browser is
//! `system_tests/tests/homepage.rs`.

use std::time::Duration;

use order_service::{Settings, create_order_saga::CONSUMER_QUEUE};
use proto::{common::v1::Failure, consumer::v1 as consumer};
use scenarios::Scenario;
use serde_json::Value;
use service_kit::{CancellationToken, runtime::RunningService};
use test_support::{HttpResponse, TestEnv, eventually, http_request, wait_serving};

const WAIT: Duration = Duration::from_secs(20);

struct App {
    shutdown: CancellationToken,
    service: RunningService,
}

impl App {
    fn http(&self) -> std::net::SocketAddr {
        self.service.http_addr
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.service.wait().await;
    }
}

async fn spawn(env: &TestEnv) -> App {
    for queue in [
        "consumer_service.commands",
        "restaurant_service.commands",
        "accounting_service.commands",
        "order_service.replies",
    ] {
        env.track_queue(queue);
    }
    let mut settings = Settings::local();
    settings.common = env.settings();
    settings.sweeper.interval = Duration::from_millis(50);
    let shutdown = CancellationToken::new();
    let service = order_service::run(settings, shutdown.clone()).await.expect("order_service starts");
    wait_serving(service.grpc_addr, WAIT).await.expect("order_service serving");
    App { shutdown, service }
}

async fn call(app: &App, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(app.http(), method, path, headers, "").await.unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

fn json(response: &HttpResponse) -> Value {
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.body))
}

/// The events of a server-sent event stream: (event name, data).
fn sse_events(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = String::from("message");
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.trim_start().to_owned());
                }
            }
            (!data.is_empty()).then(|| (name, data.join("\n")))
        })
        .collect()
}

#[tokio::test]
async fn the_page_offers_every_scenario_and_links_to_the_specs_on_the_requested_host() {
    let env = TestEnv::new("home-page").await.expect("env");
    let app = spawn(&env).await;

    let page = call(&app, "GET", "/", &[("Host", "demo.example:8081")]).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")), "{:?}", page.headers);
    for scenario in Scenario::ALL {
        assert!(page.body.contains(&format!(r#"data-scenario="{}""#, scenario.as_str())), "{scenario} button");
        assert!(page.body.contains(scenario.title()), "{scenario} title");
    }
    assert!(page.body.contains(r#"data-scenario="random""#), "random button");
    assert_eq!(page.body.matches(r#"<button type="button" class="scenario"#).count(), 6, "six scenario buttons");
    for link in [
        "http://demo.example:8081/asyncapi",
        "http://demo.example:8082/asyncapi",
        "http://demo.example:8083/asyncapi",
        "http://demo.example:8084/asyncapi",
        "http://demo.example:15672/",
    ] {
        assert!(page.body.contains(&format!(r#"href="{link}""#)), "link {link}");
    }
    // A Host header that is not a plain host name is not written into the page.
    let odd = call(&app, "GET", "/", &[("Host", "x\"><script>alert(1)</script>")]).await;
    assert_eq!(odd.status, 200);
    assert!(!odd.body.contains("<script>alert"), "the Host header was echoed");
    assert!(odd.body.contains("http://localhost:8082/asyncapi"));

    let js = call(&app, "GET", "/assets/app.js", &[]).await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").is_some_and(|t| t.starts_with("text/javascript")));
    assert!(js.body.contains("EventSource"));
    let css = call(&app, "GET", "/assets/style.css", &[]).await;
    assert_eq!(css.status, 200);
    let scenarios = json(&call(&app, "GET", "/api/scenarios", &[]).await);
    assert_eq!(scenarios.as_array().map(Vec::len), Some(Scenario::ALL.len()));
    // The operators' endpoints are still there beside the page.
    assert_eq!(call(&app, "GET", "/healthz", &[]).await.status, 200);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_json_error_and_creates_nothing() {
    let env = TestEnv::new("home-bad").await.expect("env");
    let app = spawn(&env).await;

    let unknown = call(&app, "POST", "/api/scenarios/teleport", &[]).await;
    assert_eq!(unknown.status, 400);
    let body = json(&unknown);
    assert_eq!(body["code"], "invalid_argument");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("unknown scenario \"teleport\"")), "{body}");

    // The same validation as CreateOrder: the key is bounded to 128 characters.
    let long_key = "k".repeat(200);
    let refused = call(&app, "POST", "/api/scenarios/success", &[("Idempotency-Key", &long_key)]).await;
    assert_eq!(refused.status, 400);
    assert!(json(&refused)["error"].as_str().is_some_and(|e| e.contains("idempotency_key")), "{}", refused.body);

    for path in ["/api/orders?limit=0", "/api/orders?limit=1000", "/api/orders?limit=many"] {
        let response = call(&app, "GET", path, &[]).await;
        assert_eq!(response.status, 400, "{path}");
        assert!(json(&response)["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}");
    }
    for path in ["/api/orders/not-an-id", "/api/orders/not-an-id/events"] {
        let response = call(&app, "GET", path, &[]).await;
        assert_eq!(response.status, 400, "{path}");
        assert!(json(&response)["error"].as_str().is_some_and(|e| e.contains("order_id")), "{path}");
    }
    let missing = uuid::Uuid::now_v7();
    let response = call(&app, "GET", &format!("/api/orders/{missing}/events"), &[]).await;
    assert_eq!(response.status, 404);
    assert_eq!(json(&response)["code"], "not_found");
    for (method, path) in [("GET", "/api/nope"), ("POST", "/api/orders/x/y/z")] {
        let response = call(&app, method, path, &[]).await;
        assert_eq!(response.status, 404, "{method} {path}");
        assert_eq!(json(&response)["code"], "not_found", "{method} {path}: a JSON error like the others");
    }

    let listed = json(&call(&app, "GET", "/api/orders", &[]).await);
    assert_eq!(listed["orders"].as_array().map(Vec::len), Some(0), "nothing was created");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_scenario_started_from_the_page_is_listed_and_its_events_stream_live_to_the_end() {
    let env = TestEnv::new("home-saga").await.expect("env");
    let app = spawn(&env).await;

    let started = call(&app, "POST", "/api/scenarios/consumer_rejected", &[("Idempotency-Key", "home-1")]).await;
    assert_eq!(started.status, 201, "{}", started.body);
    let started = json(&started);
    let order_id = started["order_id"].as_str().expect("order_id").to_owned();
    assert_eq!(started["scenario"], "consumer_rejected");
    assert_eq!(started["expected_state"], "REJECTED");
    assert_eq!(started["state"], "APPROVAL_PENDING");
    // CreateOrder's idempotency: the same key gives the same order.
    let again = call(&app, "POST", "/api/scenarios/consumer_rejected", &[("Idempotency-Key", "home-1")]).await;
    assert_eq!(again.status, 200);
    assert_eq!(json(&again)["order_id"].as_str(), Some(order_id.as_str()));
    assert_eq!(json(&again)["created"], false);

    let listed = json(&call(&app, "GET", "/api/orders?limit=5", &[]).await);
    assert_eq!(listed["orders"][0]["order_id"].as_str(), Some(order_id.as_str()));
    assert_eq!(listed["orders"][0]["state"], "APPROVAL_PENDING");
    assert_eq!(listed["orders"][0]["consumer_id"], 2);

    // Watch while the saga runs: the stream follows it live and ends by itself.
    let http = app.http();
    let path = format!("/api/orders/{order_id}/events");
    let watcher = tokio::spawn(async move { http_request(http, "GET", &path, &[], "").await });
    let (command, _) = env.take_command(CONSUMER_QUEUE, WAIT).await.expect("VerifyConsumer");
    assert_eq!(command.correlation_id, order_id);
    let suspended = consumer::VerifyConsumerReply {
        outcome: Some(consumer::verify_consumer_reply::Outcome::Failure(Failure::business(
            "CONSUMER_SUSPENDED",
            "Bob is suspended",
        ))),
    };
    env.reply(&command, &suspended).await.expect("reply");
    let stream = tokio::time::timeout(WAIT, watcher).await.expect("the stream ends").expect("task").expect("SSE");
    assert_eq!(stream.status, 200);
    assert!(stream.header("content-type").is_some_and(|t| t.starts_with("text/event-stream")));
    let events = sse_events(&stream.body);
    let (last, _) = events.last().expect("events");
    assert_eq!(last, "end", "the stream ends with `end`: {events:?}");
    let saga: Vec<Value> = events
        .iter()
        .filter(|(name, _)| name == "saga")
        .map(|(_, data)| serde_json::from_str(data).expect("event JSON"))
        .collect();
    let types: Vec<&str> = saga.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"SAGA_STARTED"), "{types:?}");
    assert!(types.contains(&"COMMAND_SENT") && types.contains(&"STEP_FAILED"), "{types:?}");
    let terminal = saga.last().expect("a saga event");
    assert_eq!(terminal["type"], "ORDER_REJECTED");
    assert_eq!(terminal["terminal"], true);
    assert_eq!(terminal["order_state"], "REJECTED");
    assert!(saga.iter().any(|e| e["step"] == "VERIFY_CONSUMER" && e["code"] == "CONSUMER_SUSPENDED"));

    // Resuming after the terminal event (EventSource's Last-Event-ID) sends only `end`.
    let last_id = terminal["event_id"].as_str().expect("event id");
    let resumed = call(&app, "GET", &format!("/api/orders/{order_id}/events"), &[("Last-Event-ID", last_id)]).await;
    assert_eq!(sse_events(&resumed.body), vec![("end".to_owned(), "{}".to_owned())]);

    let order = eventually(WAIT, || async {
        let order = json(&call(&app, "GET", &format!("/api/orders/{order_id}"), &[]).await);
        Ok((order["state"] == "REJECTED").then_some(order))
    })
    .await
    .expect("order rejected");
    assert_eq!(order["failed_step"], "VERIFY_CONSUMER");
    assert_eq!(order["failure_code"], "CONSUMER_SUSPENDED");
    let listed = json(&call(&app, "GET", "/api/orders", &[]).await);
    assert_eq!(listed["orders"][0]["state"], "REJECTED");

    // "random" runs one of the scenarios.
    let random = json(&call(&app, "POST", "/api/scenarios/random", &[]).await);
    let picked = random["scenario"].as_str().expect("scenario");
    assert!(Scenario::ALL.iter().any(|s| s.as_str() == picked), "{random}");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn shutdown_ends_an_open_event_stream_with_a_problem_instead_of_waiting_for_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::new("home-stop").await.expect("env");
    let app = spawn(&env).await;
    // Nobody answers VerifyConsumer (within the 3 s step timeout): the saga stays live.
    let started = json(&call(&app, "POST", "/api/scenarios/success", &[]).await);
    let order_id = started["order_id"].as_str().expect("order_id").to_owned();
    env.take_command(CONSUMER_QUEUE, WAIT).await.expect("VerifyConsumer sent");

    // Read the stream by hand until its first event has arrived: it is then open.
    let mut stream = tokio::net::TcpStream::connect(app.http()).await.expect("connect");
    let request = format!("GET /api/orders/{order_id}/events HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("event: saga") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buffer)).await.expect("an event in time").expect("read");
        assert!(n > 0, "the stream closed early: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..n]);
    }

    tokio::time::timeout(WAIT, app.stop()).await.expect("order_service stops with a stream open");
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received)).await.expect("the stream ends").expect("read");
    let text = String::from_utf8_lossy(&received);
    // No `end`: the browser's EventSource reconnects and resumes on another replica.
    assert!(text.contains("event: problem") && !text.contains("event: end"), "{text}");
    assert!(text.contains("shutting down"), "{text}");
    env.cleanup().await;
}
