//! Property test of the credit ledger's invariants through the real service and database (SQLite
//! and PostgreSQL): random histories of grants, credit holds (made for a metered or a priced
//! line with a random TTL, captured in full or in part against a new invoice line, released,
//! expired by the hold sweeper), applications and their retries, expiries, voids,
//! reinstatements, grant sweeps, expiry changes and clock advances, for a customer watched by a
//! `credit_balance_threshold` alert. After every step, against a model computed independently
//! from the grants, holds and entries the service lists:
//! - no overspend: each grant's remainder is the signed sum of its entries and within
//!   0..=amount; live holds reserve at most its remainder; applied (net of reinstatements) plus
//!   live holds is at most what was granted; applications, holds and captures take exactly
//!   what the model says can be spent (a hold is refused exactly when it cannot be covered);
//! - every stored running remainder (`grant_remaining_after`) is the prefix sum of its grant's
//!   entries in ledger order (`created`, then ID);
//! - the summary (over every grant, metered-scoped ones, and those covering a price) is
//!   available = ledger − held − lapsed-but-unswept, each term computed from the lists;
//! - the alert fires (`billing.alert.triggered`) and recovers (`creditd.alert.recovered`)
//!   exactly at the crossings of a brute-force replay of its balance, evaluated at every write
//!   that emits a ledger entry, grant or hold event for the customer, with that balance.
//!
//! After each history: the summary `as_of` random past moments equals a brute-force replay of
//! the entries recorded by then (holds left out; a grant lapsed but not yet swept by then out
//! of `available_balance`); as of each second the clock left, it equals what the live summary
//! said then, holds added back; the audit is clean; the alert's events are exactly the replay's
//! crossings, in order. `CREDITD_PROPTEST_CASES` sets the number of histories per database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use common::{Backend, TestApp};
use creditd::domain::MetadataUpdate;
use creditd::domain::alert::{AlertFields, AlertFilterFields, CreateAlert};
use creditd::domain::credit_application::{ApplyCredits, ApplyFields, ReinstateCredits};
use creditd::domain::credit_balance_transaction::{
    CreditBalanceTransaction, CreditTransactionFilter, EntryType,
};
use creditd::domain::credit_grant::{
    CreateCreditGrant, CreditGrant, GrantFields, Scope, SummaryFilter, SummaryQuery,
    UpdateCreditGrant, UpdateGrantFields,
};
use creditd::domain::credit_hold::{
    CaptureCreditHold, CreateCreditHold, CreditHold, HoldFields, HoldFilter, HoldStatus,
};
use creditd::domain::customer::{CreateCustomer, CustomerFields};
use creditd::domain::event::{Event, EventFilter, TypeFilter};
use creditd::domain::pagination::{ListRequest, Page};
use creditd::service::RequestContext;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Overrides the number of random histories per database (for long campaigns).
const CASES_ENV: &str = "CREDITD_PROPTEST_CASES";
const DEFAULT_CASES: u32 = 64;
/// A history has from 1 to `MAX_STEPS - 1` steps.
const MAX_STEPS: usize = 40;
const TRIGGERED: &str = "billing.alert.triggered";
const RECOVERED: &str = "creditd.alert.recovered";
/// The one price of price-scoped grants and priced lines.
const PRICE: &str = "price_a";

#[derive(Debug, Clone)]
enum Op {
    Grant {
        amount: i64,
        priority: i64,
        promotional: bool,
        starts_in: i64,
        lasts: Option<i64>,
        priced: bool,
    },
    Apply {
        amount_due: i64,
        invoice: u8,
        line: u8,
        priced: bool,
    },
    Advance(i64),
    Expire(usize),
    Void(usize),
    Reinstate(u8),
    Sweep,
    ChangeExpiry(usize, Option<i64>),
    /// A hold for a metered line (of `PRICE` when priced), for `ttl` seconds, of `amount`
    /// modulo a little more than the credits it could take (so most holds can be covered).
    Hold {
        amount: i64,
        priced: bool,
        ttl: i64,
    },
    /// Captures one of the holds made so far against a new line of `invoice` (so reinstating
    /// the invoice gives it back): all that is still reserved (`None`), or `amount` modulo
    /// what is reserved plus two (so sometimes one more than is reserved).
    Capture {
        hold: usize,
        invoice: u8,
        amount: Option<i64>,
    },
    Release(usize),
    SweepHolds,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1i64..1000, 0i64..=100, any::<bool>(), prop_oneof![3 => Just(0i64), 1 => 1i64..200], proptest::option::of(1i64..400), any::<bool>())
            .prop_map(|(amount, priority, promotional, starts_in, lasts, priced)| Op::Grant { amount, priority, promotional, starts_in, lasts, priced }),
        // The amount due is a function of the line, so applying a line again is a true retry.
        3 => (0u8..4, 0u8..3, any::<bool>()).prop_map(|(invoice, line, priced)| Op::Apply {
            amount_due: (i64::from(invoice) * 97 + i64::from(line) * 31) % 400 + 1,
            invoice,
            line,
            priced,
        }),
        3 => (1i64..150).prop_map(Op::Advance),
        1 => any::<usize>().prop_map(Op::Expire),
        1 => any::<usize>().prop_map(Op::Void),
        2 => (0u8..4).prop_map(Op::Reinstate),
        1 => Just(Op::Sweep),
        1 => (any::<usize>(), proptest::option::of(1i64..300)).prop_map(|(grant, lasts)| Op::ChangeExpiry(grant, lasts)),
        4 => (0i64..1000, any::<bool>(), 1i64..200).prop_map(|(amount, priced, ttl)| Op::Hold { amount, priced, ttl }),
        3 => (any::<usize>(), 0u8..4, proptest::option::of(0i64..1000)).prop_map(|(hold, invoice, amount)| Op::Capture { hold, invoice, amount }),
        2 => any::<usize>().prop_map(Op::Release),
        1 => Just(Op::SweepHolds),
    ]
}

