//! Helpers for billing credits shared by the integration tests: creating grants, reading the
//! credit balance summary and listing credit balance transactions over REST and gRPC, the
//! ledger invariant, ApplyCredits requests, and the customer balance transaction paths.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use creditd::grpc::proto;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{Reply, TestApp};

pub type GrantClient = proto::credit_grant_service_client::CreditGrantServiceClient<Channel>;
pub type BalanceClient = proto::credit_balance_service_client::CreditBalanceServiceClient<Channel>;
pub type CustomerTransactionClient =
    proto::customer_balance_transaction_service_client::CustomerBalanceTransactionServiceClient<
        Channel,
    >;

pub const GRANTS: &str = "/v1/billing/credit_grants";
pub const TXNS: &str = "/v1/billing/credit_balance_transactions";
pub const SUMMARY: &str = "/v1/billing/credit_balance_summary";
/// The summary filter over every metered-scoped grant.
pub const METERED: &str =
    "filter[type]=applicability_scope&filter[applicability_scope][price_type]=metered";
/// The price of the metered lines [`metered_line`] applies credits to.
pub const METERED_PRICE: &str = "price_metered";

// ---------------------------------------------------------------------------------------------
// REST

pub fn id_of(object: &Value) -> String {
    object["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {object}"))
        .to_string()
}

pub fn ids_of(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(id_of)
        .collect()
}

/// A monetary credit amount as REST shows it.
pub fn money(currency: &str, value: i64) -> Value {
    json!({"type": "monetary", "monetary": {"currency": currency, "value": value}})
}

pub fn usd(value: i64) -> Value {
    money("usd", value)
}

/// The smallest valid body: a grant of `value` in `currency` for every metered price.
pub fn grant_body(customer: &str, currency: &str, value: i64) -> String {
    format!(
        "customer={customer}&amount[type]=monetary&amount[monetary][currency]={currency}\
         &amount[monetary][value]={value}&applicability_config[scope][price_type]=metered"
    )
}

/// [`grant_body`] in USD.
pub fn usd_grant_body(customer: &str, value: i64) -> String {
    grant_body(customer, "usd", value)
}

/// Creates a grant over REST and returns it.
pub async fn create_grant(app: &TestApp, body: &str) -> Value {
    app.post(GRANTS, body).await.ok()
}

/// Creates a grant over REST and returns its ID.
pub async fn grant(app: &TestApp, body: &str) -> String {
    id_of(&create_grant(app, body).await)
}

/// Every credit balance transaction of `customer` (optionally of one grant), newest first,
/// paging by 100.
pub async fn transactions(app: &TestApp, customer: &str, grant: Option<&str>) -> Vec<Value> {
    list_transactions(app, customer, grant, false).await
}

/// Like [`transactions`], and asserts that one page of 100 holds them all.
pub async fn transactions_in_one_page(
    app: &TestApp,
    customer: &str,
    grant: Option<&str>,
) -> Vec<Value> {
    list_transactions(app, customer, grant, true).await
}

async fn list_transactions(
    app: &TestApp,
    customer: &str,
    grant: Option<&str>,
    one_page: bool,
) -> Vec<Value> {
    let filter = grant.map_or(String::new(), |grant| format!("&credit_grant={grant}"));
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .get(&format!(
                "{TXNS}?customer={customer}{filter}&limit=100{cursor}"
            ))
            .await
            .ok();
        if one_page {
            assert_eq!(page["has_more"], false, "one page is enough here");
        }
        let data = page["data"].as_array().expect("data").clone();
        all.extend(data);
        if page["has_more"] != true {
            return all;
        }
        cursor = format!("&starting_after={}", id_of(all.last().expect("a page")));
    }
}

/// The effect of an entry on its grant's remainder: credits add, debits subtract.
#[track_caller]
pub fn signed_amount(entry: &Value) -> i64 {
    let (side, sign) = match entry["type"].as_str() {
        Some("credit") => ("credit", 1),
        Some("debit") => ("debit", -1),
        other => panic!("entry type {other:?}: {entry}"),
    };
    let other_side = if side == "credit" { "debit" } else { "credit" };
    assert_eq!(
        entry[other_side],
        Value::Null,
        "only one side is set: {entry}"
    );
    let value = entry[side]["amount"]["monetary"]["value"]
        .as_i64()
        .unwrap_or_else(|| panic!("no amount: {entry}"));
    assert!(value > 0, "amounts are always positive: {entry}");
    sign * value
}

