//! The demo scenarios of README, end to end: the four services in-process on the
//! real RabbitMQ and Redis, driven through the order API, with every outcome
//! checked in the order *and* in the participants' own stores (through their gRPC
//! read calls).

use std::time::Duration;

use order_service::create_order_saga::{ACCOUNTING_QUEUE, CONSUMER_QUEUE, RESTAURANT_QUEUE};
use proto::{
    accounting::v1::{AuthorizeCardCommand, AuthorizeCardReply, authorize_card_reply},
    common::v1::Money,
    order::v1::{GetOrderRequest, OrderState, SagaEvent, SagaEventType, SagaStatus, SagaStep},
    restaurant::v1::TicketState,
};
use system_tests::{Svc, System, WAIT, count, saga};
use test_support::{TestEnv, deadline_in, eventually, http_get, metric_sum};

#[tokio::test]
async fn success_approves_the_order_awaits_acceptance_and_authorizes_once() {
    let system = System::start("e2e-success", &[], |_| {}).await;
    let order_id = system.create(1, 1, &[("chicken-vindaloo", 2)]).await;
    let (events, order) = system.finish(&order_id).await;

    assert_eq!(order.state, OrderState::Approved as i32);
    assert_eq!(saga(&order).status, SagaStatus::Approved as i32);
    assert_eq!(order.total, Some(Money::usd(2590)));
    assert!(order.ticket_id > 0);
    assert!(!order.authorization_id.is_empty());
    assert_eq!(events.last().map(|e| e.r#type), Some(SagaEventType::OrderApproved as i32));
    assert_eq!(count(&events, SagaEventType::StepSucceeded), 6, "every step once");

    assert_eq!(system.ticket_state(&order_id).await, (Some(TicketState::AwaitingAcceptance), false));
    assert_eq!(system.authorizations(&order_id).await, (vec![2590], 0, false));
    system.stop().await;
}

#[tokio::test]
async fn a_suspended_or_unknown_consumer_is_rejected_before_any_ticket() {
    let system = System::start("e2e-consumer", &[], |_| {}).await;
    for (consumer_id, code) in [(2, "CONSUMER_SUSPENDED"), (99, "CONSUMER_NOT_FOUND")] {
        let order_id = system.create(consumer_id, 1, &[("naan", 1)]).await;
        let (_, order) = system.finish(&order_id).await;
        assert_eq!(order.state, OrderState::Rejected as i32);
        let saga = saga(&order);
        assert_eq!(saga.failed_step, SagaStep::VerifyConsumer as i32);
        assert_eq!(saga.failure_code, code);
        assert_eq!(system.ticket_state(&order_id).await, (None, false), "no ticket");
        assert_eq!(system.authorizations(&order_id).await, (vec![], 0, false));
    }
    system.stop().await;
}

#[tokio::test]
async fn a_declined_card_rejects_the_order_and_its_ticket() {
    let system = System::start("e2e-declined", &[], |_| {}).await;
    // Carol's card allows 20.00; this is 25.90.
    let order_id = system.create(3, 1, &[("chicken-vindaloo", 2)]).await;
    let (events, order) = system.finish(&order_id).await;
    assert_eq!(order.state, OrderState::Rejected as i32);
    let saga = saga(&order);
    assert_eq!(saga.failed_step, SagaStep::AuthorizeCard as i32);
    assert_eq!(saga.failure_code, "CARD_DECLINED");
    assert_eq!(count(&events, SagaEventType::CompensationSucceeded), 1, "RejectTicket only");
    assert_eq!(system.ticket_state(&order_id).await, (Some(TicketState::Rejected), true));
    assert_eq!(system.authorizations(&order_id).await, (vec![], 0, false));

    // Within her limit Carol's order goes through.
    let small = system.create(3, 1, &[("naan", 2)]).await;
    assert_eq!(system.finish(&small).await.1.state, OrderState::Approved as i32);
    system.stop().await;
}

#[tokio::test]
async fn the_orchestrators_own_limit_rejects_the_order_after_the_ticket_and_compensates_it() {
    let system = System::start("e2e-limit", &[], |_| {}).await;
    // 40 × 12.95 = 518.00, over the 500.00 limit of order_service.
    let order_id = system.create(1, 1, &[("chicken-vindaloo", 40)]).await;
    let (_, order) = system.finish(&order_id).await;
    assert_eq!(order.state, OrderState::Rejected as i32);
    assert_eq!(order.total, Some(Money::usd(51_800)));
    let saga = saga(&order);
    assert_eq!(saga.failure_code, "ORDER_TOTAL_LIMIT_EXCEEDED");
    assert_eq!(saga.failed_step, SagaStep::CreateTicket as i32);
    assert_eq!(system.ticket_state(&order_id).await, (Some(TicketState::Rejected), true));
    assert_eq!(system.authorizations(&order_id).await, (vec![], 0, false));
    system.stop().await;
}

#[tokio::test]
async fn the_flaky_kitchen_is_retried_until_the_order_is_approved() {
    let system = System::start("e2e-flaky", &[], |_| {}).await;
    let order_id = system.create(1, 2, &[("samosa", 2)]).await;
    let (events, order) = system.finish(&order_id).await;
    assert_eq!(order.state, OrderState::Approved as i32);
    let retries: Vec<&SagaEvent> = events
        .iter()
        .filter(|e| e.r#type == SagaEventType::RetryScheduled as i32 && e.step == SagaStep::ApproveTicket as i32)
        .collect();
    assert_eq!(retries.len(), 2, "two transient failures, two retries");
    assert!(retries.iter().all(|e| e.code == "KITCHEN_UNAVAILABLE"));
    assert_eq!(system.ticket_state(&order_id).await.0, Some(TicketState::AwaitingAcceptance));
    assert_eq!(system.authorizations(&order_id).await.0.len(), 1);
    system.stop().await;
}

#[tokio::test]
async fn a_participant_that_is_down_times_out_and_its_late_action_has_no_effect() {
    let mut system = System::start("e2e-down", &[Svc::Accounting], |s| {
        s.saga.step_timeout = Duration::from_millis(400);
        s.saga.max_attempts = 2;
        s.saga.backoff_initial = Duration::from_millis(50);
    })
    .await;
    let order_id = system.create(1, 1, &[("naan", 3)]).await;

    // AuthorizeCard is abandoned; the saga compensates, starting with VoidAuthorization,
    // which waits in accounting_service's queue.
    let orders = system.orders().await;
    eventually(WAIT, || {
        let mut orders = orders.clone();
        let order_id = order_id.clone();
        async move {
            let order = orders.get_order(GetOrderRequest { order_id }).await?.into_inner().order;
            Ok(order.and_then(|o| o.saga).filter(|s| s.status == SagaStatus::Compensating as i32 && s.compensating))
        }
    })
    .await
    .expect("the saga compensates while accounting_service is down");

    system.up(Svc::Accounting).await;
    let (_, order) = system.finish(&order_id).await;
    assert_eq!(order.state, OrderState::Rejected as i32);
    let saga = saga(&order);
    assert_eq!(saga.failed_step, SagaStep::AuthorizeCard as i32);
    assert_eq!(saga.failure_code, "TIMEOUT");
    assert_eq!(system.ticket_state(&order_id).await, (Some(TicketState::Rejected), true));
    let (in_force, _, tombstone) = system.authorizations(&order_id).await;
    assert!(in_force.is_empty(), "no authorization in force");
    assert!(tombstone, "VoidAuthorization left a tombstone");

    // A copy of AuthorizeCard arriving now (fresh id, fresh deadline) is refused.
    let late = AuthorizeCardCommand { order_id: order_id.clone(), consumer_id: 1, amount: Some(Money::usd(1050)) };
    system
        .env
        .send_command(ACCOUNTING_QUEUE, &format!("{order_id}.late"), &order_id, &late, deadline_in(10_000))
        .await
        .expect("send");
    let reply = system.env.next_reply(WAIT).await.expect("reply");
    let reply: AuthorizeCardReply = TestEnv::decode_reply(&reply).expect("AuthorizeCardReply");
    let Some(authorize_card_reply::Outcome::Failure(failure)) = reply.outcome else { panic!("late action succeeded") };
    assert_eq!(failure.code, "AUTHORIZATION_VOIDED");
    assert!(system.authorizations(&order_id).await.0.is_empty());

    // The abandoned AuthorizeCard copies expired in the broker and are visible in
    // the dead-letter queue, with the id every copy of that command shares.
    let authorize_id = format!("{order_id}.authorize_card.action.0");
    let dead = eventually(WAIT, || async {
        let dead = system.env.drain_dead_letters(ACCOUNTING_QUEUE).await?;
        Ok((!dead.is_empty()).then_some(dead))
    })
    .await
    .expect("expired commands dead-lettered");
    assert!(
        dead.iter().any(|(p, _)| p.message_id().as_ref().map(|m| m.as_str()) == Some(authorize_id.as_str())),
        "{dead:?}"
    );
    system.stop().await;
}

#[tokio::test]
async fn order_service_stopped_mid_saga_is_replaced_and_the_saga_completes() {
    let mut system = System::start("e2e-restart", &[Svc::Restaurant], |_| {}).await;
    let order_id = system.create(1, 1, &[("mango-lassi", 2)]).await;
    let orders = system.orders().await;
    eventually(WAIT, || {
        let mut orders = orders.clone();
        let order_id = order_id.clone();
        async move {
            let order = orders.get_order(GetOrderRequest { order_id }).await?.into_inner().order;
            Ok(order.and_then(|o| o.saga).filter(|s| s.current_step == SagaStep::CreateTicket as i32))
        }
    })
    .await
    .expect("the saga waits at CreateTicket");

    // The orchestrator goes away; the restaurant replies into its queue meanwhile.
    system.down(Svc::Order).await;
    system.up(Svc::Restaurant).await;
    eventually(WAIT, || async {
        let (state, _) = system.ticket_state(&order_id).await;
        Ok(state.map(|_| ()))
    })
    .await
    .expect("ticket created while order_service was down");

    // A new instance (nothing in memory) picks the saga up from Redis and the queue.
    system.up(Svc::Order).await;
    let (_, order) = system.finish(&order_id).await;
    assert_eq!(order.state, OrderState::Approved as i32);
    assert_eq!(system.ticket_state(&order_id).await.0, Some(TicketState::AwaitingAcceptance));
    assert_eq!(system.authorizations(&order_id).await.0, vec![850]);
    system.stop().await;
}

#[tokio::test]
async fn garbage_on_every_command_queue_is_dead_lettered_and_the_next_saga_completes() {
    let system = System::start("e2e-garbage", &[], |_| {}).await;
    let garbage: [(&str, &str); 3] = [
        (CONSUMER_QUEUE, "ftgo.consumer.v1.VerifyConsumerCommand"),
        (RESTAURANT_QUEUE, "ftgo.restaurant.v1.CreateTicketCommand"),
        (ACCOUNTING_QUEUE, "ftgo.accounting.v1.AuthorizeCardCommand"),
    ];
    for (queue, kind) in garbage {
        let props = lapin::BasicProperties::default()
            .with_message_id(format!("garbage-{queue}").into())
            .with_correlation_id("garbage".into())
            .with_reply_to(system.env.reply_queue().into())
            .with_type(kind.into());
        system.env.send_raw(queue, b"\xff\xff\xff\xff not protobuf", props).await.expect("publish garbage");
    }
    for (queue, _) in garbage {
        let dead = eventually(WAIT, || async {
            let dead = system.env.drain_dead_letters(queue).await?;
            Ok((!dead.is_empty()).then_some(dead))
        })
        .await
        .expect("dead-lettered");
        let headers = dead[0].0.headers().clone().unwrap_or_default();
        assert!(headers.inner().contains_key("x-ftgo-dead-letter-reason"), "{queue}: {headers:?}");
    }
    // A valid command whose reply_to names no queue: handled once, then parked in
    // the dead-letter queue with the reason (not retried forever).
    let command = proto::consumer::v1::VerifyConsumerCommand { order_id: "no-reply-queue".into(), consumer_id: 1 };
    let props = lapin::BasicProperties::default()
        .with_message_id("no-reply-queue-1".into())
        .with_correlation_id("no-reply-queue".into())
        .with_reply_to(system.env.queue("nobody.listens").into())
        .with_type("ftgo.consumer.v1.VerifyConsumerCommand".into());
    system.env.send_raw(CONSUMER_QUEUE, &prost::Message::encode_to_vec(&command), props).await.expect("publish");
    let dead = eventually(WAIT, || async {
        let dead = system.env.drain_dead_letters(CONSUMER_QUEUE).await?;
        Ok((!dead.is_empty()).then_some(dead))
    })
    .await
    .expect("unanswerable command dead-lettered");
    let headers = dead[0].0.headers().clone().unwrap_or_default();
    let reason = match headers.inner().get("x-ftgo-dead-letter-reason") {
        Some(lapin::types::AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("no reason header: {other:?}"),
    };
    assert!(reason.contains("does not exist"), "{reason}");

    let order_id = system.create(1, 1, &[("naan", 1)]).await;
    assert_eq!(system.finish(&order_id).await.1.state, OrderState::Approved as i32);
    system.stop().await;
}

#[tokio::test]
async fn many_sagas_at_once_all_end_and_every_invariant_holds() {
    let system = System::start("e2e-many", &[], |_| {}).await;
    let cases: Vec<(i64, i64, &str, i32, OrderState)> = (0..60)
        .map(|i| match i % 5 {
            0 => (1, 1, "naan", 2, OrderState::Approved),
            1 => (2, 1, "naan", 1, OrderState::Rejected),
            2 => (3, 1, "chicken-vindaloo", 2, OrderState::Rejected),
            3 => (1, 1, "chicken-vindaloo", 40, OrderState::Rejected),
            _ => (1, 2, "samosa", 1, OrderState::Approved),
        })
        .collect();
    let created = futures::future::join_all(cases.iter().map(|&(consumer, restaurant, item, quantity, _)| {
        let system = &system;
        async move { system.create(consumer, restaurant, &[(item, quantity)]).await }
    }))
    .await;
    let finished = futures::future::join_all(created.iter().map(|id| system.finish(id))).await;
    for ((_, order), (_, _, _, _, expected)) in finished.iter().zip(&cases) {
        assert_eq!(order.state, *expected as i32, "order {}", order.order_id);
        let (ticket, _) = system.ticket_state(&order.order_id).await;
        let (in_force, _, _) = system.authorizations(&order.order_id).await;
        if *expected == OrderState::Approved {
            assert_eq!(ticket, Some(TicketState::AwaitingAcceptance));
            assert_eq!(in_force.len(), 1, "exactly one authorization");
        } else {
            assert!(matches!(ticket, None | Some(TicketState::Rejected)), "{ticket:?}");
            assert!(in_force.is_empty());
        }
    }
    system.stop().await;
}

#[tokio::test]
async fn metrics_and_probes_show_what_a_saga_did() {
    let system = System::start("e2e-metrics", &[], |_| {}).await;
    let order_http = system.order.as_ref().expect("order_service").service.http_addr;
    let restaurant_http = system.restaurant.as_ref().expect("restaurant_service").service.http_addr;
    for running in [&system.order, &system.consumer, &system.restaurant, &system.accounting] {
        let http = running.as_ref().expect("running").service.http_addr;
        assert_eq!(http_get(http, "/healthz").await.expect("healthz").0, 200);
        assert_eq!(http_get(http, "/readyz").await.expect("readyz").0, 200, "ready once consuming");
    }
    // The services of this process share one registry (and other tests run in
    // parallel), so the test asserts that the counters moved, not their values.
    let scrape = |addr| async move {
        let (status, body) = http_get(addr, "/metrics").await.expect("metrics");
        assert_eq!(status, 200);
        body
    };
    let approved = [("state", "APPROVED")];
    let create_ticket_replied = [("type", "ftgo.restaurant.v1.CreateTicketCommand"), ("outcome", "replied")];
    let before = scrape(order_http).await;
    let order_id = system.create(1, 1, &[("naan", 2)]).await;
    assert_eq!(system.finish(&order_id).await.1.state, OrderState::Approved as i32);
    let after = scrape(order_http).await;
    for (name, labels) in [
        ("ftgo_sagas_started_total", &[][..]),
        ("ftgo_sagas_finished_total", &approved[..]),
        ("ftgo_saga_step_duration_seconds_count", &[("step", "AUTHORIZE_CARD"), ("phase", "action")][..]),
        ("ftgo_messages_total", &[("disposition", "ack")][..]),
    ] {
        assert!(
            metric_sum(&after, name, labels) >= metric_sum(&before, name, labels) + 1.0,
            "{name}{labels:?} did not move"
        );
    }
    let restaurant = scrape(restaurant_http).await;
    assert!(metric_sum(&restaurant, "ftgo_commands_total", &create_ticket_replied) >= 1.0);
    // Every metric says what it counts.
    for name in ["ftgo_sagas_started_total", "ftgo_saga_step_duration_seconds", "ftgo_messages_total"] {
        assert!(after.contains(&format!("# HELP {name} ")), "no # HELP line for {name}");
    }
    assert!(restaurant.contains("# HELP ftgo_commands_total "), "no # HELP line for ftgo_commands_total");
    system.stop().await;
}
