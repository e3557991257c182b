//! Authentication (no key, malformed, unknown and revoked keys; Basic and Bearer) and tenancy
//! (accounts and test/live modes never see each other's objects), over REST and gRPC.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::credits::{
    create_customer_as, create_customer_transaction_as, customer_transactions_path,
};
use common::{Reply, TestApp};
use creditd::domain::ids::random_base62;
use creditd::grpc::proto;
use serde_json::Value;
use tonic::Code;

/// A customer with one balance transaction, made with `key`: (customer, transaction).
async fn customer_with_transaction(app: &TestApp, key: &str) -> (String, String) {
    let customer = create_customer_as(app, key, "name=owner&email=owner%40example.com").await;
    let transaction = create_customer_transaction_as(
        app,
        key,
        &customer,
        "amount=250&currency=usd&description=original",
    )
    .await;
    (customer, transaction)
}

/// Every REST route with a body for its POSTs: (method, path, body).
fn every_route(customer: &str, transaction: &str) -> Vec<(reqwest::Method, String, &'static str)> {
    use reqwest::Method;
    vec![
        (Method::GET, "/v1/customers".to_string(), ""),
        (Method::POST, "/v1/customers".to_string(), "name=intruder"),
        (Method::GET, format!("/v1/customers/{customer}"), ""),
        (
            Method::POST,
            format!("/v1/customers/{customer}"),
            "name=intruder",
        ),
        (
            Method::GET,
            format!("/v1/customers/{customer}/balance_transactions"),
            "",
        ),
        (
            Method::POST,
            format!("/v1/customers/{customer}/balance_transactions"),
            "amount=1&currency=usd",
        ),
        (
            Method::GET,
            format!("/v1/customers/{customer}/balance_transactions/{transaction}"),
            "",
        ),
        (
            Method::POST,
            format!("/v1/customers/{customer}/balance_transactions/{transaction}"),
            "description=intruder",
        ),
    ]
}

/// A 401 in Stripe's shape: `{"error": {"type": "invalid_request_error", "message": …}}`
/// and nothing else.
#[track_caller]
fn assert_unauthorized(reply: &Reply, what: &str) {
    reply.assert_error(401, "invalid_request_error", None, None);
    let top: Vec<&String> = reply.body.as_object().expect("object").keys().collect();
    assert_eq!(top, vec!["error"], "{what}: {}", reply.body);
    let mut fields: Vec<&String> = reply.body["error"]
        .as_object()
        .expect("error object")
        .keys()
        .collect();
    fields.sort();
    assert_eq!(fields, vec!["message", "type"], "{what}: {}", reply.body);
}

/// Asserts nothing was changed by refused requests: one customer with its original name and
/// one transaction with its original description, as seen by `key`.
async fn assert_untouched(app: &TestApp, key: &str, customer: &str, transaction: &str) {
    let customers = app.get_as(Some(key), "/v1/customers").await.ok();
    let data = customers["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{customers}");
    assert_eq!(data[0]["id"], customer);
    assert_eq!(data[0]["name"], "owner");
    assert_eq!(data[0]["balance"], 250);
    let transactions = app
        .get_as(Some(key), &customer_transactions_path(customer))
        .await
        .ok();
    let data = transactions["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{transactions}");
    assert_eq!(data[0]["id"], transaction);
    assert_eq!(data[0]["description"], "original");
}

/// `key` cannot reach `customer` or its `transaction`: every route naming them answers 404
/// `resource_missing` (param `id` for the customer, `customer` below it), and the
/// transaction is missing under `own_customer`, one of the key's own customers, too.
async fn assert_hidden_from(
    app: &TestApp,
    key: &str,
    customer: &str,
    transaction: &str,
    own_customer: &str,
) {
    use reqwest::Method;
    let customer_path = format!("/v1/customers/{customer}");
    let transactions_path = customer_transactions_path(customer);
    let transaction_path = format!("{transactions_path}/{transaction}");
    let under_own_customer = format!("{}/{transaction}", customer_transactions_path(own_customer));
    for (method, path, body, param) in [
        (Method::GET, &customer_path, "", "id"),
        (Method::POST, &customer_path, "name=intruder", "id"),
        (Method::GET, &transactions_path, "", "customer"),
        (
            Method::POST,
            &transactions_path,
            "amount=1&currency=usd",
            "customer",
        ),
        (Method::GET, &transaction_path, "", "customer"),
        (
            Method::POST,
            &transaction_path,
            "description=intruder",
            "customer",
        ),
        (Method::GET, &under_own_customer, "", "transaction"),
    ] {
        let reply = app
            .request(method.clone(), path, Some(key), None, body)
            .await;
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.body);
        reply.assert_error(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            Some(param),
        );
    }
}

