//! The runner for the real system: CreateOrder through order_service's gRPC API,
//! then the order followed to its terminal state, by WatchOrder (the default: the
//! stream closes after the terminal event) or by polling GetOrder (`--poll`).
//!
//! No call is retried: the point is to see what the system does under load, so a
//! failed CreateOrder is an error and a saga not seen to end within the saga
//! timeout is `UNFINISHED`. A watch stream that breaks is counted as an error and
//! the saga is then followed by polling, so one broken stream does not hide how
//! the saga ended.

use std::time::Duration;

use proto::order::v1::{
    GetOrderRequest, Order, OrderState, SagaStatus, WatchOrderRequest, order_service_client::OrderServiceClient,
};
use tonic::{Code, Status, transport::Channel};

use crate::{
    engine::{SagaOutcome, SagaRunner},
    mix::Scenario,
    stats::{CallError, SagaEnd},
};

/// How a saga is followed to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// One WatchOrder stream per saga.
    Watch,
    /// GetOrder every `interval`.
    Poll { interval: Duration },
}

/// Settings of the system runner.
#[derive(Debug, Clone)]
pub struct SystemSettings {
    pub follow: Follow,
    /// One unary call may take this long.
    pub call_timeout: Duration,
    /// A saga not seen to end within this long is `UNFINISHED`.
    pub saga_timeout: Duration,
    /// Send an idempotency key with every CreateOrder (one more Redis write per saga).
    pub idempotency_keys: bool,
    /// Prefix of the idempotency keys (unique per run).
    pub key_prefix: String,
}

/// Drives sagas through order_service's API over a few HTTP/2 connections.
pub struct SystemRunner {
    clients: Vec<OrderServiceClient<Channel>>,
    settings: SystemSettings,
    /// Idempotency keys handed out so far.
    keys: std::sync::atomic::AtomicU64,
}

impl SystemRunner {
    /// Connects `connections` channels to `target` (each an HTTP/2 connection;
    /// the server limits the streams of one connection, and every watched saga
    /// holds one).
    pub async fn connect(target: &str, connections: usize, settings: SystemSettings) -> anyhow::Result<Self> {
        let clients = order_clients(target, connections).await?;
        Ok(Self { clients, settings, keys: std::sync::atomic::AtomicU64::new(0) })
    }

    fn client(&self, index: u64) -> OrderServiceClient<Channel> {
        self.clients[(index % self.clients.len() as u64) as usize].clone()
    }
}

/// `connections` clients of order_service at `target` (at least one), each on
/// an HTTP/2 connection of its own.
pub async fn order_clients(target: &str, connections: usize) -> anyhow::Result<Vec<OrderServiceClient<Channel>>> {
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        let channel = tonic::transport::Endpoint::from_shared(target.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to order_service at {target}: {e}"))?;
        clients.push(OrderServiceClient::new(channel));
    }
    Ok(clients)
}

fn code_name(code: Code) -> String {
    format!("{code:?}")
}

fn error(call: &'static str, status: &Status) -> CallError {
    CallError { call, code: code_name(status.code()) }
}

fn timed_out(call: &'static str) -> CallError {
    CallError { call, code: code_name(Code::DeadlineExceeded) }
}

/// The terminal state of a saga status, if it is one.
fn terminal_status(status: i32) -> Option<&'static str> {
    match SagaStatus::try_from(status).ok()? {
        SagaStatus::Approved => Some("APPROVED"),
        SagaStatus::Rejected => Some("REJECTED"),
        SagaStatus::CompensationFailed => Some("COMPENSATION_FAILED"),
        _ => None,
    }
}

/// The terminal state of an order as GetOrder shows it, if it is terminal.
fn terminal_order(order: &Order) -> Option<&'static str> {
    order.saga.as_ref().and_then(|s| terminal_status(s.status)).or(match OrderState::try_from(order.state).ok()? {
        OrderState::Approved => Some("APPROVED"),
        OrderState::Rejected => Some("REJECTED"),
        _ => None,
    })
}

