//! OpenTelemetry providers from the standard `OTEL_*` variables: exporter endpoint, protocol,
//! headers and timeouts (read by the OTLP exporters themselves), service name and resource
//! attributes (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), sampler
//! (`OTEL_TRACES_SAMPLER[_ARG]`), batch and export intervals.

use std::time::Duration;

use anyhow::Context;
use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Tracer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Where and how to export. `None` from [`OtelSettings::from_env`] means "off".
#[derive(Debug, Clone)]
pub struct OtelSettings {
    /// Base endpoint, e.g. `http://collector:4317` (gRPC) or `http://collector:4318` (HTTP).
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    /// How often buffered spans are sent.
    pub span_delay: Duration,
    /// How often metrics are sent.
    pub metric_interval: Duration,
}

impl OtelSettings {
    /// Enabled when `OTEL_EXPORTER_OTLP_ENDPOINT` or a signal-specific endpoint is set and
    /// `OTEL_SDK_DISABLED` is not `true`.
    pub fn from_env() -> Option<OtelSettings> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
            return None;
        }
        let any_endpoint = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ]
        .iter()
        .any(|name| var(name).is_some());
        if !any_endpoint {
            return None;
        }
        let protocol = match var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Some("grpc") => Protocol::Grpc,
            _ => Protocol::HttpProtobuf,
        };
        let millis = |name: &str, default: u64| {
            Duration::from_millis(
                var(name)
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(default),
            )
        };
        Some(OtelSettings {
            // The exporters read the endpoint variables themselves (with the per-signal paths).
            endpoint: None,
            protocol,
            span_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5_000),
            metric_interval: millis("OTEL_METRIC_EXPORT_INTERVAL", 60_000),
        })
    }
}

pub(super) struct Providers {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

fn resource() -> Resource {
    let builder = Resource::builder();
    // OTEL_SERVICE_NAME wins; creditd otherwise.
    if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|name| !name.is_empty()) {
        builder.build()
    } else {
        builder.with_service_name("creditd").build()
    }
}

impl Providers {
    pub(super) fn install(settings: &OtelSettings) -> anyhow::Result<Providers> {
        let (spans, metrics) = match settings.protocol {
            Protocol::Grpc => {
                let mut spans = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                let mut metrics = opentelemetry_otlp::MetricExporter::builder().with_tonic();
                if let Some(endpoint) = &settings.endpoint {
                    spans = spans.with_endpoint(endpoint.clone());
                    metrics = metrics.with_endpoint(endpoint.clone());
                }
                (
                    spans.build().context("OTLP/gRPC span exporter")?,
                    metrics.build().context("OTLP/gRPC metric exporter")?,
                )
            }
            Protocol::HttpProtobuf => {
                let mut spans = opentelemetry_otlp::SpanExporter::builder().with_http();
                let mut metrics = opentelemetry_otlp::MetricExporter::builder().with_http();
                if let Some(endpoint) = &settings.endpoint {
                    let base = endpoint.trim_end_matches('/');
                    spans = spans.with_endpoint(format!("{base}/v1/traces"));
                    metrics = metrics.with_endpoint(format!("{base}/v1/metrics"));
                }
                (
                    spans.build().context("OTLP/HTTP span exporter")?,
                    metrics.build().context("OTLP/HTTP metric exporter")?,
                )
            }
        };
        let batch = BatchSpanProcessor::builder(spans)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(settings.span_delay)
                    .build(),
            )
            .build();
        let tracer = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_resource(resource())
            .build();
        let reader = PeriodicReader::builder(metrics)
            .with_interval(settings.metric_interval)
            .build();
        let meter = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource())
            .build();
        global::set_text_map_propagator(TraceContextPropagator::new());
        global::set_tracer_provider(tracer.clone());
        global::set_meter_provider(meter.clone());
        Ok(Providers { tracer, meter })
    }

    pub(super) fn tracer(&self) -> Tracer {
        self.tracer.tracer("creditd")
    }

    pub(super) fn flush(&self) {
        let _ = self.tracer.force_flush();
        let _ = self.meter.force_flush();
    }

    pub(super) fn shutdown(self) {
        let _ = self.tracer.shutdown();
        let _ = self.meter.shutdown();
    }
}
