//! A tiny OTLP receiver for tests: collects the spans and metric names creditd exports, over
//! gRPC (the collector's TraceService/MetricsService) or HTTP/protobuf (`/v1/traces`,
//! `/v1/metrics`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use super::{Backend, TestApp};
use creditd::config::LogFormat;
use creditd::grpc::proto;
use creditd::telemetry::{OtelSettings, Protocol};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

#[derive(Clone, Default)]
pub struct Received {
    pub spans: Arc<Mutex<Vec<Span>>>,
    pub metric_names: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn take_traces(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }

    fn take_metrics(&self, request: ExportMetricsServiceRequest) {
        let mut names = self.metric_names.lock().unwrap();
        for resource in request.resource_metrics {
            for scope in resource.scope_metrics {
                names.extend(scope.metrics.into_iter().map(|metric| metric.name));
            }
        }
    }

    /// The spans of one trace, waiting up to `timeout` for at least `at_least` of them.
    pub async fn spans_of(&self, trace_id: &[u8], at_least: usize, timeout: Duration) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|span| span.trace_id == trace_id)
                .cloned()
                .collect();
            if found.len() >= at_least || tokio::time::Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn has_metric(&self, name: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self
                .metric_names
                .lock()
                .unwrap()
                .iter()
                .any(|metric| metric == name)
            {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take_traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.take_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts an OTLP/gRPC receiver on a random loopback port.
pub async fn grpc_receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Collector(received.clone())))
        .add_service(MetricsServiceServer::new(Collector(received.clone())))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    (addr, received)
}

/// Starts an OTLP/HTTP (protobuf) receiver on a random loopback port.
pub async fn http_receiver() -> (SocketAddr, Received) {
    use axum::routing::post;
    let received = Received::default();
    let traces = received.clone();
    let metrics = received.clone();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(move |body: axum::body::Bytes| async move {
                traces.take_traces(ExportTraceServiceRequest::decode(body).unwrap());
                ExportTraceServiceResponse {
                    partial_success: None,
                }
                .encode_to_vec()
            }),
        )
        .route(
            "/v1/metrics",
            post(move |body: axum::body::Bytes| async move {
                metrics.take_metrics(ExportMetricsServiceRequest::decode(body).unwrap());
                ExportMetricsServiceResponse {
                    partial_success: None,
                }
                .encode_to_vec()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(text) => Some(text.clone()),
            Value::IntValue(number) => Some(number.to_string()),
            other => Some(format!("{other:?}")),
        })
}

/// Every string a span carries, to look for secrets.
fn all_text(span: &Span) -> String {
    let mut text = span.name.clone();
    for kv in &span.attributes {
        text.push_str(&format!(" {}={:?}", kv.key, kv.value));
    }
    for event in &span.events {
        text.push_str(&format!(" {} {:?}", event.name, event.attributes));
    }
    text
}

/// Exports over `protocol` to a receiver started here and checks that a caller's trace
/// continues into creditd (REST and gRPC) down to its database spans, that no span carries the
/// API key, and that the request and pool metrics arrive.
pub async fn exported_traces_continue_the_callers_trace(protocol: Protocol) {
    let (addr, received) = match protocol {
        Protocol::Grpc => grpc_receiver().await,
        Protocol::HttpProtobuf => http_receiver().await,
    };
    let telemetry = creditd::telemetry::init_with(
        LogFormat::Json,
        Some(OtelSettings {
            endpoint: Some(format!("http://{addr}")),
            protocol,
            span_delay: Duration::from_millis(100),
            metric_interval: Duration::from_millis(300),
        }),
    );
    assert!(telemetry.exporting());
    let app = TestApp::spawn(Backend::Sqlite).await;

    // A REST call inside the caller's trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let response = app
        .http
        .post(format!("{}/v1/customers", app.http_base))
        .basic_auth(&app.key, Some(""))
        .header("traceparent", format!("00-{trace_id}-{parent_span}-01"))
        .form(&[("name", "Traced")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("request-id").is_some());

    // A gRPC call inside another trace.
    let grpc_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut request = app.grpc(proto::ListCustomersRequest::default());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{grpc_trace}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    app.customers().await.list_customers(request).await.unwrap();

    telemetry.flush();
    let rest_spans = received
        .spans_of(&hex::decode(trace_id).unwrap(), 2, Duration::from_secs(15))
        .await;
    let server = rest_spans
        .iter()
        .find(|span| span.name == "POST /v1/customers")
        .unwrap_or_else(|| {
            panic!(
                "no request span in {:?}",
                rest_spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        server.parent_span_id,
        hex::decode(parent_span).unwrap(),
        "the caller's span is the parent"
    );
    assert_eq!(
        attribute(server, "http.route").as_deref(),
        Some("/v1/customers")
    );
    assert!(
        rest_spans
            .iter()
            .any(|span| span.name.contains("sea_orm") || attribute(span, "db.system").is_some()),
        "database spans belong to the same trace: {:?}",
        rest_spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );

    let grpc_spans = received
        .spans_of(
            &hex::decode(grpc_trace).unwrap(),
            1,
            Duration::from_secs(15),
        )
        .await;
    assert!(
        grpc_spans
            .iter()
            .any(|span| span.name == "creditd.v1.CustomerService/ListCustomers"),
        "{:?}",
        grpc_spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );

    let secret = &app.key["sk_test_".len()..];
    for span in received.spans.lock().unwrap().iter() {
        assert!(
            !all_text(span).contains(secret),
            "a span carries the API key: {}",
            span.name
        );
    }

    telemetry.flush();
    assert!(
        received
            .has_metric("creditd.requests", Duration::from_secs(15))
            .await,
        "request metrics are exported"
    );
    assert!(
        received
            .has_metric("creditd.request.duration", Duration::from_secs(15))
            .await
    );
    assert!(
        received
            .has_metric("db.client.connection.count", Duration::from_secs(15))
            .await
    );
}
