//! order_service against the real RabbitMQ and Redis, with the test playing the
//! participants by hand: that gives exact control over duplicates, stale replies,
//! silence and garbage. The full system with the real participants is tested in
//! `system_tests`.

use std::time::Duration;

use order_service::{
    Settings,
    create_order_saga::{ACCOUNTING_QUEUE, CONSUMER_QUEUE, REPLY_QUEUE, RESTAURANT_QUEUE},
};
use prost::Message;
use proto::{
    common::v1::{LineItem, Money},
    consumer::v1 as consumer,
    order::v1::{
        CreateOrderRequest, GetOrderRequest, ListOrdersRequest, OrderState, SagaEventType, SagaStatus, SagaStep,
        WatchOrderRequest, order_service_client::OrderServiceClient,
    },
    restaurant::v1 as restaurant,
};
use service_kit::CancellationToken;
use test_support::{TestEnv, eventually, grpc_channel, wait_serving};
use tonic::{Code, transport::Channel};

const WAIT: Duration = Duration::from_secs(20);

struct App {
    client: OrderServiceClient<Channel>,
    shutdown: CancellationToken,
    service: service_kit::runtime::RunningService,
}

impl App {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.service.wait().await;
    }
}

async fn spawn(env: &TestEnv, tweak: impl FnOnce(&mut Settings)) -> App {
    for queue in [CONSUMER_QUEUE, RESTAURANT_QUEUE, ACCOUNTING_QUEUE, REPLY_QUEUE] {
        env.track_queue(queue);
    }
    let mut settings = Settings::local();
    settings.common = env.settings();
    settings.saga.step_timeout = Duration::from_secs(10);
    settings.saga.backoff_initial = Duration::from_millis(50);
    settings.sweeper.interval = Duration::from_millis(50);
    tweak(&mut settings);
    let shutdown = CancellationToken::new();
    let service = order_service::run(settings, shutdown.clone()).await.expect("order_service starts");
    wait_serving(service.grpc_addr, WAIT).await.expect("order_service serving");
    let client = OrderServiceClient::new(grpc_channel(service.grpc_addr).await.expect("channel"));
    App { client, shutdown, service }
}

fn order(consumer_id: i64, key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        consumer_id,
        restaurant_id: 1,
        items: vec![LineItem { menu_item_id: "chicken-vindaloo".into(), quantity: 2 }],
        idempotency_key: key.into(),
    }
}

async fn get(client: &mut OrderServiceClient<Channel>, order_id: &str) -> proto::order::v1::Order {
    client
        .get_order(GetOrderRequest { order_id: order_id.into() })
        .await
        .expect("GetOrder")
        .into_inner()
        .order
        .expect("order")
}

fn suspended() -> consumer::VerifyConsumerReply {
    consumer::VerifyConsumerReply {
        outcome: Some(consumer::verify_consumer_reply::Outcome::Failure(proto::common::v1::Failure::business(
            "CONSUMER_SUSPENDED",
            "consumer 2 is suspended",
        ))),
    }
}

fn verified() -> consumer::VerifyConsumerReply {
    consumer::VerifyConsumerReply {
        outcome: Some(consumer::verify_consumer_reply::Outcome::Success(consumer::ConsumerVerified { consumer_id: 1 })),
    }
}

