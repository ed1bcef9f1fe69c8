//! Drives the sagas through the order API of the two order_service replicas: the
//! README's five demo scenarios in a seeded mix, paced over the driving period,
//! at most `concurrency` sagas in flight, each followed with `WatchOrder` until
//! its terminal event.
//!
//! The one decision to know: every saga has its own idempotency key, so a
//! CreateOrder whose replica died mid-call is simply sent again, to the other
//! replica, with backoff: the retry returns the order the first call created (if
//! it got that far) and never starts a second saga. A watch cut by a dying replica
//! resumes on the other one after the last event it saw.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use proto::order::v1::{
    CreateOrderRequest, GetOrderRequest, ListOrdersRequest, Order, OrderState, SagaEvent, SagaStatus,
    WatchOrderRequest, order_service_client::OrderServiceClient,
};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use tokio::sync::watch;
use tonic::{Code, Status, transport::Channel};

/// One attempt of a unary call may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// CreateOrder is retried for this long before the saga is given up.
const CREATE_BUDGET: Duration = Duration::from_secs(60);
/// With no event for this long, the watcher asks GetOrder (a missed wake-up must
/// not stall the driver).
const WATCH_IDLE: Duration = Duration::from_secs(3);

pub use scenarios::Scenario;

/// A scenario's end state without faults, in the checker's terms.
pub trait Expected {
    fn expected(self) -> Final;
}

impl Expected for Scenario {
    fn expected(self) -> Final {
        if self.approves() { Final::Approved } else { Final::Rejected }
    }
}

/// The scenario of each saga: an equal share of each, in a seeded order.
pub fn scenarios(seed: u64, sagas: usize) -> Vec<Scenario> {
    let mut mix: Vec<Scenario> = (0..sagas).map(|i| Scenario::ALL[i % Scenario::ALL.len()]).collect();
    mix.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5ca1_ab1e));
    mix
}

/// How a saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Final {
    Approved,
    Rejected,
    /// `COMPENSATION_FAILED`: parked for an operator (terminal for WatchOrder).
    Parked,
}

impl Final {
    fn of_status(status: i32) -> Option<Self> {
        match SagaStatus::try_from(status).ok()? {
            SagaStatus::Approved => Some(Final::Approved),
            SagaStatus::Rejected => Some(Final::Rejected),
            SagaStatus::CompensationFailed => Some(Final::Parked),
            _ => None,
        }
    }

    /// The terminal state of an order as GetOrder shows it, if it is terminal.
    pub fn of_order(order: &Order) -> Option<Self> {
        let by_saga = order.saga.as_ref().and_then(|s| Self::of_status(s.status));
        by_saga.or(match OrderState::try_from(order.state).ok()? {
            OrderState::Approved => Some(Final::Approved),
            OrderState::Rejected => Some(Final::Rejected),
            _ => None,
        })
    }
}

/// A saga's end: its state and when the service recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    pub state: Final,
    pub at: SystemTime,
}

/// What the driver knows of one saga.
#[derive(Debug, Clone)]
pub struct SagaRecord {
    pub index: usize,
    pub scenario: Scenario,
    pub idempotency_key: String,
    pub order_id: Option<String>,
    /// CreateOrder calls made (more than one: retried after a failure).
    pub create_attempts: u32,
    /// The last error of a CreateOrder that never succeeded.
    pub create_error: Option<String>,
    /// Responses that said `created: true` (more than one would be a second saga).
    pub created_true: u32,
    /// A retried CreateOrder answered with another order id than an earlier one.
    pub other_ids: Vec<String>,
    pub terminal: Option<Terminal>,
    /// Watches resumed after their stream broke.
    pub watch_resumes: u32,
    /// When its CreateOrder calls ended, from the start of driving.
    pub create_done: Duration,
}

