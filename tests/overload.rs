//! Fault test 1d, overload: the real binary at a small concurrency limit, flooded over REST and
//! gRPC by many concurrent clients at once. It must shed what it cannot take with Stripe-shaped
//! 429s and RESOURCE_EXHAUSTED, never answer 5xx or another gRPC error, keep its memory bounded,
//! and serve normally as soon as the flood stops. (`tests/limits.rs` checks each limit's shape on
//! one request; this checks them under load.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, TestDatabase, grpc_request};
use creditd::domain::ids::random_base62;
use creditd::grpc::proto;
use creditd::grpc::proto::customer_service_client::CustomerServiceClient;
use tonic::transport::Channel;

const CONCURRENCY_LIMIT: &str = "4";
const CLIENTS_PER_TRANSPORT: usize = 48;
const FLOOD: Duration = Duration::from_secs(3);
const MAX_PEAK_RSS_KB: u64 = 128 * 1024;

/// The server process; killed when dropped, so a failing test leaves nothing running.
struct Served {
    child: Child,
    grpc: String,
    http: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(database_url: &str, key: &str) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_creditd"))
            .args([
                "serve",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(["--log-format", "json", "--no-bootstrap-key"])
            .args(["--max-concurrent-requests", CONCURRENCY_LIMIT])
            .args(["--expiry-sweep-interval-seconds", "0"])
            .env("CREDITD_DATABASE_URL", database_url)
            .env("CREDITD_API_KEYS", key)
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn creditd");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let serving = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|line| line.contains("creditd is serving"))
            .expect("creditd announces its addresses");
        // Keep draining its logs so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        let line: serde_json::Value = serde_json::from_str(&serving).expect("json log line");
        let field = |name: &str| {
            line.get(name)
                .or_else(|| line["fields"].get(name))
                .and_then(|value| value.as_str())
                .unwrap_or_else(|| panic!("no {name} in {serving}"))
                .to_string()
        };
        Served {
            grpc: format!("http://{}", field("grpc")),
            http: format!("http://{}", field("http")),
            child,
        }
    }

    /// The server's peak resident set (VmHWM), in kB.
    fn peak_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    shed: AtomicU64,
    unexpected: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn unexpected(&self, what: String) {
        let mut unexpected = self.unexpected.lock().unwrap();
        if unexpected.len() < 10 {
            unexpected.push(what);
        }
    }
}

async fn rest_client(
    http: reqwest::Client,
    base: String,
    key: String,
    until: Instant,
    tally: Arc<Tally>,
) {
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let request = if n.is_multiple_of(2) {
            http.post(format!("{base}/v1/customers"))
                .form(&[("name", "flood")])
        } else {
            http.get(format!("{base}/v1/customers?limit=3"))
        };
        let response = match request.basic_auth(&key, Some("")).send().await {
            Ok(response) => response,
            Err(err) => {
                tally.unexpected(format!("REST transport error: {err}"));
                continue;
            }
        };
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        match status {
            200 => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            429 if body["error"]["type"] == "invalid_request_error"
                && body["error"]["code"] == "rate_limit"
                && body["error"]["message"].is_string() =>
            {
                tally.shed.fetch_add(1, Ordering::Relaxed);
            }
            _ => tally.unexpected(format!("REST {status}: {body}")),
        }
    }
}

async fn grpc_client(channel: Channel, key: String, until: Instant, tally: Arc<Tally>) {
    let mut client = CustomerServiceClient::new(channel);
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let result = if n.is_multiple_of(2) {
            let request = proto::CreateCustomerRequest {
                name: Some("flood".into()),
                ..Default::default()
            };
            client
                .create_customer(grpc_request(request, Some(&key), None))
                .await
                .map(drop)
        } else {
            let request = proto::ListCustomersRequest {
                page: Some(proto::PageRequest {
                    limit: Some(3),
                    ..Default::default()
                }),
                ..Default::default()
            };
            client
                .list_customers(grpc_request(request, Some(&key), None))
                .await
                .map(drop)
        };
        match result {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                tally.shed.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => tally.unexpected(format!("gRPC {status:?}")),
        }
    }
}