/// Which grants a balance counts: a summary's filter, or an alert's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Every,
    Metered,
    Priced,
}

impl Filter {
    /// A metered-scoped grant covers every metered price, so every filter counts it; a
    /// price-scoped one counts unless only metered-scoped grants are asked for.
    fn counts(self, grant: &CreditGrant) -> bool {
        match (&grant.scope, self) {
            (Scope::Metered, _) | (_, Filter::Every) => true,
            (Scope::Prices(_), Filter::Metered) => false,
            (Scope::Prices(prices), Filter::Priced) => prices.iter().any(|price| price == PRICE),
        }
    }

    fn summary(self) -> SummaryFilter {
        match self {
            Filter::Every => SummaryFilter::AllGrants,
            Filter::Metered => SummaryFilter::ApplicabilityScope(Scope::Metered),
            Filter::Priced => SummaryFilter::ApplicabilityScope(Scope::Prices(vec![PRICE.into()])),
        }
    }

    fn alert_filter(self, customer: &str) -> AlertFilterFields {
        AlertFilterFields {
            kind: Some("customer".into()),
            customer: Some(customer.to_string()),
            scope_price_type: (self == Filter::Metered).then(|| "metered".to_string()),
            scope_prices: (self == Filter::Priced).then(|| vec![PRICE.to_string()]),
            has_scope: self != Filter::Every,
        }
    }
}

/// One random history: the alert's threshold and filter, the steps, and where to look back.
#[derive(Debug, Clone)]
struct History {
    threshold: i64,
    alert_filter: Filter,
    ops: Vec<Op>,
    /// Moments to read `as_of`: even ones anywhere in the history's time span, odd ones at
    /// or just before the time of a step.
    looks_back: Vec<u32>,
}

fn history() -> impl Strategy<Value = History> {
    (
        0i64..1200,
        prop_oneof![
            Just(Filter::Every),
            Just(Filter::Metered),
            Just(Filter::Priced)
        ],
        proptest::collection::vec(op(), 1..MAX_STEPS),
        proptest::collection::vec(any::<u32>(), 6),
    )
        .prop_map(|(threshold, alert_filter, ops, looks_back)| History {
            threshold,
            alert_filter,
            ops,
            looks_back,
        })
}

/// Any of the IDs made so far.
fn pick(ids: &[String], index: usize) -> Option<&String> {
    (!ids.is_empty()).then(|| &ids[index % ids.len()])
}

/// One of the holds made so far: three times in four a live one, when there is one.
fn pick_hold<'a>(holds: &'a [String], state: &Snapshot, index: usize) -> Option<&'a String> {
    let live: Vec<String> = holds
        .iter()
        .filter(|id| state.hold(id).is_some_and(|hold| state.live(hold)))
        .cloned()
        .collect();
    if index.is_multiple_of(4) || live.is_empty() {
        return pick(holds, index / 4);
    }
    let chosen = &live[(index / 4) % live.len()];
    holds.iter().find(|id| *id == chosen)
}

/// A balance's terms, computed from the lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Balance {
    /// Remainders of the counted grants that are effective and not voided.
    ledger: i64,
    /// What live holds reserve on those of them that are alive.
    held: i64,
    /// Remainders of those past their expiry whose `credits_expired` is not recorded yet.
    lapsed: i64,
}

impl Balance {
    fn available(self) -> i64 {
        self.ledger - self.held - self.lapsed
    }
}

/// The customer's grants, holds and entries as listed after a step, at `now`.
struct Snapshot {
    now: i64,
    grants: Vec<CreditGrant>,
    holds: Vec<CreditHold>,
    entries: Vec<CreditBalanceTransaction>,
}

