//! Observability in one place: structured logs (JSON in production, pretty in a terminal)
//! that carry trace and request IDs, and OpenTelemetry traces and metrics over OTLP (gRPC or
//! HTTP/protobuf), configured by the standard `OTEL_*` variables and off when no endpoint is
//! set. API keys never reach a span or a log: no span records them, and
//! [`crate::service::auth::ApiKey`]'s `Debug` hides the secret.

mod layer;
pub mod metrics;
mod otel;

use std::io::IsTerminal;

use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

pub use layer::{RequestId, RequestTelemetryLayer};
pub use otel::{OtelSettings, Protocol};

/// The installed exporters; flush or shut them down through this.
pub struct Telemetry {
    providers: Option<otel::Providers>,
}

impl Telemetry {
    /// Exports everything buffered now (tests use this instead of waiting).
    pub fn flush(&self) {
        if let Some(providers) = &self.providers {
            providers.flush();
        }
    }

    /// Flushes and stops the exporters (on shutdown).
    pub fn shutdown(self) {
        if let Some(providers) = self.providers {
            providers.shutdown();
        }
    }

    pub fn exporting(&self) -> bool {
        self.providers.is_some()
    }
}

/// Logging plus OpenTelemetry from the `OTEL_*` environment.
pub fn init(format: LogFormat) -> Telemetry {
    init_with(format, OtelSettings::from_env())
}

/// Logging plus OpenTelemetry with explicit settings. Call it once, inside the Tokio runtime
/// (the gRPC exporter needs it). A second call keeps the first subscriber.
pub fn init_with(format: LogFormat, settings: Option<OtelSettings>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(false)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_target(false).boxed()
    };
    // The log lines leave out the database's spans: the formatter renders every span's fields
    // when the span opens, whether or not a line is ever logged in it, and SeaORM's carry the
    // statement's text. That was 17 % of the server's instructions per `apply` (callgrind, see
    // BENCHMARKS.md). The spans still reach OpenTelemetry.
    let fmt = fmt.with_filter(filter_fn(|metadata| {
        !(metadata.is_span() && metadata.target().starts_with("sea_orm"))
    }));
    let providers = match settings {
        Some(settings) => match otel::Providers::install(&settings) {
            Ok(providers) => Some(providers),
            Err(error) => {
                eprintln!("creditd: OpenTelemetry is off: {error:#}");
                None
            }
        },
        None => None,
    };
    let otel_layer = providers.as_ref().map(|providers| {
        tracing_opentelemetry::layer()
            .with_tracer(providers.tracer())
            .with_error_records_to_exceptions(true)
    });
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel_layer)
        .try_init();
    drop(result);
    Telemetry { providers }
}