/// The entry sub-types of a ledger, in list order (newest first).
pub fn kinds(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| {
            let side = entry["type"].as_str().expect("type");
            entry[side]["type"].as_str().expect("sub-type").to_string()
        })
        .collect()
}

/// `(available, ledger)` of one currency in a REST balance summary, or `None` when it has no
/// balance in that currency; panics when it has several.
#[track_caller]
pub fn find_balance(summary: &Value, currency: &str) -> Option<(i64, i64)> {
    let balances = summary["balances"].as_array().expect("balances");
    let matching: Vec<&Value> = balances
        .iter()
        .filter(|balance| balance["ledger_balance"]["monetary"]["currency"] == currency)
        .collect();
    let entry = match matching.as_slice() {
        [] => return None,
        [entry] => entry,
        _ => panic!("several {currency} balances in {summary}"),
    };
    assert_eq!(entry["available_balance"]["type"], "monetary", "{summary}");
    assert_eq!(entry["ledger_balance"]["type"], "monetary", "{summary}");
    assert_eq!(
        entry["available_balance"]["monetary"]["currency"], currency,
        "{summary}"
    );
    Some((
        entry["available_balance"]["monetary"]["value"]
            .as_i64()
            .expect("available"),
        entry["ledger_balance"]["monetary"]["value"]
            .as_i64()
            .expect("ledger"),
    ))
}

/// `(available, ledger)` of one currency in a REST balance summary; panics unless it has
/// exactly one balance in that currency.
#[track_caller]
pub fn balance_in(summary: &Value, currency: &str) -> (i64, i64) {
    find_balance(summary, currency)
        .unwrap_or_else(|| panic!("exactly one {currency} balance in {summary}"))
}

/// The REST balance summary of `customer` under `filter` (a query string).
pub async fn summary(app: &TestApp, customer: &str, filter: &str) -> Value {
    app.get(&format!("{SUMMARY}?customer={customer}&{filter}"))
        .await
        .ok()
}

/// The REST balance summary of one grant.
pub async fn grant_summary(app: &TestApp, customer: &str, grant: &str) -> Value {
    summary(
        app,
        customer,
        &format!("filter[type]=credit_grant&filter[credit_grant]={grant}"),
    )
    .await
}

/// `(available, ledger)` in USD over every metered-scoped grant of `customer`; panics when
/// there is no USD balance.
pub async fn metered_usd(app: &TestApp, customer: &str) -> (i64, i64) {
    balance_in(&summary(app, customer, METERED).await, "usd")
}

/// The ledger invariant: for every grant of `customer`, the signed sum of its entries equals
/// the ledger balance the summary reports for that grant while it is effective and not voided;
/// a voided grant's entries sum to zero (the remainder is written off) and count for nothing,
/// and a grant that is not effective yet counts for nothing either.
pub async fn assert_ledger_invariant(app: &TestApp, customer: &str) {
    let grants = app
        .get(&format!("{GRANTS}?customer={customer}&limit=100"))
        .await
        .ok();
    assert_eq!(
        grants["has_more"], false,
        "invariant check expects one page of grants"
    );
    for grant in grants["data"].as_array().expect("grants") {
        let id = id_of(grant);
        let currency = grant["amount"]["monetary"]["currency"]
            .as_str()
            .expect("currency");
        let amount = grant["amount"]["monetary"]["value"]
            .as_i64()
            .expect("value");
        let entries = transactions(app, customer, Some(&id)).await;
        for entry in &entries {
            assert_eq!(
                entry["credit_grant"],
                id.as_str(),
                "filtered by grant: {entry}"
            );
            let side = entry["type"].as_str().expect("type");
            assert_eq!(
                entry[side]["amount"]["monetary"]["currency"], currency,
                "{entry}"
            );
        }
        let sum: i64 = entries.iter().map(signed_amount).sum();
        assert!(
            (0..=amount).contains(&sum),
            "grant {id}: remainder {sum} outside 0..={amount}"
        );
        let (available, ledger) = balance_in(&grant_summary(app, customer, &id).await, currency);
        assert!(
            0 <= available && available <= ledger,
            "grant {id}: available {available}, ledger {ledger}"
        );
        let effective = grant["effective_at"].as_i64().expect("effective_at") <= app.now();
        if !grant["voided_at"].is_null() {
            assert_eq!(sum, 0, "grant {id}: a void writes off the whole remainder");
            assert_eq!(ledger, 0, "grant {id}: a voided grant counts for nothing");
        } else if effective {
            assert_eq!(
                ledger, sum,
                "grant {id}: ledger balance == signed sum of its entries"
            );
        } else {
            assert_eq!(ledger, 0, "grant {id}: not effective yet");
        }
    }
}

