//! Billing alerts (`credit_balance_threshold`): CRUD and lifecycle over REST (every response
//! checked against Stripe's schema) and gRPC, and firing: one `billing.alert.triggered` per
//! crossing to at or below the threshold, one `creditd.alert.recovered` per rise back above it,
//! in the transaction of the change that crossed, whatever caused it (an application of
//! credits, a grant, the expiry sweeper, a test clock advance) and however many writes race.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::credits::{
    BalanceClient, apply_credits, create_grant, id_of, ids_of, invoice_id, metered_line, sweep,
    usd_grant_body,
};
use common::{TestApp, enc};
use creditd::grpc::proto;
use serde_json::Value;
use tonic::transport::Channel;

const ALERTS: &str = "/v1/billing/alerts";
const TRIGGERED: &str = "billing.alert.triggered";
const RECOVERED: &str = "creditd.alert.recovered";
const DAY: i64 = 24 * 60 * 60;

type AlertClient = proto::alert_service_client::AlertServiceClient<Channel>;

fn alert_body(customer: &str, threshold: i64, extra: &str) -> String {
    format!(
        "alert_type=credit_balance_threshold&title={title}\
         &credit_balance_threshold[filters][0][type]=customer\
         &credit_balance_threshold[filters][0][customer]={customer}\
         &credit_balance_threshold[lte][balance_type]=monetary\
         &credit_balance_threshold[lte][monetary][currency]=usd\
         &credit_balance_threshold[lte][monetary][value]={threshold}{extra}",
        title = enc("Low balance")
    )
}

async fn create_alert(app: &TestApp, customer: &str, threshold: i64) -> String {
    id_of(
        &app.post(ALERTS, &alert_body(customer, threshold, ""))
            .await
            .ok(),
    )
}

/// The alert events (triggered and recovered), oldest first, as (type, alert, value).
async fn alert_events(app: &TestApp) -> Vec<(String, String, i64)> {
    let mut events = Vec::new();
    let mut cursor = String::new();
    loop {
        let list = app
            .get(&format!(
                "/v1/events?limit=100&types[]={TRIGGERED}&types[]={RECOVERED}{cursor}"
            ))
            .await
            .ok();
        let data = list["data"].as_array().unwrap();
        for event in data {
            let object = &event["data"]["object"];
            events.push((
                event["type"].as_str().unwrap().to_string(),
                object["alert"]["id"].as_str().unwrap().to_string(),
                object["value"].as_i64().unwrap(),
            ));
        }
        if list["has_more"] != true {
            break;
        }
        cursor = format!("&starting_after={}", id_of(data.last().unwrap()));
    }
    events.reverse();
    events
}

/// Spends `amount` of the customer's metered USD credits on a fresh invoice line.
async fn debit(app: &TestApp, customer: &str, amount: i64) {
    apply_credits(app, customer, &invoice_id("alert"), "il_1", amount).await;
}

async fn newest_event(app: &TestApp, kind: &str) -> Value {
    let list = app
        .get(&format!("/v1/events?limit=1&type={kind}"))
        .await
        .ok();
    list["data"][0].clone()
}

