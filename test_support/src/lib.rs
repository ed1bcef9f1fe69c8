//! Test helpers shared by every crate's integration tests. Each [`TestEnv`] is an
//! isolated namespace on the real RabbitMQ and Redis of the machine: its own queue
//! and key prefix, so tests run in parallel, and [`TestEnv::cleanup`] deletes what
//! it made (a test that panics first deletes it when its env is dropped).
//! Outcomes are awaited with [`eventually`], never with fixed sleeps.
//! [`ServiceUnderTest`] runs a service in-process, ready once its health says so.

use std::{cell::RefCell, future::Future, net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use lapin::{
    BasicProperties, Channel,
    options::{BasicGetOptions, BasicPublishOptions, QueueDeleteOptions},
    types::AMQPValue,
};
use messaging::{
    Broker, BrokerSettings, Envelope, OutgoingMessage, Publisher, QueueSpec,
    envelope::{HEADER_DEAD_LETTER_REASON, now_millis},
};
use redis::aio::ConnectionManager;
use service_kit::{
    CancellationToken, Namespace,
    runtime::RunningService,
    settings::{CommonSettings, Secret},
};

/// Panics unless every code in `codes`, and every `code = '…'` the Lua `scripts`
/// spell, is a failure code the reply `M` lists in the proto contract
/// (`failure_codes`): what a participant sends must be what clients and
/// order_service's metrics can expect. Returns how many codes it checked.
pub fn assert_failure_codes_listed<M: prost::Name>(codes: &[&str], scripts: &[&str]) -> usize {
    let contract = proto::contract::contract().expect("the proto contract reads");
    let reply = proto::TypeName::of::<M>();
    let spelled = scripts
        .iter()
        .flat_map(|script| script.split("code = '").skip(1))
        .map(|rest| rest.split_once('\'').map_or(rest, |(code, _)| code));
    let mut checked = 0;
    for code in codes.iter().copied().chain(spelled) {
        assert!(contract.failure_code(reply, code).is_some(), "{reply} does not list the failure code {code:?}");
        checked += 1;
    }
    checked
}

/// The broker tests use (`AMQP_URL` overrides).
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The Redis tests use (`REDIS_URL` overrides).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Which of `queues`, their dead-letter queues and their dead-letter exchanges
/// exist on the broker: what a clean-up must leave empty. Each is asked on a
/// channel of its own, since a passive declare of a missing one closes the
/// channel it was asked on.
pub async fn existing_topology(amqp: &lapin::Connection, queues: &[String]) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for spec in queues.iter().map(QueueSpec::new) {
        for queue in [spec.name.clone(), spec.dead_letter_queue()] {
            let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
            let channel = amqp.create_channel().await?;
            if channel.queue_declare(queue.as_str().into(), passive, Default::default()).await.is_ok() {
                found.push(queue);
            }
        }
        let exchange = spec.dead_letter_exchange();
        let passive = lapin::options::ExchangeDeclareOptions { passive: true, ..Default::default() };
        let channel = amqp.create_channel().await?;
        let declared = channel.exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Fanout,
            passive,
            Default::default(),
        );
        if declared.await.is_ok() {
            found.push(exchange);
        }
    }
    Ok(found)
}

/// The broker as tests reach it: classic queues that expire if a test dies
/// before its clean-up.
fn test_broker(connection_name: String) -> Broker {
    Broker::new(BrokerSettings {
        url: amqp_url(),
        connection_name,
        queue_type: messaging::topology::QueueType::Classic,
        queue_expires: Some(Duration::from_secs(600)),
    })
}

/// An isolated namespace on the real broker and Redis.
pub struct TestEnv {
    pub namespace: Namespace,
    pub redis: ConnectionManager,
    pub broker: Broker,
    publisher: Publisher,
    channel: Channel,
    /// Queue base names (without namespace) to delete at cleanup.
    queues: std::sync::Mutex<Vec<String>>,
    replies: QueueSpec,
    /// Set by [`Self::cleanup`]; until then, dropping the env deletes the
    /// namespace (see its `Drop`).
    cleaned: bool,
}

