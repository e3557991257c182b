//! Crashes: the real `creditd serve` binary is SIGKILLed at random moments while clients write
//! over REST and gRPC with idempotency keys (customer balance transactions, credit grants,
//! ApplyCredits, a test-clock advance), and restarted on the same database (same ports), round
//! after round. Each client retries a write with its key until it is acknowledged, across the
//! crashes. Afterwards: every acknowledged write is present and unchanged, nothing else was
//! written (so each unacknowledged request that was retried with its key applied at most once),
//! the balance chain is gapless, the clock advance finished (resumed at startup if a crash cut
//! it short) and `creditd audit` is clean.
//!
//! SQLite always; PostgreSQL when configured. `CREDITD_SOAK_ROUNDS` (default 3) sets the number
//! of crash rounds per backend, for a longer soak:
//! `CREDITD_SOAK_ROUNDS=50 cargo test --test fault_crash -- --nocapture`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::credits::{BalanceClient, GrantClient, id_of, metered_grant, metered_line};
use common::faults::{Retries, grpc_write, rest_write};
use common::{Backend, TestDatabase};
use creditd::grpc::proto;
use creditd::service::Services;
use creditd::store::{Db, DbOptions};
use tonic::transport::Channel;

const DEFAULT_ROUNDS: u32 = 3;

