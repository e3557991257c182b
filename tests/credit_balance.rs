//! The credit balance over the Stripe REST shim: the balance summary under each filter form,
//! effective dates and expiry (before and after the background sweeper), currencies, the
//! credit balance transaction list and retrieve, and a ledger invariant checked throughout:
//! a grant's entries always sum to what the summary reports for it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::Reply;
use common::credits::{
    GRANTS, METERED, SUMMARY, TXNS, apply_credits, assert_ledger_invariant, balance_in, grant,
    grant_body, grant_summary, id_of, ids_of, kinds, metered_usd, money, summary, sweep,
    transactions,
};
use serde_json::{Value, json};

/// A 400 `invalid_request_error` with `code` whose param starts with `prefix` (where the
/// contract fixes the code but not the exact param).
#[track_caller]
fn assert_error_about(reply: &Reply, code: &str, prefix: &str) {
    assert_eq!(reply.status, 400, "status; body: {}", reply.body);
    assert_eq!(
        reply.body["error"]["type"], "invalid_request_error",
        "{}",
        reply.body
    );
    assert_eq!(reply.body["error"]["code"], code, "{}", reply.body);
    let param = reply.body["error"]["param"].as_str().unwrap_or_default();
    assert!(
        param.starts_with(prefix),
        "param {param:?} should start with {prefix}: {}",
        reply.body
    );
}

