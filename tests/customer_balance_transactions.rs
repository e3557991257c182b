//! The customer balance ledger over REST and gRPC: running balances, currencies, updates,
//! pagination, expand and every kind of bad input.

mod common;

use common::credits::{customer_transactions_path, grpc_customer_transactions};
use creditd::grpc::proto;
use serde_json::{Value, json};
use tonic::Code;

on_every_backend! {
    async fn transactions_keep_a_running_balance_and_set_the_customer_currency(app) {
        let customer = app.create_customer("name=Ada").await;
        let first = app.post(&customer_transactions_path(&customer), "amount=-500&currency=usd&description=goodwill&metadata[ticket]=42").await.ok();
        assert!(first["id"].as_str().unwrap().starts_with("cbtxn_test_"));
        assert_eq!(first["object"], "customer_balance_transaction");
        assert_eq!(first["amount"], -500);
        assert_eq!(first["ending_balance"], -500);
        assert_eq!(first["currency"], "usd");
        assert_eq!(first["type"], "adjustment");
        assert_eq!(first["customer"], customer.as_str());
        assert_eq!(first["description"], "goodwill");
        assert_eq!(first["metadata"], json!({"ticket": "42"}));

        let second = app.post(&customer_transactions_path(&customer), "amount=200&currency=USD").await.ok();
        assert_eq!(second["ending_balance"], -300);
        assert_eq!(second["currency"], "usd");
        let euros = app.post(&customer_transactions_path(&customer), "amount=-1000&currency=eur").await.ok();
        assert_eq!(euros["ending_balance"], -1000);

        let after = app.get(&format!("/v1/customers/{customer}")).await.ok();
        assert_eq!(after["currency"], "usd", "the first transaction sets the currency");
        assert_eq!(after["balance"], -300);
        assert_eq!(after["invoice_credit_balance"], json!({"usd": 300, "eur": 1000}), "credit is positive here");
    }

    async fn a_transaction_is_retrieved_updated_and_expanded(app) {
        let customer = app.create_customer("name=Ada").await;
        let created = app.post(&customer_transactions_path(&customer), "amount=750&currency=usd&metadata[a]=1&metadata[b]=2").await.ok();
        let id = created["id"].as_str().unwrap();
        let path = format!("{}/{id}", customer_transactions_path(&customer));

        assert_eq!(app.get(&path).await.ok(), created);

        let updated = app.post(&path, "description=fixed&metadata[a]=&metadata[c]=3").await.ok();
        assert_eq!(updated["description"], "fixed");
        assert_eq!(updated["metadata"], json!({"b": "2", "c": "3"}));
        assert_eq!(updated["amount"], 750, "amounts never change");
        assert_eq!(updated["ending_balance"], 750);

        let cleared = app.post(&path, "description=&metadata=").await.ok();
        assert_eq!(cleared["description"], Value::Null);
        assert_eq!(cleared["metadata"], json!({}));

        let expanded = app.get(&format!("{path}?expand[]=customer")).await.ok();
        assert_eq!(expanded["customer"]["id"], customer.as_str());
        assert_eq!(expanded["customer"]["object"], "customer");
        assert_eq!(expanded["customer"]["balance"], 750);

        let list = app.get(&format!("{}?expand[0]=data.customer", customer_transactions_path(&customer))).await.ok();
        assert_eq!(list["data"][0]["customer"]["id"], customer.as_str());
        app.get(&format!("{}?expand[]=customer", customer_transactions_path(&customer))).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("expand"));
    }

    async fn transaction_lists_page_newest_first_with_has_more(app) {
        let customer = app.create_customer("name=Ada").await;
        let mut ids = Vec::new();
        for amount in 1..=7 {
            let txn = app.post(&customer_transactions_path(&customer), &format!("amount={amount}&currency=usd")).await.ok();
            ids.push(txn["id"].as_str().unwrap().to_string());
        }
        ids.reverse();
        let ids_of = |page: &Value| -> Vec<String> {
            page["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
        };
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = match &cursor {
                Some(id) => format!("?limit=3&starting_after={id}"),
                None => "?limit=3".to_string(),
            };
            let page = app.get(&format!("{}{query}", customer_transactions_path(&customer))).await.ok();
            assert_eq!(page["url"], customer_transactions_path(&customer));
            seen.extend(ids_of(&page));
            if page["has_more"] == false {
                break;
            }
            cursor = seen.last().cloned();
        }
        assert_eq!(seen, ids);
        let before = app.get(&format!("{}?limit=2&ending_before={}", customer_transactions_path(&customer), ids[3])).await.ok();
        assert_eq!(ids_of(&before), ids[1..3]);
        assert_eq!(before["has_more"], true);

        let none_for_invoice = app.get(&format!("{}?invoice=in_123", customer_transactions_path(&customer))).await.ok();
        assert_eq!(none_for_invoice["data"], json!([]));
    }

    async fn bad_transaction_input_gets_stripe_errors(app) {
        let customer = app.create_customer("name=Ada").await;
        let path = customer_transactions_path(&customer);
        app.post(&path, "currency=usd").await
            .assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("amount"));
        app.post(&path, "amount=5").await
            .assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("currency"));
        app.post(&path, "amount=1.5&currency=usd").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid_integer"), Some("amount"));
        app.post(&path, "amount=ten&currency=usd").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid_integer"), Some("amount"));
        app.post(&path, "amount=0&currency=usd").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("amount"));
        app.post(&path, "amount=10000000000000&currency=usd").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("amount"));
        app.post(&path, "amount=5&currency=zzz").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("currency"));
        app.post(&path, &format!("amount=5&currency=usd&description={}", "d".repeat(351))).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("description"));
        app.post(&path, "amount=5&currency=usd&type=credit_note").await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("type"));
        app.post(&customer_transactions_path("cus_test_missing"), "amount=5&currency=usd").await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("customer"));
        app.get(&customer_transactions_path("cus_test_missing")).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("customer"));
        app.get(&format!("{path}/cbtxn_test_missing")).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("transaction"));
        app.get(&format!("{path}?limit=1000")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("limit"));
        app.get(&format!("{path}?starting_after=cbtxn_test_x&ending_before=cbtxn_test_y")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("ending_before"));

        let txn = app.post(&path, "amount=5&currency=usd").await.ok();
        let txn_path = format!("{path}/{}", txn["id"].as_str().unwrap());
        app.post(&txn_path, "amount=10").await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("amount"));
        app.post(&txn_path, &format!("metadata[{}]=v", "k".repeat(41))).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some(&format!("metadata[{}]", "k".repeat(41))));
        // A transaction is only reachable through its own customer.
        let other = app.create_customer("name=Other").await;
        app.get(&format!("{}/{}", customer_transactions_path(&other), txn["id"].as_str().unwrap())).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("transaction"));

        let ledger = app.get(&path).await.ok();
        assert_eq!(ledger["data"].as_array().unwrap().len(), 1, "no failed request wrote anything");
        assert_eq!(app.get(&format!("/v1/customers/{customer}")).await.ok()["balance"], 5);
    }

    async fn the_ledger_works_over_grpc(app) {
        let mut customers = app.customers().await;
        let mut txns = app.balance_transactions().await;
        let customer = customers
            .create_customer(app.grpc(proto::CreateCustomerRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let created = txns
            .create_customer_balance_transaction(app.grpc(proto::CreateCustomerBalanceTransactionRequest {
                customer: customer.id.clone(),
                amount: -250,
                currency: "usd".into(),
                description: Some("refund".into()),
                metadata: [("k".to_string(), "v".to_string())].into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.ending_balance, -250);
        assert_eq!(created.r#type, "adjustment");
        assert_eq!(created.object, "customer_balance_transaction");

        let updated = txns
            .update_customer_balance_transaction(app.grpc(proto::UpdateCustomerBalanceTransactionRequest {
                customer: customer.id.clone(),
                id: created.id.clone(),
                description: Some(String::new()),
                clear_metadata: true,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.description, None);
        assert!(updated.metadata.is_empty());

        let fetched = txns
            .get_customer_balance_transaction(app.grpc(proto::GetCustomerBalanceTransactionRequest {
                customer: customer.id.clone(),
                id: created.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fetched, updated);

        let list = grpc_customer_transactions(&mut txns, &app, &customer.id).await;
        assert_eq!(list.data, vec![updated]);
        assert_eq!(list.url, customer_transactions_path(&customer.id));

        let customer = customers
            .get_customer(app.grpc(proto::GetCustomerRequest { id: customer.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(customer.balance, -250);
        assert_eq!(customer.invoice_credit_balance["usd"], 250);

        let missing_amount = txns
            .create_customer_balance_transaction(app.grpc(proto::CreateCustomerBalanceTransactionRequest {
                customer: customer.id.clone(),
                currency: "usd".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(missing_amount.code(), Code::InvalidArgument);
        let unknown_customer = txns
            .create_customer_balance_transaction(app.grpc(proto::CreateCustomerBalanceTransactionRequest {
                customer: "cus_test_nope".into(),
                amount: 5,
                currency: "usd".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(unknown_customer.code(), Code::NotFound);
    }
}
