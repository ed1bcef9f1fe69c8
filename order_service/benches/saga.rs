//! Criterion benchmarks of the pure saga state machine: the CreateOrderSaga's
//! definition and `OrderDomain` driven through `saga::SagaMachine` with no I/O, on
//! a full success path and on a compensation path (card declined). Throughput is
//! in transitions (start + each applied reply), so the report reads as
//! transitions per second. Also the JSON round trip of a saga's state, which
//! the orchestrator pays on every transition (load and save).
//!
//! Run with `cargo bench -p order_service --bench saga`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use order_service::create_order_saga::{self, Item, OrderData, OrderDomain, ReplyPayload, SagaPolicy};
use saga::{Clock, Outcome, SagaMachine, SagaState, StepFailure};

fn order() -> OrderData {
    OrderData::new(1, 1, vec![Item { menu_item_id: "chicken-vindaloo".into(), quantity: 2 }], None)
}

const CLOCK: Clock = Clock { now_ms: 1_700_000_000_000, jitter: 0.5 };
const SAGA_ID: &str = "0190b5c2-6c4e-7a1b-8f00-000000000001";

/// Starts a saga and feeds it `replies` in order, each answering the command the
/// previous transition sent. Returns the final state.
fn drive(machine: &SagaMachine<'_, OrderDomain>, replies: &[Outcome<ReplyPayload>]) -> SagaState<OrderData> {
    let (mut state, mut transition) = machine.start(SAGA_ID.to_owned(), order(), CLOCK);
    for reply in replies {
        let Some(command) = transition.send.take() else { break };
        match machine.on_reply(&mut state, &command.message_id, reply.clone(), CLOCK) {
            Ok(next) => transition = next,
            Err(_) => break,
        }
    }
    state
}

fn success_path() -> Vec<Outcome<ReplyPayload>> {
    vec![
        Outcome::Success(ReplyPayload::ConsumerVerified),
        Outcome::Success(ReplyPayload::TicketCreated { ticket_id: 7, total_minor: 2590 }),
        Outcome::Success(ReplyPayload::CardAuthorized { authorization_id: "auth-1".into() }),
        Outcome::Success(ReplyPayload::TicketApproved),
    ]
}

fn declined_path() -> Vec<Outcome<ReplyPayload>> {
    vec![
        Outcome::Success(ReplyPayload::ConsumerVerified),
        Outcome::Success(ReplyPayload::TicketCreated { ticket_id: 7, total_minor: 2590 }),
        Outcome::Failure(StepFailure::business("CARD_DECLINED", "25.90 exceeds the credit limit of 20.00")),
        Outcome::Success(ReplyPayload::Compensated),
    ]
}

fn machine(c: &mut Criterion) {
    let definition = create_order_saga::definition(SagaPolicy::default()).expect("the saga's definition is valid");
    let domain = OrderDomain { max_total_minor: 50_000 };
    let machine = SagaMachine::new(&definition, &domain);
    let (success, declined) = (success_path(), declined_path());
    // Check once that the paths end where they should, so the benchmark measures
    // what it claims to.
    assert_eq!(drive(&machine, &success).status, saga::SagaStatus::Approved);
    assert_eq!(drive(&machine, &declined).status, saga::SagaStatus::Rejected);

    let mut group = c.benchmark_group("saga_machine");
    // Start plus four applied replies.
    group.throughput(Throughput::Elements(5));
    group.bench_function("success_path", |b| b.iter(|| drive(&machine, black_box(&success))));
    group.bench_function("compensation_path", |b| b.iter(|| drive(&machine, black_box(&declined))));
    group.finish();

    let state = drive(&machine, &success);
    let json = serde_json::to_string(&state).expect("a saga's state serialises");
    let mut group = c.benchmark_group("saga_state_json");
    group.throughput(Throughput::Elements(1));
    group.bench_function("serialize", |b| b.iter(|| serde_json::to_string(black_box(&state))));
    group.bench_function("deserialize", |b| {
        b.iter(|| serde_json::from_str::<SagaState<OrderData>>(black_box(&json)).map(|s| s.step))
    });
    group.finish();
}

criterion_group!(benches, machine);
criterion_main!(benches);
