//! Group commit on SQLite's single writer (`store::group_commit`): concurrent writes share
//! commits (fewer COMMITs than transactions), a member that fails after its writes rolls back
//! only its own work while the rest of its group commits, a lone write commits at once, and
//! every acknowledged write is there for the next read. PostgreSQL commits each transaction on
//! its own (no groups).
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
use sea_orm::ConnectionTrait;

const USD: &str = "usd";

async fn customer_with_credits(app: &TestApp, name: &str, value: i64) -> String {
    let customer = app.create_customer(&format!("name={name}")).await;
    GrantClient::new(app.channel().await)
        .create_credit_grant(app.grpc(metered_grant(&customer, USD, value)))
        .await
        .expect("grant");
    customer
}

async fn ledger(app: &TestApp, customer: &str) -> i64 {
    let mut client = BalanceClient::new(app.channel().await);
    grpc_ledger_and_available(
        &grpc_summary(&mut client, app, customer, metered_filter()).await,
        USD,
    )
    .0
}

fn counts(app: &TestApp) -> (u64, u64) {
    app.services
        .db
        .group_commits()
        .expect("SQLite groups commits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_a_failing_member_takes_only_its_own_work_back() {
    let app = Arc::new(TestApp::spawn(Backend::Sqlite).await);
    let good = customer_with_credits(&app, "Good", 100_000).await;
    let doomed = customer_with_credits(&app, "Doomed", 100_000).await;
    // Every write for `doomed` fails after its ledger writes, when its events are inserted.
    app.services
        .db
        .writer()
        .execute_unprepared(&format!(
            "CREATE TRIGGER doomed_events BEFORE INSERT ON events WHEN NEW.customer_id = '{doomed}' \
             BEGIN SELECT RAISE(ABORT, 'forced failure'); END"
        ))
        .await
        .expect("trigger");

    // A lone write commits at once, alone.
    let (members, commits) = counts(&app);
    BalanceClient::new(app.channel().await)
        .apply_credits(app.grpc(metered_line(&good, USD, &invoice_id("alone"), "il_1", 1)))
        .await
        .expect("apply");
    let (after_members, after_commits) = counts(&app);
    assert_eq!(
        after_members - members,
        after_commits - commits,
        "one commit per lone write"
    );
    assert_eq!(ledger(&app, &good).await, 100_000 - 1);

    // 200 writes at once, one in five doomed.
    let (members, commits) = counts(&app);
    let mut tasks = Vec::new();
    for n in 0..200 {
        let app = app.clone();
        let customer = if n % 5 == 0 {
            doomed.clone()
        } else {
            good.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut client = BalanceClient::new(app.channel().await);
            let line = metered_line(&customer, USD, &invoice_id("group"), &format!("il_{n}"), 10);
            let applied = client.apply_credits(app.grpc(line)).await;
            // Acknowledged: the next read sees it.
            if applied.is_ok() {
                assert!(ledger(&app, &customer).await <= 100_000 - 1 - 10);
            }
            (n % 5 == 0, applied.map(|reply| reply.into_inner().applied))
        }));
    }
    let mut applied_good = 0;
    for task in tasks {
        match task.await.expect("task") {
            (false, Ok(applied)) => applied_good += applied,
            (false, Err(status)) => panic!("a good write failed: {status:?}"),
            (true, Ok(applied)) => panic!("a doomed write succeeded: {applied}"),
            (true, Err(status)) => assert_eq!(status.code(), tonic::Code::Internal, "{status:?}"),
        }
    }
    assert_eq!(applied_good, 160 * 10);
    assert_eq!(ledger(&app, &good).await, 100_000 - 1 - 1600);
    assert_eq!(
        ledger(&app, &doomed).await,
        100_000,
        "nothing of the doomed writes stayed"
    );
    let (after_members, after_commits) = counts(&app);
    let (transactions, groups) = (after_members - members, after_commits - commits);
    assert!(transactions >= 200, "{transactions}");
    assert!(
        groups < transactions,
        "concurrent writes shared commits: {transactions} transactions in {groups} commits"
    );
    app.services
        .db
        .writer()
        .execute_unprepared("DROP TRIGGER doomed_events")
        .await
        .expect("drop trigger");
    let report = app
        .services
        .audit(&app.context().await)
        .await
        .expect("audit");
    assert!(report.is_clean(), "{report}");
}

#[tokio::test]
async fn postgresql_commits_each_transaction_on_its_own() {
    if !common::postgres_configured() {
        eprintln!("skipped: {} is not set", common::POSTGRES_URL_ENV);
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    assert!(app.services.db.group_commits().is_none());
}
