//! Credits under contention: hundreds of concurrent ApplyCredits calls for one customer, spread
//! over 64 HTTP/2 connections, never apply more than was granted, never lose or duplicate an
//! application, never overdraw a grant, and leave a ledger that adds up.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::TestApp;
use common::credits::{
    BalanceClient, GrantClient, grant_filter, grpc_ledger_and_available, grpc_summary,
    grpc_transactions, metered_filter, metered_grant, metered_line,
};
use creditd::grpc::proto;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

const USD: &str = "usd";
const CONNECTIONS: usize = 64;
/// The whole run (applies and checks) must finish well inside a minute.
const DEADLINE: Duration = Duration::from_secs(45);

/// `(credit/debit type, amount)` of a ledger entry.
fn kind_and_amount(transaction: &proto::CreditBalanceTransaction) -> (String, i64) {
    let (kind, amount) = match (
        transaction.r#type.as_str(),
        &transaction.credit,
        &transaction.debit,
    ) {
        ("credit", Some(credit), None) => (credit.r#type.clone(), &credit.amount),
        ("debit", None, Some(debit)) => (debit.r#type.clone(), &debit.amount),
        _ => panic!("type must match credit/debit: {transaction:?}"),
    };
    let value = amount
        .as_ref()
        .and_then(|amount| amount.monetary.as_ref())
        .expect("monetary amount")
        .value;
    assert!(value > 0, "amounts are positive: {transaction:?}");
    (kind, value)
}

fn signed(transaction: &proto::CreditBalanceTransaction) -> i64 {
    match kind_and_amount(transaction) {
        (kind, amount)
            if kind == "credits_granted" || kind == "credits_application_invoice_voided" =>
        {
            amount
        }
        (_, amount) => -amount,
    }
}

/// Varying line amounts from 1 to 37 cents.
fn amount_due(call: usize) -> i64 {
    (call * 7 % 37) as i64 + 1
}

/// A grant to create: priority, amount, and seconds until it expires (`None`: never).
#[derive(Debug, Clone, Copy)]
struct GrantSpec {
    priority: i64,
    amount: i64,
    expires_in: Option<i64>,
}

struct Grant {
    id: String,
    amount: i64,
    priority: i64,
}

struct Run {
    customer: String,
    grants: Vec<Grant>,
    requests: Vec<proto::ApplyCreditsRequest>,
    responses: Vec<proto::ApplyCreditsResponse>,
}

async fn create_grants(app: &TestApp, customer: &str, specs: &[GrantSpec]) -> Vec<Grant> {
    let now = app.now();
    let mut client = GrantClient::new(app.channel().await);
    let mut created = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let grant = client
            .create_credit_grant(
                app.grpc(proto::CreateCreditGrantRequest {
                    priority: Some(spec.priority),
                    category: Some(
                        if index % 2 == 0 {
                            "paid"
                        } else {
                            "promotional"
                        }
                        .to_string(),
                    ),
                    expires_at: spec.expires_in.map(|seconds| now + seconds),
                    ..metered_grant(customer, USD, spec.amount)
                }),
            )
            .await
            .expect("create credit grant")
            .into_inner();
        created.push(Grant {
            id: grant.id,
            amount: spec.amount,
            priority: spec.priority,
        });
    }
    created
}

async fn connections(app: &TestApp) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        channels.push(app.channel().await);
    }
    channels
}

/// Metered usd lines `il_{tag}_{n}`, four to an invoice, of 1 to 37 cents.
fn lines(customer: &str, tag: &str, calls: usize) -> Vec<proto::ApplyCreditsRequest> {
    (0..calls)
        .map(|call| {
            metered_line(
                customer,
                USD,
                &format!("in_{tag}_{}", call / 4),
                &format!("il_{tag}_{call}"),
                amount_due(call),
            )
        })
        .collect()
}

/// Starts one task per request, round-robin over `channels`; they all run at once.
fn spawn_applies(
    app: &TestApp,
    channels: &[Channel],
    requests: &[proto::ApplyCreditsRequest],
) -> Vec<JoinHandle<Result<proto::ApplyCreditsResponse, tonic::Status>>> {
    requests
        .iter()
        .enumerate()
        .map(|(call, request)| {
            let mut client = BalanceClient::new(channels[call % channels.len()].clone());
            let request = app.grpc(request.clone());
            tokio::spawn(async move {
                client
                    .apply_credits(request)
                    .await
                    .map(tonic::Response::into_inner)
            })
        })
        .collect()
}

