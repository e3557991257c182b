//! The webhook delivery worker: sends each queued (event, endpoint) delivery as a signed POST,
//! retries failures with exponential backoff, and records the outcome.
//!
//! - Deliveries are queued by the write that emitted the event, in its transaction (see
//!   [`super::events::EventBatch::write`]), so a delivery exists exactly when its event does.
//! - The worker claims due deliveries with a lease (see [`store::webhooks::claim`]): with
//!   several replicas one attempt runs at a time per delivery, and a crashed worker's lease
//!   expires and the delivery is tried again. Delivery is at least once: an attempt whose
//!   outcome could not be recorded (a crash right after the receiver answered) is sent again.
//! - Attempts run concurrently, at most `concurrency` in this process and at most
//!   `per_endpoint_concurrency` to one endpoint; a slow endpoint only ties up its own slots
//!   (deliveries to an endpoint at its cap are not claimed), never writes or other endpoints.
//! - 2xx is delivered: the delivery is `succeeded` and the event's `pending_webhooks` goes down
//!   by one in the same transaction. Anything else (another status, a redirect, which is not
//!   followed, a connection error, a timeout) is retried after [`retry_delay`] until the retry
//!   window (`max_age`, from the event's creation) is over; then the delivery is `failed` and
//!   the event keeps counting it in `pending_webhooks` (it never answered 2xx).
//! - An endpoint deleted or disabled when a delivery falls due stops it (`failed`, not sent).
//! - Times here are wall-clock milliseconds, never a test clock's: retries are real waits and
//!   the signature's timestamp is checked against the receiver's real clock.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use tracing::Instrument;

use super::Services;
use crate::domain::webhook::{EndpointStatus, WebhookEndpoint, is_internal_address, retry_delay};
use crate::error::Result;
use crate::store::{self, webhooks::AfterFailure, webhooks::ClaimedDelivery};

/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("creditd/", env!("CARGO_PKG_VERSION"), " (webhooks)");

/// How often the queue-depth gauge is refreshed.
const DEPTH_REFRESH: Duration = Duration::from_secs(5);

/// How often finished deliveries past retention are deleted, and how many at a time.
const PRUNE_EVERY: Duration = Duration::from_secs(15 * 60);
const PRUNE_BATCH: u64 = 1000;

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// How deliveries are made; from [`crate::config::WebhookConfig`].
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Per attempt: connecting, sending and the answer's status line.
    pub timeout: Duration,
    /// The retry window, from the event's creation.
    pub max_age: Duration,
    /// The delay before the first retry; doubles per attempt, with full jitter.
    pub first_retry: Duration,
    pub max_retry_delay: Duration,
    /// Attempts in flight in this process.
    pub concurrency: usize,
    /// Attempts in flight to one endpoint in this process.
    pub per_endpoint_concurrency: usize,
    /// Refuse internal addresses at every delivery (see [`check_destination`]).
    pub refuse_private_addresses: bool,
    /// How often to look for due retries and other replicas' deliveries.
    pub poll_interval: Duration,
    /// How long finished (succeeded or failed) deliveries are kept, for operators.
    pub finished_retention: Duration,
}

impl DeliverySettings {
    /// How long a claim holds a delivery: longer than an attempt takes (the request is bounded
    /// by `timeout`; the margin covers reading the event and recording the outcome). An attempt
    /// that outlives its lease may be sent again by another worker (at least once).
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

/// `Stripe-Signature` for `body` sent at `timestamp` (Unix seconds): `t=<timestamp>,v1=<hex
/// HMAC-SHA256 of "<timestamp>.<body>", keyed with the whole `whsec_…` secret as UTF-8>`.
pub fn signature_header(secret: &str, timestamp: i64, body: &str) -> String {
    let signed = format!("{timestamp}.{body}");
    let mac = super::auth::hmac_sha256(secret.as_bytes(), signed.as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac))
}

/// Refuses an empty address list or one with an internal address.
fn check_addresses(host: &str, addresses: &[IpAddr]) -> std::result::Result<(), String> {
    if addresses.is_empty() {
        return Err(format!("the host {host} resolves to no address"));
    }
    match addresses.iter().find(|ip| is_internal_address(**ip)) {
        Some(ip) => Err(format!(
            "the host {host} is or resolves to an internal address ({ip}), which this server does not send webhooks to"
        )),
        None => Ok(()),
    }
}

