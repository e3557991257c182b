//! Webhook endpoints and deliveries: CRUD over REST (checked against Stripe's `webhook_endpoint`
//! schema) and gRPC, the secret shown only at creation, `enabled_events` validation; and signed
//! deliveries to a real HTTP receiver in the test, which verifies `Stripe-Signature` exactly as
//! Stripe's SDKs do (every `v1`, HMAC-SHA256 keyed with the whole secret, 300 s tolerance):
//! subscriptions (`*` and specific types), disabled and deleted endpoints, `pending_webhooks`
//! going from N to 0, retries with backoff, tenant isolation, two replicas delivering each
//! event once, and a SIGKILLed server whose deliveries survive the crash.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{Backend, TestApp, TestDatabase, enc};
use creditd::config::ServeConfig;
use creditd::domain::Tenant;
use creditd::grpc::proto;
use creditd::store::events::StreamQuery;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Stripe's SDKs' default tolerance (`DEFAULT_TOLERANCE = 300`).
const TOLERANCE_SECONDS: i64 = 300;

// ---------------------------------------------------------------------------------------------
// A receiver that verifies signatures the way Stripe's SDKs do.

/// HMAC-SHA256 (RFC 2104), written here independently of the server's.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `stripe.Webhook.construct_event`'s check: the header's `t` and every `v1` (other keys
/// ignored); one `v1` must equal hex(HMAC-SHA256(secret as UTF-8, "<t>.<payload>")), and `t`
/// must not be older than the tolerance.
fn verify_signature(payload: &str, header: &str, secret: &str, now: i64) -> Result<(), String> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" => signatures.push(value.to_string()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("no timestamp in the header")?;
    if signatures.is_empty() {
        return Err("no v1 signature in the header".into());
    }
    let expected = hex::encode(hmac_sha256(
        secret.as_bytes(),
        format!("{timestamp}.{payload}").as_bytes(),
    ));
    if !signatures.contains(&expected) {
        return Err("no signature matches the payload".into());
    }
    if timestamp < now - TOLERANCE_SECONDS {
        return Err("timestamp outside the tolerance zone".into());
    }
    Ok(())
}

#[test]
fn the_verifier_accepts_a_good_signature_and_rejects_bad_ones() {
    let secret = "whsec_abc";
    let now = unix_now();
    let sign = |t: i64, body: &str| {
        hex::encode(hmac_sha256(
            secret.as_bytes(),
            format!("{t}.{body}").as_bytes(),
        ))
    };
    let good = format!("t={now},v1=deadbeef,v1={},v0=x", sign(now, "{}"));
    assert!(verify_signature("{}", &good, secret, now).is_ok());
    assert!(verify_signature("{ }", &good, secret, now).is_err());
    assert!(verify_signature("{}", &good, "whsec_other", now).is_err());
    let old = now - 301;
    let stale = format!("t={old},v1={}", sign(old, "{}"));
    assert!(verify_signature("{}", &stale, secret, now).is_err());
}

#[derive(Debug, Clone)]
struct Received {
    body: Value,
    content_type: String,
    user_agent: String,
    verified: Result<(), String>,
    /// What the receiver answered.
    status: u16,
}

#[derive(Default)]
struct ReceiverState {
    secret: Mutex<Option<String>>,
    received: Mutex<Vec<Received>>,
    /// Requests answered 500 before any other answer.
    fail_next: AtomicUsize,
    unhealthy: AtomicBool,
    /// Failures answer a redirect to `/redirected` instead of 500.
    redirect: AtomicBool,
    /// Requests that followed a redirect.
    followed: AtomicUsize,
}

