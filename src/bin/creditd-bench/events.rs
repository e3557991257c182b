//! `--observe-events`: the cost and latency of events under a write scenario. One webhook
//! endpoint subscribed to every type (its deliveries go to a sink in this process that answers
//! 200 at once) and one `WatchEvents` watcher follow the run; every ledger entry an `apply`
//! call wrote is looked for in the watcher's stream.
//!
//! Commit-to-watcher latency is bracketed, since the commit itself is not observable from here:
//! from the response (after the commit: a lower bound) and from the send (before it: an upper
//! bound) to the entry's event arriving at the watcher.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use creditd::grpc::proto;
use creditd::grpc::proto::event_service_client::EventServiceClient;
use futures::StreamExt;

use crate::clients::{Grpc, Rest, RestProtocol};

/// What the watcher and the sink saw, and when each measured call was sent and answered.
#[derive(Default)]
pub struct EventObserver {
    /// Entry ID → (sent, answered).
    calls: Mutex<HashMap<String, (Instant, Instant)>>,
    /// Entry ID → when its event reached the watcher.
    seen: Mutex<HashMap<String, Instant>>,
    watched: AtomicU64,
    delivered: AtomicU64,
}

/// One measurement's figures.
#[derive(Debug, serde::Serialize)]
pub struct EventReport {
    pub entries: usize,
    pub seen_by_watcher: usize,
    pub events_watched: u64,
    pub webhooks_delivered: u64,
    /// Milliseconds from the response (lower bound): p50, p99, max.
    pub from_response_ms: [f64; 3],
    /// Milliseconds from the send (upper bound): p50, p99, max.
    pub from_send_ms: [f64; 3],
}

impl EventObserver {
    /// Records the ledger entries one call wrote.
    pub fn record_call(&self, entry_ids: impl Iterator<Item = String>, sent: Instant) {
        let answered = Instant::now();
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        for id in entry_ids {
            calls.insert(id, (sent, answered));
        }
    }

    /// Waits up to `grace` for the watcher to catch up, then reports and starts afresh.
    pub async fn take_report(&self, grace: Duration) -> EventReport {
        let deadline = Instant::now() + grace;
        loop {
            let missing = {
                let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
                let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                calls.keys().filter(|id| !seen.contains_key(*id)).count()
            };
            if missing == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let calls = std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut from_response = Vec::new();
        let mut from_send = Vec::new();
        for (id, (sent, answered)) in &calls {
            if let Some(arrived) = seen.get(id) {
                from_response.push(arrived.saturating_duration_since(*answered).as_secs_f64());
                from_send.push(arrived.saturating_duration_since(*sent).as_secs_f64());
            }
        }
        let report = EventReport {
            entries: calls.len(),
            seen_by_watcher: from_send.len(),
            events_watched: self.watched.swap(0, Ordering::Relaxed),
            webhooks_delivered: self.delivered.swap(0, Ordering::Relaxed),
            from_response_ms: percentiles(&mut from_response),
            from_send_ms: percentiles(&mut from_send),
        };
        seen.clear();
        report
    }
}

fn percentiles(values: &mut [f64]) -> [f64; 3] {
    if values.is_empty() {
        return [0.0; 3];
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize] * 1000.0;
    [at(0.5), at(0.99), at(1.0)]
}

/// Starts the sink, creates the endpoint and starts the watcher.
pub async fn start(grpc: &Grpc, http_url: &str, key: &str) -> anyhow::Result<Arc<EventObserver>> {
    let observer = Arc::new(EventObserver::default());

    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_url = format!("http://{}/webhook", sink.local_addr()?);
    let counter = observer.clone();
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.delivered.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(sink, app).await;
    });

    let rest = Rest::connect(http_url, key, RestProtocol::Http1, 1, 1).await?;
    let form = format!(
        "url={}&enabled_events[]=*&description=creditd-bench",
        urlencode(&sink_url)
    );
    rest.post_form(0, "/v1/webhook_endpoints", form, None)
        .await
        .map_err(|error| anyhow::anyhow!("creating the webhook endpoint: {error}"))?;

    let mut client = EventServiceClient::new(grpc.channel(0));
    let mut stream = client
        .watch_events(grpc.request(
            proto::WatchEventsRequest {
                resume: Some(proto::watch_events_request::Resume::FromNow(true)),
                types: vec!["billing.credit_balance_transaction.created".to_string()],
                customer: None,
            },
            None,
        ))
        .await
        .context("WatchEvents")?
        .into_inner();
    let watcher = observer.clone();
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let arrived = Instant::now();
            watcher.watched.fetch_add(1, Ordering::Relaxed);
            let Some(event) = message.event else { continue };
            let id = serde_json::from_str::<serde_json::Value>(&event.data_json)
                .ok()
                .and_then(|data| data["object"]["id"].as_str().map(str::to_string));
            if let Some(id) = id {
                watcher
                    .seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, arrived);
            }
        }
        eprintln!("the event watcher's stream ended");
    });
    Ok(observer)
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
