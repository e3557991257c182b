//! Balance at any moment: over random histories of grants, applications, expiries (by hand and
//! by the sweeper after the clock moves), voids, reinstatements and expiry changes, on both
//! databases, (1) every stored running remainder equals the prefix sum of its grant's entries
//! in ledger order (`created`, then ID), (2) the summary `as_of` a random past moment equals a
//! brute-force replay of the entries recorded by then, for the customer and for each grant,
//! (3) the audit stays clean; and a tampered remainder is what the audit reports. Also: the
//! gRPC `as_of` field, and its refusal of a future moment; and migration 11's backfill.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::BTreeMap;

use common::TestApp;
use common::credits::{BalanceClient, grant_filter, grpc_ledger_and_available, metered_filter};
use creditd::domain::MetadataUpdate;
use creditd::domain::credit_application::{ApplyCredits, ApplyFields, ReinstateCredits};
use creditd::domain::credit_balance_transaction::{
    CreditBalanceTransaction, CreditTransactionFilter,
};
use creditd::domain::credit_grant::{
    CreateCreditGrant, CreditGrant, GrantFields, Scope, SummaryFilter, SummaryQuery,
    UpdateCreditGrant, UpdateGrantFields,
};
use creditd::domain::customer::{CreateCustomer, CustomerFields};
use creditd::domain::pagination::ListRequest;
use creditd::grpc::proto;
use creditd::service::RequestContext;
use creditd::service::audit::kind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::ConnectionTrait;

/// Random histories per backend, and steps per history.
const HISTORIES: u64 = 24;
const STEPS: usize = 30;

async fn new_customer(app: &TestApp, ctx: &RequestContext) -> String {
    app.services
        .create_customer(
            ctx,
            CreateCustomer::parse(CustomerFields::default(), None).unwrap(),
        )
        .await
        .unwrap()
        .id
}

async fn metered_usd_grant(
    app: &TestApp,
    ctx: &RequestContext,
    customer: &str,
    value: i64,
) -> String {
    let fields = GrantFields {
        customer: Some(customer.to_string()),
        amount_type: Some("monetary".into()),
        currency: Some("usd".into()),
        value: Some(value),
        scope_price_type: Some("metered".into()),
        ..GrantFields::default()
    };
    app.services
        .create_credit_grant(ctx, CreateCreditGrant::parse(fields).unwrap())
        .await
        .unwrap()
        .id
}

async fn apply(app: &TestApp, ctx: &RequestContext, customer: &str, line: &str, amount_due: i64) {
    let command = ApplyCredits::parse(ApplyFields {
        customer: customer.to_string(),
        currency: "usd".into(),
        invoice: format!("in_{customer}"),
        invoice_line_item: line.to_string(),
        price_type: Some("metered".into()),
        price: None,
        amount_due,
    })
    .unwrap();
    app.services.apply_credits(ctx, command).await.unwrap();
}

