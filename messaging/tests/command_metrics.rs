//! `ftgo_commands_total` labels a command by its type only if the participant
//! handles that type: whatever else arrives counts as `unknown`, so a sender
//! cannot create series without bound. No broker is needed: the commands below are
//! refused (expired or of an unknown type) before a reply would be published.

use messaging::{
    Broker, BrokerSettings, Disposition, Envelope, IncomingMessage, MessageHandler, Publisher,
    participant::{Command, CommandError, CommandHandler, ParticipantLoop, Reply, UNKNOWN_TYPE_LABEL},
    topology::QueueType,
};
use metrics::{SharedString, Unit};
use metrics_util::{
    CompositeKey,
    debugging::{DebugValue, DebuggingRecorder},
};

const KNOWN: &str = "test.v1.KnownCommand";

struct Handler;

#[async_trait::async_trait]
impl CommandHandler for Handler {
    fn command_types(&self) -> Vec<String> {
        vec![KNOWN.to_owned()]
    }

    async fn handle(&self, command: Command<'_>) -> Result<Reply, CommandError> {
        Err(CommandError::UnknownType(command.envelope.type_name.clone()))
    }
}

fn envelope(type_name: &str, deadline_ms: i64) -> Envelope {
    Envelope {
        message_id: format!("m-{type_name}-{deadline_ms}"),
        correlation_id: "0196d1c0-0000-7000-8000-000000000001".into(),
        reply_to: Some("nowhere".into()),
        type_name: type_name.into(),
        step: Some("1".into()),
        attempt: 1,
        deadline_ms: Some(deadline_ms),
        command_id: None,
        traceparent: None,
    }
}

type Snapshot = Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>;

/// The `ftgo_commands_total` counters as (type, outcome, value), sorted.
fn commands(snapshot: Snapshot) -> Vec<(String, String, u64)> {
    let mut found: Vec<(String, String, u64)> = snapshot
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "ftgo_commands_total")
        .filter_map(|(key, _, _, value)| {
            let DebugValue::Counter(n) = value else { return None };
            let label = |name: &str| key.key().labels().find(|l| l.key() == name).map(|l| l.value().to_owned());
            Some((label("type")?, label("outcome")?, n))
        })
        .filter(|(.., n)| *n > 0)
        .collect();
    found.sort();
    found
}

#[test]
fn commands_of_types_the_participant_does_not_handle_count_as_unknown() -> anyhow::Result<()> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let dispositions = metrics::with_local_recorder(&recorder, || -> anyhow::Result<Vec<Disposition>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            // Never connected: nothing below publishes.
            let broker = Broker::new(BrokerSettings {
                url: "amqp://127.0.0.1:1".into(),
                connection_name: "command-metrics-test".into(),
                queue_type: QueueType::Classic,
                queue_expires: None,
            });
            let participant = ParticipantLoop::new(Handler, Publisher::new(broker, Vec::new()), "test");
            let now = messaging::now_millis();
            let mut dispositions = Vec::new();
            for (type_name, deadline) in [
                (KNOWN, now - 1_000),               // expired, of a known type
                ("garbage.Expired-1", now - 1_000), // expired, of a type nobody handles
                ("garbage.Fresh-2", now + 60_000),  // refused by the handler
                ("garbage.Fresh-3", now + 60_000),
            ] {
                let properties = envelope(type_name, deadline).to_properties(now);
                let message = IncomingMessage {
                    queue: "test.commands",
                    properties: &properties,
                    payload: b"",
                    redelivered: false,
                };
                dispositions.push(participant.handle(message).await);
            }
            Ok(dispositions)
        })
    })?;
    assert!(matches!(dispositions[..2], [Disposition::Ack, Disposition::Ack]), "{dispositions:?}");
    assert!(matches!(dispositions[2..], [Disposition::DeadLetter(_), Disposition::DeadLetter(_)]), "{dispositions:?}");
    assert_eq!(
        commands(snapshotter.snapshot().into_vec()),
        [
            (KNOWN.to_owned(), "expired".to_owned(), 1),
            (UNKNOWN_TYPE_LABEL.to_owned(), "expired".to_owned(), 1),
            (UNKNOWN_TYPE_LABEL.to_owned(), "rejected".to_owned(), 2),
        ]
    );
    Ok(())
}