#[tokio::test]
async fn invalid_arguments_are_refused_naming_the_field() {
    let env = TestEnv::new("order-invalid").await.expect("env");
    let mut app = spawn(&env, |_| {}).await;

    let mut no_items = order(1, "");
    no_items.items.clear();
    let status = app.client.create_order(no_items).await.expect_err("no items");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("items"), "{}", status.message());

    let mut bad_quantity = order(1, "");
    bad_quantity.items[0].quantity = 101;
    bad_quantity.consumer_id = -4;
    let status = app.client.create_order(bad_quantity).await.expect_err("bad quantity");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("items[0].quantity"), "{}", status.message());
    assert!(status.message().contains("consumer_id"), "{}", status.message());

    let status = app.client.get_order(GetOrderRequest { order_id: "not-an-id".into() }).await.expect_err("bad id");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("order_id"));
    let status = app
        .client
        .get_order(GetOrderRequest { order_id: uuid::Uuid::now_v7().to_string() })
        .await
        .expect_err("unknown id");
    assert_eq!(status.code(), Code::NotFound);

    // Nothing was created by the refused calls.
    let listed = app.client.list_orders(ListOrdersRequest::default()).await.expect("list").into_inner();
    assert!(listed.orders.is_empty());
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn one_idempotency_key_makes_one_order_and_one_saga() {
    let env = TestEnv::new("order-idem").await.expect("env");
    let mut app = spawn(&env, |_| {}).await;

    let first = app.client.create_order(order(1, "key-1")).await.expect("first").into_inner();
    let second = app.client.create_order(order(1, "key-1")).await.expect("second").into_inner();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.order_id, second.order_id);
    assert_eq!(first.state, OrderState::ApprovalPending as i32);

    let mut changed = order(1, "key-1");
    changed.items[0].quantity = 3;
    let status = app.client.create_order(changed).await.expect_err("same key, other request");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("idempotency_key"));

    let status = app.client.create_order(order(2, "key-1")).await.expect_err("same key, other consumer");
    assert_eq!(status.code(), Code::InvalidArgument, "a key never starts a second saga");

    let listed = app.client.list_orders(ListOrdersRequest::default()).await.expect("list").into_inner();
    assert_eq!(listed.orders.len(), 1);
    // One saga sent one VerifyConsumer.
    let (command, _) = env.take_command(CONSUMER_QUEUE, WAIT).await.expect("VerifyConsumer");
    assert_eq!(command.correlation_id, first.order_id);
    assert_eq!(env.queue_len(&env.queue(CONSUMER_QUEUE)).await.expect("len"), 0);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_duplicate_reply_is_dropped_and_the_envelope_is_complete() {
    let env = TestEnv::new("order-dup").await.expect("env");
    let mut app = spawn(&env, |_| {}).await;
    let order_id = app.client.create_order(order(1, "")).await.expect("create").into_inner().order_id;

    let (command, payload) = env.take_command(CONSUMER_QUEUE, WAIT).await.expect("VerifyConsumer");
    assert_eq!(command.type_name, "ftgo.consumer.v1.VerifyConsumerCommand");
    assert_eq!(command.correlation_id, order_id);
    assert_eq!(command.step.as_deref(), Some("VERIFY_CONSUMER"));
    assert_eq!(command.attempt, 1);
    assert!(command.deadline_ms.is_some());
    assert!(command.traceparent.as_deref().is_some_and(|t| t.starts_with("00-")));
    assert_eq!(command.reply_to.as_deref(), Some(env.queue(REPLY_QUEUE).as_str()));
    let decoded = consumer::VerifyConsumerCommand::decode(payload.as_slice()).expect("protobuf payload");
    assert_eq!(decoded.consumer_id, 1);

    env.reply(&command, &verified()).await.expect("reply");
    env.reply(&command, &verified()).await.expect("duplicate reply");

    let (ticket_command, _) = env.take_command(RESTAURANT_QUEUE, WAIT).await.expect("CreateTicket");
    assert_eq!(ticket_command.type_name, "ftgo.restaurant.v1.CreateTicketCommand");
    // Both replies are consumed; the duplicate caused nothing.
    eventually(WAIT, || async { Ok((env.queue_len(&env.queue(REPLY_QUEUE)).await? == 0).then_some(())) })
        .await
        .expect("replies consumed");
    let order = get(&mut app.client, &order_id).await;
    let saga = order.saga.expect("saga");
    assert_eq!(saga.current_step, SagaStep::CreateTicket as i32);
    assert_eq!(env.queue_len(&env.queue(RESTAURANT_QUEUE)).await.expect("len"), 0, "one CreateTicket");

    let events = watch_all(&mut app.client, &order_id, "", Duration::from_millis(500)).await;
    let verify_successes = events
        .iter()
        .filter(|e| e.r#type == SagaEventType::StepSucceeded as i32 && e.step == SagaStep::VerifyConsumer as i32)
        .count();
    assert_eq!(verify_successes, 1);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_reply_of_another_type_is_dropped_and_the_awaited_one_still_applies() {
    let env = TestEnv::new("order-type").await.expect("env");
    let mut app = spawn(&env, |_| {}).await;
    let order_id = app.client.create_order(order(1, "")).await.expect("create").into_inner().order_id;
    let (command, _) = env.take_command(CONSUMER_QUEUE, WAIT).await.expect("VerifyConsumer");

    // A CreateTicket failure carrying VerifyConsumer's command id: taken as the
    // awaited reply, it would fail the step and reject the order.
    let wrong = restaurant::CreateTicketReply {
        outcome: Some(restaurant::create_ticket_reply::Outcome::Failure(proto::common::v1::Failure::business(
            "RESTAURANT_CLOSED",
            "not the reply VerifyConsumer awaits",
        ))),
    };
    env.reply(&command, &wrong).await.expect("wrong-typed reply");
    eventually(WAIT, || async { Ok((env.queue_len(&env.queue(REPLY_QUEUE)).await? == 0).then_some(())) })
        .await
        .expect("wrong-typed reply consumed");
    let order = get(&mut app.client, &order_id).await;
    assert_eq!(order.state, OrderState::ApprovalPending as i32);
    assert_eq!(order.saga.expect("saga").current_step, SagaStep::VerifyConsumer as i32);

    env.reply(&command, &verified()).await.expect("reply");
    let (ticket_command, _) = env.take_command(RESTAURANT_QUEUE, WAIT).await.expect("CreateTicket");
    assert_eq!(ticket_command.correlation_id, order_id);
    app.stop().await;
    env.cleanup().await;
}

/// Collects a watch stream until it ends or stays quiet for `quiet`.
async fn watch_all(
    client: &mut OrderServiceClient<Channel>,
    order_id: &str,
    after: &str,
    quiet: Duration,
) -> Vec<proto::order::v1::SagaEvent> {
    let mut stream = client
        .watch_order(WatchOrderRequest { order_id: order_id.into(), after_event_id: after.into() })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    while let Ok(Ok(Some(event))) = tokio::time::timeout(quiet, stream.message()).await {
        events.push(event);
    }
    events
}

#[tokio::test]
async fn a_silent_participant_times_out_retries_and_the_saga_is_rejected() {
    let env = TestEnv::new("order-timeout").await.expect("env");
    let mut app = spawn(&env, |s| {
        s.saga.step_timeout = Duration::from_millis(300);
        s.saga.max_attempts = 2;
    })
    .await;
    let order_id = app.client.create_order(order(1, "")).await.expect("create").into_inner().order_id;

    let events = watch_all(&mut app.client, &order_id, "", WAIT).await;
    let last = events.last().expect("events");
    assert!(last.terminal);
    assert_eq!(last.r#type, SagaEventType::OrderRejected as i32);
    let timeouts = events.iter().filter(|e| e.r#type == SagaEventType::StepTimedOut as i32).count();
    assert_eq!(timeouts, 2, "two attempts, each timed out");

    let order = get(&mut app.client, &order_id).await;
    assert_eq!(order.state, OrderState::Rejected as i32);
    let saga = order.saga.expect("saga");
    assert_eq!(saga.status, SagaStatus::Rejected as i32);
    assert_eq!(saga.failed_step, SagaStep::VerifyConsumer as i32);
    assert_eq!(saga.failure_code, "TIMEOUT");
    assert!(saga.failure_reason.contains("gave up after 2 attempts"), "{}", saga.failure_reason);

    // Both sends were the same command: the same message id, attempts 1 and 2; the
    // broker dead-letters them once their deadline passes.
    let expired = eventually(WAIT, || async {
        let dead = env.drain_dead_letters(CONSUMER_QUEUE).await?;
        Ok((!dead.is_empty()).then_some(dead))
    })
    .await
    .expect("expired commands dead-lettered");
    let ids: std::collections::HashSet<_> =
        expired.iter().filter_map(|(p, _)| p.message_id().as_ref().map(|s| s.to_string())).collect();
    assert_eq!(ids.len(), 1, "a re-send keeps its message id");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn watch_replays_from_the_start_or_resumes_after_an_event() {
    let env = TestEnv::new("order-watch").await.expect("env");
    let mut app = spawn(&env, |_| {}).await;
    let order_id = app.client.create_order(order(2, "")).await.expect("create").into_inner().order_id;
    let (command, _) = env.take_command(CONSUMER_QUEUE, WAIT).await.expect("VerifyConsumer");
    env.reply(&command, &suspended()).await.expect("reply");

    let all = watch_all(&mut app.client, &order_id, "", WAIT).await;
    let kinds: Vec<i32> = all.iter().map(|e| e.r#type).collect();
    assert_eq!(
        kinds,
        vec![
            SagaEventType::SagaStarted as i32,
            SagaEventType::StepSucceeded as i32,
            SagaEventType::CommandSent as i32,
            SagaEventType::StepFailed as i32,
            SagaEventType::OrderRejected as i32,
        ]
    );
    assert_eq!(all[3].code, "CONSUMER_SUSPENDED");
    let resumed = watch_all(&mut app.client, &order_id, &all[2].event_id, WAIT).await;
    assert_eq!(resumed, all[3..].to_vec());
    // After the terminal event the stream ends at once instead of hanging.
    let after_end = watch_all(&mut app.client, &order_id, &all[4].event_id, WAIT).await;
    assert!(after_end.is_empty());
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn garbage_on_the_reply_queue_is_dead_lettered_and_sagas_go_on() {
    let env = TestEnv::new("order-garbage").await.expect("env");
    let mut app = spawn(&env, |_| {}).await;
    let props = lapin::BasicProperties::default()
        .with_message_id("junk-1".into())
        .with_correlation_id("nobody".into())
        .with_type("ftgo.restaurant.v1.CreateTicketReply".into());
    env.send_raw(REPLY_QUEUE, b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", props).await.expect("garbage");
    env.send_raw(REPLY_QUEUE, b"hello", lapin::BasicProperties::default()).await.expect("no envelope");
    let dead = eventually(WAIT, || async {
        let dead = env.drain_dead_letters(REPLY_QUEUE).await?;
        Ok((dead.len() >= 2).then_some(dead))
    })
    .await
    .expect("dead letters");
    for (props, _) in &dead {
        let headers = props.headers().clone().unwrap_or_default();
        assert!(headers.inner().contains_key("x-ftgo-dead-letter-reason"), "{props:?}");
    }

    // The service keeps going.
    let order_id = app.client.create_order(order(1, "")).await.expect("create").into_inner().order_id;
    let (command, _) = env.take_command(CONSUMER_QUEUE, WAIT).await.expect("VerifyConsumer");
    env.reply(&command, &verified()).await.expect("reply");
    let (ticket, _) = env.take_command(RESTAURANT_QUEUE, WAIT).await.expect("CreateTicket");
    assert_eq!(ticket.correlation_id, order_id);
    let created = restaurant::CreateTicketReply {
        outcome: Some(restaurant::create_ticket_reply::Outcome::Success(restaurant::TicketCreated {
            ticket_id: 77,
            total: Some(Money::usd(2590)),
        })),
    };
    env.reply(&ticket, &created).await.expect("reply");
    let (auth, payload) = env.take_command(ACCOUNTING_QUEUE, WAIT).await.expect("AuthorizeCard");
    let auth_command = proto::accounting::v1::AuthorizeCardCommand::decode(payload.as_slice()).expect("decode");
    assert_eq!(auth_command.amount.map(|m| m.amount_minor), Some(2590), "the restaurant's total is authorized");
    assert_eq!(auth.step.as_deref(), Some("AUTHORIZE_CARD"));
    let order = get(&mut app.client, &order_id).await;
    assert_eq!(order.ticket_id, 77);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_compensation_that_keeps_failing_parks_the_saga_until_an_operator_retries_it() {
    let env = TestEnv::new("order-park").await.expect("env");
    let mut app = spawn(&env, |s| s.saga.compensation_max_attempts = 2).await;
    let order_id = app.client.create_order(order(3, "")).await.expect("create").into_inner().order_id;
    let (verify, _) = env.take_command(CONSUMER_QUEUE, WAIT).await.expect("VerifyConsumer");
    env.reply(&verify, &verified()).await.expect("reply");
    let (ticket, _) = env.take_command(RESTAURANT_QUEUE, WAIT).await.expect("CreateTicket");
    let created = restaurant::CreateTicketReply {
        outcome: Some(restaurant::create_ticket_reply::Outcome::Success(restaurant::TicketCreated {
            ticket_id: 5,
            total: Some(Money::usd(2590)),
        })),
    };
    env.reply(&ticket, &created).await.expect("reply");
    let (auth, _) = env.take_command(ACCOUNTING_QUEUE, WAIT).await.expect("AuthorizeCard");
    let declined = proto::accounting::v1::AuthorizeCardReply {
        outcome: Some(proto::accounting::v1::authorize_card_reply::Outcome::Failure(
            proto::common::v1::Failure::business("CARD_DECLINED", "over the limit"),
        )),
    };
    env.reply(&auth, &declined).await.expect("reply");

    // RejectTicket fails twice: the saga parks instead of giving up silently.
    let refused = restaurant::RejectTicketReply {
        outcome: Some(restaurant::reject_ticket_reply::Outcome::Failure(proto::common::v1::Failure::business(
            "TICKET_ALREADY_ACCEPTED",
            "the kitchen took it",
        ))),
    };
    for attempt in 1..=2 {
        let (reject, _) = env.take_command(RESTAURANT_QUEUE, WAIT).await.expect("RejectTicket");
        assert_eq!(reject.type_name, "ftgo.restaurant.v1.RejectTicketCommand");
        assert_eq!(reject.attempt, attempt);
        env.reply(&reject, &refused).await.expect("reply");
    }
    let events = watch_all(&mut app.client, &order_id, "", WAIT).await;
    let last = events.last().expect("events");
    assert_eq!(last.r#type, SagaEventType::SagaParked as i32);
    assert!(last.terminal);
    let parked = get(&mut app.client, &order_id).await;
    let saga = parked.saga.expect("saga");
    assert_eq!(saga.status, SagaStatus::CompensationFailed as i32);
    assert_eq!(parked.state, OrderState::ApprovalPending as i32, "not REJECTED while the ticket may be live");
    assert!(saga.failure_reason.contains("TICKET_ALREADY_ACCEPTED"), "{}", saga.failure_reason);

    // A parked saga is listed as stuck (it started before now and is not finished).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stuck = app
        .client
        .list_orders(ListOrdersRequest { stuck_for_seconds: 1, ..Default::default() })
        .await
        .expect("list stuck")
        .into_inner();
    assert_eq!(stuck.orders.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(), vec![order_id.as_str()]);

    // The operator retries; the compensation is re-sent under a fresh message id.
    app.client.retry_saga(proto::order::v1::RetrySagaRequest { order_id: order_id.clone() }).await.expect("RetrySaga");
    let (reject, _) = env.take_command(RESTAURANT_QUEUE, WAIT).await.expect("RejectTicket again");
    assert_eq!(reject.message_id, format!("{order_id}.create_ticket.compensation.1"));
    let rejected = restaurant::RejectTicketReply {
        outcome: Some(restaurant::reject_ticket_reply::Outcome::Success(restaurant::TicketRejected { ticket_id: 5 })),
    };
    env.reply(&reject, &rejected).await.expect("reply");
    let last = parked_then_final(&mut app.client, &order_id, &last.event_id).await;
    assert_eq!(last.r#type, SagaEventType::OrderRejected as i32);
    assert_eq!(get(&mut app.client, &order_id).await.state, OrderState::Rejected as i32);
    // A watch from the start goes past the parked event to the real end.
    let all = watch_all(&mut app.client, &order_id, "", WAIT).await;
    assert!(all.iter().any(|e| e.r#type == SagaEventType::SagaParked as i32));
    assert_eq!(all.last().map(|e| e.r#type), Some(SagaEventType::OrderRejected as i32));

    // Retrying a saga that is not parked is refused.
    let status = app
        .client
        .retry_saga(proto::order::v1::RetrySagaRequest { order_id: order_id.clone() })
        .await
        .expect_err("not parked");
    assert_eq!(status.code(), Code::FailedPrecondition);
    app.stop().await;
    env.cleanup().await;
}

/// Resumes a watch after `after` and returns its last event.
async fn parked_then_final(
    client: &mut OrderServiceClient<Channel>,
    order_id: &str,
    after: &str,
) -> proto::order::v1::SagaEvent {
    let events = watch_all(client, order_id, after, WAIT).await;
    events.last().cloned().expect("events after the retry")
}

#[tokio::test]
async fn reflection_answers_in_both_protocol_versions() {
    use tonic_reflection::pb::{v1, v1alpha};
    let env = TestEnv::new("order-reflect").await.expect("env");
    let app = spawn(&env, |_| {}).await;
    let channel = grpc_channel(app.service.grpc_addr).await.expect("channel");

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut responses = client.server_reflection_info(tokio_stream::iter([request])).await.expect("v1").into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.message().await.expect("v1 response").and_then(|r| r.message_response)
    else {
        panic!("v1 reflection did not list services")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["ftgo.order.v1.OrderService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n == "ftgo.consumer.v1.ConsumerService"), "only this port's services: {names:?}");

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "ftgo.order.v1.OrderService".into(),
        )),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut responses =
        client.server_reflection_info(tokio_stream::iter([request])).await.expect("v1alpha").into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        responses.message().await.expect("v1alpha response").and_then(|r| r.message_response)
    else {
        panic!("v1alpha reflection did not return the file")
    };
    assert!(!files.file_descriptor_proto.is_empty());
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn shutdown_ends_open_watch_streams_instead_of_waiting_for_them() {
    let env = TestEnv::new("order-shutdown").await.expect("env");
    let mut app = spawn(&env, |_| {}).await;
    // Nobody answers VerifyConsumer, so the saga (and its watch) stays open.
    let order_id = app.client.create_order(order(1, "")).await.expect("create").into_inner().order_id;
    let mut stream = app
        .client
        .watch_order(WatchOrderRequest { order_id, after_event_id: String::new() })
        .await
        .expect("watch")
        .into_inner();
    let mut last_event_id = String::new();
    for _ in 0..3 {
        last_event_id = stream.message().await.expect("event").expect("an event").event_id;
    }
    app.shutdown.cancel();
    let ended = async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without saying why"),
                Err(status) => break status,
            }
        }
    };
    let status = tokio::time::timeout(Duration::from_secs(15), ended).await.expect("the stream ends at shutdown");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("after_event_id"), "{}", status.message());
    assert!(!last_event_id.is_empty());
    // The service is not held open by the stream (bounded, not a timing measurement).
    tokio::time::timeout(Duration::from_secs(15), app.service.wait())
        .await
        .expect("order_service stopped")
        .expect("clean stop");
    env.cleanup().await;
}

#[tokio::test]
async fn a_live_watch_is_woken_by_the_save_not_by_rereading() {
    let env = TestEnv::new("order-watch-live").await.expect("env");
    // Without a wake-up, the stream would not read again for an hour.
    let mut app = spawn(&env, |s| s.watch_recheck = Duration::from_secs(3600)).await;
    let order_id = app.client.create_order(order(2, "")).await.expect("create").into_inner().order_id;
    let mut stream = app
        .client
        .watch_order(WatchOrderRequest { order_id: order_id.clone(), after_event_id: String::new() })
        .await
        .expect("watch")
        .into_inner();
    let mut next = async || tokio::time::timeout(WAIT, stream.message()).await.expect("an event in time").expect("ok");
    while next().await.expect("replayed event").r#type != SagaEventType::CommandSent as i32 {}
    // The stream has caught up and waits. The reply's save must wake it.
    let (command, _) = env.take_command(CONSUMER_QUEUE, WAIT).await.expect("VerifyConsumer");
    env.reply(&command, &suspended()).await.expect("reply");
    let failed = next().await.expect("live event");
    assert_eq!((failed.r#type, failed.code.as_str()), (SagaEventType::StepFailed as i32, "CONSUMER_SUSPENDED"));
    let end = next().await.expect("terminal event");
    assert!(end.terminal);
    assert_eq!(end.r#type, SagaEventType::OrderRejected as i32);
    assert!(next().await.is_none(), "the stream ends after the terminal event");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn watches_through_either_of_two_replicas_are_woken_by_the_saves_of_both() {
    let env = TestEnv::new("order-watch-replicas").await.expect("env");
    // Without a wake-up, a stream would not read again for an hour.
    let quiet = |s: &mut Settings| s.watch_recheck = Duration::from_secs(3600);
    let (mut a, mut b) = (spawn(&env, quiet).await, spawn(&env, quiet).await);
    // Both replicas consume the one replies queue, so either may save a step: a
    // watch through B alone gets B's saves from B itself and A's through Redis;
    // a saga watched through both gets every save through Redis. Each order is
    // created on A and its one reply rejects it.
    for watched_through_both in [false, false, false, false, true] {
        let order_id = a.client.create_order(order(2, "")).await.expect("create").into_inner().order_id;
        let request = WatchOrderRequest { order_id: order_id.clone(), after_event_id: String::new() };
        let mut streams = vec![b.client.watch_order(request.clone()).await.expect("watch B").into_inner()];
        if watched_through_both {
            streams.push(a.client.watch_order(request).await.expect("watch A").into_inner());
        }
        for stream in &mut streams {
            let mut next = async || tokio::time::timeout(WAIT, stream.message()).await.expect("in time").expect("ok");
            while next().await.expect("replayed event").r#type != SagaEventType::CommandSent as i32 {}
        }
        let (command, _) = env.take_command(CONSUMER_QUEUE, WAIT).await.expect("VerifyConsumer");
        env.reply(&command, &suspended()).await.expect("reply");
        for stream in &mut streams {
            let mut next = async || tokio::time::timeout(WAIT, stream.message()).await.expect("in time").expect("ok");
            let failed = next().await.expect("live event");
            assert_eq!((failed.r#type, failed.code.as_str()), (SagaEventType::StepFailed as i32, "CONSUMER_SUSPENDED"));
            let end = next().await.expect("terminal event");
            assert!(end.terminal && end.r#type == SagaEventType::OrderRejected as i32, "{end:?}");
            assert!(next().await.is_none(), "the stream ends after the terminal event");
        }
    }
    a.stop().await;
    b.stop().await;
    env.cleanup().await;
}
