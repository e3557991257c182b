//! The customer lock-and-read exists twice: as the Rust query `store::credit_grants::
//! customer_grants` (SQLite, and every read outside a write) and, on PostgreSQL, as the
//! PL/pgSQL function `creditd_locked_customer_grants` of migration 6 that
//! `lock_customer_grants` calls. These tests prove the two return the same thing — clock time,
//! whether the invoice line was applied, every grant — for the customers that matter: without
//! grants, with grants of several kinds, on a test clock, with an applied invoice line, and
//! missing (or another tenant's), so the function cannot drift from the query. A last test
//! checks that the plain row locks (`customers::lock`, `test_clocks::lock`) really lock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::credits::{apply_credits, grant, grant_body, usd_grant_body};
use common::{Backend, TestApp};
use creditd::domain::Tenant;
use creditd::store::credit_grants::{CustomerGrants, customer_grants, lock_customer_grants};
use creditd::store::{self, Db, DbOptions};

const CLOCKS: &str = "/v1/test_helpers/test_clocks";
const DAY: i64 = 86_400;

/// Reads `customer` both ways (the function inside a write transaction, rolled back at once)
/// and asserts they agree; returns what they read.
async fn read_both_ways(
    db: &Db,
    tenant: &Tenant,
    customer: &str,
    line: Option<(&str, &str)>,
) -> Option<CustomerGrants> {
    let queried = customer_grants(db.reader(), tenant, customer, line)
        .await
        .expect("the Rust query");
    let tx = db.begin().await.expect("begin");
    let locked = lock_customer_grants(&tx, tenant, customer, line).await;
    store::rollback(tx).await.expect("rollback");
    let locked = locked.expect("the PL/pgSQL function");
    let case = format!("customer {customer}, line {line:?}");
    match (&queried, &locked) {
        (None, None) => {}
        (Some(queried), Some(locked)) => {
            assert_eq!(locked.clock_time, queried.clock_time, "clock time: {case}");
            assert_eq!(
                locked.line_applied, queried.line_applied,
                "line applied: {case}"
            );
            assert_eq!(locked.grants, queried.grants, "grants: {case}");
        }
        _ => panic!("one found the customer, the other did not: {case}\n{queried:?}\n{locked:?}"),
    }
    queried
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_the_locking_function_reads_exactly_what_the_rust_query_reads() {
    if !common::postgres_configured() {
        eprintln!(
            "skipped on PostgreSQL: {} is not set (SQLite only)",
            common::POSTGRES_URL_ENV
        );
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = Db::connect(&DbOptions::new(app.database.url.clone()))
        .await
        .expect("connect");
    let tenant = Tenant {
        account_id: app.account_id.clone(),
        livemode: false,
    };

    // No grants.
    let bare = app.create_customer("name=Bare").await;
    // Grants of several kinds: two currencies, a price-scoped one, an expiring one, a voided
    // one, one not effective yet; then an invoice line applied against them.
    let granted = app.create_customer("name=Granted").await;
    grant(&app, &usd_grant_body(&granted, 5_000)).await;
    grant(&app, &grant_body(&granted, "eur", 700)).await;
    grant(
        &app,
        &format!(
            "customer={granted}&amount[type]=monetary&amount[monetary][currency]=usd\
             &amount[monetary][value]=300&applicability_config[scope][prices][0][id]=price_a\
             &category=promotional&priority=10&expires_at={}&name=Scoped",
            app.now() + 30 * DAY
        ),
    )
    .await;
    let voided = grant(&app, &usd_grant_body(&granted, 200)).await;
    app.post(&format!("/v1/billing/credit_grants/{voided}/void"), "")
        .await
        .ok();
    grant(
        &app,
        &format!(
            "{}&effective_at={}",
            usd_grant_body(&granted, 900),
            app.now() + DAY
        ),
    )
    .await;
    let applied = apply_credits(&app, &granted, "in_parity", "il_parity", 1_200).await;
    assert_eq!(applied.applied, 1_200, "{applied:?}");

    // On a test clock: one customer with grants, one without.
    let frozen_time = app.now() - 10 * DAY;
    let clock = app
        .post(CLOCKS, &format!("frozen_time={frozen_time}&name=parity"))
        .await
        .ok();
    let clock = clock["id"].as_str().expect("clock id").to_string();
    let on_clock = app
        .create_customer(&format!("name=Clocked&test_clock={clock}"))
        .await;
    grant(&app, &usd_grant_body(&on_clock, 400)).await;
    grant(&app, &grant_body(&on_clock, "eur", 50)).await;
    let bare_on_clock = app
        .create_customer(&format!("name=BareClocked&test_clock={clock}"))
        .await;

    let no_line = None;
    let applied_line = Some(("in_parity", "il_parity"));
    let other_line = Some(("in_parity", "il_other"));

    for line in [no_line, applied_line, other_line] {
        let read = read_both_ways(&db, &tenant, &bare, line)
            .await
            .expect("bare customer");
        assert_eq!(read.clock_time, None);
        assert!(read.grants.is_empty(), "{read:?}");
    }

    let read = read_both_ways(&db, &tenant, &granted, no_line)
        .await
        .expect("customer with grants");
    assert_eq!(read.grants.len(), 5, "{read:?}");
    assert!(!read.line_applied);
    assert_eq!(read.clock_time, None);
    let read = read_both_ways(&db, &tenant, &granted, applied_line)
        .await
        .expect("customer with grants");
    assert!(read.line_applied, "the applied line");
    let read = read_both_ways(&db, &tenant, &granted, other_line)
        .await
        .expect("customer with grants");
    assert!(!read.line_applied, "a line not applied");
    // An applied line is the account's, whichever of its customers asks.
    let read = read_both_ways(&db, &tenant, &bare, applied_line)
        .await
        .expect("bare customer");
    assert!(read.line_applied, "the account's applied line");

    for line in [no_line, applied_line] {
        let read = read_both_ways(&db, &tenant, &on_clock, line)
            .await
            .expect("customer on a clock");
        assert_eq!(read.clock_time, Some(frozen_time));
        assert_eq!(read.grants.len(), 2, "{read:?}");
        let read = read_both_ways(&db, &tenant, &bare_on_clock, line)
            .await
            .expect("bare customer on a clock");
        assert_eq!(read.clock_time, Some(frozen_time));
        assert!(read.grants.is_empty(), "{read:?}");
    }

    // Missing: no such customer, or another tenant's.
    let live = Tenant {
        livemode: true,
        ..tenant.clone()
    };
    let stranger = Tenant {
        account_id: "acct_someone_else".to_string(),
        livemode: false,
    };
    for line in [no_line, applied_line] {
        assert!(
            read_both_ways(&db, &tenant, "cus_test_missing", line)
                .await
                .is_none()
        );
        assert!(read_both_ways(&db, &live, &granted, line).await.is_none());
        assert!(
            read_both_ways(&db, &stranger, &granted, line)
                .await
                .is_none()
        );
    }
    db.close().await;
}

/// `store::customers::lock` and `store::test_clocks::lock` take a real row lock on PostgreSQL:
/// while one transaction holds it a second locker waits, and gets the row once it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_locked_customer_or_clock_makes_the_next_locker_wait_for_the_commit() {
    if !common::postgres_configured() {
        eprintln!(
            "skipped on PostgreSQL: {} is not set (SQLite only)",
            common::POSTGRES_URL_ENV
        );
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = Db::connect(&DbOptions::new(app.database.url.clone()))
        .await
        .expect("connect");
    let tenant = Tenant {
        account_id: app.account_id.clone(),
        livemode: false,
    };
    let clock = app
        .post(CLOCKS, &format!("frozen_time={}", app.now()))
        .await
        .ok();
    let clock = clock["id"].as_str().expect("clock id").to_string();
    let customer = app
        .create_customer(&format!("name=Locked&test_clock={clock}"))
        .await;
    let wait = std::time::Duration::from_millis(300);

    let first = db.begin().await.expect("begin");
    let locked = store::customers::lock(&first, &tenant, &customer)
        .await
        .expect("lock")
        .expect("the customer");
    assert_eq!(locked.test_clock.as_deref(), Some(clock.as_str()));
    let second = {
        let (db, tenant, customer) = (db.clone(), tenant.clone(), customer.clone());
        tokio::spawn(async move {
            let tx = db.begin().await.expect("begin");
            let locked = store::customers::lock(&tx, &tenant, &customer).await;
            store::rollback(tx).await.expect("rollback");
            locked.expect("lock").is_some()
        })
    };
    tokio::time::sleep(wait).await;
    assert!(!second.is_finished(), "the second customer locker waits");
    store::commit(first).await.expect("commit");
    assert!(second.await.expect("join"), "then it gets the customer");

    let first = db.begin().await.expect("begin");
    let locked = store::test_clocks::lock(&first, &tenant, &clock)
        .await
        .expect("lock")
        .expect("the clock");
    assert_eq!(locked.id, clock);
    let second = {
        let (db, tenant, clock) = (db.clone(), tenant.clone(), clock.clone());
        tokio::spawn(async move {
            let tx = db.begin().await.expect("begin");
            let locked = store::test_clocks::lock(&tx, &tenant, &clock).await;
            store::rollback(tx).await.expect("rollback");
            locked.expect("lock").is_some()
        })
    };
    tokio::time::sleep(wait).await;
    assert!(!second.is_finished(), "the second clock locker waits");
    store::commit(first).await.expect("commit");
    assert!(second.await.expect("join"), "then it gets the clock");

    assert!(
        store::customers::lock(db.writer(), &tenant, "cus_test_missing")
            .await
            .expect("lock")
            .is_none()
    );
    db.close().await;
}
