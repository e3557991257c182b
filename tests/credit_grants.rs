//! Billing credit grants over the Stripe REST shim: creation with Stripe's defaults, retrieve,
//! list and expand, the two fields that may change, expire and void (and what they write to
//! the credit ledger), idempotent creation, tenancy, and every kind of bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::Reply;
use common::credits::{
    GRANTS, SUMMARY, TXNS, apply_credits, assert_ledger_invariant, assert_not_found,
    assert_refused, balance_in, create_customer_as, create_grant, grant_summary, id_of, ids_of,
    kinds, signed_amount, sweep, transactions, usd, usd_grant_body,
};
use serde_json::{Value, json};

/// A 400 `invalid_request_error` about `param`, whatever its code (where the contract names
/// none).
#[track_caller]
fn assert_bad_param(reply: &Reply, param: &str) {
    assert_refused(reply);
    assert_eq!(reply.body["error"]["param"], param, "{}", reply.body);
}

on_every_backend! {
    async fn a_metered_grant_gets_stripe_defaults_and_one_credits_granted_entry(app) {
        let customer = app.create_customer("name=Ada").await;
        let now = app.now();
        let grant = create_grant(&app, &usd_grant_body(&customer, 1000)).await;
        let id = id_of(&grant);
        assert!(id.starts_with("credgr_test_"), "{id}");
        assert_eq!(grant, json!({
            "id": id,
            "object": "billing.credit_grant",
            "amount": usd(1000),
            "applicability_config": {"scope": {"price_type": "metered"}},
            "category": "paid",
            "created": now,
            "customer": customer,
            "customer_account": null,
            "effective_at": now,
            "expires_at": null,
            "livemode": false,
            "metadata": {},
            "name": null,
            "priority": 50,
            "test_clock": null,
            "updated": now,
            "voided_at": null,
        }));

        let entries = transactions(&app, &customer, None).await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        let entry_id = id_of(&entries[0]);
        assert!(entry_id.starts_with("cbtxn_test_"), "{entry_id}");
        assert_eq!(entries[0], json!({
            "id": entry_id,
            "object": "billing.credit_balance_transaction",
            "created": now,
            "credit": {"amount": usd(1000), "type": "credits_granted", "credits_application_invoice_voided": null},
            "credit_grant": id,
            "debit": null,
            "effective_at": now,
            "livemode": false,
            "test_clock": null,
            "type": "credit",
        }));
        assert_eq!(app.get(&format!("{TXNS}/{entry_id}")).await.ok(), entries[0]);
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn a_grant_scoped_to_prices_keeps_every_field_it_was_given(app) {
        let customer = app.create_customer("name=Ada").await;
        let now = app.now();
        let (effective_at, expires_at) = (now + 60, now + 3600);
        let body = format!(
            "customer={customer}&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=2500\
             &applicability_config[scope][prices][0][id]=price_a&applicability_config[scope][prices][1][id]=price_b\
             &category=promotional&priority=0&effective_at={effective_at}&expires_at={expires_at}\
             &name=Welcome+credit&metadata[campaign]=spring&metadata[batch]=7"
        );
        let grant = create_grant(&app, &body).await;
        let id = id_of(&grant);
        assert_eq!(grant, json!({
            "id": id,
            "object": "billing.credit_grant",
            "amount": usd(2500),
            "applicability_config": {"scope": {"prices": [{"id": "price_a"}, {"id": "price_b"}]}},
            "category": "promotional",
            "created": now,
            "customer": customer,
            "customer_account": null,
            "effective_at": effective_at,
            "expires_at": expires_at,
            "livemode": false,
            "metadata": {"campaign": "spring", "batch": "7"},
            "name": "Welcome credit",
            "priority": 0,
            "test_clock": null,
            "updated": now,
            "voided_at": null,
        }));
        let entries = transactions(&app, &customer, Some(&id)).await;
        assert_eq!(kinds(&entries), ["credits_granted"]);
        assert_eq!(entries[0]["effective_at"], effective_at, "the entry is effective with the grant");
        assert_eq!(entries[0]["credit"]["amount"], usd(2500));

        // The other scope form and the lowest priority, with the customer expanded on create.
        let expanded = create_grant(&app, &format!("{}&priority=100&expand[]=customer", usd_grant_body(&customer, 1))).await;
        assert_eq!(expanded["priority"], 100);
        assert_eq!(expanded["amount"], usd(1));
        assert_eq!(expanded["customer"]["id"], customer.as_str());
        assert_eq!(expanded["customer"]["object"], "customer");
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn the_limits_themselves_are_accepted(app) {
        let customer = app.create_customer("name=Ada").await;
        let metadata: String = (0..50).map(|i| format!("&metadata[k{i}]=v")).collect();
        let name = "n".repeat(100);
        let grant = create_grant(&app, &format!("{}&priority=0&name={name}{metadata}", usd_grant_body(&customer, 99_999_999))).await;
        assert_eq!(grant["amount"], usd(99_999_999));
        assert_eq!(grant["name"], name.as_str());
        assert_eq!(grant["metadata"].as_object().unwrap().len(), 50);
        assert_eq!(grant["priority"], 0);
        let now = app.now();
        let short = create_grant(&app, &format!("{}&effective_at={now}&expires_at={}", usd_grant_body(&customer, 1), now + 1)).await;
        assert_eq!(short["expires_at"], now + 1, "one second after effective_at is enough");
    }

    async fn a_grant_is_retrieved_and_its_customer_expanded(app) {
        let customer = app.create_customer("name=Ada&email=ada%40example.com").await;
        let grant = create_grant(&app, &format!("{}&metadata[a]=1", usd_grant_body(&customer, 700))).await;
        let path = format!("{GRANTS}/{}", id_of(&grant));
        assert_eq!(app.get(&path).await.ok(), grant);

        let expanded = app.get(&format!("{path}?expand[]=customer")).await.ok();
        assert_eq!(expanded["customer"]["id"], customer.as_str());
        assert_eq!(expanded["customer"]["object"], "customer");
        assert_eq!(expanded["customer"]["email"], "ada@example.com");
        let mut unexpanded = expanded.clone();
        unexpanded["customer"] = Value::from(customer.as_str());
        assert_eq!(unexpanded, grant, "expanding changes nothing else");

        let list = app.get(&format!("{GRANTS}?customer={customer}&expand[0]=data.customer")).await.ok();
        assert_eq!(list["data"][0]["customer"]["id"], customer.as_str());
        app.get(&format!("{GRANTS}?customer={customer}&expand[]=customer")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("expand"));
        app.get(&format!("{path}?expand[]=nothing")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("expand"));
    }

    async fn grants_list_newest_first_per_customer_with_exact_has_more(app) {
        let customer = app.create_customer("name=Ada").await;
        let other = app.create_customer("name=Bob").await;
        let mut ids = Vec::new();
        for value in 1..=5 {
            ids.push(id_of(&create_grant(&app, &usd_grant_body(&customer, value * 100)).await));
        }
        let other_grant = id_of(&create_grant(&app, &usd_grant_body(&other, 50)).await);
        ids.reverse();

        let mut seen = Vec::new();
        let mut has_more = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = app.get(&format!("{GRANTS}?customer={customer}&limit=2{cursor}")).await.ok();
            assert_eq!(page["object"], "list");
            assert_eq!(page["url"], GRANTS);
            seen.extend(ids_of(&page));
            has_more.push(page["has_more"].as_bool().unwrap());
            if page["has_more"] == false {
                break;
            }
            cursor = format!("&starting_after={}", seen.last().unwrap());
        }
        assert_eq!(seen, ids, "every grant once, newest first");
        assert_eq!(has_more, [true, true, false]);

        let exact = app.get(&format!("{GRANTS}?customer={customer}&limit=5")).await.ok();
        assert_eq!(ids_of(&exact), ids);
        assert_eq!(exact["has_more"], false, "no more when the page is exactly full");
        assert_eq!(app.get(&format!("{GRANTS}?customer={customer}&limit=4")).await.ok()["has_more"], true);
        let before = app.get(&format!("{GRANTS}?customer={customer}&limit=2&ending_before={}", ids[3])).await.ok();
        assert_eq!(ids_of(&before), ids[1..3]);
        assert_eq!(before["has_more"], true);
        let after_last = app.get(&format!("{GRANTS}?customer={customer}&starting_after={}", ids[4])).await.ok();
        assert_eq!(after_last["data"], json!([]));
        assert_eq!(after_last["has_more"], false);

        assert_eq!(ids_of(&app.get(&format!("{GRANTS}?customer={other}")).await.ok()), [other_grant.as_str()]);
        let everything = app.get(GRANTS).await.ok();
        let mut all = vec![other_grant];
        all.extend(ids.iter().cloned());
        assert_eq!(ids_of(&everything), all, "without customer: all of the account's grants");

        app.get(&format!("{GRANTS}?customer={customer}&limit=0")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("limit"));
        app.get(&format!("{GRANTS}?customer={customer}&limit=101")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("limit"));
        app.get(&format!("{GRANTS}?customer={customer}&starting_after={}&ending_before={}", ids[0], ids[1])).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("ending_before"));
        app.get(&format!("{GRANTS}?customer={customer}&color=red")).await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("color"));
    }

    async fn only_the_expiry_and_metadata_of_a_grant_can_change(app) {
        let customer = app.create_customer("name=Ada").await;
        let created = create_grant(&app, &format!("{}&metadata[a]=1&metadata[b]=2&name=Promo", usd_grant_body(&customer, 1000))).await;
        let path = format!("{GRANTS}/{}", id_of(&created));
        app.advance(10);
        let now = app.now();

        let expiring = app.post(&path, &format!("expires_at={}", now + 1000)).await.ok();
        assert_eq!(expiring["expires_at"], now + 1000);
        assert_eq!(expiring["updated"], now);
        assert_eq!(expiring["created"], created["created"]);
        let mut unchanged = expiring.clone();
        unchanged["expires_at"] = Value::Null;
        unchanged["updated"] = created["updated"].clone();
        assert_eq!(unchanged, created, "nothing but expires_at and updated moved");

        let never = app.post(&path, "expires_at=").await.ok();
        assert_eq!(never["expires_at"], Value::Null, "an empty expires_at removes the expiry");

        let relabelled = app.post(&path, "metadata[a]=&metadata[c]=3&expand[]=customer").await.ok();
        assert_eq!(relabelled["metadata"], json!({"b": "2", "c": "3"}));
        assert_eq!(relabelled["customer"]["id"], customer.as_str());
        assert_eq!(relabelled["expires_at"], Value::Null);

        let effective_at = created["effective_at"].as_i64().unwrap();
        app.post(&path, &format!("expires_at={effective_at}")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("expires_at"));
        app.post(&path, &format!("expires_at={}", effective_at - 5)).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("expires_at"));
        app.post(&path, "expires_at=soon").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid_integer"), Some("expires_at"));
        assert_bad_param(&app.post(&path, "metadata=").await, "metadata");
        app.post(&path, &format!("metadata[{}]=v", "k".repeat(41))).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some(&format!("metadata[{}]", "k".repeat(41))));

        let immutable = [
            ("amount[monetary][value]=5", "amount"),
            ("amount[type]=monetary", "amount"),
            ("applicability_config[scope][price_type]=metered", "applicability_config"),
            ("priority=1", "priority"),
            ("category=promotional", "category"),
            ("customer=cus_test_other", "customer"),
            ("name=Renamed", "name"),
            ("effective_at=1", "effective_at"),
            ("voided_at=1", "voided_at"),
        ];
        for (body, param) in immutable {
            app.post(&path, body).await
                .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some(param));
            // Also when sent next to a field that may change: nothing is applied.
            app.post(&path, &format!("metadata[z]=1&{body}")).await
                .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some(param));
        }

        let after = app.get(&path).await.ok();
        let mut expected = relabelled.clone();
        expected["customer"] = Value::from(customer.as_str());
        assert_eq!(after, expected, "no refused update changed anything");
        assert_eq!(after["name"], "Promo");
        assert_eq!(after["amount"], usd(1000));
        assert_eq!(kinds(&transactions(&app, &customer, None).await), ["credits_granted"], "updates write no entries");
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn the_expiry_of_a_voided_or_expired_grant_cannot_be_changed(app) {
        let customer = app.create_customer("name=Ada").await;
        let voided = id_of(&create_grant(&app, &usd_grant_body(&customer, 100)).await);
        let expired = id_of(&create_grant(&app, &usd_grant_body(&customer, 200)).await);
        app.post(&format!("{GRANTS}/{voided}/void"), "").await.ok();
        app.post(&format!("{GRANTS}/{expired}/expire"), "").await.ok();
        app.advance(5);
        let later = app.now() + 1000;
        for id in [&voided, &expired] {
            let path = format!("{GRANTS}/{id}");
            let before = app.get(&path).await.ok();
            assert_refused(&app.post(&path, &format!("expires_at={later}")).await);
            assert_refused(&app.post(&path, "expires_at=").await);
            assert_eq!(app.get(&path).await.ok(), before, "a refused update changes nothing");
            // Metadata stays editable: only the expiry is frozen.
            let labelled = app.post(&path, "metadata[note]=closed").await.ok();
            assert_eq!(labelled["metadata"], json!({"note": "closed"}));
            assert_eq!(labelled["expires_at"], before["expires_at"]);
            assert_eq!(labelled["voided_at"], before["voided_at"]);
        }
        assert_eq!(transactions(&app, &customer, None).await.len(), 4, "two grants, one write-off each");
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn a_grant_past_its_expiry_cannot_be_revived_before_the_sweeper_runs(app) {
        let customer = app.create_customer("name=Ada").await;
        let grant = create_grant(&app, &format!("{}&expires_at={}", usd_grant_body(&customer, 500), app.now() + 100)).await;
        let path = format!("{GRANTS}/{}", id_of(&grant));
        app.advance(200);
        // It has expired (its remainder is no longer available) even though the sweeper has not
        // written `credits_expired` yet: its expiry can no longer be moved or removed.
        assert_refused(&app.post(&path, &format!("expires_at={}", app.now() + 1000)).await);
        assert_refused(&app.post(&path, "expires_at=").await);
        assert_eq!(app.get(&path).await.ok()["expires_at"], grant["expires_at"]);
        let summary = grant_summary(&app, &customer, &id_of(&grant)).await;
        assert_eq!(balance_in(&summary, "usd"), (0, 500), "expired: unavailable, still on the ledger");
    }

    async fn the_sweepers_candidates_are_exactly_the_grants_the_domain_says_need_an_expiry_entry(app) {
        let customer = app.create_customer("name=Ada").await;
        let now = app.now();
        let with_expiry = |value: i64, expires_at: i64| {
            format!("{}&expires_at={expires_at}", usd_grant_body(&customer, value))
        };
        let lapsing = id_of(&create_grant(&app, &with_expiry(100, now + 50)).await);
        let used_up = id_of(&create_grant(&app, &with_expiry(100, now + 60)).await);
        let later = id_of(&create_grant(&app, &with_expiry(100, now + 5_000)).await);
        let voided = id_of(&create_grant(&app, &with_expiry(100, now + 70)).await);
        let recorded = id_of(&create_grant(&app, &with_expiry(100, now + 10)).await);
        let never = id_of(&create_grant(&app, &usd_grant_body(&customer, 100)).await);
        app.post(&format!("{GRANTS}/{voided}/void"), "").await.ok();
        app.advance(20);
        assert_eq!(sweep(&app).await, 1, "only {recorded} is due yet");
        // Drain `lapsing` (first in burn order) and part of `used_up`: a grant with nothing
        // left still needs its expiry recorded.
        apply_credits(&app, &customer, "in_1", "il_1", 150).await;
        app.advance(100);
        let db = creditd::store::Db::connect(&creditd::store::DbOptions::new(app.database.url.clone())).await.unwrap();
        let candidates: std::collections::BTreeSet<String> =
            creditd::store::credit_grants::due_for_expiry(db.reader(), app.now(), 100)
                .await
                .unwrap()
                .into_iter()
                .map(|due| due.grant_id)
                .collect();
        let ctx = app.context().await;
        let mut needing = std::collections::BTreeSet::new();
        for id in [&lapsing, &used_up, &later, &voided, &recorded, &never] {
            let grant = app.services.get_credit_grant(&ctx, id).await.unwrap();
            if grant.needs_expiry_entry(app.now()) {
                needing.insert(id.clone());
            }
        }
        assert_eq!(candidates, needing);
        assert_eq!(needing, [lapsing.clone(), used_up.clone()].into_iter().collect());
        db.close().await;
    }

    async fn expiring_a_grant_ends_it_now_and_writes_off_the_remainder(app) {
        let customer = app.create_customer("name=Ada").await;
        let created = create_grant(&app, &format!("{}&expires_at={}", usd_grant_body(&customer, 1000), app.now() + 10_000)).await;
        let id = id_of(&created);
        let applied = apply_credits(&app, &customer, "in_1", "il_1", 300).await;
        assert_eq!(applied.applied, 300);
        assert_eq!(applied.remaining_amount_due, 0);
        app.advance(50);
        let now = app.now();

        let expired = app.post(&format!("{GRANTS}/{id}/expire"), "").await.ok();
        assert_eq!(expired["expires_at"], now);
        assert_eq!(expired["voided_at"], Value::Null);
        assert_eq!(expired["updated"], now);
        assert_eq!(expired["amount"], usd(1000), "the granted amount never changes");
        assert_eq!(app.get(&format!("{GRANTS}/{id}")).await.ok(), expired);

        let entries = transactions(&app, &customer, Some(&id)).await;
        assert_eq!(kinds(&entries), ["credits_expired", "credits_applied", "credits_granted"]);
        assert_eq!(entries[0]["type"], "debit");
        assert_eq!(entries[0]["debit"], json!({"amount": usd(700), "type": "credits_expired", "credits_applied": null}));
        assert_eq!(entries[0]["effective_at"], now);
        assert_eq!(entries[0]["credit"], Value::Null);
        assert_eq!(entries[1]["debit"]["amount"], usd(300), "applied credits stay applied");
        assert_eq!(balance_in(&grant_summary(&app, &customer, &id).await, "usd"), (0, 0));

        // Expired credits cannot be spent.
        let nothing = apply_credits(&app, &customer, "in_2", "il_2", 100).await;
        assert_eq!((nothing.applied, nothing.remaining_amount_due), (0, 100));
        assert!(nothing.entries.is_empty());

        // With nothing left, expiring writes no zero-amount entry; the expand param works here too.
        let used_up = id_of(&create_grant(&app, &usd_grant_body(&customer, 200)).await);
        assert_eq!(apply_credits(&app, &customer, "in_3", "il_3", 200).await.applied, 200);
        let expired = app.post(&format!("{GRANTS}/{used_up}/expire"), "expand[]=customer").await.ok();
        assert_eq!(expired["customer"]["id"], customer.as_str());
        assert_eq!(kinds(&transactions(&app, &customer, Some(&used_up)).await), ["credits_applied", "credits_granted"]);
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn voiding_a_grant_keeps_applied_credits_and_writes_off_only_the_remainder(app) {
        let customer = app.create_customer("name=Ada").await;
        let created = create_grant(&app, &usd_grant_body(&customer, 1000)).await;
        let id = id_of(&created);
        let applied = apply_credits(&app, &customer, "in_1", "il_1", 300).await;
        assert_eq!(applied.applied, 300);
        assert_eq!(applied.entries.len(), 1);
        let applied_entry = applied.entries[0].id.clone();
        assert_eq!(applied.entries[0].credit_grant, id);
        app.advance(30);
        let now = app.now();

        let voided = app.post(&format!("{GRANTS}/{id}/void"), "").await.ok();
        assert_eq!(voided["voided_at"], now);
        assert_eq!(voided["expires_at"], Value::Null, "voiding does not set an expiry");
        assert_eq!(voided["updated"], now);
        assert_eq!(voided["amount"], usd(1000));
        assert_eq!(app.get(&format!("{GRANTS}/{id}")).await.ok(), voided);

        let entries = transactions(&app, &customer, Some(&id)).await;
        assert_eq!(kinds(&entries), ["credits_voided", "credits_applied", "credits_granted"]);
        assert_eq!(entries[0]["debit"], json!({"amount": usd(700), "type": "credits_voided", "credits_applied": null}));
        assert_eq!(entries[0]["effective_at"], now);
        // The application is still there, unchanged.
        assert_eq!(id_of(&entries[1]), applied_entry);
        assert_eq!(entries[1]["debit"], json!({
            "amount": usd(300),
            "type": "credits_applied",
            "credits_applied": {"invoice": "in_1", "invoice_line_item": "il_1"},
        }));
        assert_eq!(app.get(&format!("{TXNS}/{applied_entry}")).await.ok(), entries[1]);
        assert_eq!(entries.iter().map(signed_amount).sum::<i64>(), 0);
        assert_eq!(balance_in(&grant_summary(&app, &customer, &id).await, "usd"), (0, 0));

        let nothing = apply_credits(&app, &customer, "in_2", "il_2", 100).await;
        assert_eq!((nothing.applied, nothing.remaining_amount_due), (0, 100), "voided credits cannot be spent");
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn a_grant_cannot_be_expired_or_voided_twice(app) {
        let customer = app.create_customer("name=Ada").await;
        let expired = id_of(&create_grant(&app, &usd_grant_body(&customer, 100)).await);
        let voided = id_of(&create_grant(&app, &usd_grant_body(&customer, 200)).await);
        let lapsed = id_of(&create_grant(&app, &format!("{}&expires_at={}", usd_grant_body(&customer, 300), app.now() + 100)).await);

        app.post(&format!("{GRANTS}/{expired}/expire"), "").await.ok();
        app.post(&format!("{GRANTS}/{voided}/void"), "").await.ok();
        app.advance(200);
        for (id, action) in [
            (&expired, "expire"),
            (&expired, "void"),
            (&voided, "void"),
            (&voided, "expire"),
            (&lapsed, "expire"),
            (&lapsed, "void"),
        ] {
            let before = app.get(&format!("{GRANTS}/{id}")).await.ok();
            let reply = app.post(&format!("{GRANTS}/{id}/{action}"), "").await;
            assert_refused(&reply);
            assert_eq!(app.get(&format!("{GRANTS}/{id}")).await.ok(), before, "{action} of {id} changed nothing");
        }
        assert_eq!(kinds(&transactions(&app, &customer, Some(&expired)).await), ["credits_expired", "credits_granted"]);
        assert_eq!(kinds(&transactions(&app, &customer, Some(&voided)).await), ["credits_voided", "credits_granted"]);
        assert_eq!(kinds(&transactions(&app, &customer, Some(&lapsed)).await), ["credits_granted"], "refusals write nothing");
        let voided_grant = app.get(&format!("{GRANTS}/{voided}")).await.ok();
        assert_eq!(voided_grant["expires_at"], Value::Null);
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn bad_grant_input_gets_the_exact_stripe_error(app) {
        let customer = app.create_customer("name=Ada").await;
        let now = app.now();
        let amount = "amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=1000";
        let scope = "applicability_config[scope][price_type]=metered";
        let valid = usd_grant_body(&customer, 1000);
        let too_many: String = (0..51).map(|i| format!("&metadata[k{i}]=v")).collect();
        let long_key = "k".repeat(41);
        let long_key_param = format!("metadata[{long_key}]");
        let cases: Vec<(String, Option<&str>, &str)> = vec![
            (format!("{amount}&{scope}"), Some("parameter_missing"), "customer"),
            (format!("customer={customer}&amount[monetary][currency]=usd&amount[monetary][value]=1000&{scope}"), Some("parameter_missing"), "amount[type]"),
            (format!("customer={customer}&amount[type]=credits&amount[monetary][currency]=usd&amount[monetary][value]=1000&{scope}"), Some("parameter_invalid"), "amount[type]"),
            (format!("customer={customer}&amount[type]=monetary&amount[monetary][value]=1000&{scope}"), Some("parameter_missing"), "amount[monetary][currency]"),
            (format!("customer={customer}&amount[type]=monetary&amount[monetary][currency]=usd&{scope}"), Some("parameter_missing"), "amount[monetary][value]"),
            (usd_grant_body(&customer, 0), Some("parameter_invalid"), "amount[monetary][value]"),
            (usd_grant_body(&customer, -5), Some("parameter_invalid"), "amount[monetary][value]"),
            (usd_grant_body(&customer, 100_000_000), Some("parameter_invalid"), "amount[monetary][value]"),
            (valid.replace("value]=1000", "value]=1.5"), Some("parameter_invalid_integer"), "amount[monetary][value]"),
            (valid.replace("value]=1000", "value]=ten"), Some("parameter_invalid_integer"), "amount[monetary][value]"),
            (valid.replace("currency]=usd", "currency]=zzz"), Some("parameter_invalid"), "amount[monetary][currency]"),
            (format!("customer={customer}&{amount}&applicability_config[scope][price_type]=licensed"), Some("parameter_invalid"), "applicability_config[scope][price_type]"),
            (format!("{valid}&priority=101"), Some("parameter_invalid"), "priority"),
            (format!("{valid}&priority=-1"), Some("parameter_invalid"), "priority"),
            (format!("{valid}&priority=high"), Some("parameter_invalid_integer"), "priority"),
            (format!("{valid}&category=gift"), Some("parameter_invalid"), "category"),
            (format!("{valid}&effective_at={now}&expires_at={now}"), Some("parameter_invalid"), "expires_at"),
            (format!("{valid}&effective_at={}&expires_at={}", now + 100, now + 50), Some("parameter_invalid"), "expires_at"),
            (format!("{valid}&expires_at={now}"), Some("parameter_invalid"), "expires_at"),
            (format!("{valid}&expires_at={}", now - 60), Some("parameter_invalid"), "expires_at"),
            (format!("{valid}&effective_at=tomorrow"), Some("parameter_invalid_integer"), "effective_at"),
            (format!("{valid}&name={}", "n".repeat(101)), Some("parameter_invalid"), "name"),
            (format!("{valid}{too_many}"), Some("parameter_invalid"), "metadata"),
            (format!("{valid}&metadata[{long_key}]=v"), Some("parameter_invalid"), &long_key_param),
            (format!("{valid}&color=red"), Some("parameter_unknown"), "color"),
            (format!("{valid}&amount[monetary][cents]=5"), Some("parameter_unknown"), "amount[monetary][cents]"),
            (format!("{valid}&voided_at={now}"), Some("parameter_unknown"), "voided_at"),
        ];
        for (body, code, param) in &cases {
            let reply = app.post(GRANTS, body).await;
            assert_eq!(reply.status, 400, "{body}: {}", reply.body);
            reply.assert_error(400, "invalid_request_error", *code, Some(param));
        }

        // Where the exact param is the contract's choice, the code and the field still are not.
        let no_amount = app.post(GRANTS, &format!("customer={customer}&{scope}")).await;
        assert_eq!(no_amount.body["error"]["code"], "parameter_missing", "{}", no_amount.body);
        assert!(
            ["amount", "amount[type]"].contains(&no_amount.body["error"]["param"].as_str().unwrap_or_default()),
            "{}", no_amount.body
        );
        let no_scope = app.post(GRANTS, &format!("customer={customer}&{amount}")).await;
        assert_eq!(no_scope.status, 400, "{}", no_scope.body);
        assert_eq!(no_scope.body["error"]["code"], "parameter_missing", "{}", no_scope.body);
        assert!(no_scope.body["error"]["param"].as_str().unwrap_or_default().starts_with("applicability_config"), "{}", no_scope.body);
        let both = app.post(GRANTS, &format!("{valid}&applicability_config[scope][prices][0][id]=price_x")).await;
        assert_eq!(both.status, 400, "{}", both.body);
        assert_eq!(both.body["error"]["type"], "invalid_request_error", "{}", both.body);
        assert_eq!(both.body["error"]["code"], "parameters_exclusive", "{}", both.body);
        assert!(both.body["error"]["param"].as_str().unwrap_or_default().starts_with("applicability_config[scope]"), "{}", both.body);
        // Credit-grant metadata is a plain object in the spec: `metadata=` is refused.
        assert_bad_param(&app.post(GRANTS, &format!("{valid}&metadata=")).await, "metadata");

        app.post(GRANTS, &usd_grant_body("cus_test_missing", 1000)).await
            .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("customer"));

        assert_eq!(app.get(GRANTS).await.ok()["data"], json!([]), "no failed request created a grant");
        assert!(transactions(&app, &customer, None).await.is_empty(), "no failed request wrote an entry");
    }

    async fn unknown_grant_ids_are_404(app) {
        let path = format!("{GRANTS}/credgr_test_missing");
        assert_not_found(&app.get(&path).await);
        assert_not_found(&app.post(&path, "metadata[a]=1").await);
        assert_not_found(&app.post(&format!("{path}/expire"), "").await);
        assert_not_found(&app.post(&format!("{path}/void"), "").await);
    }

    async fn a_grant_created_twice_with_one_idempotency_key_is_granted_once(app) {
        let customer = app.create_customer("name=Ada").await;
        let body = format!("{}&name=Once&metadata[order]=42", usd_grant_body(&customer, 1000));
        let first = app.post_idempotent(GRANTS, "grant-1", &body).await.ok();
        app.advance(5);
        let second = app.post_idempotent(GRANTS, "grant-1", &body).await.ok();
        assert_eq!(second, first, "the replay is the first response, field for field");
        assert_eq!(ids_of(&app.get(&format!("{GRANTS}?customer={customer}")).await.ok()), [id_of(&first)]);
        assert_eq!(kinds(&transactions(&app, &customer, None).await), ["credits_granted"], "credited once");

        app.post_idempotent(GRANTS, "grant-1", &usd_grant_body(&customer, 999)).await
            .assert_error(400, "idempotency_error", None, None);
        let third = app.post_idempotent(GRANTS, "grant-2", &body).await.ok();
        assert_ne!(third["id"], first["id"]);
        assert_eq!(transactions(&app, &customer, None).await.len(), 2);
        let summary = app.get(&format!("{SUMMARY}?customer={customer}&filter[type]=applicability_scope&filter[applicability_scope][price_type]=metered")).await.ok();
        assert_eq!(balance_in(&summary, "usd"), (2000, 2000));

        // Expire and void are writes too: a replay returns the first result and writes once.
        let id = id_of(&first);
        let voided = app.post_idempotent(&format!("{GRANTS}/{id}/void"), "void-1", "").await.ok();
        app.advance(5);
        assert_eq!(app.post_idempotent(&format!("{GRANTS}/{id}/void"), "void-1", "").await.ok(), voided);
        assert_eq!(kinds(&transactions(&app, &customer, Some(&id)).await), ["credits_voided", "credits_granted"]);
        assert_ledger_invariant(&app, &customer).await;
    }

    async fn another_account_or_mode_cannot_see_or_touch_a_grant(app) {
        let customer = app.create_customer("name=Ada").await;
        let grant = create_grant(&app, &usd_grant_body(&customer, 1000)).await;
        let id = id_of(&grant);
        let entry = id_of(&transactions(&app, &customer, None).await[0]);
        let other_account = app.new_key(false, false).await;
        let live = app.new_key(true, true).await;
        for key in [&other_account, &live] {
            assert_not_found(&app.get_as(Some(key), &format!("{GRANTS}/{id}")).await);
            for (path, body) in [
                (format!("{GRANTS}/{id}"), "metadata[intruder]=1"),
                (format!("{GRANTS}/{id}/expire"), ""),
                (format!("{GRANTS}/{id}/void"), ""),
            ] {
                assert_not_found(&app.request(reqwest::Method::POST, &path, Some(key), None, body).await);
            }
            assert_eq!(app.get_as(Some(key), GRANTS).await.ok()["data"], json!([]));
            assert_not_found(&app.get_as(Some(key), &format!("{TXNS}/{entry}")).await);
            app.request(reqwest::Method::POST, GRANTS, Some(key), None, &usd_grant_body(&customer, 5)).await
                .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("customer"));
            app.get_as(Some(key), &format!("{SUMMARY}?customer={customer}&filter[type]=credit_grant&filter[credit_grant]={id}")).await
                .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("customer"));
        }

        // A live-mode grant of the same account says so, and the test key cannot see it.
        let live_customer = create_customer_as(&app, &live, "name=Live").await;
        let live_grant = app
            .request(reqwest::Method::POST, GRANTS, Some(&live), None, &usd_grant_body(&live_customer, 10))
            .await
            .ok();
        assert!(id_of(&live_grant).starts_with("credgr_") && !id_of(&live_grant).contains("_test_"), "{live_grant}");
        assert_eq!(live_grant["livemode"], true);
        assert_not_found(&app.get(&format!("{GRANTS}/{}", id_of(&live_grant))).await);
        assert_eq!(ids_of(&app.get(GRANTS).await.ok()), [id.as_str()]);

        assert_eq!(app.get(&format!("{GRANTS}/{id}")).await.ok(), grant, "untouched");
        assert_eq!(transactions(&app, &customer, None).await.len(), 1);
        assert_ledger_invariant(&app, &customer).await;
    }
}