on_every_backend! {
    async fn holds_move_the_balance_an_alert_watches(app) {
        // A hold lowers available_balance in the same transaction it reserves: the alert fires
        // then, and releasing the hold recovers it.
        let customer = app.create_customer("name=Held").await;
        create_grant(&app, &usd_grant_body(&customer, 1000)).await;
        let alert = create_alert(&app, &customer, 500).await;
        let mut holds = proto::credit_hold_service_client::CreditHoldServiceClient::new(app.channel().await);
        let held = holds
            .create_credit_hold(app.grpc(proto::CreateCreditHoldRequest {
                customer: customer.clone(),
                currency: "usd".to_string(),
                amount: 600,
                price_type: Some("metered".to_string()),
                price: None,
                ttl_seconds: None,
                expires_at: None,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(alert_events(&app).await, vec![(TRIGGERED.to_string(), alert.clone(), 400)]);
        holds
            .release_credit_hold(app.grpc(proto::ReleaseCreditHoldRequest { id: held.id }))
            .await
            .unwrap();
        assert_eq!(
            alert_events(&app).await,
            vec![
                (TRIGGERED.to_string(), alert.clone(), 400),
                (RECOVERED.to_string(), alert, 1000),
            ]
        );
    }

    async fn alerts_are_created_read_listed_and_change_state_over_rest(app) {
        let customer = app.create_customer("name=Ada").await;
        let created = app.post(ALERTS, &alert_body(&customer, 300, "")).await.ok();
        let id = id_of(&created);
        assert!(id.starts_with("alrt_"), "{id}");
        assert_eq!(created["object"], "billing.alert");
        assert_eq!(created["alert_type"], "credit_balance_threshold");
        assert_eq!(created["status"], "active");
        assert_eq!(created["title"], "Low balance");
        assert_eq!(created["livemode"], false);
        assert_eq!(created["usage_threshold"], Value::Null);
        let config = &created["credit_balance_threshold"];
        assert_eq!(config["filters"][0]["type"], "customer");
        assert_eq!(config["filters"][0]["customer"], customer.as_str());
        assert_eq!(config["lte"]["balance_type"], "monetary");
        assert_eq!(config["lte"]["monetary"]["currency"], "usd");
        assert_eq!(config["lte"]["monetary"]["value"], 300);
        assert_eq!(app.get(&format!("{ALERTS}/{id}")).await.ok(), created);
        let replayed = app.post_idempotent(ALERTS, "alert-once", &alert_body(&customer, 7, "")).await.ok();
        assert_eq!(app.post_idempotent(ALERTS, "alert-once", &alert_body(&customer, 7, "")).await.ok(), replayed);
        app.post(&format!("{ALERTS}/{}/archive", id_of(&replayed)), "").await.ok();

        let second = create_alert(&app, &customer, 100).await;
        let other_customer = app.create_customer("name=Bo").await;
        let third = create_alert(&app, &other_customer, 100).await;
        assert_eq!(ids_of(&app.get(ALERTS).await.ok()), [third.clone(), second.clone(), id.clone()]);
        let page = app.get(&format!("{ALERTS}?limit=2")).await.ok();
        assert_eq!(page["has_more"], true);
        assert_eq!(page["url"], ALERTS);
        let rest = app.get(&format!("{ALERTS}?limit=2&starting_after={second}")).await.ok();
        assert_eq!(ids_of(&rest), [id.as_str()]);
        assert_eq!(ids_of(&app.get(&format!("{ALERTS}?customer={customer}")).await.ok()), [second.clone(), id.clone()]);
        assert_eq!(ids_of(&app.get(&format!("{ALERTS}?alert_type=credit_balance_threshold&limit=1")).await.ok()), [third.as_str()]);
        assert!(ids_of(&app.get(&format!("{ALERTS}?alert_type=usage_threshold")).await.ok()).is_empty());

        let deactivated = app.post(&format!("{ALERTS}/{id}/deactivate"), "").await.ok();
        assert_eq!(deactivated["status"], "inactive");
        let activated = app.post(&format!("{ALERTS}/{id}/activate"), "").await.ok();
        assert_eq!(activated["status"], "active");
        let archived = app.post(&format!("{ALERTS}/{id}/archive"), "").await.ok();
        assert_eq!(archived["status"], "archived");
        assert_eq!(app.get(&format!("{ALERTS}/{id}")).await.ok()["status"], "archived");
        assert_eq!(ids_of(&app.get(ALERTS).await.ok()), [third, second]);
        assert_eq!(app.post(&format!("{ALERTS}/{id}/activate"), "").await.status, 400);
        assert_eq!(app.post(&format!("{ALERTS}/{id}/deactivate"), "").await.status, 400);
        assert_eq!(app.post(&format!("{ALERTS}/{id}/archive"), "").await.ok()["status"], "archived");

        app.get(&format!("{ALERTS}/alrt_missing")).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
        app.post(&format!("{ALERTS}/alrt_missing/archive"), "").await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
        app.post(ALERTS, &alert_body("cus_missing", 1, "")).await.assert_error(
            400, "invalid_request_error", Some("resource_missing"),
            Some("credit_balance_threshold[filters][0][customer]"),
        );
        let usage = app.post(ALERTS, "alert_type=usage_threshold&title=x&usage_threshold[gte]=1&usage_threshold[meter]=m&usage_threshold[recurrence]=one_time").await;
        assert_eq!(usage.status, 400, "{}", usage.body);
        assert_eq!(usage.body["error"]["param"], "alert_type");
        app.post(ALERTS, &alert_body(&customer, 1, "&bogus=1")).await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("bogus"));
        let scoped = app.post(ALERTS, &alert_body(&customer, 1, "&credit_balance_threshold[filters][0][credit_grants][applicability_config][scope][prices][0][id]=price_a")).await.ok();
        assert_eq!(
            scoped["credit_balance_threshold"]["filters"][0]["credit_grants"]["applicability_config"]["scope"]["prices"][0]["id"],
            "price_a"
        );
        let both = app.post(ALERTS, &alert_body(&customer, 1, "&credit_balance_threshold[filters][0][credit_grants][applicability_config][scope][prices][0][id]=price_a&credit_balance_threshold[filters][0][credit_grants][applicability_config][scope][price_type]=metered")).await;
        assert_eq!(both.status, 400, "{}", both.body);
    }

    async fn alerts_are_served_over_grpc(app) {
        let customer = app.create_customer("name=Ada").await;
        create_grant(&app, &usd_grant_body(&customer, 1000)).await;
        let mut client = AlertClient::new(app.channel().await);
        let request = |threshold: i64| proto::CreateAlertRequest {
            alert_type: "credit_balance_threshold".into(),
            title: "Low".into(),
            credit_balance_threshold: Some(proto::CreditBalanceThreshold {
                filters: vec![proto::AlertFilter {
                    r#type: "customer".into(),
                    customer: customer.clone(),
                    credit_grants: None,
                }],
                lte: Some(proto::AlertThreshold {
                    balance_type: "monetary".into(),
                    monetary: Some(proto::MonetaryAmount { currency: "usd".into(), value: threshold }),
                }),
            }),
        };
        let above = client.create_alert(app.grpc(request(300))).await.unwrap().into_inner();
        assert_eq!((above.object.as_str(), above.status.as_str(), above.below), ("billing.alert", "active", false));
        let below = client.create_alert(app.grpc(request(5000))).await.unwrap().into_inner();
        assert!(below.below, "created at or below its threshold");
        // Both transports read the same alert.
        let rest = app.get(&format!("{ALERTS}/{}", above.id)).await.ok();
        assert_eq!(rest["credit_balance_threshold"]["lte"]["monetary"]["value"], 300);
        let got = client.get_alert(app.grpc(proto::GetAlertRequest { id: above.id.clone() })).await.unwrap().into_inner();
        assert_eq!(got, above);
        let listed = client.list_alerts(app.grpc(proto::ListAlertsRequest {
            customer: Some(customer.clone()), ..Default::default()
        })).await.unwrap().into_inner();
        assert_eq!(listed.data.iter().map(|a| a.id.clone()).collect::<Vec<_>>(), [below.id.clone(), above.id.clone()]);
        assert_eq!(listed.url, ALERTS);
        let off = client.deactivate_alert(app.grpc(proto::DeactivateAlertRequest { id: above.id.clone() })).await.unwrap().into_inner();
        assert_eq!(off.status, "inactive");
        let on = client.activate_alert(app.grpc(proto::ActivateAlertRequest { id: above.id.clone() })).await.unwrap().into_inner();
        assert_eq!(on.status, "active");
        let archived = client.archive_alert(app.grpc(proto::ArchiveAlertRequest { id: above.id.clone() })).await.unwrap().into_inner();
        assert_eq!(archived.status, "archived");
        let refused = client.activate_alert(app.grpc(proto::ActivateAlertRequest { id: above.id.clone() })).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
        let missing = client.get_alert(app.grpc(proto::GetAlertRequest { id: "alrt_nope".into() })).await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let mut bad = request(-1);
        bad.title = String::new();
        let invalid = client.create_alert(app.grpc(bad)).await.unwrap_err();
        assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    }

    async fn an_alert_fires_once_per_crossing_and_recovers(app) {
        let customer = app.create_customer("name=Ada").await;
        create_grant(&app, &usd_grant_body(&customer, 1000)).await;
        let alert = create_alert(&app, &customer, 300).await;
        assert!(alert_events(&app).await.is_empty(), "nothing at creation above the threshold");

        debit(&app, &customer, 500).await;
        assert!(alert_events(&app).await.is_empty(), "500 is above 300");
        debit(&app, &customer, 200).await;
        assert_eq!(alert_events(&app).await, [(TRIGGERED.to_string(), alert.clone(), 300)], "at the threshold fires");

        let event = newest_event(&app, TRIGGERED).await;
        let object = &event["data"]["object"];
        assert_eq!(object["object"], "billing.alert_triggered");
        assert_eq!(object["customer"], customer.as_str());
        assert_eq!(object["currency"], "usd");
        assert_eq!(object["livemode"], false);
        assert_eq!(object["alert"], app.get(&format!("{ALERTS}/{alert}")).await.ok());
        assert_eq!(object["created"], event["created"]);
        assert_eq!(event["request"]["id"], Value::Null, "an alert triggering is automatic");

        debit(&app, &customer, 100).await;
        debit(&app, &customer, 200).await;
        assert_eq!(alert_events(&app).await.len(), 1, "no second event while below");

        create_grant(&app, &usd_grant_body(&customer, 250)).await;
        assert_eq!(alert_events(&app).await.len(), 1, "250 is still at or below 300");
        create_grant(&app, &usd_grant_body(&customer, 51)).await;
        let events = alert_events(&app).await;
        assert_eq!(events[1], (RECOVERED.to_string(), alert.clone(), 301));
        let recovered = newest_event(&app, RECOVERED).await;
        assert_eq!(recovered["data"]["object"]["object"], "creditd.alert_recovered");

        debit(&app, &customer, 1).await;
        assert_eq!(alert_events(&app).await[2], (TRIGGERED.to_string(), alert, 300), "the next crossing fires again");
    }

    async fn an_alert_created_below_its_threshold_waits_for_a_recovery(app) {
        let customer = app.create_customer("name=Ada").await;
        create_grant(&app, &usd_grant_body(&customer, 100)).await;
        let alert = create_alert(&app, &customer, 300).await;
        debit(&app, &customer, 50).await;
        assert!(alert_events(&app).await.is_empty());
        create_grant(&app, &usd_grant_body(&customer, 500)).await;
        debit(&app, &customer, 300).await;
        assert_eq!(alert_events(&app).await, [
            (RECOVERED.to_string(), alert.clone(), 550),
            (TRIGGERED.to_string(), alert, 250),
        ]);
    }

    async fn expiry_by_the_sweeper_triggers(app) {
        let customer = app.create_customer("name=Ada").await;
        create_grant(&app, &usd_grant_body(&customer, 400)).await;
        create_grant(&app, &format!("{}&expires_at={}", usd_grant_body(&customer, 600), app.now() + 100)).await;
        let alert = create_alert(&app, &customer, 500).await;
        app.advance(200);
        assert!(alert_events(&app).await.is_empty(), "time alone writes nothing");
        assert_eq!(sweep(&app).await, 1);
        assert_eq!(alert_events(&app).await, [(TRIGGERED.to_string(), alert, 400)]);
        assert_eq!(sweep(&app).await, 0);
        assert_eq!(alert_events(&app).await.len(), 1);
    }

    async fn a_test_clock_advance_triggers(app) {
        let frozen = app.now() - 10 * DAY;
        let clock = id_of(&app.post("/v1/test_helpers/test_clocks", &format!("frozen_time={frozen}")).await.ok());
        let customer = app.create_customer(&format!("name=Sim&test_clock={clock}")).await;
        create_grant(&app, &format!("{}&expires_at={}", usd_grant_body(&customer, 250), frozen + DAY)).await;
        let alert = create_alert(&app, &customer, 0).await;
        let advanced = app.post(&format!("/v1/test_helpers/test_clocks/{clock}/advance"), &format!("frozen_time={}", frozen + 2 * DAY)).await;
        assert_eq!(advanced.status, 200, "{}", advanced.body);
        assert_eq!(alert_events(&app).await, [(TRIGGERED.to_string(), alert, 0)]);
    }

    async fn the_applicability_filter_narrows_the_balance(app) {
        let customer = app.create_customer("name=Ada").await;
        let prices = |price: &str| format!(
            "customer={customer}&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]={{}}&applicability_config[scope][prices][0][id]={price}"
        );
        create_grant(&app, &prices("price_y").replace("{}", "1000")).await;
        let scoped = id_of(&app.post(ALERTS, &alert_body(&customer, 100, "&credit_balance_threshold[filters][0][credit_grants][applicability_config][scope][prices][0][id]=price_x")).await.ok());
        let whole = create_alert(&app, &customer, 100).await;
        assert!(alert_events(&app).await.is_empty(), "scoped: 0 at creation, no event");

        create_grant(&app, &prices("price_x").replace("{}", "500")).await;
        assert_eq!(alert_events(&app).await, [(RECOVERED.to_string(), scoped.clone(), 500)]);
        BalanceClient::new(app.channel().await)
            .apply_credits(app.grpc(proto::ApplyCreditsRequest {
                price_type: None,
                price: Some("price_x".into()),
                ..metered_line(&customer, "usd", &invoice_id("scoped"), "il_1", 450)
            }))
            .await
            .unwrap();
        assert_eq!(alert_events(&app).await[1..], [(TRIGGERED.to_string(), scoped, 50)]);
        // The value is the summary's available balance under the same scope filter.
        let summary = app
            .get(&format!(
                "/v1/billing/credit_balance_summary?customer={customer}&filter[type]=applicability_scope&filter[applicability_scope][prices][0][id]=price_x"
            ))
            .await
            .ok();
        assert_eq!(summary["balances"][0]["available_balance"]["monetary"]["value"], 50);
        assert!(alert_events(&app).await.iter().all(|(_, alert, _)| *alert != whole), "1050 left in all");
    }

    async fn inactive_and_archived_alerts_never_fire(app) {
        let customer = app.create_customer("name=Ada").await;
        create_grant(&app, &usd_grant_body(&customer, 1000)).await;
        let inactive = create_alert(&app, &customer, 500).await;
        let archived = create_alert(&app, &customer, 500).await;
        app.post(&format!("{ALERTS}/{inactive}/deactivate"), "").await.ok();
        app.post(&format!("{ALERTS}/{archived}/archive"), "").await.ok();
        debit(&app, &customer, 800).await;
        assert!(alert_events(&app).await.is_empty());
        // Activated while below: its state is taken then, without an event.
        app.post(&format!("{ALERTS}/{inactive}/activate"), "").await.ok();
        debit(&app, &customer, 100).await;
        assert!(alert_events(&app).await.is_empty());
        create_grant(&app, &usd_grant_body(&customer, 1000)).await;
        assert_eq!(alert_events(&app).await, [(RECOVERED.to_string(), inactive, 1100)]);
    }

    async fn concurrent_debits_fire_exactly_once(app) {
        let customer = app.create_customer("name=Ada").await;
        create_grant(&app, &usd_grant_body(&customer, 3000)).await;
        let alert = create_alert(&app, &customer, 1450).await;
        let channel = app.channel().await;
        // On PostgreSQL, half the debits go through a second replica on the same database.
        let replica = match app.backend {
            common::Backend::Postgres => Some(app.spawn_replica().await),
            common::Backend::Sqlite => None,
        };
        let other = match &replica {
            Some(replica) => replica.channel().await,
            None => channel.clone(),
        };
        let mut tasks = Vec::new();
        for i in 0..30 {
            let chosen = if i % 2 == 0 { &channel } else { &other };
            let mut client = BalanceClient::new(chosen.clone());
            let request = app.grpc(metered_line(&customer, "usd", &invoice_id("race"), &format!("il_{i}"), 100));
            tasks.push(tokio::spawn(async move { client.apply_credits(request).await }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(alert_events(&app).await, [(TRIGGERED.to_string(), alert, 1400)]);
    }

    async fn alerts_are_isolated_between_tenants(app) {
        let customer = app.create_customer("name=Ada").await;
        let alert = create_alert(&app, &customer, 1).await;
        let stranger = app.new_key(false, false).await;
        let reply = app.get_as(Some(&stranger), &format!("{ALERTS}/{alert}")).await;
        assert_eq!(reply.status, 404, "{}", reply.body);
        assert!(ids_of(&app.get_as(Some(&stranger), ALERTS).await.ok()).is_empty());
        let live = app.new_key(true, true).await;
        assert_eq!(app.get_as(Some(&live), &format!("{ALERTS}/{alert}")).await.status, 404);
        let reply = app.request(reqwest::Method::POST, ALERTS, Some(&stranger), None, &alert_body(&customer, 1, "")).await;
        assert_eq!(reply.status, 400, "another tenant's customer does not exist: {}", reply.body);
    }

    async fn fired_events_match_a_brute_force_replay(app) {
        let customer = app.create_customer("name=Ada").await;
        create_grant(&app, &usd_grant_body(&customer, 1000)).await;
        let thresholds = [200, 600, 900];
        let mut alerts = Vec::new();
        for threshold in thresholds {
            alerts.push(create_alert(&app, &customer, threshold).await);
        }
        // The model: the balance, and each alert's state (none is below at 1000).
        let mut balance: i64 = 1000;
        let mut below = [false; 3];
        let mut expected = Vec::new();
        let mut seed: u64 = 0x5eed_a1e7;
        let mut next = |bound: i64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 33) as i64) % bound
        };
        for _ in 0..40 {
            if next(3) == 0 {
                let amount = 1 + next(500);
                create_grant(&app, &usd_grant_body(&customer, amount)).await;
                balance += amount;
            } else {
                let amount = 1 + next(300);
                debit(&app, &customer, amount).await;
                balance -= amount.min(balance);
            }
            for (i, threshold) in thresholds.iter().enumerate() {
                let now_below = balance <= *threshold;
                if now_below != below[i] {
                    let kind = if now_below { TRIGGERED } else { RECOVERED };
                    expected.push((kind.to_string(), alerts[i].clone(), balance));
                    below[i] = now_below;
                }
            }
        }
        // Events of one write are in alert-ID order, the order the alerts were created in.
        assert_eq!(alert_events(&app).await, expected);
        assert!(!expected.is_empty());
    }

    async fn fired_events_match_a_replay_with_expiries_sweeps_and_time(app) {
        let customer = app.create_customer("name=Ada").await;
        let thresholds = [0, 150, 400];
        let mut alerts = Vec::new();
        for threshold in thresholds {
            alerts.push(create_alert(&app, &customer, threshold).await);
        }
        // The model: each grant's (expires_at, remaining) in creation order; the balance is what
        // remains of grants not expired at the server's time. All at `below` (balance 0).
        let mut grants: Vec<(Option<i64>, i64)> = Vec::new();
        let mut below = [true; 3];
        let mut expected = Vec::new();
        let available = |grants: &[(Option<i64>, i64)], now: i64| -> i64 {
            grants.iter().filter(|(expires, _)| expires.is_none_or(|at| at > now)).map(|(_, left)| left).sum()
        };
        let mut seed: u64 = 0xa1e7_5eed;
        let mut next = |bound: i64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 33) as i64) % bound
        };
        for step in 0..150 {
            let evaluated = match next(4) {
                0 => {
                    let amount = 1 + next(400);
                    let expires = (next(2) == 0).then(|| app.now() + 1 + next(300));
                    let extra = expires.map_or(String::new(), |at| format!("&expires_at={at}"));
                    create_grant(&app, &format!("{}{extra}", usd_grant_body(&customer, amount))).await;
                    grants.push((expires, amount));
                    true
                }
                1 => {
                    let amount = 1 + next(200);
                    let now = app.now();
                    let applied = apply_credits(&app, &customer, &invoice_id("replay"), "il_1", amount).await.applied;
                    // Burn-down: soonest expiry first (never-expiring last), then creation order.
                    let mut order: Vec<usize> = (0..grants.len())
                        .filter(|&i| grants[i].0.is_none_or(|at| at > now))
                        .collect();
                    order.sort_by_key(|&i| (grants[i].0.unwrap_or(i64::MAX), i));
                    let mut due = amount;
                    for i in order {
                        let draw = due.min(grants[i].1);
                        grants[i].1 -= draw;
                        due -= draw;
                    }
                    assert_eq!(applied, amount - due, "step {step}: the model draws what the server drew");
                    applied > 0
                }
                2 => {
                    app.advance(1 + next(200));
                    false
                }
                _ => {
                    sweep(&app).await;
                    let now = app.now();
                    for grant in &mut grants {
                        if grant.0.is_some_and(|at| at <= now) {
                            grant.1 = 0;
                        }
                    }
                    true
                }
            };
            if !evaluated {
                continue;
            }
            let balance = available(&grants, app.now());
            for (i, threshold) in thresholds.iter().enumerate() {
                let now_below = balance <= *threshold;
                if now_below != below[i] {
                    let kind = if now_below { TRIGGERED } else { RECOVERED };
                    expected.push((kind.to_string(), alerts[i].clone(), balance));
                    below[i] = now_below;
                }
            }
        }
        assert_eq!(alert_events(&app).await, expected);
        assert!(expected.iter().any(|(kind, _, _)| kind == TRIGGERED));
        assert!(expected.iter().any(|(kind, _, _)| kind == RECOVERED));
    }
}
