//! Protective limits: oversized bodies, per-key rate limits, load shedding past the
//! concurrency limit and request timeouts all answer at once, in Stripe's error shape (REST)
//! or with RESOURCE_EXHAUSTED / a deadline status (gRPC), and never lose data.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp};
use creditd::grpc::proto;
use creditd::store;

/// Holds the customer's write lock (and, on SQLite, the single writer) so that a write to
/// that customer waits until the returned transaction ends.
async fn hold_customer(app: &TestApp, customer: &str) -> store::Transaction {
    let ctx = app.context().await;
    let tx = app.services.db.begin().await.unwrap();
    store::customers::lock(&tx, &ctx.tenant, customer)
        .await
        .unwrap();
    tx
}

on_every_backend! {
    async fn an_oversized_body_is_refused_with_413_in_stripe_shape(_app) {
        let app = TestApp::spawn_with(_app.backend, |config| config.max_body_bytes = 2048).await;
        let reply = app.post("/v1/customers", &format!("description={}", "x".repeat(4096))).await;
        reply.assert_error(413, "invalid_request_error", None, None);
        assert_eq!(app.get("/v1/customers").await.ok()["data"], serde_json::json!([]));
        app.post("/v1/customers", "description=small").await.ok();
    }

    async fn each_key_is_rate_limited_on_its_own_over_both_transports(_app) {
        let app = TestApp::spawn_with(_app.backend, |config| config.rate_limit_per_key = 5).await;
        let mut limited = 0;
        for _ in 0..30 {
            let reply = app.get("/v1/customers").await;
            if reply.status == 429 {
                reply.assert_error(429, "invalid_request_error", Some("rate_limit"), None);
                limited += 1;
            } else {
                assert_eq!(reply.status, 200);
            }
        }
        assert!(limited >= 10, "a burst of 10 then about 5/s: {limited} of 30 refused");
        let other = app.new_key(false, false).await;
        assert_eq!(app.get_as(Some(&other), "/v1/customers").await.status, 200, "another key has its own budget");
        let mut client = app.customers().await;
        let status = client.list_customers(app.grpc(proto::ListCustomersRequest::default())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }

    async fn requests_past_the_concurrency_limit_are_shed_at_once(_app) {
        let app = TestApp::spawn_with(_app.backend, |config| config.max_concurrent_requests = 1).await;
        let customer = app.create_customer("name=busy").await;
        let held = hold_customer(&app, &customer).await;
        // This write waits for the customer and occupies the only slot.
        let http = app.http.clone();
        let url = format!("{}/v1/customers/{customer}/balance_transactions", app.http_base);
        let key = app.key.clone();
        let slow = tokio::spawn(async move {
            http.post(url).basic_auth(key, Some("")).form(&[("amount", "100"), ("currency", "usd")]).send().await.unwrap().status()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let shed = app.get("/v1/customers").await;
        assert!(started.elapsed() < Duration::from_secs(2), "shedding is immediate");
        shed.assert_error(429, "invalid_request_error", Some("rate_limit"), None);
        // gRPC shares the idea: the slot is taken, so a call is shed, but health is still answered.
        let grpc_held = tokio::spawn({
            let request = app.grpc(proto::CreateCustomerBalanceTransactionRequest {
                customer: customer.clone(),
                amount: 7,
                currency: "usd".into(),
                ..Default::default()
            });
            let mut client = app.balance_transactions().await;
            async move { client.create_customer_balance_transaction(request).await.map(|_| ()).map_err(|status| status.code()) }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut customers = app.customers().await;
        let status = customers.list_customers(app.grpc(proto::ListCustomersRequest::default())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
        let serving = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        assert_eq!(serving.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        store::commit(held).await.unwrap();
        assert_eq!(grpc_held.await.unwrap(), Ok(()), "the waiting gRPC write completes too");
        assert_eq!(slow.await.unwrap(), 200, "the waiting write completes once the lock is free");
        let ledger = app.get(&format!("/v1/customers/{customer}/balance_transactions")).await.ok();
        assert_eq!(ledger["data"].as_array().unwrap().len(), 2);
    }

    async fn a_request_past_the_timeout_gets_504_and_leaves_nothing_half_done(_app) {
        let app = TestApp::spawn_with(_app.backend, |config| config.request_timeout_seconds = 1).await;
        let customer = app.create_customer("name=slow").await;
        let held = hold_customer(&app, &customer).await;
        let reply = app.post(&format!("/v1/customers/{customer}/balance_transactions"), "amount=100&currency=usd").await;
        reply.assert_error(504, "api_error", None, None);
        let mut transactions = app.balance_transactions().await;
        let status = transactions
            .create_customer_balance_transaction(app.grpc(proto::CreateCustomerBalanceTransactionRequest {
                customer: customer.clone(),
                amount: 5,
                currency: "usd".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert!(matches!(status.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded), "{status:?}");
        store::rollback(held).await.unwrap();
        // The timed-out writes were abandoned with their transactions: the ledger is whole.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ledger = app.get(&format!("/v1/customers/{customer}/balance_transactions")).await.ok();
        let entries = ledger["data"].as_array().unwrap();
        let mut running = 0;
        for entry in entries.iter().rev() {
            running += entry["amount"].as_i64().unwrap();
            assert_eq!(entry["ending_balance"].as_i64().unwrap(), running);
        }
        let balance = app.get(&format!("/v1/customers/{customer}")).await.ok()["balance"].as_i64().unwrap();
        assert_eq!(balance, running);
    }
}

#[test]
fn the_backend_enum_is_shared_with_the_harness() {
    assert_ne!(Backend::Sqlite, Backend::Postgres);
}