/// Counters the progress display reads.
#[derive(Debug, Default)]
pub struct Progress {
    pub created: AtomicUsize,
    pub terminal: AtomicUsize,
    pub create_retries: AtomicUsize,
    pub watch_resumes: AtomicUsize,
    /// Why CreateOrder calls failed and watches broke, e.g.
    /// `CreateOrder: Unavailable` or `WatchOrder stream: ended before the terminal event`.
    pub causes: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Progress {
    fn cause(&self, what: String) {
        if let Ok(mut causes) = self.causes.lock() {
            *causes.entry(what).or_default() += 1;
        }
    }
}

/// gRPC clients of both order_service replicas.
#[derive(Clone)]
pub struct OrderApi {
    replicas: Vec<OrderServiceClient<Channel>>,
}

impl OrderApi {
    /// Lazy channels: they connect on first use and reconnect after a replica
    /// comes back on the same port.
    pub fn new(addrs: &[SocketAddr]) -> anyhow::Result<Self> {
        let mut replicas = Vec::new();
        for addr in addrs {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(Duration::from_millis(500))
                .connect_lazy();
            replicas.push(OrderServiceClient::new(channel));
        }
        anyhow::ensure!(!replicas.is_empty(), "no order_service replica");
        Ok(Self { replicas })
    }

    fn client(&self, replica: usize) -> OrderServiceClient<Channel> {
        self.replicas[replica % self.replicas.len()].clone()
    }

    /// GetOrder, trying each replica (starting with `prefer`) once.
    pub async fn get(&self, order_id: &str, prefer: usize) -> Result<Order, Status> {
        let mut last = Status::unavailable("no replica answered");
        for offset in 0..self.replicas.len() {
            let mut client = self.client(prefer + offset);
            let request = GetOrderRequest { order_id: order_id.to_owned() };
            match tokio::time::timeout(CALL_TIMEOUT, client.get_order(request)).await {
                Ok(Ok(response)) => {
                    return response.into_inner().order.ok_or_else(|| Status::internal("GetOrder without an order"));
                }
                Ok(Err(status)) if status.code() == Code::NotFound => return Err(status),
                Ok(Err(status)) => last = status,
                Err(_) => last = Status::deadline_exceeded("GetOrder timed out"),
            }
        }
        Err(last)
    }

    /// Every order id of the namespace, through ListOrders (newest first).
    pub async fn list_all(&self) -> Result<Vec<String>, Status> {
        let mut ids = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListOrdersRequest { page_size: 500, page_token: page_token.clone(), ..Default::default() };
            let mut last = None;
            let mut page = None;
            for replica in 0..self.replicas.len() {
                match tokio::time::timeout(CALL_TIMEOUT, self.client(replica).list_orders(request.clone())).await {
                    Ok(Ok(response)) => {
                        page = Some(response.into_inner());
                        break;
                    }
                    Ok(Err(status)) => last = Some(status),
                    Err(_) => last = Some(Status::deadline_exceeded("ListOrders timed out")),
                }
            }
            let Some(page) = page else {
                return Err(last.unwrap_or_else(|| Status::unavailable("no replica answered")));
            };
            ids.extend(page.orders.into_iter().map(|o| o.order_id));
            if page.next_page_token.is_empty() {
                return Ok(ids);
            }
            page_token = page.next_page_token;
        }
    }
}

/// The driver's settings.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    pub namespace: String,
    pub concurrency: usize,
    /// Saga `i` is not created before `t0 + period × i / sagas`.
    pub period: Duration,
    /// How long one worker follows a saga before leaving it to the final wait.
    pub follow_limit: Duration,
}

/// Runs every saga and returns their records, in saga order. `created` counts
/// CreateOrder calls that have finished (successfully or not).
pub async fn drive(
    api: OrderApi,
    settings: DriverSettings,
    scenarios: Vec<Scenario>,
    t0: Instant,
    created: watch::Sender<usize>,
    progress: Arc<Progress>,
) -> Vec<SagaRecord> {
    let total = scenarios.len();
    let next = Arc::new(AtomicUsize::new(0));
    let scenarios = Arc::new(scenarios);
    let created = Arc::new(created);
    let workers = (0..settings.concurrency.max(1)).map(|_| {
        let (api, settings, next, scenarios, created, progress) =
            (api.clone(), settings.clone(), next.clone(), scenarios.clone(), created.clone(), progress.clone());
        tokio::spawn(async move {
            let mut records = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= total {
                    return records;
                }
                let not_before = t0 + settings.period.mul_f64(index as f64 / total as f64);
                tokio::time::sleep_until(not_before.into()).await;
                let record = run_saga(&api, &settings, index, scenarios[index], t0, &created, &progress).await;
                records.push(record);
            }
        })
    });
    let mut records: Vec<SagaRecord> =
        futures::future::join_all(workers).await.into_iter().flat_map(|r| r.unwrap_or_default()).collect();
    records.sort_by_key(|r| r.index);
    records
}