impl SagaRunner for SystemRunner {
    async fn run(&self, index: u64, scenario: Scenario) -> SagaOutcome {
        let mut errors = Vec::new();
        let key = if self.settings.idempotency_keys {
            // Numbered per runner, not by `index`: the warm-up and every round
            // start their indexes at 0, and a reused key would return an old order.
            format!("{}-{}", self.settings.key_prefix, self.keys.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        } else {
            String::new()
        };
        let mut client = self.client(index);
        let created =
            tokio::time::timeout(self.settings.call_timeout, client.create_order(scenario.request(key))).await;
        let order_id = match created {
            Ok(Ok(response)) => response.into_inner().order_id,
            Ok(Err(status)) => {
                errors.push(error("CreateOrder", &status));
                return SagaOutcome { end: SagaEnd::Failed { state: "CREATE_FAILED" }, errors };
            }
            Err(_) => {
                errors.push(timed_out("CreateOrder"));
                return SagaOutcome { end: SagaEnd::Failed { state: "CREATE_FAILED" }, errors };
            }
        };
        let deadline = tokio::time::Instant::now() + self.settings.saga_timeout;
        let mut state = None;
        if self.settings.follow == Follow::Watch {
            state = self.watch(&mut client, &order_id, deadline, &mut errors).await;
        }
        if state.is_none() {
            let interval = match self.settings.follow {
                Follow::Poll { interval } => interval,
                // Fallback after a broken watch.
                Follow::Watch => Duration::from_millis(50),
            };
            state = self.poll(&mut client, &order_id, interval, deadline, &mut errors).await;
        }
        let end = match state {
            Some(state) => SagaEnd::Terminal { state: state.to_owned(), expected: state == scenario.expected_state() },
            None => {
                errors.push(CallError { call: "follow", code: code_name(Code::DeadlineExceeded) });
                SagaEnd::Failed { state: "UNFINISHED" }
            }
        };
        SagaOutcome { end, errors }
    }
}

impl SystemRunner {
    /// WatchOrder until the terminal event; `None` if the stream broke or the
    /// deadline passed.
    async fn watch(
        &self,
        client: &mut OrderServiceClient<Channel>,
        order_id: &str,
        deadline: tokio::time::Instant,
        errors: &mut Vec<CallError>,
    ) -> Option<&'static str> {
        let request = WatchOrderRequest { order_id: order_id.to_owned(), after_event_id: String::new() };
        let mut stream = match tokio::time::timeout(self.settings.call_timeout, client.watch_order(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                errors.push(error("WatchOrder", &status));
                return None;
            }
            Err(_) => {
                errors.push(timed_out("WatchOrder"));
                return None;
            }
        };
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Ok(Ok(Some(event))) if event.terminal => {
                    return Some(terminal_status(event.saga_status).unwrap_or(
                        match OrderState::try_from(event.order_state) {
                            Ok(OrderState::Approved) => "APPROVED",
                            Ok(OrderState::Rejected) => "REJECTED",
                            _ => "COMPENSATION_FAILED",
                        },
                    ));
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => {
                    errors.push(CallError { call: "WatchOrder", code: "EndedEarly".into() });
                    return None;
                }
                Ok(Err(status)) => {
                    errors.push(error("WatchOrder", &status));
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// GetOrder every `interval` until the order is terminal or the deadline passes.
    async fn poll(
        &self,
        client: &mut OrderServiceClient<Channel>,
        order_id: &str,
        interval: Duration,
        deadline: tokio::time::Instant,
        errors: &mut Vec<CallError>,
    ) -> Option<&'static str> {
        while tokio::time::Instant::now() < deadline {
            let request = GetOrderRequest { order_id: order_id.to_owned() };
            match tokio::time::timeout(self.settings.call_timeout, client.get_order(request)).await {
                Ok(Ok(response)) => {
                    if let Some(state) = response.into_inner().order.as_ref().and_then(terminal_order) {
                        return Some(state);
                    }
                }
                Ok(Err(status)) => errors.push(error("GetOrder", &status)),
                Err(_) => errors.push(timed_out("GetOrder")),
            }
            tokio::time::sleep(interval).await;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proto::order::v1::SagaInfo;

    use super::*;

    #[test]
    fn an_order_is_terminal_by_its_saga_status_first() {
        let mut order = Order { state: OrderState::ApprovalPending as i32, ..Default::default() };
        assert_eq!(terminal_order(&order), None);
        order.saga = Some(SagaInfo { status: SagaStatus::CompensationFailed as i32, ..Default::default() });
        assert_eq!(terminal_order(&order), Some("COMPENSATION_FAILED"));
        let order = Order { state: OrderState::Rejected as i32, ..Default::default() };
        assert_eq!(terminal_order(&order), Some("REJECTED"));
    }
}