/// Whether a URL may be delivered to with internal addresses refused: its host is resolved and
/// every address it resolves to must be public.
pub async fn check_destination(raw: &str) -> std::result::Result<(), String> {
    let url = url::Url::parse(raw).map_err(|error| error.to_string())?;
    let port = url.port_or_known_default().unwrap_or(443);
    let (host, addresses): (String, Vec<IpAddr>) = match url.host() {
        Some(url::Host::Ipv4(ip)) => (ip.to_string(), vec![IpAddr::V4(ip)]),
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), vec![IpAddr::V6(ip)]),
        Some(url::Host::Domain(name)) => {
            let resolved = tokio::net::lookup_host((name, port))
                .await
                .map_err(|error| format!("the host {name} cannot be resolved: {error}"))?;
            (name.to_string(), resolved.map(|addr| addr.ip()).collect())
        }
        None => return Err("it has no host".to_string()),
    };
    check_addresses(&host, &addresses)
}

/// Resolves names for deliveries and refuses internal addresses, so a name that resolved to a
/// public address at create time cannot be pointed inside later (the addresses checked are the
/// ones connected to).
struct RefusingResolver;

impl reqwest::dns::Resolve for RefusingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ips: Vec<IpAddr> = addresses.iter().map(SocketAddr::ip).collect();
            check_addresses(&host, &ips)
                .map_err(|why| -> Box<dyn std::error::Error + Send + Sync> { why.into() })?;
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// The system's CA certificates (`SSL_CERT_FILE`, or the usual bundle paths), for https
/// endpoints.
fn system_root_certificates() -> Vec<reqwest::Certificate> {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        );
    for path in candidates {
        let Ok(pem) = std::fs::read(&path) else {
            continue;
        };
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certificates) if !certificates.is_empty() => return certificates,
            _ => continue,
        }
    }
    tracing::warn!(
        "no CA certificate bundle found (set SSL_CERT_FILE): deliveries to https endpoints will fail"
    );
    Vec::new()
}

/// The delivery worker of one process.
pub struct DeliveryWorker {
    inner: Arc<Inner>,
}

struct Inner {
    services: Services,
    settings: DeliverySettings,
    client: reqwest::Client,
    /// Attempts in flight per endpoint.
    in_flight: Mutex<HashMap<String, usize>>,
    queue_depth: Arc<AtomicU64>,
}

/// One attempt's place in its endpoint's count, given back when the attempt ends (however).
struct Slot {
    inner: Arc<Inner>,
    endpoint_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_flight = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = in_flight.get_mut(&self.endpoint_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(&self.endpoint_id);
            }
        }
    }
}

impl DeliveryWorker {
    pub fn new(services: Services, settings: DeliverySettings) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(USER_AGENT)
            .pool_max_idle_per_host(settings.per_endpoint_concurrency)
            .tcp_nodelay(true);
        if settings.refuse_private_addresses {
            builder = builder.dns_resolver(Arc::new(RefusingResolver));
        }
        for certificate in system_root_certificates() {
            builder = builder.add_root_certificate(certificate);
        }
        let queue_depth = Arc::new(AtomicU64::new(0));
        crate::telemetry::metrics::register_webhook_queue_gauge(queue_depth.clone());
        Ok(DeliveryWorker {
            inner: Arc::new(Inner {
                services,
                settings,
                client: builder.build()?,
                in_flight: Mutex::new(HashMap::new()),
                queue_depth,
            }),
        })
    }

    /// Runs until aborted: claims and starts due deliveries after every wake-up (a local commit
    /// that wrote events, an attempt that ended) and at least every poll interval. Aborting it
    /// abandons the attempts in flight; their leases expire and they are tried again.
    pub async fn run(self) {
        let wake = self.inner.services.events.delivery_wakeup();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut depth_refreshed: Option<Instant> = None;
        let mut pruned: Option<Instant> = None;
        loop {
            while tasks.try_join_next().is_some() {}
            let more = match self.claim_and_start(&mut tasks).await {
                Ok(more) => more,
                Err(error) => {
                    tracing::warn!(error = %error, "claiming webhook deliveries failed; retrying");
                    false
                }
            };
            if depth_refreshed.is_none_or(|at| at.elapsed() >= DEPTH_REFRESH) {
                depth_refreshed = Some(Instant::now());
                match store::webhooks::pending_count(self.inner.services.db.reader()).await {
                    Ok(depth) => self.inner.queue_depth.store(depth, Ordering::Relaxed),
                    Err(error) => {
                        tracing::debug!(error = %error, "counting pending deliveries failed")
                    }
                }
            }
            if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned = Some(Instant::now());
                self.prune().await;
            }
            if more {
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.inner.settings.poll_interval) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    }

    /// Deletes finished deliveries older than the retention, a batch at a time.
    async fn prune(&self) {
        let settings = &self.inner.settings;
        let before = now_ms().saturating_sub(settings.finished_retention.as_millis() as i64);
        let db = &self.inner.services.db;
        loop {
            match store::webhooks::prune_finished(db.writer(), before, PRUNE_BATCH).await {
                Ok(deleted) if deleted < PRUNE_BATCH => return,
                Ok(_) => tokio::task::yield_now().await,
                Err(error) => {
                    tracing::warn!(error = %error, "pruning finished webhook deliveries failed");
                    return;
                }
            }
        }
    }

    /// Claims as many due deliveries as there are free slots and starts them. True when it
    /// filled every slot it asked for (more may be due).
    async fn claim_and_start(&self, tasks: &mut JoinSet<()>) -> Result<bool> {
        let inner = &self.inner;
        let settings = &inner.settings;
        let capacity = settings.concurrency.saturating_sub(tasks.len());
        if capacity == 0 {
            return Ok(false);
        }
        let busy: Vec<String> = inner
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|(_, count)| **count >= settings.per_endpoint_concurrency)
            .map(|(endpoint, _)| endpoint.clone())
            .collect();
        let now = now_ms();
        let lease_until = now + settings.lease().as_millis() as i64;
        let db = &inner.services.db;
        let claimed = db
            .retrying(|| {
                store::webhooks::claim(db.writer(), now, lease_until, capacity as u64, &busy)
            })
            .await?;
        let filled = claimed.len() == capacity;
        for delivery in claimed {
            let admitted = {
                let mut in_flight = inner
                    .in_flight
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let count = in_flight.entry(delivery.endpoint_id.clone()).or_default();
                let admitted = *count < settings.per_endpoint_concurrency;
                if admitted {
                    *count += 1;
                }
                admitted
            };
            if !admitted {
                // Its endpoint filled up within this batch: give it back for a later claim.
                if let Err(error) = store::webhooks::release(db.writer(), &delivery).await {
                    tracing::debug!(error = %error, "releasing a delivery failed; its lease will expire");
                }
                continue;
            }
            let slot = Slot {
                inner: inner.clone(),
                endpoint_id: delivery.endpoint_id.clone(),
            };
            let inner = inner.clone();
            tasks.spawn(async move {
                let _slot = slot;
                inner.attempt(delivery).await;
            });
        }
        Ok(filled)
    }
}

