//! Test clocks over the Stripe REST shim and gRPC: the clock object and its errors, test mode
//! only, customers living at their clock's time (grants, credit entries and customer balance
//! transactions dated at the frozen time), advancing through effective dates and expiries in
//! time order while the real-time sweeper leaves clock grants alone, deleting a clock with
//! everything of its customers, the customer list's clock filter, attaching an existing
//! customer, idempotent advances, and the same lifecycle over gRPC.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::credits::{
    BalanceClient, GRANTS, GrantClient, METERED, TXNS, apply_credits, assert_not_found,
    assert_refused, create_grant, find_balance, grant_filter, grant_summary,
    grpc_ledger_and_available, id_of, ids_of, kinds, metered_filter, metered_grant, metered_line,
    monetary, money, summary, sweep, transactions_in_one_page, usd_grant_body,
};
use common::{Reply, TestApp};
use creditd::grpc::proto;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

const CLOCKS: &str = "/v1/test_helpers/test_clocks";
const CUSTOMERS: &str = "/v1/customers";
const DAY: i64 = 86_400;
const TWO_YEARS: i64 = 2 * 365 * DAY;

type ClockClient = proto::test_clock_service_client::TestClockServiceClient<Channel>;
/// A step of the gRPC lifecycle: the clock's time, an amount to apply, and the expected
/// `(available, ledger)` in total, of grant A and of grant B.
type Step = (i64, Option<i64>, (i64, i64), (i64, i64), (i64, i64));

// ---------------------------------------------------------------------------------------------
// REST helpers

fn clock_path(clock: &str) -> String {
    format!("{CLOCKS}/{clock}")
}

fn advance_path(clock: &str) -> String {
    format!("{CLOCKS}/{clock}/advance")
}