/// Waits for every task; each must have succeeded.
async fn join_ok<T>(what: &str, tasks: Vec<JoinHandle<Result<T, tonic::Status>>>) -> Vec<T> {
    tokio::time::timeout(DEADLINE, futures::future::join_all(tasks))
        .await
        .unwrap_or_else(|_| panic!("every {what} finishes in time"))
        .into_iter()
        .enumerate()
        .map(|(index, joined)| {
            joined
                .expect("task")
                .unwrap_or_else(|status| panic!("{what} {index}: {status:?}"))
        })
        .collect()
}

/// Creates a customer with `grants` and sends `calls` applies at once, each to its own
/// invoice line, round-robin over 64 connections.
async fn apply_concurrently(app: &TestApp, grants: &[GrantSpec], calls: usize) -> Run {
    let customer = app.create_customer("name=Hot").await;
    let grants = create_grants(app, &customer, grants).await;
    let channels = connections(app).await;
    let requests = lines(&customer, "hot", calls);
    let responses = join_ok("apply", spawn_applies(app, &channels, &requests)).await;
    Run {
        customer,
        grants,
        requests,
        responses,
    }
}

async fn summary(
    balance: &mut BalanceClient,
    app: &TestApp,
    customer: &str,
    filter: proto::SummaryFilter,
) -> (i64, i64) {
    grpc_ledger_and_available(&grpc_summary(balance, app, customer, filter).await, USD)
}

/// A grant's remainder from its own entries and from the summary, which must agree and never
/// be negative. Returns `(ledger, available)`.
async fn grant_remainder(
    balance: &mut BalanceClient,
    app: &TestApp,
    customer: &str,
    grant: &str,
) -> (i64, i64) {
    let (ledger_balance, available) = summary(balance, app, customer, grant_filter(grant)).await;
    assert!(
        ledger_balance >= 0,
        "grant {grant} overdrawn: {ledger_balance}"
    );
    let entry_sum: i64 = grpc_transactions(balance, app, customer, Some(grant))
        .await
        .iter()
        .map(signed)
        .sum();
    assert!(entry_sum >= 0, "grant {grant} overdrawn: {entry_sum}");
    assert_eq!(
        entry_sum, ledger_balance,
        "grant {grant}: entries and summary"
    );
    (ledger_balance, available)
}

/// Checks one response against its request and returns its entries.
fn check_response<'a>(
    request: &proto::ApplyCreditsRequest,
    response: &'a proto::ApplyCreditsResponse,
) -> &'a [proto::CreditBalanceTransaction] {
    assert_eq!(response.currency, USD);
    assert!(
        (0..=request.amount_due).contains(&response.applied),
        "{request:?} -> {response:?}"
    );
    assert_eq!(
        response.remaining_amount_due,
        request.amount_due - response.applied
    );
    let mut sum = 0;
    let mut grants = BTreeSet::new();
    for entry in &response.entries {
        let (kind, amount) = kind_and_amount(entry);
        assert_eq!(kind, "credits_applied", "{entry:?}");
        let line = entry
            .debit
            .as_ref()
            .and_then(|debit| debit.credits_applied.as_ref())
            .expect("credits_applied names the line");
        assert_eq!(
            (&line.invoice, &line.invoice_line_item),
            (&request.invoice, &request.invoice_line_item)
        );
        assert!(
            grants.insert(entry.credit_grant.clone()),
            "one entry per grant: {response:?}"
        );
        sum += amount;
    }
    assert_eq!(
        sum, response.applied,
        "entries add up to applied: {response:?}"
    );
    &response.entries
}

