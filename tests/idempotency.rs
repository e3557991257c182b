//! Idempotency keys over REST (`Idempotency-Key` header) and gRPC (`idempotency-key`
//! metadata): replays, mismatches, keys in flight (in this process and, on PostgreSQL, in
//! another replica), scoping per account and mode, failed requests, key length and GETs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::credits::{
    CustomerTransactionClient, create_customer_as, customer_transactions_path,
    grpc_customer_transactions, ids_of,
};
use common::{Reply, TestApp};
use creditd::grpc::proto;
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

const CREATE_TRANSACTION: &str = "customer_balance_transaction.create";

/// The IDs of a customer's balance transactions as `key` sees them, newest first.
async fn transaction_ids_as(app: &TestApp, key: &str, customer: &str) -> Vec<String> {
    ids_of(
        &app.get_as(
            Some(key),
            &format!("{}?limit=100", customer_transactions_path(customer)),
        )
        .await
        .ok(),
    )
}

/// The IDs of a customer's balance transactions, newest first.
async fn transaction_ids(app: &TestApp, customer: &str) -> Vec<String> {
    transaction_ids_as(app, &app.key, customer).await
}

async fn balance(app: &TestApp, customer: &str) -> i64 {
    app.get(&format!("/v1/customers/{customer}")).await.ok()["balance"]
        .as_i64()
        .expect("balance")
}

async fn post_as(app: &TestApp, key: &str, path: &str, idempotency_key: &str, body: &str) -> Reply {
    app.request(
        reqwest::Method::POST,
        path,
        Some(key),
        Some(idempotency_key),
        body,
    )
    .await
}

fn create_request(customer: &str, amount: i64) -> proto::CreateCustomerBalanceTransactionRequest {
    proto::CreateCustomerBalanceTransactionRequest {
        customer: customer.to_string(),
        amount,
        currency: "usd".into(),
        ..Default::default()
    }
}

/// Creates a USD balance transaction of `amount` over gRPC under `idempotency_key`.
async fn create_over_grpc(
    transactions: &mut CustomerTransactionClient,
    app: &TestApp,
    customer: &str,
    amount: i64,
    idempotency_key: &str,
) -> Result<proto::CustomerBalanceTransaction, tonic::Status> {
    transactions
        .create_customer_balance_transaction(
            app.grpc_idempotent(create_request(customer, amount), idempotency_key),
        )
        .await
        .map(tonic::Response::into_inner)
}

/// A REST refusal of a key held by a request in flight: 409 `idempotency_key_in_use`.
#[track_caller]
fn assert_key_in_use(reply: &Reply) {
    reply.assert_error(
        409,
        "invalid_request_error",
        Some("idempotency_key_in_use"),
        None,
    );
}

/// The gRPC refusal of a key held by a request in flight: ABORTED, `idempotency_key_in_use`.
#[track_caller]
fn assert_key_in_use_over_grpc(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(grpc_error_reason(status), "idempotency_key_in_use");
}

/// The gRPC refusal of a key reused with other parameters: FAILED_PRECONDITION,
/// `idempotency_error`.
#[track_caller]
fn assert_mismatch_over_grpc(status: &tonic::Status) {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(grpc_error_type(status), "idempotency_error");
}

/// The Stripe error type carried in a gRPC status's `ErrorInfo`.
fn grpc_error_type(status: &tonic::Status) -> String {
    let details = status.get_error_details();
    let info = details.error_info().expect("error info");
    info.metadata.get("type").cloned().unwrap_or_default()
}

/// A REST response header, if present.
fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .get(name)
        .map(|value| value.to_str().expect("ASCII header"))
}

/// A gRPC response (or error status) metadata value, if present.
fn metadata<'a>(metadata: &'a tonic::metadata::MetadataMap, name: &str) -> Option<&'a str> {
    metadata
        .get(name)
        .map(|value| value.to_str().expect("ASCII metadata"))
}

fn grpc_error_reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .expect("error info")
        .reason
        .clone()
}