/// An HTTP receiver on 127.0.0.1 that verifies each delivery and records it.
#[derive(Clone)]
struct Receiver {
    state: Arc<ReceiverState>,
    url: String,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .route(
                "/redirected",
                axum::routing::any(async |State(state): State<Arc<ReceiverState>>| {
                    state.followed.fetch_add(1, Ordering::SeqCst);
                    StatusCode::OK
                }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver { state, url }
    }

    fn set_secret(&self, secret: &str) {
        *self.state.secret.lock().unwrap() = Some(secret.to_string());
    }

    fn set_healthy(&self, healthy: bool) {
        self.state.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    fn redirect_failures(&self) {
        self.state.redirect.store(true, Ordering::SeqCst);
    }

    fn followed_redirects(&self) -> usize {
        self.state.followed.load(Ordering::SeqCst)
    }

    fn fail_next(&self, requests: usize) {
        self.state.fail_next.store(requests, Ordering::SeqCst);
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    fn requests(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// Event IDs answered 2xx, with how many times each was.
    fn delivered(&self) -> BTreeMap<String, usize> {
        let mut delivered = BTreeMap::new();
        for received in self.received() {
            if received.status == 200 {
                *delivered
                    .entry(received.body["id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        delivered
    }

    /// Types of the events answered 2xx, once each.
    fn delivered_types(&self) -> BTreeSet<String> {
        self.received()
            .into_iter()
            .filter(|received| received.status == 200)
            .map(|received| received.body["type"].as_str().unwrap().to_string())
            .collect()
    }

    #[track_caller]
    fn assert_all_verified(&self) {
        for received in self.received() {
            assert_eq!(
                received.verified,
                Ok(()),
                "a delivery failed verification: {}",
                received.body
            );
            assert_eq!(received.content_type, "application/json; charset=utf-8");
            assert!(received.user_agent.starts_with("creditd/"));
        }
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let payload = String::from_utf8(body.to_vec()).unwrap_or_default();
    let verified = match state.secret.lock().unwrap().as_deref() {
        None => Err("the receiver has no secret yet".to_string()),
        Some(secret) => verify_signature(&payload, &header("stripe-signature"), secret, unix_now()),
    };
    let status = if verified.is_err() {
        StatusCode::BAD_REQUEST
    } else if state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok()
        || state.unhealthy.load(Ordering::SeqCst)
    {
        if state.redirect.load(Ordering::SeqCst) {
            StatusCode::FOUND
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    } else {
        StatusCode::OK
    };
    state.received.lock().unwrap().push(Received {
        body: serde_json::from_str(&payload).unwrap_or(Value::Null),
        content_type: header("content-type"),
        user_agent: header("user-agent"),
        verified,
        status: status.as_u16(),
    });
    if status == StatusCode::FOUND {
        return (status, [("location", "/redirected")]).into_response();
    }
    status.into_response()
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Retries come within tens of milliseconds, so tests of failures take well under a second.
fn fast_retries(config: &mut ServeConfig) {
    config.webhooks.webhook_first_retry_seconds = 0.05;
    config.webhooks.webhook_max_retry_delay_seconds = 0.2;
    config.webhooks.webhook_poll_interval_ms = 50;
    config.webhooks.webhook_timeout_seconds = 2.0;
}

fn refuse_private(config: &mut ServeConfig) {
    config.webhooks.webhook_refuse_private_addresses = true;
}

/// Like `on_every_backend!`, with the server configured by `$configure` first; the tests go in
/// module `$group` (`$group::sqlite::…`, `$group::postgres::…`).
macro_rules! on_every_backend_with {
    ($group:ident, $configure:path; $(async fn $name:ident($app:ident) $body:block)*) => {
        mod $group {
            #[allow(unused_imports)]
            use super::*;
            mod sqlite {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let $app = TestApp::spawn_with(Backend::Sqlite, $configure).await;
                        $body
                    }
                )*
            }
            mod postgres {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        if !common::postgres_configured() {
                            eprintln!("skipped on PostgreSQL: {} is not set (SQLite only)", common::POSTGRES_URL_ENV);
                            return;
                        }
                        let $app = TestApp::spawn_with(Backend::Postgres, $configure).await;
                        $body
                    }
                )*
            }
        }
    };
}

fn endpoint_body(url: &str, events: &[&str]) -> String {
    let mut body = format!("url={}", enc(url));
    for event in events {
        body.push_str(&format!("&enabled_events[]={}", enc(event)));
    }
    body
}

/// Creates an endpoint over REST for `receiver` and gives the receiver its secret.
async fn subscribe(app: &TestApp, receiver: &Receiver, events: &[&str]) -> String {
    let endpoint = app
        .post(
            "/v1/webhook_endpoints",
            &endpoint_body(&receiver.url, events),
        )
        .await
        .ok();
    receiver.set_secret(endpoint["secret"].as_str().unwrap());
    endpoint["id"].as_str().unwrap().to_string()
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, seconds: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn tenant(app: &TestApp) -> Tenant {
    app.context().await.tenant
}

/// Every event of the tenant, in stream order (waits for PostgreSQL's numbering).
async fn all_events(app: &TestApp, expected: usize) -> Vec<creditd::domain::event::Event> {
    let tenant = tenant(app).await;
    let mut events = Vec::new();
    eventually("events numbered", 10, async || {
        events = creditd::store::events::read_after(
            app.services.db.reader(),
            &StreamQuery {
                tenant: &tenant,
                after: 0,
                types: &[],
                customer_id: None,
                limit: 1000,
            },
        )
        .await
        .unwrap();
        events.len() >= expected
    })
    .await;
    events
}

async fn stored_event(app: &TestApp, id: &str) -> creditd::domain::event::Event {
    creditd::store::events::find(app.services.db.reader(), &tenant(app).await, id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no stored event {id}"))
}

/// The delivered body is the stored event rendered as Stripe's `event` (`pending_webhooks` is
/// whatever it was when that attempt was sent).
#[track_caller]
fn assert_body_is_event(body: &Value, event: &creditd::domain::event::Event) {
    assert_eq!(body["id"], event.id.as_str());
    assert_eq!(body["object"], "event");
    assert_eq!(body["type"], event.kind.as_str());
    assert_eq!(body["created"], event.created);
    assert_eq!(body["livemode"], event.livemode);
    assert_eq!(body["api_version"], event.api_version.as_str());
    assert_eq!(
        body["data"],
        serde_json::from_str::<Value>(&event.data).unwrap()
    );
    assert_eq!(body["request"]["id"].as_str(), event.request.id.as_deref());
    assert_eq!(
        body["request"]["idempotency_key"].as_str(),
        event.request.idempotency_key.as_deref()
    );
    assert!(body["pending_webhooks"].as_i64().unwrap() >= 1);
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "object",
            "api_version",
            "created",
            "data",
            "livemode",
            "pending_webhooks",
            "request",
            "type"
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// CRUD.

on_every_backend! {
    async fn endpoints_are_created_read_updated_listed_and_deleted_over_rest(app) {
        let created = app
            .post_idempotent(
                "/v1/webhook_endpoints",
                "we-create-1",
                &format!(
                    "{}&description=Billing&metadata[team]=core&api_version=2024-06-20&connect=false",
                    endpoint_body("https://example.com/hooks", &["customer.created", "*"])
                ),
            )
            .await
            .ok();
        let id = created["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("we_test_"), "{id}");
        assert_eq!(created["object"], "webhook_endpoint");
        assert_eq!(created["status"], "enabled");
        assert_eq!(created["url"], "https://example.com/hooks");
        assert_eq!(created["enabled_events"], serde_json::json!(["customer.created", "*"]));
        assert_eq!(created["description"], "Billing");
        assert_eq!(created["metadata"], serde_json::json!({"team": "core"}));
        assert_eq!(created["api_version"], "2024-06-20");
        assert_eq!(created["application"], Value::Null);
        assert_eq!(created["livemode"], false);
        let secret = created["secret"].as_str().unwrap();
        assert!(secret.starts_with("whsec_") && secret.len() >= 6 + 32, "{secret}");

        // The same idempotency key replays the same endpoint (and its secret).
        let replayed = app
            .post_idempotent(
                "/v1/webhook_endpoints",
                "we-create-1",
                &format!(
                    "{}&description=Billing&metadata[team]=core&api_version=2024-06-20&connect=false",
                    endpoint_body("https://example.com/hooks", &["customer.created", "*"])
                ),
            )
            .await
            .ok();
        assert_eq!(replayed, created);

        // Nowhere else is the secret shown: not even as a key.
        let fetched = app.get(&format!("/v1/webhook_endpoints/{id}")).await.ok();
        assert!(fetched.get("secret").is_none(), "{fetched}");
        let mut without_secret = created.clone();
        without_secret.as_object_mut().unwrap().remove("secret");
        assert_eq!(fetched, without_secret);

        let updated = app
            .post(
                &format!("/v1/webhook_endpoints/{id}"),
                "url=https://example.org/other&enabled_events[]=billing.credit_grant.created\
                 &description=&disabled=true&metadata[team]=&metadata[env]=test",
            )
            .await
            .ok();
        assert!(updated.get("secret").is_none());
        assert_eq!(updated["url"], "https://example.org/other");
        assert_eq!(updated["enabled_events"], serde_json::json!(["billing.credit_grant.created"]));
        assert_eq!(updated["description"], Value::Null);
        assert_eq!(updated["status"], "disabled");
        assert_eq!(updated["metadata"], serde_json::json!({"env": "test"}));
        assert_eq!(updated["api_version"], "2024-06-20");
        let enabled = app
            .post(&format!("/v1/webhook_endpoints/{id}"), "disabled=false")
            .await
            .ok();
        assert_eq!(enabled["status"], "enabled");

        // api_version and connect cannot be changed.
        for param in ["api_version=2026-07-29.dahlia", "connect=false"] {
            app.post(&format!("/v1/webhook_endpoints/{id}"), param)
                .await
                .assert_error(
                    400,
                    "invalid_request_error",
                    Some("parameter_unknown"),
                    Some(param.split('=').next().unwrap()),
                );
        }

        // Newest first, keyset pages.
        let second = app
            .post("/v1/webhook_endpoints", &endpoint_body("https://example.com/2", &["*"]))
            .await
            .ok();
        let second_id = second["id"].as_str().unwrap().to_string();
        let page = app.get("/v1/webhook_endpoints?limit=1").await.ok();
        assert_eq!(page["object"], "list");
        assert_eq!(page["url"], "/v1/webhook_endpoints");
        assert_eq!(page["has_more"], true);
        assert_eq!(page["data"][0]["id"], second_id.as_str());
        assert!(page["data"][0].get("secret").is_none());
        let next = app
            .get(&format!("/v1/webhook_endpoints?limit=1&starting_after={second_id}"))
            .await
            .ok();
        assert_eq!(next["has_more"], false);
        assert_eq!(next["data"][0]["id"], id.as_str());

        // Another account sees none of them.
        let other = app.new_key(false, false).await;
        let foreign = app.get_as(Some(&other), "/v1/webhook_endpoints").await.ok();
        assert_eq!(foreign["data"], serde_json::json!([]));
        app.get_as(Some(&other), &format!("/v1/webhook_endpoints/{id}"))
            .await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));

        let deleted = app
            .request(reqwest::Method::DELETE, &format!("/v1/webhook_endpoints/{id}"), Some(&app.key), None, "")
            .await
            .ok();
        assert_eq!(deleted, serde_json::json!({"id": id, "object": "webhook_endpoint", "deleted": true}));
        app.get(&format!("/v1/webhook_endpoints/{id}"))
            .await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
        app.request(reqwest::Method::DELETE, &format!("/v1/webhook_endpoints/{id}"), Some(&app.key), None, "")
            .await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
    }

    async fn endpoint_parameters_are_validated(app) {
        let app = &app;
        let create = |body: String| async move { app.post("/v1/webhook_endpoints", &body).await };
        create(endpoint_body("https://example.com", &["customer.created", "charge.succeeded"]))
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("enabled_events"));
        create(endpoint_body("https://example.com", &["customer.*"]))
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("enabled_events"));
        create("url=https://example.com".into())
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("enabled_events"));
        create("enabled_events[]=*".into())
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("url"));
        for url in ["ftp://example.com/x", "example.com/hook", "http://user:pw@example.com/"] {
            create(endpoint_body(url, &["*"]))
                .await
                .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("url"));
        }
        create(format!("{}&connect=true", endpoint_body("https://example.com", &["*"])))
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("connect"));
        create(format!("{}&api_version=latest", endpoint_body("https://example.com", &["*"])))
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("api_version"));
        create(format!("{}&disabled=true", endpoint_body("https://example.com", &["*"])))
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("disabled"));
        let id = app
            .post("/v1/webhook_endpoints", &endpoint_body("https://example.com", &["*"]))
            .await
            .ok()["id"]
            .as_str()
            .unwrap()
            .to_string();
        app.post(&format!("/v1/webhook_endpoints/{id}"), "enabled_events[]=nope")
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("enabled_events"));
        app.post("/v1/webhook_endpoints/we_test_missing", "disabled=true")
            .await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
    }

