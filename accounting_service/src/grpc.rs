//! The gRPC read service `ftgo.accounting.v1.AccountingService` over accounts and
//! authorizations in Redis. Errors become a `tonic::Status` in one place,
//! [`ReadError`]'s `From` (shared by every participant, in
//! `service_kit::participant`).

use proto::accounting::v1::{
    Account, GetAccountRequest, ListAuthorizationsRequest, ListAuthorizationsResponse,
    accounting_service_server::AccountingService,
};
use tonic::{Request, Response, Status};

use crate::store::{AccountingStore, StoreError};

/// Why a read call failed: the caller's mistake, a missing record, or ours.
pub type ReadError = service_kit::participant::ReadError<StoreError>;

/// Serves accounts and authorizations from the store.
pub struct AccountingReads {
    store: AccountingStore,
}

impl AccountingReads {
    pub fn new(store: AccountingStore) -> Self {
        Self { store }
    }

    async fn account(&self, consumer_id: i64) -> Result<Account, ReadError> {
        if consumer_id <= 0 {
            return Err(ReadError::InvalidArgument { field: "consumer_id", reason: "must be 1 or more".into() });
        }
        let account = self.store.account_now(consumer_id).await?;
        account.map(Account::from).ok_or_else(|| ReadError::NotFound(format!("consumer {consumer_id} has no account")))
    }

    async fn authorizations(&self, order_id: &str) -> Result<ListAuthorizationsResponse, ReadError> {
        ReadError::check_order_id(order_id)?;
        // An order with no authorization is a valid answer (an empty list), not NOT_FOUND.
        let found = self.store.authorizations(order_id).await?;
        Ok(ListAuthorizationsResponse {
            authorizations: found.authorizations.into_iter().map(Into::into).collect(),
            tombstone: found.tombstone,
        })
    }
}

#[tonic::async_trait]
impl AccountingService for AccountingReads {
    #[tracing::instrument(level = "debug", skip_all, fields(consumer_id = request.get_ref().consumer_id))]
    async fn get_account(&self, request: Request<GetAccountRequest>) -> Result<Response<Account>, Status> {
        Ok(Response::new(self.account(request.into_inner().consumer_id).await?))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn list_authorizations(
        &self,
        request: Request<ListAuthorizationsRequest>,
    ) -> Result<Response<ListAuthorizationsResponse>, Status> {
        Ok(Response::new(self.authorizations(&request.into_inner().order_id).await?))
    }
}
