//! Criterion benchmarks of a command's and a reply's codec path, as the
//! orchestrator runs it per step: the CreateTicket command built and protobuf
//! encoded (`create_order_saga::command`), its envelope turned into AMQP
//! properties (`Envelope::to_properties`), and a CreateTicket reply read back
//! (`Envelope::from_properties` plus `create_order_saga::decode_reply`).
//!
//! Run with `cargo bench -p order_service --bench codec`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use messaging::Envelope;
use order_service::create_order_saga::{self, CREATE_TICKET, Item, OrderData, Queues, SagaPolicy, decode_reply};
use prost::{Message, Name};
use proto::{common::v1::Money, restaurant::v1 as restaurant};
use saga::{CommandRef, Phase};
use service_kit::Namespace;

const ORDER_ID: &str = "0190b5c2-6c4e-7a1b-8f00-000000000001";
const NOW_MS: i64 = 1_700_000_000_000;

fn order() -> OrderData {
    OrderData::new(1, 1, vec![Item { menu_item_id: "chicken-vindaloo".into(), quantity: 2 }], None)
}

fn codec(c: &mut Criterion) {
    let definition = create_order_saga::definition(SagaPolicy::default()).expect("the saga's definition is valid");
    let queues = Queues::new(&Namespace::default());
    let data = order();
    let cmd = CommandRef {
        step: CREATE_TICKET,
        phase: Phase::Action,
        message_id: format!("{ORDER_ID}.create_ticket.action.0"),
        attempt: 1,
        deadline_ms: NOW_MS + 3000,
    };
    let traceparent = Some("00-0190b5c26c4e7a1b8f00000000000001-00f067aa0ba902b7-01".to_owned());

    // The reply as a participant would send it.
    let reply = restaurant::CreateTicketReply {
        outcome: Some(restaurant::create_ticket_reply::Outcome::Success(restaurant::TicketCreated {
            ticket_id: 7,
            total: Some(Money::usd(2590)),
        })),
    };
    let reply_payload = reply.encode_to_vec();
    let reply_properties = Envelope {
        message_id: "0190b5c2-6c4e-7a1b-8f00-0000000000ff".into(),
        correlation_id: ORDER_ID.into(),
        reply_to: None,
        type_name: restaurant::CreateTicketReply::full_name(),
        step: Some("CREATE_TICKET".into()),
        attempt: 1,
        deadline_ms: None,
        command_id: Some(cmd.message_id.clone()),
        traceparent: traceparent.clone(),
    }
    .to_properties(NOW_MS);

    let encode = || {
        let message = create_order_saga::command(&queues, &definition, ORDER_ID, &data, &cmd, traceparent.clone())
            .expect("CreateTicket has a command");
        let properties = message.envelope.to_properties(NOW_MS);
        (message.payload.len(), properties)
    };
    let decode = || {
        let envelope = Envelope::from_properties(&reply_properties).expect("a complete envelope");
        decode_reply(&envelope.type_name, &reply_payload).map(|outcome| (envelope.command_id, outcome))
    };
    assert!(matches!(decode(), Ok((Some(_), saga::Outcome::Success(_)))));

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_create_ticket_command", |b| b.iter(|| black_box(encode())));
    group.bench_function("decode_create_ticket_reply", |b| b.iter(|| black_box(decode())));
    group.bench_function("command_and_reply", |b| b.iter(|| (black_box(encode()), black_box(decode()))));
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