/// One random step. Business-rule refusals (voiding a voided grant, …) are fine; anything
/// internal is not.
async fn step(
    app: &TestApp,
    ctx: &RequestContext,
    rng: &mut StdRng,
    customer: &str,
    grants: &mut Vec<String>,
) {
    let services = &app.services;
    let now = app.now();
    let pick = |rng: &mut StdRng, grants: &[String]| {
        (!grants.is_empty()).then(|| grants[rng.random_range(0..grants.len())].clone())
    };
    let refused_cleanly = |what: &str, result: Result<(), creditd::Error>| {
        if let Err(error) = result {
            assert_ne!(error.kind, creditd::ErrorKind::Internal, "{what}: {error}");
        }
    };
    match rng.random_range(0..14) {
        0..=2 => {
            let priced = rng.random_bool(0.3);
            let starts_in = if rng.random_bool(0.7) {
                0
            } else {
                rng.random_range(1..60)
            };
            let lasts = rng.random_bool(0.6).then(|| rng.random_range(1..120));
            let fields = GrantFields {
                customer: Some(customer.to_string()),
                amount_type: Some("monetary".into()),
                currency: Some("usd".into()),
                value: Some(rng.random_range(1..500)),
                scope_price_type: (!priced).then(|| "metered".to_string()),
                scope_prices: priced.then(|| vec!["price_a".to_string()]),
                category: Some(
                    if rng.random_bool(0.5) {
                        "promotional"
                    } else {
                        "paid"
                    }
                    .into(),
                ),
                priority: Some(rng.random_range(0..=100)),
                effective_at: Some(now + starts_in),
                expires_at: lasts.map(|lasts| now + starts_in + lasts),
                ..GrantFields::default()
            };
            let grant = services
                .create_credit_grant(ctx, CreateCreditGrant::parse(fields).unwrap())
                .await
                .unwrap();
            grants.push(grant.id);
        }
        3..=5 => {
            let (invoice, line) = (rng.random_range(0..4), rng.random_range(0..3));
            let command = ApplyCredits::parse(ApplyFields {
                customer: customer.to_string(),
                currency: "usd".into(),
                invoice: format!("in_{customer}_{invoice}"),
                invoice_line_item: format!("il_{customer}_{invoice}_{line}"),
                price_type: Some("metered".into()),
                price: rng.random_bool(0.3).then(|| "price_a".to_string()),
                amount_due: (invoice * 97 + line * 31) % 400 + 1,
            })
            .unwrap();
            refused_cleanly(
                "apply",
                services.apply_credits(ctx, command).await.map(drop),
            );
        }
        6..=7 => app.advance(rng.random_range(1..40)),
        8 => {
            services.sweep_expired_credit_grants().await.unwrap();
        }
        9 => {
            if let Some(id) = pick(rng, grants) {
                refused_cleanly(
                    "expire",
                    services.expire_credit_grant(ctx, &id).await.map(drop),
                );
            }
        }
        10 => {
            if let Some(id) = pick(rng, grants) {
                refused_cleanly("void", services.void_credit_grant(ctx, &id).await.map(drop));
            }
        }
        11..=12 => {
            let invoice = rng.random_range(0..4);
            let command = ReinstateCredits::parse(
                Some(customer.to_string()),
                Some(format!("in_{customer}_{invoice}")),
            )
            .unwrap();
            refused_cleanly(
                "reinstate",
                services
                    .reinstate_invoice_credits(ctx, &command)
                    .await
                    .map(drop),
            );
        }
        _ => {
            // Expiry changes only to a later moment or to none: a change into the past would
            // rewrite history the grant does not keep (see the README).
            if let Some(id) = pick(rng, grants) {
                let lasts = rng.random_bool(0.7).then(|| rng.random_range(1..100));
                let update = UpdateCreditGrant::parse(UpdateGrantFields {
                    expires_at: lasts.map(|lasts| now + lasts),
                    clear_expires_at: lasts.is_none(),
                    metadata: MetadataUpdate::default(),
                })
                .unwrap();
                refused_cleanly(
                    "change expiry",
                    services
                        .update_credit_grant(ctx, &id, update)
                        .await
                        .map(drop),
                );
            }
        }
    }
}

/// Every entry of the customer, through the public list (newest first).
async fn all_entries(
    app: &TestApp,
    ctx: &RequestContext,
    customer: &str,
) -> Vec<CreditBalanceTransaction> {
    let mut entries = Vec::new();
    let mut request = ListRequest::parse(Some(100), None, None).unwrap();
    let filter = CreditTransactionFilter {
        customer_id: customer.to_string(),
        credit_grant_id: None,
    };
    loop {
        let page = app
            .services
            .list_credit_balance_transactions(ctx, &filter, &request)
            .await
            .unwrap();
        let last = page.data.last().map(|entry| entry.id.clone());
        entries.extend(page.data);
        match (page.has_more, last) {
            (true, Some(last)) => {
                request = ListRequest::parse(Some(100), Some(last), None).unwrap()
            }
            _ => break,
        }
    }
    entries
}

/// `(ledger, available)` at `at` by replaying the entries recorded by then, independently of
/// the stored remainders and of `summarize`: a grant counts once created, in the ledger once
/// effective and not voided by then; it is out of the available balance once its `expires_at`
/// has passed, whenever its expiry entry was recorded.
fn replay(grants: &[CreditGrant], entries: &[CreditBalanceTransaction], at: i64) -> (i64, i64) {
    let (mut ledger, mut available) = (0, 0);
    for grant in grants.iter().filter(|grant| grant.created <= at) {
        let remaining: i64 = entries
            .iter()
            .filter(|entry| entry.credit_grant_id == grant.id && entry.created <= at)
            .map(|entry| entry.kind.signed(entry.amount))
            .sum();
        let voided = grant.voided_at.is_some_and(|voided| voided <= at);
        if grant.effective_at <= at && !voided {
            ledger += remaining;
            let lapsed = grant.expires_at.is_some_and(|expires| expires <= at);
            if !lapsed {
                available += remaining;
            }
        }
    }
    (ledger, available)
}