async fn send_as(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> Reply {
    app.request(method, path, Some(key), None, body).await
}

async fn delete(app: &TestApp, path: &str) -> Reply {
    app.request(reqwest::Method::DELETE, path, Some(&app.key), None, "")
        .await
}

/// Creates a clock over REST and returns it.
async fn create_clock(app: &TestApp, frozen_time: i64, extra: &str) -> Value {
    app.post(CLOCKS, &format!("frozen_time={frozen_time}{extra}"))
        .await
        .ok()
}

/// The clock as it should read once ready at `frozen_time`.
fn ready_at(clock: &Value, frozen_time: i64) -> Value {
    let mut expected = clock.clone();
    expected["frozen_time"] = json!(frozen_time);
    expected["status"] = json!("ready");
    expected["status_details"] = json!({});
    expected
}

/// Advances over REST and checks the answer: the same clock, ready, at `to`.
async fn advance(app: &TestApp, clock: &Value, to: i64) -> Value {
    let advanced = app
        .post(&advance_path(&id_of(clock)), &format!("frozen_time={to}"))
        .await
        .ok();
    assert_eq!(
        advanced,
        ready_at(clock, to),
        "the advance runs synchronously"
    );
    assert_eq!(
        app.get(&clock_path(&id_of(clock))).await.ok(),
        advanced,
        "retrieve after advance"
    );
    advanced
}

/// Creates a customer on `clock` and returns it.
async fn clock_customer(app: &TestApp, clock: &str, name: &str) -> Value {
    app.post(CUSTOMERS, &format!("name={name}&test_clock={clock}"))
        .await
        .ok()
}

/// `(available, ledger)` in USD of a summary; `(0, 0)` when there is no USD balance.
#[track_caller]
fn usd_in(summary: &Value) -> (i64, i64) {
    find_balance(summary, "usd").unwrap_or((0, 0))
}

/// `(available, ledger)` in USD over every metered grant of `customer`.
async fn metered_usd(app: &TestApp, customer: &str) -> (i64, i64) {
    usd_in(&summary(app, customer, METERED).await)
}

/// `(available, ledger)` in USD of one grant.
async fn grant_usd(app: &TestApp, customer: &str, grant: &str) -> (i64, i64) {
    usd_in(&grant_summary(app, customer, grant).await)
}

// ---------------------------------------------------------------------------------------------
// gRPC helpers

/// `(available, ledger)` in USD of a gRPC summary; `(0, 0)` without a USD balance.
async fn grpc_summary(
    app: &TestApp,
    balances: &mut BalanceClient,
    customer: &str,
    filter: proto::SummaryFilter,
) -> (i64, i64) {
    let summary = common::credits::grpc_summary(balances, app, customer, filter).await;
    let (ledger, available) = grpc_ledger_and_available(&summary, "usd");
    (available, ledger)
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{status:?}");
}

// ---------------------------------------------------------------------------------------------

on_every_backend! {
    async fn a_month_of_credit_life_runs_on_the_clock_not_on_the_server_time(app) {
        // The clock starts long before the server's time, so everything the test checks would
        // already be effective or expired if anything looked at the server's clock.
        let t0 = app.now() - 400 * DAY;
        let clock = create_clock(&app, t0, "&name=A%20month").await;
        let clock_id = id_of(&clock);
        assert!(clock_id.starts_with("clock_"), "{clock_id}");
        let created = clock["created"].as_i64().expect("created");
        assert_eq!(created, app.now(), "created at the server's time");
        assert_eq!(clock, json!({
            "id": clock_id,
            "object": "test_helpers.test_clock",
            "created": created,
            "deletes_after": created + 30 * DAY,
            "frozen_time": t0,
            "livemode": false,
            "name": "A month",
            "status": "ready",
            "status_details": {},
        }));
        assert_eq!(app.get(&clock_path(&clock_id)).await.ok(), clock);

        let customer = clock_customer(&app, &clock_id, "Ada").await;
        assert_eq!(customer["created"], t0, "a clock customer is created at the clock's time");
        assert_eq!(customer["test_clock"], clock_id.as_str());
        let customer = id_of(&customer);

        // A: 1000 effective now (the clock's now), expiring in 30 days.
        let a = create_grant(&app, &format!("{}&expires_at={}", usd_grant_body(&customer, 1000), t0 + 30 * DAY)).await;
        assert_eq!(a["effective_at"], t0, "effective_at defaults to the clock's time");
        assert_eq!(a["created"], t0);
        assert_eq!(a["updated"], t0);
        assert_eq!(a["expires_at"], t0 + 30 * DAY);
        assert_eq!(a["test_clock"], clock_id.as_str());
        let a = id_of(&a);
        // B: 500 effective in 10 days, never expiring.
        let b = create_grant(&app, &format!("{}&effective_at={}", usd_grant_body(&customer, 500), t0 + 10 * DAY)).await;
        assert_eq!(b["effective_at"], t0 + 10 * DAY);
        assert_eq!(b["created"], t0);
        assert_eq!(b["expires_at"], Value::Null);
        assert_eq!(b["test_clock"], clock_id.as_str());
        let b = id_of(&b);

        // T0: only A counts; B is in the clock's future (though in the server's past).
        assert_eq!(metered_usd(&app, &customer).await, (1000, 1000));
        assert_eq!(grant_usd(&app, &customer, &a).await, (1000, 1000));
        assert_eq!(grant_usd(&app, &customer, &b).await, (0, 0));
        let granted_a = transactions_in_one_page(&app, &customer, Some(&a)).await;
        assert_eq!(kinds(&granted_a), ["credits_granted"]);
        assert_eq!(granted_a[0]["credit"], json!({
            "amount": money("usd", 1000),
            "type": "credits_granted",
            "credits_application_invoice_voided": null,
        }));
        assert_eq!((granted_a[0]["created"].as_i64(), granted_a[0]["effective_at"].as_i64()), (Some(t0), Some(t0)));
        assert_eq!(granted_a[0]["test_clock"], clock_id.as_str());
        let granted_b = transactions_in_one_page(&app, &customer, Some(&b)).await;
        assert_eq!(kinds(&granted_b), ["credits_granted"]);
        assert_eq!(granted_b[0]["credit"]["amount"], money("usd", 500));
        assert_eq!((granted_b[0]["created"].as_i64(), granted_b[0]["effective_at"].as_i64()), (Some(t0), Some(t0 + 10 * DAY)));
        assert_eq!(granted_b[0]["test_clock"], clock_id.as_str());
        assert_eq!(transactions_in_one_page(&app, &customer, None).await.len(), 2);

        // T0+1d: apply 300; A (the expiring one) burns first, B is not effective yet.
        advance(&app, &clock, t0 + DAY).await;
        assert_eq!(metered_usd(&app, &customer).await, (1000, 1000));
        let applied = apply_credits(&app, &customer, "in_month", "il_in_month", 300).await;
        assert_eq!((applied.applied, applied.remaining_amount_due), (300, 0));
        assert_eq!(applied.entries.len(), 1, "{applied:?}");
        let entry = &applied.entries[0];
        assert_eq!(entry.credit_grant, a);
        assert_eq!(entry.r#type, "debit");
        assert_eq!((entry.created, entry.effective_at), (t0 + DAY, t0 + DAY), "applied at the clock's time");
        assert_eq!(entry.test_clock.as_deref(), Some(clock_id.as_str()));
        assert_eq!(metered_usd(&app, &customer).await, (700, 700));
        assert_eq!(grant_usd(&app, &customer, &a).await, (700, 700));
        let after_apply = transactions_in_one_page(&app, &customer, None).await;
        assert_eq!(kinds(&after_apply), ["credits_applied", "credits_granted", "credits_granted"]);
        assert_eq!(after_apply[0]["debit"], json!({
            "amount": money("usd", 300),
            "type": "credits_applied",
            "credits_applied": {"invoice": "in_month", "invoice_line_item": "il_in_month"},
        }));
        assert_eq!(after_apply[0]["test_clock"], clock_id.as_str());
        assert_eq!(after_apply[0]["created"], t0 + DAY);

        // The real-time sweeper runs at the server's time, long after A's expiry: it must leave
        // clock grants alone.
        assert_eq!(sweep(&app).await, 0, "the sweeper never touches clock grants");
        assert_eq!(transactions_in_one_page(&app, &customer, None).await, after_apply);
        assert_eq!(metered_usd(&app, &customer).await, (700, 700));

        // T0+11d: B has started to count; nothing was written.
        advance(&app, &clock, t0 + 11 * DAY).await;
        assert_eq!(metered_usd(&app, &customer).await, (1200, 1200));
        assert_eq!(grant_usd(&app, &customer, &a).await, (700, 700));
        assert_eq!(grant_usd(&app, &customer, &b).await, (500, 500));
        assert_eq!(transactions_in_one_page(&app, &customer, None).await, after_apply);
        assert_eq!(sweep(&app).await, 0);
        assert_eq!(metered_usd(&app, &customer).await, (1200, 1200));

        // T0+31d: A expired at T0+30d; its remainder is written off, dated at its expiry.
        advance(&app, &clock, t0 + 31 * DAY).await;
        assert_eq!(metered_usd(&app, &customer).await, (500, 500));
        assert_eq!(grant_usd(&app, &customer, &a).await, (0, 0));
        assert_eq!(grant_usd(&app, &customer, &b).await, (500, 500));
        let all = transactions_in_one_page(&app, &customer, None).await;
        assert_eq!(kinds(&all), ["credits_expired", "credits_applied", "credits_granted", "credits_granted"]);
        assert_eq!(all[1..], after_apply[..], "earlier entries are untouched");
        let expired = &all[0];
        assert_eq!(expired["type"], "debit");
        assert_eq!(expired["debit"], json!({"amount": money("usd", 700), "type": "credits_expired", "credits_applied": null}));
        assert_eq!(expired["credit"], Value::Null);
        assert_eq!(expired["credit_grant"], a.as_str());
        assert_eq!(expired["effective_at"], t0 + 30 * DAY, "dated at the expiry");
        assert_eq!(expired["created"], t0 + 30 * DAY, "created at the expiry, as if the clock had ticked through it");
        assert_eq!(expired["test_clock"], clock_id.as_str());
        assert_eq!(expired["livemode"], false);
        assert_eq!(&app.get(&format!("{TXNS}/{}", id_of(expired))).await.ok(), expired);
        let a_entries = transactions_in_one_page(&app, &customer, Some(&a)).await;
        assert_eq!(kinds(&a_entries), ["credits_expired", "credits_applied", "credits_granted"]);
        assert_eq!(kinds(&transactions_in_one_page(&app, &customer, Some(&b)).await), ["credits_granted"]);
        let a_now = app.get(&format!("{GRANTS}/{a}")).await.ok();
        assert_eq!(a_now["expires_at"], t0 + 30 * DAY, "the grant keeps its expiry");
        assert_eq!(a_now["voided_at"], Value::Null);

        // Nothing more is due: later advances and sweeps write nothing.
        assert_eq!(sweep(&app).await, 0);
        advance(&app, &clock, t0 + 60 * DAY).await;
        assert_eq!(transactions_in_one_page(&app, &customer, None).await, all);
        assert_eq!(metered_usd(&app, &customer).await, (500, 500));
        let late = apply_credits(&app, &customer, "in_late", "il_in_late", 600).await;
        assert_eq!((late.applied, late.remaining_amount_due), (500, 100));
        assert_eq!(late.entries.iter().map(|e| e.credit_grant.as_str()).collect::<Vec<_>>(), [b.as_str()]);
        assert_eq!(late.entries[0].created, t0 + 60 * DAY);
        assert_eq!(metered_usd(&app, &customer).await, (0, 0));
        assert_eq!(
            app.services.resume_advancing_test_clocks().await.expect("resume"),
            0,
            "no clock is left advancing"
        );
    }

    async fn one_advance_runs_every_expiry_it_passes_in_time_order(app) {
        let t0 = app.now() + 100 * DAY;
        let clock = create_clock(&app, t0, "").await;
        let clock_id = id_of(&clock);
        let customer = id_of(&clock_customer(&app, &clock_id, "Ada").await);
        let expiring = |value: i64, days: i64| format!("{}&expires_at={}", usd_grant_body(&customer, value), t0 + days * DAY);
        // Created in an order that differs from their expiry order.
        let x = id_of(&create_grant(&app, &expiring(100, 5)).await);
        let y = id_of(&create_grant(&app, &expiring(200, 3)).await);
        let z = id_of(&create_grant(&app, &expiring(300, 9)).await);
        let at_target = id_of(&create_grant(&app, &expiring(400, 10)).await);
        let just_after = id_of(&create_grant(&app, &expiring(500, 10)).await);
        // `just_after` expires one second after the target.
        let just_after_grant = app.post(&format!("{GRANTS}/{just_after}"), &format!("expires_at={}", t0 + 10 * DAY + 1)).await.ok();
        assert_eq!(just_after_grant["expires_at"], t0 + 10 * DAY + 1);
        assert_eq!(just_after_grant["updated"], t0, "updated at the clock's time");
        // Voided and manually expired grants happen at the clock's time and expire no more.
        let voided = id_of(&create_grant(&app, &expiring(600, 2)).await);
        let void = app.post(&format!("{GRANTS}/{voided}/void"), "").await.ok();
        assert_eq!(void["voided_at"], t0, "voided at the clock's time");
        let by_hand = id_of(&create_grant(&app, &expiring(700, 4)).await);
        let expired_by_hand = app.post(&format!("{GRANTS}/{by_hand}/expire"), "").await.ok();
        assert_eq!(expired_by_hand["expires_at"], t0, "expired at the clock's time");
        let by_hand_entries = transactions_in_one_page(&app, &customer, Some(&by_hand)).await;
        assert_eq!(kinds(&by_hand_entries), ["credits_expired", "credits_granted"]);
        assert_eq!((by_hand_entries[0]["created"].as_i64(), by_hand_entries[0]["effective_at"].as_i64()), (Some(t0), Some(t0)));
        assert_eq!(metered_usd(&app, &customer).await, (1500, 1500));
        let before = transactions_in_one_page(&app, &customer, None).await;

        advance(&app, &clock, t0 + 10 * DAY).await;
        let all = transactions_in_one_page(&app, &customer, None).await;
        let new = &all[..all.len() - before.len()];
        assert_eq!(&all[new.len()..], &before[..]);
        // Newest first: the last written is the latest expiry.
        let written: Vec<(String, i64, i64, i64)> = new.iter().map(|entry| (
            entry["credit_grant"].as_str().expect("grant").to_string(),
            entry["debit"]["amount"]["monetary"]["value"].as_i64().expect("amount"),
            entry["effective_at"].as_i64().expect("effective_at"),
            entry["created"].as_i64().expect("created"),
        )).collect();
        assert_eq!(written, [
            (at_target.clone(), 400, t0 + 10 * DAY, t0 + 10 * DAY),
            (z.clone(), 300, t0 + 9 * DAY, t0 + 9 * DAY),
            (x.clone(), 100, t0 + 5 * DAY, t0 + 5 * DAY),
            (y.clone(), 200, t0 + 3 * DAY, t0 + 3 * DAY),
        ], "one credits_expired per lapsed grant, in time order");
        assert_eq!(kinds(new), ["credits_expired"; 4]);
        assert_eq!(metered_usd(&app, &customer).await, (500, 500));
        assert_eq!(grant_usd(&app, &customer, &just_after).await, (500, 500));

        advance(&app, &clock, t0 + 10 * DAY + 1).await;
        let last = transactions_in_one_page(&app, &customer, Some(&just_after)).await;
        assert_eq!(kinds(&last), ["credits_expired", "credits_granted"]);
        assert_eq!(last[0]["effective_at"], t0 + 10 * DAY + 1);
        assert_eq!(metered_usd(&app, &customer).await, (0, 0));
        assert_eq!(transactions_in_one_page(&app, &customer, None).await.len(), all.len() + 1);
    }

    async fn a_grant_in_the_clocks_future_applies_only_once_the_clock_reaches_it(app) {
        // Both times are in the server's past: only the clock can keep the grant waiting.
        let t0 = app.now() - 100 * DAY;
        let starts = t0 + 10 * DAY;
        let clock = create_clock(&app, t0, "").await;
        let customer = id_of(&clock_customer(&app, &id_of(&clock), "Ada").await);
        let later = id_of(&create_grant(&app, &format!("{}&effective_at={starts}", usd_grant_body(&customer, 500))).await);
        assert_eq!(metered_usd(&app, &customer).await, (0, 0));
        let early = apply_credits(&app, &customer, "in_early", "il_in_early", 100).await;
        assert_eq!((early.applied, early.remaining_amount_due), (0, 100));
        assert!(early.entries.is_empty(), "{early:?}");

        advance(&app, &clock, starts - 1).await;
        assert_eq!(grant_usd(&app, &customer, &later).await, (0, 0), "one second early");
        assert_eq!(apply_credits(&app, &customer, "in_almost", "il_in_almost", 100).await.applied, 0);

        advance(&app, &clock, starts).await;
        assert_eq!(grant_usd(&app, &customer, &later).await, (500, 500), "effective_at <= the clock's time");
        let applied = apply_credits(&app, &customer, "in_now", "il_in_now", 100).await;
        assert_eq!((applied.applied, applied.remaining_amount_due), (100, 0));
        assert_eq!((applied.entries[0].created, applied.entries[0].effective_at), (starts, starts));
        assert_eq!(metered_usd(&app, &customer).await, (400, 400));
        assert_eq!(kinds(&transactions_in_one_page(&app, &customer, None).await), ["credits_applied", "credits_granted"]);
    }

    async fn bad_advances_fail_cleanly_and_leave_the_clock_alone(app) {
        let t0 = 1_700_000_000;
        let clock = create_clock(&app, t0, "").await;
        let id = id_of(&clock);
        assert_eq!(clock["name"], Value::Null);
        let path = advance_path(&id);
        for to in [t0 - 1, t0, t0 + TWO_YEARS + 1] {
            app.post(&path, &format!("frozen_time={to}")).await
                .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("frozen_time"));
        }
        app.post(&path, "").await
            .assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("frozen_time"));
        app.post(&path, "frozen_time=soon").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid_integer"), Some("frozen_time"));
        app.post(&path, &format!("frozen_time={}&speed=fast", t0 + 1)).await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("speed"));
        assert_eq!(app.get(&clock_path(&id)).await.ok(), clock, "unchanged by failed advances");

        // Exactly two years is allowed.
        let far = advance(&app, &clock, t0 + TWO_YEARS).await;
        assert_eq!(far["created"], clock["created"]);
        assert_eq!(far["deletes_after"], clock["deletes_after"]);

        // Unknown and deleted clocks are missing.
        assert_not_found(&app.get(&clock_path("clock_unknown")).await);
        assert_not_found(&app.post(&advance_path("clock_unknown"), &format!("frozen_time={}", t0 + 1)).await);
        assert_not_found(&delete(&app, &clock_path("clock_unknown")).await);
        let deleted = delete(&app, &clock_path(&id)).await.ok();
        assert_eq!(deleted, json!({"id": id, "object": "test_helpers.test_clock", "deleted": true}));
        assert_not_found(&app.get(&clock_path(&id)).await);
        assert_not_found(&app.post(&path, &format!("frozen_time={}", t0 + TWO_YEARS + 1)).await);
        assert_not_found(&delete(&app, &clock_path(&id)).await);
        assert_eq!(ids_of(&app.get(CLOCKS).await.ok()), Vec::<String>::new());
    }

    async fn clock_creation_checks_its_parameters_and_lists_newest_first(app) {
        app.post(CLOCKS, "name=No%20time").await
            .assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("frozen_time"));
        app.post(CLOCKS, "frozen_time=-1").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("frozen_time"));
        app.post(CLOCKS, "frozen_time=yesterday").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid_integer"), Some("frozen_time"));
        let too_long = "n".repeat(301);
        let reply = app.post(CLOCKS, &format!("frozen_time=1000&name={too_long}")).await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.body["error"]["param"], "name", "{}", reply.body);
        app.post(CLOCKS, "frozen_time=1000&customer=cus_test_missing").await
            .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("customer"));
        app.post(CLOCKS, "frozen_time=1000&color=red").await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("color"));
        assert_eq!(ids_of(&app.get(CLOCKS).await.ok()), Vec::<String>::new(), "failed creates leave nothing");

        let longest = create_clock(&app, 1000, &format!("&name={}", "n".repeat(300))).await;
        assert_eq!(longest["name"].as_str().map(str::len), Some(300));
        let second = create_clock(&app, 2000, "&name=Second").await;
        let third = create_clock(&app, 3000, "").await;
        let list = app.get(CLOCKS).await.ok();
        assert_eq!(list["object"], "list");
        assert_eq!(list["url"], CLOCKS);
        assert_eq!(list["has_more"], false);
        assert_eq!(list["data"], json!([third, second, longest]), "newest first");
        let page = app.get(&format!("{CLOCKS}?limit=2")).await.ok();
        assert_eq!(ids_of(&page), [id_of(&third), id_of(&second)]);
        assert_eq!(page["has_more"], true);
        let rest = app.get(&format!("{CLOCKS}?limit=2&starting_after={}", id_of(&second))).await.ok();
        assert_eq!(ids_of(&rest), [id_of(&longest)]);
        assert_eq!(rest["has_more"], false);
    }

    async fn live_mode_keys_cannot_use_clocks(app) {
        let live = app.new_key(true, true).await;
        let clock = create_clock(&app, 1_700_000_000, "").await;
        let id = id_of(&clock);
        assert_refused(&send_as(&app, &live, reqwest::Method::POST, CLOCKS, "frozen_time=1700000000").await);
        assert_refused(&send_as(&app, &live, reqwest::Method::GET, CLOCKS, "").await);
        assert_refused(&send_as(&app, &live, reqwest::Method::GET, &clock_path(&id), "").await);
        assert_refused(&send_as(&app, &live, reqwest::Method::POST, &advance_path(&id), "frozen_time=1700000001").await);
        assert_refused(&send_as(&app, &live, reqwest::Method::DELETE, &clock_path(&id), "").await);
        let customer = app.request(reqwest::Method::POST, CUSTOMERS, Some(&live), None, &format!("name=Live&test_clock={id}")).await;
        assert_refused(&customer);
        let live_customers = app.get_as(Some(&live), CUSTOMERS).await.ok();
        assert_eq!(ids_of(&live_customers), Vec::<String>::new(), "no live customer was made");

        // Another account's test key does not see the clock at all.
        let stranger = app.new_key(false, false).await;
        let reply = app.get_as(Some(&stranger), &clock_path(&id)).await;
        assert_not_found(&reply);
        assert_not_found(&app.request(reqwest::Method::POST, &advance_path(&id), Some(&stranger), None, "frozen_time=1700000001").await);
        assert_not_found(&app.request(reqwest::Method::DELETE, &clock_path(&id), Some(&stranger), None, "").await);
        assert_eq!(ids_of(&app.get_as(Some(&stranger), CLOCKS).await.ok()), Vec::<String>::new());
        app.request(reqwest::Method::POST, CUSTOMERS, Some(&stranger), None, &format!("name=Eve&test_clock={id}")).await
            .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("test_clock"));

        // Over gRPC too.
        let mut clocks = ClockClient::new(app.channel().await);
        assert_code(clocks.create_test_clock(common::grpc_request(proto::CreateTestClockRequest {
            frozen_time: 1_700_000_000,
            ..Default::default()
        }, Some(&live), None)).await, Code::FailedPrecondition);
        assert_code(clocks.list_test_clocks(common::grpc_request(proto::ListTestClocksRequest::default(), Some(&live), None)).await, Code::FailedPrecondition);

        assert_eq!(app.get(&clock_path(&id)).await.ok(), clock, "the clock is untouched");
        assert_eq!(ids_of(&app.get(CLOCKS).await.ok()), [id]);
    }

    async fn deleting_a_clock_removes_its_customers_and_everything_of_theirs(app) {
        let t0 = app.now() - 50 * DAY;
        let clock = create_clock(&app, t0, "").await;
        let clock_id = id_of(&clock);
        let ada = id_of(&clock_customer(&app, &clock_id, "Ada").await);
        let bob = id_of(&clock_customer(&app, &clock_id, "Bob").await);
        let ada_grant = id_of(&create_grant(&app, &usd_grant_body(&ada, 1000)).await);
        let bob_grant = id_of(&create_grant(&app, &format!("{}&expires_at={}", usd_grant_body(&bob, 50), t0 + DAY)).await);
        assert_eq!(apply_credits(&app, &ada, "in_doomed", "il_in_doomed", 250).await.applied, 250);
        let cbt = app.post(&format!("{CUSTOMERS}/{ada}/balance_transactions"), "amount=-500&currency=usd").await.ok();
        assert_eq!(cbt["created"], t0, "customer balance transactions are dated at the clock's time");
        let cbt = id_of(&cbt);
        advance(&app, &clock, t0 + 2 * DAY).await;
        let ada_entries: Vec<String> = transactions_in_one_page(&app, &ada, None).await.iter().map(id_of).collect();
        let bob_entries: Vec<String> = transactions_in_one_page(&app, &bob, None).await.iter().map(id_of).collect();
        assert_eq!(ada_entries.len(), 2);
        assert_eq!(bob_entries.len(), 2, "granted and expired");

        // A customer off the clock, with the same kinds of objects.
        let carl = app.create_customer("name=Carl").await;
        let carl_grant = id_of(&create_grant(&app, &usd_grant_body(&carl, 700)).await);
        apply_credits(&app, &carl, "in_kept", "il_in_kept", 100).await;
        let carl_cbt = id_of(&app.post(&format!("{CUSTOMERS}/{carl}/balance_transactions"), "amount=300&currency=usd").await.ok());
        let carl_before = app.get(&format!("{CUSTOMERS}/{carl}")).await.ok();
        let carl_entries = transactions_in_one_page(&app, &carl, None).await;

        let deleted = delete(&app, &clock_path(&clock_id)).await.ok();
        assert_eq!(deleted, json!({"id": clock_id, "object": "test_helpers.test_clock", "deleted": true}));

        assert_not_found(&app.get(&clock_path(&clock_id)).await);
        for customer in [&ada, &bob] {
            assert_not_found(&app.get(&format!("{CUSTOMERS}/{customer}")).await);
            app.get(&format!("{GRANTS}?customer={customer}")).await
                .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("customer"));
        }
        for id in [&ada_grant, &bob_grant] {
            assert_not_found(&app.get(&format!("{GRANTS}/{id}")).await);
        }
        for id in ada_entries.iter().chain(&bob_entries) {
            assert_not_found(&app.get(&format!("{TXNS}/{id}")).await);
        }
        assert_not_found(&app.get(&format!("{CUSTOMERS}/{ada}/balance_transactions/{cbt}")).await);
        let grants = app.get(GRANTS).await.ok();
        assert_eq!(ids_of(&grants), [carl_grant.as_str()], "only the other customer's grant is left");
        assert_eq!(ids_of(&app.get(CUSTOMERS).await.ok()), [carl.as_str()]);
        assert_eq!(ids_of(&app.get(CLOCKS).await.ok()), Vec::<String>::new());

        // The customer off the clock is untouched.
        assert_eq!(app.get(&format!("{CUSTOMERS}/{carl}")).await.ok(), carl_before);
        assert_eq!(transactions_in_one_page(&app, &carl, None).await, carl_entries);
        app.get(&format!("{CUSTOMERS}/{carl}/balance_transactions/{carl_cbt}")).await.ok();
        assert_eq!(metered_usd(&app, &carl).await, (600, 600));
    }

    async fn clock_customers_are_listed_only_with_their_clock(app) {
        let plain = app.create_customer("name=Plain").await;
        let first = create_clock(&app, 1_700_000_000, "&name=First").await;
        let second = create_clock(&app, 1_600_000_000, "&name=Second").await;
        let (first_id, second_id) = (id_of(&first), id_of(&second));

        let a1 = app.post(CUSTOMERS, &format!("name=A1&test_clock={first_id}&expand[]=test_clock")).await.ok();
        assert_eq!(a1["test_clock"], first, "expanded: the clock object");
        assert_eq!(a1["created"], 1_700_000_000);
        let a1 = id_of(&a1);
        let a2 = id_of(&clock_customer(&app, &first_id, "A2").await);
        let b1 = clock_customer(&app, &second_id, "B1").await;
        assert_eq!(b1["created"], 1_600_000_000);
        let b1 = id_of(&b1);
        let plain_too = app.create_customer("name=Plain%20too").await;

        assert_eq!(ids_of(&app.get(CUSTOMERS).await.ok()), [plain_too.clone(), plain.clone()], "no clock customers by default");
        assert_eq!(ids_of(&app.get(&format!("{CUSTOMERS}?test_clock={first_id}")).await.ok()), [a2.clone(), a1.clone()]);
        assert_eq!(ids_of(&app.get(&format!("{CUSTOMERS}?test_clock={second_id}")).await.ok()), [b1.as_str()]);
        let paged = app.get(&format!("{CUSTOMERS}?test_clock={first_id}&limit=1")).await.ok();
        assert_eq!(ids_of(&paged), [a2.as_str()]);
        assert_eq!(paged["has_more"], true);

        let fetched = app.get(&format!("{CUSTOMERS}/{a1}")).await.ok();
        assert_eq!(fetched["test_clock"], first_id.as_str());
        let expanded = app.get(&format!("{CUSTOMERS}/{a1}?expand[]=test_clock")).await.ok();
        assert_eq!(expanded["test_clock"], first);
        let mut collapsed = expanded.clone();
        collapsed["test_clock"] = json!(first_id);
        assert_eq!(collapsed, fetched, "expanding changes nothing else");
        assert_eq!(app.get(&format!("{CUSTOMERS}/{plain}?expand[]=test_clock")).await.ok()["test_clock"], Value::Null);

        // The expanded clock follows the clock.
        let advanced = advance(&app, &first, 1_700_000_000 + DAY).await;
        assert_eq!(app.get(&format!("{CUSTOMERS}/{a1}?expand[]=test_clock")).await.ok()["test_clock"], advanced);
        // A customer created after the advance starts at the new time.
        let a3 = clock_customer(&app, &first_id, "A3").await;
        assert_eq!(a3["created"], 1_700_000_000 + DAY);

        app.post(CUSTOMERS, "name=Lost&test_clock=clock_unknown").await
            .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("test_clock"));
        assert_eq!(ids_of(&app.get(CUSTOMERS).await.ok()), [plain_too, plain]);

        let listed = app.get(&format!("{CUSTOMERS}?test_clock={first_id}&expand[]=data.test_clock")).await.ok();
        assert_eq!(ids_of(&listed), [id_of(&a3), a2, a1]);
        for customer in listed["data"].as_array().expect("data") {
            assert_eq!(customer["test_clock"], advanced, "expand[]=data.test_clock embeds the clock: {customer}");
        }
    }

    async fn an_existing_customer_attached_on_clock_creation_lives_at_clock_time(app) {
        let customer = app.create_customer("name=Ada").await;
        let created = app.get(&format!("{CUSTOMERS}/{customer}")).await.ok()["created"].clone();
        let before = id_of(&create_grant(&app, &usd_grant_body(&customer, 1000)).await);
        let frozen = app.now() + 10 * DAY;

        let clock = create_clock(&app, frozen, &format!("&customer={customer}&name=Attached")).await;
        let clock_id = id_of(&clock);
        assert_eq!(clock["frozen_time"], frozen);
        assert_eq!(clock["status"], "ready");
        let attached = app.get(&format!("{CUSTOMERS}/{customer}")).await.ok();
        assert_eq!(attached["test_clock"], clock_id.as_str());
        assert_eq!(attached["created"], created, "attaching does not rewrite the past");
        assert_eq!(app.get(&format!("{GRANTS}/{before}")).await.ok()["test_clock"], clock_id.as_str(), "its grants move onto the clock");

        // A new grant lives at the clock's time.
        let after = create_grant(&app, &format!("{}&expires_at={}", usd_grant_body(&customer, 300), frozen + 5 * DAY)).await;
        assert_eq!(after["effective_at"], frozen);
        assert_eq!(after["created"], frozen);
        assert_eq!(after["test_clock"], clock_id.as_str());
        let after = id_of(&after);
        let entry = &transactions_in_one_page(&app, &customer, Some(&after)).await[0];
        assert_eq!((entry["created"].as_i64(), entry["effective_at"].as_i64()), (Some(frozen), Some(frozen)));
        assert_eq!(entry["test_clock"], clock_id.as_str());
        assert_eq!(metered_usd(&app, &customer).await, (1300, 1300));

        // It left the default list, and is listed with its clock.
        assert_eq!(ids_of(&app.get(CUSTOMERS).await.ok()), Vec::<String>::new());
        assert_eq!(ids_of(&app.get(&format!("{CUSTOMERS}?test_clock={clock_id}")).await.ok()), [customer.as_str()]);

        // It can never move to another clock, nor can a customer created on a clock.
        app.post(CLOCKS, &format!("frozen_time={frozen}&customer={customer}")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("customer"));
        let born_on_clock = id_of(&clock_customer(&app, &clock_id, "Bob").await);
        app.post(CLOCKS, &format!("frozen_time={frozen}&customer={born_on_clock}")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("customer"));
        assert_eq!(ids_of(&app.get(CLOCKS).await.ok()), [clock_id.as_str()], "the failed creates left no clock");

        // Advancing the clock expires the new grant, not the server's clock.
        advance(&app, &clock, frozen + 6 * DAY).await;
        assert_eq!(grant_usd(&app, &customer, &after).await, (0, 0));
        assert_eq!(metered_usd(&app, &customer).await, (1000, 1000));
        let expired = &transactions_in_one_page(&app, &customer, Some(&after)).await[0];
        assert_eq!(kinds(std::slice::from_ref(expired)), ["credits_expired"]);
        assert_eq!(expired["effective_at"], frozen + 5 * DAY);
    }

    async fn an_attached_customers_earlier_credit_entries_carry_the_clock(app) {
        let customer = app.create_customer("name=Ada").await;
        let before = id_of(&create_grant(&app, &usd_grant_body(&customer, 1000)).await);
        let clock = create_clock(&app, app.now() + DAY, &format!("&customer={customer}")).await;
        let clock_id = id_of(&clock);
        assert_eq!(app.get(&format!("{GRANTS}/{before}")).await.ok()["test_clock"], clock_id.as_str());
        for entry in transactions_in_one_page(&app, &customer, None).await {
            assert_eq!(entry["test_clock"], clock_id.as_str(), "entries of a clock customer's grant carry its clock: {entry}");
        }
    }

    async fn advancing_with_an_idempotency_key_replays(app) {
        let t0 = 1_700_000_000;
        let clock = create_clock(&app, t0, "").await;
        let id = id_of(&clock);
        let path = advance_path(&id);
        let body = format!("frozen_time={}", t0 + DAY);
        let first = app.post_idempotent(&path, "advance-once", &body).await.ok();
        assert_eq!(first, ready_at(&clock, t0 + DAY));
        let again = app.post_idempotent(&path, "advance-once", &body).await.ok();
        assert_eq!(again, first, "the replay answers the same");
        assert_eq!(app.get(&clock_path(&id)).await.ok(), first);
        let other = app.post_idempotent(&path, "advance-once", &format!("frozen_time={}", t0 + 2 * DAY)).await;
        assert_eq!(other.status, 400, "{}", other.body);
        assert_eq!(other.body["error"]["type"], "idempotency_error", "{}", other.body);
        assert_eq!(app.get(&clock_path(&id)).await.ok(), first, "the mismatch did not advance");

        // A failed advance with a key is not stored as a success.
        let backwards = format!("frozen_time={}", t0 - 1);
        app.post_idempotent(&path, "advance-back", &backwards).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("frozen_time"));

        // After the clock moved on, the key still replays the original answer.
        let moved = advance(&app, &clock, t0 + 5 * DAY).await;
        let replay = app.post_idempotent(&path, "advance-once", &body).await.ok();
        assert_eq!(app.get(&clock_path(&id)).await.ok(), moved, "a replay never moves the clock");
        assert_eq!(replay, first, "an idempotent replay returns the first response, not the clock's current state");
    }

    async fn the_same_lifecycle_over_grpc_gives_the_same_summary_as_rest(app) {
        let t0 = app.now() - 400 * DAY;
        let mut clocks = ClockClient::new(app.channel().await);
        let mut customers = app.customers().await;
        let mut grants = GrantClient::new(app.channel().await);
        let mut balances = BalanceClient::new(app.channel().await);

        assert_code(clocks.create_test_clock(app.grpc(proto::CreateTestClockRequest::default())).await, Code::InvalidArgument);
        let clock = clocks.create_test_clock(app.grpc(proto::CreateTestClockRequest {
            frozen_time: t0,
            name: Some("Over gRPC".into()),
            customer: None,
        })).await.expect("create clock").into_inner();
        assert!(clock.id.starts_with("clock_"), "{clock:?}");
        assert_eq!(clock.object, "test_helpers.test_clock");
        assert_eq!((clock.frozen_time, clock.status.as_str(), clock.livemode), (t0, "ready", false));
        assert_eq!(clock.deletes_after, clock.created + 30 * DAY);
        assert_eq!(clock.name.as_deref(), Some("Over gRPC"));
        assert_eq!(clock.status_details.as_ref().and_then(|details| details.advancing.as_ref()), None);
        // The same object as REST shows.
        let rest_clock = app.get(&clock_path(&clock.id)).await.ok();
        assert_eq!(rest_clock, json!({
            "id": clock.id,
            "object": "test_helpers.test_clock",
            "created": clock.created,
            "deletes_after": clock.deletes_after,
            "frozen_time": t0,
            "livemode": false,
            "name": "Over gRPC",
            "status": "ready",
            "status_details": {},
        }));
        let fetched = clocks.get_test_clock(app.grpc(proto::GetTestClockRequest { id: clock.id.clone() })).await.expect("get").into_inner();
        assert_eq!(fetched, clock);

        let customer = customers.create_customer(app.grpc(proto::CreateCustomerRequest {
            name: Some("Ada".into()),
            test_clock: Some(clock.id.clone()),
            ..Default::default()
        })).await.expect("create customer").into_inner();
        assert_eq!(customer.created, t0);
        assert_eq!(customer.test_clock.as_deref(), Some(clock.id.as_str()));
        assert_code(customers.create_customer(app.grpc(proto::CreateCustomerRequest {
            test_clock: Some("clock_unknown".into()),
            ..Default::default()
        })).await, Code::InvalidArgument);
        let listed = customers.list_customers(app.grpc(proto::ListCustomersRequest {
            test_clock: Some(clock.id.clone()),
            ..Default::default()
        })).await.expect("list").into_inner();
        assert_eq!(listed.data.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [customer.id.as_str()]);
        let default_list = customers.list_customers(app.grpc(proto::ListCustomersRequest::default())).await.expect("list").into_inner();
        assert!(default_list.data.is_empty(), "{default_list:?}");
        let customer = customer.id;

        let a = grants.create_credit_grant(app.grpc(proto::CreateCreditGrantRequest {
            expires_at: Some(t0 + 30 * DAY),
            ..metered_grant(&customer, "usd", 1000)
        })).await.expect("grant a").into_inner();
        assert_eq!((a.effective_at, a.created), (Some(t0), t0));
        assert_eq!(a.test_clock.as_deref(), Some(clock.id.as_str()));
        let b = grants.create_credit_grant(app.grpc(proto::CreateCreditGrantRequest {
            effective_at: Some(t0 + 10 * DAY),
            ..metered_grant(&customer, "usd", 500)
        })).await.expect("grant b").into_inner();
        assert_eq!((b.effective_at, b.created), (Some(t0 + 10 * DAY), t0));

        // At each step: the expected balances, the same over gRPC and REST.
        let steps: [Step; 5] = [
            (t0, None, (1000, 1000), (1000, 1000), (0, 0)),
            (t0 + DAY, Some(300), (700, 700), (700, 700), (0, 0)),
            (t0 + 11 * DAY, None, (1200, 1200), (700, 700), (500, 500)),
            (t0 + 31 * DAY, None, (500, 500), (0, 0), (500, 500)),
            (t0 + 60 * DAY, None, (500, 500), (0, 0), (500, 500)),
        ];
        for (at, apply, total, of_a, of_b) in steps {
            if at > t0 {
                let advanced = clocks.advance_test_clock(app.grpc(proto::AdvanceTestClockRequest {
                    id: clock.id.clone(),
                    frozen_time: at,
                })).await.expect("advance").into_inner();
                assert_eq!(advanced, proto::TestClock { frozen_time: at, ..clock.clone() }, "ready at the new time");
            }
            if let Some(amount) = apply {
                let applied = balances.apply_credits(app.grpc(proto::ApplyCreditsRequest {
                    price: None,
                    ..metered_line(&customer, "usd", "in_grpc", "il_grpc", amount)
                })).await.expect("apply").into_inner();
                assert_eq!(applied.applied, amount);
                assert_eq!(applied.entries[0].credit_grant, a.id);
                assert_eq!(applied.entries[0].created, at);
            }
            let grpc = (
                grpc_summary(&app, &mut balances, &customer, metered_filter()).await,
                grpc_summary(&app, &mut balances, &customer, grant_filter(&a.id)).await,
                grpc_summary(&app, &mut balances, &customer, grant_filter(&b.id)).await,
            );
            assert_eq!(grpc, (total, of_a, of_b), "over gRPC at T0+{}d", (at - t0) / DAY);
            let rest = (
                metered_usd(&app, &customer).await,
                grant_usd(&app, &customer, &a.id).await,
                grant_usd(&app, &customer, &b.id).await,
            );
            assert_eq!(rest, grpc, "REST and gRPC agree at T0+{}d", (at - t0) / DAY);
            assert_eq!(sweep(&app).await, 0);
        }

        let entries = balances.list_credit_balance_transactions(app.grpc(proto::ListCreditBalanceTransactionsRequest {
            customer: customer.clone(),
            credit_grant: Some(a.id.clone()),
            page: None,
        })).await.expect("list entries").into_inner().data;
        let expired = &entries[0];
        assert_eq!(expired.debit.as_ref().map(|debit| debit.r#type.as_str()), Some("credits_expired"));
        assert_eq!(expired.debit.as_ref().and_then(|debit| debit.amount.clone()), monetary("usd", 700));
        assert_eq!((expired.effective_at, expired.created), (t0 + 30 * DAY, t0 + 30 * DAY));
        assert_eq!(expired.test_clock.as_deref(), Some(clock.id.as_str()));
        assert_eq!(entries.len(), 3);

        // Errors keep their codes over gRPC.
        assert_code(clocks.advance_test_clock(app.grpc(proto::AdvanceTestClockRequest {
            id: clock.id.clone(),
            frozen_time: t0,
        })).await, Code::InvalidArgument);
        assert_code(clocks.advance_test_clock(app.grpc(proto::AdvanceTestClockRequest {
            id: clock.id.clone(),
            frozen_time: 0,
        })).await, Code::InvalidArgument);
        let list = clocks.list_test_clocks(app.grpc(proto::ListTestClocksRequest::default())).await.expect("list clocks").into_inner();
        assert_eq!((list.object.as_str(), list.url.as_str(), list.has_more), ("list", CLOCKS, false));
        assert_eq!(list.data.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [clock.id.as_str()]);

        let deleted = clocks.delete_test_clock(app.grpc(proto::DeleteTestClockRequest { id: clock.id.clone() })).await.expect("delete").into_inner();
        assert_eq!(deleted, proto::DeletedTestClock { id: clock.id.clone(), object: "test_helpers.test_clock".into(), deleted: true });
        assert_code(clocks.get_test_clock(app.grpc(proto::GetTestClockRequest { id: clock.id.clone() })).await, Code::NotFound);
        assert_code(clocks.advance_test_clock(app.grpc(proto::AdvanceTestClockRequest {
            id: clock.id.clone(),
            frozen_time: t0 + 61 * DAY,
        })).await, Code::NotFound);
        assert_code(customers.get_customer(app.grpc(proto::GetCustomerRequest { id: customer.clone() })).await, Code::NotFound);
        assert_code(grants.get_credit_grant(app.grpc(proto::GetCreditGrantRequest { id: a.id.clone() })).await, Code::NotFound);
        assert_code(balances.get_credit_balance_transaction(app.grpc(proto::GetCreditBalanceTransactionRequest { id: expired.id.clone() })).await, Code::NotFound);
    }
}