impl TestEnv {
    /// A fresh namespace; `label` names it in the broker's queue list.
    pub async fn new(label: &str) -> anyhow::Result<Self> {
        service_kit::telemetry::init_for_tests();
        let namespace = Namespace::random(label);
        let client = redis::Client::open(redis_url())?;
        let redis = ConnectionManager::new(client).await.context("Redis at REDIS_URL must be running")?;
        let broker = test_broker(format!("test:{}", namespace.prefix()));
        let channel = broker.channel().await.context("RabbitMQ at AMQP_URL must be running")?;
        let replies = QueueSpec::new(namespace.queue("test.replies"));
        replies.declare(&channel, messaging::topology::QueueType::Classic, Some(Duration::from_secs(600))).await?;
        let publisher = Publisher::new(broker.clone(), Vec::new());
        Ok(Self {
            namespace,
            redis,
            broker,
            publisher,
            channel,
            queues: std::sync::Mutex::new(vec!["test.replies".into()]),
            replies,
            cleaned: false,
        })
    }

    /// Settings for a service under test: this namespace, a random gRPC port on
    /// 127.0.0.1, queues that expire if a test dies before cleanup.
    pub fn settings(&self) -> CommonSettings {
        CommonSettings {
            amqp_url: Secret::new(amqp_url()),
            redis_url: Secret::new(redis_url()),
            namespace: self.namespace.clone(),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            prefetch: 32,
            queue_expires: Some(Duration::from_secs(600)),
            ..CommonSettings::local(0, 0)
        }
    }

    /// Registers a queue base name (e.g. `restaurant_service.commands`) for cleanup.
    pub fn track_queue(&self, base: &str) {
        if let Ok(mut queues) = self.queues.lock() {
            queues.push(base.to_owned());
        }
    }

    /// The full name of a queue base name in this namespace.
    pub fn queue(&self, base: &str) -> String {
        self.namespace.queue(base)
    }

    /// The name of the queue where commands sent by [`Self::send_command`] get their replies.
    pub fn reply_queue(&self) -> &str {
        &self.replies.name
    }

    /// Sends a command as the orchestrator would: to `{namespace}.{queue_base}`,
    /// with `reply_to` the test's reply queue and the given deadline.
    pub async fn send_command<M: prost::Message + prost::Name>(
        &self,
        queue_base: &str,
        message_id: &str,
        order_id: &str,
        message: &M,
        deadline_ms: Option<i64>,
    ) -> anyhow::Result<()> {
        self.track_queue(queue_base);
        let envelope = Envelope {
            message_id: message_id.to_owned(),
            correlation_id: order_id.to_owned(),
            reply_to: Some(self.replies.name.clone()),
            step: Some("TEST".into()),
            attempt: 1,
            deadline_ms,
            ..Envelope::default()
        };
        let out = OutgoingMessage::protobuf(self.queue(queue_base), envelope, message);
        self.publisher.publish(&out).await?;
        Ok(())
    }