/// Applies `amount_due` of USD credits to a metered line (naming no price) over gRPC; there
/// is no public REST route for it.
pub async fn apply_credits(
    app: &TestApp,
    customer: &str,
    invoice: &str,
    line: &str,
    amount_due: i64,
) -> proto::ApplyCreditsResponse {
    BalanceClient::new(app.channel().await)
        .apply_credits(app.grpc(proto::ApplyCreditsRequest {
            price: None,
            ..metered_line(customer, "usd", invoice, line, amount_due)
        }))
        .await
        .expect("apply credits")
        .into_inner()
}

/// Runs the background expiry sweeper once, at the server's clock; returns how many grants it
/// expired.
pub async fn sweep(app: &TestApp) -> u64 {
    app.services
        .sweep_expired_credit_grants()
        .await
        .expect("expiry sweep")
}

/// A 400 `invalid_request_error` with a message, whatever its code (refusing an action on an
/// object's state, where the contract pins no code).
#[track_caller]
pub fn assert_refused(reply: &Reply) {
    assert_invalid_request(reply, 400);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        reply.body
    );
}

/// A 404 `resource_missing` (the param of a path ID is not pinned).
#[track_caller]
pub fn assert_not_found(reply: &Reply) {
    assert_invalid_request(reply, 404);
    assert_eq!(
        reply.body["error"]["code"], "resource_missing",
        "{}",
        reply.body
    );
}

#[track_caller]
fn assert_invalid_request(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "status; body: {}", reply.body);
    assert_eq!(
        reply.body["error"]["type"], "invalid_request_error",
        "{}",
        reply.body
    );
}

// ---------------------------------------------------------------------------------------------
// gRPC

