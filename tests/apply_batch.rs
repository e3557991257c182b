//! `ApplyCreditsBatch`: a batch applies each line exactly as `ApplyCredits` of it alone would
//! (the same amounts, entries, grant remainders and events as the same lines applied one by
//! one on a twin customer), answers each line for itself (a missing or deleted customer, a bad
//! line, a line applied on other terms), replays lines applied before or earlier in the batch,
//! applies nothing twice when retried, refuses empty and oversized batches (1,000 lines, written
//! in several round trips, apply exactly), and under concurrency (batches locking customers in
//! every order, racing ApplyCredits) never deadlocks or overspends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::TestApp;
use common::credits::{
    BalanceClient, GrantClient, grant_filter, grpc_ledger_and_available, grpc_summary, invoice_id,
    metered_filter, metered_grant, metered_line,
};
use creditd::grpc::proto;
use proto::apply_credits_line_result::Result as LineResult;

const USD: &str = "usd";

/// A customer with three metered USD grants of different priorities; its ID and grants' IDs.
async fn customer_with_grants(app: &TestApp, name: &str) -> (String, Vec<String>) {
    let customer = app.create_customer(&format!("name={name}")).await;
    let mut grants = Vec::new();
    for (value, priority) in [(300, 10), (200, 20), (500, 30)] {
        grants.push(
            GrantClient::new(app.channel().await)
                .create_credit_grant(app.grpc(proto::CreateCreditGrantRequest {
                    priority: Some(priority),
                    ..metered_grant(&customer, USD, value)
                }))
                .await
                .expect("grant")
                .into_inner()
                .id,
        );
    }
    (customer, grants)
}

async fn batch(
    app: &TestApp,
    lines: Vec<proto::ApplyCreditsRequest>,
) -> Result<Vec<LineResult>, tonic::Status> {
    let response = BalanceClient::new(app.channel().await)
        .apply_credits_batch(app.grpc(proto::ApplyCreditsBatchRequest { lines }))
        .await?;
    Ok(response
        .into_inner()
        .results
        .into_iter()
        .map(|result| result.result.expect("every line answers"))
        .collect())
}

fn applied(result: &LineResult) -> &proto::ApplyCreditsResponse {
    match result {
        LineResult::Applied(applied) => applied,
        LineResult::Error(error) => panic!("expected an application, got {error:?}"),
    }
}

fn refused(result: &LineResult) -> &proto::ApplyCreditsLineError {
    match result {
        LineResult::Error(error) => error,
        LineResult::Applied(applied) => panic!("expected a refusal, got {applied:?}"),
    }
}

/// Each grant's remainder (its ledger balance), in grant order.
async fn remainders(app: &TestApp, customer: &str, grants: &[String]) -> Vec<i64> {
    let mut client = BalanceClient::new(app.channel().await);
    let mut remaining = Vec::new();
    for id in grants {
        let summary = grpc_summary(&mut client, app, customer, grant_filter(id)).await;
        remaining.push(grpc_ledger_and_available(&summary, USD).0);
    }
    remaining
}

/// The (grant position, amount) of each entry, so two customers' applications compare.
fn draws(response: &proto::ApplyCreditsResponse, grants: &[String]) -> Vec<(usize, i64)> {
    response
        .entries
        .iter()
        .map(|entry| {
            let position = grants
                .iter()
                .position(|g| *g == entry.credit_grant)
                .expect("own grant");
            (
                position,
                entry
                    .debit
                    .as_ref()
                    .expect("a debit")
                    .amount
                    .as_ref()
                    .expect("amount")
                    .monetary
                    .as_ref()
                    .expect("monetary")
                    .value,
            )
        })
        .collect()
}

async fn event_count(app: &TestApp, kind: &str) -> usize {
    let listed = app
        .get(&format!("/v1/events?type={kind}&limit=100"))
        .await
        .ok();
    listed["data"].as_array().expect("data").len()
}

