//! consumer_service serves its own AsyncAPI document on its HTTP port (as every
//! service does, through `service_kit::runtime::start`): YAML, JSON and a page,
//! each with its content type, describing the queue it really consumes.
#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, time::Duration};

use consumer_service::{COMMAND_QUEUE, GRPC_SERVICE_NAME, SERVICE_NAME, Settings, run};
use service_kit::CancellationToken;
use test_support::{TestEnv, wait_service_serving};

const WAIT: Duration = Duration::from_secs(20);

/// A response: status, `content-type` and body.
struct Response {
    status: u16,
    content_type: String,
    body: String,
}

/// `GET path` over a plain HTTP/1.1 connection, keeping the headers
/// (`test_support::http_get` returns only the status and the body).
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8(raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no end of the HTTP header")?;
    let status = head.split_whitespace().nth(1).context("no status")?.parse()?;
    let content_type = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    Ok(Response { status, content_type, body: body.to_owned() })
}

#[tokio::test]
async fn the_http_port_serves_the_asyncapi_document_as_yaml_json_and_a_page() {
    let env = TestEnv::new("consumer-asyncapi").await.unwrap();
    env.track_queue(COMMAND_QUEUE);
    let shutdown = CancellationToken::new();
    let service = run(Settings::new(env.settings()).unwrap(), shutdown.clone()).await.unwrap();
    wait_service_serving(service.grpc_addr, GRPC_SERVICE_NAME, WAIT).await.unwrap();
    let http = service.http_addr;

    let json = get(http, "/asyncapi.json").await.unwrap();
    assert_eq!((json.status, json.content_type.as_str()), (200, "application/json"));
    let document: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(document["asyncapi"], "3.0.0");
    assert_eq!(document["info"]["title"], SERVICE_NAME);
    let channel = &document["channels"][COMMAND_QUEUE.name()];
    assert_eq!(channel["address"], "consumer_service.commands", "{channel}");
    assert_eq!(channel["bindings"]["amqp"]["queue"]["durable"], true);
    let receive = &document["operations"]["receive.ftgo.consumer.v1.VerifyConsumerCommand"];
    assert_eq!(receive["action"], "receive");
    assert_eq!(receive["reply"]["address"]["location"], "$message.header#/reply_to");

    let yaml = get(http, "/asyncapi.yaml").await.unwrap();
    assert_eq!((yaml.status, yaml.content_type.as_str()), (200, "application/yaml"));
    assert!(yaml.body.starts_with("asyncapi: 3.0.0\n"), "{}", &yaml.body[..80.min(yaml.body.len())]);
    assert!(yaml.body.contains("\n  consumer_service.commands:\n    address: consumer_service.commands\n"));
    assert_eq!(yaml.body, asyncapi::to_yaml(&document).unwrap(), "the YAML and the JSON are one document");

    let page = get(http, "/asyncapi").await.unwrap();
    assert_eq!((page.status, page.content_type.as_str()), (200, "text/html; charset=utf-8"));
    assert!(page.body.contains("<h1>consumer_service</h1>"));
    assert!(page.body.contains("<code>consumer_service.commands</code>"));
    assert!(page.body.contains("href=\"/asyncapi.yaml\"") && page.body.contains("href=\"/asyncapi.json\""));
    assert!(page.body.contains("Verify consumer"));

    // The operators' endpoints are still there next to it.
    assert_eq!(get(http, "/healthz").await.unwrap().status, 200);

    shutdown.cancel();
    service.wait().await.unwrap();
    env.cleanup().await;
}