on_every_backend! {
    async fn a_rest_balance_transaction_repeated_with_its_key_is_replayed_and_applied_once(app) {
        let customer = app.create_customer("name=replay").await;
        let path = customer_transactions_path(&customer);
        let first = app.post_idempotent(&path, "k1", "amount=500&currency=usd&description=top+up&metadata[order]=42").await.ok();
        let second = app.post_idempotent(&path, "k1", "amount=500&currency=usd&description=top+up&metadata[order]=42").await.ok();
        assert!(first["id"].as_str().unwrap().starts_with("cbtxn_test_"), "{first}");
        assert_eq!(first["ending_balance"], 500);
        assert_eq!(second, first, "the replay is the first response, field for field");

        assert_eq!(transaction_ids(&app, &customer).await, vec![first["id"].as_str().unwrap().to_string()]);
        assert_eq!(balance(&app, &customer).await, 500, "the balance moved once");

        // A new key is a new request: the balance moves again, from the replayed state.
        let third = app.post_idempotent(&path, "k2", "amount=500&currency=usd&description=top+up&metadata[order]=42").await.ok();
        assert_ne!(third["id"], first["id"]);
        assert_eq!(third["ending_balance"], 1000);
        assert_eq!(transaction_ids(&app, &customer).await.len(), 2);
        // And the first key still replays the first result, not the latest state.
        let again = app.post_idempotent(&path, "k1", "amount=500&currency=usd&description=top+up&metadata[order]=42").await.ok();
        assert_eq!(again, first);
        assert_eq!(balance(&app, &customer).await, 1000);
    }

    async fn expand_is_not_part_of_the_request_identity(app) {
        let customer = app.create_customer("name=expand").await;
        let path = customer_transactions_path(&customer);
        let first = app.post_idempotent(&path, "k", "amount=-250&currency=eur").await.ok();
        let expanded = app.post_idempotent(&path, "k", "amount=-250&currency=eur&expand[]=customer").await.ok();
        assert_eq!(expanded["id"], first["id"]);
        assert_eq!(expanded["customer"]["id"], customer.as_str());
        assert_eq!(transaction_ids(&app, &customer).await.len(), 1);
    }

    async fn a_rest_customer_creation_repeated_with_its_key_creates_one_customer(app) {
        let first = app.post_idempotent("/v1/customers", "create-ada", "name=Ada&email=ada%40example.com&metadata[tier]=gold").await.ok();
        let second = app.post_idempotent("/v1/customers", "create-ada", "name=Ada&email=ada%40example.com&metadata[tier]=gold").await.ok();
        assert!(first["id"].as_str().unwrap().starts_with("cus_test_"));
        assert_eq!(second, first);
        let list = app.get("/v1/customers").await.ok();
        assert_eq!(ids_of(&list), vec![first["id"].as_str().unwrap().to_string()]);
    }

    async fn grpc_calls_repeated_with_their_key_are_replayed_and_applied_once(app) {
        let mut customers = app.customers().await;
        let request = || proto::CreateCustomerRequest { name: Some("Grace".into()), ..Default::default() };
        let customer = customers.create_customer(app.grpc_idempotent(request(), "c1")).await.unwrap().into_inner();
        let replayed = customers.create_customer(app.grpc_idempotent(request(), "c1")).await.unwrap().into_inner();
        assert_eq!(replayed, customer);
        let listed = customers
            .list_customers(app.grpc(proto::ListCustomersRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.data.len(), 1);

        let mut transactions = app.balance_transactions().await;
        let first = create_over_grpc(&mut transactions, &app, &customer.id, 700, "t1").await.unwrap();
        let second = create_over_grpc(&mut transactions, &app, &customer.id, 700, "t1").await.unwrap();
        assert_eq!(second, first);
        assert_eq!(first.ending_balance, 700);
        let list = grpc_customer_transactions(&mut transactions, &app, &customer.id).await;
        assert_eq!(list.data, vec![first]);
        assert_eq!(balance(&app, &customer.id).await, 700);
    }

    async fn a_key_used_over_one_transport_is_replayed_over_the_other(app) {
        let customer = app.create_customer("name=both").await;
        let mut transactions = app.balance_transactions().await;

        // REST first, then gRPC with the same parameters.
        let rest = app.post_idempotent(&customer_transactions_path(&customer), "shared", "amount=300&currency=usd").await.ok();
        let grpc = create_over_grpc(&mut transactions, &app, &customer, 300, "shared").await.unwrap();
        assert_eq!(grpc.id, rest["id"].as_str().unwrap());
        assert_eq!(grpc.ending_balance, 300);
        assert_eq!(grpc.created, rest["created"].as_i64().unwrap());

        // gRPC first, then REST.
        let grpc_first = create_over_grpc(&mut transactions, &app, &customer, -100, "other").await.unwrap();
        let rest_replay = app.post_idempotent(&customer_transactions_path(&customer), "other", "amount=-100&currency=usd").await.ok();
        assert_eq!(rest_replay["id"], grpc_first.id.as_str());
        assert_eq!(rest_replay["ending_balance"], 200);

        // Customers, too.
        let created = app.post_idempotent("/v1/customers", "cust", "name=Both").await.ok();
        let mut customers = app.customers().await;
        let over_grpc = customers
            .create_customer(app.grpc_idempotent(proto::CreateCustomerRequest { name: Some("Both".into()), ..Default::default() }, "cust"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(over_grpc.id, created["id"].as_str().unwrap());

        assert_eq!(transaction_ids(&app, &customer).await.len(), 2);
        assert_eq!(balance(&app, &customer).await, 200);
        assert_eq!(ids_of(&app.get("/v1/customers").await.ok()).len(), 2);
    }

    async fn a_key_reused_with_other_parameters_is_an_idempotency_error_over_rest(app) {
        let customer = app.create_customer("name=mismatch").await;
        let other_customer = app.create_customer("name=other").await;
        let path = customer_transactions_path(&customer);
        let first = app.post_idempotent(&path, "k", "amount=500&currency=usd").await.ok();
        for body in [
            "amount=501&currency=usd",
            "amount=500&currency=eur",
            "amount=500&currency=usd&description=changed",
            "amount=500&currency=usd&metadata[a]=b",
        ] {
            app.post_idempotent(&path, "k", body).await.assert_error(400, "idempotency_error", None, None);
        }
        // The same body for another customer is another request.
        app.post_idempotent(&customer_transactions_path(&other_customer), "k", "amount=500&currency=usd")
            .await
            .assert_error(400, "idempotency_error", None, None);

        // Nothing was written by the refused requests, and the original still replays.
        assert_eq!(transaction_ids(&app, &customer).await.len(), 1);
        assert_eq!(transaction_ids(&app, &other_customer).await.len(), 0);
        assert_eq!(balance(&app, &customer).await, 500);
        assert_eq!(app.post_idempotent(&path, "k", "amount=500&currency=usd").await.ok(), first);

        // Customer creation as well.
        app.post_idempotent("/v1/customers", "c", "name=A").await.ok();
        app.post_idempotent("/v1/customers", "c", "name=B").await.assert_error(400, "idempotency_error", None, None);
        assert_eq!(ids_of(&app.get("/v1/customers").await.ok()).len(), 3);
    }

    async fn a_key_reused_with_other_parameters_fails_its_precondition_over_grpc(app) {
        let customer = app.create_customer("name=mismatch").await;
        let mut transactions = app.balance_transactions().await;
        let first = create_over_grpc(&mut transactions, &app, &customer, 500, "k").await.unwrap();
        let mismatch = create_over_grpc(&mut transactions, &app, &customer, 501, "k").await.unwrap_err();
        assert_mismatch_over_grpc(&mismatch);

        // The key was first used over gRPC; a REST request with other parameters is refused too.
        app.post_idempotent(&customer_transactions_path(&customer), "k", "amount=499&currency=usd")
            .await
            .assert_error(400, "idempotency_error", None, None);

        let mut customers = app.customers().await;
        customers
            .create_customer(app.grpc_idempotent(proto::CreateCustomerRequest { name: Some("A".into()), ..Default::default() }, "c"))
            .await
            .unwrap();
        let mismatch = customers
            .create_customer(app.grpc_idempotent(proto::CreateCustomerRequest { name: Some("B".into()), ..Default::default() }, "c"))
            .await
            .unwrap_err();
        assert_eq!(mismatch.code(), Code::FailedPrecondition, "{mismatch:?}");

        assert_eq!(transaction_ids(&app, &customer).await, vec![first.id]);
        assert_eq!(balance(&app, &customer).await, 500);
    }

    async fn a_key_reused_for_another_operation_is_an_idempotency_error(app) {
        let created = app.post_idempotent("/v1/customers", "k", "name=first").await.ok();
        let customer = created["id"].as_str().unwrap().to_string();
        let path = customer_transactions_path(&customer);

        // Create customer → create balance transaction, over both transports.
        app.post_idempotent(&path, "k", "amount=100&currency=usd").await.assert_error(400, "idempotency_error", None, None);
        let mut transactions = app.balance_transactions().await;
        let status = create_over_grpc(&mut transactions, &app, &customer, 100, "k").await.unwrap_err();
        assert_mismatch_over_grpc(&status);

        // Create customer → update that customer.
        app.post_idempotent(&format!("/v1/customers/{customer}"), "k", "name=first")
            .await
            .assert_error(400, "idempotency_error", None, None);

        // Create balance transaction → update it.
        let transaction = app.post_idempotent(&path, "t", "amount=100&currency=usd").await.ok();
        let transaction_path = format!("{path}/{}", transaction["id"].as_str().unwrap());
        app.post_idempotent(&transaction_path, "t", "description=x")
            .await
            .assert_error(400, "idempotency_error", None, None);

        // Nothing changed.
        assert_eq!(transaction_ids(&app, &customer).await.len(), 1);
        assert_eq!(balance(&app, &customer).await, 100);
        assert_eq!(app.get(&transaction_path).await.ok()["description"], Value::Null);
        assert_eq!(app.get(&format!("/v1/customers/{customer}")).await.ok()["name"], "first");
    }

    async fn updates_are_idempotent_too(app) {
        let customer = app.create_customer("name=u").await;
        let path = customer_transactions_path(&customer);
        let transaction = app.post(&path, "amount=100&currency=usd").await.ok();
        let transaction_path = format!("{path}/{}", transaction["id"].as_str().unwrap());
        let first = app.post_idempotent(&transaction_path, "u", "description=first").await.ok();
        assert_eq!(first["description"], "first");
        // Another change without the key, then a replay: the replay is the stored result.
        app.post(&transaction_path, "description=second").await.ok();
        let replayed = app.post_idempotent(&transaction_path, "u", "description=first").await.ok();
        assert_eq!(replayed, first);
        assert_eq!(app.get(&transaction_path).await.ok()["description"], "second", "the replay wrote nothing");
        app.post_idempotent(&transaction_path, "u", "description=third")
            .await
            .assert_error(400, "idempotency_error", None, None);
    }

    async fn a_key_held_by_a_running_request_gets_409_until_it_is_released(app) {
        let customer = app.create_customer("name=busy").await;
        let path = customer_transactions_path(&customer);
        let ctx = app.context().await.with_idempotency_key(Some("k".into()));
        let claim = app
            .services
            .idempotency
            .claim(&ctx, CREATE_TRANSACTION, &"anything")
            .expect("claim the key");

        assert_key_in_use(&app.post_idempotent(&path, "k", "amount=100&currency=usd").await);
        // Whatever the operation: the key itself is busy.
        assert_key_in_use(&app.post_idempotent("/v1/customers", "k", "name=x").await);
        let mut transactions = app.balance_transactions().await;
        assert_key_in_use_over_grpc(&create_over_grpc(&mut transactions, &app, &customer, 100, "k").await.unwrap_err());

        // Other keys, and requests without a key, are not held up.
        app.post_idempotent(&path, "k-other", "amount=1&currency=usd").await.ok();
        app.post(&path, "amount=1&currency=usd").await.ok();
        assert_eq!(transaction_ids(&app, &customer).await.len(), 2);

        drop(claim);
        let done = app.post_idempotent(&path, "k", "amount=100&currency=usd").await.ok();
        assert_eq!(done["ending_balance"], 102);
        let replayed = create_over_grpc(&mut transactions, &app, &customer, 100, "k").await.unwrap();
        assert_eq!(replayed.id, done["id"].as_str().unwrap());
        assert_eq!(transaction_ids(&app, &customer).await.len(), 3);
    }

    async fn a_key_held_in_another_account_or_mode_does_not_block(app) {
        let customer = app.create_customer("name=free").await;
        let mut claims = Vec::new();
        for (livemode, same_account) in [(true, true), (false, false)] {
            let key = app.new_key(livemode, same_account).await;
            let caller = app.services.authenticate(Some(&key)).await.expect("authenticate");
            let ctx = creditd::service::RequestContext::new(caller.tenant).with_idempotency_key(Some("k".into()));
            claims.push(app.services.idempotency.claim(&ctx, CREATE_TRANSACTION, &"x").expect("claim"));
        }
        app.post_idempotent(&customer_transactions_path(&customer), "k", "amount=5&currency=usd").await.ok();
        drop(claims);
    }

    async fn concurrent_requests_with_one_key_apply_once(app) {
        let customer = app.create_customer("name=race").await;
        let path = customer_transactions_path(&customer);
        let replies = futures::future::join_all(
            (0..8).map(|_| app.post_idempotent(&path, "race", "amount=10&currency=usd")),
        )
        .await;
        let mut winners = Vec::new();
        for reply in &replies {
            match reply.status {
                200 => winners.push(reply.body["id"].clone()),
                _ => assert_key_in_use(reply),
            }
        }
        assert!(!winners.is_empty(), "{replies:?}");
        assert!(winners.iter().all(|id| *id == winners[0]), "{winners:?}");
        let settled = app.post_idempotent(&path, "race", "amount=10&currency=usd").await.ok();
        assert_eq!(settled["id"], winners[0]);
        assert_eq!(transaction_ids(&app, &customer).await.len(), 1);
        assert_eq!(balance(&app, &customer).await, 10);
    }

    async fn on_postgresql_a_key_locked_by_another_replica_gets_409(app) {
        if app.backend != common::Backend::Postgres {
            eprintln!("skipped: advisory locks exist only on PostgreSQL");
            return;
        }
        let customer = app.create_customer("name=replica").await;
        let path = customer_transactions_path(&customer);
        let tenant = app.context().await.tenant;

        // Another replica runs the key: it holds the advisory lock in its open transaction.
        let replica = app.services.db.begin().await.expect("begin");
        assert!(creditd::store::idempotency::try_lock_key(&replica, &tenant, "k").await.expect("lock"));

        assert_key_in_use(&app.post_idempotent(&path, "k", "amount=100&currency=usd").await);
        let mut transactions = app.balance_transactions().await;
        assert_key_in_use_over_grpc(&create_over_grpc(&mut transactions, &app, &customer, 100, "k").await.unwrap_err());
        // The lock is per account, mode and key.
        app.post_idempotent(&path, "k2", "amount=1&currency=usd").await.ok();
        let live_key = app.new_key(true, true).await;
        let live_customer = create_customer_as(&app, &live_key, "name=live").await;
        post_as(&app, &live_key, &customer_transactions_path(&live_customer), "k", "amount=1&currency=usd").await.ok();
        assert_eq!(transaction_ids(&app, &customer).await.len(), 1, "the refused requests wrote nothing");

        replica.rollback().await.expect("rollback");
        let done = app.post_idempotent(&path, "k", "amount=100&currency=usd").await.ok();
        assert_eq!(done["ending_balance"], 101);
        assert_eq!(transaction_ids(&app, &customer).await.len(), 2);
    }

    async fn the_same_key_in_another_account_or_mode_is_a_separate_request(app) {
        let customer = app.create_customer("name=mine").await;
        let mine = app.post_idempotent(&customer_transactions_path(&customer), "shared", "amount=100&currency=usd").await.ok();
        let mine_customer = app.post_idempotent("/v1/customers", "shared-customer", "name=x").await.ok();

        for (livemode, same_account) in [(false, false), (true, true), (true, false)] {
            let key = app.new_key(livemode, same_account).await;
            // The same key string creates a new customer here, not a replay of ours.
            let theirs_customer = post_as(&app, &key, "/v1/customers", "shared-customer", "name=x").await.ok();
            assert_ne!(theirs_customer["id"], mine_customer["id"]);
            assert_eq!(theirs_customer["livemode"], livemode);
            let their_id = theirs_customer["id"].as_str().unwrap().to_string();
            // A different body under our key name is not a mismatch there either.
            let theirs = post_as(&app, &key, &customer_transactions_path(&their_id), "shared", "amount=999&currency=eur").await.ok();
            assert_ne!(theirs["id"], mine["id"]);
            assert_eq!(theirs["ending_balance"], 999);
            assert_eq!(theirs["livemode"], livemode);
            // And it replays there.
            let replayed = post_as(&app, &key, &customer_transactions_path(&their_id), "shared", "amount=999&currency=eur").await.ok();
            assert_eq!(replayed, theirs);
            assert_eq!(transaction_ids_as(&app, &key, &their_id).await.len(), 1);
        }

        // Our key still replays our own result.
        assert_eq!(app.post_idempotent(&customer_transactions_path(&customer), "shared", "amount=100&currency=usd").await.ok(), mine);
        assert_eq!(transaction_ids(&app, &customer).await.len(), 1);
        assert_eq!(ids_of(&app.get("/v1/customers").await.ok()).len(), 2);
    }

    async fn the_same_key_over_grpc_in_another_account_is_a_separate_request(app) {
        let customer = app.create_customer("name=mine").await;
        let mut transactions = app.balance_transactions().await;
        let mine = create_over_grpc(&mut transactions, &app, &customer, 100, "g").await.unwrap();
        let other_key = app.new_key(false, false).await;
        let other_customer = create_customer_as(&app, &other_key, "name=other").await;
        let theirs = transactions
            .create_customer_balance_transaction(common::grpc_request(create_request(&other_customer, 100), Some(&other_key), Some("g")))
            .await
            .unwrap()
            .into_inner();
        assert_ne!(theirs.id, mine.id);
        assert_eq!(theirs.customer, other_customer);
    }

    async fn a_failed_request_stores_nothing_so_its_key_runs_again(app) {
        let customer = app.create_customer("name=retry").await;
        let path = customer_transactions_path(&customer);

        // Unknown customer, then the same key on a real one: a new request, not a mismatch.
        app.post_idempotent(&customer_transactions_path("cus_test_missing"), "k", "amount=100&currency=usd")
            .await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("customer"));
        let created = app.post_idempotent(&path, "k", "amount=100&currency=usd").await.ok();
        assert_eq!(created["ending_balance"], 100);

        // A validation failure, then the same key with a valid body.
        app.post_idempotent(&path, "v", "currency=usd")
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("amount"));
        let valid = app.post_idempotent(&path, "v", "amount=50&currency=usd").await.ok();
        assert_eq!(valid["ending_balance"], 150);
        // That success was stored: a later different body is now a mismatch.
        app.post_idempotent(&path, "v", "amount=51&currency=usd")
            .await
            .assert_error(400, "idempotency_error", None, None);

        // Same for gRPC: unknown customer first, then the same key on the real customer.
        let mut transactions = app.balance_transactions().await;
        let missing = create_over_grpc(&mut transactions, &app, "cus_test_missing", 7, "g").await.unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        let invalid = create_over_grpc(&mut transactions, &app, &customer, 0, "g").await.unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument);
        let ok = create_over_grpc(&mut transactions, &app, &customer, 7, "g").await.unwrap();
        assert_eq!(ok.customer, customer);
        assert_eq!(transaction_ids(&app, &customer).await.len(), 3);
        assert_eq!(balance(&app, &customer).await, 157);
    }

    async fn idempotency_keys_are_at_most_255_characters(app) {
        let customer = app.create_customer("name=long").await;
        let path = customer_transactions_path(&customer);
        let too_long = "k".repeat(256);
        app.post_idempotent(&path, &too_long, "amount=1&currency=usd")
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("Idempotency-Key"));
        app.post_idempotent("/v1/customers", &too_long, "name=x")
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("Idempotency-Key"));
        assert_eq!(transaction_ids(&app, &customer).await.len(), 0);
        assert_eq!(ids_of(&app.get("/v1/customers").await.ok()).len(), 1);

        let longest = "k".repeat(255);
        let first = app.post_idempotent(&path, &longest, "amount=1&currency=usd").await.ok();
        let replayed = app.post_idempotent(&path, &longest, "amount=1&currency=usd").await.ok();
        assert_eq!(replayed, first);
        assert_eq!(transaction_ids(&app, &customer).await.len(), 1);

        // The same limit over gRPC.
        let mut transactions = app.balance_transactions().await;
        let status = create_over_grpc(&mut transactions, &app, &customer, 1, &too_long).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("bad request").field_violations;
        assert_eq!(violations[0].field, "Idempotency-Key");
        let replayed = create_over_grpc(&mut transactions, &app, &customer, 1, &longest).await.unwrap();
        assert_eq!(replayed.id, first["id"].as_str().unwrap());
    }

    async fn an_empty_idempotency_key_is_refused(app) {
        app.post_idempotent("/v1/customers", "", "name=x")
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("Idempotency-Key"));
        assert_eq!(ids_of(&app.get("/v1/customers").await.ok()).len(), 0);
    }

    async fn get_requests_ignore_the_idempotency_key_header(app) {
        let customer = app.create_customer("name=get").await;
        let transaction = app.post(&customer_transactions_path(&customer), "amount=5&currency=usd").await.ok();
        let transaction_path = format!("{}/{}", customer_transactions_path(&customer), transaction["id"].as_str().unwrap());
        // Even a key that is held right now, or that was used for a POST, does not matter on GET.
        app.post_idempotent("/v1/customers", "used", "name=other").await.ok();
        let ctx = app.context().await.with_idempotency_key(Some("held".into()));
        let _claim = app.services.idempotency.claim(&ctx, CREATE_TRANSACTION, &"x").expect("claim");
        for key in ["held", "used", &"k".repeat(300)] {
            for path in ["/v1/customers".to_string(), format!("/v1/customers/{customer}"), customer_transactions_path(&customer), transaction_path.clone()] {
                let first = app.request(reqwest::Method::GET, &path, Some(&app.key), Some(key), "").await.ok();
                let second = app.request(reqwest::Method::GET, &path, Some(&app.key), Some(key), "").await.ok();
                assert_eq!(first, second, "{path}");
            }
        }
        // A GET with a key does not store anything under it: the key is still free for a POST.
        app.request(reqwest::Method::GET, "/v1/customers", Some(&app.key), Some("fresh"), "").await.ok();
        let created = app.post_idempotent(&customer_transactions_path(&customer), "fresh", "amount=6&currency=usd").await.ok();
        assert_eq!(created["ending_balance"], 11);
    }

    async fn rest_responses_echo_the_key_and_say_when_they_were_replayed(app) {
        let customer = app.create_customer("name=headers").await;
        let path = customer_transactions_path(&customer);
        let first = app.post_idempotent(&path, "h1", "amount=5&currency=usd").await;
        assert_eq!(header(&first, "Idempotency-Key"), Some("h1"));
        assert_eq!(header(&first, "Idempotent-Replayed"), None, "the first answer is not a replay");
        let replay = app.post_idempotent(&path, "h1", "amount=5&currency=usd").await;
        assert_eq!(header(&replay, "Idempotency-Key"), Some("h1"));
        assert_eq!(header(&replay, "Idempotent-Replayed"), Some("true"));
        assert_eq!(replay.body, first.ok());

        let keyless = app.post(&path, "amount=5&currency=usd").await;
        assert_eq!(header(&keyless, "Idempotency-Key"), None);
        assert_eq!(header(&keyless, "Idempotent-Replayed"), None);
        let listed = app.get(&path).await;
        assert_eq!((header(&listed, "Idempotency-Key"), header(&listed, "Idempotent-Replayed")), (None, None));

        // Errors echo the key too, and are never replays: the key reused with other
        // parameters, a request that fails validation, a key held by a running request.
        let mismatch = app.post_idempotent(&path, "h1", "amount=6&currency=usd").await;
        mismatch.assert_error(400, "idempotency_error", None, None);
        assert_eq!(header(&mismatch, "Idempotency-Key"), Some("h1"));
        assert_eq!(header(&mismatch, "Idempotent-Replayed"), None);
        let invalid = app.post_idempotent(&path, "h2", "currency=usd").await;
        invalid.assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("amount"));
        assert_eq!(header(&invalid, "Idempotency-Key"), Some("h2"));
        assert_eq!(header(&invalid, "Idempotent-Replayed"), None);
        let ctx = app.context().await.with_idempotency_key(Some("held".into()));
        let claim = app.services.idempotency.claim(&ctx, CREATE_TRANSACTION, &"x").expect("claim");
        let in_use = app.post_idempotent(&path, "held", "amount=5&currency=usd").await;
        assert_key_in_use(&in_use);
        assert_eq!(header(&in_use, "Idempotency-Key"), Some("held"));
        assert_eq!(header(&in_use, "Idempotent-Replayed"), None);
        drop(claim);
        // A GET ignores the key but still echoes it; nothing is replayed.
        let get = app.request(reqwest::Method::GET, &path, Some(&app.key), Some("h1"), "").await;
        assert_eq!(header(&get, "Idempotency-Key"), Some("h1"));
        assert_eq!(header(&get, "Idempotent-Replayed"), None);

        // A test clock's advance replays through its own path, and says so as well.
        let now = app.now();
        let clock = app.post("/v1/test_helpers/test_clocks", &format!("frozen_time={now}")).await.ok();
        let advance_path = format!("/v1/test_helpers/test_clocks/{}/advance", clock["id"].as_str().unwrap());
        let body = format!("frozen_time={}", now + 3600);
        let advanced = app.post_idempotent(&advance_path, "tick", &body).await;
        assert_eq!(header(&advanced, "Idempotent-Replayed"), None);
        let again = app.post_idempotent(&advance_path, "tick", &body).await;
        assert_eq!(header(&again, "Idempotency-Key"), Some("tick"));
        assert_eq!(header(&again, "Idempotent-Replayed"), Some("true"));
        assert_eq!(again.body, advanced.ok());
    }

    async fn grpc_responses_echo_the_key_and_say_when_they_were_replayed(app) {
        let customer = app.create_customer("name=metadata").await;
        let mut transactions = app.balance_transactions().await;
        let create = |amount: i64, key: Option<&str>| {
            common::grpc_request(create_request(&customer, amount), Some(&app.key), key)
        };
        let first = transactions.create_customer_balance_transaction(create(5, Some("m1"))).await.unwrap();
        assert_eq!(metadata(first.metadata(), "idempotency-key"), Some("m1"));
        assert_eq!(metadata(first.metadata(), "idempotent-replayed"), None);
        let replay = transactions.create_customer_balance_transaction(create(5, Some("m1"))).await.unwrap();
        assert_eq!(metadata(replay.metadata(), "idempotency-key"), Some("m1"));
        assert_eq!(metadata(replay.metadata(), "idempotent-replayed"), Some("true"));
        assert_eq!(replay.into_inner(), first.into_inner());

        let keyless = transactions.create_customer_balance_transaction(create(5, None)).await.unwrap();
        assert_eq!(metadata(keyless.metadata(), "idempotency-key"), None);
        assert_eq!(metadata(keyless.metadata(), "idempotent-replayed"), None);

        // An error status carries the echo too, and is never a replay.
        let mismatch = transactions.create_customer_balance_transaction(create(6, Some("m1"))).await.unwrap_err();
        assert_mismatch_over_grpc(&mismatch);
        assert_eq!(metadata(mismatch.metadata(), "idempotency-key"), Some("m1"));
        assert_eq!(metadata(mismatch.metadata(), "idempotent-replayed"), None);

        // A key first used over REST is replayed over gRPC, and reported as such.
        app.post_idempotent(&customer_transactions_path(&customer), "r1", "amount=7&currency=usd").await.ok();
        let across = transactions.create_customer_balance_transaction(create(7, Some("r1"))).await.unwrap();
        assert_eq!(metadata(across.metadata(), "idempotency-key"), Some("r1"));
        assert_eq!(metadata(across.metadata(), "idempotent-replayed"), Some("true"));
    }
}

