//! The baseline: the least a saga of this shape can cost on this broker and this
//! Redis, measured with the project's own transport and the same durability.
//!
//! A minimal orchestrator runs in-process: per saga it makes 4 command/reply
//! round trips through RabbitMQ and 6 Redis writes, and nothing else (no domain
//! logic, no event stream, no indexes, no gRPC):
//!
//! | when | Redis write | then |
//! |---|---|---|
//! | start | `HSET saga:{id} step 0 status RUNNING` | publish command 1 |
//! | reply k (k = 1, 2, 3) | `HSET saga:{id} step k` | publish command k+1 |
//! | reply 4 | `HSET saga:{id} step 4 status APPROVED`, `SET done:{id} 1` | the saga ends |
//!
//! Durability is the system's: durable queues with dead-letter exchanges
//! ([`QueueSpec`]), persistent messages with an expiration from the deadline
//! ([`messaging::Envelope`]), publisher confirms ([`Publisher`]), manual acks after
//! the effects ([`run_consumer`]), the orchestrator's persist-then-publish-then-ack
//! order. A tiny echo participant, the real [`ParticipantLoop`] with a handler that
//! answers every command with its own payload, consumes the commands on a
//! connection of its own (as a separate process would have).
//!
//! Everything lives in a random namespace (`loadgen-base-<hex>`): its queues,
//! dead-letter queues and exchanges and its Redis keys are deleted afterwards.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use messaging::{
    Broker, BrokerSettings, Disposition, Envelope, IncomingMessage, MessageHandler, OutgoingMessage, Publisher,
    QueueSpec,
    envelope::{now_millis, traceparent_for},
    participant::{Command, CommandError, CommandHandler, ParticipantLoop, Reply},
    run_consumer,
};
use proto::consumer::v1::VerifyConsumerCommand;
use redis::aio::ConnectionManager;
use service_kit::{CancellationToken, Namespace};
use tokio::sync::{oneshot, watch};

use crate::{
    engine::{SagaOutcome, SagaRunner},
    mix::Scenario,
    stats::{CallError, SagaEnd},
};

/// Round trips per saga.
const STEPS: u32 = 4;
/// How long a command waits for its reply (the system's default step timeout).
const STEP_TIMEOUT_MS: i64 = 3000;

/// Where the baseline runs.
#[derive(Debug, Clone)]
pub struct BaselineSettings {
    pub amqp_url: String,
    pub redis_url: String,
    /// Unacknowledged deliveries per consumer (the services' `AMQP_PREFETCH`).
    pub prefetch: u16,
    /// A saga that has not ended after this long is `UNFINISHED`.
    pub saga_timeout: Duration,
}

/// Sagas waiting for their last reply.
type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// The running baseline: its consumers, publishers and namespace.
pub struct Baseline {
    namespace: Namespace,
    commands: QueueSpec,
    replies: QueueSpec,
    keys: String,
    redis: ConnectionManager,
    publisher: Publisher,
    waiters: Waiters,
    saga_timeout: Duration,
    shutdown: CancellationToken,
    consumers: Vec<tokio::task::JoinHandle<()>>,
    orchestrator_broker: Broker,
    participant_broker: Broker,
    participant_publisher: Publisher,
}

/// The baseline's two queues; each has a dead-letter queue and exchange.
pub const QUEUES: [&str; 2] = ["baseline.commands", "baseline.replies"];

fn broker(settings: &BaselineSettings, namespace: &Namespace, role: &str) -> Broker {
    Broker::new(BrokerSettings {
        url: settings.amqp_url.clone(),
        connection_name: format!("loadgen:{}:{role}", namespace.prefix()),
        queue_type: messaging::topology::QueueType::Classic,
        // A safety net only: queues left by a killed run delete themselves.
        queue_expires: Some(Duration::from_secs(600)),
    })
}

/// Deletes the namespace's queues, dead-letter queues and exchanges, and keys
/// (deleting what does not exist is no error).
async fn delete_namespace(broker: &Broker, redis: &mut ConnectionManager, namespace: &Namespace) -> anyhow::Result<()> {
    let channel = broker.channel().await?;
    for base in QUEUES {
        QueueSpec::new(namespace.queue(base)).delete(&channel).await?;
    }
    let _ = channel.close(200, "done".into()).await;
    service_kit::store::delete_prefix(redis, &format!("{}:", namespace.prefix())).await?;
    Ok(())
}

