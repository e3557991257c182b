//! A Stripe webhook handler written against Stripe's docs, with the official Python SDK
//! (`stripe.Webhook.construct_event`, tests/sdk/webhook_receiver.py), receives and verifies every
//! event of a scripted month of credit life on a test clock: grants, applications, a customer
//! balance adjustment, updates, expiry by the clock, a void, a reinstatement, deleting the
//! customer and the clock. Every event the Events API lists arrives, verified, with the body
//! `GET /v1/events/{id}` returns.
//!
//! Needs a Python with the SDK: CREDITD_TEST_STRIPE_PYTHON (set by `.ci/run` through
//! tests/sdk/setup.sh). Without it the test says so and passes, except under CI, where it fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestApp;
use common::credits::{BalanceClient, apply_credits, grant};
use creditd::grpc::proto;
use serde_json::Value;

const PYTHON_ENV: &str = "CREDITD_TEST_STRIPE_PYTHON";
const DAY: i64 = 24 * 60 * 60;

/// The SDK receiver, running, and what it printed.
struct Receiver {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<Value>>>,
    _secret_dir: tempfile::TempDir,
    secret_file: std::path::PathBuf,
}

impl Receiver {
    fn start(python: &str) -> Receiver {
        let secret_dir = tempfile::tempdir().unwrap();
        let secret_file = secret_dir.path().join("secret");
        std::fs::write(&secret_file, "whsec_not_yet").unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/webhook_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .env("WEBHOOK_SECRET_FILE", &secret_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SDK receiver");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let port = first.trim().parse().expect("the receiver's port");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        Receiver {
            child,
            port,
            lines,
            _secret_dir: secret_dir,
            secret_file,
        }
    }

    fn verified(&self) -> HashMap<String, Value> {
        let lines = self.lines.lock().unwrap();
        if let Some(error) = lines.iter().find(|line| line.get("error").is_some()) {
            panic!("a delivery failed the SDK's verification: {error}");
        }
        lines
            .iter()
            .map(|line| (line["id"].as_str().unwrap().to_string(), line.clone()))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> Option<String> {
    match std::env::var(PYTHON_ENV) {
        Ok(python) if !python.is_empty() => Some(python),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "{PYTHON_ENV} must name a Python with the Stripe SDK under CI (tests/sdk/setup.sh)"
            )
        }
        _ => {
            eprintln!("skipped: {PYTHON_ENV} is not set (tests/sdk/setup.sh prints one)");
            None
        }
    }
}

/// Every event of the app's account, oldest first, through the Events API.
async fn all_events(app: &TestApp) -> Vec<Value> {
    let mut events = Vec::new();
    let mut path = "/v1/events?limit=100".to_string();
    loop {
        let page = app.get(&path).await.ok();
        let data = page["data"].as_array().unwrap().clone();
        let last = data
            .last()
            .map(|event| event["id"].as_str().unwrap().to_string());
        events.extend(data);
        match (page["has_more"].as_bool().unwrap(), last) {
            (true, Some(last)) => path = format!("/v1/events?limit=100&starting_after={last}"),
            _ => break,
        }
    }
    events.reverse();
    events
}

