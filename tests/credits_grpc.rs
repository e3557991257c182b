//! Billing credits over gRPC: the burn-down order at every tie-break level, which grants are
//! eligible for a line, applying by invoice line exactly once, giving credits back when an
//! invoice is voided (also to grants that expired or were voided meanwhile), the same ledger
//! over REST and gRPC, and the status codes for bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::{BTreeMap, HashSet};

use common::TestApp;
use common::credits::{
    BalanceClient, GrantClient, applicability, grant_filter, grpc_ledger_and_available,
    grpc_summary, grpc_transactions, invoice_id, metered_grant, metered_line, metered_scope,
    monetary, scope_filter,
};
use creditd::grpc::proto;
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

const USD: &str = "usd";

fn prices_scope(prices: &[&str]) -> proto::CreditScope {
    proto::CreditScope {
        price_type: None,
        prices: prices
            .iter()
            .map(|id| proto::ApplicablePrice { id: id.to_string() })
            .collect(),
    }
}

/// What a ledger entry says, checked for shape: the credit/debit type, the grant, the amount
/// and the invoice line it names (for applications and their reinstatement).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    grant: String,
    kind: String,
    amount: i64,
    line: Option<(String, String)>,
}

fn entry(grant: &str, kind: &str, amount: i64, line: Option<(&str, &str)>) -> Entry {
    Entry {
        grant: grant.to_string(),
        kind: kind.to_string(),
        amount,
        line: line.map(|(invoice, line)| (invoice.to_string(), line.to_string())),
    }
}

fn entry_of(transaction: &proto::CreditBalanceTransaction) -> Entry {
    assert_eq!(
        transaction.object, "billing.credit_balance_transaction",
        "{transaction:?}"
    );
    assert!(transaction.id.starts_with("cbtxn_test_"), "{transaction:?}");
    assert!(!transaction.livemode, "{transaction:?}");
    let (kind, amount, line) = match transaction.r#type.as_str() {
        "credit" => {
            assert!(transaction.debit.is_none(), "{transaction:?}");
            let credit = transaction.credit.as_ref().expect("credit");
            (
                credit.r#type.clone(),
                &credit.amount,
                credit.credits_application_invoice_voided.as_ref(),
            )
        }
        "debit" => {
            assert!(transaction.credit.is_none(), "{transaction:?}");
            let debit = transaction.debit.as_ref().expect("debit");
            (
                debit.r#type.clone(),
                &debit.amount,
                debit.credits_applied.as_ref(),
            )
        }
        other => panic!("type {other:?}: {transaction:?}"),
    };
    let amount = amount.as_ref().expect("amount");
    assert_eq!(amount.r#type, "monetary", "{transaction:?}");
    let value = amount.monetary.as_ref().expect("monetary").value;
    assert!(value > 0, "amounts are positive: {transaction:?}");
    let names_a_line = matches!(
        kind.as_str(),
        "credits_applied" | "credits_application_invoice_voided"
    );
    assert_eq!(line.is_some(), names_a_line, "{transaction:?}");
    Entry {
        grant: transaction.credit_grant.clone(),
        kind,
        amount: value,
        line: line.map(|line| (line.invoice.clone(), line.invoice_line_item.clone())),
    }
}

fn entries_of(transactions: &[proto::CreditBalanceTransaction]) -> Vec<Entry> {
    transactions.iter().map(entry_of).collect()
}

fn sorted(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort();
    entries
}

fn signed(entry: &Entry) -> i64 {
    match entry.kind.as_str() {
        "credits_granted" | "credits_application_invoice_voided" => entry.amount,
        _ => -entry.amount,
    }
}

/// The transaction's currency.
fn currency_of(transaction: &proto::CreditBalanceTransaction) -> String {
    let amount = match (&transaction.credit, &transaction.debit) {
        (Some(credit), None) => &credit.amount,
        (None, Some(debit)) => &debit.amount,
        _ => panic!("exactly one of credit and debit: {transaction:?}"),
    };
    amount
        .as_ref()
        .and_then(|amount| amount.monetary.as_ref())
        .expect("monetary amount")
        .currency
        .clone()
}

/// gRPC clients for one app.
struct Credits<'a> {
    app: &'a TestApp,
    grants: GrantClient,
    balance: BalanceClient,
}