async fn summary_at(
    app: &TestApp,
    ctx: &RequestContext,
    customer: &str,
    filter: SummaryFilter,
    at: i64,
) -> (i64, i64) {
    let query = SummaryQuery::for_customer(customer, filter)
        .unwrap()
        .at(Some(at))
        .unwrap();
    let balances = app
        .services
        .credit_balance_summary(ctx, &query)
        .await
        .unwrap();
    (
        balances.iter().map(|b| b.ledger).sum(),
        balances.iter().map(|b| b.available).sum(),
    )
}

async fn check_history(app: &TestApp, ctx: &RequestContext, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let customer = new_customer(app, ctx).await;
    let start = app.now();
    let mut grants = Vec::new();
    let mut moments = vec![start - 1];
    for _ in 0..STEPS {
        step(app, ctx, &mut rng, &customer, &mut grants).await;
        moments.push(app.now());
    }
    let end = app.now();
    for _ in 0..6 {
        moments.push(rng.random_range(start - 2..=end));
    }
    let entries = all_entries(app, ctx, &customer).await;
    let mut current = Vec::new();
    for id in &grants {
        current.push(app.services.get_credit_grant(ctx, id).await.unwrap());
    }

    // (1) Every stored running remainder is the prefix sum in ledger order.
    let mut by_grant: BTreeMap<&str, Vec<&CreditBalanceTransaction>> = BTreeMap::new();
    for entry in &entries {
        by_grant
            .entry(&entry.credit_grant_id)
            .or_default()
            .push(entry);
    }
    for (grant, mut list) in by_grant {
        list.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        let mut sum = 0;
        for entry in list {
            sum += entry.kind.signed(entry.amount);
            assert_eq!(
                entry.grant_remaining_after, sum,
                "seed {seed}: grant {grant} entry {}",
                entry.id
            );
            assert!(sum >= 0, "seed {seed}: grant {grant} went below zero");
        }
    }

    // (2) As of each moment, the customer's summary and each grant's equal the replay.
    moments.sort_unstable();
    moments.dedup();
    let both_scopes = || SummaryFilter::ApplicabilityScope(Scope::Prices(vec!["price_a".into()]));
    for &at in &moments {
        let expected = replay(&current, &entries, at);
        let actual = summary_at(app, ctx, &customer, both_scopes(), at).await;
        assert_eq!(actual, expected, "seed {seed}: customer as of {at}");
        for grant in &current {
            let expected = replay(std::slice::from_ref(grant), &entries, at);
            let filter = SummaryFilter::CreditGrant(grant.id.clone());
            let actual = summary_at(app, ctx, &customer, filter, at).await;
            assert_eq!(
                actual, expected,
                "seed {seed}: grant {} as of {at}",
                grant.id
            );
        }
    }
    // As of now is the live summary.
    let live = app
        .services
        .credit_balance_summary(
            ctx,
            &SummaryQuery::for_customer(&customer, both_scopes()).unwrap(),
        )
        .await
        .unwrap();
    let live = (
        live.iter().map(|b| b.ledger).sum::<i64>(),
        live.iter().map(|b| b.available).sum::<i64>(),
    );
    assert_eq!(
        summary_at(app, ctx, &customer, both_scopes(), end).await,
        live,
        "seed {seed}: as of now"
    );
}