impl Baseline {
    /// A namespace of its own for one baseline: `loadgen-base-<random hex>`.
    pub fn new_namespace() -> Namespace {
        Namespace::new(format!("loadgen-base-{:016x}", rand::random::<u64>()))
    }

    /// Deletes what a baseline in `namespace` may have made, for a start that was
    /// abandoned half-way (a signal, or an error after the first declaration).
    pub async fn purge(settings: &BaselineSettings, namespace: &Namespace) -> anyhow::Result<()> {
        let (_, mut redis) = service_kit::store::connect(&settings.redis_url, &CancellationToken::new()).await?;
        let broker = broker(settings, namespace, "purge");
        let deleted = delete_namespace(&broker, &mut redis, namespace).await;
        broker.close().await;
        deleted
    }

    /// Declares the namespace's queues and starts the echo participant and the
    /// reply consumer; returns once both consume.
    pub async fn start(settings: &BaselineSettings, namespace: Namespace) -> anyhow::Result<Self> {
        let commands = QueueSpec::new(namespace.queue(QUEUES[0]));
        let replies = QueueSpec::new(namespace.queue(QUEUES[1]));
        let shutdown = CancellationToken::new();
        let (_, redis) = service_kit::store::connect(&settings.redis_url, &shutdown).await?;
        let orchestrator_broker = broker(settings, &namespace, "orchestrator");
        let participant_broker = broker(settings, &namespace, "participant");
        let publisher = Publisher::new(orchestrator_broker.clone(), vec![commands.clone(), replies.clone()]);
        publisher.ready().await?;
        let participant_publisher = Publisher::new(participant_broker.clone(), vec![replies.clone()]);
        participant_publisher.ready().await?;

        let waiters: Waiters = Arc::default();
        let keys = namespace.key_prefix("baseline");
        let replies_handler = Arc::new(ReplyHandler {
            redis: redis.clone(),
            publisher: publisher.clone(),
            commands: commands.name.clone(),
            replies: replies.name.clone(),
            keys: keys.clone(),
            waiters: waiters.clone(),
        });
        let echo = Arc::new(ParticipantLoop::new(Echo, participant_publisher.clone(), "loadgen_echo"));

        let mut consumers = Vec::new();
        let mut ready = Vec::new();
        for (broker, publisher, queue, handler) in [
            (
                participant_broker.clone(),
                participant_publisher.clone(),
                commands.clone(),
                echo as Arc<dyn MessageHandler>,
            ),
            (
                orchestrator_broker.clone(),
                publisher.clone(),
                replies.clone(),
                replies_handler as Arc<dyn MessageHandler>,
            ),
        ] {
            let (tx, rx) = watch::channel(false);
            let consumer_settings = messaging::consumer::ConsumerSettings::new(queue, settings.prefetch);
            consumers.push(tokio::spawn(run_consumer(
                broker,
                publisher,
                consumer_settings,
                handler,
                tx,
                shutdown.clone(),
            )));
            ready.push(rx);
        }
        for mut rx in ready {
            tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|ready| *ready))
                .await
                .map_err(|_| anyhow::anyhow!("the baseline's consumers did not start within 30 s"))??;
        }
        Ok(Self {
            namespace,
            commands,
            replies,
            keys,
            redis,
            publisher,
            waiters,
            saga_timeout: settings.saga_timeout,
            shutdown,
            consumers,
            orchestrator_broker,
            participant_broker,
            participant_publisher,
        })
    }

    /// The namespace the baseline runs in.
    pub fn namespace(&self) -> &str {
        self.namespace.prefix()
    }

    /// Stops the consumers and deletes the namespace's queues, exchanges and keys.
    pub async fn cleanup(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        for consumer in self.consumers.drain(..) {
            let _ = consumer.await;
        }
        self.publisher.close().await;
        self.participant_publisher.close().await;
        self.participant_broker.close().await;
        let deleted = delete_namespace(&self.orchestrator_broker, &mut self.redis, &self.namespace).await;
        self.orchestrator_broker.close().await;
        deleted
    }
}

/// The command of `step` (1-based) of saga `id`.
fn command(commands: &str, replies: &str, id: &str, step: u32) -> OutgoingMessage {
    let envelope = Envelope {
        message_id: format!("{id}.{step}"),
        correlation_id: id.to_owned(),
        reply_to: Some(replies.to_owned()),
        type_name: String::new(),
        step: Some(step.to_string()),
        attempt: 1,
        deadline_ms: Some(now_millis() + STEP_TIMEOUT_MS),
        command_id: None,
        traceparent: traceparent_for(id),
    };
    OutgoingMessage::protobuf(commands, envelope, &VerifyConsumerCommand { order_id: id.to_owned(), consumer_id: 1 })
}