impl Snapshot {
    fn grant(&self, id: &str) -> Option<&CreditGrant> {
        self.grants.iter().find(|grant| grant.id == id)
    }

    fn hold(&self, id: &str) -> Option<&CreditHold> {
        self.holds.iter().find(|hold| hold.id == id)
    }

    /// Voided, or past its expiry (recorded or not): it can neither pay nor be held.
    fn dead(&self, grant: &CreditGrant) -> bool {
        grant.voided_at.is_some() || grant.expires_at.is_some_and(|at| at <= self.now)
    }

    /// Needs a `credits_expired` entry the sweeper has not written yet.
    fn lapsed(&self, grant: &CreditGrant) -> bool {
        grant.voided_at.is_none()
            && grant.expiry_recorded_at.is_none()
            && grant.expires_at.is_some_and(|at| at <= self.now)
    }

    /// Active and before its expiry.
    fn live(&self, hold: &CreditHold) -> bool {
        hold.status == HoldStatus::Active && self.now < hold.expires_at
    }

    /// What live holds reserve on each grant that is alive.
    fn held(&self) -> BTreeMap<&str, i64> {
        let mut held = BTreeMap::new();
        for hold in self.holds.iter().filter(|hold| self.live(hold)) {
            for reservation in &hold.reservations {
                let grant = self.grant(&reservation.credit_grant);
                if grant.is_some_and(|grant| !self.dead(grant)) {
                    *held.entry(reservation.credit_grant.as_str()).or_insert(0) +=
                        reservation.amount;
                }
            }
        }
        held
    }

    /// What a live hold still reserves: its reservations on grants that are alive (the rest
    /// lapsed with their grants).
    fn still_reserved(&self, hold: &CreditHold) -> i64 {
        hold.reservations
            .iter()
            .filter(|r| self.grant(&r.credit_grant).is_some_and(|g| !self.dead(g)))
            .map(|r| r.amount)
            .sum()
    }

    /// The balance over the grants `filter` counts, now.
    fn balance(&self, filter: Filter) -> Balance {
        let held = self.held();
        let mut balance = Balance::default();
        for grant in self.grants.iter().filter(|grant| filter.counts(grant)) {
            if grant.effective_at > self.now || grant.voided_at.is_some() {
                continue;
            }
            balance.ledger += grant.remaining;
            if self.lapsed(grant) {
                balance.lapsed += grant.remaining;
            } else {
                balance.held += held.get(grant.id.as_str()).copied().unwrap_or(0);
            }
        }
        balance
    }

    /// Whether a grant can pay for a metered line (of `PRICE` when `priced`) now, its
    /// remainder aside.
    fn can_pay(&self, grant: &CreditGrant, priced: bool) -> bool {
        let in_scope = match &grant.scope {
            Scope::Metered => true,
            Scope::Prices(prices) => priced && prices.iter().any(|price| price == PRICE),
        };
        in_scope && grant.effective_at <= self.now && !self.dead(grant)
    }

    /// What a metered line (of `PRICE` when `priced`) can take now: the remainders of the
    /// grants that can pay for it, less what live holds reserve on them.
    fn spendable(&self, priced: bool) -> i64 {
        let held = self.held();
        self.grants
            .iter()
            .filter(|grant| self.can_pay(grant, priced))
            .map(|grant| grant.remaining - held.get(grant.id.as_str()).copied().unwrap_or(0))
            .map(|left| left.max(0))
            .sum()
    }

    /// A grant's entries in ledger order: `created`, then ID.
    fn ledger_of(&self, grant: &str) -> Vec<&CreditBalanceTransaction> {
        let mut entries: Vec<_> = self
            .entries
            .iter()
            .filter(|entry| entry.credit_grant_id == grant)
            .collect();
        entries.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        entries
    }

    /// `(ledger, available)` as of `at` by brute force over the entries recorded by then,
    /// from the proto doc of `as_of` (recording time): a grant counts once created; in the
    /// ledger when effective and not voided by `at`, with the signed sum of its entries
    /// created by `at`; left out of `available` when lapsed-but-unswept at `at` (its current
    /// `expires_at` passed by then, its expiry not recorded by then). Holds are not history:
    /// they are left out.
    fn replay(&self, filter: Filter, at: i64) -> (i64, i64) {
        let (mut ledger, mut available) = (0, 0);
        for grant in self
            .grants
            .iter()
            .filter(|g| g.created <= at && filter.counts(g))
        {
            let voided = grant.voided_at.is_some_and(|voided| voided <= at);
            if grant.effective_at > at || voided {
                continue;
            }
            let remaining: i64 = self
                .entries
                .iter()
                .filter(|entry| entry.credit_grant_id == grant.id && entry.created <= at)
                .map(|entry| entry.kind.signed(entry.amount))
                .sum();
            let recorded = grant.expiry_recorded_at.is_some_and(|rec| rec <= at);
            let lapsed = !recorded && grant.expires_at.is_some_and(|expires| expires <= at);
            ledger += remaining;
            if !lapsed {
                available += remaining;
            }
        }
        (ledger, available)
    }
}

