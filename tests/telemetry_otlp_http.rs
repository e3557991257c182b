//! The same over OTLP/HTTP (protobuf). A separate test binary: a process has one global
//! tracing subscriber.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_and_metrics_reach_an_otlp_http_collector_and_continue_the_callers_trace() {
    common::otlp::exported_traces_continue_the_callers_trace(
        creditd::telemetry::Protocol::HttpProtobuf,
    )
    .await;
}