on_every_backend! {
    async fn the_summary_for_one_grant_reports_that_grant_alone(app) {
        let customer = app.create_customer("name=Ada&email=ada%40example.com").await;
        let first = grant(&app, &format!("{}&priority=0", grant_body(&customer, "usd", 1000))).await;
        let second = grant(&app, &grant_body(&customer, "usd", 400)).await;

        let body = grant_summary(&app, &customer, &first).await;
        assert_eq!(body, json!({
            "object": "billing.credit_balance_summary",
            "balances": [{"available_balance": money("usd", 1000), "ledger_balance": money("usd", 1000)}],
            "customer": customer,
            "customer_account": null,
            "livemode": false,
        }));
        assert_eq!(balance_in(&grant_summary(&app, &customer, &second).await, "usd"), (400, 400));
        assert_eq!(metered_usd(&app, &customer).await, (1400, 1400));

        // Priority 0 burns first.
        let applied = apply_credits(&app, &customer, "in_1", "il_1", 300).await;
        assert_eq!(applied.applied, 300);
        assert_eq!(applied.entries.iter().map(|entry| entry.credit_grant.as_str()).collect::<Vec<_>>(), [first.as_str()]);
        assert_eq!(balance_in(&grant_summary(&app, &customer, &first).await, "usd"), (700, 700));
        assert_eq!(balance_in(&grant_summary(&app, &customer, &second).await, "usd"), (400, 400));
        assert_eq!(metered_usd(&app, &customer).await, (1100, 1100));

        let expanded = app.get(&format!(
            "{SUMMARY}?customer={customer}&filter[type]=credit_grant&filter[credit_grant]={first}&expand[]=customer"
        )).await.ok();
        assert_eq!(expanded["customer"]["id"], customer.as_str());
        assert_eq!(expanded["customer"]["object"], "customer");
        assert_eq!(expanded["customer"]["email"], "ada@example.com");
        assert_eq!(balance_in(&expanded, "usd"), (700, 700));
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn the_summary_by_scope_counts_grants_that_cover_the_filter(app) {
        let customer = app.create_customer("name=Ada").await;
        let usd_body = |scope: &str, value: i64| format!(
            "customer={customer}&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]={value}&{scope}"
        );
        grant(&app, &usd_body("applicability_config[scope][price_type]=metered", 100)).await;
        grant(&app, &usd_body("applicability_config[scope][prices][0][id]=price_x", 200)).await;
        grant(&app, &usd_body("applicability_config[scope][prices][0][id]=price_y&applicability_config[scope][prices][1][id]=price_z", 400)).await;
        // Another customer's grants never count.
        let other = app.create_customer("name=Bob").await;
        grant(&app, &grant_body(&other, "usd", 5000)).await;

        let scope = "filter[type]=applicability_scope&filter[applicability_scope]";
        let cases = [
            (format!("{scope}[price_type]=metered"), 100),
            (format!("{scope}[prices][0][id]=price_x"), 300),
            (format!("{scope}[prices][0][id]=price_y"), 500),
            (format!("{scope}[prices][0][id]=price_z"), 500),
            (format!("{scope}[prices][0][id]=price_x&filter[applicability_scope][prices][1][id]=price_z"), 700),
            (format!("{scope}[prices][0][id]=price_q"), 100),
        ];
        for (filter, expected) in &cases {
            let body = summary(&app, &customer, filter).await;
            assert_eq!(body["balances"].as_array().unwrap().len(), 1, "{filter}: {body}");
            assert_eq!(balance_in(&body, "usd"), (*expected, *expected), "{filter}");
            assert_eq!(body["customer"], customer.as_str());
        }

        // A customer whose only grant is price-scoped has no metered balance at all.
        let priced = app.create_customer("name=Priced").await;
        grant(&app, &format!(
            "customer={priced}&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=50&applicability_config[scope][prices][0][id]=price_x"
        )).await;
        assert_eq!(summary(&app, &priced, METERED).await["balances"], json!([]));
        assert_eq!(balance_in(&summary(&app, &priced, &format!("{scope}[prices][0][id]=price_x")).await, "usd"), (50, 50));
        // No grants: no balances.
        let empty = app.create_customer("name=Empty").await;
        assert_eq!(summary(&app, &empty, METERED).await, json!({
            "object": "billing.credit_balance_summary",
            "balances": [],
            "customer": empty,
            "customer_account": null,
            "livemode": false,
        }));
        assert_ledger_invariant(&app, &customer).await;
        assert_ledger_invariant(&app, &priced).await;
    }

    async fn bad_summary_input_gets_stripe_errors(app) {
        let customer = app.create_customer("name=Ada").await;
        let id = grant(&app, &grant_body(&customer, "usd", 100)).await;
        let other = app.create_customer("name=Bob").await;
        let cases = [
            (format!("filter[type]=credit_grant&filter[credit_grant]={id}"), "parameter_missing", "customer"),
            (format!("customer={customer}"), "parameter_missing", "filter"),
            (format!("customer={customer}&filter[credit_grant]={id}"), "parameter_missing", "filter[type]"),
            (format!("customer={customer}&filter[type]=everything"), "parameter_invalid", "filter[type]"),
            (format!("customer={customer}&filter[type]=credit_grant"), "parameter_missing", "filter[credit_grant]"),
            (format!("customer={customer}&filter[type]=applicability_scope&filter[applicability_scope][price_type]=licensed"), "parameter_invalid", "filter[applicability_scope][price_type]"),
            (format!("customer=cus_test_missing&{METERED}"), "resource_missing", "customer"),
            (format!("customer={customer}&filter[type]=credit_grant&filter[credit_grant]=credgr_test_missing"), "resource_missing", "filter[credit_grant]"),
            (format!("customer={customer}&{METERED}&color=red"), "parameter_unknown", "color"),
            (format!("customer={customer}&{METERED}&filter[colour]=red"), "parameter_unknown", "filter[colour]"),
            (format!("customer={customer}&{METERED}&expand[]=balances.nothing"), "parameter_invalid", "expand"),
        ];
        for (query, code, param) in &cases {
            app.get(&format!("{SUMMARY}?{query}")).await
                .assert_error(400, "invalid_request_error", Some(code), Some(param));
        }
        let both = app.get(&format!(
            "{SUMMARY}?customer={customer}&{METERED}&filter[applicability_scope][prices][0][id]=price_x"
        )).await;
        assert_error_about(&both, "parameters_exclusive", "filter[applicability_scope]");
        let neither = app.get(&format!("{SUMMARY}?customer={customer}&filter[type]=applicability_scope")).await;
        assert_error_about(&neither, "parameter_missing", "filter[applicability_scope]");

        // The other customer's summary is fine, and empty; the grant still counts for its owner.
        assert_eq!(summary(&app, &other, METERED).await["balances"], json!([]));
        assert_eq!(metered_usd(&app, &customer).await, (100, 100));
    }

    async fn a_grant_effective_in_the_future_counts_only_once_the_clock_reaches_it(app) {
        let customer = app.create_customer("name=Ada").await;
        let starts = app.now() + 500;
        let now_grant = grant(&app, &grant_body(&customer, "usd", 100)).await;
        let later = grant(&app, &format!("{}&effective_at={starts}", grant_body(&customer, "usd", 800))).await;

        // The grant entry is written at once, dated when the credits start to count.
        let entries = transactions(&app, &customer, Some(&later)).await;
        assert_eq!(kinds(&entries), ["credits_granted"]);
        assert_eq!(entries[0]["effective_at"], starts);
        assert_eq!(entries[0]["created"], app.now());

        assert_eq!(balance_in(&grant_summary(&app, &customer, &later).await, "usd"), (0, 0));
        assert_eq!(metered_usd(&app, &customer).await, (100, 100));
        let early = apply_credits(&app, &customer, "in_1", "il_1", 1000).await;
        assert_eq!((early.applied, early.remaining_amount_due), (100, 900), "only effective credits apply");
        assert_eq!(early.entries.iter().map(|entry| entry.credit_grant.as_str()).collect::<Vec<_>>(), [now_grant.as_str()]);
        assert_ledger_invariant(&app, &customer).await;

        app.advance(499);
        assert_eq!(balance_in(&grant_summary(&app, &customer, &later).await, "usd"), (0, 0), "one second early");
        assert_eq!(apply_credits(&app, &customer, "in_2", "il_2", 50).await.applied, 0);

        app.advance(1);
        assert_eq!(balance_in(&grant_summary(&app, &customer, &later).await, "usd"), (800, 800), "effective_at <= now");
        assert_eq!(metered_usd(&app, &customer).await, (800, 800));
        assert_ledger_invariant(&app, &customer).await;
        let late = apply_credits(&app, &customer, "in_3", "il_3", 1000).await;
        assert_eq!((late.applied, late.remaining_amount_due), (800, 200));
        assert_eq!(metered_usd(&app, &customer).await, (0, 0));
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn expiry_takes_credits_out_of_the_available_balance_at_once_and_off_the_ledger_when_swept(app) {
        let customer = app.create_customer("name=Ada").await;
        let expires_at = app.now() + 100;
        let expiring = grant(&app, &format!("{}&priority=0&expires_at={expires_at}", grant_body(&customer, "usd", 1000))).await;
        let lasting = grant(&app, &format!("{}&priority=10", grant_body(&customer, "usd", 500))).await;
        assert_eq!(apply_credits(&app, &customer, "in_1", "il_1", 300).await.applied, 300);
        assert_eq!(balance_in(&grant_summary(&app, &customer, &expiring).await, "usd"), (700, 700));

        app.advance(200);
        // Expired: unavailable at once, still on the ledger until the sweeper writes it off.
        assert_eq!(balance_in(&grant_summary(&app, &customer, &expiring).await, "usd"), (0, 700));
        assert_eq!(metered_usd(&app, &customer).await, (500, 1200));
        let before = transactions(&app, &customer, Some(&expiring)).await;
        assert_eq!(kinds(&before), ["credits_applied", "credits_granted"], "no credits_expired before the sweep");
        assert_ledger_invariant(&app, &customer).await;
        // And the expired remainder cannot be spent.
        let spent = apply_credits(&app, &customer, "in_2", "il_2", 100).await;
        assert_eq!(spent.applied, 100);
        assert_eq!(spent.entries.iter().map(|entry| entry.credit_grant.as_str()).collect::<Vec<_>>(), [lasting.as_str()]);

        let swept_at = app.now();
        assert_eq!(sweep(&app).await, 1, "one grant expired");
        let after = transactions(&app, &customer, Some(&expiring)).await;
        assert_eq!(kinds(&after), ["credits_expired", "credits_applied", "credits_granted"]);
        assert_eq!(after[0]["type"], "debit");
        assert_eq!(after[0]["debit"], json!({"amount": money("usd", 700), "type": "credits_expired", "credits_applied": null}));
        assert_eq!(after[0]["credit"], Value::Null);
        assert_eq!(after[0]["effective_at"], expires_at, "dated at the grant's expiry, not at the sweep");
        assert_eq!(after[0]["credit_grant"], expiring.as_str());
        assert!(after[0]["created"].as_i64().unwrap() <= swept_at);
        assert_eq!(app.get(&format!("{TXNS}/{}", id_of(&after[0]))).await.ok(), after[0]);
        assert_eq!(balance_in(&grant_summary(&app, &customer, &expiring).await, "usd"), (0, 0));
        assert_eq!(metered_usd(&app, &customer).await, (400, 400), "available == ledger after the sweep");

        // The grant itself keeps its expiry; sweeping again writes nothing more.
        let expired = app.get(&format!("{GRANTS}/{expiring}")).await.ok();
        assert_eq!(expired["expires_at"], expires_at);
        assert_eq!(expired["voided_at"], Value::Null);
        let everything = transactions(&app, &customer, None).await;
        app.advance(1000);
        assert_eq!(sweep(&app).await, 0);
        assert_eq!(transactions(&app, &customer, None).await, everything);
        assert_eq!(metered_usd(&app, &customer).await, (400, 400));
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn the_sweeper_leaves_grants_that_are_not_due_or_already_written_off(app) {
        let customer = app.create_customer("name=Ada").await;
        let soon = app.now() + 100;
        let body = |value: i64, extra: &str| format!("{}{extra}", grant_body(&customer, "usd", value));
        let used_up = grant(&app, &body(200, &format!("&priority=0&expires_at={soon}"))).await;
        let voided = grant(&app, &body(300, &format!("&expires_at={soon}"))).await;
        let expired_by_hand = grant(&app, &body(400, &format!("&expires_at={soon}"))).await;
        let not_due = grant(&app, &body(500, &format!("&expires_at={}", soon + 10_000))).await;
        let never = grant(&app, &body(600, "")).await;
        assert_eq!(apply_credits(&app, &customer, "in_1", "il_1", 200).await.applied, 200);
        app.post(&format!("{GRANTS}/{voided}/void"), "").await.ok();
        app.post(&format!("{GRANTS}/{expired_by_hand}/expire"), "").await.ok();
        let before: Vec<(String, Vec<String>)> = {
            let mut all = Vec::new();
            for id in [&voided, &expired_by_hand, &not_due, &never] {
                all.push((id.clone(), kinds(&transactions(&app, &customer, Some(id)).await)));
            }
            all
        };

        app.advance(200);
        sweep(&app).await;
        // Nothing was left on the used-up grant: no zero-amount entry.
        assert_eq!(kinds(&transactions(&app, &customer, Some(&used_up)).await), ["credits_applied", "credits_granted"]);
        for (id, kinds_before) in &before {
            assert_eq!(&kinds(&transactions(&app, &customer, Some(id)).await), kinds_before, "{id} untouched by the sweep");
        }
        assert_eq!(metered_usd(&app, &customer).await, (1100, 1100));
        assert_eq!(sweep(&app).await, 0);
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn each_currency_gets_its_own_balance(app) {
        let customer = app.create_customer("name=Ada").await;
        grant(&app, &grant_body(&customer, "usd", 1000)).await;
        let euros = grant(&app, &grant_body(&customer, "eur", 500)).await;
        grant(&app, &grant_body(&customer, "usd", 200)).await;
        grant(&app, &grant_body(&customer, "jpy", 3000)).await;

        let body = summary(&app, &customer, METERED).await;
        assert_eq!(body["balances"].as_array().unwrap().len(), 3, "{body}");
        assert_eq!(balance_in(&body, "usd"), (1200, 1200));
        assert_eq!(balance_in(&body, "eur"), (500, 500));
        assert_eq!(balance_in(&body, "jpy"), (3000, 3000));

        // Spending dollars leaves the other currencies alone.
        assert_eq!(apply_credits(&app, &customer, "in_1", "il_1", 1100).await.applied, 1100);
        let body = summary(&app, &customer, METERED).await;
        assert_eq!(balance_in(&body, "usd"), (100, 100));
        assert_eq!(balance_in(&body, "eur"), (500, 500));
        let only_euros = grant_summary(&app, &customer, &euros).await;
        assert_eq!(only_euros["balances"].as_array().unwrap().len(), 1, "{only_euros}");
        assert_eq!(balance_in(&only_euros, "eur"), (500, 500));
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn credit_balance_transactions_page_newest_first_and_filter_by_grant(app) {
        let customer = app.create_customer("name=Ada").await;
        let first = grant(&app, &format!("{}&priority=0", grant_body(&customer, "usd", 1000))).await;
        let second = grant(&app, &format!("{}&priority=10", grant_body(&customer, "usd", 1000))).await;
        let other = app.create_customer("name=Bob").await;
        let others = grant(&app, &grant_body(&other, "usd", 10)).await;

        let mut created = Vec::new();
        let granted = transactions(&app, &customer, None).await;
        assert_eq!(granted.len(), 2);
        created.extend(granted.iter().rev().map(id_of));
        for n in 1..=4 {
            app.advance(1);
            let applied = apply_credits(&app, &customer, &format!("in_{n}"), &format!("il_{n}"), 100).await;
            assert_eq!(applied.entries.len(), 1);
            assert_eq!(applied.entries[0].credit_grant, first);
            assert_eq!(applied.entries[0].r#type, "debit");
            created.push(applied.entries[0].id.clone());
        }
        let newest_first: Vec<String> = created.iter().rev().cloned().collect();

        let mut seen = Vec::new();
        let mut has_more = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = app.get(&format!("{TXNS}?customer={customer}&limit=2{cursor}")).await.ok();
            assert_eq!(page["object"], "list");
            seen.extend(ids_of(&page));
            has_more.push(page["has_more"].as_bool().unwrap());
            if page["has_more"] == false {
                break;
            }
            cursor = format!("&starting_after={}", seen.last().unwrap());
        }
        assert_eq!(seen, newest_first);
        assert_eq!(has_more, [true, true, false]);
        let exact = app.get(&format!("{TXNS}?customer={customer}&limit=6")).await.ok();
        assert_eq!(exact["has_more"], false, "no more when the page is exactly full");
        assert_eq!(app.get(&format!("{TXNS}?customer={customer}&limit=5")).await.ok()["has_more"], true);
        let before = app.get(&format!("{TXNS}?customer={customer}&limit=2&ending_before={}", newest_first[4])).await.ok();
        assert_eq!(ids_of(&before), newest_first[2..4]);
        assert_eq!(before["has_more"], true);

        let of_first = app.get(&format!("{TXNS}?customer={customer}&credit_grant={first}")).await.ok();
        assert_eq!(ids_of(&of_first), [&newest_first[..4], &newest_first[5..]].concat());
        assert_eq!(of_first["has_more"], false);
        let of_second = app.get(&format!("{TXNS}?customer={customer}&credit_grant={second}&limit=1")).await.ok();
        assert_eq!(ids_of(&of_second), [newest_first[4].as_str()]);
        assert_eq!(of_second["has_more"], false);
        let of_first_paged = app.get(&format!("{TXNS}?customer={customer}&credit_grant={first}&limit=2&starting_after={}", newest_first[1])).await.ok();
        assert_eq!(ids_of(&of_first_paged), newest_first[2..4]);
        assert_eq!(of_first_paged["has_more"], true);
        assert_eq!(ids_of(&app.get(&format!("{TXNS}?customer={other}")).await.ok()).len(), 1);
        assert_eq!(transactions(&app, &other, None).await[0]["credit_grant"], others.as_str());

        // Every application names its invoice and line, newest first.
        let all = transactions(&app, &customer, None).await;
        for (index, entry) in all.iter().take(4).enumerate() {
            let n = 4 - index;
            assert_eq!(entry["debit"], json!({
                "amount": money("usd", 100),
                "type": "credits_applied",
                "credits_applied": {"invoice": format!("in_{n}"), "invoice_line_item": format!("il_{n}")},
            }));
            assert_eq!(entry["type"], "debit");
            assert_eq!(entry["credit"], Value::Null);
            assert_eq!(entry["livemode"], false);
            assert_eq!(entry["test_clock"], Value::Null);
            assert_eq!(entry["object"], "billing.credit_balance_transaction");
        }
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn a_transaction_expands_its_credit_grant(app) {
        let customer = app.create_customer("name=Ada").await;
        let id = grant(&app, &format!("{}&name=Starter", grant_body(&customer, "usd", 1000))).await;
        apply_credits(&app, &customer, "in_1", "il_1", 250).await;
        let the_grant = app.get(&format!("{GRANTS}/{id}")).await.ok();

        let entries = transactions(&app, &customer, None).await;
        assert_eq!(entries.len(), 2);
        for entry in &entries {
            let path = format!("{TXNS}/{}", id_of(entry));
            assert_eq!(&app.get(&path).await.ok(), entry);
            let expanded = app.get(&format!("{path}?expand[]=credit_grant")).await.ok();
            assert_eq!(expanded["credit_grant"], the_grant, "the grant object, embedded");
            let mut collapsed = expanded.clone();
            collapsed["credit_grant"] = Value::from(id.as_str());
            assert_eq!(&collapsed, entry, "expanding changes nothing else");
        }
        let list = app.get(&format!("{TXNS}?customer={customer}&expand[]=data.credit_grant")).await.ok();
        for entry in list["data"].as_array().unwrap() {
            assert_eq!(entry["credit_grant"]["id"], id.as_str());
            assert_eq!(entry["credit_grant"]["object"], "billing.credit_grant");
            assert_eq!(entry["credit_grant"]["name"], "Starter");
        }
        app.get(&format!("{TXNS}?customer={customer}&expand[]=credit_grant")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("expand"));
    }

    async fn bad_transaction_requests_get_stripe_errors(app) {
        let customer = app.create_customer("name=Ada").await;
        let id = grant(&app, &grant_body(&customer, "usd", 100)).await;
        let entry = id_of(&transactions(&app, &customer, None).await[0]);

        let missing = app.get(&format!("{TXNS}/cbtxn_test_missing")).await;
        assert_eq!(missing.status, 404, "{}", missing.body);
        assert_eq!(missing.body["error"]["code"], "resource_missing", "{}", missing.body);
        assert_eq!(missing.body["error"]["type"], "invalid_request_error", "{}", missing.body);

        app.get(TXNS).await
            .assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("customer"));
        app.get(&format!("{TXNS}?credit_grant={id}")).await
            .assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("customer"));
        app.get(&format!("{TXNS}?customer={customer}&color=red")).await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("color"));
        app.get(&format!("{TXNS}?customer={customer}&limit=0")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("limit"));
        app.get(&format!("{TXNS}?customer={customer}&limit=101")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("limit"));
        app.get(&format!("{TXNS}?customer={customer}&limit=many")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid_integer"), Some("limit"));
        app.get(&format!("{TXNS}?customer={customer}&starting_after={entry}&ending_before={entry}")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("ending_before"));
        app.get(&format!("{TXNS}/{entry}?expand[]=customer")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("expand"));

        // Another account or mode cannot see the entry.
        for key in [app.new_key(false, false).await, app.new_key(true, true).await] {
            let reply = app.get_as(Some(&key), &format!("{TXNS}/{entry}")).await;
            assert_eq!(reply.status, 404, "{}", reply.body);
            assert_eq!(reply.body["error"]["code"], "resource_missing", "{}", reply.body);
        }
        assert_eq!(transactions(&app, &customer, None).await.len(), 1);
    }
}