/// Every item of a list, page by page.
async fn every<T, F, Fut>(mut list: F, id: fn(&T) -> &str) -> Vec<T>
where
    F: FnMut(ListRequest) -> Fut,
    Fut: Future<Output = creditd::Result<Page<T>>>,
{
    let mut items = Vec::new();
    let mut request = ListRequest::parse(Some(100), None, None).unwrap();
    loop {
        let page = list(request).await.unwrap();
        let last = page.data.last().map(|item| id(item).to_string());
        items.extend(page.data);
        match (page.has_more, last) {
            (true, Some(last)) => {
                request = ListRequest::parse(Some(100), Some(last), None).unwrap();
            }
            _ => return items,
        }
    }
}

async fn observe(app: &TestApp, ctx: &RequestContext, customer: &str) -> Snapshot {
    let services = &app.services;
    let now = app.now();
    let grants = every(
        |request| async move {
            services
                .list_credit_grants(ctx, Some(customer), &request)
                .await
        },
        |grant: &CreditGrant| &grant.id,
    )
    .await;
    let holds_of = HoldFilter {
        customer_id: Some(customer.to_string()),
        status: None,
    };
    let holds_of = &holds_of;
    let holds = every(
        |request| async move { services.list_credit_holds(ctx, holds_of, &request).await },
        |hold: &CreditHold| &hold.id,
    )
    .await;
    let entries_of = CreditTransactionFilter {
        customer_id: customer.to_string(),
        credit_grant_id: None,
    };
    let entries_of = &entries_of;
    let entries = every(
        |request| async move {
            services
                .list_credit_balance_transactions(ctx, entries_of, &request)
                .await
        },
        |entry: &CreditBalanceTransaction| &entry.id,
    )
    .await;
    Snapshot {
        now,
        grants,
        holds,
        entries,
    }
}

/// No overspend, and every running remainder is the prefix sum of its grant's entries.
fn check_ledger(state: &Snapshot, at: &str) -> Result<(), TestCaseError> {
    let held = state.held();
    for grant in &state.grants {
        let id = &grant.id;
        let (mut sum, mut applied) = (0, 0);
        for entry in state.ledger_of(id) {
            prop_assert!(entry.amount > 0, "{at}: entry {} of {id}", entry.id);
            sum += entry.kind.signed(entry.amount);
            prop_assert_eq!(
                entry.grant_remaining_after,
                sum,
                "{}: running remainder of entry {} of grant {}",
                at,
                &entry.id,
                id
            );
            prop_assert!((0..=grant.amount).contains(&sum), "{at}: {id} at {sum}");
            match entry.kind {
                EntryType::CreditsApplied => applied += entry.amount,
                EntryType::CreditsApplicationInvoiceVoided => applied -= entry.amount,
                _ => {}
            }
        }
        prop_assert_eq!(sum, grant.remaining, "{}: grant {} entries", at, id);
        prop_assert!((0..=grant.amount).contains(&grant.remaining), "{at}: {id}");
        let on_hold = held.get(id.as_str()).copied().unwrap_or(0);
        prop_assert!(
            on_hold <= grant.remaining,
            "{at}: live holds reserve {on_hold} of grant {id}, which has {} left",
            grant.remaining
        );
        prop_assert!(
            applied >= 0 && applied + on_hold <= grant.amount,
            "{at}: grant {id} of {} has {applied} applied and {on_hold} held",
            grant.amount
        );
    }
    for hold in &state.holds {
        let id = &hold.id;
        for reservation in &hold.reservations {
            prop_assert!(reservation.amount > 0, "{at}: hold {id}");
            prop_assert!(
                state.grant(&reservation.credit_grant).is_some(),
                "{at}: hold {id} reserves on an unknown grant"
            );
        }
        if hold.status == HoldStatus::Active {
            prop_assert_eq!(
                hold.reserved() + hold.lapsed_amount,
                hold.amount,
                "{}: active hold {}",
                at,
                id
            );
            prop_assert!(hold.ended_at.is_none(), "{at}: hold {id}");
        } else {
            prop_assert!(hold.reservations.is_empty(), "{at}: ended hold {id}");
            prop_assert!(hold.ended_at.is_some(), "{at}: ended hold {id}");
            prop_assert!(
                hold.captured_amount + hold.lapsed_amount <= hold.amount,
                "{at}: hold {id}"
            );
        }
        if hold.status != HoldStatus::Captured {
            prop_assert_eq!(hold.captured_amount, 0, "{}: hold {}", at, id);
        }
    }
    Ok(())
}

