//! Losing the database connection (PostgreSQL restart, failover, idle kill,
//! `pg_terminate_backend`): clients see only success or a retryable answer (503 with
//! `Retry-After` / UNAVAILABLE with `RetryInfo`), never 500; a transaction whose connection died
//! before COMMIT is re-run inside creditd; one whose COMMIT went unanswered is not (it may have
//! committed), and the client's retry with its idempotency key settles it. Under load with
//! backends terminated over and over, nothing acknowledged is lost, every retry with the same
//! key succeeds once, creditd recovers without a restart, and the audit is clean.
//!
//! PostgreSQL only: an embedded SQLite database has no connection to lose (each test says so
//! and passes on SQLite-only runs, as the other PostgreSQL variants do). The load lasts 3 s;
//! `CREDITD_SOAK_SECONDS` makes it longer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::credits::{BalanceClient, GrantClient, id_of, metered_grant, metered_line};
use common::faults::{Retries, Terminator, address_of, grpc_write, rest_write, with_address};
use common::{Backend, TestApp};
use creditd::grpc::proto;
use sea_orm::{ConnectionTrait, TransactionTrait};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn postgres_or_skip() -> bool {
    if common::postgres_configured() {
        return true;
    }
    eprintln!(
        "skipped: {} is not set; SQLite has no connection to lose",
        common::POSTGRES_URL_ENV
    );
    false
}

/// The customer's balance transactions, oldest first.
async fn balance_transactions(app: &TestApp, customer: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        let page = app
            .get(&format!(
                "/v1/customers/{customer}/balance_transactions?limit=100{cursor}"
            ))
            .await
            .ok();
        all.extend(page["data"].as_array().expect("data").iter().cloned());
        if page["has_more"] != true {
            break;
        }
        cursor = format!("&starting_after={}", id_of(all.last().expect("a page")));
    }
    all.reverse();
    all
}

/// The whole ledger audits clean.
async fn audit_is_clean(app: &TestApp) {
    let report = app.services.audit_everything().await.expect("audit");
    assert!(report.is_clean(), "audit findings: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_connection_is_terminated_before_commit_is_rerun_inside_creditd() {
    if !postgres_or_skip() {
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let customer = app.create_customer("name=Ada").await;
    let terminator = Terminator::new(&app.database.url).await;

    // Hold the customer's row lock from outside, so the write waits inside its transaction.
    let outside = creditd::store::Db::connect(&creditd::store::DbOptions {
        max_connections: 1,
        ..creditd::store::DbOptions::new(app.database.url.clone())
    })
    .await
    .expect("outside connection");
    let holder = outside.writer().begin().await.expect("begin");
    holder
        .execute_unprepared(&format!(
            "SELECT id FROM customers WHERE id = '{customer}' FOR UPDATE"
        ))
        .await
        .expect("lock the customer");
    let holder_pid = holder
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_backend_pid() AS pid",
        ))
        .await
        .expect("pid")
        .expect("row")
        .try_get::<i32>("", "pid")
        .expect("pid");

    let path = format!("/v1/customers/{customer}/balance_transactions");
    let write = {
        let http = app.http.clone();
        let url = format!("{}{path}", app.http_base);
        let key = app.key.clone();
        tokio::spawn(async move {
            let response = http
                .post(url)
                .basic_auth(key, Some(""))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("amount=-700&currency=usd")
                .send()
                .await
                .expect("answer");
            let status = response.status().as_u16();
            (
                status,
                response.json::<serde_json::Value>().await.expect("json"),
            )
        })
    };
    // Wait (bounded) until creditd's backend is blocked on our lock, then terminate it.
    let waiting = format!("wait_event_type = 'Lock' AND pid <> {holder_pid}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while terminator.count_where(&waiting).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the write never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(terminator.terminate_where(&waiting).await, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.rollback().await.expect("release the lock");
    outside.close().await;

    let (status, body) = tokio::time::timeout(Duration::from_secs(20), write)
        .await
        .expect("the write finished")
        .expect("task");
    assert_eq!(
        status, 200,
        "the write is re-run on a new connection: {body}"
    );
    let chain = balance_transactions(&app, &customer).await;
    assert_eq!(chain.len(), 1, "applied exactly once: {chain:?}");
    assert_eq!(chain[0]["amount"], -700);
    common::faults::assert_gapless_chain(&chain);
    audit_is_clean(&app).await;
    terminator.close().await;
}

/// A TCP proxy between creditd and PostgreSQL that, when armed, passes the next `COMMIT` on to
/// the server, lets it commit, and then cuts the connection before the answer reaches creditd.
struct CommitCutter {
    address: SocketAddr,
    armed: Arc<AtomicBool>,
    cut: Arc<AtomicU64>,
}

impl CommitCutter {
    async fn start(upstream: String) -> CommitCutter {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("address");
        let armed = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicU64::new(0));
        let (armed_in, cut_in) = (armed.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, armed_in.clone(), cut_in.clone()));
            }
        });
        CommitCutter {
            address,
            armed,
            cut,
        }
    }
}

