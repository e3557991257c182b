//! Deleting customers over REST and gRPC: the customer reads as Stripe's `deleted_customer`
//! stub, leaves lists, takes no more writes, and its ledger stays readable and audits clean.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::credits::{BalanceClient, grant, grant_body, metered_line};
use common::{Reply, TestApp};
use creditd::grpc::proto;
use serde_json::json;
use tonic::Code;

async fn delete(app: &TestApp, path: &str) -> Reply {
    app.request(reqwest::Method::DELETE, path, Some(&app.key), None, "")
        .await
}

fn assert_missing(reply: &Reply, param: &str) {
    reply.assert_error(
        404,
        "invalid_request_error",
        Some("resource_missing"),
        Some(param),
    );
}

on_every_backend! {
    async fn a_deleted_customer_reads_as_a_stub_leaves_lists_and_takes_no_writes_over_rest(app) {
        let customer = app.create_customer("name=Ada").await;
        let kept = app.create_customer("name=Kept").await;
        let txn = app
            .post(&format!("/v1/customers/{customer}/balance_transactions"), "amount=-500&currency=usd")
            .await
            .ok();
        let grant_id = grant(&app, &grant_body(&customer, "usd", 1000)).await;

        let deleted = delete(&app, &format!("/v1/customers/{customer}")).await.ok();
        assert_eq!(deleted, json!({"id": customer, "object": "customer", "deleted": true}));

        // Retrieving it answers 200 with the same stub.
        let fetched = app.get(&format!("/v1/customers/{customer}")).await.ok();
        assert_eq!(fetched, deleted);
        // Lists leave it out.
        let listed = app.get("/v1/customers").await.ok();
        let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![kept.as_str()]);

        // Every write is resource_missing.
        assert_missing(&app.post(&format!("/v1/customers/{customer}"), "name=x").await, "id");
        assert_missing(&delete(&app, &format!("/v1/customers/{customer}")).await, "id");
        let txn_id = txn["id"].as_str().unwrap();
        let create_txn = app
            .post(&format!("/v1/customers/{customer}/balance_transactions"), "amount=-1&currency=usd")
            .await;
        assert_eq!(create_txn.status, 404, "{:?}", create_txn.body);
        assert_eq!(create_txn.body["error"]["code"], "resource_missing");
        let update_txn = app
            .post(&format!("/v1/customers/{customer}/balance_transactions/{txn_id}"), "description=x")
            .await;
        assert_eq!(update_txn.body["error"]["code"], "resource_missing", "{:?}", update_txn.body);
        let new_grant = app.post("/v1/billing/credit_grants", &grant_body(&customer, "usd", 10)).await;
        assert_eq!(new_grant.body["error"]["code"], "resource_missing", "{:?}", new_grant.body);
        let clock = app
            .post("/v1/test_helpers/test_clocks", &format!("frozen_time={}&customer={customer}", app.now()))
            .await;
        assert_eq!(clock.body["error"]["code"], "resource_missing", "{:?}", clock.body);

        // The ledger stays readable, with `customer` still naming it.
        let read_txn = app
            .get(&format!("/v1/customers/{customer}/balance_transactions/{txn_id}"))
            .await
            .ok();
        assert_eq!(read_txn["customer"], customer.as_str());
        assert_eq!(read_txn["ending_balance"], -500);
        let read_grant = app.get(&format!("/v1/billing/credit_grants/{grant_id}")).await.ok();
        assert_eq!(read_grant["customer"], customer.as_str());

        // ApplyCredits (gRPC only) is refused as well.
        let applied = BalanceClient::new(app.channel().await)
            .apply_credits(app.grpc(metered_line(&customer, "usd", "in_1", "il_1", 100)))
            .await
            .expect_err("apply to a deleted customer");
        // An unknown customer named in a request body is a 400-style `resource_missing`.
        assert_eq!(applied.code(), Code::InvalidArgument, "{applied:?}");
        assert!(applied.message().starts_with("No such customer"), "{applied:?}");

        // Nothing was rewritten: the ledger audits clean.
        let report = app.services.audit(&app.context().await).await.expect("audit");
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
    }

    async fn deleting_is_tenant_scoped_and_ignores_the_idempotency_key(app) {
        let customer = app.create_customer("name=Ada").await;
        let other = app.new_key(false, false).await;
        let live_same_account = app.new_key(true, true).await;
        for key in [&other, &live_same_account] {
            app.request(reqwest::Method::DELETE, &format!("/v1/customers/{customer}"), Some(key), None, "")
                .await
                .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
        }
        assert_eq!(app.get(&format!("/v1/customers/{customer}")).await.ok()["name"], "Ada");

        // DELETE ignores Idempotency-Key: a second delete under the same key is not a replay.
        let path = format!("/v1/customers/{customer}");
        let first = app.request(reqwest::Method::DELETE, &path, Some(&app.key), Some("del-1"), "").await.ok();
        assert_eq!(first["deleted"], true);
        app.request(reqwest::Method::DELETE, &path, Some(&app.key), Some("del-1"), "")
            .await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
        // And it takes no parameters.
        let other_customer = app.create_customer("name=Grace").await;
        app.request(reqwest::Method::DELETE, &format!("/v1/customers/{other_customer}?name=x"), Some(&app.key), None, "")
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("name"));
        assert_eq!(app.get(&format!("/v1/customers/{other_customer}")).await.ok()["name"], "Grace");
    }

    async fn a_customer_is_deleted_over_grpc(app) {
        let mut customers = app.customers().await;
        let customer = customers
            .create_customer(app.grpc(proto::CreateCustomerRequest { name: Some("Ada".into()), ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        let deleted = customers
            .delete_customer(app.grpc(proto::DeleteCustomerRequest { id: customer.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            deleted,
            proto::DeletedCustomer { id: customer.id.clone(), object: "customer".into(), deleted: true }
        );
        let fetched = customers
            .get_customer(app.grpc(proto::GetCustomerRequest { id: customer.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            fetched,
            proto::Customer { id: customer.id.clone(), object: "customer".into(), deleted: true, ..Default::default() }
        );
        let listed = customers
            .list_customers(app.grpc(proto::ListCustomersRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.data.is_empty(), "{listed:?}");
        let again = customers
            .delete_customer(app.grpc(proto::DeleteCustomerRequest { id: customer.id.clone() }))
            .await
            .expect_err("second delete");
        assert_eq!(again.code(), Code::NotFound);
        let update = customers
            .update_customer(app.grpc(proto::UpdateCustomerRequest { id: customer.id.clone(), name: Some("x".into()), ..Default::default() }))
            .await
            .expect_err("update after delete");
        assert_eq!(update.code(), Code::NotFound);
        let txn = app
            .balance_transactions()
            .await
            .create_customer_balance_transaction(app.grpc(proto::CreateCustomerBalanceTransactionRequest {
                customer: customer.id.clone(),
                amount: -100,
                currency: "usd".into(),
                ..Default::default()
            }))
            .await
            .expect_err("balance transaction after delete");
        assert_eq!(txn.code(), Code::NotFound);
    }
}
