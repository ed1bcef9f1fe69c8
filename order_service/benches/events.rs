//! Criterion benchmarks of a watch's read path, per saga event: a notice of a
//! reply's save (two events) parsed; one stream entry read from the bytes of an
//! `XRANGE` reply, redis-rs' parse included (the current format, one JSON value
//! per event, and the format before it, eight field/value pairs); and an event
//! turned into the API's `SagaEvent`. These run for every event of every watched
//! saga; docs/performance.md (eighth session) has why events are one value.
//!
//! Run with `cargo bench -p order_service --bench events`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use order_service::api::saga_event;
use saga::store::{EventsNotice, StoredEvent};

const ORDER_ID: &str = "0190b5c2-6c4e-7a1b-8f00-000000000001";

/// What the save script publishes after a CreateTicket reply: the step's success
/// and the next command.
const NOTICE: &str = r#"0190b5c2-6c4e-7a1b-8f00-000000000001
{"prev":"1700000000000-1","ids":["1700000000050-0","1700000000050-1"],"events":[{"kind":"STEP_SUCCEEDED","step":"CREATE_TICKET","attempt":1,"status":"RUNNING","label":"APPROVAL_PENDING","at":1700000000050},{"kind":"COMMAND_SENT","step":"AUTHORIZE_CARD","attempt":1,"status":"RUNNING","label":"APPROVAL_PENDING","at":1700000000050}]}"#;

const ENTRY_JSON: &str = r#"{"kind":"STEP_SUCCEEDED","step":"CREATE_TICKET","attempt":1,"status":"RUNNING","label":"APPROVAL_PENDING","at":1700000000050}"#;

/// The same event as the format before stored it: all eight fields, in order.
const ENTRY_PAIRS: [&str; 16] = [
    "kind",
    "STEP_SUCCEEDED",
    "step",
    "CREATE_TICKET",
    "attempt",
    "1",
    "code",
    "",
    "message",
    "",
    "status",
    "RUNNING",
    "label",
    "APPROVAL_PENDING",
    "at",
    "1700000000050",
];

fn events(c: &mut Criterion) {
    let parse_notice = || {
        let (order_id, json) = EventsNotice::split(NOTICE);
        (order_id, json.map(EventsNotice::parse))
    };
    // One entry of an `XRANGE` reply, as Redis sends it, in either format.
    let resp = |fields: &[&str]| {
        let mut bytes = format!("*1\r\n*2\r\n$15\r\n1700000000050-0\r\n*{}\r\n", fields.len());
        for field in fields {
            bytes.push_str(&format!("${}\r\n{field}\r\n", field.len()));
        }
        bytes.into_bytes()
    };
    let (json_reply, pairs_reply) = (resp(&["event", ENTRY_JSON]), resp(&ENTRY_PAIRS));
    let read = |reply: &[u8]| -> Vec<StoredEvent> {
        let value = redis::parse_redis_value(reply).expect("a valid reply");
        let entries: Vec<(String, Vec<String>)> = redis::from_redis_value(value).expect("stream entries");
        entries.into_iter().map(|(id, flat)| StoredEvent::from_entry(id, flat)).collect()
    };
    let (_, Some(Ok(notice))) = parse_notice() else { panic!("the notice parses") };
    let from_json = read(&json_reply).remove(0);
    assert_eq!(from_json.field("kind"), "STEP_SUCCEEDED");
    assert_eq!(from_json.field("at"), read(&pairs_reply)[0].field("at"));
    assert_eq!(notice.events[0].fields, from_json.fields, "a notice's event and a stream entry read alike");

    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_notice_of_two_events", |b| b.iter(|| black_box(parse_notice())));
    group.bench_function("read_entry_one_json_value", |b| b.iter(|| black_box(read(black_box(&json_reply)))));
    group.bench_function("read_entry_field_value_pairs", |b| b.iter(|| black_box(read(black_box(&pairs_reply)))));
    group.bench_function("to_saga_event", |b| b.iter(|| black_box(saga_event(ORDER_ID, black_box(&from_json)))));
    group.finish();
}

criterion_group!(benches, events);
criterion_main!(benches);