/// Everything that must hold after a run of applies: responses, ledger and summary agree,
/// and no grant is overdrawn. Returns the total applied.
async fn check_run(app: &TestApp, run: &Run) -> i64 {
    let mut balance = BalanceClient::new(app.channel().await);
    let granted: i64 = run.grants.iter().map(|grant| grant.amount).sum();
    let requested: i64 = run.requests.iter().map(|request| request.amount_due).sum();

    let mut from_responses: BTreeMap<String, proto::CreditBalanceTransaction> = BTreeMap::new();
    let mut partial = 0;
    for (request, response) in run.requests.iter().zip(&run.responses) {
        for entry in check_response(request, response) {
            assert!(
                from_responses
                    .insert(entry.id.clone(), entry.clone())
                    .is_none(),
                "entry {} returned twice",
                entry.id
            );
        }
        if 0 < response.applied && response.applied < request.amount_due {
            partial += 1;
        }
    }
    // The balance only shrinks, so only the call that used up the last credit is partly paid.
    assert!(partial <= 1, "{partial} lines were partly paid");
    let applied: i64 = run.responses.iter().map(|response| response.applied).sum();
    assert_eq!(
        applied,
        requested.min(granted),
        "requested {requested}, granted {granted}"
    );
    assert_eq!(
        summary(&mut balance, app, &run.customer, metered_filter()).await,
        (granted - applied, granted - applied)
    );

    let whole = grpc_transactions(&mut balance, app, &run.customer, None).await;
    let listed_applications: BTreeMap<String, proto::CreditBalanceTransaction> = whole
        .iter()
        .filter(|transaction| kind_and_amount(transaction).0 == "credits_applied")
        .map(|transaction| (transaction.id.clone(), transaction.clone()))
        .collect();
    assert_eq!(
        listed_applications.keys().collect::<Vec<_>>(),
        from_responses.keys().collect::<Vec<_>>(),
        "the ledger's applications are exactly the responses' entries"
    );
    assert_eq!(listed_applications, from_responses, "and say the same");
    assert_eq!(
        whole.len(),
        run.grants.len() + from_responses.len(),
        "only the grants and the applications were written"
    );

    // Per grant: nothing overdrawn, and the summary, the ledger and the responses agree.
    let mut drained_so_far = true;
    let mut by_priority: Vec<&Grant> = run.grants.iter().collect();
    by_priority.sort_by_key(|grant| grant.priority);
    for grant in by_priority {
        let applied_here: i64 = from_responses
            .values()
            .filter(|entry| entry.credit_grant == grant.id)
            .map(|entry| kind_and_amount(entry).1)
            .sum();
        let (ledger_balance, available) =
            grant_remainder(&mut balance, app, &run.customer, &grant.id).await;
        assert_eq!(
            ledger_balance,
            grant.amount - applied_here,
            "grant {}",
            grant.id
        );
        assert_eq!(available, ledger_balance);
        // Burn order: a grant is only drawn from once every higher-priority one is empty.
        if applied_here > 0 {
            assert!(
                drained_so_far,
                "grant {} was used before a higher-priority grant was drained",
                grant.id
            );
        }
        drained_so_far = drained_so_far && ledger_balance == 0;
    }
    applied
}

/// Sums `(grant, kind) -> amount` over entries.
fn totals(entries: &[proto::CreditBalanceTransaction]) -> BTreeMap<(String, String), i64> {
    let mut totals = BTreeMap::new();
    for entry in entries {
        let (kind, amount) = kind_and_amount(entry);
        *totals
            .entry((entry.credit_grant.clone(), kind))
            .or_insert(0) += amount;
    }
    totals
}