/// Spawns the worker on the runtime.
pub fn spawn(
    services: Services,
    settings: DeliverySettings,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let worker = DeliveryWorker::new(services, settings)?;
    Ok(tokio::spawn(worker.run()))
}

/// What one attempt came to.
enum Sent {
    Answered(u16),
    Failed(String),
}

impl Inner {
    async fn attempt(&self, delivery: ClaimedDelivery) {
        let span = tracing::info_span!(
            "webhook.delivery",
            event_id = %delivery.event_id,
            endpoint_id = %delivery.endpoint_id,
            attempt = delivery.attempts + 1,
            outcome = tracing::field::Empty,
            http.status = tracing::field::Empty,
        );
        async {
            if let Err(error) = self.try_attempt(&delivery).await {
                tracing::warn!(error = %error, "a webhook delivery's outcome could not be recorded; it will be tried again when its lease expires");
            }
        }
        .instrument(span)
        .await;
    }

    async fn try_attempt(&self, delivery: &ClaimedDelivery) -> Result<()> {
        let db = &self.services.db;
        let endpoint =
            store::webhooks::find_endpoint(db.reader(), &delivery.tenant, &delivery.endpoint_id)
                .await?;
        let endpoint = match endpoint {
            Some(endpoint) if endpoint.status == EndpointStatus::Enabled => endpoint,
            other => {
                let why = match other {
                    None => "the endpoint was deleted",
                    Some(_) => "the endpoint is disabled",
                };
                return self.stop(delivery, why).await;
            }
        };
        let Some(event) =
            store::events::find(db.reader(), &delivery.tenant, &delivery.event_id).await?
        else {
            return self.stop(delivery, "the event no longer exists").await;
        };
        let body = crate::render::render_event_body(&event);
        let started = Instant::now();
        let sent = self.send(&endpoint, body).await;
        let metrics = crate::telemetry::metrics::webhook_instruments();
        metrics
            .duration
            .record(started.elapsed().as_secs_f64(), &[]);
        let span = tracing::Span::current();
        match sent {
            Sent::Answered(status) if (200..300).contains(&status) => {
                span.record("http.status", status);
                span.record("outcome", "delivered");
                metrics.attempt("delivered");
                db.retrying(|| async {
                    let tx = db.begin().await?;
                    let outcome =
                        store::webhooks::record_success(&tx, delivery, now_ms(), status).await;
                    store::settle(tx, outcome).await
                })
                .await?;
            }
            failed => {
                let (status, error) = match failed {
                    Sent::Answered(status) => {
                        span.record("http.status", status);
                        (Some(status), format!("the endpoint answered HTTP {status}"))
                    }
                    Sent::Failed(error) => (None, error),
                };
                let next = self.after_failure(delivery);
                let outcome = match next {
                    AfterFailure::RetryAt(_) => "retrying",
                    AfterFailure::GiveUp => "gave_up",
                };
                span.record("outcome", outcome);
                metrics.attempt(outcome);
                tracing::info!(error = %error, outcome, "webhook delivery attempt failed");
                db.retrying(|| {
                    store::webhooks::record_failure(
                        db.writer(),
                        delivery,
                        true,
                        status,
                        &error,
                        next.clone(),
                    )
                })
                .await?;
            }
        }
        Ok(())
    }