fn rounds() -> u32 {
    std::env::var("CREDITD_SOAK_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// `creditd serve` on fixed loopback ports, so clients reach each incarnation at one address.
struct Creditd {
    url: String,
    grpc_port: u16,
    http_port: u16,
    child: Option<Child>,
}

impl Creditd {
    fn new(url: &str) -> Creditd {
        Creditd {
            url: url.to_string(),
            grpc_port: free_port(),
            http_port: free_port(),
            child: None,
        }
    }

    fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts it and waits (bounded) until `/healthz` answers.
    async fn start(&mut self, http: &reqwest::Client) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_creditd"));
        command
            .args(["serve", "--database-url", &self.url])
            .args(["--grpc-addr", &format!("127.0.0.1:{}", self.grpc_port)])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http_port)])
            .args(["--expiry-sweep-interval-seconds", "1"])
            .args(["--no-bootstrap-key", "--log-format", "json"])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CREDITD_") {
                command.env_remove(name);
            }
        }
        self.child = Some(command.spawn().expect("start creditd serve"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let health = http
                .get(format!("{}/healthz", self.http_base()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if health.is_ok_and(|response| response.status().is_success()) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("creditd serve exited at startup: {status}");
            }
            assert!(Instant::now() < deadline, "creditd did not start in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL (`Child::kill` on Unix), then reap it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Creditd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One acknowledged write and what it answered, to compare with what is stored afterwards.
#[derive(Debug)]
enum Acknowledged {
    BalanceTransaction {
        id: String,
        amount: i64,
        ending_balance: i64,
    },
    Grant {
        id: String,
        value: i64,
    },
    Application {
        invoice: String,
        line: String,
        applied: i64,
    },
}

struct Setup {
    key: String,
    ledger_customer: String,
    credit_customer: String,
    clock: String,
    clock_customer: String,
    clock_start: i64,
}

/// Makes an account and key in the (migrated) database, before any server runs.
async fn make_key(url: &str) -> String {
    let db = Db::connect(&DbOptions::new(url)).await.expect("connect");
    db.migrate().await.expect("migrate");
    let services = Services::new(db.clone());
    let account = services.create_account().await.expect("account");
    let key = services
        .create_api_key(&account, false)
        .await
        .expect("key")
        .reveal()
        .to_string();
    db.close().await;
    key
}

async fn setup(http: &reqwest::Client, server: &Creditd, key: String) -> Setup {
    let base = || server.http_base();
    let post = |path: &'static str, idempotency_key: &'static str, body: String| {
        let key = key.clone();
        async move {
            rest_write(http, base, &key, path, idempotency_key, &body, false)
                .await
                .expect("setup write")
                .0
        }
    };
    let ledger_customer = id_of(&post("/v1/customers", "setup-1", "name=Ledger".into()).await);
    let credit_customer = id_of(&post("/v1/customers", "setup-2", "name=Credits".into()).await);
    let clock_start = 1_700_000_000;
    let clock = id_of(
        &post(
            "/v1/test_helpers/test_clocks",
            "setup-3",
            format!("frozen_time={clock_start}"),
        )
        .await,
    );
    let clock_customer = id_of(
        &post(
            "/v1/customers",
            "setup-4",
            format!("name=Clocked&test_clock={clock}"),
        )
        .await,
    );
    post(
        "/v1/billing/credit_grants",
        "setup-5",
        format!(
            "{}&expires_at={}",
            common::credits::usd_grant_body(&clock_customer, 4000),
            clock_start + 100
        ),
    )
    .await;
    Setup {
        key,
        ledger_customer,
        credit_customer,
        clock,
        clock_customer,
        clock_start,
    }
}

async fn crash_and_restart_under_load(backend: Backend) {
    let started = Instant::now();
    let database = TestDatabase::create(backend).await;
    let key = make_key(&database.url).await;
    let http = reqwest::Client::new();
    let mut server = Creditd::new(&database.url);
    server.start(&http).await;
    let setup = Arc::new(setup(&http, &server, key).await);
    let http_base = server.http_base();
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", server.grpc_port))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..4u64 {
        let (setup, stop, http, base) =
            (setup.clone(), stop.clone(), http.clone(), http_base.clone());
        let grants = GrantClient::new(channel.clone());
        let balance = BalanceClient::new(channel.clone());
        let transactions =
            proto::customer_balance_transaction_service_client::CustomerBalanceTransactionServiceClient::new(
                channel.clone(),
            );
        workers.spawn(async move {
            let mut acknowledged = Vec::new();
            let mut retries = Retries::default();
            for op in 1..=10_000u64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let key = format!("w{worker}-op{op}");
                let amount = -((worker * 10_000 + op) as i64);
                let ack = match worker {
                    0 => {
                        let path = format!("/v1/customers/{}/balance_transactions", setup.ledger_customer);
                        let (body, r) = rest_write(&http, || base.clone(), &setup.key, &path, &key, &format!("amount={amount}&currency=usd"), true).await?;
                        retries.add(r);
                        Acknowledged::BalanceTransaction {
                            id: id_of(&body),
                            amount,
                            ending_balance: body["ending_balance"].as_i64().expect("ending_balance"),
                        }
                    }
                    1 => {
                        let (created, r) = grpc_write("CreateCustomerBalanceTransaction", true, || {
                            let mut client = transactions.clone();
                            let request = common::grpc_request(proto::CreateCustomerBalanceTransactionRequest {
                                customer: setup.ledger_customer.clone(),
                                amount,
                                currency: "usd".to_string(),
                                ..Default::default()
                            }, Some(&setup.key), Some(&key));
                            async move { client.create_customer_balance_transaction(request).await }
                        })
                        .await?;
                        retries.add(r);
                        Acknowledged::BalanceTransaction { id: created.id, amount, ending_balance: created.ending_balance }
                    }
                    2 if op % 2 == 0 => {
                        let (body, r) = rest_write(&http, || base.clone(), &setup.key, "/v1/billing/credit_grants", &key, &common::credits::usd_grant_body(&setup.credit_customer, 300), true).await?;
                        retries.add(r);
                        Acknowledged::Grant { id: id_of(&body), value: 300 }
                    }
                    2 => {
                        let (grant, r) = grpc_write("CreateCreditGrant", true, || {
                            let mut client = grants.clone();
                            let request = common::grpc_request(metered_grant(&setup.credit_customer, "usd", 500), Some(&setup.key), Some(&key));
                            async move { client.create_credit_grant(request).await }
                        })
                        .await?;
                        retries.add(r);
                        Acknowledged::Grant { id: grant.id, value: 500 }
                    }
                    _ => {
                        if op == 3 {
                            // The clock advance, once, in the middle of the load.
                            let path = format!("/v1/test_helpers/test_clocks/{}/advance", setup.clock);
                            let target = setup.clock_start + 200;
                            let (_, r) = rest_write(&http, || base.clone(), &setup.key, &path, "advance-1", &format!("frozen_time={target}"), true).await?;
                            retries.add(r);
                        }
                        let (invoice, line) = (format!("in_w{worker}"), format!("il_{op}"));
                        let (applied, r) = grpc_write("ApplyCredits", true, || {
                            let mut client = balance.clone();
                            let request = common::grpc_request(metered_line(&setup.credit_customer, "usd", &invoice, &line, 150), Some(&setup.key), Some(&key));
                            async move { client.apply_credits(request).await }
                        })
                        .await?;
                        retries.add(r);
                        Acknowledged::Application { invoice, line, applied: applied.applied }
                    }
                };
                acknowledged.push(ack);
            }
            Ok::<_, String>((acknowledged, retries))
        });
    }

    // Crash it at random moments, restarting it on the same database each time.
    let rounds = rounds();
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(rand::random_range(150..700))).await;
        server.kill();
        server.start(&http).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    let mut retries = Retries::default();
    let mut failures = Vec::new();
    while let Some(joined) = workers.join_next().await {
        match joined.expect("worker") {
            Ok((acks, r)) => {
                acknowledged.extend(acks);
                retries.add(r);
            }
            Err(error) => failures.push(error),
        }
    }
    assert!(failures.is_empty(), "non-retryable answers: {failures:#?}");

    // Every acknowledged write is there, unchanged; nothing else was written.
    let app = Reader {
        http: http.clone(),
        base: http_base.clone(),
        key: setup.key.clone(),
    };
    let chain = app.balance_transactions(&setup.ledger_customer).await;
    let stored: BTreeMap<String, (i64, i64)> = chain
        .iter()
        .map(|t| {
            let field = |name: &str| t[name].as_i64().expect("integer");
            (id_of(t), (field("amount"), field("ending_balance")))
        })
        .collect();
    let mut expected = BTreeMap::new();
    let (mut granted, mut applied) = (0, 0);
    let mut grant_ids = vec![];
    let mut balance = BalanceClient::new(channel.clone());
    for ack in &acknowledged {
        match ack {
            Acknowledged::BalanceTransaction {
                id,
                amount,
                ending_balance,
            } => {
                expected.insert(id.clone(), (*amount, *ending_balance));
            }
            Acknowledged::Grant { id, value } => {
                let grant = app.get(&format!("/v1/billing/credit_grants/{id}")).await;
                assert_eq!(grant["amount"]["monetary"]["value"], *value, "grant {id}");
                granted += value;
                grant_ids.push(id.clone());
            }
            Acknowledged::Application {
                invoice,
                line,
                applied: first,
            } => {
                let again = balance
                    .apply_credits(common::grpc_request(
                        metered_line(&setup.credit_customer, "usd", invoice, line, 150),
                        Some(&setup.key),
                        None,
                    ))
                    .await
                    .expect("re-apply")
                    .into_inner();
                assert_eq!(again.applied, *first, "{invoice}/{line} applies once");
                applied += first;
            }
        }
    }
    assert_eq!(
        stored, expected,
        "exactly the acknowledged balance transactions, unchanged"
    );
    common::faults::assert_gapless_chain(&chain);
    let listed = app
        .all(&format!(
            "/v1/billing/credit_grants?customer={}",
            setup.credit_customer
        ))
        .await;
    let mut listed_ids: Vec<String> = listed.iter().map(id_of).collect();
    listed_ids.sort();
    grant_ids.sort();
    assert_eq!(listed_ids, grant_ids, "exactly the acknowledged grants");
    let entries = app.credit_entries(&setup.credit_customer).await;
    let ledger: i64 = entries.iter().map(common::credits::signed_amount).sum();
    assert_eq!(ledger, granted - applied, "grants minus applications");

    // The advance finished (resumed at startup if a crash interrupted it): one expiry entry.
    let clock = app
        .get(&format!("/v1/test_helpers/test_clocks/{}", setup.clock))
        .await;
    assert_eq!(clock["status"], "ready", "{clock}");
    assert_eq!(clock["frozen_time"], setup.clock_start + 200, "{clock}");
    let clocked = app.credit_entries(&setup.clock_customer).await;
    let expired = common::credits::kinds(&clocked)
        .iter()
        .filter(|kind| kind.as_str() == "credits_expired")
        .count();
    assert_eq!(expired, 1, "{clocked:?}");

    // The audit of the whole database, by the CLI, after a last crash.
    server.kill();
    let audit = Command::new(env!("CARGO_BIN_EXE_creditd"))
        .args(["audit", "--database-url", &database.url])
        .env_remove("CREDITD_DATABASE_URL")
        .output()
        .expect("run creditd audit");
    assert!(
        audit.status.success(),
        "creditd audit: {}\n{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    eprintln!(
        "crash ({backend:?}): {rounds} SIGKILL rounds, {} acknowledged writes ({} balance \
         transactions, {} grants), clients retried {retries:?}, {:?}",
        acknowledged.len(),
        expected.len(),
        grant_ids.len(),
        started.elapsed()
    );
}

/// Reads after the fact, over REST with the setup's key.
struct Reader {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Reader {
    async fn get(&self, path: &str) -> serde_json::Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .basic_auth(&self.key, Some(""))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("json")
    }

    /// Pages a list to its end; oldest first.
    async fn all(&self, path: &str) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        let separator = if path.contains('?') { '&' } else { '?' };
        for _ in 0..1000 {
            let page = self
                .get(&format!("{path}{separator}limit=100{cursor}"))
                .await;
            all.extend(page["data"].as_array().expect("data").iter().cloned());
            if page["has_more"] != true {
                break;
            }
            cursor = format!("&starting_after={}", id_of(all.last().expect("a page")));
        }
        all.reverse();
        all
    }

    async fn balance_transactions(&self, customer: &str) -> Vec<serde_json::Value> {
        self.all(&format!("/v1/customers/{customer}/balance_transactions"))
            .await
    }

    async fn credit_entries(&self, customer: &str) -> Vec<serde_json::Value> {
        self.all(&format!(
            "/v1/billing/credit_balance_transactions?customer={customer}"
        ))
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_writes_survive_sigkill_and_retries_apply_at_most_once() {
    crash_and_restart_under_load(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_acknowledged_writes_survive_sigkill_and_retries_apply_at_most_once() {
    if !common::postgres_configured() {
        eprintln!(
            "skipped on PostgreSQL: {} is not set (SQLite only)",
            common::POSTGRES_URL_ENV
        );
        return;
    }
    crash_and_restart_under_load(Backend::Postgres).await;
}
