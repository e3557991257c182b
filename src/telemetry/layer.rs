//! A tower layer shared by both transports: one server span per request (continuing the
//! caller's W3C trace from `traceparent`), a request ID in the span, the logs and the
//! `request-id` response header, and the request metrics.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Request, Response};
use opentelemetry::KeyValue;
use opentelemetry::propagation::Extractor;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::metrics::instruments;

#[derive(Clone, Copy)]
pub struct RequestTelemetryLayer {
    transport: &'static str,
}

impl RequestTelemetryLayer {
    /// `transport` is "grpc" or "http".
    pub fn new(transport: &'static str) -> Self {
        RequestTelemetryLayer { transport }
    }
}

impl<S> Layer<S> for RequestTelemetryLayer {
    type Service = RequestTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTelemetry {
            inner,
            transport: self.transport,
        }
    }
}

#[derive(Clone)]
pub struct RequestTelemetry<S> {
    inner: S,
    transport: &'static str,
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestTelemetry<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: Send,
    ReqBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let transport = self.transport;
        let method = request.method().to_string();
        // gRPC paths name the RPC; REST routes use the matched template, never raw IDs.
        let route = match transport {
            "grpc" => request.uri().path().to_string(),
            _ => request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|path| path.as_str().to_string())
                .unwrap_or_else(|| "unmatched".to_string()),
        };
        let request_id = format!("req_{}", crate::domain::ids::random_base62(16));
        request
            .extensions_mut()
            .insert(RequestId(request_id.clone()));
        let name = if transport == "grpc" {
            route.trim_start_matches('/').to_string()
        } else {
            format!("{method} {route}")
        };
        let span = tracing::info_span!(
            "request",
            otel.name = %name,
            otel.kind = "server",
            rpc.system = if transport == "grpc" { "grpc" } else { "" },
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
            request_id = %request_id,
            trace_id = tracing::field::Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
        let trace_id = {
            use opentelemetry::trace::TraceContextExt;
            span.context().span().span_context().trace_id()
        };
        if trace_id != opentelemetry::trace::TraceId::INVALID {
            span.record("trace_id", tracing::field::display(trace_id));
        }
        let started = Instant::now();
        let future = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let result = future.await;
            let seconds = started.elapsed().as_secs_f64();
            let mut attributes = vec![
                KeyValue::new("transport", transport),
                KeyValue::new("route", route),
            ];
            let code = match &result {
                Ok(response) => {
                    span.record("http.response.status_code", response.status().as_u16());
                    outcome_code(transport, response.status().as_u16(), response.headers())
                }
                Err(_) => Some("transport_error".to_string()),
            };
            let metrics = instruments();
            metrics.requests.add(1, &attributes);
            metrics.duration.record(seconds, &attributes);
            if let Some(code) = code {
                attributes.push(KeyValue::new("code", code));
                metrics.errors.add(1, &attributes);
            }
            result.map(|mut response| {
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert("request-id", value);
                }
                response
            })
        })
    }
}

/// The `req_…` ID given to a request (also sent back in its `Request-Id` header), in the
/// request's extensions for the handlers: events name it as their cause.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The error code of a finished request, if it failed: the gRPC status (sent in the headers
/// of error responses) or the HTTP status.
fn outcome_code(transport: &str, status: u16, headers: &HeaderMap) -> Option<String> {
    if transport == "grpc" {
        let code = headers
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("0");
        return (code != "0").then(|| {
            format!(
                "grpc_{}",
                tonic::Code::from_i32(code.parse().unwrap_or(2))
                    .description()
                    .replace(' ', "_")
            )
        });
    }
    (status >= 400).then(|| status.to_string())
}