/// Invoice IDs unique in the whole test binary, so no two scenarios share an invoice line.
pub fn invoice_id(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("in_{tag}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn monetary(currency: &str, value: i64) -> Option<proto::CreditAmount> {
    Some(proto::CreditAmount {
        r#type: "monetary".to_string(),
        monetary: Some(proto::MonetaryAmount {
            currency: currency.to_string(),
            value,
        }),
    })
}

pub fn metered_scope() -> proto::CreditScope {
    proto::CreditScope {
        price_type: Some("metered".to_string()),
        prices: Vec::new(),
    }
}

pub fn applicability(scope: proto::CreditScope) -> Option<proto::ApplicabilityConfig> {
    Some(proto::ApplicabilityConfig { scope: Some(scope) })
}

/// A paid, metered grant with every optional field left to its default.
pub fn metered_grant(
    customer: &str,
    currency: &str,
    value: i64,
) -> proto::CreateCreditGrantRequest {
    proto::CreateCreditGrantRequest {
        customer: customer.to_string(),
        amount: monetary(currency, value),
        applicability_config: applicability(metered_scope()),
        ..Default::default()
    }
}

/// A line with a metered price ([`METERED_PRICE`]) in `currency`.
pub fn metered_line(
    customer: &str,
    currency: &str,
    invoice: &str,
    line: &str,
    amount_due: i64,
) -> proto::ApplyCreditsRequest {
    proto::ApplyCreditsRequest {
        customer: customer.to_string(),
        currency: currency.to_string(),
        invoice: invoice.to_string(),
        invoice_line_item: line.to_string(),
        price_type: Some("metered".to_string()),
        price: Some(METERED_PRICE.to_string()),
        amount_due,
    }
}

pub fn scope_filter(scope: proto::CreditScope) -> proto::SummaryFilter {
    proto::SummaryFilter {
        r#type: "applicability_scope".to_string(),
        credit_grant: None,
        applicability_scope: Some(scope),
    }
}

pub fn metered_filter() -> proto::SummaryFilter {
    scope_filter(metered_scope())
}

pub fn grant_filter(grant: &str) -> proto::SummaryFilter {
    proto::SummaryFilter {
        r#type: "credit_grant".to_string(),
        credit_grant: Some(grant.to_string()),
        applicability_scope: None,
    }
}

/// `(ledger, available)` in `currency` of a gRPC summary; `(0, 0)` when it has no balance in
/// that currency. Panics when it has several, or one whose sides are not both monetary
/// amounts in that currency.
#[track_caller]
pub fn grpc_ledger_and_available(
    summary: &proto::CreditBalanceSummary,
    currency: &str,
) -> (i64, i64) {
    let monetary = |amount: &Option<proto::CreditAmount>| {
        amount
            .as_ref()
            .and_then(|amount| amount.monetary.as_ref())
            .filter(|monetary| monetary.currency == currency)
            .map(|monetary| monetary.value)
    };
    let matching: Vec<&proto::CreditBalance> = summary
        .balances
        .iter()
        .filter(|balance| {
            monetary(&balance.ledger_balance).is_some()
                || monetary(&balance.available_balance).is_some()
        })
        .collect();
    match matching.as_slice() {
        [] => (0, 0),
        [balance] => (
            monetary(&balance.ledger_balance)
                .unwrap_or_else(|| panic!("ledger in {currency}: {summary:?}")),
            monetary(&balance.available_balance)
                .unwrap_or_else(|| panic!("available in {currency}: {summary:?}")),
        ),
        _ => panic!("several {currency} balances in {summary:?}"),
    }
}

/// The gRPC balance summary of `customer` under `filter`.
pub async fn grpc_summary(
    balance: &mut BalanceClient,
    app: &TestApp,
    customer: &str,
    filter: proto::SummaryFilter,
) -> proto::CreditBalanceSummary {
    let summary = balance
        .get_credit_balance_summary(app.grpc(proto::GetCreditBalanceSummaryRequest {
            customer: customer.to_string(),
            filter: Some(filter),
            as_of: None,
        }))
        .await
        .expect("credit balance summary")
        .into_inner();
    assert_eq!(summary.object, "billing.credit_balance_summary");
    assert_eq!(summary.customer, customer);
    summary
}

/// Every credit balance transaction of `customer` (or of one grant) over gRPC, newest first,
/// paging by 100: no entry twice, and only the grant's when one is named.
pub async fn grpc_transactions(
    balance: &mut BalanceClient,
    app: &TestApp,
    customer: &str,
    credit_grant: Option<&str>,
) -> Vec<proto::CreditBalanceTransaction> {
    let mut all = Vec::new();
    let mut starting_after: Option<String> = None;
    loop {
        let page = balance
            .list_credit_balance_transactions(app.grpc(
                proto::ListCreditBalanceTransactionsRequest {
                    customer: customer.to_string(),
                    credit_grant: credit_grant.map(str::to_string),
                    page: Some(proto::PageRequest {
                        limit: Some(100),
                        starting_after: starting_after.clone(),
                        ending_before: None,
                    }),
                },
            ))
            .await
            .expect("list credit balance transactions")
            .into_inner();
        assert_eq!(page.object, "list");
        assert_eq!(page.url, TXNS);
        assert!(page.data.len() <= 100);
        starting_after = page.data.last().map(|transaction| transaction.id.clone());
        all.extend(page.data);
        if !page.has_more {
            break;
        }
        assert!(starting_after.is_some(), "has_more with an empty page");
    }
    let ids: BTreeSet<&str> = all
        .iter()
        .map(|transaction| transaction.id.as_str())
        .collect();
    assert_eq!(ids.len(), all.len(), "paging repeated an entry");
    if let Some(grant) = credit_grant {
        assert!(
            all.iter()
                .all(|transaction| transaction.credit_grant == grant)
        );
    }
    all
}

// ---------------------------------------------------------------------------------------------
// Customer balance transactions

/// The REST collection of a customer's balance transactions.
pub fn customer_transactions_path(customer: &str) -> String {
    format!("/v1/customers/{customer}/balance_transactions")
}

/// Creates a customer over REST with `key` (and no idempotency key); returns its ID.
pub async fn create_customer_as(app: &TestApp, key: &str, body: &str) -> String {
    id_of(
        &app.request(
            reqwest::Method::POST,
            "/v1/customers",
            Some(key),
            None,
            body,
        )
        .await
        .ok(),
    )
}

/// Creates a balance transaction of `customer` over REST with `key`; returns its ID.
pub async fn create_customer_transaction_as(
    app: &TestApp,
    key: &str,
    customer: &str,
    body: &str,
) -> String {
    id_of(
        &app.request(
            reqwest::Method::POST,
            &customer_transactions_path(customer),
            Some(key),
            None,
            body,
        )
        .await
        .ok(),
    )
}

/// The first page of a customer's balance transactions over gRPC.
pub async fn grpc_customer_transactions(
    client: &mut CustomerTransactionClient,
    app: &TestApp,
    customer: &str,
) -> proto::ListCustomerBalanceTransactionsResponse {
    client
        .list_customer_balance_transactions(app.grpc(
            proto::ListCustomerBalanceTransactionsRequest {
                customer: customer.to_string(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
}
