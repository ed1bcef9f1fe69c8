//! The gRPC read API, `ftgo.restaurant.v1.RestaurantService`: restaurants with
//! their menus, tickets by id and by order. Reads only; tickets change through
//! saga commands. [`ReadError`] is turned into a `tonic::Status` in one place, its
//! `From` (shared by every participant, in `service_kit::participant`).

use proto::restaurant::v1::{
    GetRestaurantRequest, GetTicketByOrderRequest, GetTicketByOrderResponse, GetTicketRequest, Restaurant, Ticket,
    restaurant_service_server::RestaurantService,
};
use tonic::{Request, Response, Status};

use crate::store::{Store, StoreError};

/// Why a read call failed: the caller's mistake, nothing there, or our problem.
pub type ReadError = service_kit::participant::ReadError<StoreError>;

/// The read service over restaurant_service's store.
pub struct RestaurantReads {
    store: Store,
}

impl RestaurantReads {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn restaurant(&self, restaurant_id: i64) -> Result<Restaurant, ReadError> {
        positive("restaurant_id", restaurant_id)?;
        let restaurant = self.store.restaurant(restaurant_id).await?;
        restaurant.map(|r| r.to_proto()).ok_or_else(|| ReadError::NotFound(format!("restaurant {restaurant_id}")))
    }

    async fn ticket(&self, ticket_id: i64) -> Result<Ticket, ReadError> {
        positive("ticket_id", ticket_id)?;
        self.store.ticket(ticket_id).await?.ok_or_else(|| ReadError::NotFound(format!("ticket {ticket_id}")))
    }

    async fn ticket_by_order(&self, order_id: &str) -> Result<GetTicketByOrderResponse, ReadError> {
        ReadError::check_order_id(order_id)?;
        match self.store.ticket_by_order(order_id).await? {
            (None, false) => Err(ReadError::NotFound(format!("no ticket and no tombstone for order {order_id}"))),
            (ticket, tombstone) => Ok(GetTicketByOrderResponse { ticket, tombstone }),
        }
    }
}

fn positive(field: &'static str, id: i64) -> Result<(), ReadError> {
    if id <= 0 {
        return Err(ReadError::InvalidArgument { field, reason: format!("must be positive, got {id}") });
    }
    Ok(())
}

#[tonic::async_trait]
impl RestaurantService for RestaurantReads {
    #[tracing::instrument(level = "debug", skip_all, fields(restaurant_id = request.get_ref().restaurant_id))]
    async fn get_restaurant(&self, request: Request<GetRestaurantRequest>) -> Result<Response<Restaurant>, Status> {
        Ok(Response::new(self.restaurant(request.get_ref().restaurant_id).await?))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(ticket_id = request.get_ref().ticket_id))]
    async fn get_ticket(&self, request: Request<GetTicketRequest>) -> Result<Response<Ticket>, Status> {
        Ok(Response::new(self.ticket(request.get_ref().ticket_id).await?))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn get_ticket_by_order(
        &self,
        request: Request<GetTicketByOrderRequest>,
    ) -> Result<Response<GetTicketByOrderResponse>, Status> {
        Ok(Response::new(self.ticket_by_order(&request.get_ref().order_id).await?))
    }
}
