//! The gRPC read service `ftgo.consumer.v1.ConsumerService` over the consumers in
//! Redis. Errors become a `tonic::Status` in one place, [`ReadError`]'s `From`
//! (shared by every participant, in `service_kit::participant`).

use proto::consumer::v1::{Consumer, GetConsumerRequest, consumer_service_server::ConsumerService};
use tonic::{Request, Response, Status};

use crate::store::{ConsumerStore, StoreError};

/// Why a read call failed: the caller's mistake, a missing record, or ours.
pub type ReadError = service_kit::participant::ReadError<StoreError>;

/// Serves consumers from the store.
pub struct ConsumerReads {
    store: ConsumerStore,
}

impl ConsumerReads {
    pub fn new(store: ConsumerStore) -> Self {
        Self { store }
    }

    async fn consumer(&self, consumer_id: i64) -> Result<Consumer, ReadError> {
        if consumer_id <= 0 {
            return Err(ReadError::InvalidArgument { field: "consumer_id", reason: "must be 1 or more".into() });
        }
        let consumer = self.store.consumer_now(consumer_id).await?;
        consumer
            .map(Consumer::from)
            .ok_or_else(|| ReadError::NotFound(format!("consumer {consumer_id} does not exist")))
    }
}

#[tonic::async_trait]
impl ConsumerService for ConsumerReads {
    #[tracing::instrument(level = "debug", skip_all, fields(consumer_id = request.get_ref().consumer_id))]
    async fn get_consumer(&self, request: Request<GetConsumerRequest>) -> Result<Response<Consumer>, Status> {
        Ok(Response::new(self.consumer(request.into_inner().consumer_id).await?))
    }
}