async fn relay(client: TcpStream, server: TcpStream, armed: Arc<AtomicBool>, cut: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_down = stop.clone();
    // Relays answers until told to stop; hands back the client's side, still open.
    let down = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                read = server_read.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => return client_write,
                    Ok(n) => if client_write.write_all(&buffer[..n]).await.is_err() {
                        return client_write;
                    },
                },
                _ = stop_down.notified() => return client_write,
            }
        }
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match client_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        // sqlx sends `COMMIT` on its own (simple or extended protocol); nothing else says it.
        let is_commit = chunk.windows(6).any(|window| window == b"COMMIT");
        if is_commit && armed.swap(false, Ordering::SeqCst) {
            // Stop relaying answers first, then let the server commit, then cut both sides.
            cut.fetch_add(1, Ordering::SeqCst);
            stop.notify_one();
            let client_write = down.await;
            let _ = server_write.write_all(chunk).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(client_write);
            return;
        }
        if server_write.write_all(chunk).await.is_err() {
            break;
        }
    }
    stop.notify_one();
}

/// Lets the background work a write set off finish first (the event pump numbers the write's
/// events in a transaction of its own), so that the next COMMIT through the proxy is the
/// request's.
async fn quiesce(app: &TestApp) {
    app.services
        .events
        .run_once(&app.services.db)
        .await
        .expect("event pump");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_left_unanswered_is_a_503_never_retried_blindly_and_the_key_settles_it() {
    if !postgres_or_skip() {
        return;
    }
    let upstream = address_of(&common::postgres_url().expect("url"));
    let proxy = CommitCutter::start(upstream).await;
    let address = proxy.address;
    let app = TestApp::spawn_with(Backend::Postgres, |config| {
        // Plaintext, so the proxy can see the COMMIT (the server may offer TLS).
        let url = with_address(&config.database.database_url, address);
        let separator = if url.contains('?') { '&' } else { '?' };
        config.database.database_url = format!("{url}{separator}sslmode=disable");
    })
    .await;
    let customer = app.create_customer("name=Ada").await;
    let path = format!("/v1/customers/{customer}/balance_transactions");

    // Without a key: the client cannot know, and creditd must not guess by running it again.
    quiesce(&app).await;
    proxy.armed.store(true, Ordering::SeqCst);
    let reply = app.post(&path, "amount=-100&currency=usd").await;
    assert_eq!(proxy.cut.load(Ordering::SeqCst), 1, "the COMMIT was cut");
    reply.assert_error(503, "api_error", None, None);
    assert!(
        reply.headers.contains_key("retry-after"),
        "{:?}",
        reply.headers
    );
    let chain = balance_transactions(&app, &customer).await;
    assert_eq!(chain.len(), 1, "committed once, not re-run: {chain:?}");

    // With a key: the retry answers with what was committed, and writes nothing more.
    quiesce(&app).await;
    proxy.armed.store(true, Ordering::SeqCst);
    let reply = app
        .post_idempotent(&path, "cut-commit-1", "amount=-250&currency=usd")
        .await;
    assert_eq!(proxy.cut.load(Ordering::SeqCst), 2, "the COMMIT was cut");
    reply.assert_error(503, "api_error", None, None);
    let retried = app
        .post_idempotent(&path, "cut-commit-1", "amount=-250&currency=usd")
        .await;
    assert_eq!(
        retried
            .headers
            .get("idempotent-replayed")
            .and_then(|value| value.to_str().ok()),
        Some("true"),
        "the committed result is replayed"
    );
    let replayed = retried.ok();
    let chain = balance_transactions(&app, &customer).await;
    assert_eq!(chain.len(), 2, "{chain:?}");
    assert_eq!(chain[1]["id"], replayed["id"]);
    assert_eq!(chain[1]["amount"], -250);
    common::faults::assert_gapless_chain(&chain);

    // Over gRPC the same loss is UNAVAILABLE.
    quiesce(&app).await;
    proxy.armed.store(true, Ordering::SeqCst);
    let mut grants = GrantClient::new(app.channel().await);
    let status = grants
        .create_credit_grant(app.grpc_idempotent(metered_grant(&customer, "usd", 900), "g-1"))
        .await
        .expect_err("the COMMIT was cut");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let grant = grants
        .create_credit_grant(app.grpc_idempotent(metered_grant(&customer, "usd", 900), "g-1"))
        .await
        .expect("the retry replays")
        .into_inner();
    let listed = app
        .get(&format!("/v1/billing/credit_grants?customer={customer}"))
        .await
        .ok();
    assert_eq!(common::credits::ids_of(&listed), vec![grant.id]);
    audit_is_clean(&app).await;
}

/// One acknowledged write, to re-read afterwards.
#[derive(Debug)]
enum Acknowledged {
    BalanceTransaction {
        id: String,
        amount: i64,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_see_only_success_or_retryable_errors_while_backends_are_terminated_under_load() {
    if !postgres_or_skip() {
        return;
    }
    let app = Arc::new(TestApp::spawn(Backend::Postgres).await);
    let ledger_customer = app.create_customer("name=Ledger").await;
    let credit_customer = app.create_customer("name=Credits").await;
    let terminator = Terminator::new(&app.database.url).await;
    // `CREDITD_SOAK_SECONDS` makes this a soak (see the README's failure contract).
    let load = Duration::from_secs(
        std::env::var("CREDITD_SOAK_SECONDS")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(3),
    );
    let ops_per_worker = 150 * load.as_secs().max(1);
    let max_kill_rounds = load.as_millis() as u64 / 100 + 1;
    let started = Instant::now();

    // Terminates every backend of the test database every 100 ms while the load runs.
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut rounds, mut terminated) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst)
                && started.elapsed() < load
                && rounds < max_kill_rounds
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
                terminated += terminator.terminate_all().await;
                rounds += 1;
            }
            terminator.close().await;
            (rounds, terminated)
        })
    };

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..7u64 {
        let app = app.clone();
        let (ledger_customer, credit_customer) = (ledger_customer.clone(), credit_customer.clone());
        workers.spawn(async move {
            let channel = app.channel().await;
            let grants = GrantClient::new(channel.clone());
            let balance = BalanceClient::new(channel.clone());
            let transactions =
                proto::customer_balance_transaction_service_client::CustomerBalanceTransactionServiceClient::new(channel);
            let mut acknowledged = Vec::new();
            let mut retries = Retries::default();
            let mut op = 0;
            while started.elapsed() < load && op < ops_per_worker {
                op += 1;
                let key = format!("w{worker}-op{op}");
                let amount = -((worker * 1000 + op) as i64);
                let outcome = match worker % 4 {
                    0 => rest_write(
                        &app.http,
                        || app.http_base.clone(),
                        &app.key,
                        &format!("/v1/customers/{ledger_customer}/balance_transactions"),
                        &key,
                        &format!("amount={amount}&currency=usd"),
                        false,
                    )
                    .await
                    .map(|(body, r)| {
                        (Acknowledged::BalanceTransaction { id: id_of(&body), amount }, r)
                    }),
                    1 => grpc_write("CreateCustomerBalanceTransaction", false, || {
                        let mut client = transactions.clone();
                        let request = app.grpc_idempotent(
                            proto::CreateCustomerBalanceTransactionRequest {
                                customer: ledger_customer.clone(),
                                amount,
                                currency: "usd".to_string(),
                                ..Default::default()
                            },
                            &key,
                        );
                        async move { client.create_customer_balance_transaction(request).await }
                    })
                    .await
                    .map(|(created, r)| {
                        (Acknowledged::BalanceTransaction { id: created.id, amount }, r)
                    }),
                    2 => {
                        if op % 2 == 0 {
                            grpc_write("CreateCreditGrant", false, || {
                                let mut client = grants.clone();
                                let request = app.grpc_idempotent(
                                    metered_grant(&credit_customer, "usd", 500),
                                    &key,
                                );
                                async move { client.create_credit_grant(request).await }
                            })
                            .await
                            .map(|(grant, r)| (Acknowledged::Grant { id: grant.id, value: 500 }, r))
                        } else {
                            rest_write(
                                &app.http,
                                || app.http_base.clone(),
                                &app.key,
                                "/v1/billing/credit_grants",
                                &key,
                                &common::credits::usd_grant_body(&credit_customer, 300),
                                false,
                            )
                            .await
                            .map(|(body, r)| (Acknowledged::Grant { id: id_of(&body), value: 300 }, r))
                        }
                    }
                    _ => {
                        let (invoice, line) = (format!("in_w{worker}"), format!("il_{op}"));
                        grpc_write("ApplyCredits", false, || {
                            let mut client = balance.clone();
                            let request = app.grpc_idempotent(
                                metered_line(&credit_customer, "usd", &invoice, &line, 120),
                                &key,
                            );
                            async move { client.apply_credits(request).await }
                        })
                        .await
                        .map(|(applied, r)| {
                            (Acknowledged::Application { invoice, line, applied: applied.applied }, r)
                        })
                    }
                };
                match outcome {
                    Ok((ack, r)) => {
                        retries.add(r);
                        acknowledged.push(ack);
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok((acknowledged, retries))
        });
    }
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
    stop.store(true, Ordering::SeqCst);
    let (kill_rounds, terminated) = killer.await.expect("killer");
    eprintln!(
        "database loss: {} acknowledged writes in {:?}; {kill_rounds} termination rounds killed \
         {terminated} backends; clients retried {retries:?}",
        acknowledged.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "non-retryable answers: {failures:#?}");
    assert!(terminated > 0, "the test terminated no backend");

    // Recovered without a restart: a new request succeeds at once.
    let customer = app.create_customer("name=After").await;
    assert!(customer.starts_with("cus_"));

    // Nothing acknowledged was lost or changed; nothing was applied twice.
    let chain = balance_transactions(&app, &ledger_customer).await;
    let stored: BTreeMap<String, i64> = chain
        .iter()
        .map(|t| (id_of(t), t["amount"].as_i64().expect("amount")))
        .collect();
    let mut expected_transactions = BTreeMap::new();
    let mut granted = 0;
    let mut applied = 0;
    let mut grants = GrantClient::new(app.channel().await);
    let mut balance = BalanceClient::new(app.channel().await);
    for ack in &acknowledged {
        match ack {
            Acknowledged::BalanceTransaction { id, amount } => {
                expected_transactions.insert(id.clone(), *amount);
            }
            Acknowledged::Grant { id, value } => {
                let grant = grants
                    .get_credit_grant(app.grpc(proto::GetCreditGrantRequest { id: id.clone() }))
                    .await
                    .expect("acknowledged grant")
                    .into_inner();
                let amount = grant.amount.and_then(|a| a.monetary).map(|m| m.value);
                assert_eq!(amount, Some(*value), "grant {id}");
                granted += value;
            }
            Acknowledged::Application {
                invoice,
                line,
                applied: first,
            } => {
                let again = balance
                    .apply_credits(app.grpc(metered_line(
                        &credit_customer,
                        "usd",
                        invoice,
                        line,
                        120,
                    )))
                    .await
                    .expect("re-apply")
                    .into_inner();
                assert_eq!(again.applied, *first, "{invoice}/{line} applies once");
                applied += first;
            }
        }
    }
    assert_eq!(
        stored, expected_transactions,
        "exactly the acknowledged transactions"
    );
    common::faults::assert_gapless_chain(&chain);
    let listed = common::credits::transactions(&app, &credit_customer, None).await;
    let ledger: i64 = listed.iter().map(common::credits::signed_amount).sum();
    assert_eq!(ledger, granted - applied, "grants minus applications");
    audit_is_clean(&app).await;
}