on_every_backend! {
    async fn five_hundred_concurrent_applies_never_apply_more_than_was_granted(app) {
        let run = tokio::time::timeout(DEADLINE, apply_concurrently(&app, &[GrantSpec { priority: 10, amount: 3000, expires_in: None }, GrantSpec { priority: 20, amount: 2500, expires_in: Some(86_400) }, GrantSpec { priority: 30, amount: 1500, expires_in: None }], 500))
            .await
            .expect("in time");
        let granted: i64 = run.grants.iter().map(|grant| grant.amount).sum();
        let requested: i64 = run.requests.iter().map(|request| request.amount_due).sum();
        assert!(requested > granted, "the scenario asks for more than was granted ({requested} ≤ {granted})");
        let applied = tokio::time::timeout(DEADLINE, check_run(&app, &run)).await.expect("checks in time");
        assert_eq!(applied, granted, "everything granted was used");
        assert!(run.responses.iter().any(|response| response.applied == 0), "some lines found nothing left");
    }

    async fn two_hundred_concurrent_applies_within_the_grants_are_paid_in_full(app) {
        let run = tokio::time::timeout(DEADLINE, apply_concurrently(&app, &[GrantSpec { priority: 5, amount: 2000, expires_in: None }, GrantSpec { priority: 50, amount: 1500, expires_in: Some(86_400) }, GrantSpec { priority: 95, amount: 1000, expires_in: None }], 200))
            .await
            .expect("in time");
        let granted: i64 = run.grants.iter().map(|grant| grant.amount).sum();
        let requested: i64 = run.requests.iter().map(|request| request.amount_due).sum();
        assert!(requested < granted, "the scenario asks for less than was granted ({requested} ≥ {granted})");
        let applied = tokio::time::timeout(DEADLINE, check_run(&app, &run)).await.expect("checks in time");
        assert_eq!(applied, requested);
        for (request, response) in run.requests.iter().zip(&run.responses) {
            assert_eq!(response.applied, request.amount_due, "{request:?}");
            assert_eq!(response.remaining_amount_due, 0);
        }
    }

    async fn concurrent_reinstatements_give_each_invoice_back_once_while_the_sweeper_and_new_applies_run(app) {
        let customer = app.create_customer("name=Voids").await;
        // `first` is used up first and never expires; `expiring` expires before the invoices
        // are voided; `last` pays for the new lines.
        let grants = create_grants(&app, &customer, &[
            GrantSpec { priority: 10, amount: 1000, expires_in: None },
            GrantSpec { priority: 20, amount: 3000, expires_in: Some(100) },
            GrantSpec { priority: 30, amount: 2000, expires_in: None },
        ]).await;
        let (first, expiring, last) = (grants[0].id.clone(), grants[1].id.clone(), grants[2].id.clone());
        let channels = connections(&app).await;
        let mut balance = BalanceClient::new(channels[0].clone());

        // 120 lines on 30 invoices, at once.
        let old_lines = lines(&customer, "old", 120);
        let old_responses = join_ok("apply", spawn_applies(&app, &channels, &old_lines)).await;
        let mut applied_by_invoice: BTreeMap<String, i64> = BTreeMap::new();
        let mut applications = Vec::new();
        for (request, response) in old_lines.iter().zip(&old_responses) {
            assert_eq!(response.applied, request.amount_due, "there is enough for every line");
            applications.extend(check_response(request, response).iter().cloned());
            *applied_by_invoice.entry(request.invoice.clone()).or_insert(0) += response.applied;
        }
        let applied_before = totals(&applications);
        let old = |grant: &str| applied_before.get(&(grant.to_string(), "credits_applied".to_string())).copied().unwrap_or(0);
        assert_eq!(old(&first), 1000, "the first grant is used up");
        let on_expiring = old(&expiring);
        assert!(0 < on_expiring && on_expiring < 3000, "the expiring grant is partly used: {on_expiring}");
        assert_eq!(old(&last), 0);

        app.advance(200);

        // Every invoice voided four times over, four sweepers, and 60 new lines, all at once.
        let mut reinstatements = Vec::new();
        for round in 0..4 {
            for (index, invoice) in applied_by_invoice.keys().enumerate() {
                let mut client = BalanceClient::new(channels[(round * 31 + index) % CONNECTIONS].clone());
                let request = app.grpc(proto::ReinstateInvoiceCreditsRequest { customer: customer.clone(), invoice: invoice.clone() });
                let invoice = invoice.clone();
                reinstatements.push(tokio::spawn(async move {
                    client.reinstate_invoice_credits(request).await.map(|response| (invoice, response.into_inner()))
                }));
            }
        }
        let sweeps: Vec<JoinHandle<Result<u64, tonic::Status>>> = (0..4)
            .map(|_| {
                let services = app.services.clone();
                tokio::spawn(async move { services.sweep_expired_credit_grants().await.map_err(tonic::Status::from) })
            })
            .collect();
        let new_lines = lines(&customer, "new", 60);
        let new_applies = spawn_applies(&app, &channels, &new_lines);
        let reinstated = join_ok("reinstate", reinstatements).await;
        let swept: u64 = join_ok("sweep", sweeps).await.into_iter().sum();
        let new_responses = join_ok("apply", new_applies).await;

        // Each invoice came back exactly once, in full, to the grants it was paid from.
        let mut given_back: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut reinstate_entries = Vec::new();
        for (invoice, response) in &reinstated {
            given_back.entry(invoice.clone()).or_default().push(response.reinstated);
            reinstate_entries.extend(response.entries.iter().cloned());
            let credited: i64 = response.entries.iter()
                .filter(|entry| kind_and_amount(entry).0 == "credits_application_invoice_voided")
                .map(|entry| kind_and_amount(entry).1)
                .sum();
            assert_eq!(credited, response.reinstated, "{response:?}");
            // What went back to the expired grant expired again at once, in the same call.
            let response_totals = totals(&response.entries);
            let for_kind = |grant: &str, kind: &str| response_totals.get(&(grant.to_string(), kind.to_string())).copied().unwrap_or(0);
            assert_eq!(for_kind(&expiring, "credits_expired"), for_kind(&expiring, "credits_application_invoice_voided"), "{response:?}");
            assert_eq!(for_kind(&first, "credits_expired") + for_kind(&last, "credits_expired"), 0, "{response:?}");
        }
        for (invoice, amounts) in &given_back {
            assert_eq!(amounts.len(), 4);
            assert_eq!(amounts.iter().sum::<i64>(), applied_by_invoice[invoice], "{invoice}: {amounts:?}");
            assert!(amounts.iter().filter(|&&amount| amount > 0).count() <= 1, "{invoice} given back more than once: {amounts:?}");
        }
        let ids: BTreeSet<&str> = reinstate_entries.iter().map(|entry| entry.id.as_str()).collect();
        assert_eq!(ids.len(), reinstate_entries.len(), "an entry returned twice");
        let line_of = |entry: &proto::CreditBalanceTransaction| {
            let line = entry.credit.as_ref().and_then(|credit| credit.credits_application_invoice_voided.as_ref())
                .or_else(|| entry.debit.as_ref().and_then(|debit| debit.credits_applied.as_ref()))
                .expect("names its line");
            (entry.credit_grant.clone(), line.invoice.clone(), line.invoice_line_item.clone(), kind_and_amount(entry).1)
        };
        let mut given_back_lines: Vec<_> = reinstate_entries.iter()
            .filter(|entry| kind_and_amount(entry).0 == "credits_application_invoice_voided")
            .map(line_of)
            .collect();
        let mut applied_lines: Vec<_> = applications.iter().map(line_of).collect();
        given_back_lines.sort();
        applied_lines.sort();
        assert_eq!(given_back_lines, applied_lines, "every application given back to its own grant, once");

        // The new lines were paid in full, never by the expired grant.
        let mut new_entries = Vec::new();
        for (request, response) in new_lines.iter().zip(&new_responses) {
            assert_eq!(response.applied, request.amount_due, "{request:?}");
            new_entries.extend(check_response(request, response).iter().cloned());
        }
        assert!(new_entries.iter().all(|entry| entry.credit_grant != expiring), "the expired grant paid a new line");

        // One grant expired, once, however the sweepers and the reinstatements interleaved.
        let swept_after = app.services.sweep_expired_credit_grants().await.expect("sweep");
        assert_eq!(swept + swept_after, 1, "concurrent sweeps {swept}, then {swept_after}");

        let whole = grpc_transactions(&mut balance, &app, &customer, None).await;
        let ledger_totals = totals(&whole);
        let total = |grant: &str, kind: &str| ledger_totals.get(&(grant.to_string(), kind.to_string())).copied().unwrap_or(0);
        assert_eq!(total(&expiring, "credits_expired"), 3000, "the expiring grant's whole amount expired in the end");
        assert_eq!(grant_remainder(&mut balance, &app, &customer, &expiring).await, (0, 0));
        let new_totals = totals(&new_entries);
        let new = |grant: &str| new_totals.get(&(grant.to_string(), "credits_applied".to_string())).copied().unwrap_or(0);
        let mut remaining = 0;
        for grant in [&first, &last] {
            let amount = grants.iter().find(|spec| &spec.id == grant).expect("grant").amount;
            let expected = amount - old(grant) + old(grant) - new(grant);
            assert_eq!(grant_remainder(&mut balance, &app, &customer, grant).await, (expected, expected), "grant {grant}");
            remaining += expected;
        }
        assert_eq!(summary(&mut balance, &app, &customer, metered_filter()).await, (remaining, remaining));

        let listed_applications: BTreeSet<String> = whole.iter()
            .filter(|entry| kind_and_amount(entry).0 == "credits_applied")
            .map(|entry| entry.id.clone())
            .collect();
        let returned_applications: BTreeSet<String> = applications.iter().chain(&new_entries).map(|entry| entry.id.clone()).collect();
        assert_eq!(listed_applications, returned_applications);
        let swept_entries = usize::from(on_expiring < 3000);
        assert_eq!(
            whole.len(),
            grants.len() + applications.len() + reinstate_entries.len() + new_entries.len() + swept_entries,
            "nothing else was written"
        );
    }
}
