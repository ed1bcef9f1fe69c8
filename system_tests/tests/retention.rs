//! Finished sagas are kept for the retention and then deleted with everything that
//! pointed at them: GetOrder answers NOT_FOUND, the listing no longer names them, no
//! key of theirs is left in Redis, and their idempotency key is free again.
//! Running sagas are never pruned.

use std::time::Duration;

use proto::{
    common::v1::LineItem,
    order::v1::{CreateOrderRequest, GetOrderRequest, ListOrdersRequest, OrderState},
};
use system_tests::{Svc, System};
use test_support::{eventually, http_get, metric_sum};
use tonic::Code;

fn request(key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        consumer_id: 1,
        restaurant_id: 1,
        items: vec![LineItem { menu_item_id: "naan".into(), quantity: 1 }],
        idempotency_key: key.into(),
    }
}

#[tokio::test]
async fn finished_sagas_are_deleted_after_the_retention_and_running_ones_are_kept() {
    let mut system = System::start("e2e-retention", &[], |settings| {
        settings.sweeper.retention = Some(Duration::from_secs(1));
    })
    .await;
    let order_http = system.order.as_ref().expect("order_service").service.http_addr;
    let mut orders = system.orders().await;
    let finished = orders.create_order(request("retention-1")).await.expect("create").into_inner().order_id;
    assert_eq!(system.finish(&finished).await.1.state, OrderState::Approved as i32);

    // A saga that cannot finish while accounting_service is down stays.
    system.down(Svc::Accounting).await;
    let running = system.create(1, 1, &[("naan", 1)]).await;

    eventually(Duration::from_secs(30), || {
        let mut orders = orders.clone();
        let finished = finished.clone();
        async move {
            let gone = orders.get_order(GetOrderRequest { order_id: finished }).await;
            Ok(matches!(gone, Err(status) if status.code() == Code::NotFound).then_some(()))
        }
    })
    .await
    .expect("the finished saga is deleted after the retention");

    let listed = orders
        .list_orders(ListOrdersRequest { page_size: 100, ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<_> = listed.orders.iter().map(|o| o.order_id.as_str()).collect();
    assert!(!ids.contains(&finished.as_str()), "the listing no longer names it: {ids:?}");
    assert!(ids.contains(&running.as_str()), "the running saga is still listed: {ids:?}");
    let get_running = orders.get_order(GetOrderRequest { order_id: running.clone() }).await;
    assert!(get_running.is_ok(), "a running saga is never pruned");

    // Only order_service's keys: the participants keep their own records (the
    // ticket, the authorization) under the order id on purpose.
    let mut redis = system.env.redis.clone();
    let pattern = format!("{}*{finished}*", system.env.namespace.key_prefix("order"));
    let left = service_kit::store::keys_matching(&mut redis, &pattern).await.expect("keys");
    assert!(left.is_empty(), "keys of the pruned saga left behind: {left:?}");

    // Its idempotency key went with it: the same key starts a new order.
    let again = orders.create_order(request("retention-1")).await.expect("create again").into_inner();
    assert!(again.created && again.order_id != finished, "a pruned saga's key is free again");

    let (_, metrics) = http_get(order_http, "/metrics").await.expect("metrics");
    assert!(metric_sum(&metrics, "ftgo_sagas_pruned_total", &[]) >= 1.0);
    system.stop().await;
}