on_every_backend! {
    async fn a_batch_applies_each_line_as_apply_credits_would_alone(app) {
        let (twin, twin_grants) = customer_with_grants(&app, "Twin").await;
        let (ada, ada_grants) = customer_with_grants(&app, "Ada").await;
        let (bob, bob_grants) = customer_with_grants(&app, "Bob").await;
        let invoice = invoice_id("batch");
        // Ada's lines interleaved with Bob's; Ada's drain her first grant and cross into the next.
        let amounts = [120, 250, 90, 400, 300];
        let mut lines = Vec::new();
        for (n, amount) in amounts.iter().enumerate() {
            lines.push(metered_line(&ada, USD, &invoice, &format!("il_ada_{n}"), *amount));
            lines.push(metered_line(&bob, USD, &invoice, &format!("il_bob_{n}"), amount / 2));
        }
        let events_before = event_count(&app, "billing.credit_balance_transaction.created").await;
        let results = batch(&app, lines.clone()).await.expect("batch");
        assert_eq!(results.len(), lines.len());

        // The same lines applied one by one on a twin: the same draws, line by line.
        let mut client = BalanceClient::new(app.channel().await);
        let twin_invoice = invoice_id("twin");
        let mut twin_entries = 0;
        for (n, amount) in amounts.iter().enumerate() {
            let alone = client
                .apply_credits(app.grpc(metered_line(&twin, USD, &twin_invoice, &format!("il_{n}"), *amount)))
                .await
                .expect("apply")
                .into_inner();
            twin_entries += alone.entries.len();
            let in_batch = applied(&results[2 * n]);
            assert_eq!(in_batch.applied, alone.applied, "line {n}");
            assert_eq!(in_batch.remaining_amount_due, alone.remaining_amount_due, "line {n}");
            assert_eq!(draws(in_batch, &ada_grants), draws(&alone, &twin_grants), "line {n}");
            let explanation = in_batch.explanation.as_ref().expect("explained");
            assert_eq!(explanation.draws.len(), in_batch.entries.len());
        }
        assert_eq!(remainders(&app, &ada, &ada_grants).await, remainders(&app, &twin, &twin_grants).await);
        let total: i64 = results.iter().map(|r| applied(r).applied).sum();
        let bob_applied: i64 = results.iter().skip(1).step_by(2).map(|r| applied(r).applied).sum();
        assert_eq!(bob_applied, amounts.iter().map(|a| a / 2).sum::<i64>());
        assert_eq!(remainders(&app, &bob, &bob_grants).await.iter().sum::<i64>(), 1000 - bob_applied);
        // Ada had 1000 and was asked for 1160.
        assert_eq!(total - bob_applied, 1000);
        assert_eq!(applied(&results[8]).remaining_amount_due, 160);

        // One event per entry, all committed with the batch.
        let entries: usize = results.iter().map(|r| applied(r).entries.len()).sum();
        assert_eq!(
            event_count(&app, "billing.credit_balance_transaction.created").await,
            events_before + entries + twin_entries
        );

        // A lone ApplyCredits of a batch line answers the batch's result.
        let again = client.apply_credits(app.grpc(lines[0].clone())).await.expect("replay").into_inner();
        assert_eq!(&again, applied(&results[0]));
        app.assert_audit_clean().await;
    }

    async fn each_line_answers_for_itself_and_a_retried_batch_applies_nothing_twice(app) {
        let (ada, grants) = customer_with_grants(&app, "Ada").await;
        let invoice = invoice_id("lines");
        let mut client = BalanceClient::new(app.channel().await);
        // Applied before the batch, by ApplyCredits.
        let before = client
            .apply_credits(app.grpc(metered_line(&ada, USD, &invoice, "il_before", 50)))
            .await
            .expect("apply")
            .into_inner();
        let (gone, _) = customer_with_grants(&app, "Gone").await;
        app.request(reqwest::Method::DELETE, &format!("/v1/customers/{gone}"), Some(&app.key), None, "")
            .await
            .ok();
        let lines = vec![
            metered_line(&ada, USD, &invoice, "il_1", 100),
            metered_line("cus_missing", USD, &invoice, "il_2", 100),
            metered_line(&ada, "us", &invoice, "il_3", 100),
            metered_line(&ada, USD, &invoice, "il_before", 50),
            metered_line(&ada, USD, &invoice, "il_before", 51),
            metered_line(&ada, USD, &invoice, "il_1", 100),
            metered_line(&ada, USD, &invoice, "il_1", 99),
            metered_line(&ada, USD, &invoice, "il_4", 0),
            metered_line(&gone, USD, &invoice, "il_5", 100),
        ];
        let results = batch(&app, lines.clone()).await.expect("batch");
        assert_eq!(applied(&results[0]).applied, 100);
        let missing = refused(&results[1]);
        assert_eq!(missing.code, tonic::Code::InvalidArgument as i32);
        assert_eq!(missing.reason, "resource_missing");
        assert_eq!(missing.param.as_deref(), Some("customer"));
        assert!(missing.message.contains("cus_missing"), "{missing:?}");
        let bad = refused(&results[2]);
        assert_eq!(bad.code, tonic::Code::InvalidArgument as i32);
        assert_eq!(bad.r#type, "invalid_request_error");
        assert_eq!(bad.param.as_deref(), Some("currency"));
        assert_eq!(applied(&results[3]), &before, "applied before: replayed");
        for other_terms in [&results[4], &results[6]] {
            let error = refused(other_terms);
            assert_eq!(error.code, tonic::Code::FailedPrecondition as i32, "{error:?}");
            assert!(error.message.contains("different customer, currency or amount due"), "{error:?}");
        }
        assert_eq!(applied(&results[5]), applied(&results[0]), "earlier in the batch: replayed");
        assert_eq!(applied(&results[7]).applied, 0);
        let deleted = refused(&results[8]);
        assert_eq!(deleted.reason, "resource_missing", "a deleted customer takes no writes");
        let remaining = remainders(&app, &ada, &grants).await;
        assert_eq!(remaining.iter().sum::<i64>(), 1000 - 150);

        // The whole batch again: the same answers, nothing more applied, no more events.
        let events = event_count(&app, "billing.credit_balance_transaction.created").await;
        let retried = batch(&app, lines).await.expect("retry");
        assert_eq!(retried, results);
        assert_eq!(remainders(&app, &ada, &grants).await, remaining);
        assert_eq!(event_count(&app, "billing.credit_balance_transaction.created").await, events);
        app.assert_audit_clean().await;
    }

    async fn an_empty_or_oversized_batch_is_refused_whole(app) {
        let (ada, _) = customer_with_grants(&app, "Ada").await;
        let empty = batch(&app, Vec::new()).await.expect_err("empty");
        assert_eq!(empty.code(), tonic::Code::InvalidArgument);
        assert!(empty.message().contains("between 1 and 1000"), "{empty:?}");
        let invoice = invoice_id("big");
        let lines: Vec<_> = (0..1001).map(|n| metered_line(&ada, USD, &invoice, &format!("il_{n}"), 1)).collect();
        let too_many = batch(&app, lines.clone()).await.expect_err("1001 lines");
        assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
        assert!(too_many.message().contains("1001"), "{too_many:?}");
        // 1000 is fine: one cent each, all from the first grant.
        let results = batch(&app, lines[..1000].to_vec()).await.expect("1000 lines");
        assert_eq!(results.iter().map(|r| applied(r).applied).sum::<i64>(), 1000);
        app.assert_audit_clean().await;
    }

    async fn racing_batches_in_every_customer_order_never_deadlock_or_overspend(app) {
        let mut customers = Vec::new();
        for name in ["A", "B", "C", "D"] {
            customers.push(customer_with_grants(&app, name).await.0);
        }
        let mut tasks = Vec::new();
        for task in 0..12usize {
            let channel = app.channel().await;
            let metadata = app.grpc(()).metadata().clone();
            // Each batch names the customers in another order, several lines each.
            let mut order = customers.clone();
            order.rotate_left(task % 4);
            if task % 2 == 1 {
                order.reverse();
            }
            tasks.push(tokio::spawn(async move {
                let mut client = BalanceClient::new(channel);
                let invoice = format!("in_race_{task}");
                let with = |message| {
                    let mut request = tonic::Request::new(message);
                    *request.metadata_mut() = metadata.clone();
                    request
                };
                if task % 3 == 2 {
                    // A lone application racing the batches.
                    let _ = client.apply_credits(with_apply(&metadata, metered_line(&order[0], USD, &invoice, "il_solo", 170))).await.expect("apply");
                    return 0;
                }
                let mut lines = Vec::new();
                for (n, customer) in order.iter().enumerate() {
                    for k in 0..3 {
                        lines.push(metered_line(customer, USD, &invoice, &format!("il_{n}_{k}"), 37 + k));
                    }
                }
                let response = client
                    .apply_credits_batch(with(proto::ApplyCreditsBatchRequest { lines }))
                    .await
                    .expect("no deadlock, no failure")
                    .into_inner();
                response.results.len()
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let mut client = BalanceClient::new(app.channel().await);
        for customer in &customers {
            let summary = grpc_summary(&mut client, &app, customer, metered_filter()).await;
            let (ledger, available) = grpc_ledger_and_available(&summary, USD);
            assert!((0..=1000).contains(&ledger), "{customer}: {ledger}");
            assert_eq!(ledger, available);
        }
        app.assert_audit_clean().await;
    }
}

fn with_apply(
    metadata: &tonic::metadata::MetadataMap,
    message: proto::ApplyCreditsRequest,
) -> tonic::Request<proto::ApplyCreditsRequest> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = metadata.clone();
    request
}