/// `(ledger, available)` from the service's summary, now or as of a moment.
async fn summary(
    app: &TestApp,
    ctx: &RequestContext,
    customer: &str,
    filter: Filter,
    as_of: Option<i64>,
) -> (i64, i64) {
    let query = SummaryQuery::for_customer(customer, filter.summary())
        .unwrap()
        .at(as_of)
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

/// The tenant's events newer than `seen` (the newest one read so far), oldest first; moves
/// `seen` to the newest.
async fn events_since(
    app: &TestApp,
    ctx: &RequestContext,
    seen: &mut Option<String>,
) -> Vec<Event> {
    let mut fresh = Vec::new();
    let mut request = ListRequest::parse(Some(100), None, None).unwrap();
    'pages: loop {
        let page = app
            .services
            .list_events(ctx, &EventFilter::default(), &request)
            .await
            .unwrap();
        for event in page.data {
            if seen.as_ref() == Some(&event.id) {
                break 'pages;
            }
            fresh.push(event);
        }
        match (page.has_more, fresh.last()) {
            (true, Some(last)) => {
                request = ListRequest::parse(Some(100), Some(last.id.clone()), None).unwrap();
            }
            _ => break,
        }
    }
    fresh.reverse();
    if let Some(newest) = fresh.last() {
        *seen = Some(newest.id.clone());
    }
    fresh
}

/// The documented trigger of an alert evaluation: a ledger entry, grant or hold event.
fn may_move_balance(kind: &str) -> bool {
    kind == "billing.credit_balance_transaction.created"
        || kind.starts_with("billing.credit_grant.")
        || kind.starts_with("creditd.credit_hold.")
}

/// An alert event as (type, alert, balance).
fn crossing(event: &Event) -> Option<(String, String, i64)> {
    if event.kind != TRIGGERED && event.kind != RECOVERED {
        return None;
    }
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    let object = &data["object"];
    Some((
        event.kind.clone(),
        object["alert"]["id"].as_str().unwrap().to_string(),
        object["value"].as_i64().unwrap(),
    ))
}

/// A tenant of its own per history: its events and its audit are the history's alone.
async fn fresh_tenant(app: &TestApp) -> RequestContext {
    let key = app.new_key(false, false).await;
    let caller = app.services.authenticate(Some(&key)).await.unwrap();
    RequestContext::new(caller.tenant)
}

/// The code of a refusal, if the step was refused.
fn code_of<T>(result: &Result<T, creditd::Error>) -> Option<&'static str> {
    result.as_ref().err().and_then(|error| error.code)
}

