//! The same scenario through gRPC and through REST leaves the same ledger: both transports
//! call the same service functions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use creditd::grpc::proto;
use serde_json::Value;

/// (amount, currency, description, metadata key) steps of the scenario.
const STEPS: &[(i64, &str, &str, &str)] = &[
    (-500, "usd", "welcome credit", "a"),
    (200, "usd", "invoice adjustment", "b"),
    (-1000, "eur", "eu credit", "c"),
    (100, "usd", "", "d"),
    (-50, "eur", "small", "e"),
];

/// What must match between the two runs: everything but IDs and times.
fn ledger_of(page: &Value) -> Vec<(i64, String, i64, String, Value, Value)> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["amount"].as_i64().unwrap(),
                t["currency"].as_str().unwrap().to_string(),
                t["ending_balance"].as_i64().unwrap(),
                t["type"].as_str().unwrap().to_string(),
                t["description"].clone(),
                t["metadata"].clone(),
            )
        })
        .collect()
}

on_every_backend! {
    async fn the_same_scenario_over_grpc_and_rest_leaves_the_same_ledger(app) {
        // REST run.
        let rest_customer = app.create_customer("name=Twin&metadata[run]=x").await;
        for (amount, currency, description, key) in STEPS {
            let body = format!("amount={amount}&currency={currency}&description={}&metadata[{key}]=1", common::enc(description));
            app.post(&format!("/v1/customers/{rest_customer}/balance_transactions"), &body).await.ok();
        }
        // The same via gRPC.
        let mut customers = app.customers().await;
        let mut txns = app.balance_transactions().await;
        let grpc_customer = customers
            .create_customer(app.grpc(proto::CreateCustomerRequest {
                name: Some("Twin".into()),
                metadata: [("run".to_string(), "x".to_string())].into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .id;
        for (amount, currency, description, key) in STEPS {
            txns.create_customer_balance_transaction(app.grpc(proto::CreateCustomerBalanceTransactionRequest {
                customer: grpc_customer.clone(),
                amount: *amount,
                currency: currency.to_string(),
                description: Some(description.to_string()),
                metadata: [(key.to_string(), "1".to_string())].into(),
            }))
            .await
            .unwrap();
        }

        // Both ledgers read back over REST are the same…
        let rest_ledger = app.get(&format!("/v1/customers/{rest_customer}/balance_transactions")).await.ok();
        let grpc_ledger = app.get(&format!("/v1/customers/{grpc_customer}/balance_transactions")).await.ok();
        assert_eq!(ledger_of(&rest_ledger), ledger_of(&grpc_ledger));
        assert_eq!(ledger_of(&rest_ledger).len(), STEPS.len());

        // …and both customers read back over gRPC agree with what REST says.
        for id in [&rest_customer, &grpc_customer] {
            let over_grpc = customers
                .get_customer(app.grpc(proto::GetCustomerRequest { id: id.clone() }))
                .await
                .unwrap()
                .into_inner();
            let over_rest = app.get(&format!("/v1/customers/{id}")).await.ok();
            assert_eq!(over_grpc.balance, over_rest["balance"].as_i64().unwrap());
            assert_eq!(over_grpc.balance, -200);
            assert_eq!(over_grpc.currency.as_deref(), Some("usd"));
            assert_eq!(over_grpc.invoice_credit_balance["eur"], 1050);
            assert_eq!(over_rest["invoice_credit_balance"]["eur"], 1050);
            assert_eq!(over_grpc.name.as_deref(), over_rest["name"].as_str());

            let grpc_list = txns
                .list_customer_balance_transactions(app.grpc(proto::ListCustomerBalanceTransactionsRequest {
                    customer: id.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            let rest_list = app.get(&format!("/v1/customers/{id}/balance_transactions")).await.ok();
            let rest_ids: Vec<&str> = rest_list["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
            let grpc_ids: Vec<&str> = grpc_list.data.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(rest_ids, grpc_ids);
            let grpc_endings: Vec<i64> = grpc_list.data.iter().map(|t| t.ending_balance).collect();
            let rest_endings: Vec<i64> = rest_list["data"].as_array().unwrap().iter().map(|t| t["ending_balance"].as_i64().unwrap()).collect();
            assert_eq!(grpc_endings, rest_endings);
        }
    }
}
