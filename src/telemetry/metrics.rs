//! The service's metrics: per RPC/route request count, errors by code and latency; database
//! pool usage; and ledger counters (credits granted, applied, expired, voided, by currency).
//! Instruments come from the global meter, so they cost next to nothing when export is off.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry::metrics::{Counter, Histogram};

pub struct Instruments {
    pub requests: Counter<u64>,
    pub errors: Counter<u64>,
    pub duration: Histogram<f64>,
    pub credits: Counter<u64>,
}

/// Created on first use, after [`super::init`] has installed the meter provider.
pub fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = global::meter("creditd");
        Instruments {
            requests: meter
                .u64_counter("creditd.requests")
                .with_description("Requests handled, by transport and route or RPC")
                .build(),
            errors: meter
                .u64_counter("creditd.request.errors")
                .with_description("Requests that ended in an error, by code")
                .build(),
            duration: meter
                .f64_histogram("creditd.request.duration")
                .with_unit("s")
                .with_description("Request latency")
                .build(),
            credits: meter
                .u64_counter("creditd.ledger.credits")
                .with_unit("{minor_unit}")
                .with_description("Credit ledger movements, by entry type and currency")
                .build(),
        }
    })
}

/// Counts a committed credit ledger entry.
pub fn record_credit_entry(kind: &'static str, currency: &str, amount: i64) {
    instruments().credits.add(
        amount.unsigned_abs(),
        &[
            KeyValue::new("type", kind),
            KeyValue::new("currency", currency.to_string()),
        ],
    );
}

/// Reports the database pools' size and idle connections as observable gauges.
pub fn register_pool_metrics(db: &crate::store::Db) {
    let db = db.clone();
    let meter = global::meter("creditd");
    let gauge = meter
        .u64_observable_gauge("db.client.connection.count")
        .with_description("Database connections by pool and state")
        .with_callback(move |observer| {
            for pool in db.pool_stats() {
                let used = pool.size.saturating_sub(pool.idle);
                observer.observe(
                    u64::from(used),
                    &[
                        KeyValue::new("pool", pool.name),
                        KeyValue::new("state", "used"),
                    ],
                );
                observer.observe(
                    u64::from(pool.idle),
                    &[
                        KeyValue::new("pool", pool.name),
                        KeyValue::new("state", "idle"),
                    ],
                );
            }
        })
        .build();
    // Keep the instrument (and so its callback) for the life of the process.
    static GAUGES: std::sync::Mutex<Vec<opentelemetry::metrics::ObservableGauge<u64>>> =
        std::sync::Mutex::new(Vec::new());
    GAUGES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(gauge);
}

/// Observable gauges of the process's event streams: how many are open, and how many events they
/// hold in memory for their clients (bounded per stream; see `service::event_stream`).
pub fn register_event_stream_metrics(
    streams: &std::sync::Arc<crate::service::event_stream::EventStreams>,
) {
    let meter = global::meter("creditd");
    let open = streams.clone();
    let open_gauge = meter
        .u64_observable_gauge("creditd.event_streams.open")
        .with_description("WatchEvents streams open in this process")
        .with_callback(move |observer| observer.observe(open.open_streams() as u64, &[]))
        .build();
    let held = streams.clone();
    let held_gauge = meter
        .u64_observable_gauge("creditd.event_streams.held_events")
        .with_description("Events read for WatchEvents clients and not yet taken by them")
        .with_callback(move |observer| observer.observe(held.held_events() as u64, &[]))
        .build();
    static GAUGES: std::sync::Mutex<Vec<opentelemetry::metrics::ObservableGauge<u64>>> =
        std::sync::Mutex::new(Vec::new());
    GAUGES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .extend([open_gauge, held_gauge]);
}

/// Webhook delivery instruments.
pub struct WebhookInstruments {
    /// Attempts by outcome: `delivered`, `retrying`, `gave_up`, `cancelled` (not sent: the
    /// endpoint was deleted or disabled, or the event is gone).
    pub attempts: Counter<u64>,
    /// Attempts that did not get a 2xx answer.
    pub failures: Counter<u64>,
    /// Time from sending to the answer's status (or the failure).
    pub duration: Histogram<f64>,
}

impl WebhookInstruments {
    pub fn attempt(&self, outcome: &'static str) {
        self.attempts.add(1, &[KeyValue::new("outcome", outcome)]);
        if matches!(outcome, "retrying" | "gave_up") {
            self.failures.add(1, &[]);
        }
    }
}

pub fn webhook_instruments() -> &'static WebhookInstruments {
    static INSTRUMENTS: OnceLock<WebhookInstruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = global::meter("creditd");
        WebhookInstruments {
            attempts: meter
                .u64_counter("creditd.webhook.attempts")
                .with_description("Webhook delivery attempts, by outcome")
                .build(),
            failures: meter
                .u64_counter("creditd.webhook.failures")
                .with_description("Webhook delivery attempts without a 2xx answer")
                .build(),
            duration: meter
                .f64_histogram("creditd.webhook.duration")
                .with_unit("s")
                .with_description("Webhook delivery attempt latency")
                .build(),
        }
    })
}

/// Reports the pending webhook deliveries (all replicas) as an observable gauge.
pub fn register_webhook_queue_gauge(depth: std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let gauge = global::meter("creditd")
        .u64_observable_gauge("creditd.webhook.queue_depth")
        .with_description("Webhook deliveries pending (due or waiting for a retry)")
        .with_callback(move |observer| {
            observer.observe(depth.load(std::sync::atomic::Ordering::Relaxed), &[]);
        })
        .build();
    static GAUGES: std::sync::Mutex<Vec<opentelemetry::metrics::ObservableGauge<u64>>> =
        std::sync::Mutex::new(Vec::new());
    GAUGES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(gauge);
}