async fn run_saga(
    api: &OrderApi,
    settings: &DriverSettings,
    index: usize,
    scenario: Scenario,
    t0: Instant,
    created: &watch::Sender<usize>,
    progress: &Progress,
) -> SagaRecord {
    let idempotency_key = format!("{}-saga-{index}", settings.namespace);
    let mut record = SagaRecord {
        index,
        scenario,
        idempotency_key: idempotency_key.clone(),
        order_id: None,
        create_attempts: 0,
        create_error: None,
        created_true: 0,
        other_ids: Vec::new(),
        terminal: None,
        watch_resumes: 0,
        create_done: Duration::ZERO,
    };
    create(api, index, scenario.request(idempotency_key), &mut record, progress).await;
    record.create_done = t0.elapsed();
    created.send_modify(|n| *n += 1);
    let Some(order_id) = record.order_id.clone() else { return record };
    progress.created.fetch_add(1, Ordering::Relaxed);
    record.terminal = follow(api, &order_id, index, settings.follow_limit, &mut record.watch_resumes, progress).await;
    if record.terminal.is_some() {
        progress.terminal.fetch_add(1, Ordering::Relaxed);
    }
    record
}

/// CreateOrder with retries: alternate replicas, exponential backoff, the same
/// idempotency key every time.
async fn create(
    api: &OrderApi,
    index: usize,
    request: CreateOrderRequest,
    record: &mut SagaRecord,
    progress: &Progress,
) {
    let began = Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut replica = index;
    loop {
        record.create_attempts += 1;
        if record.create_attempts > 1 {
            progress.create_retries.fetch_add(1, Ordering::Relaxed);
        }
        let mut client = api.client(replica);
        let error = match tokio::time::timeout(CALL_TIMEOUT, client.create_order(request.clone())).await {
            Ok(Ok(response)) => {
                let response = response.into_inner();
                if response.created {
                    record.created_true += 1;
                }
                match &record.order_id {
                    Some(first) if *first != response.order_id => record.other_ids.push(response.order_id),
                    Some(_) => {}
                    None => record.order_id = Some(response.order_id),
                }
                return;
            }
            // The key reused for another request, or a bad request: retrying will not help.
            Ok(Err(status)) if status.code() == Code::InvalidArgument => {
                record.create_error = Some(format!("{:?}: {}", status.code(), status.message()));
                return;
            }
            Ok(Err(status)) => {
                progress.cause(format!("CreateOrder: {:?}", status.code()));
                format!("{:?}: {}", status.code(), status.message())
            }
            Err(_) => {
                progress.cause("CreateOrder: timed out".into());
                "timed out".to_owned()
            }
        };
        if began.elapsed() > CREATE_BUDGET {
            record.create_error = Some(format!("gave up after {} attempts: {error}", record.create_attempts));
            return;
        }
        replica += 1;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

fn event_time(event: &SagaEvent) -> SystemTime {
    event.at.as_ref().map(timestamp_to_system).unwrap_or_else(SystemTime::now)
}

/// A protobuf timestamp as a `SystemTime`.
pub fn timestamp_to_system(ts: &prost_types::Timestamp) -> SystemTime {
    let nanos = u32::try_from(ts.nanos).unwrap_or_default();
    match u64::try_from(ts.seconds) {
        Ok(seconds) => SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// Follows the saga with WatchOrder until its terminal event, resuming on the
/// other replica after the last event seen when a stream breaks; `None` after
/// `limit`.
async fn follow(
    api: &OrderApi,
    order_id: &str,
    index: usize,
    limit: Duration,
    resumes: &mut u32,
    progress: &Progress,
) -> Option<Terminal> {
    let deadline = Instant::now() + limit;
    let mut after = String::new();
    let mut replica = index;
    let mut delay = Duration::from_millis(50);
    while Instant::now() < deadline {
        let mut client = api.client(replica);
        let request = WatchOrderRequest { order_id: order_id.to_owned(), after_event_id: after.clone() };
        let opened = tokio::time::timeout(CALL_TIMEOUT, client.watch_order(request)).await;
        match &opened {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => progress.cause(format!("WatchOrder call: {:?}", status.code())),
            Err(_) => progress.cause("WatchOrder call: timed out".into()),
        }
        if let Ok(Ok(response)) = opened {
            let mut stream = response.into_inner();
            loop {
                if Instant::now() >= deadline {
                    return None;
                }
                match tokio::time::timeout(WATCH_IDLE, stream.message()).await {
                    Ok(Ok(Some(event))) => {
                        delay = Duration::from_millis(50);
                        after = event.event_id.clone();
                        if event.terminal {
                            let state = Final::of_status(event.saga_status).unwrap_or(match event.order_state {
                                s if s == OrderState::Approved as i32 => Final::Approved,
                                s if s == OrderState::Rejected as i32 => Final::Rejected,
                                _ => Final::Parked,
                            });
                            return Some(Terminal { state, at: event_time(&event) });
                        }
                    }
                    // The stream ended or broke (a replica going away): resume.
                    Ok(Ok(None)) => {
                        progress.cause("WatchOrder stream: ended before the terminal event".into());
                        break;
                    }
                    Ok(Err(status)) => {
                        progress.cause(format!("WatchOrder stream: {:?}", status.code()));
                        break;
                    }
                    Err(_) => {
                        if let Ok(order) = api.get(order_id, replica).await
                            && let Some(state) = Final::of_order(&order)
                        {
                            let at = order.updated_at.as_ref().map(timestamp_to_system).unwrap_or_else(SystemTime::now);
                            return Some(Terminal { state, at });
                        }
                    }
                }
            }
        }
        *resumes += 1;
        progress.watch_resumes.fetch_add(1, Ordering::Relaxed);
        replica += 1;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
    None
}

/// Waits (up to `timeout`) until every created saga is terminal, polling GetOrder
/// for those the workers left unfinished.
pub async fn wait_terminal(api: &OrderApi, records: &mut [SagaRecord], timeout: Duration, progress: &Progress) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut pending = 0;
        for record in records.iter_mut().filter(|r| r.order_id.is_some() && r.terminal.is_none()) {
            let Some(order_id) = record.order_id.as_deref() else { continue };
            match api.get(order_id, record.index).await {
                Ok(order) => match Final::of_order(&order) {
                    Some(state) => {
                        let at = order.updated_at.as_ref().map(timestamp_to_system).unwrap_or_else(SystemTime::now);
                        record.terminal = Some(Terminal { state, at });
                        progress.terminal.fetch_add(1, Ordering::Relaxed);
                    }
                    None => pending += 1,
                },
                Err(_) => pending += 1,
            }
        }
        if pending == 0 || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_an_equal_share_of_every_scenario_and_depends_on_the_seed() {
        let mix = scenarios(3, 300);
        for scenario in Scenario::ALL {
            assert_eq!(mix.iter().filter(|s| **s == scenario).count(), 60);
        }
        assert_eq!(mix, scenarios(3, 300));
        assert_ne!(mix, scenarios(4, 300));
    }

    #[test]
    fn each_scenario_asks_for_its_readme_input() {
        let r = Scenario::OverLimit.request("k".into());
        assert_eq!((r.consumer_id, r.restaurant_id, r.items[0].quantity), (1, 1, 40));
        assert_eq!(r.items[0].menu_item_id, "chicken-vindaloo");
        assert_eq!(Scenario::FlakyKitchen.request("k".into()).restaurant_id, 2);
        assert_eq!(Scenario::FlakyKitchen.expected(), Final::Approved);
        assert_eq!(Scenario::CardDeclined.expected(), Final::Rejected);
    }
}
