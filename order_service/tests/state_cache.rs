//! The in-memory state cache never decides on stale state: two orchestrator
//! replicas share one Redis namespace, and each one's cache falls behind when the
//! other moves a saga. A duplicate reply decided on a stale cached state loses the
//! compare-and-set and is ignored on the stored state; a reply the stale cached
//! state does not await is checked against the stored state and applied, not
//! dropped.

use messaging::{Publisher, topology::QueueSpec};
use order_service::{
    create_order_saga::{self as cos, OrderData, OrderDomain, Queues, ReplyPayload, SagaPolicy},
    orchestrator::{Applied, Orchestrator},
};
use prost::Name;
use proto::{consumer::v1::VerifyConsumerReply, restaurant::v1::CreateTicketReply};
use saga::Outcome;
use test_support::TestEnv;

fn replica(env: &TestEnv, queues: &Queues) -> Orchestrator {
    let declare = [&queues.consumer, &queues.restaurant, &queues.accounting, &queues.replies]
        .into_iter()
        .map(|q| QueueSpec::new(q.clone()))
        .collect();
    Orchestrator::new(
        cos::definition(SagaPolicy::default()).expect("definition"),
        OrderDomain { max_total_minor: 50_000 },
        env.redis.clone(),
        env.namespace.key_prefix("order"),
        Publisher::new(env.broker.clone(), declare),
        queues.clone(),
        64,
        None,
    )
}

fn awaited(saga: &order_service::orchestrator::OrderSaga) -> String {
    saga.pending.as_ref().expect("a command is awaited").message_id.clone()
}

#[tokio::test]
async fn a_replica_with_a_stale_cached_state_neither_applies_twice_nor_drops_a_reply() {
    let env = TestEnv::new("order-cache").await.expect("env");
    for queue in [cos::CONSUMER_QUEUE, cos::RESTAURANT_QUEUE, cos::ACCOUNTING_QUEUE, cos::REPLY_QUEUE] {
        env.track_queue(queue);
    }
    let queues = Queues::new(&env.namespace);
    let (a, b) = (replica(&env, &queues), replica(&env, &queues));
    let data = OrderData::new(1, 1, vec![cos::Item { menu_item_id: "naan".into(), quantity: 1 }], None);
    // Replica A creates the saga and caches it, awaiting VerifyConsumer.
    let (created, _) = a.create(data).await.expect("create");
    let id = created.saga_id.clone();
    let verify = awaited(&created);

    // Replica B applies the VerifyConsumer reply: A's cached state is now behind.
    let verified = Outcome::Success(ReplyPayload::ConsumerVerified);
    let applied = b.on_reply(&id, &verify, &VerifyConsumerReply::full_name(), verified.clone()).await.expect("b");
    let Applied::Changed(after_verify) = applied else { panic!("B applies the reply: {applied:?}") };
    let create_ticket = awaited(&after_verify);

    // A sees the CreateTicket reply. Its cached state still awaits VerifyConsumer,
    // so it would ignore it; the stored state awaits it, so it must be applied.
    let ticket = Outcome::Success(ReplyPayload::TicketCreated { ticket_id: 7, total_minor: 1_000 });
    let applied = a.on_reply(&id, &create_ticket, &CreateTicketReply::full_name(), ticket).await.expect("a");
    let Applied::Changed(after_ticket) = applied else { panic!("the reply must not be dropped: {applied:?}") };
    assert_eq!(after_ticket.version, after_verify.version + 1);
    assert_eq!(after_ticket.data.ticket_id, Some(7));

    // B (cached at the VerifyConsumer state) gets the VerifyConsumer reply again: a
    // duplicate on the stored state, so nothing changes.
    let applied = b.on_reply(&id, &verify, &VerifyConsumerReply::full_name(), verified).await.expect("dup");
    assert!(matches!(applied, Applied::Ignored(_)), "a duplicate is ignored: {applied:?}");
    let stored = a.store().load::<OrderData>(&id).await.expect("load").expect("stored");
    assert_eq!(stored.version, after_ticket.version, "the duplicate changed nothing");
    assert_eq!(stored.data.ticket_id, Some(7));
    env.cleanup().await;
}