/// A key whose header value is not visible ASCII (here UTF-8 `clé`) is never silently dropped
/// (which would apply every retry again): both transports refuse it naming `Idempotency-Key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_idempotency_key_is_never_silently_ignored() {
    let app = TestApp::spawn(common::Backend::Sqlite).await;
    let customer = app.create_customer("name=accent").await;
    let key = reqwest::header::HeaderValue::from_bytes("clé".as_bytes()).expect("obs-text header");
    let mut replies = Vec::new();
    for _ in 0..2 {
        let response = app
            .http
            .post(format!(
                "{}{}",
                app.http_base,
                customer_transactions_path(&customer)
            ))
            .basic_auth(&app.key, Some(""))
            .header("Idempotency-Key", key.clone())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("amount=5&currency=usd")
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON");
        replies.push((status, body));
    }
    for (status, body) in &replies {
        assert_eq!(*status, 400, "{body}");
        assert_eq!(body["error"]["param"], "Idempotency-Key", "{body}");
    }

    let mut transactions = app.balance_transactions().await;
    let mut results = Vec::new();
    for _ in 0..2 {
        let mut request = app.grpc(create_request(&customer, 7));
        let value =
            tonic::metadata::MetadataValue::try_from("clé".as_bytes()).expect("metadata value");
        request.metadata_mut().insert("idempotency-key", value);
        results.push(
            transactions
                .create_customer_balance_transaction(request)
                .await,
        );
    }
    for result in &results {
        let status = result
            .as_ref()
            .expect_err("a non-ASCII key must be refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let ledger = app.get(&customer_transactions_path(&customer)).await.ok();
    assert_eq!(ledger["data"], serde_json::json!([]), "nothing was written");
}

/// PostgreSQL only. A request that ends without committing (a replay, a mismatch, a 404) must
/// release the key's advisory lock before its response is sent, so that the client's next
/// request with that key is not refused as `idempotency_key_in_use`. Several clients run at
/// once, each sending its requests one after another with its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_key_is_free_again_once_its_response_is_sent() {
    if !common::postgres_configured() {
        eprintln!("skipped: {} is not set", common::POSTGRES_URL_ENV);
        return;
    }
    let app = TestApp::spawn(common::Backend::Postgres).await;
    let customer = app.create_customer("name=sequential").await;
    let path = customer_transactions_path(&customer);
    let missing = customer_transactions_path("cus_test_missing");
    let client = |n: usize| {
        let (app, path, missing) = (&app, &path, &missing);
        async move {
            let key = format!("k{n}");
            let steps = [
                ("unknown customer", missing, "amount=1&currency=usd", 404),
                (
                    "retry on a real customer",
                    path,
                    "amount=1&currency=usd",
                    200,
                ),
                ("replay", path, "amount=1&currency=usd", 200),
                ("second replay", path, "amount=1&currency=usd", 200),
                ("mismatch", path, "amount=2&currency=usd", 400),
                ("second mismatch", path, "amount=2&currency=usd", 400),
                (
                    "replay after mismatches",
                    path,
                    "amount=1&currency=usd",
                    200,
                ),
            ];
            let mut refused = Vec::new();
            for (step, step_path, body, expected) in steps {
                let reply = app.post_idempotent(step_path, &key, body).await;
                if reply.status == 409 {
                    refused.push(format!("{key}: {step}"));
                } else {
                    assert_eq!(reply.status, expected, "{key}: {step}: {}", reply.body);
                }
            }
            refused
        }
    };
    let refused: Vec<String> = futures::future::join_all((0..12).map(client))
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(
        refused.is_empty(),
        "sequential requests refused as in flight ({} of 84): {refused:?}",
        refused.len()
    );
}