    /// When to try again after this attempt failed, or to give up when that is past the retry
    /// window.
    fn after_failure(&self, delivery: &ClaimedDelivery) -> AfterFailure {
        let settings = &self.settings;
        let attempts = u32::try_from(delivery.attempts + 1).unwrap_or(u32::MAX);
        let delay = retry_delay(
            attempts,
            settings.first_retry,
            settings.max_retry_delay,
            rand::random::<f64>(),
        );
        let next = now_ms().saturating_add(delay.as_millis() as i64);
        let deadline = delivery
            .created
            .saturating_mul(1000)
            .saturating_add(settings.max_age.as_millis() as i64);
        if next > deadline {
            AfterFailure::GiveUp
        } else {
            AfterFailure::RetryAt(next)
        }
    }

    /// Ends a delivery without sending it.
    async fn stop(&self, delivery: &ClaimedDelivery, why: &str) -> Result<()> {
        tracing::Span::current().record("outcome", "cancelled");
        crate::telemetry::metrics::webhook_instruments().attempt("cancelled");
        let db = &self.services.db;
        db.retrying(|| {
            store::webhooks::record_failure(
                db.writer(),
                delivery,
                false,
                None,
                why,
                AfterFailure::GiveUp,
            )
        })
        .await?;
        Ok(())
    }

    /// POSTs the body, signed now; never follows a redirect.
    async fn send(&self, endpoint: &WebhookEndpoint, body: String) -> Sent {
        if self.settings.refuse_private_addresses {
            // An address written in the URL never reaches the resolver: check it here.
            let literal = url::Url::parse(&endpoint.url)
                .ok()
                .and_then(|url| match url.host() {
                    Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                    Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                    _ => None,
                });
            if let Some(ip) = literal
                && let Err(why) = check_addresses(&ip.to_string(), &[ip])
            {
                return Sent::Failed(why);
            }
        }
        let signature = signature_header(&endpoint.secret, now_ms() / 1000, &body);
        let sent = self
            .client
            .post(&endpoint.url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .header("Stripe-Signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => Sent::Answered(response.status().as_u16()),
            Err(error) => Sent::Failed(describe(error)),
        }
    }
}

/// A request error without the URL (which may carry a token), with its causes.
fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let error = error.without_url();
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Event, EventRequest};

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body_keyed_with_the_whole_secret() {
        let header = signature_header("whsec_test", 1_700_000_000, "{\"id\":\"evt_1\"}");
        let expected = hex::encode(crate::service::auth::hmac_sha256(
            b"whsec_test",
            b"1700000000.{\"id\":\"evt_1\"}",
        ));
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
        assert_eq!(expected.len(), 64);
        assert!(
            expected
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
    }

    #[test]
    fn the_body_is_the_event_object_with_its_data_verbatim() {
        let event = Event {
            id: "evt_test_1".into(),
            livemode: false,
            created: 7,
            kind: "customer.created".into(),
            customer_id: Some("cus_1".into()),
            request: EventRequest {
                id: Some("req_1".into()),
                idempotency_key: None,
            },
            api_version: "2026-07-29.dahlia".into(),
            pending_webhooks: 2,
            data: r#"{"object":{"id":"cus_1","object":"customer"}}"#.into(),
            sequence: Some(3),
        };
        let body: serde_json::Value =
            serde_json::from_str(&crate::render::render_event_body(&event)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "id": "evt_test_1",
                "object": "event",
                "api_version": "2026-07-29.dahlia",
                "created": 7,
                "data": {"object": {"id": "cus_1", "object": "customer"}},
                "livemode": false,
                "pending_webhooks": 2,
                "request": {"id": "req_1", "idempotency_key": null},
                "type": "customer.created",
            })
        );
    }

    #[tokio::test]
    async fn internal_destinations_are_refused() {
        assert!(check_destination("http://127.0.0.1:9/hook").await.is_err());
        assert!(check_destination("http://[::1]/hook").await.is_err());
        assert!(check_destination("http://localhost/hook").await.is_err());
        assert!(check_destination("http://93.184.216.34/hook").await.is_ok());
    }
}