/// A month of credit life on a test clock. Returns the customer.
async fn script_a_month(app: &TestApp) -> String {
    let start = app.now();
    let clock = app
        .post(
            "/v1/test_helpers/test_clocks",
            &format!("frozen_time={start}&name=month"),
        )
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app
        .create_customer(&format!(
            "name=Month&email=m@example.com&test_clock={clock}"
        ))
        .await;
    let promo = grant(
        app,
        &format!(
            "customer={customer}&category=promotional&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=5000&applicability_config[scope][price_type]=metered&expires_at={}&priority=10",
            start + 10 * DAY
        ),
    )
    .await;
    let paid = grant(
        app,
        &format!(
            "customer={customer}&category=paid&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=10000&applicability_config[scope][price_type]=metered"
        ),
    )
    .await;
    let advance = |to: i64| {
        let clock = clock.clone();
        async move {
            app.post(
                &format!("/v1/test_helpers/test_clocks/{clock}/advance"),
                &format!("frozen_time={to}"),
            )
            .await
            .ok();
        }
    };
    apply_credits(app, &customer, "in_week1", "il_1", 1500).await;
    app.post(
        &format!("/v1/customers/{customer}/balance_transactions"),
        "amount=-2500&currency=usd&description=goodwill",
    )
    .await
    .ok();
    advance(start + 7 * DAY).await;
    apply_credits(app, &customer, "in_week2", "il_1", 2000).await;
    app.post(
        &format!("/v1/customers/{customer}"),
        "metadata[plan]=pro&name=Month%20Co",
    )
    .await
    .ok();
    // The promotional grant lapses on day 10 with what is left of it.
    advance(start + 14 * DAY).await;
    apply_credits(app, &customer, "in_week3", "il_1", 3000).await;
    // The week-2 invoice is voided: its credits come back (the promotional part lapses again).
    BalanceClient::new(app.channel().await)
        .reinstate_invoice_credits(app.grpc(proto::ReinstateInvoiceCreditsRequest {
            customer: customer.clone(),
            invoice: "in_week2".to_string(),
        }))
        .await
        .expect("reinstate");
    app.post(
        &format!("/v1/billing/credit_grants/{paid}"),
        "metadata[note]=renewed",
    )
    .await
    .ok();
    advance(start + 30 * DAY).await;
    app.post(&format!("/v1/billing/credit_grants/{paid}/void"), "")
        .await
        .ok();
    let _ = promo;
    app.request(
        reqwest::Method::DELETE,
        &format!("/v1/customers/{customer}"),
        Some(&app.key),
        None,
        "",
    )
    .await
    .ok();
    app.request(
        reqwest::Method::DELETE,
        &format!("/v1/test_helpers/test_clocks/{clock}"),
        Some(&app.key),
        None,
        "",
    )
    .await
    .ok();
    customer
}

on_every_backend! {
    async fn a_stripe_sdk_handler_verifies_every_event_of_a_month(app) {
        let Some(python) = python() else { return };
        let receiver = Receiver::start(&python);
        let endpoint = app
            .post(
                "/v1/webhook_endpoints",
                &format!(
                    "url=http://127.0.0.1:{}/webhook&enabled_events[]=*",
                    receiver.port
                ),
            )
            .await
            .ok();
        let secret = endpoint["secret"].as_str().unwrap();
        assert!(secret.starts_with("whsec_"), "{endpoint}");
        std::fs::write(&receiver.secret_file, secret).unwrap();

        script_a_month(&app).await;

        let events = all_events(&app).await;
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        for expected in [
            "test_helpers.test_clock.created",
            "customer.created",
            "billing.credit_grant.created",
            "billing.credit_balance_transaction.created",
            "customer.updated",
            "test_helpers.test_clock.advancing",
            "test_helpers.test_clock.ready",
            "billing.credit_grant.updated",
            "customer.deleted",
            "test_helpers.test_clock.deleted",
        ] {
            assert!(types.contains(&expected), "no {expected} in {types:?}");
        }
        let expired = events.iter().any(|event| {
            event["type"] == "billing.credit_balance_transaction.created"
                && event["data"]["object"]["type"] == "debit"
                && event["data"]["object"]["debit"]["type"] == "credits_expired"
        });
        assert!(expired, "the clock's lapse of the promotional grant has its event");

        let deadline = Instant::now() + Duration::from_secs(60);
        let verified = loop {
            let verified = receiver.verified();
            if events.iter().all(|event| verified.contains_key(event["id"].as_str().unwrap())) {
                break verified;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} events delivered and verified",
                verified.len(),
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!("{} events delivered and verified by the Stripe SDK", verified.len());
        assert_eq!(verified.len(), events.len(), "nothing but the account's events arrives");
        for event in &events {
            let id = event["id"].as_str().unwrap();
            let mut delivered: Value =
                serde_json::from_str(verified[id]["raw"].as_str().unwrap()).unwrap();
            let mut listed = event.clone();
            // Only `pending_webhooks` moves after the event is created (it counts this delivery).
            delivered.as_object_mut().unwrap().remove("pending_webhooks");
            listed.as_object_mut().unwrap().remove("pending_webhooks");
            assert_eq!(delivered, listed, "the delivered body of {id} is the event");
        }
        // Once delivered, nothing is pending.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pending: i64 = all_events(&app)
                .await
                .iter()
                .map(|event| event["pending_webhooks"].as_i64().unwrap())
                .sum();
            if pending == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{pending} deliveries still pending");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
