//! What a SQLite database served by one process allows (`creditd serve` locks the file): a
//! second server on the same file is refused; the in-memory summary view
//! (`service::grant_view`) answers a repeated summary from memory, yet after any acknowledged
//! write (an application, a new or voided grant, a hold made or released, a test clock
//! advanced) the next summary shows it, also under racing writers and readers; the tenant hooks
//! (`service::tenant_hooks`) spare writes the webhook-endpoint and alert lookups of a tenant
//! that has none, yet the first write after an endpoint or alert is created delivers to it or
//! evaluates it. PostgreSQL never has either.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::sync::Arc;

use common::credits::{
    BalanceClient, GrantClient, grpc_ledger_and_available, grpc_summary, invoice_id,
    metered_filter, metered_grant, metered_line,
};
use common::{Backend, TestApp};
use creditd::config::ServeConfig;
use creditd::grpc::proto;
use creditd::server::Server;
use creditd::store::SqliteOwnership;

const USD: &str = "usd";

async fn balances(app: &TestApp, customer: &str) -> (i64, i64) {
    let mut client = BalanceClient::new(app.channel().await);
    grpc_ledger_and_available(
        &grpc_summary(&mut client, app, customer, metered_filter()).await,
        USD,
    )
}

fn hits(app: &TestApp) -> u64 {
    app.services
        .grant_view
        .as_ref()
        .expect("SQLite has a view")
        .counts()
        .0
}