impl SagaRunner for Baseline {
    async fn run(&self, _index: u64, _scenario: Scenario) -> SagaOutcome {
        let id = uuid::Uuid::now_v7().to_string();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(id.clone(), tx);
        }
        let failed = |call: &'static str, code: &str| SagaOutcome {
            end: SagaEnd::Failed { state: "CREATE_FAILED" },
            errors: vec![CallError { call, code: code.to_owned() }],
        };
        let mut redis = self.redis.clone();
        let saved: redis::RedisResult<()> = redis::cmd("HSET")
            .arg(format!("{}saga:{id}", self.keys))
            .arg("step")
            .arg(0)
            .arg("status")
            .arg("RUNNING")
            .query_async(&mut redis)
            .await;
        if saved.is_err() {
            self.forget(&id);
            return failed("redis", "Unavailable");
        }
        if self.publisher.publish(&command(&self.commands.name, &self.replies.name, &id, 1)).await.is_err() {
            self.forget(&id);
            return failed("publish", "Unavailable");
        }
        match tokio::time::timeout(self.saga_timeout, rx).await {
            Ok(Ok(())) => {
                SagaOutcome { end: SagaEnd::Terminal { state: "APPROVED".into(), expected: true }, errors: vec![] }
            }
            _ => {
                self.forget(&id);
                SagaOutcome {
                    end: SagaEnd::Failed { state: "UNFINISHED" },
                    errors: vec![CallError { call: "follow", code: "DeadlineExceeded".into() }],
                }
            }
        }
    }
}

impl Baseline {
    fn forget(&self, id: &str) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(id);
        }
    }
}

/// The echo participant: every command's reply is its own payload.
struct Echo;

#[async_trait::async_trait]
impl CommandHandler for Echo {
    /// It answers any type; its commands carry none, so they count as `unknown`.
    fn command_types(&self) -> Vec<String> {
        Vec::new()
    }

    async fn handle(&self, command: Command<'_>) -> Result<Reply, CommandError> {
        Ok(Reply { type_name: "loadgen.baseline.EchoReply".into(), payload: command.payload.to_vec() })
    }
}

/// The minimal orchestrator's reply handler: persist, publish the next command
/// (confirmed), then ack, as order_service does.
struct ReplyHandler {
    redis: ConnectionManager,
    publisher: Publisher,
    commands: String,
    replies: String,
    keys: String,
    waiters: Waiters,
}

#[async_trait::async_trait]
impl MessageHandler for ReplyHandler {
    async fn handle(&self, message: IncomingMessage<'_>) -> Disposition {
        let envelope = match Envelope::from_properties(message.properties) {
            Ok(envelope) => envelope,
            Err(error) => return Disposition::DeadLetter(error.to_string()),
        };
        let Some(step) =
            envelope.step.as_deref().and_then(|s| s.parse::<u32>().ok()).filter(|s| (1..=STEPS).contains(s))
        else {
            return Disposition::DeadLetter("reply without a baseline step".into());
        };
        let id = &envelope.correlation_id;
        let mut redis = self.redis.clone();
        let saga_key = format!("{}saga:{id}", self.keys);
        let saved: redis::RedisResult<()> = if step < STEPS {
            redis::cmd("HSET").arg(&saga_key).arg("step").arg(step).query_async(&mut redis).await
        } else {
            let first: redis::RedisResult<()> = redis::cmd("HSET")
                .arg(&saga_key)
                .arg("step")
                .arg(step)
                .arg("status")
                .arg("APPROVED")
                .query_async(&mut redis)
                .await;
            match first {
                Ok(()) => redis::cmd("SET").arg(format!("{}done:{id}", self.keys)).arg(1).query_async(&mut redis).await,
                Err(error) => Err(error),
            }
        };
        if let Err(error) = saved {
            return Disposition::Retry(format!("redis: {error}"));
        }
        if step < STEPS {
            if let Err(error) = self.publisher.publish(&command(&self.commands, &self.replies, id, step + 1)).await {
                return Disposition::Retry(format!("publish: {error}"));
            }
        } else if let Some(waiter) = self.waiters.lock().ok().and_then(|mut w| w.remove(id)) {
            let _ = waiter.send(());
        }
        Disposition::Ack
    }
}