/// Whether another connection (another replica) can take the advisory lock of `key` right
/// now. Runs on its own thread and runtime and blocks the caller's thread meanwhile, so that
/// nothing queued on the caller's runtime can run first.
fn key_lock_is_free(url: &str, tenant: &creditd::domain::Tenant, key: &str) -> bool {
    let (url, tenant, key) = (url.to_string(), tenant.clone(), key.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let options = creditd::store::DbOptions {
                max_connections: 1,
                ..creditd::store::DbOptions::new(url)
            };
            let db = creditd::store::Db::connect(&options)
                .await
                .expect("connect");
            let tx = db.begin().await.expect("begin");
            let free = creditd::store::idempotency::try_lock_key(&tx, &tenant, &key)
                .await
                .expect("try lock");
            tx.rollback().await.expect("rollback");
            db.close().await;
            free
        })
    })
    .join()
    .expect("lock probe thread")
}

/// PostgreSQL only. When a write with a key returns — committed, replayed, refused as a
/// mismatch or failed — its transaction-scoped advisory lock must already be released. A lock
/// left to a transaction that is merely dropped is released later by a background task, and a
/// client's next request with the key can arrive first and get a spurious 409.
#[tokio::test]
async fn on_postgresql_a_keys_lock_is_released_when_the_write_returns() {
    use creditd::domain::customer_balance_transaction::{
        CreateBalanceTransaction, TransactionFields,
    };
    if !common::postgres_configured() {
        eprintln!("skipped: {} is not set", common::POSTGRES_URL_ENV);
        return;
    }
    let app = TestApp::spawn(common::Backend::Postgres).await;
    let customer = app.create_customer("name=locks").await;
    let command = |customer: &str, amount: i64| {
        CreateBalanceTransaction::parse(
            customer.to_string(),
            TransactionFields {
                amount: Some(amount),
                currency: Some("usd".into()),
                ..Default::default()
            },
        )
        .expect("valid command")
    };
    let base = app.context().await;
    let ctx = |key: &str| base.clone().with_idempotency_key(Some(key.to_string()));
    let tenant = base.tenant.clone();
    let url = app.database.url.clone();
    let mut held = Vec::new();

    let created = app
        .services
        .create_customer_balance_transaction(&ctx("a"), command(&customer, 1))
        .await;
    assert!(created.is_ok(), "{created:?}");
    assert!(
        key_lock_is_free(&url, &tenant, "a"),
        "the lock outlived a commit: the probe itself is wrong"
    );

    let replayed = app
        .services
        .create_customer_balance_transaction(&ctx("a"), command(&customer, 1))
        .await;
    assert_eq!(
        replayed.expect("replay").id,
        created.as_ref().expect("created").id
    );
    if !key_lock_is_free(&url, &tenant, "a") {
        held.push("after a replay");
    }

    let mismatch = app
        .services
        .create_customer_balance_transaction(&ctx("a"), command(&customer, 2))
        .await;
    assert_eq!(
        mismatch.expect_err("mismatch").kind,
        creditd::ErrorKind::IdempotencyMismatch
    );
    if !key_lock_is_free(&url, &tenant, "a") {
        held.push("after a mismatch");
    }

    let missing = app
        .services
        .create_customer_balance_transaction(&ctx("b"), command("cus_test_missing", 1))
        .await;
    assert_eq!(
        missing.expect_err("unknown customer").kind,
        creditd::ErrorKind::NotFound
    );
    if !key_lock_is_free(&url, &tenant, "b") {
        held.push("after a failed write (unknown customer)");
    }

    assert!(
        held.is_empty(),
        "the key's advisory lock was still held when the call returned: {held:?}"
    );
}
