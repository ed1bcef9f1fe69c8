//! restaurant_service end to end, against the real RabbitMQ and Redis of the
//! machine: commands go in through its queue, replies come back on a test reply
//! queue, and the stored state is read back through its gRPC read calls. Each test
//! runs the service in-process in its own namespace (see `test_support::TestEnv`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lapin::BasicProperties;
use messaging::{Envelope, envelope::now_millis};
use prost::{Message, Name};
use proto::{
    common::v1::{Failure, LineItem, Money},
    restaurant::v1::{
        ApproveTicketCommand, ApproveTicketReply, CreateTicketCommand, CreateTicketReply, GetRestaurantRequest,
        GetTicketByOrderRequest, GetTicketByOrderResponse, GetTicketRequest, RejectTicketCommand, RejectTicketReply,
        Ticket, TicketApproved, TicketCreated, TicketRejected, TicketState, approve_ticket_reply, create_ticket_reply,
        reject_ticket_reply, restaurant_service_client::RestaurantServiceClient,
    },
};
use restaurant_service::{GRPC_SERVICE_NAME, Settings, run};
use test_support::{ServiceUnderTest, TestEnv, deadline_in};
use tonic::{Code, transport::Channel};

const QUEUE: &proto::contract::Queue = restaurant_service::COMMAND_QUEUE;
const AJANTA: i64 = 1;
const FLAKY_KITCHEN: i64 = 2;
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// The service running in its own namespace, with a gRPC client to it.
struct App {
    env: TestEnv,
    service: ServiceUnderTest,
    grpc: RestaurantServiceClient<Channel>,
}

impl App {
    async fn spawn(label: &str) -> anyhow::Result<Self> {
        Self::spawn_with(label, true).await
    }

    /// Starts the service and waits until its health says SERVING, i.e. its
    /// command queue is declared and consumed (commands are published mandatory).
    async fn spawn_with(label: &str, fault_injection: bool) -> anyhow::Result<Self> {
        let env = TestEnv::new(label).await?;
        env.track_queue(QUEUE);
        let settings = Settings { fault_injection, ..Settings::new(env.settings())? };
        let service =
            ServiceUnderTest::start(|token| run(settings, token), GRPC_SERVICE_NAME, Duration::from_secs(30)).await?;
        let grpc = RestaurantServiceClient::new(service.channel().await?);
        Ok(Self { env, service, grpc })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.service.stop().await?;
        self.env.cleanup().await;
        Ok(())
    }

    /// Sends a command and returns its reply, checking that the reply answers it.
    async fn call<C, R>(&self, message_id: &str, order_id: &str, command: &C) -> anyhow::Result<R>
    where
        C: Message + Name,
        R: Message + Name + Default,
    {
        self.env.call(QUEUE, message_id, order_id, command, deadline_in(60_000), REPLY_TIMEOUT).await
    }

    async fn reply_to<R: Message + Name + Default>(&self, message_id: &str) -> anyhow::Result<R> {
        self.env.reply_to(message_id, REPLY_TIMEOUT).await
    }

    async fn create(
        &self,
        message_id: &str,
        order_id: &str,
        restaurant_id: i64,
        items: &[(&str, i32)],
    ) -> anyhow::Result<create_ticket_reply::Outcome> {
        let command = CreateTicketCommand {
            order_id: order_id.into(),
            restaurant_id,
            items: items.iter().map(|(id, quantity)| line(id, *quantity)).collect(),
        };
        let reply: CreateTicketReply = self.call(message_id, order_id, &command).await?;
        reply.outcome.ok_or_else(|| anyhow::anyhow!("CreateTicketReply without outcome"))
    }

    async fn reject(&self, message_id: &str, order_id: &str) -> anyhow::Result<reject_ticket_reply::Outcome> {
        let reply: RejectTicketReply =
            self.call(message_id, order_id, &RejectTicketCommand { order_id: order_id.into() }).await?;
        reply.outcome.ok_or_else(|| anyhow::anyhow!("RejectTicketReply without outcome"))
    }

    async fn approve(
        &self,
        message_id: &str,
        order_id: &str,
        ticket_id: i64,
    ) -> anyhow::Result<approve_ticket_reply::Outcome> {
        let command = ApproveTicketCommand { order_id: order_id.into(), ticket_id };
        let reply: ApproveTicketReply = self.call(message_id, order_id, &command).await?;
        reply.outcome.ok_or_else(|| anyhow::anyhow!("ApproveTicketReply without outcome"))
    }