    /// Publishes raw bytes with raw properties to `{namespace}.{queue_base}` (for
    /// garbage and foreign-client messages).
    pub async fn send_raw(&self, queue_base: &str, payload: &[u8], properties: BasicProperties) -> anyhow::Result<()> {
        self.track_queue(queue_base);
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                self.queue(queue_base).as_str().into(),
                BasicPublishOptions::default(),
                payload,
                properties,
            )
            .await?;
        confirm.await?;
        Ok(())
    }

    /// Answers `command` as a participant would: to its `reply_to`, with its
    /// correlation id and the `x-command-id` header naming it.
    pub async fn reply<M: prost::Message + prost::Name>(&self, command: &Envelope, message: &M) -> anyhow::Result<()> {
        let envelope = Envelope {
            message_id: uuid::Uuid::now_v7().to_string(),
            correlation_id: command.correlation_id.clone(),
            step: command.step.clone(),
            attempt: command.attempt,
            command_id: Some(command.message_id.clone()),
            ..Envelope::default()
        };
        let queue = command.reply_to.clone().context("the command has no reply_to")?;
        self.publisher.publish(&OutgoingMessage::protobuf(queue, envelope, message)).await?;
        Ok(())
    }

    /// Waits for the next message on `{namespace}.{queue_base}` (as a participant
    /// that is not running would find it) and takes it.
    pub async fn take_command(&self, queue_base: &str, timeout: Duration) -> anyhow::Result<(Envelope, Vec<u8>)> {
        let queue = self.queue(queue_base);
        eventually(timeout, || async { self.get(&queue).await }).await.with_context(|| format!("no command on {queue}"))
    }

    /// Messages ready in a queue (full name).
    pub async fn queue_len(&self, queue: &str) -> anyhow::Result<u32> {
        let declared = self
            .channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                Default::default(),
            )
            .await?;
        Ok(declared.message_count())
    }

    /// The next reply on the test's reply queue, waiting up to `timeout`.
    pub async fn next_reply(&self, timeout: Duration) -> anyhow::Result<(Envelope, Vec<u8>)> {
        let queue = self.replies.name.clone();
        eventually(timeout, || async { self.get(&queue).await }).await.context("no reply arrived")
    }

    /// Sends a command as [`Self::send_command`] does and waits up to `timeout` for
    /// its reply (see [`Self::reply_to`]).
    pub async fn call<C, R>(
        &self,
        queue_base: &str,
        message_id: &str,
        order_id: &str,
        command: &C,
        deadline_ms: Option<i64>,
        timeout: Duration,
    ) -> anyhow::Result<R>
    where
        C: prost::Message + prost::Name,
        R: prost::Message + prost::Name + Default,
    {
        self.send_command(queue_base, message_id, order_id, command, deadline_ms).await?;
        self.reply_to(message_id, timeout).await
    }

    /// The next reply on the test's reply queue, waiting up to `timeout`, as an `R`;
    /// an error unless it answers the command `message_id` (its `x-command-id`).
    pub async fn reply_to<R: prost::Message + prost::Name + Default>(
        &self,
        message_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<R> {
        let reply = self.next_reply(timeout).await?;
        anyhow::ensure!(
            reply.0.command_id.as_deref() == Some(message_id),
            "the reply answers {:?}, not {message_id}",
            reply.0.command_id
        );
        Self::decode_reply(&reply)
    }

    /// Decodes a reply payload as `M`, checking its `type` property first.
    pub fn decode_reply<M: prost::Message + prost::Name + Default>(reply: &(Envelope, Vec<u8>)) -> anyhow::Result<M> {
        if reply.0.type_name != M::full_name() {
            bail!("reply is a {}, not a {}", reply.0.type_name, M::full_name());
        }
        Ok(M::decode(reply.1.as_slice())?)
    }

    /// Takes one message from a queue (full name), if there is one.
    pub async fn get(&self, queue: &str) -> anyhow::Result<Option<(Envelope, Vec<u8>)>> {
        Ok(self
            .get_raw(queue)
            .await?
            .map(|(props, data)| (Envelope::from_properties(&props).unwrap_or_default(), data)))
    }

    /// Takes one message from a queue (full name) with its raw properties.
    pub async fn get_raw(&self, queue: &str) -> anyhow::Result<Option<(BasicProperties, Vec<u8>)>> {
        let message = self.channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await?;
        Ok(message.map(|m| (m.delivery.properties.clone(), m.delivery.data.clone())))
    }

    /// Everything now in the dead-letter queue of `{namespace}.{queue_base}`.
    pub async fn drain_dead_letters(&self, queue_base: &str) -> anyhow::Result<Vec<(BasicProperties, Vec<u8>)>> {
        let dlq = QueueSpec::new(self.queue(queue_base)).dead_letter_queue();
        let mut out = Vec::new();
        while let Some(message) = self.get_raw(&dlq).await? {
            out.push(message);
        }
        Ok(out)
    }

    /// Waits up to `timeout` until at least `count` messages have reached the
    /// dead-letter queue of `{namespace}.{queue_base}`, and returns every one taken,
    /// sorted by message id. Draining takes the messages, so what each poll finds is
    /// kept for the next.
    pub async fn wait_dead_letters(
        &self,
        queue_base: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<DeadLetter>> {
        let taken = RefCell::new(Vec::new());
        eventually(timeout, || async {
            let more = self.drain_dead_letters(queue_base).await?;
            let mut taken = taken.borrow_mut();
            taken.extend(more.into_iter().map(|(properties, payload)| DeadLetter::new(properties, payload)));
            Ok((taken.len() >= count).then_some(()))
        })
        .await
        .with_context(|| format!("fewer than {count} dead letters for {queue_base}"))?;
        let mut taken = taken.into_inner();
        taken.sort_by(|a, b| (&a.message_id, &a.reason).cmp(&(&b.message_id, &b.reason)));
        Ok(taken)
    }

    /// Deletes this namespace's queues and Redis keys.
    pub async fn cleanup(mut self) {
        let queues = self.tracked_queues();
        delete_namespace(&self.channel, &mut self.redis, &self.namespace, &queues).await;
        self.broker.close().await;
        self.cleaned = true;
    }

    fn tracked_queues(&self) -> Vec<String> {
        self.queues.lock().map(|q| q.clone()).unwrap_or_default()
    }
}

/// Deletes `queues` (base names) with their dead-letter queues and exchanges, and
/// every key under the namespace's prefix. Best effort: a test's cleanup must not
/// fail the test.
async fn delete_namespace(channel: &Channel, redis: &mut ConnectionManager, namespace: &Namespace, queues: &[String]) {
    for base in queues {
        let spec = QueueSpec::new(namespace.queue(base));
        for queue in [spec.name.clone(), spec.dead_letter_queue()] {
            let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        }
        let _ = channel.exchange_delete(spec.dead_letter_exchange().as_str().into(), Default::default()).await;
    }
    let prefix = format!("{}:", namespace.prefix());
    let _ = service_kit::store::delete_prefix(redis, &prefix).await;
}

/// How long a dropped env may take to delete its namespace.
const DROP_CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A test that panicked (or returned) before [`TestEnv::cleanup`] still leaves
/// nothing behind: its queues would expire (`x-expires`), but not its dead-letter
/// exchanges or its Redis keys.
///
/// The decision a reader must know: the deleting happens on a thread of its own,
/// with a runtime and connections of its own, and the drop waits for it. The
/// test's runtime may be the one unwinding, and its Redis connection is bound to
/// that runtime's reactor, so neither can be used from here.
impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let namespace = self.namespace.clone();
        let queues = self.tracked_queues();
        let connection_name = format!("test-drop:{}", namespace.prefix());
        let deleting = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async move {
                let delete = async {
                    let broker = test_broker(connection_name);
                    let client = redis::Client::open(redis_url()).ok()?;
                    let mut redis = ConnectionManager::new(client).await.ok()?;
                    let channel = broker.channel().await.ok()?;
                    delete_namespace(&channel, &mut redis, &namespace, &queues).await;
                    broker.close().await;
                    Some(())
                };
                let _ = tokio::time::timeout(DROP_CLEANUP_TIMEOUT, delete).await;
            });
        });
        let _ = deleting.join();
    }
}

