//! A crash between the two steps of an advance leaves the clock `advancing`; resuming it
//! (at start-up or on any replica's sweep) finishes the work exactly once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use creditd::domain::credit_grant::{CreateCreditGrant, GrantFields};
use creditd::domain::customer::{CreateCustomer, CustomerFields};
use creditd::domain::test_clock::{ClockStatus, CreateTestClock};
use creditd::store;

on_every_backend! {
    async fn a_clock_left_advancing_by_a_crash_is_finished_once_when_resumed(app) {
        // The server finishes clocks left advancing when it starts; a first request returns only
        // once it serves, so that start-up pass is over before the crash is simulated below.
        app.get("/v1/customers").await.ok();
        let ctx = app.context().await;
        let services = &app.services;
        let t0 = 1_700_000_000;
        let clock = services
            .create_test_clock(&ctx, CreateTestClock::parse(Some(t0), None, None).unwrap())
            .await
            .unwrap();
        let customer = services
            .create_customer(&ctx, CreateCustomer::parse(CustomerFields::default(), Some(clock.id.clone())).unwrap())
            .await
            .unwrap();
        let grant = services
            .create_credit_grant(
                &ctx,
                CreateCreditGrant::parse(GrantFields {
                    customer: Some(customer.id.clone()),
                    amount_type: Some("monetary".into()),
                    currency: Some("usd".into()),
                    value: Some(800),
                    scope_price_type: Some("metered".into()),
                    expires_at: Some(t0 + 100),
                    ..GrantFields::default()
                })
                .unwrap(),
            )
            .await
            .unwrap();

        // The first step of an advance committed, then the process died.
        let mut crashed = clock.clone();
        crashed.status = ClockStatus::Advancing;
        crashed.target_frozen_time = Some(t0 + 500);
        let tx = services.db.begin().await.unwrap();
        store::test_clocks::save_state(&tx, &crashed).await.unwrap();
        store::commit(tx).await.unwrap();

        let seen = services.get_test_clock(&ctx, &clock.id).await.unwrap();
        assert_eq!(seen.status, ClockStatus::Advancing);
        assert_eq!(seen.frozen_time, t0, "nothing of the advance is visible yet");
        let untouched = services.get_credit_grant(&ctx, &grant.id).await.unwrap();
        assert_eq!(untouched.remaining, 800);
        assert!(services.advance_test_clock(&ctx, &clock.id, t0 + 600).await.is_err(), "no second advance while one is pending");

        // Two replicas resume at once: the work happens exactly once.
        let (first, second) = tokio::join!(services.resume_advancing_test_clocks(), services.resume_advancing_test_clocks());
        assert!(first.unwrap() + second.unwrap() >= 1);
        let ready = services.get_test_clock(&ctx, &clock.id).await.unwrap();
        assert_eq!(ready.status, ClockStatus::Ready);
        assert_eq!(ready.frozen_time, t0 + 500);
        assert_eq!(ready.target_frozen_time, None);

        let entries = app
            .get(&format!("/v1/billing/credit_balance_transactions?customer={}&credit_grant={}", customer.id, grant.id))
            .await
            .ok();
        let expired: Vec<&serde_json::Value> = entries["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry["debit"]["type"] == "credits_expired")
            .collect();
        assert_eq!(expired.len(), 1, "{entries}");
        assert_eq!(expired[0]["debit"]["amount"]["monetary"]["value"], 800);
        assert_eq!(expired[0]["effective_at"], t0 + 100);
        assert_eq!(services.resume_advancing_test_clocks().await.unwrap(), 0);

        // The client whose advance was cut off retries with its key: the clock is where it asked
        // for, so that is its answer (not a 400 for advancing to the current time), stored for
        // the key's later retries; without a key, advancing to the current time stays an error.
        let path = format!("/v1/test_helpers/test_clocks/{}/advance", clock.id);
        let body = format!("frozen_time={}", t0 + 500);
        for _ in 0..2 {
            let retried = app.post_idempotent(&path, "crashed-advance", &body).await.ok();
            assert_eq!(retried["frozen_time"], t0 + 500, "{retried}");
            assert_eq!(retried["status"], "ready");
        }
        app.post(&path, &body)
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("frozen_time"));
        let advancing = app
            .get("/v1/events?type=test_helpers.test_clock.advancing")
            .await
            .ok();
        assert_eq!(advancing["data"].as_array().unwrap().len(), 0, "the retry did no new work: {advancing}");
    }
}
