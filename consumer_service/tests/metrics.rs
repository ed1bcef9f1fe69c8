//! The participant's command counters reach `/metrics` in a process whose first
//! service is this one. They are registered once, when the service starts, so a
//! recorder installed after that (as it was, lazily, by the HTTP server) would
//! leave them counting into nothing. A test binary of its own: in a binary whose
//! earlier test had already started a service, the recorder would be there and
//! the test could not fail.

use std::time::Duration;

use consumer_service::{COMMAND_QUEUE, GRPC_SERVICE_NAME, Settings, domain::Fixtures, run};
use prost::Name;
use proto::consumer::v1::{VerifyConsumerCommand, VerifyConsumerReply};
use test_support::{ServiceUnderTest, TestEnv, eventually, http_get, metric_sum};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_handled_command_is_counted_on_metrics() -> anyhow::Result<()> {
    let env = TestEnv::new("consumer-metrics").await?;
    env.track_queue(COMMAND_QUEUE);
    let settings = Settings { fixtures: Fixtures::builtin()?, ..Settings::new(env.settings())? };
    let service = ServiceUnderTest::start(|token| run(settings, token), GRPC_SERVICE_NAME, WAIT).await?;
    let command = VerifyConsumerCommand { order_id: uuid::Uuid::now_v7().to_string(), consumer_id: 1 };
    let _: VerifyConsumerReply =
        env.call(COMMAND_QUEUE, "m-metrics-1", &command.order_id, &command, None, WAIT).await?;

    let (command_type, queue) = (VerifyConsumerCommand::full_name(), env.queue(COMMAND_QUEUE));
    let replied = [("type", command_type.as_str()), ("outcome", "replied")];
    let acked = [("queue", queue.as_str()), ("disposition", "ack")];
    let http = service.http_addr();
    // The reply is published before the command is acked and counted: wait for both.
    eventually(WAIT, || async {
        let (_, body) = http_get(http, "/metrics").await?;
        Ok((metric_sum(&body, "ftgo_commands_total", &replied) >= 1.0
            && metric_sum(&body, "ftgo_messages_total", &acked) >= 1.0)
            .then_some(()))
    })
    .await?;
    service.stop().await?;
    env.cleanup().await;
    Ok(())
}