impl<'a> Credits<'a> {
    async fn new(app: &'a TestApp) -> Credits<'a> {
        let channel = app.channel().await;
        Credits {
            app,
            grants: GrantClient::new(channel.clone()),
            balance: BalanceClient::new(channel),
        }
    }

    async fn customer(&self) -> String {
        self.app.create_customer("name=Credits").await
    }

    async fn grant(&mut self, request: proto::CreateCreditGrantRequest) -> proto::CreditGrant {
        let context = format!("{request:?}");
        self.grants
            .create_credit_grant(self.app.grpc(request))
            .await
            .unwrap_or_else(|status| panic!("create credit grant {context}: {status:?}"))
            .into_inner()
    }

    async fn get_grant(&mut self, id: &str) -> proto::CreditGrant {
        self.grants
            .get_credit_grant(
                self.app
                    .grpc(proto::GetCreditGrantRequest { id: id.to_string() }),
            )
            .await
            .expect("get credit grant")
            .into_inner()
    }

    async fn expire(&mut self, id: &str) -> Result<proto::CreditGrant, tonic::Status> {
        self.grants
            .expire_credit_grant(
                self.app
                    .grpc(proto::ExpireCreditGrantRequest { id: id.to_string() }),
            )
            .await
            .map(tonic::Response::into_inner)
    }

    async fn void(&mut self, id: &str) -> Result<proto::CreditGrant, tonic::Status> {
        self.grants
            .void_credit_grant(
                self.app
                    .grpc(proto::VoidCreditGrantRequest { id: id.to_string() }),
            )
            .await
            .map(tonic::Response::into_inner)
    }

    async fn apply(&mut self, request: proto::ApplyCreditsRequest) -> proto::ApplyCreditsResponse {
        let context = format!("{request:?}");
        let response = self
            .balance
            .apply_credits(self.app.grpc(request.clone()))
            .await
            .unwrap_or_else(|status| panic!("apply credits {context}: {status:?}"))
            .into_inner();
        assert_eq!(response.currency, request.currency, "{response:?}");
        assert!(
            (0..=request.amount_due).contains(&response.applied),
            "{response:?}"
        );
        assert_eq!(
            response.remaining_amount_due,
            request.amount_due - response.applied,
            "{response:?}"
        );
        let entries = entries_of(&response.entries);
        assert_eq!(
            entries.iter().map(|entry| entry.amount).sum::<i64>(),
            response.applied,
            "the entries add up to what was applied: {response:?}"
        );
        let line = (request.invoice.clone(), request.invoice_line_item.clone());
        for (entry, transaction) in entries.iter().zip(&response.entries) {
            assert_eq!(entry.kind, "credits_applied", "{response:?}");
            assert_eq!(entry.line.as_ref(), Some(&line), "{response:?}");
            assert_eq!(currency_of(transaction), request.currency, "{response:?}");
        }
        let grants: HashSet<&str> = entries.iter().map(|entry| entry.grant.as_str()).collect();
        assert_eq!(
            grants.len(),
            entries.len(),
            "one entry per grant: {response:?}"
        );
        response
    }

    async fn reinstate(
        &mut self,
        customer: &str,
        invoice: &str,
    ) -> proto::ReinstateInvoiceCreditsResponse {
        self.balance
            .reinstate_invoice_credits(self.app.grpc(proto::ReinstateInvoiceCreditsRequest {
                customer: customer.to_string(),
                invoice: invoice.to_string(),
            }))
            .await
            .unwrap_or_else(|status| panic!("reinstate {invoice}: {status:?}"))
            .into_inner()
    }

    async fn summary(
        &mut self,
        customer: &str,
        filter: proto::SummaryFilter,
    ) -> proto::CreditBalanceSummary {
        grpc_summary(&mut self.balance, self.app, customer, filter).await
    }

    /// `(ledger, available)` in usd over every metered grant.
    async fn metered_balance(&mut self, customer: &str) -> (i64, i64) {
        let summary = self.summary(customer, scope_filter(metered_scope())).await;
        grpc_ledger_and_available(&summary, USD)
    }

    /// `(ledger, available)` of one grant.
    async fn grant_balance(&mut self, customer: &str, grant: &str, currency: &str) -> (i64, i64) {
        let summary = self.summary(customer, grant_filter(grant)).await;
        grpc_ledger_and_available(&summary, currency)
    }

    /// Every transaction of the customer (or of one grant), newest first, paging by 100.
    async fn transactions(
        &mut self,
        customer: &str,
        credit_grant: Option<&str>,
    ) -> Vec<proto::CreditBalanceTransaction> {
        grpc_transactions(&mut self.balance, self.app, customer, credit_grant).await
    }

    /// The signed sum of a grant's ledger entries: what is left of it.
    async fn grant_entry_sum(&mut self, customer: &str, grant: &str) -> i64 {
        let transactions = self.transactions(customer, Some(grant)).await;
        entries_of(&transactions)
            .iter()
            .inspect(|entry| assert_eq!(entry.grant, grant))
            .map(signed)
            .sum()
    }
}

/// The shape of a 1000-usd metered grant relative to the server's clock, for burn-order cases.
#[derive(Debug, Clone, Copy)]
struct Shape {
    priority: Option<i64>,
    /// Seconds from now; `None` never expires.
    expires_in: Option<i64>,
    category: &'static str,
    /// Seconds before now.
    effective_ago: i64,
}

const PLAIN: Shape = Shape {
    priority: None,
    expires_in: None,
    category: "paid",
    effective_ago: 100,
};

fn shaped_grant(customer: &str, now: i64, shape: Shape) -> proto::CreateCreditGrantRequest {
    proto::CreateCreditGrantRequest {
        category: Some(shape.category.to_string()),
        priority: shape.priority,
        effective_at: Some(now - shape.effective_ago),
        expires_at: shape.expires_in.map(|seconds| now + seconds),
        ..metered_grant(customer, USD, 1000)
    }
}

/// Creates two 1000-usd grants, `first` then `second`, for a new customer, and applies 1500 to
/// one line: the `winner` (0 = first created) must be drained and the other give the rest.
async fn assert_burns_first(app: &TestApp, case: &str, first: Shape, second: Shape, winner: usize) {
    let mut credits = Credits::new(app).await;
    let customer = credits.customer().await;
    let now = app.now();
    let ids = [
        credits.grant(shaped_grant(&customer, now, first)).await.id,
        credits.grant(shaped_grant(&customer, now, second)).await.id,
    ];
    let (drained, partial) = (&ids[winner], &ids[1 - winner]);
    let invoice = invoice_id("burn");

    let response = credits
        .apply(metered_line(&customer, USD, &invoice, "il_1", 1500))
        .await;
    assert_eq!(response.applied, 1500, "{case}: {response:?}");
    assert_eq!(
        entries_of(&response.entries),
        vec![
            entry(drained, "credits_applied", 1000, Some((&invoice, "il_1"))),
            entry(partial, "credits_applied", 500, Some((&invoice, "il_1"))),
        ],
        "{case}: the winner is drained first, then the other pays the rest"
    );
    assert_eq!(
        credits.grant_balance(&customer, drained, USD).await,
        (0, 0),
        "{case}"
    );
    assert_eq!(
        credits.grant_balance(&customer, partial, USD).await,
        (500, 500),
        "{case}"
    );
    let listed: Vec<Entry> = entries_of(&credits.transactions(&customer, None).await)
        .into_iter()
        .filter(|entry| entry.kind == "credits_applied")
        .collect();
    assert_eq!(
        sorted(listed),
        sorted(entries_of(&response.entries)),
        "{case}: the ledger holds exactly the applied entries"
    );

    // The next line takes what is left of the other grant, and no more.
    let rest = credits
        .apply(metered_line(&customer, USD, &invoice, "il_2", 600))
        .await;
    assert_eq!(rest.applied, 500, "{case}: {rest:?}");
    assert_eq!(rest.remaining_amount_due, 100, "{case}");
    assert_eq!(
        entries_of(&rest.entries),
        vec![entry(
            partial,
            "credits_applied",
            500,
            Some((&invoice, "il_2"))
        )],
        "{case}"
    );
    assert_eq!(credits.metered_balance(&customer).await, (0, 0), "{case}");
}

/// The REST form creating a usd metered-or-priced grant.
fn grant_form(customer: &str, value: i64, extra: &str) -> String {
    format!(
        "customer={customer}&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]={value}&{extra}"
    )
}

/// A REST credit balance transaction as `(type, credit/debit type, amount, currency, grant
/// position, invoice line item)`.
fn rest_ledger(
    page: &Value,
    grants: &[String],
) -> Vec<(String, String, i64, String, usize, Value)> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|transaction| {
            let kind = transaction["type"].as_str().expect("type").to_string();
            let side = &transaction[kind.as_str()];
            let grant = transaction["credit_grant"].as_str().expect("credit_grant");
            let position = grants
                .iter()
                .position(|id| id == grant)
                .unwrap_or_else(|| panic!("unknown grant {grant}"));
            let line = side["credits_applied"]
                .get("invoice_line_item")
                .or_else(|| side["credits_application_invoice_voided"].get("invoice_line_item"))
                .cloned()
                .unwrap_or(Value::Null);
            (
                kind.clone(),
                side["type"]
                    .as_str()
                    .expect("credit/debit type")
                    .to_string(),
                side["amount"]["monetary"]["value"].as_i64().expect("value"),
                side["amount"]["monetary"]["currency"]
                    .as_str()
                    .expect("currency")
                    .to_string(),
                position,
                line,
            )
        })
        .collect()
}