async fn run(app: &TestApp, history: &History) -> Result<(), TestCaseError> {
    let services = &app.services;
    let ctx = &fresh_tenant(app).await;
    let start = app.now();
    let customer = services
        .create_customer(
            ctx,
            CreateCustomer::parse(CustomerFields::default(), None).unwrap(),
        )
        .await
        .unwrap()
        .id;
    let alert = services
        .create_alert(
            ctx,
            CreateAlert::parse(AlertFields {
                alert_type: Some("credit_balance_threshold".into()),
                title: Some("Low balance".into()),
                credit_balance_threshold: true,
                filters: vec![history.alert_filter.alert_filter(&customer)],
                balance_type: Some("monetary".into()),
                currency: Some("usd".into()),
                value: Some(history.threshold),
                ..AlertFields::default()
            })
            .unwrap(),
        )
        .await
        .unwrap();
    // Without grants the balance is 0, at or below any threshold: the alert starts below.
    prop_assert!(alert.below);
    let mut below = alert.below;
    let mut crossings: Vec<(String, String, i64)> = Vec::new();
    let mut seen = None;
    events_since(app, ctx, &mut seen).await;

    let mut state = observe(app, ctx, &customer).await;
    // (time, ledger, available with holds added back) after each step, over every grant.
    let mut checkpoints = vec![(state.now, 0, 0)];
    let mut grants: Vec<String> = Vec::new();
    let mut holds: Vec<String> = Vec::new();
    let mut applied_lines: BTreeSet<String> = BTreeSet::new();
    let mut captures = 0u32;
    for (step, op) in history.ops.iter().enumerate() {
        let at = format!("step {step} ({op:?})");
        let now = app.now();
        let before = &state;
        // Business-rule refusals (expiring an expired grant, …) are fine; anything internal is not.
        let refused_cleanly = |error: Option<&creditd::Error>| match error {
            Some(error) if error.kind == creditd::ErrorKind::Internal => {
                Err(TestCaseError::fail(format!("{at}: {error}")))
            }
            _ => Ok(()),
        };
        // Whether the step must have written a change for the customer (its events evaluate
        // the alert), must have written nothing at all, or may do either.
        let wrote: Option<bool> = match op {
            Op::Grant {
                amount,
                priority,
                promotional,
                starts_in,
                lasts,
                priced,
            } => {
                let fields = GrantFields {
                    customer: Some(customer.clone()),
                    amount_type: Some("monetary".into()),
                    currency: Some("usd".into()),
                    value: Some(*amount),
                    scope_price_type: (!priced).then(|| "metered".to_string()),
                    scope_prices: priced.then(|| vec![PRICE.to_string()]),
                    category: Some(if *promotional { "promotional" } else { "paid" }.into()),
                    priority: Some(*priority),
                    effective_at: Some(now + starts_in),
                    expires_at: lasts.map(|lasts| now + starts_in + lasts),
                    ..GrantFields::default()
                };
                let grant = services
                    .create_credit_grant(ctx, CreateCreditGrant::parse(fields).unwrap())
                    .await
                    .unwrap();
                prop_assert_eq!(grant.created, now, "{}", at);
                grants.push(grant.id);
                Some(true)
            }
            Op::Apply {
                amount_due,
                invoice,
                line,
                priced,
            } => {
                let line = format!("il_{customer}_{invoice}_{line}");
                let command = ApplyCredits::parse(ApplyFields {
                    customer: customer.clone(),
                    currency: "usd".into(),
                    invoice: format!("in_{customer}_{invoice}"),
                    invoice_line_item: line.clone(),
                    price_type: Some("metered".into()),
                    price: priced.then(|| PRICE.to_string()),
                    amount_due: *amount_due,
                })
                .unwrap();
                let result = services.apply_credits(ctx, command).await;
                // A retry of an applied line returns the first result (or is refused, with
                // other terms) and writes nothing.
                let fresh = !applied_lines.contains(&line);
                match &result {
                    Ok(application) => {
                        prop_assert_eq!(
                            application.entries.iter().map(|e| e.amount).sum::<i64>(),
                            application.applied,
                            "{}",
                            at
                        );
                        prop_assert!(application.applied <= application.amount_due, "{at}");
                        if fresh {
                            prop_assert_eq!(
                                application.applied,
                                (*amount_due).min(before.spendable(*priced)),
                                "{}: applied",
                                at
                            );
                        }
                    }
                    Err(error) => prop_assert!(!fresh, "{at}: a new line refused: {error}"),
                }
                refused_cleanly(result.as_ref().err())?;
                match &result {
                    Ok(application) if fresh => {
                        applied_lines.insert(line);
                        (application.applied > 0).then_some(true)
                    }
                    _ => Some(false),
                }
            }
            Op::Advance(seconds) => {
                app.advance(*seconds);
                Some(false)
            }
            Op::Expire(index) | Op::Void(index) => match pick(&grants, *index) {
                None => Some(false),
                Some(id) => {
                    let grant = before.grant(id).unwrap();
                    let usable = grant.voided_at.is_none()
                        && grant.expiry_recorded_at.is_none()
                        && !before.dead(grant);
                    let result = match op {
                        Op::Expire(_) => services.expire_credit_grant(ctx, id).await,
                        _ => services.void_credit_grant(ctx, id).await,
                    };
                    refused_cleanly(result.as_ref().err())?;
                    prop_assert_eq!(result.is_ok(), usable, "{}: {:?}", at, result.err());
                    Some(usable)
                }
            },
            Op::Reinstate(invoice) => {
                let result = services
                    .reinstate_invoice_credits(
                        ctx,
                        &ReinstateCredits::parse(
                            Some(customer.clone()),
                            Some(format!("in_{customer}_{invoice}")),
                        )
                        .unwrap(),
                    )
                    .await;
                refused_cleanly(result.as_ref().err())?;
                match result {
                    Ok(reinstatement) if reinstatement.entries.is_empty() => None,
                    Ok(_) => Some(true),
                    Err(_) => Some(false),
                }
            }
            Op::Sweep => {
                let due: Vec<&CreditGrant> = before
                    .grants
                    .iter()
                    .filter(|grant| before.lapsed(grant))
                    .collect();
                services.sweep_expired_credit_grants().await.unwrap();
                if due.is_empty() {
                    Some(false)
                } else {
                    due.iter().any(|grant| grant.remaining > 0).then_some(true)
                }
            }
            Op::ChangeExpiry(index, lasts) => match pick(&grants, *index) {
                None => Some(false),
                Some(id) => {
                    let update = UpdateCreditGrant::parse(UpdateGrantFields {
                        expires_at: lasts.map(|lasts| now + lasts),
                        clear_expires_at: lasts.is_none(),
                        metadata: MetadataUpdate::default(),
                    })
                    .unwrap();
                    let result = services.update_credit_grant(ctx, id, update).await;
                    refused_cleanly(result.as_ref().err())?;
                    result.is_err().then_some(false)
                }
            },
            Op::Hold {
                amount,
                priced,
                ttl,
            } => {
                let spendable = before.spendable(*priced);
                let amount = &(1 + amount % (spendable + spendable / 4 + 5));
                let result = services
                    .create_credit_hold(
                        ctx,
                        CreateCreditHold::parse(HoldFields {
                            customer: customer.clone(),
                            currency: "usd".into(),
                            amount: *amount,
                            price_type: Some("metered".into()),
                            price: priced.then(|| PRICE.to_string()),
                            ttl_seconds: Some(*ttl),
                            expires_at: None,
                        })
                        .unwrap(),
                    )
                    .await;
                // All or nothing: refused exactly when the spendable credits fall short.
                match result {
                    Ok(hold) => {
                        prop_assert!(spendable >= *amount, "{at}: only {spendable} to hold");
                        prop_assert_eq!(
                            (hold.amount, hold.reserved(), hold.status, hold.expires_at),
                            (*amount, *amount, HoldStatus::Active, now + ttl),
                            "{}",
                            at
                        );
                        for reservation in &hold.reservations {
                            let grant = before.grant(&reservation.credit_grant).unwrap();
                            prop_assert!(before.can_pay(grant, *priced), "{at}: {grant:?}");
                        }
                        holds.push(hold.id);
                        Some(true)
                    }
                    Err(error) => {
                        prop_assert_eq!(error.code, Some("insufficient_credits"), "{}", at);
                        prop_assert!(spendable < *amount, "{at}: {spendable} to hold");
                        Some(false)
                    }
                }
            }
            Op::Capture {
                hold,
                invoice,
                amount,
            } => match pick_hold(&holds, before, *hold) {
                None => Some(false),
                Some(id) => {
                    let hold = before.hold(id).unwrap();
                    let reserved = before.still_reserved(hold);
                    let amount = amount.map(|amount| amount % (reserved + 2));
                    captures += 1;
                    let capture = CaptureCreditHold::parse(
                        id.clone(),
                        format!("in_{customer}_{invoice}"),
                        format!("il_{customer}_{invoice}_held_{captures}"),
                        amount,
                    )
                    .unwrap();
                    let result = services.capture_credit_hold(ctx, capture).await;
                    let code = code_of(&result);
                    if !before.live(hold) {
                        prop_assert_eq!(code, Some("credit_hold_ended"), "{}", at);
                        Some(false)
                    } else if amount.is_some_and(|amount| amount > reserved) {
                        prop_assert_eq!(code, Some("amount_too_large"), "{}", at);
                        Some(false)
                    } else {
                        let captured =
                            result.map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                        let amount = amount.unwrap_or(reserved);
                        prop_assert_eq!(captured.hold.status, HoldStatus::Captured, "{}", at);
                        prop_assert_eq!(captured.hold.captured_amount, amount, "{}", at);
                        prop_assert_eq!(captured.application.applied, amount, "{}", at);
                        let mut drawn: BTreeMap<&str, i64> = BTreeMap::new();
                        for entry in &captured.application.entries {
                            *drawn.entry(entry.credit_grant_id.as_str()).or_insert(0) +=
                                entry.amount;
                        }
                        prop_assert_eq!(drawn.values().sum::<i64>(), amount, "{}", at);
                        for (grant, drawn) in drawn {
                            let reserved_on: i64 = hold
                                .reservations
                                .iter()
                                .filter(|r| r.credit_grant == grant)
                                .map(|r| r.amount)
                                .sum();
                            prop_assert!(drawn <= reserved_on, "{at}: {drawn} from {grant}");
                        }
                        Some(true)
                    }
                }
            },
            Op::Release(index) => match pick_hold(&holds, before, *index) {
                None => Some(false),
                Some(id) => {
                    let open = before.live(before.hold(id).unwrap());
                    let result = services.release_credit_hold(ctx, id).await;
                    if open {
                        let released =
                            result.map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                        prop_assert_eq!(released.status, HoldStatus::Released, "{}", at);
                    } else {
                        prop_assert_eq!(code_of(&result), Some("credit_hold_ended"), "{}", at);
                    }
                    Some(open)
                }
            },
            Op::SweepHolds => {
                let due = before
                    .holds
                    .iter()
                    .any(|hold| hold.status == HoldStatus::Active && hold.expires_at <= now);
                services.sweep_expired_credit_holds().await.unwrap();
                Some(due)
            }
        };

        let after = observe(app, ctx, &customer).await;
        check_ledger(&after, &at)?;
        for filter in [Filter::Every, Filter::Metered, Filter::Priced] {
            let expected = after.balance(filter);
            prop_assert_eq!(
                summary(app, ctx, &customer, filter, None).await,
                (expected.ledger, expected.available()),
                "{}: summary over {:?} grants, expected {:?}",
                &at,
                filter,
                expected
            );
        }
        match op {
            Op::Sweep => {
                let unswept = after.grants.iter().find(|grant| after.lapsed(grant));
                prop_assert!(unswept.is_none(), "{at}: not swept: {unswept:?}");
            }
            Op::SweepHolds => {
                let unswept = after
                    .holds
                    .iter()
                    .find(|hold| hold.status == HoldStatus::Active && hold.expires_at <= after.now);
                prop_assert!(unswept.is_none(), "{at}: not swept: {unswept:?}");
            }
            _ => {}
        }

        // The alert: evaluated by every write with a balance event for the customer, at the
        // balance then; it fires or recovers when that crosses the threshold.
        let fresh = events_since(app, ctx, &mut seen).await;
        let evaluated = fresh.iter().any(|event| {
            event.customer_id.as_deref() == Some(customer.as_str()) && may_move_balance(&event.kind)
        });
        match wrote {
            Some(true) => prop_assert!(evaluated, "{at}: no balance event"),
            Some(false) => prop_assert!(
                fresh.is_empty(),
                "{}: events without a change: {:?}",
                at,
                fresh.iter().map(|e| &e.kind).collect::<Vec<_>>()
            ),
            None => {}
        }
        let mut expected = Vec::new();
        if evaluated {
            let balance = after.balance(history.alert_filter).available();
            let now_below = balance <= history.threshold;
            if now_below != below {
                let kind = if now_below { TRIGGERED } else { RECOVERED };
                expected.push((kind.to_string(), alert.id.clone(), balance));
            }
            below = now_below;
        }
        let fired: Vec<_> = fresh.iter().filter_map(crossing).collect();
        prop_assert_eq!(&fired, &expected, "{}: alert crossings", at);
        crossings.extend(expected);

        let all_grants = after.balance(Filter::Every);
        checkpoints.push((
            after.now,
            all_grants.ledger,
            all_grants.ledger - all_grants.lapsed,
        ));
        state = after;
    }
    let end = app.now();

    // As of each second the clock left (the last step at that second), the summary is what
    // the live one said then, holds added back (an expiry can only be changed, or set by an
    // expiry, to a moment after it, so the current `expires_at` judges the past as it was).
    for (index, &(at, ledger, unheld)) in checkpoints.iter().enumerate() {
        let settled = checkpoints
            .get(index + 1)
            .is_none_or(|&(next, _, _)| next > at);
        if settled {
            prop_assert_eq!(
                summary(app, ctx, &customer, Filter::Every, Some(at)).await,
                (ledger, unheld),
                "as of {} (history {}..={})",
                at,
                start,
                end
            );
        }
    }
    // As of random past moments: the brute-force replay of the entries recorded by then.
    let span = end - start + 3;
    for look in &history.looks_back {
        let look = i64::from(*look);
        let at = if look % 2 == 0 {
            start - 2 + (look / 2) % span
        } else {
            let steps = i64::try_from(checkpoints.len()).unwrap();
            let (time, _, _) = checkpoints[usize::try_from((look / 2) % steps).unwrap()];
            time - (look / 2 / steps) % 2
        };
        for filter in [Filter::Priced, Filter::Metered] {
            prop_assert_eq!(
                summary(app, ctx, &customer, filter, Some(at)).await,
                state.replay(filter, at),
                "as of {} over {:?} grants (history {}..={})",
                at,
                filter,
                start,
                end
            );
        }
    }

    let audit = services.audit(ctx).await.unwrap();
    prop_assert!(audit.is_clean(), "audit: {:?}", audit.findings);

    // The alert's events, all together: exactly the replay's crossings, in order.
    let alert_events = EventFilter {
        types: TypeFilter::OneOf(vec![TRIGGERED.into(), RECOVERED.into()]),
        ..EventFilter::default()
    };
    let alert_events = &alert_events;
    let mut fired: Vec<_> = every(
        |request| async move { services.list_events(ctx, alert_events, &request).await },
        |event: &Event| &event.id,
    )
    .await
    .iter()
    .filter_map(crossing)
    .collect();
    fired.reverse();
    prop_assert_eq!(fired, crossings, "alert {}", alert.id);
    Ok(())
}

fn cases() -> u32 {
    std::env::var(CASES_ENV)
        .ok()
        .map(|raw| raw.parse().expect(CASES_ENV))
        .unwrap_or(DEFAULT_CASES)
}

fn check_backend(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(TestApp::spawn(backend));
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&history(), |history| runtime.block_on(run(&app, &history)));
    if let Err(failure) = result {
        panic!("{failure}");
    }
    drop(app);
}

#[test]
fn on_sqlite_random_credit_histories_never_overspend_and_match_a_replay_of_balances_and_alerts() {
    check_backend(Backend::Sqlite);
}

#[test]
fn on_postgresql_random_credit_histories_never_overspend_and_match_a_replay_of_balances_and_alerts()
{
    if !common::postgres_configured() {
        eprintln!(
            "skipped on PostgreSQL: {} is not set (SQLite only)",
            common::POSTGRES_URL_ENV
        );
        return;
    }
    check_backend(Backend::Postgres);
}