fn well_formed_unknown_key(livemode: bool) -> String {
    format!(
        "{}{}",
        if livemode { "sk_live_" } else { "sk_test_" },
        random_base62(32)
    )
}

/// One call to each RPC with `key` (None: no `authorization` metadata at all).
type RpcResult = (&'static str, Result<(), tonic::Status>);

async fn every_rpc(
    app: &TestApp,
    key: Option<&str>,
    customer: &str,
    transaction: &str,
) -> Vec<RpcResult> {
    let mut customers = app.customers().await;
    let mut transactions = app.balance_transactions().await;
    let mut results = Vec::new();
    let mut note =
        |name: &'static str, result: Result<(), tonic::Status>| results.push((name, result));
    note(
        "CreateCustomer",
        customers
            .create_customer(common::grpc_request(
                proto::CreateCustomerRequest::default(),
                key,
                None,
            ))
            .await
            .map(drop),
    );
    note(
        "GetCustomer",
        customers
            .get_customer(common::grpc_request(
                proto::GetCustomerRequest {
                    id: customer.into(),
                },
                key,
                None,
            ))
            .await
            .map(drop),
    );
    note(
        "ListCustomers",
        customers
            .list_customers(common::grpc_request(
                proto::ListCustomersRequest::default(),
                key,
                None,
            ))
            .await
            .map(drop),
    );
    note(
        "UpdateCustomer",
        customers
            .update_customer(common::grpc_request(
                proto::UpdateCustomerRequest {
                    id: customer.into(),
                    name: Some("intruder".into()),
                    ..Default::default()
                },
                key,
                None,
            ))
            .await
            .map(drop),
    );
    note(
        "CreateCustomerBalanceTransaction",
        transactions
            .create_customer_balance_transaction(common::grpc_request(
                proto::CreateCustomerBalanceTransactionRequest {
                    customer: customer.into(),
                    amount: 1,
                    currency: "usd".into(),
                    ..Default::default()
                },
                key,
                None,
            ))
            .await
            .map(drop),
    );
    note(
        "GetCustomerBalanceTransaction",
        transactions
            .get_customer_balance_transaction(common::grpc_request(
                proto::GetCustomerBalanceTransactionRequest {
                    customer: customer.into(),
                    id: transaction.into(),
                },
                key,
                None,
            ))
            .await
            .map(drop),
    );
    note(
        "ListCustomerBalanceTransactions",
        transactions
            .list_customer_balance_transactions(common::grpc_request(
                proto::ListCustomerBalanceTransactionsRequest {
                    customer: customer.into(),
                    ..Default::default()
                },
                key,
                None,
            ))
            .await
            .map(drop),
    );
    note(
        "UpdateCustomerBalanceTransaction",
        transactions
            .update_customer_balance_transaction(common::grpc_request(
                proto::UpdateCustomerBalanceTransactionRequest {
                    customer: customer.into(),
                    id: transaction.into(),
                    description: Some("intruder".into()),
                    ..Default::default()
                },
                key,
                None,
            ))
            .await
            .map(drop),
    );
    results
}

/// Every RPC with `key` fails with `code`.
async fn assert_every_rpc_fails(
    app: &TestApp,
    key: Option<&str>,
    customer: &str,
    transaction: &str,
    code: Code,
) -> Vec<tonic::Status> {
    let results = every_rpc(app, key, customer, transaction).await;
    assert_eq!(results.len(), 8);
    results
        .into_iter()
        .map(|(name, result)| {
            let status = result.expect_err(name);
            assert_eq!(status.code(), code, "{name}: {status:?}");
            assert!(!status.message().is_empty(), "{name}");
            status
        })
        .collect()
}

/// Nothing in a REST reply (body or any header) contains `secret`.
#[track_caller]
fn assert_not_in_reply(reply: &Reply, secret: &str) {
    let body = reply.body.to_string();
    assert!(
        !body.contains(secret),
        "the key appears in the body: {body}"
    );
    for (name, value) in &reply.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains(secret),
            "the key appears in header {name}: {value}"
        );
    }
}