/// A service under test, started in-process (with its `run` function) and running
/// until [`Self::stop`].
pub struct ServiceUnderTest {
    service: RunningService,
    shutdown: CancellationToken,
}

impl ServiceUnderTest {
    /// Starts a service by calling `run` with its shutdown token, then waits up to
    /// `timeout` until health reports `grpc_service_name` SERVING (see
    /// [`wait_service_serving`]); a service that never does is stopped.
    pub async fn start<F, E>(
        run: impl FnOnce(CancellationToken) -> F,
        grpc_service_name: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self>
    where
        F: Future<Output = Result<RunningService, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let shutdown = CancellationToken::new();
        let service = run(shutdown.clone()).await?;
        if let Err(error) = wait_service_serving(service.grpc_addr, grpc_service_name, timeout).await {
            shutdown.cancel();
            return Err(error);
        }
        Ok(Self { service, shutdown })
    }

    /// The address its gRPC server listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.service.grpc_addr
    }

    /// The address its HTTP server (`/metrics`, the probes) listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.service.http_addr
    }

    /// A gRPC channel to it.
    pub async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        grpc_channel(self.grpc_addr()).await
    }

    /// Cancels its shutdown token and waits until it has stopped.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.service.wait().await?;
        Ok(())
    }
}

/// A message taken from a dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its `message_id` property, empty if it has none.
    pub message_id: String,
    /// Why it was dead-lettered (see [`dead_letter_reason`]).
    pub reason: Option<String>,
    pub properties: BasicProperties,
    pub payload: Vec<u8>,
}

