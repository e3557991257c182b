//! Customers over REST and gRPC: happy paths, pagination and every kind of bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::enc;
use creditd::grpc::proto;
use tonic::Code;

on_every_backend! {
    async fn a_customer_is_created_retrieved_and_updated_over_rest(app) {
        let created = app
            .post("/v1/customers", "name=Ada+Lovelace&email=ada%40example.com&description=first&phone=%2B4412345&metadata[tier]=gold&metadata[region]=eu")
            .await
            .ok();
        let id = created["id"].as_str().unwrap();
        assert!(id.starts_with("cus_test_"), "{id}");
        assert_eq!(created["object"], "customer");
        assert_eq!(created["name"], "Ada Lovelace");
        assert_eq!(created["email"], "ada@example.com");
        assert_eq!(created["phone"], "+4412345");
        assert_eq!(created["livemode"], false);
        assert_eq!(created["balance"], 0);
        assert_eq!(created["currency"], serde_json::Value::Null);
        assert_eq!(created["metadata"], serde_json::json!({"tier": "gold", "region": "eu"}));

        let fetched = app.get(&format!("/v1/customers/{id}")).await.ok();
        assert_eq!(fetched, created);

        let updated = app
            .post(&format!("/v1/customers/{id}"), "name=Ada&metadata[tier]=&metadata[plan]=pro&description=")
            .await
            .ok();
        assert_eq!(updated["name"], "Ada");
        assert_eq!(updated["description"], serde_json::Value::Null);
        assert_eq!(updated["email"], "ada@example.com");
        assert_eq!(updated["metadata"], serde_json::json!({"region": "eu", "plan": "pro"}));

        let cleared = app.post(&format!("/v1/customers/{id}"), "metadata=").await.ok();
        assert_eq!(cleared["metadata"], serde_json::json!({}));
    }

    async fn bracket_syntax_is_accepted_raw_or_percent_encoded_with_either_space_form(app) {
        let created = app
            .post("/v1/customers", "name=Grace%20Hopper&description=a+b&metadata%5Bkey%5D=v&expand%5B0%5D=test_clock")
            .await
            .ok();
        assert_eq!(created["name"], "Grace Hopper");
        assert_eq!(created["description"], "a b");
        assert_eq!(created["metadata"]["key"], "v");
    }

    async fn customers_list_newest_first_with_exact_has_more_and_both_cursors(app) {
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(app.create_customer(&format!("name=c{n}")).await);
        }
        let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

        let first = app.get("/v1/customers?limit=2").await.ok();
        assert_eq!(first["object"], "list");
        assert_eq!(first["url"], "/v1/customers");
        assert_eq!(first["has_more"], true);
        let page_ids = |page: &serde_json::Value| -> Vec<String> {
            page["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(page_ids(&first), newest_first[0..2]);

        let second = app.get(&format!("/v1/customers?limit=2&starting_after={}", newest_first[1])).await.ok();
        assert_eq!(page_ids(&second), newest_first[2..4]);
        assert_eq!(second["has_more"], true);
        let last = app.get(&format!("/v1/customers?limit=2&starting_after={}", newest_first[3])).await.ok();
        assert_eq!(page_ids(&last), newest_first[4..5]);
        assert_eq!(last["has_more"], false);

        let before = app.get(&format!("/v1/customers?limit=2&ending_before={}", newest_first[4])).await.ok();
        assert_eq!(page_ids(&before), newest_first[2..4]);
        assert_eq!(before["has_more"], true);

        let all = app.get("/v1/customers").await.ok();
        assert_eq!(page_ids(&all), newest_first);
        assert_eq!(all["has_more"], false);

        let by_email = app.create_customer("email=x%40y.z").await;
        let filtered = app.get("/v1/customers?email=x%40y.z").await.ok();
        assert_eq!(page_ids(&filtered), vec![by_email]);
    }

    async fn the_created_filter_accepts_an_integer_or_bounds(app) {
        let id = app.create_customer("name=t").await;
        let created = app.get(&format!("/v1/customers/{id}")).await.ok()["created"].as_i64().unwrap();
        let exact = app.get(&format!("/v1/customers?created={created}")).await.ok();
        assert_eq!(exact["data"].as_array().unwrap().len(), 1);
        let later = app.get(&format!("/v1/customers?created[gt]={created}")).await.ok();
        assert_eq!(later["data"].as_array().unwrap().len(), 0);
        let range = app.get(&format!("/v1/customers?created%5Bgte%5D={created}&created%5Blte%5D={created}")).await.ok();
        assert_eq!(range["data"].as_array().unwrap().len(), 1);
        app.get("/v1/customers?created[between]=1").await.assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("created[between]"));
    }

    async fn bad_customer_input_gets_stripe_errors(app) {
        app.post("/v1/customers", "nickname=x").await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("nickname"));
        app.post("/v1/customers", "metadata[a][b]=x").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("metadata[a]"));
        let long_key = "k".repeat(41);
        app.post("/v1/customers", &format!("metadata[{long_key}]=v")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some(&format!("metadata[{long_key}]")));
        app.post("/v1/customers", &format!("metadata[k]={}", "v".repeat(501))).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("metadata[k]"));
        let fifty_one: Vec<String> = (0..51).map(|i| format!("metadata[k{i}]=v")).collect();
        app.post("/v1/customers", &fifty_one.join("&")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("metadata"));
        app.post("/v1/customers", &format!("name={}", "n".repeat(257))).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("name"));
        app.post("/v1/customers", "email=not-an-email").await
            .assert_error(400, "invalid_request_error", Some("email_invalid"), Some("email"));
        app.post("/v1/customers", "expand[]=subscriptions").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("expand"));
        app.post("/v1/customers", "test_clock=clock_missing").await
            .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("test_clock"));
        app.post("/v1/customers", "name=a&name=b").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("name"));
        // Nothing was written by any of these.
        let list = app.get("/v1/customers").await.ok();
        assert_eq!(list["data"].as_array().unwrap().len(), 0);
    }

    async fn bad_list_parameters_get_stripe_errors(app) {
        app.get("/v1/customers?limit=0").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("limit"));
        app.get("/v1/customers?limit=101").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("limit"));
        app.get("/v1/customers?limit=abc").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid_integer"), Some("limit"));
        app.get("/v1/customers?limit=1.5").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid_integer"), Some("limit"));
        app.get("/v1/customers?starting_after=cus_a&ending_before=cus_b").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("ending_before"));
        app.get("/v1/customers?starting_after=cus_test_nope").await
            .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("starting_after"));
        app.get("/v1/customers?colour=red").await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("colour"));
    }

    async fn a_cursor_outside_the_filter_still_pages_and_a_missing_one_is_refused(app) {
        let older = app.create_customer("email=a%40example.com").await;
        let outside = app.create_customer("email=b%40example.com").await;
        let newer = app.create_customer("email=a%40example.com").await;
        // The cursor exists but is not among the filtered customers: the page is what lies past it.
        let page = app
            .get(&format!("/v1/customers?email=a%40example.com&starting_after={outside}"))
            .await
            .ok();
        let ids: Vec<&str> = page["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![older.as_str()]);
        let page = app
            .get(&format!("/v1/customers?email=a%40example.com&ending_before={outside}"))
            .await
            .ok();
        let ids: Vec<&str> = page["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![newer.as_str()]);
        // A cursor that is listed is dropped from its own page.
        let page = app.get(&format!("/v1/customers?starting_after={newer}&limit=1")).await.ok();
        assert_eq!(page["data"][0]["id"], outside.as_str());
        assert_eq!(page["has_more"], true);
        app.get("/v1/customers?email=a%40example.com&ending_before=cus_test_nope").await
            .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("ending_before"));
    }

    async fn unknown_customers_and_routes_are_404(app) {
        app.get("/v1/customers/cus_test_missing").await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
        app.post("/v1/customers/cus_test_missing", "name=x").await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
        let unknown = app.get("/v1/widgets").await;
        assert_eq!(unknown.status, 404);
        assert_eq!(unknown.body["error"]["type"], "invalid_request_error");
    }

    async fn a_customer_is_created_listed_and_updated_over_grpc(app) {
        let mut client = app.customers().await;
        let created = client
            .create_customer(app.grpc(proto::CreateCustomerRequest {
                name: Some("Ada".into()),
                email: Some("ada@example.com".into()),
                metadata: [("tier".to_string(), "gold".to_string())].into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(created.id.starts_with("cus_test_"));
        assert_eq!(created.object, "customer");
        assert_eq!(created.metadata["tier"], "gold");

        let fetched = client
            .get_customer(app.grpc(proto::GetCustomerRequest { id: created.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fetched, created);

        let updated = client
            .update_customer(app.grpc(proto::UpdateCustomerRequest {
                id: created.id.clone(),
                name: Some(String::new()),
                metadata: [("tier".to_string(), String::new()), ("plan".to_string(), "pro".to_string())].into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.name, None);
        assert_eq!(updated.metadata, [("plan".to_string(), "pro".to_string())].into());

        let list = client
            .list_customers(app.grpc(proto::ListCustomersRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.object, "list");
        assert_eq!(list.url, "/v1/customers");
        assert_eq!(list.data, vec![updated]);
        assert!(!list.has_more);

        // The REST shim sees the same customer.
        let rest = app.get(&format!("/v1/customers/{}", created.id)).await.ok();
        assert_eq!(rest["metadata"], serde_json::json!({"plan": "pro"}));
    }

    async fn grpc_errors_carry_precise_codes_and_details(app) {
        let mut client = app.customers().await;
        let missing = client
            .get_customer(app.grpc(proto::GetCustomerRequest { id: "cus_test_nope".into() }))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        use tonic_types::StatusExt;
        let details = missing.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "resource_missing");
        assert_eq!(info.metadata["param"], "id");

        let bad = client
            .create_customer(app.grpc(proto::CreateCustomerRequest {
                metadata: [("k".repeat(41), "v".to_string())].into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        let violations = bad.get_error_details().bad_request().expect("bad request").field_violations.clone();
        assert_eq!(violations[0].field, format!("metadata[{}]", "k".repeat(41)));

        let bad_limit = client
            .list_customers(app.grpc(proto::ListCustomersRequest {
                page: Some(proto::PageRequest { limit: Some(101), ..Default::default() }),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(bad_limit.code(), Code::InvalidArgument);

        let unauthenticated = client
            .list_customers(tonic::Request::new(proto::ListCustomersRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    }

    async fn balance_on_update_is_absolute_and_writes_one_adjustment_for_the_difference(app) {
        let customer = app.create_customer("name=Ada&balance=0").await;
        let txns = format!("/v1/customers/{customer}/balance_transactions");
        let path = format!("/v1/customers/{customer}");
        // Without a currency the balance can only stay 0.
        app.post(&path, "balance=100").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("balance"));
        assert_eq!(app.post(&path, "balance=0").await.ok()["balance"], 0);
        assert_eq!(app.get(&txns).await.ok()["data"].as_array().unwrap().len(), 0);

        app.post(&txns, "amount=-500&currency=usd").await.ok();
        let updated = app.post(&path, "balance=-800").await.ok();
        assert_eq!(updated["balance"], -800);
        assert_eq!(updated["invoice_credit_balance"]["usd"], 800);
        let listed = app.get(&txns).await.ok();
        let data = listed["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data[0]["amount"], -300);
        assert_eq!(data[0]["ending_balance"], -800);
        assert_eq!(data[0]["type"], "adjustment");
        assert_eq!(data[0]["currency"], "usd");

        // The same value, or no balance at all, writes nothing.
        assert_eq!(app.post(&path, "balance=-800").await.ok()["balance"], -800);
        assert_eq!(app.post(&path, "name=Grace").await.ok()["balance"], -800);
        assert_eq!(app.get(&txns).await.ok()["data"].as_array().unwrap().len(), 2);

        // Over gRPC too.
        let updated = app
            .customers()
            .await
            .update_customer(app.grpc(proto::UpdateCustomerRequest {
                id: customer.clone(),
                balance: Some(250),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.balance, 250);
        let listed = app.get(&txns).await.ok();
        let data = listed["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        assert_eq!(data[0]["amount"], 1050);
        assert_eq!(data[0]["ending_balance"], 250);
    }

    async fn a_new_customer_can_only_start_at_balance_zero(app) {
        app.post("/v1/customers", "balance=-100").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("balance"));
        app.post("/v1/customers", "balance=x").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid_integer"), Some("balance"));
        let status = app
            .customers()
            .await
            .create_customer(app.grpc(proto::CreateCustomerRequest { balance: Some(-100), ..Default::default() }))
            .await
            .expect_err("a nonzero starting balance");
        assert_eq!(status.code(), Code::InvalidArgument);
        let created = app.post("/v1/customers", "balance=0").await.ok();
        assert_eq!(created["balance"], 0);
    }
}

#[test]
fn form_values_are_encoded_for_tests() {
    assert_eq!(enc("a b&c"), "a+b%26c");
}