/// A REST grant without what differs between two customers' copies of it.
fn comparable_grant(grant: &Value) -> Value {
    let mut grant = grant.clone();
    let fields = grant.as_object_mut().expect("grant object");
    for field in ["id", "customer", "created", "updated"] {
        fields.remove(field);
    }
    grant
}

fn assert_code(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
    what: &str,
) -> tonic::Status {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    status
}

fn reason(status: &tonic::Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

on_every_backend! {
    async fn a_grant_takes_its_defaults_and_writes_a_credits_granted_entry(app) {
        let mut credits = Credits::new(&app).await;
        let customer = credits.customer().await;
        let grant = credits.grant(metered_grant(&customer, USD, 1000)).await;
        assert!(grant.id.starts_with("credgr_test_"), "{grant:?}");
        assert_eq!(grant.object, "billing.credit_grant");
        assert_eq!(grant.customer, customer);
        assert_eq!(grant.category, "paid");
        assert_eq!(grant.priority, Some(50));
        assert_eq!(grant.effective_at, Some(app.now()));
        assert_eq!(grant.expires_at, None);
        assert_eq!(grant.voided_at, None);
        assert!(!grant.livemode);
        assert_eq!(grant.amount, monetary(USD, 1000));
        assert_eq!(grant.applicability_config, applicability(metered_scope()));
        assert_eq!(credits.get_grant(&grant.id).await, grant);

        let transactions = credits.transactions(&customer, None).await;
        assert_eq!(entries_of(&transactions), vec![entry(&grant.id, "credits_granted", 1000, None)]);
        assert_eq!(transactions[0].effective_at, app.now());
        let fetched = credits.balance
            .get_credit_balance_transaction(app.grpc(proto::GetCreditBalanceTransactionRequest { id: transactions[0].id.clone() }))
            .await
            .expect("get credit balance transaction")
            .into_inner();
        assert_eq!(fetched, transactions[0]);
        assert_eq!(credits.metered_balance(&customer).await, (1000, 1000));
        assert_eq!(credits.grant_balance(&customer, &grant.id, USD).await, (1000, 1000));
    }

    async fn priority_decides_first_and_zero_is_the_highest(app) {
        assert_burns_first(&app, "lower priority number created second", Shape { priority: Some(60), ..PLAIN }, Shape { priority: Some(40), ..PLAIN }, 1).await;
        assert_burns_first(&app, "lower priority number created first", Shape { priority: Some(40), ..PLAIN }, Shape { priority: Some(60), ..PLAIN }, 0).await;
        assert_burns_first(&app, "the default 50 before 100", Shape { priority: Some(100), ..PLAIN }, PLAIN, 1).await;
        assert_burns_first(
            &app,
            "priority outranks expiry, category and effective_at",
            Shape { priority: None, expires_in: Some(1000), category: "promotional", effective_ago: 500 },
            Shape { priority: Some(0), expires_in: None, category: "paid", effective_ago: 100 },
            1,
        ).await;
    }

    async fn among_equal_priorities_the_soonest_expiry_goes_first_and_never_expiring_last(app) {
        assert_burns_first(&app, "sooner expiry created second", Shape { expires_in: Some(2000), ..PLAIN }, Shape { expires_in: Some(1000), ..PLAIN }, 1).await;
        assert_burns_first(&app, "sooner expiry created first", Shape { expires_in: Some(1000), ..PLAIN }, Shape { expires_in: Some(2000), ..PLAIN }, 0).await;
        assert_burns_first(&app, "never expiring after a far expiry", Shape { expires_in: None, ..PLAIN }, Shape { expires_in: Some(10_000_000), ..PLAIN }, 1).await;
        assert_burns_first(&app, "expiring before never expiring", Shape { expires_in: Some(10_000_000), ..PLAIN }, Shape { expires_in: None, ..PLAIN }, 0).await;
        assert_burns_first(
            &app,
            "expiry outranks category and effective_at",
            Shape { expires_in: Some(1000), category: "paid", effective_ago: 100, ..PLAIN },
            Shape { expires_in: Some(2000), category: "promotional", effective_ago: 500, ..PLAIN },
            0,
        ).await;
    }

    async fn among_equal_priorities_and_expiries_promotional_goes_before_paid(app) {
        assert_burns_first(&app, "promotional created second", Shape { category: "paid", ..PLAIN }, Shape { category: "promotional", ..PLAIN }, 1).await;
        assert_burns_first(&app, "promotional created first", Shape { category: "promotional", ..PLAIN }, Shape { category: "paid", ..PLAIN }, 0).await;
        assert_burns_first(
            &app,
            "promotional with an expiry too",
            Shape { category: "paid", expires_in: Some(5000), ..PLAIN },
            Shape { category: "promotional", expires_in: Some(5000), ..PLAIN },
            1,
        ).await;
        assert_burns_first(
            &app,
            "category outranks effective_at",
            Shape { category: "promotional", effective_ago: 100, ..PLAIN },
            Shape { category: "paid", effective_ago: 500, ..PLAIN },
            0,
        ).await;
    }

    async fn among_otherwise_equal_grants_the_earliest_effective_goes_first(app) {
        assert_burns_first(&app, "earlier effective created second", Shape { effective_ago: 100, ..PLAIN }, Shape { effective_ago: 500, ..PLAIN }, 1).await;
        assert_burns_first(&app, "earlier effective created first", Shape { effective_ago: 500, ..PLAIN }, Shape { effective_ago: 100, ..PLAIN }, 0).await;
        assert_burns_first(
            &app,
            "earlier effective, both promotional and expiring",
            Shape { effective_ago: 100, category: "promotional", expires_in: Some(3000), priority: Some(7) },
            Shape { effective_ago: 101, category: "promotional", expires_in: Some(3000), priority: Some(7) },
            1,
        ).await;
    }

    async fn among_identical_grants_the_first_created_goes_first(app) {
        assert_burns_first(&app, "identical grants", PLAIN, PLAIN, 0).await;
        assert_burns_first(
            &app,
            "identical promotional expiring grants",
            Shape { priority: Some(3), expires_in: Some(3000), category: "promotional", effective_ago: 10 },
            Shape { priority: Some(3), expires_in: Some(3000), category: "promotional", effective_ago: 10 },
            0,
        ).await;

        // Three identical grants drain in the order they were made.
        let mut credits = Credits::new(&app).await;
        let customer = credits.customer().await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(credits.grant(shaped_grant(&customer, app.now(), PLAIN)).await.id);
        }
        let invoice = invoice_id("three");
        let response = credits.apply(metered_line(&customer, USD, &invoice, "il_1", 2500)).await;
        assert_eq!(
            entries_of(&response.entries),
            vec![
                entry(&ids[0], "credits_applied", 1000, Some((&invoice, "il_1"))),
                entry(&ids[1], "credits_applied", 1000, Some((&invoice, "il_1"))),
                entry(&ids[2], "credits_applied", 500, Some((&invoice, "il_1"))),
            ]
        );
    }

    async fn only_grants_in_the_currency_effective_unexpired_unvoided_and_in_scope_pay_a_line(app) {
        let mut credits = Credits::new(&app).await;
        let customer = credits.customer().await;
        let now = app.now();
        // Every ineligible grant has the highest priority: if it were used it would go first.
        let euros = credits.grant(proto::CreateCreditGrantRequest { priority: Some(0), ..metered_grant(&customer, "eur", 1000) }).await.id;
        let future = credits.grant(proto::CreateCreditGrantRequest { priority: Some(0), effective_at: Some(now + 1000), ..metered_grant(&customer, USD, 1000) }).await.id;
        let expiring = credits.grant(proto::CreateCreditGrantRequest { priority: Some(0), effective_at: Some(now - 100), expires_at: Some(now + 10), ..metered_grant(&customer, USD, 1000) }).await.id;
        let voided = credits.grant(proto::CreateCreditGrantRequest { priority: Some(0), ..metered_grant(&customer, USD, 1000) }).await.id;
        let other_price = credits.grant(proto::CreateCreditGrantRequest { priority: Some(0), applicability_config: applicability(prices_scope(&["price_other"])), ..metered_grant(&customer, USD, 1000) }).await.id;
        let matching_price = credits.grant(proto::CreateCreditGrantRequest { priority: Some(10), applicability_config: applicability(prices_scope(&["price_match", "price_extra"])), ..metered_grant(&customer, USD, 400) }).await.id;
        let metered = credits.grant(proto::CreateCreditGrantRequest { priority: Some(90), ..metered_grant(&customer, USD, 5000) }).await.id;
        let voided_grant = credits.void(&voided).await.expect("void");
        assert_eq!(voided_grant.voided_at, Some(now));
        app.advance(20);

        // The future grant is not in the ledger yet; the expired one is until the sweeper runs,
        // but is no longer available. The voided one is in neither.
        assert_eq!(credits.metered_balance(&customer).await, (6000, 5000));
        assert_eq!(credits.grant_balance(&customer, &expiring, USD).await, (1000, 0));
        assert_eq!(credits.grant_balance(&customer, &voided, USD).await, (0, 0));
        assert_eq!(credits.grant_balance(&customer, &future, USD).await, (0, 0));
        let euro_summary = credits.summary(&customer, scope_filter(metered_scope())).await;
        assert_eq!(grpc_ledger_and_available(&euro_summary, "eur"), (1000, 1000));

        let invoice = invoice_id("eligible");
        let line = |price: &str, amount_due: i64, line: &str| proto::ApplyCreditsRequest {
            price: Some(price.to_string()),
            ..metered_line(&customer, USD, &invoice, line, amount_due)
        };
        let first = credits.apply(line("price_match", 1000, "il_match")).await;
        assert_eq!(
            entries_of(&first.entries),
            vec![
                entry(&matching_price, "credits_applied", 400, Some((&invoice, "il_match"))),
                entry(&metered, "credits_applied", 600, Some((&invoice, "il_match"))),
            ],
            "the other price's grant, the euros, the future, expired and voided grants are skipped"
        );

        let other = credits.apply(line("price_other", 700, "il_other")).await;
        assert_eq!(
            entries_of(&other.entries),
            vec![entry(&other_price, "credits_applied", 700, Some((&invoice, "il_other")))],
            "a grant scoped to a price pays for that price"
        );

        let licensed = credits.apply(proto::ApplyCreditsRequest {
            price_type: Some("licensed".to_string()),
            price: Some("price_unrelated".to_string()),
            ..metered_line(&customer, USD, &invoice, "il_licensed", 300)
        }).await;
        assert_eq!((licensed.applied, licensed.remaining_amount_due), (0, 300), "metered grants do not pay licensed lines");
        assert!(licensed.entries.is_empty());

        let euro_line = credits.apply(proto::ApplyCreditsRequest { currency: "eur".to_string(), ..line("price_match", 250, "il_eur") }).await;
        assert_eq!(entries_of(&euro_line.entries), vec![entry(&euros, "credits_applied", 250, Some((&invoice, "il_eur")))]);
        assert_eq!(currency_of(&euro_line.entries[0]), "eur");

        // Once effective, the future grant (priority 0) goes first.
        app.advance(1000);
        let later = credits.apply(line("price_match", 100, "il_later")).await;
        assert_eq!(entries_of(&later.entries), vec![entry(&future, "credits_applied", 100, Some((&invoice, "il_later")))]);

        let applied_grants: HashSet<String> = entries_of(&credits.transactions(&customer, None).await)
            .into_iter()
            .filter(|entry| entry.kind == "credits_applied")
            .map(|entry| entry.grant)
            .collect();
        assert!(!applied_grants.contains(&expiring), "the expired grant was used");
        assert!(!applied_grants.contains(&voided), "the voided grant was used");
        assert_eq!(credits.grant_balance(&customer, &metered, USD).await, (4400, 4400));
        assert_eq!(credits.grant_balance(&customer, &future, USD).await, (900, 900));
        assert_eq!(credits.grant_balance(&customer, &euros, "eur").await, (750, 750));
    }

    async fn applying_the_same_invoice_line_again_returns_the_first_result_and_writes_nothing(app) {
        let mut credits = Credits::new(&app).await;
        let customer = credits.customer().await;
        let grant = credits.grant(metered_grant(&customer, USD, 1000)).await.id;
        let invoice = invoice_id("idem");

        let first = credits.apply(metered_line(&customer, USD, &invoice, "il_1", 300)).await;
        assert_eq!(entries_of(&first.entries), vec![entry(&grant, "credits_applied", 300, Some((&invoice, "il_1")))]);
        let written = credits.transactions(&customer, None).await;
        let again = credits.apply(metered_line(&customer, USD, &invoice, "il_1", 300)).await;
        assert_eq!(again, first, "the same line returns the first result");
        assert_eq!(credits.transactions(&customer, None).await, written, "and writes nothing");
        assert_eq!(credits.metered_balance(&customer).await, (700, 700));

        let second_line = credits.apply(metered_line(&customer, USD, &invoice, "il_2", 300)).await;
        assert_eq!(entries_of(&second_line.entries), vec![entry(&grant, "credits_applied", 300, Some((&invoice, "il_2")))]);
        assert_ne!(second_line.entries[0].id, first.entries[0].id);
        let other_invoice = invoice_id("idem");
        let same_line_other_invoice = credits.apply(metered_line(&customer, USD, &other_invoice, "il_1", 300)).await;
        assert_eq!(same_line_other_invoice.applied, 300, "a line is identified by invoice and line");
        assert_eq!(credits.metered_balance(&customer).await, (100, 100));

        // Still the first result, although only 100 is left now.
        assert_eq!(credits.apply(metered_line(&customer, USD, &invoice, "il_1", 300)).await, first);

        // Concurrent first applications of one line apply it once.
        let channel = app.channel().await;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let mut client = BalanceClient::new(channel.clone());
            let request = app.grpc(metered_line(&customer, USD, &invoice, "il_3", 60));
            tasks.push(tokio::spawn(async move { client.apply_credits(request).await.map(tonic::Response::into_inner) }));
        }
        let mut responses = Vec::new();
        for task in tasks {
            responses.push(task.await.expect("task").expect("apply"));
        }
        assert_eq!(responses[0].applied, 60);
        for response in &responses {
            assert_eq!(response, &responses[0], "every concurrent call sees the one application");
        }
        assert_eq!(credits.metered_balance(&customer).await, (40, 40));
        let applied_to_line = entries_of(&credits.transactions(&customer, None).await)
            .into_iter()
            .filter(|entry| entry.line == Some((invoice.clone(), "il_3".to_string())))
            .count();
        assert_eq!(applied_to_line, 1);
    }

    async fn reinstating_an_invoice_gives_its_credits_back_to_the_same_grants_once(app) {
        let mut credits = Credits::new(&app).await;
        let customer = credits.customer().await;
        let first = credits.grant(proto::CreateCreditGrantRequest { priority: Some(10), ..metered_grant(&customer, USD, 1000) }).await.id;
        let second = credits.grant(proto::CreateCreditGrantRequest { priority: Some(20), ..metered_grant(&customer, USD, 1000) }).await.id;
        let kept = invoice_id("kept");
        credits.apply(metered_line(&customer, USD, &kept, "il_1", 100)).await;
        let before = (
            credits.metered_balance(&customer).await,
            credits.grant_balance(&customer, &first, USD).await,
            credits.grant_balance(&customer, &second, USD).await,
        );
        assert_eq!(before, ((1900, 1900), (900, 900), (1000, 1000)));

        let voided = invoice_id("voided");
        credits.apply(metered_line(&customer, USD, &voided, "il_1", 1500)).await;
        credits.apply(metered_line(&customer, USD, &voided, "il_2", 300)).await;
        assert_eq!(credits.metered_balance(&customer).await, (100, 100));

        let reinstated = credits.reinstate(&customer, &voided).await;
        assert_eq!(reinstated.reinstated, 1800);
        assert_eq!(
            sorted(entries_of(&reinstated.entries)),
            sorted(vec![
                entry(&first, "credits_application_invoice_voided", 900, Some((&voided, "il_1"))),
                entry(&second, "credits_application_invoice_voided", 600, Some((&voided, "il_1"))),
                entry(&second, "credits_application_invoice_voided", 300, Some((&voided, "il_2"))),
            ]),
            "each application goes back to its own grant, naming its line"
        );
        for transaction in &reinstated.entries {
            assert_eq!(transaction.r#type, "credit");
        }
        let after = (
            credits.metered_balance(&customer).await,
            credits.grant_balance(&customer, &first, USD).await,
            credits.grant_balance(&customer, &second, USD).await,
        );
        assert_eq!(after, before, "back to where it was before the voided invoice");

        let ledger = credits.transactions(&customer, None).await;
        let listed: Vec<Entry> = entries_of(&ledger).into_iter().filter(|entry| entry.kind == "credits_application_invoice_voided").collect();
        assert_eq!(sorted(listed), sorted(entries_of(&reinstated.entries)));

        let twice = credits.reinstate(&customer, &voided).await;
        assert_eq!(twice.reinstated, 0, "{twice:?}");
        assert!(twice.entries.is_empty(), "{twice:?}");
        assert_eq!(credits.transactions(&customer, None).await, ledger, "reinstating twice writes nothing");
        assert_eq!(credits.metered_balance(&customer).await, (1900, 1900));

        // The reinstated credits are spent again in the usual order.
        let next = invoice_id("next");
        let response = credits.apply(metered_line(&customer, USD, &next, "il_1", 1000)).await;
        assert_eq!(
            entries_of(&response.entries),
            vec![
                entry(&first, "credits_applied", 900, Some((&next, "il_1"))),
                entry(&second, "credits_applied", 100, Some((&next, "il_1"))),
            ]
        );
        assert_eq!(credits.grant_entry_sum(&customer, &first).await, 0);
        assert_eq!(credits.grant_entry_sum(&customer, &second).await, 900);
    }

    async fn credits_reinstated_to_an_expired_grant_expire_again_at_once(app) {
        let mut credits = Credits::new(&app).await;
        let customer = credits.customer().await;
        let now = app.now();
        let expiring = credits.grant(proto::CreateCreditGrantRequest {
            priority: Some(10),
            effective_at: Some(now - 10),
            expires_at: Some(now + 100),
            ..metered_grant(&customer, USD, 1000)
        }).await.id;
        let lasting = credits.grant(proto::CreateCreditGrantRequest { priority: Some(20), ..metered_grant(&customer, USD, 1000) }).await.id;
        let invoice = invoice_id("expired");
        let applied = credits.apply(metered_line(&customer, USD, &invoice, "il_1", 600)).await;
        assert_eq!(entries_of(&applied.entries), vec![entry(&expiring, "credits_applied", 600, Some((&invoice, "il_1")))]);
        assert_eq!(credits.metered_balance(&customer).await, (1400, 1400));

        app.advance(200);
        let before = credits.metered_balance(&customer).await;
        assert_eq!(before, (1400, 1000), "the expired remainder is unavailable before the sweeper writes it off");

        let reinstated = credits.reinstate(&customer, &invoice).await;
        assert_eq!(reinstated.reinstated, 600);
        assert_eq!(
            sorted(entries_of(&reinstated.entries)),
            sorted(vec![
                entry(&expiring, "credits_application_invoice_voided", 600, Some((&invoice, "il_1"))),
                entry(&expiring, "credits_expired", 600, None),
            ])
        );
        let after = credits.metered_balance(&customer).await;
        assert_eq!(after.1, before.1, "the reinstatement makes nothing available");
        assert_eq!(after, (1400, 1000), "the unswept remainder is still in the ledger, and only it");
        assert_eq!(credits.grant_balance(&customer, &expiring, USD).await, (400, 0));

        let swept = app.services.sweep_expired_credit_grants().await.expect("sweep");
        assert_eq!(swept, 1, "one grant expired");
        assert_eq!(credits.metered_balance(&customer).await, (1000, 1000));
        assert_eq!(credits.grant_balance(&customer, &expiring, USD).await, (0, 0));
        let history = entries_of(&credits.transactions(&customer, Some(&expiring)).await);
        assert_eq!(
            sorted(history.clone()),
            sorted(vec![
                entry(&expiring, "credits_granted", 1000, None),
                entry(&expiring, "credits_applied", 600, Some((&invoice, "il_1"))),
                entry(&expiring, "credits_application_invoice_voided", 600, Some((&invoice, "il_1"))),
                entry(&expiring, "credits_expired", 600, None),
                entry(&expiring, "credits_expired", 400, None),
            ])
        );
        assert_eq!(history.iter().map(signed).sum::<i64>(), 0);
        let ledger = credits.transactions(&customer, None).await;
        assert_eq!(app.services.sweep_expired_credit_grants().await.expect("sweep"), 0);
        assert_eq!(credits.transactions(&customer, None).await, ledger, "sweeping again writes nothing");

        let next = invoice_id("next");
        let response = credits.apply(metered_line(&customer, USD, &next, "il_1", 500)).await;
        assert_eq!(entries_of(&response.entries), vec![entry(&lasting, "credits_applied", 500, Some((&next, "il_1")))]);
        assert_eq!(credits.grant_entry_sum(&customer, &lasting).await, 500);
    }

    async fn credits_given_back_after_the_sweeper_or_an_explicit_expire_expire_again_at_once(app) {
        let mut credits = Credits::new(&app).await;
        let now = app.now();

        // The sweeper has already written the grant off when the invoice is voided.
        let swept_customer = credits.customer().await;
        let swept = credits.grant(proto::CreateCreditGrantRequest {
            priority: Some(10),
            effective_at: Some(now - 10),
            expires_at: Some(now + 100),
            ..metered_grant(&swept_customer, USD, 1000)
        }).await.id;
        credits.grant(proto::CreateCreditGrantRequest { priority: Some(20), ..metered_grant(&swept_customer, USD, 5000) }).await;
        let swept_invoice = invoice_id("swept");
        credits.apply(metered_line(&swept_customer, USD, &swept_invoice, "il_1", 600)).await;
        app.advance(200);
        assert_eq!(app.services.sweep_expired_credit_grants().await.expect("sweep"), 1);
        assert_eq!(credits.metered_balance(&swept_customer).await, (5000, 5000));
        let reinstated = credits.reinstate(&swept_customer, &swept_invoice).await;
        assert_eq!(reinstated.reinstated, 600);
        assert_eq!(
            sorted(entries_of(&reinstated.entries)),
            sorted(vec![
                entry(&swept, "credits_application_invoice_voided", 600, Some((&swept_invoice, "il_1"))),
                entry(&swept, "credits_expired", 600, None),
            ])
        );
        assert_eq!(credits.metered_balance(&swept_customer).await, (5000, 5000));
        assert_eq!(credits.grant_entry_sum(&swept_customer, &swept).await, 0);

        // The grant was expired by hand, in the same second as the reinstatement.
        let expired_customer = credits.customer().await;
        let expired = credits.grant(proto::CreateCreditGrantRequest { priority: Some(10), ..metered_grant(&expired_customer, USD, 1000) }).await.id;
        let lasting = credits.grant(proto::CreateCreditGrantRequest { priority: Some(20), ..metered_grant(&expired_customer, USD, 5000) }).await.id;
        let expired_invoice = invoice_id("expire");
        credits.apply(metered_line(&expired_customer, USD, &expired_invoice, "il_1", 600)).await;
        credits.expire(&expired).await.expect("expire");
        let history = entries_of(&credits.transactions(&expired_customer, Some(&expired)).await);
        assert!(history.contains(&entry(&expired, "credits_expired", 400, None)), "{history:?}");
        assert_eq!(credits.metered_balance(&expired_customer).await, (5000, 5000));
        let reinstated = credits.reinstate(&expired_customer, &expired_invoice).await;
        assert_eq!(
            sorted(entries_of(&reinstated.entries)),
            sorted(vec![
                entry(&expired, "credits_application_invoice_voided", 600, Some((&expired_invoice, "il_1"))),
                entry(&expired, "credits_expired", 600, None),
            ])
        );
        assert_eq!(credits.metered_balance(&expired_customer).await, (5000, 5000));
        assert_eq!(credits.grant_entry_sum(&expired_customer, &expired).await, 0);
        assert_eq!(app.services.sweep_expired_credit_grants().await.expect("sweep"), 0, "nothing was left to sweep");
        let next = invoice_id("next");
        let response = credits.apply(metered_line(&expired_customer, USD, &next, "il_1", 100)).await;
        assert_eq!(entries_of(&response.entries), vec![entry(&lasting, "credits_applied", 100, Some((&next, "il_1")))]);
    }

    async fn a_grant_counts_from_its_effective_at_and_stops_at_its_expires_at(app) {
        let mut credits = Credits::new(&app).await;
        let customer = credits.customer().await;
        let now = app.now();
        let window = credits.grant(proto::CreateCreditGrantRequest {
            priority: Some(10),
            effective_at: Some(now + 50),
            expires_at: Some(now + 100),
            ..metered_grant(&customer, USD, 1000)
        }).await.id;
        let lasting = credits.grant(proto::CreateCreditGrantRequest { priority: Some(20), ..metered_grant(&customer, USD, 5000) }).await.id;
        let invoice = invoice_id("window");
        let pay = async |credits: &mut Credits<'_>, line: &str| -> Vec<Entry> {
            entries_of(&credits.apply(metered_line(&customer, USD, &invoice, line, 10)).await.entries)
        };

        app.advance(49);
        assert_eq!(pay(&mut credits, "il_49").await, vec![entry(&lasting, "credits_applied", 10, Some((&invoice, "il_49")))], "a second before effective_at");
        assert_eq!(credits.metered_balance(&customer).await, (4990, 4990), "not in the ledger before effective_at");
        app.advance(1);
        assert_eq!(pay(&mut credits, "il_50").await, vec![entry(&window, "credits_applied", 10, Some((&invoice, "il_50")))], "at effective_at");
        assert_eq!(credits.metered_balance(&customer).await, (5980, 5980));
        app.advance(49);
        assert_eq!(pay(&mut credits, "il_99").await, vec![entry(&window, "credits_applied", 10, Some((&invoice, "il_99")))], "a second before expires_at");
        app.advance(1);
        assert_eq!(pay(&mut credits, "il_100").await, vec![entry(&lasting, "credits_applied", 10, Some((&invoice, "il_100")))], "at expires_at");
        assert_eq!(credits.metered_balance(&customer).await, (5960, 4980), "expired at expires_at, not yet swept");

        // Nothing due: nothing applied, nothing written, and the line is still answered the same.
        let written = credits.transactions(&customer, None).await;
        let nothing = credits.apply(metered_line(&customer, USD, &invoice, "il_zero", 0)).await;
        assert_eq!((nothing.applied, nothing.remaining_amount_due), (0, 0));
        assert!(nothing.entries.is_empty());
        assert_eq!(credits.apply(metered_line(&customer, USD, &invoice, "il_zero", 0)).await, nothing);
        assert_eq!(credits.transactions(&customer, None).await, written);
    }

    async fn credits_reinstated_to_a_voided_grant_are_voided_again_at_once(app) {
        let mut credits = Credits::new(&app).await;
        let customer = credits.customer().await;
        let voided = credits.grant(proto::CreateCreditGrantRequest { priority: Some(10), ..metered_grant(&customer, USD, 1000) }).await.id;
        let lasting = credits.grant(proto::CreateCreditGrantRequest { priority: Some(20), ..metered_grant(&customer, USD, 1000) }).await.id;
        let invoice = invoice_id("void");
        credits.apply(metered_line(&customer, USD, &invoice, "il_1", 700)).await;
        credits.void(&voided).await.expect("void");
        assert_eq!(credits.metered_balance(&customer).await, (1000, 1000));

        let reinstated = credits.reinstate(&customer, &invoice).await;
        assert_eq!(
            sorted(entries_of(&reinstated.entries)),
            sorted(vec![
                entry(&voided, "credits_application_invoice_voided", 700, Some((&invoice, "il_1"))),
                entry(&voided, "credits_voided", 700, None),
            ])
        );
        assert_eq!(credits.metered_balance(&customer).await, (1000, 1000));
        assert_eq!(credits.grant_entry_sum(&customer, &voided).await, 0);
        let next = invoice_id("next");
        let response = credits.apply(metered_line(&customer, USD, &next, "il_1", 100)).await;
        assert_eq!(entries_of(&response.entries), vec![entry(&lasting, "credits_applied", 100, Some((&next, "il_1")))]);
    }

    async fn the_same_credit_scenario_over_rest_and_grpc_leaves_the_same_ledger(app) {
        let mut credits = Credits::new(&app).await;
        let now = app.now();
        // Three grants: promotional first, an expiring paid one, a price-scoped paid one.
        let scope_metered = "applicability_config[scope][price_type]=metered";
        let forms = [
            format!("category=promotional&priority=10&name=welcome&metadata[source]=signup&{scope_metered}"),
            format!("category=paid&priority=20&expires_at={}&{scope_metered}", now + 86_400),
            "priority=30&applicability_config[scope][prices][0][id]=price_a".to_string(),
        ];
        let values = [1000, 2000, 1500];

        let rest_customer = credits.customer().await;
        let mut rest_grants = Vec::new();
        for (form, value) in forms.iter().zip(values) {
            let grant = app.post("/v1/billing/credit_grants", &grant_form(&rest_customer, value, form)).await.ok();
            rest_grants.push(grant["id"].as_str().expect("grant id").to_string());
        }

        let grpc_customer = credits.customer().await;
        let requests = [
            proto::CreateCreditGrantRequest {
                category: Some("promotional".to_string()),
                priority: Some(10),
                name: Some("welcome".to_string()),
                metadata: [("source".to_string(), "signup".to_string())].into(),
                ..metered_grant(&grpc_customer, USD, values[0])
            },
            proto::CreateCreditGrantRequest {
                category: Some("paid".to_string()),
                priority: Some(20),
                expires_at: Some(now + 86_400),
                ..metered_grant(&grpc_customer, USD, values[1])
            },
            proto::CreateCreditGrantRequest {
                priority: Some(30),
                applicability_config: applicability(prices_scope(&["price_a"])),
                ..metered_grant(&grpc_customer, USD, values[2])
            },
        ];
        let mut grpc_grants = Vec::new();
        for request in requests {
            grpc_grants.push(credits.grant(request).await.id);
        }

        // The same steps for both: apply, void the first, apply, expire the second, apply.
        for (customer, grants, over_rest) in [(&rest_customer, &rest_grants, true), (&grpc_customer, &grpc_grants, false)] {
            let invoice = invoice_id(if over_rest { "rest" } else { "grpc" });
            let line = |line: &str, amount_due: i64| proto::ApplyCreditsRequest {
                price: Some("price_a".to_string()),
                ..metered_line(customer, USD, &invoice, line, amount_due)
            };
            let first = credits.apply(line("il_1", 600)).await;
            assert_eq!(entries_of(&first.entries), vec![entry(&grants[0], "credits_applied", 600, Some((&invoice, "il_1")))]);
            if over_rest {
                let voided = app.post(&format!("/v1/billing/credit_grants/{}/void", grants[0]), "").await.ok();
                assert_eq!(voided["voided_at"], now);
            } else {
                assert_eq!(credits.void(&grants[0]).await.expect("void").voided_at, Some(now));
            }
            let second = credits.apply(line("il_2", 900)).await;
            assert_eq!(entries_of(&second.entries), vec![entry(&grants[1], "credits_applied", 900, Some((&invoice, "il_2")))]);
            if over_rest {
                let expired = app.post(&format!("/v1/billing/credit_grants/{}/expire", grants[1]), "").await.ok();
                assert!(expired["expires_at"].as_i64().is_some_and(|at| at <= now), "{expired}");
            } else {
                let expired = credits.expire(&grants[1]).await.expect("expire");
                assert!(expired.expires_at.is_some_and(|at| at <= now), "{expired:?}");
            }
            let third = credits.apply(line("il_3", 200)).await;
            assert_eq!(entries_of(&third.entries), vec![entry(&grants[2], "credits_applied", 200, Some((&invoice, "il_3")))]);
        }

        // The ledgers, read over REST, are the same step for step…
        let rest_page = app.get(&format!("/v1/billing/credit_balance_transactions?customer={rest_customer}&limit=100")).await.ok();
        let grpc_page = app.get(&format!("/v1/billing/credit_balance_transactions?customer={grpc_customer}&limit=100")).await.ok();
        let rest_ledger_entries = rest_ledger(&rest_page, &rest_grants);
        assert_eq!(rest_ledger_entries, rest_ledger(&grpc_page, &grpc_grants));
        let kinds: Vec<(&str, i64, usize)> = rest_ledger_entries.iter().rev().map(|(_, kind, amount, _, position, _)| (kind.as_str(), *amount, *position)).collect();
        assert_eq!(
            kinds,
            vec![
                ("credits_granted", 1000, 0),
                ("credits_granted", 2000, 1),
                ("credits_granted", 1500, 2),
                ("credits_applied", 600, 0),
                ("credits_voided", 400, 0),
                ("credits_applied", 900, 1),
                ("credits_expired", 1100, 1),
                ("credits_applied", 200, 2),
            ],
            "oldest first"
        );

        // …and so are the summaries and the grants.
        let summary_queries = [
            "filter[type]=applicability_scope&filter[applicability_scope][price_type]=metered".to_string(),
            "filter[type]=applicability_scope&filter[applicability_scope][prices][0][id]=price_a".to_string(),
        ];
        let mut expected = vec![(0, 0), (1300, 1300)].into_iter();
        for query in &summary_queries {
            let rest = app.get(&format!("/v1/billing/credit_balance_summary?customer={rest_customer}&{query}")).await.ok();
            let grpc = app.get(&format!("/v1/billing/credit_balance_summary?customer={grpc_customer}&{query}")).await.ok();
            assert_eq!(rest["balances"], grpc["balances"], "{query}");
            let ledger = rest["balances"].as_array().expect("balances").iter()
                .find(|balance| balance["ledger_balance"]["monetary"]["currency"] == USD)
                .map_or((0, 0), |balance| (
                    balance["ledger_balance"]["monetary"]["value"].as_i64().expect("ledger"),
                    balance["available_balance"]["monetary"]["value"].as_i64().expect("available"),
                ));
            assert_eq!(ledger, expected.next().expect("expected balance"), "{query}: {rest}");
        }
        assert_eq!(credits.metered_balance(&rest_customer).await, credits.metered_balance(&grpc_customer).await);
        for position in 0..3 {
            let rest = app.get(&format!("/v1/billing/credit_balance_summary?customer={rest_customer}&filter[type]=credit_grant&filter[credit_grant]={}", rest_grants[position])).await.ok();
            let grpc = app.get(&format!("/v1/billing/credit_balance_summary?customer={grpc_customer}&filter[type]=credit_grant&filter[credit_grant]={}", grpc_grants[position])).await.ok();
            assert_eq!(rest["balances"], grpc["balances"], "grant {position}");
            assert_eq!(
                credits.grant_balance(&rest_customer, &rest_grants[position], USD).await,
                credits.grant_balance(&grpc_customer, &grpc_grants[position], USD).await,
                "grant {position} over gRPC"
            );
        }
        let rest_list = app.get(&format!("/v1/billing/credit_grants?customer={rest_customer}&limit=100")).await.ok();
        let grpc_list = app.get(&format!("/v1/billing/credit_grants?customer={grpc_customer}&limit=100")).await.ok();
        let comparable = |list: &Value, ids: &[String]| -> BTreeMap<usize, Value> {
            list["data"].as_array().expect("data").iter().map(|grant| {
                let id = grant["id"].as_str().expect("id");
                (ids.iter().position(|known| known == id).expect("known grant"), comparable_grant(grant))
            }).collect()
        };
        let rest_grant_views = comparable(&rest_list, &rest_grants);
        assert_eq!(rest_grant_views.len(), 3);
        assert_eq!(rest_grant_views, comparable(&grpc_list, &grpc_grants));
    }

    async fn bad_credit_requests_get_the_right_grpc_codes(app) {
        let mut credits = Credits::new(&app).await;
        let customer = credits.customer().await;
        let now = app.now();
        let mut grants = credits.grants.clone();
        let create = |request: proto::CreateCreditGrantRequest| {
            let request = app.grpc(request);
            let mut grants = grants.clone();
            async move { grants.create_credit_grant(request).await.map(tonic::Response::into_inner) }
        };

        assert_code(create(proto::CreateCreditGrantRequest { amount: None, ..metered_grant(&customer, USD, 1000) }).await, Code::InvalidArgument, "missing amount");
        assert_code(create(proto::CreateCreditGrantRequest { priority: Some(101), ..metered_grant(&customer, USD, 1000) }).await, Code::InvalidArgument, "priority 101");
        assert_code(create(proto::CreateCreditGrantRequest { priority: Some(-1), ..metered_grant(&customer, USD, 1000) }).await, Code::InvalidArgument, "priority -1");
        let both = proto::CreditScope { price_type: Some("metered".to_string()), prices: vec![proto::ApplicablePrice { id: "price_a".to_string() }] };
        assert_code(create(proto::CreateCreditGrantRequest { applicability_config: applicability(both), ..metered_grant(&customer, USD, 1000) }).await, Code::InvalidArgument, "both scopes");
        assert_code(create(proto::CreateCreditGrantRequest { applicability_config: None, ..metered_grant(&customer, USD, 1000) }).await, Code::InvalidArgument, "no scope");
        assert_code(create(metered_grant(&customer, USD, 0)).await, Code::InvalidArgument, "zero amount");
        assert_code(create(proto::CreateCreditGrantRequest { category: Some("gift".to_string()), ..metered_grant(&customer, USD, 1000) }).await, Code::InvalidArgument, "unknown category");
        assert_code(create(proto::CreateCreditGrantRequest { effective_at: Some(now), expires_at: Some(now), ..metered_grant(&customer, USD, 1000) }).await, Code::InvalidArgument, "expires_at not after effective_at");
        assert_code(create(proto::CreateCreditGrantRequest { name: Some("n".repeat(101)), ..metered_grant(&customer, USD, 1000) }).await, Code::InvalidArgument, "name of 101 characters");

        let unknown_customer = create(metered_grant("cus_doesnotexist", USD, 1000)).await.expect_err("unknown customer");
        assert!(matches!(unknown_customer.code(), Code::InvalidArgument | Code::NotFound), "{unknown_customer:?}");
        assert_eq!(reason(&unknown_customer).as_deref(), Some("resource_missing"), "{unknown_customer:?}");

        let missing = grants.get_credit_grant(app.grpc(proto::GetCreditGrantRequest { id: "credgr_test_doesnotexist".to_string() })).await;
        let missing = assert_code(missing, Code::NotFound, "unknown grant");
        assert_eq!(reason(&missing).as_deref(), Some("resource_missing"));
        assert_code(credits.expire("credgr_test_doesnotexist").await, Code::NotFound, "expire an unknown grant");
        assert_code(credits.void("credgr_test_doesnotexist").await, Code::NotFound, "void an unknown grant");
        let missing_transaction = credits.balance.get_credit_balance_transaction(app.grpc(proto::GetCreditBalanceTransactionRequest { id: "cbtxn_test_doesnotexist".to_string() })).await;
        assert_code(missing_transaction, Code::NotFound, "unknown credit balance transaction");

        let expired = credits.grant(metered_grant(&customer, USD, 1000)).await.id;
        credits.expire(&expired).await.expect("expire");
        assert_code(credits.expire(&expired).await, Code::FailedPrecondition, "expire twice");
        assert_code(credits.void(&expired).await, Code::FailedPrecondition, "void an expired grant");
        let voided = credits.grant(metered_grant(&customer, USD, 1000)).await.id;
        credits.void(&voided).await.expect("void");
        assert_code(credits.void(&voided).await, Code::FailedPrecondition, "void twice");
        assert_code(credits.expire(&voided).await, Code::FailedPrecondition, "expire a voided grant");

        let negative = credits.balance.apply_credits(app.grpc(metered_line(&customer, USD, &invoice_id("bad"), "il_1", -1))).await;
        assert_code(negative, Code::InvalidArgument, "negative amount_due");
        let no_filter = credits.balance.get_credit_balance_summary(app.grpc(proto::GetCreditBalanceSummaryRequest { customer: customer.clone(), filter: None, as_of: None })).await;
        assert_code(no_filter, Code::InvalidArgument, "summary without a filter");

        let unauthenticated = grants.create_credit_grant(tonic::Request::new(metered_grant(&customer, USD, 1000))).await;
        assert_code(unauthenticated, Code::Unauthenticated, "create without a key");
        let unauthenticated = credits.balance.apply_credits(tonic::Request::new(metered_line(&customer, USD, &invoice_id("bad"), "il_1", 10))).await;
        assert_code(unauthenticated, Code::Unauthenticated, "apply without a key");

        // Another account sees none of it.
        let stranger = app.new_key(false, false).await;
        let hidden = grants.get_credit_grant(common::grpc_request(proto::GetCreditGrantRequest { id: voided.clone() }, Some(&stranger), None)).await;
        assert_code(hidden, Code::NotFound, "another account's grant");
        assert_eq!(credits.transactions(&customer, None).await.len(), 4, "no failed request wrote anything");
    }
}