impl DeadLetter {
    fn new(properties: BasicProperties, payload: Vec<u8>) -> Self {
        let message_id = properties.message_id().as_ref().map(|id| id.to_string()).unwrap_or_default();
        let reason = dead_letter_reason(&properties);
        Self { message_id, reason, properties, payload }
    }
}

/// The reason header (`x-ftgo-dead-letter-reason`) a dead-lettered message carries,
/// if it has one.
pub fn dead_letter_reason(properties: &BasicProperties) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(HEADER_DEAD_LETTER_REASON)? {
        AMQPValue::LongString(reason) => Some(String::from_utf8_lossy(reason.as_bytes()).into_owned()),
        _ => None,
    }
}

/// Polls `check` until it returns `Ok(Some(value))`, or fails after `timeout` with
/// the last error. Use it instead of sleeping: the test is as fast as the system.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(10);
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(match last_error {
                Some(error) => error.context(format!("condition not met within {timeout:?}")),
                None => anyhow::anyhow!("condition not met within {timeout:?}"),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// A deadline `ms` milliseconds from now, for commands.
pub fn deadline_in(ms: i64) -> Option<i64> {
    Some(now_millis() + ms)
}

/// A gRPC channel to a service under test at `addr` (a 127.0.0.1 port).
pub async fn grpc_channel(addr: SocketAddr) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?)
}

/// Waits until the service at `addr` reports `SERVING` on `grpc.health.v1`: it is
/// connected to RabbitMQ and Redis and its consumers are registered.
pub async fn wait_serving(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    wait_service_serving(addr, "", timeout).await
}

/// Like [`wait_serving`], for the health of the named gRPC service (`""` is the
/// whole server).
pub async fn wait_service_serving(addr: SocketAddr, service: &str, timeout: Duration) -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    eventually(timeout, || async {
        let mut client = HealthClient::new(grpc_channel(addr).await?);
        let status = client.check(HealthCheckRequest { service: service.to_owned() }).await?.into_inner().status;
        Ok((status == ServingStatus::Serving as i32).then_some(()))
    })
    .await
    .with_context(|| format!("service at {addr} never became SERVING"))
}

/// `GET path` on a service's HTTP port: (status code, body). A plain HTTP/1.1
/// request over TCP, so tests need no HTTP client library.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let response = http_request(addr, "GET", path, &[], "").await?;
    Ok((response.status, response.body))
}

/// An answer of [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when it was sent chunked (e.g. a server-sent event
    /// stream, read until the server ends it).
    pub body: String,
}

impl HttpResponse {
    /// The first value of a header (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// `method path` on a service's HTTP port with extra `headers` (a `Host` among them
/// replaces the default) and `body`, read until the server closes the connection.
/// A plain HTTP/1.1 request over TCP, so tests need no HTTP client library.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<HttpResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").context("no HTTP header end")?;
    let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
    let body = &response[head_end + 4..];
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).context("no status")?.parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok(HttpResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").context("truncated chunk size")?;
        let size = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let rest = &body[line_end + 2..];
        out.extend_from_slice(rest.get(..size).context("truncated chunk")?);
        body = rest.get(size..).and_then(|r| r.strip_prefix(b"\r\n")).context("chunk without its line end")?;
    }
}

/// The sum of a Prometheus metric's samples whose labels include every `label=value`
/// pair of `labels` (0 when there is none).
pub fn metric_sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = metric == name && labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
