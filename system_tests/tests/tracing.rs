//! One saga is one trace: with an OpenTelemetry layer installed (here an in-memory
//! exporter; OTLP in production), the spans of the orchestrator and of the three
//! participants for one order share one trace id, the order's UUID, and each
//! participant's span is a child of the orchestrator span that sent its command.
//! The API's request spans (CreateOrder, GetOrder, WatchOrder) are traces of their
//! own; the saga's first span links to the CreateOrder request that started it.
//! Its own test binary: it installs the process's global subscriber.

use std::collections::{HashMap, HashSet};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use proto::order::v1::OrderState;
use system_tests::System;
use tracing_subscriber::{Layer, layer::SubscriberExt};

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.as_str().into_owned())
}

const API_SPANS: [&str; 3] = ["create_order", "get_order", "watch_order"];

#[tokio::test]
async fn the_spans_of_one_saga_share_one_trace_across_the_four_services() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    // The services' own exporter filter: their spans are at debug, below the
    // default RUST_LOG, and must be exported all the same.
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("system_tests"))
            .with_filter(service_kit::telemetry::trace_filter()),
    );
    tracing::subscriber::set_global_default(subscriber).expect("the first subscriber of this test binary");

    let system = System::start("e2e-trace", &[], |_| {}).await;
    let order_id = system.create(1, 1, &[("naan", 1)]).await;
    assert_eq!(system.finish(&order_id).await.1.state, OrderState::Approved as i32);
    system.stop().await;
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("spans");
    let of_order = |s: &&SpanData| attribute(s, "order_id").as_deref() == Some(order_id.as_str());
    let saga: Vec<&SpanData> =
        spans.iter().filter(of_order).filter(|s| !API_SPANS.contains(&s.name.as_ref())).collect();

    let mut by_trace: HashMap<String, Vec<String>> = HashMap::new();
    for span in &saga {
        by_trace.entry(span.span_context.trace_id().to_string()).or_default().push(span.name.to_string());
    }
    let uuid_hex: String = order_id.chars().filter(|c| *c != '-').collect();
    assert_eq!(by_trace.keys().cloned().collect::<Vec<_>>(), vec![uuid_hex], "spans by trace: {by_trace:?}");

    let services: HashSet<String> = saga.iter().filter_map(|s| attribute(s, "service")).collect();
    for service in ["order_service", "consumer_service", "restaurant_service", "accounting_service"] {
        assert!(services.contains(service), "no span of {service} in {services:?}");
    }
    // Every participant's command span is the child of an orchestrator saga span.
    let saga_spans: HashSet<String> =
        saga.iter().filter(|s| s.name == "saga").map(|s| s.span_context.span_id().to_string()).collect();
    let commands: Vec<&&SpanData> = saga.iter().filter(|s| s.name == "command").collect();
    assert_eq!(commands.len(), 4, "VerifyConsumer, CreateTicket, AuthorizeCard, ApproveTicket");
    for command in commands {
        assert!(saga_spans.contains(&command.parent_span_id.to_string()), "{:?}", attribute(command, "kind"));
    }
    // The saga's first span links to the CreateOrder request.
    let request = spans.iter().filter(of_order).find(|s| s.name == "create_order").expect("the CreateOrder span");
    let first = saga.iter().find(|s| attribute(s, "input").as_deref() == Some("create")).expect("the first saga span");
    assert!(first.links.iter().any(|l| l.span_context.span_id() == request.span_context.span_id()));
}