async fn flood_then_recover(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let key = format!("sk_test_{}", random_base62(32));
    let served = Served::start(&database.url, &format!("acct_overload:{key}"));
    let rest = Arc::new(Tally::default());
    let grpc = Arc::new(Tally::default());
    let http = reqwest::Client::new();
    let channel = Channel::from_shared(served.grpc.clone())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let until = Instant::now() + FLOOD;
    let mut clients = Vec::new();
    for n in 0..CLIENTS_PER_TRANSPORT {
        clients.push(tokio::spawn(rest_client(
            http.clone(),
            served.http.clone(),
            key.clone(),
            until,
            rest.clone(),
        )));
        // A few HTTP/2 connections, each multiplexing many calls.
        let channel = if n.is_multiple_of(12) {
            Channel::from_shared(served.grpc.clone())
                .unwrap()
                .connect()
                .await
                .expect("connect")
        } else {
            channel.clone()
        };
        clients.push(tokio::spawn(grpc_client(
            channel,
            key.clone(),
            until,
            grpc.clone(),
        )));
    }
    for client in clients {
        tokio::time::timeout(FLOOD + Duration::from_secs(30), client)
            .await
            .expect("clients finish")
            .unwrap();
    }
    let peak_rss_kb = served.peak_rss_kb();
    let (rest_ok, rest_shed) = (
        rest.ok.load(Ordering::Relaxed),
        rest.shed.load(Ordering::Relaxed),
    );
    let (grpc_ok, grpc_shed) = (
        grpc.ok.load(Ordering::Relaxed),
        grpc.shed.load(Ordering::Relaxed),
    );
    eprintln!(
        "overload on {backend:?}: REST {} requests ({rest_ok} ok, {rest_shed} shed with 429), gRPC {} calls ({grpc_ok} ok, {grpc_shed} RESOURCE_EXHAUSTED), server peak RSS {} MB",
        rest_ok + rest_shed,
        grpc_ok + grpc_shed,
        peak_rss_kb / 1024
    );
    assert_eq!(
        *rest.unexpected.lock().unwrap(),
        Vec::<String>::new(),
        "REST answers other than 200 or 429"
    );
    assert_eq!(
        *grpc.unexpected.lock().unwrap(),
        Vec::<String>::new(),
        "gRPC answers other than OK or RESOURCE_EXHAUSTED"
    );
    assert!(
        rest_shed > 0 && grpc_shed > 0,
        "the flood exceeded the limit on both listeners"
    );
    assert!(
        rest_ok > 0 && grpc_ok > 0,
        "requests within the limit were served throughout"
    );
    assert!(peak_rss_kb <= MAX_PEAK_RSS_KB, "peak RSS {peak_rss_kb} kB");

    // The flood is over: the next requests are served normally, at once.
    let started = Instant::now();
    let reply = http
        .get(format!("{}/v1/customers?limit=1", served.http))
        .basic_auth(&key, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let mut client = CustomerServiceClient::new(channel);
    let created = client
        .create_customer(grpc_request(
            proto::CreateCustomerRequest {
                name: Some("after".into()),
                ..Default::default()
            },
            Some(&key),
            None,
        ))
        .await
        .expect("a call after the flood succeeds")
        .into_inner();
    assert!(created.id.starts_with("cus_"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "recovery is immediate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_concurrency_limit_is_shed_in_shape_and_then_served_on_sqlite() {
    flood_then_recover(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_concurrency_limit_is_shed_in_shape_and_then_served_on_postgres() {
    if !common::postgres_configured() {
        eprintln!(
            "skipped on PostgreSQL: {} is not set (SQLite only)",
            common::POSTGRES_URL_ENV
        );
        return;
    }
    flood_then_recover(Backend::Postgres).await;
}
