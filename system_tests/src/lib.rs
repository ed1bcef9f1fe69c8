//! The end-to-end harness: [`System`] runs the four services in-process, in a
//! namespace of its own, against the real RabbitMQ and Redis, and reads outcomes
//! through the order API and the participants' gRPC read calls. The tests are in
//! `tests/`.
#![forbid(unsafe_code)]

use std::time::Duration;

use order_service::create_order_saga::{ACCOUNTING_QUEUE, CONSUMER_QUEUE, REPLY_QUEUE, RESTAURANT_QUEUE};
use proto::{
    accounting::v1::{
        AuthorizationState, ListAuthorizationsRequest, accounting_service_client::AccountingServiceClient,
    },
    common::v1::LineItem,
    order::v1::{
        CreateOrderRequest, GetOrderRequest, Order, SagaEvent, SagaEventType, WatchOrderRequest,
        order_service_client::OrderServiceClient,
    },
    restaurant::v1::{GetTicketByOrderRequest, TicketState, restaurant_service_client::RestaurantServiceClient},
};
use service_kit::{CancellationToken, runtime::RunningService, settings::CommonSettings};
use test_support::{TestEnv, grpc_channel, wait_serving};
use tonic::{Code, transport::Channel};

pub const WAIT: Duration = Duration::from_secs(30);

/// One running service.
pub struct Running {
    pub shutdown: CancellationToken,
    pub service: RunningService,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.service.wait().await;
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.service.grpc_addr
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Svc {
    Order,
    Consumer,
    Restaurant,
    Accounting,
}

/// The whole system in one namespace.
pub struct System {
    pub env: TestEnv,
    pub order_settings: order_service::Settings,
    pub order: Option<Running>,
    pub consumer: Option<Running>,
    pub restaurant: Option<Running>,
    pub accounting: Option<Running>,
}

impl System {
    /// Starts every service but those in `without`.
    pub async fn start(label: &str, without: &[Svc], tweak: impl FnOnce(&mut order_service::Settings)) -> Self {
        let env = TestEnv::new(label).await.expect("test env");
        for queue in [CONSUMER_QUEUE, RESTAURANT_QUEUE, ACCOUNTING_QUEUE, REPLY_QUEUE] {
            env.track_queue(queue);
        }
        let mut order_settings = order_service::Settings::local();
        order_settings.common = env.settings();
        order_settings.sweeper.interval = Duration::from_millis(50);
        tweak(&mut order_settings);
        let mut system = Self { env, order_settings, order: None, consumer: None, restaurant: None, accounting: None };
        for svc in [Svc::Consumer, Svc::Restaurant, Svc::Accounting, Svc::Order] {
            if !without.contains(&svc) {
                system.up(svc).await;
            }
        }
        system
    }

    pub fn common(&self) -> CommonSettings {
        self.env.settings()
    }

    /// Starts one service and waits until it is SERVING.
    pub async fn up(&mut self, svc: Svc) {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let service = match svc {
            Svc::Order => order_service::run(self.order_settings.clone(), token).await.expect("order_service"),
            Svc::Consumer => {
                let settings = consumer_service::Settings::new(self.common()).expect("settings");
                consumer_service::run(settings, token).await.expect("consumer_service")
            }
            Svc::Restaurant => {
                let settings = restaurant_service::Settings::new(self.common()).expect("settings");
                restaurant_service::run(settings, token).await.expect("restaurant_service")
            }
            Svc::Accounting => {
                let settings = accounting_service::Settings::new(self.common()).expect("settings");
                accounting_service::run(settings, token).await.expect("accounting_service")
            }
        };
        wait_serving(service.grpc_addr, WAIT).await.expect("serving");
        let running = Some(Running { shutdown, service });
        match svc {
            Svc::Order => self.order = running,
            Svc::Consumer => self.consumer = running,
            Svc::Restaurant => self.restaurant = running,
            Svc::Accounting => self.accounting = running,
        }
    }

    /// Stops one service gracefully.
    pub async fn down(&mut self, svc: Svc) {
        let running = match svc {
            Svc::Order => self.order.take(),
            Svc::Consumer => self.consumer.take(),
            Svc::Restaurant => self.restaurant.take(),
            Svc::Accounting => self.accounting.take(),
        };
        if let Some(running) = running {
            running.stop().await;
        }
    }