async fn grant(app: &TestApp, customer: &str, value: i64) -> String {
    GrantClient::new(app.channel().await)
        .create_credit_grant(app.grpc(metered_grant(customer, USD, value)))
        .await
        .expect("grant")
        .into_inner()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_summaries_come_from_memory_but_never_from_before_an_acknowledged_write() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let clock = app
        .post(
            "/v1/test_helpers/test_clocks",
            &format!("frozen_time={}", app.now()),
        )
        .await
        .ok();
    let clock_id = clock["id"].as_str().unwrap().to_string();
    let customer = app
        .create_customer(&format!("name=Ada&test_clock={clock_id}"))
        .await;
    let first = grant(&app, &customer, 1000).await;
    assert_eq!(balances(&app, &customer).await, (1000, 1000));
    // A repeated read comes from memory (other tests of this binary commit now and then, which
    // invalidates the view: a few tries).
    let before = hits(&app);
    for _ in 0..50 {
        assert_eq!(balances(&app, &customer).await, (1000, 1000));
        if hits(&app) > before {
            break;
        }
    }
    assert!(hits(&app) > before, "a repeated read came from memory");

    // Each kind of write shows at once in the next summary.
    let mut client = BalanceClient::new(app.channel().await);
    client
        .apply_credits(app.grpc(metered_line(
            &customer,
            USD,
            &invoice_id("view"),
            "il_1",
            100,
        )))
        .await
        .expect("apply");
    assert_eq!(balances(&app, &customer).await, (900, 900));
    let second = grant(&app, &customer, 50).await;
    assert_eq!(balances(&app, &customer).await, (950, 950));
    let mut holds =
        proto::credit_hold_service_client::CreditHoldServiceClient::new(app.channel().await);
    let hold = holds
        .create_credit_hold(app.grpc(proto::CreateCreditHoldRequest {
            customer: customer.clone(),
            currency: USD.into(),
            amount: 200,
            price_type: Some("metered".into()),
            price: None,
            ttl_seconds: Some(60),
            expires_at: None,
        }))
        .await
        .expect("hold")
        .into_inner();
    assert_eq!(balances(&app, &customer).await, (950, 750));
    holds
        .release_credit_hold(app.grpc(proto::ReleaseCreditHoldRequest { id: hold.id }))
        .await
        .expect("release");
    assert_eq!(balances(&app, &customer).await, (950, 950));
    app.post(&format!("/v1/billing/credit_grants/{second}/void"), "")
        .await
        .ok();
    assert_eq!(balances(&app, &customer).await, (900, 900));
    // The customer's time is its test clock's: an expiry it passes shows once advanced.
    let expiring = app
        .post(
            "/v1/billing/credit_grants",
            &format!(
                "customer={customer}&category=paid&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=70&applicability_config[scope][price_type]=metered&expires_at={}",
                app.now() + 3600
            ),
        )
        .await
        .ok();
    assert_eq!(balances(&app, &customer).await, (970, 970));
    let advanced = app
        .post(
            &format!("/v1/test_helpers/test_clocks/{clock_id}/advance"),
            &format!("frozen_time={}", app.now() + 7200),
        )
        .await
        .ok();
    assert_eq!(advanced["id"], clock_id.as_str(), "{expiring}");
    // The advance completes in the background: wait until its expiry is in the balance.
    let mut seen = balances(&app, &customer).await;
    for _ in 0..100 {
        if seen == (900, 900) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        seen = balances(&app, &customer).await;
    }
    assert_eq!(seen, (900, 900));
    assert!(!first.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_racing_writers_always_read_their_own_writes_through_the_view() {
    let app = Arc::new(TestApp::spawn(Backend::Sqlite).await);
    let customer = app.create_customer("name=Ada").await;
    grant(&app, &customer, 10_000).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Readers keep the view warm.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (app, customer, stop) = (app.clone(), customer.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (ledger, available) = balances(&app, &customer).await;
                assert_eq!(ledger, available);
            }
        }));
    }
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (app, customer) = (app.clone(), customer.clone());
        writers.push(tokio::spawn(async move {
            let mut client = BalanceClient::new(app.channel().await);
            let invoice = invoice_id(&format!("race{writer}"));
            let mut last = i64::MAX;
            for line in 0..25 {
                let applied = client
                    .apply_credits(app.grpc(metered_line(
                        &customer,
                        USD,
                        &invoice,
                        &format!("il_{line}"),
                        3,
                    )))
                    .await
                    .expect("apply")
                    .into_inner();
                assert_eq!(applied.applied, 3);
                // Acknowledged: a summary now must not be from before this application.
                let (ledger, _) = balances(&app, &customer).await;
                assert!(ledger <= last - 3, "writer {writer}: {ledger} after {last}");
                last = ledger;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("reader");
    }
    assert_eq!(
        balances(&app, &customer).await,
        (10_000 - 300, 10_000 - 300)
    );
    assert!(hits(&app) > 0, "the readers were served from memory");
}

#[tokio::test]
async fn a_second_server_on_one_sqlite_file_is_refused_while_the_first_holds_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}/creditd.db", dir.path().display());
    let first = Server::build(&ServeConfig::ephemeral(url.clone()))
        .await
        .expect("the first server");
    assert!(first.services().grant_view.is_some(), "SQLite: a view");
    let error = match Server::build(&ServeConfig::ephemeral(url.clone())).await {
        Ok(_) => panic!("a second server on the same file must be refused"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("Another creditd server is serving"),
        "{error}"
    );
    assert!(SqliteOwnership::claim(&url).is_err(), "the claim is held");
    drop(first);
    // Released with the first server (as by a crashed process): a new one may serve it.
    let again = Server::build(&ServeConfig::ephemeral(url.clone()))
        .await
        .expect("served again after the first stopped");
    drop(again);
    // In-memory databases and PostgreSQL take no claim.
    assert!(SqliteOwnership::claim("sqlite::memory:").unwrap().is_none());
    assert!(
        SqliteOwnership::claim("postgres://postgres@127.0.0.1/x")
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_tenant_known_to_have_no_endpoint_or_alert_sees_the_first_one_created() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let tenant = app.context().await.tenant;
    let hooks = app
        .services
        .tenant_hooks
        .clone()
        .expect("SQLite has tenant hooks");
    let customer = app.create_customer("name=Ada").await;
    grant(&app, &customer, 1000).await;
    let mut client = BalanceClient::new(app.channel().await);
    let invoice = invoice_id("hooks");
    let apply = |line: &str, amount: i64| metered_line(&customer, USD, &invoice, line, amount);
    client
        .apply_credits(app.grpc(apply("il_1", 100)))
        .await
        .expect("apply");
    assert!(hooks.no_endpoints(&tenant), "the write found no endpoint");
    assert_eq!(hooks.has_alerts(&tenant), Some(false), "and no alert");

    // An endpoint: the next write's events are delivered to it.
    app.post(
        "/v1/webhook_endpoints",
        "url=https%3A%2F%2Fexample.org%2Fhook&enabled_events[]=*",
    )
    .await
    .ok();
    assert!(!hooks.no_endpoints(&tenant));
    let applied = client
        .apply_credits(app.grpc(apply("il_2", 100)))
        .await
        .expect("apply")
        .into_inner();
    let event = app
        .get("/v1/events?type=billing.credit_balance_transaction.created&limit=1")
        .await
        .ok();
    assert_eq!(
        event["data"][0]["data"]["object"]["id"],
        applied.entries[0].id.as_str()
    );
    assert_eq!(event["data"][0]["pending_webhooks"], 1, "{event}");

    // An alert at 700: the next debit below it triggers it.
    app.post(
        "/v1/billing/alerts",
        &format!(
            "alert_type=credit_balance_threshold&title=Low\
             &credit_balance_threshold[filters][0][type]=customer\
             &credit_balance_threshold[filters][0][customer]={customer}\
             &credit_balance_threshold[lte][balance_type]=monetary\
             &credit_balance_threshold[lte][monetary][currency]=usd\
             &credit_balance_threshold[lte][monetary][value]=700"
        ),
    )
    .await
    .ok();
    client
        .apply_credits(app.grpc(apply("il_3", 150)))
        .await
        .expect("apply");
    let triggered = app
        .get("/v1/events?type=billing.alert.triggered")
        .await
        .ok();
    assert_eq!(
        triggered["data"].as_array().unwrap().len(),
        1,
        "{triggered}"
    );
    assert_eq!(hooks.has_alerts(&tenant), Some(true));
}

#[tokio::test]
async fn postgresql_never_has_a_view_or_tenant_hooks() {
    if !common::postgres_configured() {
        eprintln!("skipped: {} is not set", common::POSTGRES_URL_ENV);
        return;
    }
    let database = common::TestDatabase::create(Backend::Postgres).await;
    let server = Server::build(&ServeConfig::ephemeral(database.url.clone()))
        .await
        .expect("server");
    assert!(server.services().grant_view.is_none());
    assert!(server.services().tenant_hooks.is_none());
}