    async fn the_grpc_service_reports_serving(app) {
        let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
        let response = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "creditd.v1.WebhookEndpointService".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    async fn endpoints_are_managed_over_grpc(app) {
        let mut client = proto::webhook_endpoint_service_client::WebhookEndpointServiceClient::new(
            app.channel().await,
        );
        let created = client
            .create_webhook_endpoint(app.grpc(proto::CreateWebhookEndpointRequest {
                url: "https://example.com/grpc".into(),
                enabled_events: vec!["customer.created".into()],
                description: Some("from gRPC".into()),
                metadata: [("k".to_string(), "v".to_string())].into(),
                api_version: None,
                connect: Some(false),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(created.id.starts_with("we_test_"));
        assert_eq!(created.object, "webhook_endpoint");
        assert_eq!(created.status, "enabled");
        assert!(created.secret.as_deref().unwrap().starts_with("whsec_"));
        let fetched = client
            .get_webhook_endpoint(app.grpc(proto::GetWebhookEndpointRequest { id: created.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fetched.secret, None);
        assert_eq!(fetched.url, created.url);
        // REST reads what gRPC wrote.
        let rest = app.get(&format!("/v1/webhook_endpoints/{}", created.id)).await.ok();
        assert_eq!(rest["description"], "from gRPC");
        assert_eq!(rest["enabled_events"], serde_json::json!(["customer.created"]));

        let updated = client
            .update_webhook_endpoint(app.grpc(proto::UpdateWebhookEndpointRequest {
                id: created.id.clone(),
                url: None,
                enabled_events: vec!["*".into()],
                description: Some(String::new()),
                disabled: Some(true),
                metadata: Default::default(),
                clear_metadata: true,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.status, "disabled");
        assert_eq!(updated.description, None);
        assert_eq!(updated.enabled_events, vec!["*".to_string()]);
        assert!(updated.metadata.is_empty());
        assert_eq!(updated.secret, None);

        let invalid = client
            .create_webhook_endpoint(app.grpc(proto::CreateWebhookEndpointRequest {
                url: "https://example.com".into(),
                enabled_events: vec!["invoice.paid".into()],
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

        let listed = client
            .list_webhook_endpoints(app.grpc(proto::ListWebhookEndpointsRequest { page: None }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.url, "/v1/webhook_endpoints");
        assert_eq!(listed.data.len(), 1);
        assert_eq!(listed.data[0].secret, None);

        let deleted = client
            .delete_webhook_endpoint(app.grpc(proto::DeleteWebhookEndpointRequest { id: created.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert!(deleted.deleted);
        assert_eq!(deleted.object, "webhook_endpoint");
        let missing = client
            .get_webhook_endpoint(app.grpc(proto::GetWebhookEndpointRequest { id: created.id }))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }
}

// ---------------------------------------------------------------------------------------------
// Deliveries.

on_every_backend_with! { deliveries, super::fast_retries;
    async fn deliveries_are_signed_subscribed_and_counted_down(app) {
        let everything = Receiver::start().await;
        let customers_only = Receiver::start().await;
        let disabled = Receiver::start().await;
        let everything_id = subscribe(&app, &everything, &["*"]).await;
        subscribe(&app, &customers_only, &["customer.created"]).await;
        let disabled_id = subscribe(&app, &disabled, &["*"]).await;
        app.post(&format!("/v1/webhook_endpoints/{disabled_id}"), "disabled=true").await.ok();
        // Nothing succeeds yet, so each event's pending_webhooks shows its matching endpoints.
        everything.set_healthy(false);
        customers_only.set_healthy(false);

        let customer = app.create_customer("name=Ada").await;
        common::credits::grant(&app, &common::credits::usd_grant_body(&customer, 1000)).await;

        let events = all_events(&app, 3).await;
        let kinds: BTreeSet<&str> = events.iter().map(|event| event.kind.as_str()).collect();
        assert_eq!(
            kinds,
            BTreeSet::from([
                "customer.created",
                "billing.credit_grant.created",
                "billing.credit_balance_transaction.created"
            ])
        );
        for event in &events {
            let expected = if event.kind == "customer.created" { 2 } else { 1 };
            assert_eq!(event.pending_webhooks, expected, "{}", event.kind);
        }
        eventually("failed attempts", 10, async || everything.requests() >= 3).await;

        everything.set_healthy(true);
        customers_only.set_healthy(true);
        eventually("every event delivered", 20, async || {
            everything.delivered().len() == events.len() && customers_only.delivered().len() == 1
        })
        .await;
        everything.assert_all_verified();
        customers_only.assert_all_verified();
        assert_eq!(everything.delivered_types(), kinds.iter().map(|k| k.to_string()).collect());
        assert_eq!(customers_only.delivered_types(), BTreeSet::from(["customer.created".to_string()]));
        for received in everything.received().iter().chain(customers_only.received().iter()) {
            let id = received.body["id"].as_str().unwrap();
            assert_body_is_event(&received.body, &stored_event(&app, id).await);
        }
        // Each 2xx took one off; nothing is pending any more.
        eventually("pending_webhooks at 0", 10, async || {
            let mut all_zero = true;
            for event in &events {
                all_zero &= stored_event(&app, &event.id).await.pending_webhooks == 0;
            }
            all_zero
        })
        .await;
        let deliveries = creditd::store::webhooks::deliveries_to(app.services.db.reader(), &everything_id)
            .await
            .unwrap();
        assert_eq!(deliveries.len(), 3);
        assert!(deliveries.iter().all(|d| d.state == "succeeded" && d.last_status == Some(200)));

        // Events created while an endpoint is disabled are never sent to it, even once enabled.
        app.create_customer("name=While-disabled").await;
        app.post(&format!("/v1/webhook_endpoints/{disabled_id}"), "disabled=false").await.ok();
        let after = app.create_customer("name=After").await;
        eventually("the later event delivered", 10, async || {
            disabled.delivered().len() == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let received = disabled.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].body["data"]["object"]["id"], after.as_str());
        disabled.assert_all_verified();
    }

    async fn a_failing_receiver_is_retried_with_backoff_until_it_succeeds(app) {
        let receiver = Receiver::start().await;
        let endpoint = subscribe(&app, &receiver, &["customer.created"]).await;
        receiver.fail_next(2);
        app.create_customer("name=Retry").await;
        eventually("delivered after two failures", 20, async || receiver.delivered().len() == 1).await;
        let received = receiver.received();
        assert_eq!(received.len(), 3, "two 500s, then 200");
        assert_eq!(received.iter().map(|r| r.status).collect::<Vec<_>>(), vec![500, 500, 200]);
        let ids: BTreeSet<String> = received.iter().map(|r| r.body["id"].to_string()).collect();
        assert_eq!(ids.len(), 1, "the same event each time");
        receiver.assert_all_verified();
        eventually("recorded", 10, async || {
            let deliveries = creditd::store::webhooks::deliveries_to(app.services.db.reader(), &endpoint)
                .await
                .unwrap();
            deliveries.len() == 1 && deliveries[0].state == "succeeded" && deliveries[0].attempts == 3
        })
        .await;
    }

    async fn a_deleted_endpoint_stops_retrying(app) {
        let receiver = Receiver::start().await;
        let endpoint = subscribe(&app, &receiver, &["*"]).await;
        receiver.set_healthy(false);
        app.create_customer("name=Doomed").await;
        eventually("a few failed attempts", 10, async || receiver.requests() >= 2).await;
        app.request(reqwest::Method::DELETE, &format!("/v1/webhook_endpoints/{endpoint}"), Some(&app.key), None, "")
            .await
            .ok();
        // An attempt already on its way may still land; nothing after it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let seen = receiver.requests();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(receiver.requests(), seen, "retries went on after the endpoint was deleted");
        let deliveries = creditd::store::webhooks::deliveries_to(app.services.db.reader(), &endpoint)
            .await
            .unwrap();
        assert_eq!(deliveries.len(), 1);
        assert_eq!(deliveries[0].state, "failed");
    }

    async fn a_disabled_endpoint_stops_retrying(app) {
        let receiver = Receiver::start().await;
        let endpoint = subscribe(&app, &receiver, &["customer.created"]).await;
        receiver.set_healthy(false);
        app.create_customer("name=Paused").await;
        eventually("a few failed attempts", 10, async || receiver.requests() >= 2).await;
        app.post(&format!("/v1/webhook_endpoints/{endpoint}"), "disabled=true").await.ok();
        eventually("the delivery stopped", 10, async || {
            let deliveries = creditd::store::webhooks::deliveries_to(app.services.db.reader(), &endpoint)
                .await
                .unwrap();
            deliveries[0].state == "failed"
                && deliveries[0].last_error.as_deref() == Some("the endpoint is disabled")
        })
        .await;
        let seen = receiver.requests();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(receiver.requests(), seen, "retries went on after the endpoint was disabled");
    }

    async fn a_redirect_is_a_failure_and_is_not_followed(app) {
        let receiver = Receiver::start().await;
        let endpoint = subscribe(&app, &receiver, &["customer.created"]).await;
        receiver.redirect_failures();
        receiver.fail_next(1);
        app.create_customer("name=Redirected").await;
        eventually("delivered after the redirect", 10, async || receiver.delivered().len() == 1).await;
        assert_eq!(receiver.followed_redirects(), 0);
        assert_eq!(
            receiver.received().iter().map(|r| r.status).collect::<Vec<_>>(),
            vec![302, 200]
        );
        eventually("recorded", 10, async || {
            let deliveries = creditd::store::webhooks::deliveries_to(app.services.db.reader(), &endpoint)
                .await
                .unwrap();
            deliveries[0].state == "succeeded" && deliveries[0].attempts == 2
        })
        .await;
    }

    async fn another_tenants_events_never_reach_an_endpoint(app) {
        let receiver = Receiver::start().await;
        subscribe(&app, &receiver, &["*"]).await;
        let other_account = app.new_key(false, false).await;
        let live_same_account = app.new_key(true, true).await;
        for key in [&other_account, &live_same_account] {
            app.request(reqwest::Method::POST, "/v1/customers", Some(key), None, "name=Elsewhere")
                .await
                .ok();
        }
        // The other account's own endpoint gets its own events only.
        let theirs = Receiver::start().await;
        let created = app
            .request(
                reqwest::Method::POST,
                "/v1/webhook_endpoints",
                Some(&other_account),
                None,
                &endpoint_body(&theirs.url, &["*"]),
            )
            .await
            .ok();
        theirs.set_secret(created["secret"].as_str().unwrap());
        let foreign = app
            .request(reqwest::Method::POST, "/v1/customers", Some(&other_account), None, "name=Theirs")
            .await
            .ok();
        let mine = app.create_customer("name=Mine").await;
        eventually("both delivered", 10, async || {
            receiver.delivered().len() == 1 && theirs.delivered().len() == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.received().len(), 1);
        assert_eq!(receiver.received()[0].body["data"]["object"]["id"], mine.as_str());
        assert_eq!(theirs.received().len(), 1);
        assert_eq!(theirs.received()[0].body["data"]["object"]["id"], foreign["id"]);
        receiver.assert_all_verified();
        theirs.assert_all_verified();
    }

    async fn two_replicas_deliver_each_event_once(app) {
        let replica = app.spawn_replica().await;
        let receiver = Receiver::start().await;
        subscribe(&app, &receiver, &["customer.created"]).await;
        let mut customers = Vec::new();
        for index in 0..20 {
            let server = if index % 2 == 0 { &app } else { &replica };
            customers.push(server.create_customer(&format!("name=C{index}")).await);
        }
        eventually("all delivered", 30, async || receiver.delivered().len() == customers.len()).await;
        // Give a duplicate time to show up.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let delivered = receiver.delivered();
        assert_eq!(delivered.len(), customers.len());
        assert!(delivered.values().all(|times| *times == 1), "duplicates: {delivered:?}");
        assert_eq!(receiver.requests(), customers.len());
        receiver.assert_all_verified();
    }
}

/// Fast retries and a two-second retry window.
fn short_window(config: &mut ServeConfig) {
    fast_retries(config);
    config.webhooks.webhook_max_age_seconds = 2.0;
}

on_every_backend_with! { retry_window, super::short_window;
    async fn a_delivery_is_given_up_after_the_retry_window(app) {
        let receiver = Receiver::start().await;
        let endpoint = subscribe(&app, &receiver, &["customer.created"]).await;
        receiver.set_healthy(false);
        app.create_customer("name=Unlucky").await;
        eventually("given up", 15, async || {
            let deliveries = creditd::store::webhooks::deliveries_to(app.services.db.reader(), &endpoint)
                .await
                .unwrap();
            deliveries[0].state == "failed"
        })
        .await;
        let deliveries = creditd::store::webhooks::deliveries_to(app.services.db.reader(), &endpoint)
            .await
            .unwrap();
        assert!(deliveries[0].attempts >= 3, "{deliveries:?}");
        assert_eq!(deliveries[0].last_status, Some(500));
        let seen = receiver.requests();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(receiver.requests(), seen);
        // It never answered 2xx, so the event still counts it.
        let event = receiver.received()[0].body["id"].as_str().unwrap().to_string();
        assert_eq!(stored_event(&app, &event).await.pending_webhooks, 1);
    }
}

on_every_backend_with! { private_addresses, super::refuse_private;
    async fn the_multi_tenant_setting_refuses_internal_addresses(app) {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://localhost:9/hook",
            "http://[::1]/hook",
            "http://10.0.0.1/hook",
            "http://169.254.169.254/latest",
            "http://0.0.0.0/hook",
        ] {
            app.post("/v1/webhook_endpoints", &endpoint_body(url, &["*"]))
                .await
                .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("url"));
        }
        let public = app
            .post("/v1/webhook_endpoints", &endpoint_body("https://93.184.216.34/hook", &["*"]))
            .await
            .ok();
        let id = public["id"].as_str().unwrap();
        app.post(&format!("/v1/webhook_endpoints/{id}"), &format!("url={}", enc("http://127.0.0.1/x")))
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("url"));
    }
}

// ---------------------------------------------------------------------------------------------
// Crash safety: a real server process, SIGKILLed while deliveries are failing and retrying.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `creditd serve` on fixed loopback ports with fast webhook retries.
struct Creditd {
    url: String,
    grpc_port: u16,
    http_port: u16,
    child: Option<Child>,
}

impl Creditd {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    async fn start(&mut self, http: &reqwest::Client) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_creditd"));
        command
            .args(["serve", "--database-url", &self.url])
            .args(["--grpc-addr", &format!("127.0.0.1:{}", self.grpc_port)])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http_port)])
            .args(["--no-bootstrap-key", "--log-format", "json"])
            .args(["--webhook-first-retry-seconds", "0.05"])
            .args(["--webhook-max-retry-delay-seconds", "0.2"])
            .args(["--webhook-timeout-seconds", "1"])
            .args(["--webhook-poll-interval-ms", "50"])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CREDITD_") {
                command.env_remove(name);
            }
        }
        self.child = Some(command.spawn().expect("start creditd serve"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let health = http
                .get(format!("{}/healthz", self.base()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if health.is_ok_and(|response| response.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "creditd did not start in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Creditd {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn post_form(http: &reqwest::Client, base: &str, key: &str, path: &str, body: &str) -> Value {
    let response = http
        .post(format!("{base}{path}"))
        .basic_auth(key, Some(""))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn crash_while_retrying(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let db = creditd::store::Db::connect(&creditd::store::DbOptions::new(database.url.clone()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let services = creditd::service::Services::new(db.clone());
    let account = services.create_account().await.unwrap();
    let key = services
        .create_api_key(&account, false)
        .await
        .unwrap()
        .reveal()
        .to_string();

    let http = reqwest::Client::new();
    let mut server = Creditd {
        url: database.url.clone(),
        grpc_port: free_port(),
        http_port: free_port(),
        child: None,
    };
    server.start(&http).await;
    let receiver = Receiver::start().await;
    let endpoint = post_form(
        &http,
        &server.base(),
        &key,
        "/v1/webhook_endpoints",
        &endpoint_body(&receiver.url, &["customer.created"]),
    )
    .await;
    receiver.set_secret(endpoint["secret"].as_str().unwrap());
    receiver.set_healthy(false);

    let mut customers = Vec::new();
    for index in 0..8 {
        let customer = post_form(
            &http,
            &server.base(),
            &key,
            "/v1/customers",
            &format!("name=B{index}"),
        )
        .await;
        customers.push(customer["id"].as_str().unwrap().to_string());
    }
    eventually("deliveries failing and retrying", 20, async || {
        receiver.requests() >= 16
    })
    .await;
    server.kill();

    server.start(&http).await;
    for index in 0..4 {
        let customer = post_form(
            &http,
            &server.base(),
            &key,
            "/v1/customers",
            &format!("name=A{index}"),
        )
        .await;
        customers.push(customer["id"].as_str().unwrap().to_string());
    }
    receiver.set_healthy(true);
    // Deliveries leased by the killed process come back when their lease expires (2 × timeout
    // + 5 s).
    eventually("every event delivered after the crash", 60, async || {
        receiver.delivered().len() == customers.len()
    })
    .await;
    receiver.assert_all_verified();
    let delivered_customers: BTreeSet<String> = receiver
        .received()
        .iter()
        .filter(|received| received.status == 200)
        .map(|received| {
            received.body["data"]["object"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(delivered_customers, customers.iter().cloned().collect());
    let endpoint_id = endpoint["id"].as_str().unwrap();
    eventually("every delivery recorded as succeeded", 20, async || {
        let deliveries = creditd::store::webhooks::deliveries_to(db.reader(), endpoint_id)
            .await
            .unwrap();
        deliveries.len() == customers.len() && deliveries.iter().all(|d| d.state == "succeeded")
    })
    .await;
    server.kill();
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_deliveries_survive_a_crash_while_retrying() {
    crash_while_retrying(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deliveries_survive_a_crash_while_retrying() {
    if !common::postgres_configured() {
        eprintln!(
            "skipped on PostgreSQL: {} is not set (SQLite only)",
            common::POSTGRES_URL_ENV
        );
        return;
    }
    crash_while_retrying(Backend::Postgres).await;
}