    /// GetTicket; None on NOT_FOUND.
    async fn ticket(&self, ticket_id: i64) -> anyhow::Result<Option<Ticket>> {
        match self.grpc.clone().get_ticket(GetTicketRequest { ticket_id }).await {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// GetTicketByOrder; None on NOT_FOUND (no ticket and no tombstone).
    async fn by_order(&self, order_id: &str) -> anyhow::Result<Option<GetTicketByOrderResponse>> {
        match self.grpc.clone().get_ticket_by_order(GetTicketByOrderRequest { order_id: order_id.into() }).await {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    async fn state_of(&self, ticket_id: i64) -> anyhow::Result<TicketState> {
        let ticket = self.ticket(ticket_id).await?.ok_or_else(|| anyhow::anyhow!("ticket {ticket_id} not found"))?;
        Ok(ticket.state())
    }
}

fn line(menu_item_id: &str, quantity: i32) -> LineItem {
    LineItem { menu_item_id: menu_item_id.into(), quantity }
}

fn created(outcome: create_ticket_reply::Outcome) -> TicketCreated {
    match outcome {
        create_ticket_reply::Outcome::Success(created) => created,
        create_ticket_reply::Outcome::Failure(failure) => panic!("expected a ticket, got {failure:?}"),
    }
}

fn create_failure(outcome: create_ticket_reply::Outcome) -> Failure {
    match outcome {
        create_ticket_reply::Outcome::Failure(failure) => failure,
        create_ticket_reply::Outcome::Success(created) => panic!("expected a failure, got {created:?}"),
    }
}

fn reject_failure(outcome: reject_ticket_reply::Outcome) -> Failure {
    match outcome {
        reject_ticket_reply::Outcome::Failure(failure) => failure,
        reject_ticket_reply::Outcome::Success(rejected) => panic!("expected a failure, got {rejected:?}"),
    }
}

fn approve_failure(outcome: approve_ticket_reply::Outcome) -> Failure {
    match outcome {
        approve_ticket_reply::Outcome::Failure(failure) => failure,
        approve_ticket_reply::Outcome::Success(approved) => panic!("expected a failure, got {approved:?}"),
    }
}

fn rejected(ticket_id: i64) -> reject_ticket_reply::Outcome {
    reject_ticket_reply::Outcome::Success(TicketRejected { ticket_id })
}

fn approved(ticket_id: i64) -> approve_ticket_reply::Outcome {
    approve_ticket_reply::Outcome::Success(TicketApproved { ticket_id })
}

#[tokio::test]
async fn create_ticket_prices_the_order_and_stores_a_pending_ticket_indexed_by_order() {
    let app = App::spawn("rs-create").await.unwrap();

    let ticket = created(app.create("m-1", "order-a", AJANTA, &[("chicken-vindaloo", 2), ("naan", 3)]).await.unwrap());
    let total = 2 * 1295 + 3 * 350;
    assert_eq!(ticket, TicketCreated { ticket_id: 1, total: Some(Money::usd(total)) });

    let stored = app.ticket(1).await.unwrap().unwrap();
    assert_eq!(stored.order_id, "order-a");
    assert_eq!(stored.restaurant_id, AJANTA);
    assert_eq!(stored.state(), TicketState::CreatePending);
    assert_eq!(stored.total, Some(Money::usd(total)));
    let lines: Vec<_> = stored
        .line_items
        .iter()
        .map(|l| (l.menu_item_id.as_str(), l.quantity, l.unit_price.clone().unwrap_or_default().amount_minor))
        .collect();
    assert_eq!(lines, vec![("chicken-vindaloo", 2, 1295), ("naan", 3, 350)]);
    let by_order = app.by_order("order-a").await.unwrap().unwrap();
    assert_eq!(by_order, GetTicketByOrderResponse { ticket: Some(stored.clone()), tombstone: false });

    // Another CreateTicket for the same order (another message id) returns the
    // existing ticket and creates nothing.
    let again = created(app.create("m-2", "order-a", AJANTA, &[("mango-lassi", 1)]).await.unwrap());
    assert_eq!(again, TicketCreated { ticket_id: 1, total: Some(Money::usd(total)) });
    assert_eq!(app.ticket(1).await.unwrap(), Some(stored));
    assert_eq!(app.ticket(2).await.unwrap(), None);

    // The next order gets the next id.
    let other = created(app.create("m-3", "order-b", FLAKY_KITCHEN, &[("samosa", 1)]).await.unwrap());
    assert_eq!(other, TicketCreated { ticket_id: 2, total: Some(Money::usd(475)) });

    app.stop().await.unwrap();
}

#[tokio::test]
async fn create_ticket_refuses_unknown_restaurants_unknown_items_and_invalid_orders() {
    let app = App::spawn("rs-refuse").await.unwrap();

    let failure = create_failure(app.create("m-1", "order-1", 99, &[("naan", 1)]).await.unwrap());
    assert_eq!((failure.code.as_str(), failure.transient), ("RESTAURANT_NOT_FOUND", false));

    let failure = create_failure(app.create("m-2", "order-2", AJANTA, &[("naan", 1), ("pizza", 2)]).await.unwrap());
    assert_eq!((failure.code.as_str(), failure.transient), ("MENU_ITEM_NOT_FOUND", false));
    assert!(failure.message.contains("pizza"), "{}", failure.message);

    let fifty_one: Vec<_> = (0..51).map(|_| ("naan", 1)).collect();
    let invalid: [(&str, &[(&str, i32)]); 5] = [
        ("order-3", &[("naan", 0)]),
        ("order-4", &[("naan", 101)]),
        ("order-5", &[("naan", -1)]),
        ("order-6", &[]),
        ("order-7", &fifty_one),
    ];
    for (i, (order_id, items)) in invalid.iter().enumerate() {
        let failure = create_failure(app.create(&format!("m-invalid-{i}"), order_id, AJANTA, items).await.unwrap());
        assert_eq!((failure.code.as_str(), failure.transient), ("INVALID_ORDER", false), "{order_id}");
    }

    for order_id in ["order-1", "order-2", "order-3", "order-4", "order-5", "order-6", "order-7"] {
        assert_eq!(app.by_order(order_id).await.unwrap(), None, "{order_id} must have no ticket");
    }
    assert_eq!(app.ticket(1).await.unwrap(), None);

    app.stop().await.unwrap();
}

#[tokio::test]
async fn reject_ticket_rejects_a_pending_ticket_but_not_an_approved_one_and_always_leaves_a_tombstone() {
    let app = App::spawn("rs-reject").await.unwrap();

    // CREATE_PENDING -> REJECTED; a second RejectTicket is a success too.
    let ticket = created(app.create("m-1", "order-a", AJANTA, &[("naan", 1)]).await.unwrap());
    assert_eq!(app.reject("m-2", "order-a").await.unwrap(), rejected(ticket.ticket_id));
    assert_eq!(app.state_of(ticket.ticket_id).await.unwrap(), TicketState::Rejected);
    assert!(app.by_order("order-a").await.unwrap().unwrap().tombstone);
    assert_eq!(app.reject("m-3", "order-a").await.unwrap(), rejected(ticket.ticket_id));
    assert_eq!(app.state_of(ticket.ticket_id).await.unwrap(), TicketState::Rejected);

    // A rejected ticket cannot be approved.
    let failure = approve_failure(app.approve("m-4", "order-a", ticket.ticket_id).await.unwrap());
    assert_eq!((failure.code.as_str(), failure.transient), ("TICKET_REJECTED", false));
    assert_eq!(app.state_of(ticket.ticket_id).await.unwrap(), TicketState::Rejected);

    // AWAITING_ACCEPTANCE cannot be rejected; the tombstone is written all the same.
    let accepted = created(app.create("m-5", "order-b", AJANTA, &[("samosa", 2)]).await.unwrap());
    assert_eq!(app.approve("m-6", "order-b", accepted.ticket_id).await.unwrap(), approved(accepted.ticket_id));
    let failure = reject_failure(app.reject("m-7", "order-b").await.unwrap());
    assert_eq!((failure.code.as_str(), failure.transient), ("TICKET_ALREADY_ACCEPTED", false));
    let by_order = app.by_order("order-b").await.unwrap().unwrap();
    assert_eq!(by_order.ticket.unwrap().state(), TicketState::AwaitingAcceptance);
    assert!(by_order.tombstone);

    // No ticket: an empty rollback.
    assert_eq!(app.reject("m-8", "order-c").await.unwrap(), rejected(0));
    assert_eq!(
        app.by_order("order-c").await.unwrap(),
        Some(GetTicketByOrderResponse { ticket: None, tombstone: true })
    );

    app.stop().await.unwrap();
}

#[tokio::test]
async fn approve_ticket_moves_a_pending_ticket_to_awaiting_acceptance_and_refuses_unknown_tickets() {
    let app = App::spawn("rs-approve").await.unwrap();

    let ticket = created(app.create("m-1", "order-a", AJANTA, &[("chicken-tikka-masala", 1)]).await.unwrap());
    let other = created(app.create("m-2", "order-b", AJANTA, &[("naan", 1)]).await.unwrap());

    // Unknown id, another order's ticket, a non-positive id: TICKET_NOT_FOUND.
    for (message_id, order_id, ticket_id) in
        [("m-3", "order-a", 999), ("m-4", "order-a", other.ticket_id), ("m-5", "order-a", 0)]
    {
        let failure = approve_failure(app.approve(message_id, order_id, ticket_id).await.unwrap());
        assert_eq!((failure.code.as_str(), failure.transient), ("TICKET_NOT_FOUND", false), "{ticket_id}");
    }
    assert_eq!(app.state_of(other.ticket_id).await.unwrap(), TicketState::CreatePending);
    assert_eq!(app.state_of(ticket.ticket_id).await.unwrap(), TicketState::CreatePending);

    assert_eq!(app.approve("m-6", "order-a", ticket.ticket_id).await.unwrap(), approved(ticket.ticket_id));
    assert_eq!(app.state_of(ticket.ticket_id).await.unwrap(), TicketState::AwaitingAcceptance);
    // Approving again (another message id) is a success and changes nothing.
    assert_eq!(app.approve("m-7", "order-a", ticket.ticket_id).await.unwrap(), approved(ticket.ticket_id));
    assert_eq!(app.state_of(ticket.ticket_id).await.unwrap(), TicketState::AwaitingAcceptance);
    assert_eq!(app.state_of(other.ticket_id).await.unwrap(), TicketState::CreatePending);

    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_command_delivered_twice_gets_the_same_reply_and_changes_state_once() {
    let app = App::spawn("rs-dup").await.unwrap();
    let create =
        CreateTicketCommand { order_id: "order-a".into(), restaurant_id: AJANTA, items: vec![line("naan", 2)] };

    // Both copies are in the queue before either is handled (prefetch > 1, so they
    // may also be handled concurrently): one ticket, two identical replies.
    for _ in 0..2 {
        app.env.send_command(QUEUE, "m-create", "order-a", &create, deadline_in(60_000)).await.unwrap();
    }
    let first: CreateTicketReply = app.reply_to("m-create").await.unwrap();
    let second: CreateTicketReply = app.reply_to("m-create").await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        first.outcome,
        Some(create_ticket_reply::Outcome::Success(TicketCreated { ticket_id: 1, total: Some(Money::usd(700)) }))
    );
    assert_eq!(app.ticket(2).await.unwrap(), None);
    // The id sequence moved once: the next order's ticket is 2.
    assert_eq!(created(app.create("m-next", "order-b", AJANTA, &[("naan", 1)]).await.unwrap()).ticket_id, 2);

    // ApproveTicket twice with one message id: the same success.
    for _ in 0..2 {
        assert_eq!(app.approve("m-approve", "order-a", 1).await.unwrap(), approved(1));
    }
    assert_eq!(app.state_of(1).await.unwrap(), TicketState::AwaitingAcceptance);

    // RejectTicket twice with one message id.
    for _ in 0..2 {
        assert_eq!(app.reject("m-reject", "order-b").await.unwrap(), rejected(2));
    }
    assert_eq!(app.state_of(2).await.unwrap(), TicketState::Rejected);

    // A stored failure is replayed too, and still created nothing.
    for _ in 0..2 {
        let failure = create_failure(app.create("m-bad", "order-c", 99, &[("naan", 1)]).await.unwrap());
        assert_eq!(failure.code, "RESTAURANT_NOT_FOUND");
    }
    assert_eq!(app.by_order("order-c").await.unwrap(), None);

    // A replayed outcome is the stored one even when the world has moved on: the
    // first delivery of m-late ran before the tombstone, the second after it.
    let late = created(app.create("m-late", "order-d", AJANTA, &[("samosa", 1)]).await.unwrap());
    assert_eq!(app.reject("m-reject-d", "order-d").await.unwrap(), rejected(late.ticket_id));
    assert_eq!(created(app.create("m-late", "order-d", AJANTA, &[("samosa", 1)]).await.unwrap()), late);
    assert_eq!(app.state_of(late.ticket_id).await.unwrap(), TicketState::Rejected);

    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_compensation_before_its_action_is_an_empty_rollback_and_the_late_action_is_refused() {
    let app = App::spawn("rs-tombstone").await.unwrap();

    assert_eq!(app.reject("m-reject", "order-a").await.unwrap(), rejected(0));
    assert_eq!(
        app.by_order("order-a").await.unwrap(),
        Some(GetTicketByOrderResponse { ticket: None, tombstone: true })
    );

    let failure = create_failure(app.create("m-create", "order-a", AJANTA, &[("naan", 1)]).await.unwrap());
    assert_eq!((failure.code.as_str(), failure.transient), ("TICKET_CANCELLED", false));

    // No ticket in force for the order, and none was created at all.
    assert_eq!(
        app.by_order("order-a").await.unwrap(),
        Some(GetTicketByOrderResponse { ticket: None, tombstone: true })
    );
    assert_eq!(app.ticket(1).await.unwrap(), None);

    app.stop().await.unwrap();
}

#[tokio::test]
async fn garbage_and_unknown_commands_are_dead_lettered_and_the_consumer_keeps_going() {
    let app = App::spawn("rs-dlq").await.unwrap();
    let properties = |message_id: &str, kind: &str| {
        BasicProperties::default()
            .with_message_id(message_id.into())
            .with_correlation_id("order-x".into())
            .with_type(kind.into())
            .with_reply_to(app.env.reply_queue().into())
            .with_content_type("application/x-protobuf".into())
    };
    // 0xff... is a truncated varint: not a CreateTicketCommand.
    let garbage = properties("m-garbage", &CreateTicketCommand::full_name());
    app.env.send_raw(QUEUE, &[0xff, 0xff, 0xff, 0xff], garbage).await.unwrap();
    let unknown = properties("m-unknown", "ftgo.restaurant.v1.CookDinnerCommand");
    let valid_payload = RejectTicketCommand { order_id: "order-x".into() }.encode_to_vec();
    app.env.send_raw(QUEUE, &valid_payload, unknown).await.unwrap();

    let dead = app.env.wait_dead_letters(QUEUE, 2, Duration::from_secs(15)).await.unwrap();
    let reasons: Vec<(&str, &str)> = dead
        .iter()
        .map(|d| {
            let reason =
                d.reason.as_deref().unwrap_or_else(|| panic!("{}: no dead-letter reason header", d.message_id));
            (d.message_id.as_str(), reason)
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "m-garbage");
    assert!(reasons[0].1.contains("malformed"), "{}", reasons[0].1);
    assert_eq!(reasons[1].0, "m-unknown");
    assert!(reasons[1].1.contains("CookDinnerCommand"), "{}", reasons[1].1);

    // Neither was acted upon (the unknown one carried a valid RejectTicket payload),
    // and the next command is answered: its reply is the first on the reply queue.
    assert_eq!(app.by_order("order-x").await.unwrap(), None);
    let ticket = created(app.create("m-valid", "order-y", AJANTA, &[("naan", 1)]).await.unwrap());
    assert_eq!(ticket.ticket_id, 1);

    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_expired_command_changes_nothing() {
    let app = App::spawn("rs-expired").await.unwrap();
    let past = now_millis() - 1_000;

    // Expired in the broker (its AMQP expiration has passed) or refused by the
    // service (its deadline has): either way, nothing happens.
    let create =
        CreateTicketCommand { order_id: "order-a".into(), restaurant_id: AJANTA, items: vec![line("naan", 1)] };
    app.env.send_command(QUEUE, "m-expired-create", "order-a", &create, Some(past)).await.unwrap();

    // This one the broker delivers (long AMQP expiration); only the deadline header
    // says it is too late, so it is the service that must refuse it.
    let envelope = Envelope {
        message_id: "m-expired-reject".into(),
        correlation_id: "order-b".into(),
        reply_to: Some(app.env.reply_queue().into()),
        type_name: RejectTicketCommand::full_name(),
        attempt: 1,
        deadline_ms: Some(past),
        ..Envelope::default()
    };
    let properties = envelope.to_properties(now_millis()).with_expiration("60000".into());
    let reject = RejectTicketCommand { order_id: "order-b".into() }.encode_to_vec();
    app.env.send_raw(QUEUE, &reject, properties).await.unwrap();

    // A live command behind them is answered first and gets ticket 1: the expired
    // CreateTicket took no id. order-b has no tombstone, so its CreateTicket works.
    assert_eq!(created(app.create("m-live", "order-b", AJANTA, &[("naan", 1)]).await.unwrap()).ticket_id, 1);
    assert_eq!(app.by_order("order-a").await.unwrap(), None);
    let order_b = app.by_order("order-b").await.unwrap().unwrap();
    assert!(!order_b.tombstone);
    assert_eq!(order_b.ticket.unwrap().state(), TicketState::CreatePending);

    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_flaky_kitchen_fails_approve_ticket_twice_then_succeeds() {
    let app = App::spawn("rs-flaky").await.unwrap();
    let ticket = created(app.create("m-create", "order-a", FLAKY_KITCHEN, &[("mango-lassi", 2)]).await.unwrap());

    // The orchestrator retries with the same message id; transient failures are
    // not stored, so each retry is handled afresh.
    for attempt in 1..=2 {
        let failure = approve_failure(app.approve("m-approve", "order-a", ticket.ticket_id).await.unwrap());
        assert_eq!((failure.code.as_str(), failure.transient), ("KITCHEN_UNAVAILABLE", true), "attempt {attempt}");
        assert_eq!(app.state_of(ticket.ticket_id).await.unwrap(), TicketState::CreatePending);
    }
    assert_eq!(app.approve("m-approve", "order-a", ticket.ticket_id).await.unwrap(), approved(ticket.ticket_id));
    assert_eq!(app.state_of(ticket.ticket_id).await.unwrap(), TicketState::AwaitingAcceptance);
    // From now on the stored success is the reply.
    assert_eq!(app.approve("m-approve", "order-a", ticket.ticket_id).await.unwrap(), approved(ticket.ticket_id));

    // Ajanta is not flaky.
    let steady = created(app.create("m-create-2", "order-b", AJANTA, &[("naan", 1)]).await.unwrap());
    assert_eq!(app.approve("m-approve-2", "order-b", steady.ticket_id).await.unwrap(), approved(steady.ticket_id));

    app.stop().await.unwrap();
}

#[tokio::test]
async fn without_fault_injection_the_flaky_kitchen_approves_at_once() {
    let app = App::spawn_with("rs-noflaky", false).await.unwrap();
    let ticket = created(app.create("m-create", "order-a", FLAKY_KITCHEN, &[("naan", 1)]).await.unwrap());
    assert_eq!(app.approve("m-approve", "order-a", ticket.ticket_id).await.unwrap(), approved(ticket.ticket_id));
    assert_eq!(app.state_of(ticket.ticket_id).await.unwrap(), TicketState::AwaitingAcceptance);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn read_calls_serve_fixtures_and_validate_their_arguments() {
    let app = App::spawn("rs-reads").await.unwrap();
    let mut grpc = app.grpc.clone();

    let ajanta = grpc.get_restaurant(GetRestaurantRequest { restaurant_id: AJANTA }).await.unwrap().into_inner();
    assert_eq!(ajanta.name, "Ajanta");
    let vindaloo = ajanta.menu.iter().find(|m| m.menu_item_id == "chicken-vindaloo").unwrap();
    assert_eq!((vindaloo.name.as_str(), vindaloo.price.clone()), ("Chicken Vindaloo", Some(Money::usd(1295))));
    let flaky = grpc.get_restaurant(GetRestaurantRequest { restaurant_id: FLAKY_KITCHEN }).await.unwrap().into_inner();
    assert_eq!(flaky.name, "Flaky Kitchen");
    assert_eq!(flaky.menu, ajanta.menu);

    let status = grpc.get_restaurant(GetRestaurantRequest { restaurant_id: 99 }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = grpc.get_restaurant(GetRestaurantRequest { restaurant_id: 0 }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("restaurant_id"), "{}", status.message());

    let status = grpc.get_ticket(GetTicketRequest { ticket_id: 42 }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = grpc.get_ticket(GetTicketRequest { ticket_id: -1 }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("ticket_id"), "{}", status.message());

    let status = grpc.get_ticket_by_order(GetTicketByOrderRequest { order_id: "nope".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = grpc.get_ticket_by_order(GetTicketByOrderRequest { order_id: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("order_id"), "{}", status.message());

    app.stop().await.unwrap();
}
