//! Writes for one customer are serialized: under 200 concurrent balance transactions the
//! `ending_balance` chain has no gap or repeat and the balance equals the sum of amounts, and
//! SQLite never surfaces "database is locked".
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use creditd::grpc::proto;

on_every_backend! {
    async fn two_hundred_concurrent_transactions_on_one_customer_form_a_gapless_chain(app) {
        let customer = app.create_customer("name=Hot").await;
        let channel = app.channel().await;
        let mut tasks = Vec::new();
        for n in 0..200i64 {
            // Mixed signs and sizes so any lost update changes the sum.
            let amount = if n % 3 == 0 { -(n + 1) * 7 } else { n + 13 };
            let over_rest = n % 2 == 0;
            let request = app.grpc(proto::CreateCustomerBalanceTransactionRequest {
                customer: customer.clone(),
                amount,
                currency: "usd".into(),
                ..Default::default()
            });
            let mut client = proto::customer_balance_transaction_service_client::CustomerBalanceTransactionServiceClient::new(channel.clone());
            let http = app.http.clone();
            let url = format!("{}/v1/customers/{customer}/balance_transactions", app.http_base);
            let key = app.key.clone();
            tasks.push(tokio::spawn(async move {
                if over_rest {
                    let response = http
                        .post(url)
                        .basic_auth(key, Some(""))
                        .form(&[("amount", amount.to_string()), ("currency", "usd".to_string())])
                        .send()
                        .await
                        .expect("send");
                    let status = response.status();
                    let body: serde_json::Value = response.json().await.expect("json");
                    assert_eq!(status, 200, "{body}");
                    (body["amount"].as_i64().unwrap(), body["ending_balance"].as_i64().unwrap())
                } else {
                    let txn = client.create_customer_balance_transaction(request).await.expect("create").into_inner();
                    (txn.amount, txn.ending_balance)
                }
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("task"));
        }
        let total: i64 = results.iter().map(|(amount, _)| amount).sum();
        assert_eq!(results.len(), 200);

        // Walk the ledger oldest to newest: each ending balance is the previous one plus the amount.
        let mut ledger = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = cursor.as_ref().map_or("limit=100".to_string(), |id| format!("limit=100&starting_after={id}"));
            let page = app.get(&format!("/v1/customers/{customer}/balance_transactions?{query}")).await.ok();
            for txn in page["data"].as_array().unwrap() {
                ledger.push((txn["amount"].as_i64().unwrap(), txn["ending_balance"].as_i64().unwrap()));
                cursor = Some(txn["id"].as_str().unwrap().to_string());
            }
            if page["has_more"] == false {
                break;
            }
        }
        ledger.reverse();
        assert_eq!(ledger.len(), 200);
        let mut running = 0i64;
        for (amount, ending) in &ledger {
            running += amount;
            assert_eq!(*ending, running, "chain broken");
        }
        // Every response's (amount, ending_balance) is one step of that chain: none skipped or repeated.
        let mut from_responses = results.clone();
        let mut from_ledger = ledger.clone();
        from_responses.sort();
        from_ledger.sort();
        assert_eq!(from_responses, from_ledger);
        assert_eq!(running, total);
        let customer = app.get(&format!("/v1/customers/{customer}")).await.ok();
        assert_eq!(customer["balance"].as_i64().unwrap(), total);
    }
}
