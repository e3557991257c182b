//! Traces and metrics reach an OTLP/gRPC collector, and a caller's W3C trace continues into
//! creditd (REST `traceparent` header and gRPC metadata) down to its database spans. Spans
//! never carry the API key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_and_metrics_reach_an_otlp_grpc_collector_and_continue_the_callers_trace() {
    common::otlp::exported_traces_continue_the_callers_trace(creditd::telemetry::Protocol::Grpc)
        .await;
}