    pub async fn orders(&self) -> OrderServiceClient<Channel> {
        let addr = self.order.as_ref().expect("order_service running").addr();
        OrderServiceClient::new(grpc_channel(addr).await.expect("channel"))
    }

    pub async fn restaurant(&self) -> RestaurantServiceClient<Channel> {
        let addr = self.restaurant.as_ref().expect("restaurant_service running").addr();
        RestaurantServiceClient::new(grpc_channel(addr).await.expect("channel"))
    }

    pub async fn accounting(&self) -> AccountingServiceClient<Channel> {
        let addr = self.accounting.as_ref().expect("accounting_service running").addr();
        AccountingServiceClient::new(grpc_channel(addr).await.expect("channel"))
    }

    pub async fn create(&self, consumer_id: i64, restaurant_id: i64, items: &[(&str, i32)]) -> String {
        let request = CreateOrderRequest {
            consumer_id,
            restaurant_id,
            items: items.iter().map(|(id, q)| LineItem { menu_item_id: (*id).into(), quantity: *q }).collect(),
            idempotency_key: String::new(),
        };
        self.orders().await.create_order(request).await.expect("CreateOrder").into_inner().order_id
    }

    /// Watches the order's saga to its terminal event; returns the events and the
    /// order as GetOrder then shows it.
    pub async fn finish(&self, order_id: &str) -> (Vec<SagaEvent>, Order) {
        let mut client = self.orders().await;
        let mut stream = client
            .watch_order(WatchOrderRequest { order_id: order_id.into(), after_event_id: String::new() })
            .await
            .expect("WatchOrder")
            .into_inner();
        let mut events = Vec::new();
        let collect = async {
            while let Some(event) = stream.message().await.expect("event stream") {
                let terminal = event.terminal;
                events.push(event);
                if terminal {
                    break;
                }
            }
        };
        tokio::time::timeout(WAIT, collect).await.expect("saga reached a terminal event in time");
        (events, self.get(order_id).await)
    }

    pub async fn get(&self, order_id: &str) -> Order {
        self.orders()
            .await
            .get_order(GetOrderRequest { order_id: order_id.into() })
            .await
            .expect("GetOrder")
            .into_inner()
            .order
            .expect("order")
    }

    /// The order's ticket state in restaurant_service's store (None: no ticket).
    pub async fn ticket_state(&self, order_id: &str) -> (Option<TicketState>, bool) {
        match self.restaurant().await.get_ticket_by_order(GetTicketByOrderRequest { order_id: order_id.into() }).await {
            Ok(response) => {
                let response = response.into_inner();
                let state = response.ticket.map(|t| TicketState::try_from(t.state).expect("known state"));
                (state, response.tombstone)
            }
            Err(status) if status.code() == Code::NotFound => (None, false),
            Err(status) => panic!("GetTicketByOrder: {status}"),
        }
    }

    /// The order's authorizations in accounting_service's store: (in force, voided, tombstone).
    pub async fn authorizations(&self, order_id: &str) -> (Vec<i64>, usize, bool) {
        let response = self
            .accounting()
            .await
            .list_authorizations(ListAuthorizationsRequest { order_id: order_id.into() })
            .await
            .expect("ListAuthorizations")
            .into_inner();
        let in_force = response
            .authorizations
            .iter()
            .filter(|a| a.state == AuthorizationState::Authorized as i32)
            .map(|a| a.amount.as_ref().map(|m| m.amount_minor).unwrap_or_default())
            .collect();
        let voided = response.authorizations.iter().filter(|a| a.state == AuthorizationState::Voided as i32).count();
        (in_force, voided, response.tombstone)
    }

    pub async fn stop(mut self) {
        for svc in [Svc::Order, Svc::Consumer, Svc::Restaurant, Svc::Accounting] {
            self.down(svc).await;
        }
        self.env.cleanup().await;
    }
}

pub fn saga(order: &Order) -> proto::order::v1::SagaInfo {
    order.saga.clone().expect("saga info")
}

pub fn count(events: &[SagaEvent], kind: SagaEventType) -> usize {
    events.iter().filter(|e| e.r#type == kind as i32).count()
}