#[track_caller]
fn assert_not_in_status(status: &tonic::Status, secret: &str) {
    assert!(
        !status.message().contains(secret),
        "the key appears in the message: {status:?}"
    );
    assert!(
        !String::from_utf8_lossy(status.details()).contains(secret),
        "the key appears in the details: {status:?}"
    );
    let metadata = format!("{:?}", status.metadata());
    assert!(
        !metadata.contains(secret),
        "the key appears in the metadata: {metadata}"
    );
}

on_every_backend! {
    async fn every_rest_route_refuses_a_request_without_a_key(app) {
        let (customer, transaction) = customer_with_transaction(&app, &app.key).await;
        for (method, path, body) in every_route(&customer, &transaction) {
            let reply = app.request(method.clone(), &path, None, None, body).await;
            assert_unauthorized(&reply, &format!("{method} {path}"));
        }
        // Also with an idempotency key, and for unknown objects: authentication comes first.
        let reply = app
            .request(reqwest::Method::POST, "/v1/customers", None, Some("k"), "name=intruder")
            .await;
        assert_unauthorized(&reply, "POST with an idempotency key");
        let reply = app.request(reqwest::Method::GET, "/v1/customers/cus_test_missing", None, None, "").await;
        assert_unauthorized(&reply, "unknown customer");
        // An empty Basic username or an empty Bearer token is no key either.
        for authorization in ["Basic Og==", "Bearer ", "Bearer"] {
            let response = app
                .http
                .get(format!("{}/v1/customers", app.http_base))
                .header("Authorization", authorization)
                .send()
                .await
                .expect("send");
            assert_eq!(response.status().as_u16(), 401, "{authorization:?}");
        }
        assert_untouched(&app, &app.key, &customer, &transaction).await;
    }

    async fn every_grpc_call_without_a_key_is_unauthenticated(app) {
        let (customer, transaction) = customer_with_transaction(&app, &app.key).await;
        assert_every_rpc_fails(&app, None, &customer, &transaction, Code::Unauthenticated).await;
        assert_untouched(&app, &app.key, &customer, &transaction).await;
    }

    async fn malformed_unknown_and_revoked_keys_are_refused(app) {
        let (customer, transaction) = customer_with_transaction(&app, &app.key).await;
        let secret = &app.key["sk_test_".len()..];
        let live_key = app.new_key(true, true).await;

        // A second key of the account works until it is revoked.
        let revoked = app.new_key(false, true).await;
        app.get_as(Some(&revoked), "/v1/customers").await.ok();
        let caller = app.services.authenticate(Some(&revoked)).await.expect("authenticate");
        app.services.revoke_api_key(&caller.key_id).await.expect("revoke");
        let refused = app.services.authenticate(Some(&revoked)).await.expect_err("revoked key");
        assert_eq!(refused.kind, creditd::ErrorKind::Unauthenticated);

        let mut wrong_tail = app.key.clone();
        let last = wrong_tail.pop().expect("last character");
        wrong_tail.push(if last == 'a' { 'b' } else { 'a' });
        let bad_keys = vec![
            ("short", "sk_test_short".to_string()),
            ("publishable", format!("pk_test_{}", random_base62(32))),
            ("random text", "not an api key at all".to_string()),
            ("punctuation", format!("sk_test_{}!", random_base62(31))),
            ("prefix only", "sk_test_".to_string()),
            ("unknown test key", well_formed_unknown_key(false)),
            ("unknown live key", well_formed_unknown_key(true)),
            ("known lookup prefix, wrong secret", wrong_tail),
            ("test secret with the live prefix", format!("sk_live_{secret}")),
            ("live secret with the test prefix", format!("sk_test_{}", &live_key["sk_live_".len()..])),
            ("revoked", revoked.clone()),
        ];
        for (what, key) in &bad_keys {
            for (method, path, body) in every_route(&customer, &transaction) {
                let reply = app.request(method.clone(), &path, Some(key), None, body).await;
                assert_unauthorized(&reply, &format!("{what}: {method} {path}"));
            }
            // Bearer too.
            let response = app
                .http
                .get(format!("{}/v1/customers", app.http_base))
                .bearer_auth(key)
                .send()
                .await
                .expect("send");
            assert_eq!(response.status().as_u16(), 401, "{what} (Bearer)");
            // And gRPC.
            assert_every_rpc_fails(&app, Some(key), &customer, &transaction, Code::Unauthenticated).await;
        }

        // The account's other keys are unaffected.
        app.get("/v1/customers").await.ok();
        app.get_as(Some(&live_key), "/v1/customers").await.ok();
        assert_untouched(&app, &app.key, &customer, &transaction).await;
    }

    async fn a_key_revoked_by_another_process_stops_working_within_the_cache_time(app) {
        let cached = TestApp::spawn_with(app.backend, |config| config.api_key_cache_seconds = 1).await;
        let key = cached.new_key(false, true).await;
        cached.get_as(Some(&key), "/v1/customers").await.ok();
        // Another process (`creditd keys revoke`, another replica) revokes it in the database.
        let elsewhere = creditd::service::Services::new(cached.services.db.clone());
        let caller = elsewhere.authenticate(Some(&key)).await.expect("authenticate");
        elsewhere.revoke_api_key(&caller.key_id).await.expect("revoke");
        cached.get_as(Some(&key), "/v1/customers").await.ok();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let refused = cached.get_as(Some(&key), "/v1/customers").await;
        assert_unauthorized(&refused, "revoked elsewhere, after the cache time");

        // With the cache off, revocation elsewhere is seen by the very next request.
        let uncached = TestApp::spawn_with(app.backend, |config| config.api_key_cache_seconds = 0).await;
        let key = uncached.new_key(false, true).await;
        uncached.get_as(Some(&key), "/v1/customers").await.ok();
        let elsewhere = creditd::service::Services::new(uncached.services.db.clone());
        let caller = elsewhere.authenticate(Some(&key)).await.expect("authenticate");
        elsewhere.revoke_api_key(&caller.key_id).await.expect("revoke");
        let refused = uncached.get_as(Some(&key), "/v1/customers").await;
        assert_unauthorized(&refused, "revoked elsewhere, no cache");
    }

    async fn bearer_and_basic_auth_both_carry_a_valid_key(app) {
        let url = format!("{}/v1/customers", app.http_base);
        let bearer = app
            .http
            .post(&url)
            .bearer_auth(&app.key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("name=bearer")
            .send()
            .await
            .expect("send");
        assert_eq!(bearer.status().as_u16(), 200);
        let created: Value = bearer.json().await.expect("JSON");
        common::check_schema("POST", "/v1/customers", 200, &created);
        assert_eq!(created["name"], "bearer");

        let basic = app.http.get(&url).basic_auth(&app.key, Some("")).send().await.expect("send");
        assert_eq!(basic.status().as_u16(), 200);
        let listed: Value = basic.json().await.expect("JSON");
        common::check_schema("GET", "/v1/customers", 200, &listed);
        assert_eq!(listed["data"][0]["id"], created["id"]);

        // `curl -u sk_test_…:` sends the key with an empty password; without the colon it is the same key.
        let basic_no_password = app.http.get(&url).basic_auth(&app.key, None::<&str>).send().await.expect("send");
        assert_eq!(basic_no_password.status().as_u16(), 200);
        // The scheme is case-insensitive.
        let lowercase = app
            .http
            .get(&url)
            .header("Authorization", format!("bearer {}", app.key))
            .send()
            .await
            .expect("send");
        assert_eq!(lowercase.status().as_u16(), 200);

        // Both work for a live-mode key as well, and reach live mode.
        let live_key = app.new_key(true, true).await;
        let live = app
            .http
            .post(&url)
            .bearer_auth(&live_key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("name=live")
            .send()
            .await
            .expect("send");
        assert_eq!(live.status().as_u16(), 200);
        let live: Value = live.json().await.expect("JSON");
        assert_eq!(live["livemode"], true);

        // gRPC takes `authorization: Bearer <key>`.
        let mut customers = app.customers().await;
        let list = customers
            .list_customers(app.grpc(proto::ListCustomersRequest::default()))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(list.data.len(), 1);
        assert_eq!(list.data[0].id, created["id"].as_str().unwrap());
    }

    async fn another_accounts_objects_are_missing_over_rest(app) {
        let (customer, transaction) = customer_with_transaction(&app, &app.key).await;
        let other = app.new_key(false, false).await;
        let (other_customer, other_transaction) = customer_with_transaction(&app, &other).await;
        let as_other = |method: reqwest::Method, path: String, body: &'static str| {
            let other = other.clone();
            let app = &app;
            async move { app.request(method, &path, Some(&other), None, body).await }
        };
        use reqwest::Method;

        assert_hidden_from(&app, &other, &customer, &transaction, &other_customer).await;
        // Under the other account's own customer, the transaction cannot be updated either.
        as_other(Method::POST, format!("/v1/customers/{other_customer}/balance_transactions/{transaction}"), "description=intruder").await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("transaction"));
        // Pagination cursors cannot point into another account either.
        as_other(Method::GET, format!("/v1/customers?starting_after={customer}"), "").await
            .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("starting_after"));
        as_other(Method::GET, format!("/v1/customers/{other_customer}/balance_transactions?ending_before={transaction}"), "").await
            .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("ending_before"));

        // Lists hold only the caller's own objects, whatever the filter.
        let theirs = as_other(Method::GET, "/v1/customers".to_string(), "").await.ok();
        let ids: Vec<&str> = theirs["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![other_customer.as_str()]);
        let by_email = as_other(Method::GET, "/v1/customers?email=owner%40example.com".to_string(), "").await.ok();
        assert_eq!(by_email["data"].as_array().unwrap().len(), 1);
        assert_eq!(by_email["data"][0]["id"], other_customer.as_str());
        let their_transactions = as_other(Method::GET, format!("/v1/customers/{other_customer}/balance_transactions"), "").await.ok();
        let ids: Vec<&str> = their_transactions["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![other_transaction.as_str()]);

        // The same holds the other way round.
        app.get(&format!("/v1/customers/{other_customer}")).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
        app.get(&format!("/v1/customers/{other_customer}/balance_transactions/{other_transaction}")).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("customer"));

        assert_untouched(&app, &app.key, &customer, &transaction).await;
        assert_untouched(&app, &other, &other_customer, &other_transaction).await;
    }

    async fn another_accounts_objects_are_not_found_over_grpc(app) {
        let (customer, transaction) = customer_with_transaction(&app, &app.key).await;
        let other = app.new_key(false, false).await;
        let (other_customer, other_transaction) = customer_with_transaction(&app, &other).await;
        for (name, result) in every_rpc(&app, Some(&other), &customer, &transaction).await {
            match name {
                // Creating a customer and listing customers do not name an object.
                "CreateCustomer" | "ListCustomers" => assert!(result.is_ok(), "{name}: {result:?}"),
                _ => assert_eq!(result.expect_err(name).code(), Code::NotFound, "{name}"),
            }
        }
        let mut customers = app.customers().await;
        let list = customers
            .list_customers(common::grpc_request(proto::ListCustomersRequest::default(), Some(&other), None))
            .await
            .expect("list")
            .into_inner();
        // every_rpc created one customer in the other account; the first account's never shows.
        assert!(list.data.iter().all(|c| c.id != customer), "{list:?}");
        assert!(list.data.iter().any(|c| c.id == other_customer));
        let mut transactions = app.balance_transactions().await;
        let missing = transactions
            .get_customer_balance_transaction(common::grpc_request(
                proto::GetCustomerBalanceTransactionRequest { customer: other_customer.clone(), id: transaction.clone() },
                Some(&other),
                None,
            ))
            .await
            .expect_err("another account's transaction");
        assert_eq!(missing.code(), Code::NotFound);
        let own = transactions
            .get_customer_balance_transaction(common::grpc_request(
                proto::GetCustomerBalanceTransactionRequest { customer: other_customer.clone(), id: other_transaction.clone() },
                Some(&other),
                None,
            ))
            .await
            .expect("own transaction")
            .into_inner();
        assert_eq!(own.id, other_transaction);
        assert_untouched(&app, &app.key, &customer, &transaction).await;
    }

    async fn test_and_live_mode_objects_are_invisible_to_each_other(app) {
        let (test_customer, test_transaction) = customer_with_transaction(&app, &app.key).await;
        let live_key = app.new_key(true, true).await;
        let (live_customer, live_transaction) = customer_with_transaction(&app, &live_key).await;

        // Live IDs have no `_test_` and live objects say so.
        assert!(live_customer.starts_with("cus_") && !live_customer.contains("_test_"), "{live_customer}");
        assert!(live_transaction.starts_with("cbtxn_") && !live_transaction.contains("_test_"), "{live_transaction}");
        assert!(test_customer.starts_with("cus_test_") && test_transaction.starts_with("cbtxn_test_"));
        let live = app.get_as(Some(&live_key), &format!("/v1/customers/{live_customer}")).await.ok();
        assert_eq!(live["livemode"], true);
        let live_txn = app
            .get_as(Some(&live_key), &format!("/v1/customers/{live_customer}/balance_transactions/{live_transaction}"))
            .await
            .ok();
        assert_eq!(live_txn["livemode"], true);
        assert_eq!(app.get(&format!("/v1/customers/{test_customer}")).await.ok()["livemode"], false);

        for (key, customer, transaction, own_customer) in [
            (app.key.as_str(), &live_customer, &live_transaction, &test_customer),
            (live_key.as_str(), &test_customer, &test_transaction, &live_customer),
        ] {
            assert_hidden_from(&app, key, customer, transaction, own_customer).await;
            let list = app.get_as(Some(key), "/v1/customers").await.ok();
            let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
            assert_eq!(ids, vec![own_customer.as_str()]);
        }

        // gRPC: a live-mode key creates live objects and cannot reach test ones.
        let mut customers = app.customers().await;
        let created = customers
            .create_customer(common::grpc_request(proto::CreateCustomerRequest { name: Some("live".into()), ..Default::default() }, Some(&live_key), None))
            .await
            .expect("create")
            .into_inner();
        assert!(created.livemode);
        assert!(!created.id.contains("_test_"), "{}", created.id);
        let missing = customers
            .get_customer(common::grpc_request(proto::GetCustomerRequest { id: test_customer.clone() }, Some(&live_key), None))
            .await
            .expect_err("test customer from live mode");
        assert_eq!(missing.code(), Code::NotFound);
        let missing = customers
            .get_customer(app.grpc(proto::GetCustomerRequest { id: created.id.clone() }))
            .await
            .expect_err("live customer from test mode");
        assert_eq!(missing.code(), Code::NotFound);

        assert_untouched(&app, &app.key, &test_customer, &test_transaction).await;
    }

    async fn a_transaction_is_reachable_only_under_its_own_customer(app) {
        let (customer, transaction) = customer_with_transaction(&app, &app.key).await;
        let sibling = app.create_customer("name=sibling").await;
        app.get(&format!("/v1/customers/{sibling}/balance_transactions/{transaction}")).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("transaction"));
        app.post(&format!("/v1/customers/{sibling}/balance_transactions/{transaction}"), "description=moved").await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("transaction"));
        let list = app.get(&format!("/v1/customers/{sibling}/balance_transactions")).await.ok();
        assert_eq!(list["data"].as_array().unwrap().len(), 0);
        let own = app.get(&format!("/v1/customers/{customer}/balance_transactions/{transaction}")).await.ok();
        assert_eq!(own["description"], "original");
    }

    async fn api_keys_never_appear_in_responses(app) {
        let secret = app.key["sk_test_".len()..].to_string();
        let (customer, transaction) = customer_with_transaction(&app, &app.key).await;

        // Successful responses, with Basic auth.
        for (method, path, body) in every_route(&customer, &transaction) {
            let reply = app.request(method.clone(), &path, Some(&app.key), None, body).await;
            assert_eq!(reply.status, 200, "{method} {path}: {}", reply.body);
            assert_not_in_reply(&reply, &secret);
        }

        // Refused keys: unknown (well-formed), revoked, a wrong tail on a real prefix, malformed.
        let unknown = well_formed_unknown_key(false);
        let revoked = app.new_key(false, true).await;
        let caller = app.services.authenticate(Some(&revoked)).await.expect("authenticate");
        app.services.revoke_api_key(&caller.key_id).await.expect("revoke");
        let wrong_tail = format!("{}{}", &app.key[..app.key.len() - 4], "ZZZZ");
        let malformed = "sk_test_NotARealKeyButSecret!!".to_string();
        for key in [&unknown, &revoked, &wrong_tail, &malformed] {
            let key_secret = &key["sk_test_".len()..];
            let reply = app.get_as(Some(key), "/v1/customers").await;
            assert_eq!(reply.status, 401);
            assert_not_in_reply(&reply, key_secret);
            assert_not_in_reply(&reply, &secret);
            for status in assert_every_rpc_fails(&app, Some(key), &customer, &transaction, Code::Unauthenticated).await {
                assert_not_in_status(&status, key_secret);
                assert_not_in_status(&status, &secret);
            }
        }

        // Failed calls with a valid key (not found, invalid) do not echo it either.
        let missing = app.get("/v1/customers/cus_test_missing").await;
        assert_eq!(missing.status, 404);
        assert_not_in_reply(&missing, &secret);
        let mut customers = app.customers().await;
        let status = customers
            .get_customer(app.grpc(proto::GetCustomerRequest { id: "cus_test_missing".into() }))
            .await
            .expect_err("missing");
        assert_not_in_status(&status, &secret);
    }
}
