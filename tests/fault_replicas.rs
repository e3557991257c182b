//! Two replicas on one PostgreSQL database race on one customer: hundreds of concurrent
//! ApplyCredits split across both, asking for more than was granted, apply exactly the granted
//! amount; one invoice line sent many times through both (with and without idempotency keys)
//! applies once; expiry sweepers running at once on both record each lapsed grant's expiry
//! exactly once. The audit is clean afterwards.
//!
//! PostgreSQL only: SQLite serializes writes inside one process, so two processes are not the
//! deployment it is for.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::credits::{BalanceClient, grant, kinds, metered_line, transactions, usd_grant_body};
use common::faults::grpc_write;
use common::{Backend, TestApp};

fn postgres_or_skip() -> bool {
    if common::postgres_configured() {
        return true;
    }
    eprintln!(
        "skipped on PostgreSQL: {} is not set (SQLite only)",
        common::POSTGRES_URL_ENV
    );
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_on_one_customer_apply_grant_and_expire_exactly_once() {
    if !postgres_or_skip() {
        return;
    }
    let started = Instant::now();
    let first = Arc::new(TestApp::spawn(Backend::Postgres).await);
    let second = Arc::new(first.spawn_replica().await);
    let replicas = [first.clone(), second.clone()];
    let clients = [
        BalanceClient::new(first.channel().await),
        BalanceClient::new(second.channel().await),
    ];

    // 1. 240 lines of 25 each (6,000) against 2,000 of credits, alternating replicas.
    const LINES: usize = 240;
    let customer = first.create_customer("name=Contended").await;
    for value in [1000, 700, 300] {
        grant(&second, &usd_grant_body(&customer, value)).await;
    }
    let mut calls = tokio::task::JoinSet::new();
    for line in 0..LINES {
        let (app, client) = (replicas[line % 2].clone(), clients[line % 2].clone());
        let customer = customer.clone();
        calls.spawn(async move {
            let key = format!("contended-{line}");
            grpc_write("ApplyCredits", false, || {
                let mut client = client.clone();
                let request = app.grpc_idempotent(
                    metered_line(&customer, "usd", "in_contended", &format!("il_{line}"), 25),
                    &key,
                );
                async move { client.apply_credits(request).await }
            })
            .await
        });
    }
    let mut applied = 0;
    let mut retried = common::faults::Retries::default();
    while let Some(joined) = calls.join_next().await {
        let (answer, retries) = joined.expect("task").expect("apply credits");
        assert!((0..=25).contains(&answer.applied), "{answer:?}");
        applied += answer.applied;
        retried.add(retries);
    }
    assert_eq!(applied, 2000, "exactly the granted amount, never more");
    let ledger: i64 = transactions(&first, &customer, None)
        .await
        .iter()
        .map(common::credits::signed_amount)
        .sum();
    assert_eq!(ledger, 0, "every credit spent once");

    // 2. One line, 40 times through both replicas: half under one idempotency key, half
    // without one. It applies once; every answer is that application.
    let customer = first.create_customer("name=Repeated").await;
    grant(&first, &usd_grant_body(&customer, 1000)).await;
    let mut calls = tokio::task::JoinSet::new();
    for attempt in 0..40 {
        let (app, client) = (replicas[attempt % 2].clone(), clients[attempt % 2].clone());
        let customer = customer.clone();
        calls.spawn(async move {
            grpc_write("ApplyCredits (same line)", false, || {
                let mut client = client.clone();
                let message = metered_line(&customer, "usd", "in_repeated", "il_1", 100);
                let request = if attempt % 4 < 2 {
                    app.grpc_idempotent(message, "the-same-key")
                } else {
                    app.grpc(message)
                };
                async move { client.apply_credits(request).await }
            })
            .await
        });
    }
    while let Some(joined) = calls.join_next().await {
        let (answer, retries) = joined.expect("task").expect("apply credits");
        assert_eq!(answer.applied, 100, "{answer:?}");
        retried.add(retries);
    }
    let entries = transactions(&first, &customer, None).await;
    let applied_entries = kinds(&entries)
        .iter()
        .filter(|kind| kind.as_str() == "credits_applied")
        .count();
    assert_eq!(applied_entries, 1, "{entries:?}");
    let ledger: i64 = entries.iter().map(common::credits::signed_amount).sum();
    assert_eq!(ledger, 900);

    // 3. 30 grants lapse; 4 sweepers on each replica run at once.
    const LAPSING: usize = 30;
    let customer = first.create_customer("name=Lapsing").await;
    let expires_at = first.now() + 60;
    for index in 0..LAPSING {
        let app = &replicas[index % 2];
        let body = format!(
            "{}&expires_at={expires_at}",
            usd_grant_body(&customer, 10 + index as i64)
        );
        grant(app, &body).await;
    }
    first.advance(120);
    let mut sweeps = tokio::task::JoinSet::new();
    for sweeper in 0..8 {
        let app = replicas[sweeper % 2].clone();
        sweeps.spawn(async move { app.services.sweep_expired_credit_grants().await });
    }
    let mut expired = 0;
    while let Some(joined) = sweeps.join_next().await {
        expired += joined.expect("task").expect("sweep");
    }
    assert_eq!(
        expired, LAPSING as u64,
        "each grant expired by exactly one sweeper"
    );
    let entries = transactions(&first, &customer, None).await;
    let expired_entries = kinds(&entries)
        .iter()
        .filter(|kind| kind.as_str() == "credits_expired")
        .count();
    assert_eq!(expired_entries, LAPSING, "one credits_expired per grant");
    let ledger: i64 = entries.iter().map(common::credits::signed_amount).sum();
    assert_eq!(ledger, 0);

    let report = second.services.audit_everything().await.expect("audit");
    assert!(report.is_clean(), "audit findings: {report}");
    eprintln!(
        "replicas: {LINES} contended ApplyCredits applied {applied}; 40 repeats of one line \
         applied once; {LAPSING} grants expired by 8 sweepers; client retries {retried:?}; {:?}",
        started.elapsed()
    );
}