on_every_backend! {
    async fn as_of_any_past_moment_equals_a_replay_of_the_entries_recorded_by_then(app) {
        let ctx = app.context().await;
        for seed in 0..HISTORIES {
            check_history(&app, &ctx, seed).await;
        }
        // (3) Everything written agrees with the audit.
        let report = app.services.audit(&ctx).await.unwrap();
        assert!(report.is_clean(), "{report}");
    }

    async fn as_of_over_grpc_reads_the_past_and_refuses_the_future(app) {
        let ctx = app.context().await;
        let customer = new_customer(&app, &ctx).await;
        let before = app.now();
        app.advance(10);
        let grant = metered_usd_grant(&app, &ctx, &customer, 1_000).await;
        app.advance(10);
        apply(&app, &ctx, &customer, "il_1", 300).await;
        let applied_at = app.now();
        app.advance(10);
        let mut balance = BalanceClient::new(app.channel().await);
        let ask = |as_of: Option<i64>, filter: proto::SummaryFilter| {
            app.grpc(proto::GetCreditBalanceSummaryRequest {
                customer: customer.clone(),
                filter: Some(filter),
                as_of,
            })
        };
        let mut at = async |as_of: Option<i64>, filter: proto::SummaryFilter| {
            let summary = balance
                .get_credit_balance_summary(ask(as_of, filter))
                .await
                .expect("summary")
                .into_inner();
            (summary.balances.len(), grpc_ledger_and_available(&summary, "usd"))
        };
        assert_eq!(at(Some(before), metered_filter()).await, (0, (0, 0)), "no grant yet");
        assert_eq!(at(Some(applied_at - 1), grant_filter(&grant)).await, (1, (1_000, 1_000)));
        assert_eq!(at(Some(applied_at), metered_filter()).await, (1, (700, 700)));
        assert_eq!(at(None, metered_filter()).await, (1, (700, 700)));

        let future = balance
            .get_credit_balance_summary(ask(Some(app.now() + 5), metered_filter()))
            .await
            .expect_err("as_of in the future");
        assert_eq!(future.code(), tonic::Code::InvalidArgument, "{future:?}");
        assert!(future.message().contains("as_of"), "{future:?}");
    }

    async fn the_audit_reports_a_tampered_running_remainder(app) {
        let ctx = app.context().await;
        let customer = new_customer(&app, &ctx).await;
        let grant = metered_usd_grant(&app, &ctx, &customer, 1_000).await;
        apply(&app, &ctx, &customer, "il_1", 300).await;
        apply(&app, &ctx, &customer, "il_2", 200).await;
        assert!(app.services.audit(&ctx).await.unwrap().is_clean());
        let entries = all_entries(&app, &ctx, &customer).await;
        // Newest first: the middle entry is the first application (remainder 700).
        let middle = &entries[1];
        assert_eq!(middle.grant_remaining_after, 700);
        let app = &app;
        let tamper = async |sql: String| {
            let tx = app.services.db.begin().await.expect("begin");
            tx.execute_unprepared(&sql)
                .await
                .unwrap_or_else(|error| panic!("{sql}: {error}"));
            tx.commit().await.expect("commit");
        };
        tamper(format!("UPDATE credit_balance_transactions SET grant_remaining_after = 650 WHERE id = '{}'", middle.id)).await;
        let report = app.services.audit(&ctx).await.unwrap();
        assert_eq!(report.findings.len(), 1, "{report}");
        let finding = &report.findings[0];
        assert_eq!((finding.kind.as_str(), finding.object.as_str()), (kind::RUNNING_REMAINDER_MISMATCH, grant.as_str()));
        assert_eq!((finding.expected.as_str(), finding.actual.as_str()), ("700", "650"));
        assert!(finding.message.contains(&middle.id), "{}", finding.message);

        // A missing remainder, and later entries wrong too: one finding, at the first.
        tamper(format!("UPDATE credit_balance_transactions SET grant_remaining_after = NULL WHERE id = '{}'", middle.id)).await;
        tamper(format!("UPDATE credit_balance_transactions SET grant_remaining_after = 1 WHERE id = '{}'", entries[0].id)).await;
        let report = app.services.audit(&ctx).await.unwrap();
        assert_eq!(report.findings.len(), 1, "{report}");
        assert_eq!(report.findings[0].actual, "none");
        assert!(report.findings[0].message.contains("1 later entries differ too"), "{report}");
        tamper(format!("UPDATE credit_balance_transactions SET grant_remaining_after = 700 WHERE id = '{}'", middle.id)).await;
        tamper(format!("UPDATE credit_balance_transactions SET grant_remaining_after = 500 WHERE id = '{}'", entries[0].id)).await;
        assert!(app.services.audit(&ctx).await.unwrap().is_clean());
    }

    async fn migration_11_backfills_the_running_remainders_of_an_existing_ledger(app) {
        use migrations::MigratorTrait;
        let ctx = app.context().await;
        let mut rng = StdRng::seed_from_u64(7);
        let customer = new_customer(&app, &ctx).await;
        let mut grants = Vec::new();
        for _ in 0..STEPS {
            step(&app, &ctx, &mut rng, &customer, &mut grants).await;
        }
        let written = all_entries(&app, &ctx, &customer).await;
        // Back to before migration 11 (the column goes), then forward again: the backfill.
        let from_11 = u32::try_from(migrations::Migrator::migrations().len() - 10).unwrap();
        migrations::Migrator::down(app.services.db.writer(), Some(from_11)).await.unwrap();
        migrations::Migrator::up(app.services.db.writer(), None).await.unwrap();
        let backfilled = all_entries(&app, &ctx, &customer).await;
        assert_eq!(backfilled, written);
        let report = app.services.audit(&ctx).await.unwrap();
        assert!(report.is_clean(), "{report}");
    }
}
