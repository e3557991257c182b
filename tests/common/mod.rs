//! The integration-test harness: starts the real server (gRPC and HTTP on random ports) on a
//! fresh database per test — a temporary SQLite file, or a new PostgreSQL database when
//! `CREDITD_TEST_POSTGRES_URL` is set — and offers REST and gRPC clients. Every REST response
//! passes through the OpenAPI schema check in [`openapi`].
#![allow(dead_code)]

pub mod credits;
pub mod faults;
pub mod openapi;
pub mod otlp;

use std::net::SocketAddr;
use std::time::Duration;

use creditd::config::ServeConfig;
use creditd::grpc::proto;
use creditd::server::Server;
use creditd::service::{Clock, ManualClock, RequestContext, Services, SystemClock};
use creditd::store::{Db, DbOptions, replace_database};
use serde_json::Value;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub use openapi::OpenApi;

/// The variable naming a PostgreSQL server (any database on it; tests create their own).
pub const POSTGRES_URL_ENV: &str = "CREDITD_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each listed test once per backend: `sqlite::<name>` always, `postgres::<name>` when
/// `CREDITD_TEST_POSTGRES_URL` is set (otherwise it says it was skipped and passes, except
/// under CI, where it fails: see [`postgres_url`]).
#[macro_export]
macro_rules! on_every_backend {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $app = $crate::common::TestApp::spawn($crate::common::Backend::Sqlite).await;
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if !$crate::common::postgres_configured() {
                        eprintln!("skipped on PostgreSQL: {} is not set (SQLite only)", $crate::common::POSTGRES_URL_ENV);
                        return;
                    }
                    let $app = $crate::common::TestApp::spawn($crate::common::Backend::Postgres).await;
                    $body
                }
            )*
        }
    };
}

/// The variable CI services set: under it the PostgreSQL half of the suite must run.
pub const CI_ENV: &str = "CI";

/// The PostgreSQL server to test against, or `None` to skip the PostgreSQL variant (the caller
/// prints a note and passes). Under CI (`CI` set to anything but empty, `0` or `false`) a
/// missing URL is a failure instead, so a pipeline that lost its database cannot pass on SQLite
/// alone. A URL whose server cannot be reached fails everywhere, in [`TestDatabase::create`].
pub fn postgres_url() -> Option<String> {
    let url = std::env::var(POSTGRES_URL_ENV)
        .ok()
        .filter(|url| !url.is_empty());
    assert!(
        url.is_some() || !in_ci(),
        "{CI_ENV} is set but {POSTGRES_URL_ENV} is not: under CI the PostgreSQL half of the \
         suite must run, not be skipped (set it to a PostgreSQL server, e.g. \
         postgres://postgres@127.0.0.1:5432/postgres)"
    );
    url
}

/// Whether the PostgreSQL variant runs; see [`postgres_url`].
pub fn postgres_configured() -> bool {
    postgres_url().is_some()
}

fn in_ci() -> bool {
    std::env::var(CI_ENV).is_ok_and(|value| !matches!(value.trim(), "" | "0" | "false"))
}

/// A fresh database: the temporary directory or PostgreSQL database lives as long as this.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite:{}", dir.path().join("creditd.sqlite").display());
                TestDatabase {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                }
            }
            Backend::Postgres => {
                let admin_url =
                    postgres_url().unwrap_or_else(|| panic!("{POSTGRES_URL_ENV} is not set"));
                let name = format!(
                    "creditd_test_{}",
                    creditd::domain::ids::random_base62(12).to_lowercase()
                );
                let admin = Db::connect(&DbOptions {
                    max_connections: 1,
                    ..DbOptions::new(admin_url.clone())
                })
                .await
                .unwrap_or_else(|error| {
                    panic!(
                        "{POSTGRES_URL_ENV} is set but its PostgreSQL server cannot be reached: \
                         {error}"
                    )
                });
                use sea_orm::ConnectionTrait;
                admin
                    .reader()
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create the test database");
                admin.close().await;
                let url = replace_database(&admin_url, &name);
                TestDatabase {
                    url,
                    _dir: None,
                    postgres: Some((admin_url, name)),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async context: use a small runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let admin = Db::connect(&DbOptions {
                    max_connections: 1,
                    ..DbOptions::new(admin_url)
                })
                .await
                .ok()?;
                use sea_orm::ConnectionTrait;
                let _ = admin
                    .reader()
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                admin.close().await;
                Some(())
            })
        })
        .join();
    }
}

/// A running server with a test-mode key for one account.
pub struct TestApp {
    pub backend: Backend,
    pub http_base: String,
    pub grpc_addr: SocketAddr,
    /// A test-mode key of `account_id`.
    pub key: String,
    pub account_id: String,
    pub services: Services,
    /// The server's clock: starts at the real time and moves only with [`TestApp::advance`].
    pub clock: std::sync::Arc<ManualClock>,
    pub http: reqwest::Client,
    pub database: TestDatabase,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// A REST response: status, body, and headers.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The body of a 200 response; panics with the body otherwise.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(
            self.status, 200,
            "expected 200, got {}: {}",
            self.status, self.body
        );
        self.body
    }

    /// Asserts a Stripe error: status, `type`, `code` (None = absent) and `param`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, kind: &str, code: Option<&str>, param: Option<&str>) {
        assert_eq!(self.status, status, "status; body: {}", self.body);
        let error = &self.body["error"];
        assert_eq!(error["type"], kind, "type; body: {}", self.body);
        assert_eq!(error["code"].as_str(), code, "code; body: {}", self.body);
        assert_eq!(error["param"].as_str(), param, "param; body: {}", self.body);
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "message; body: {}",
            self.body
        );
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// A server whose configuration `configure` adjusts first (limits, for example).
    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
        let database = TestDatabase::create(backend).await;
        let mut config = ServeConfig::ephemeral(database.url.clone());
        configure(&mut config);
        let db = Db::connect(&config.database.options())
            .await
            .expect("connect");
        db.migrate().await.expect("migrate");
        let clock = std::sync::Arc::new(ManualClock::new(SystemClock.now()));
        // As `creditd serve` has it: the only writer's shortcuts on SQLite.
        let mut services = Services::with_clock(db.clone(), clock.clone());
        if db.has_one_writer() {
            services = services.as_only_writer(config.summary_view_customers);
        }
        let services = services
            .with_rate_limit(config.rate_limit_per_key)
            .with_key_cache(std::time::Duration::from_secs(config.api_key_cache_seconds))
            .with_event_retention(std::time::Duration::from_secs(
                config.event_retention_days * 24 * 60 * 60,
            ));
        let account_id = services.create_account().await.expect("account");
        let key = services
            .create_api_key(&account_id, false)
            .await
            .expect("key")
            .reveal()
            .to_string();
        let (http_base, grpc_addr, shutdown, handle) = serve(&config, services.clone()).await;
        TestApp {
            backend,
            http_base,
            grpc_addr,
            key,
            account_id,
            services,
            clock,
            http: reqwest::Client::new(),
            database,
            shutdown: Some(shutdown),
            server: Some(handle),
        }
    }

    /// A second server on this app's database, as another replica would be: its own pool,
    /// listeners and in-process idempotency registry; the same account, key and clock. The
    /// database stays the first app's (dropped with it).
    pub async fn spawn_replica(&self) -> TestApp {
        let config = ServeConfig::ephemeral(self.database.url.clone());
        let db = Db::connect(&config.database.options())
            .await
            .expect("connect");
        let services = Services::with_clock(db, self.clock.clone())
            .with_key_cache(std::time::Duration::from_secs(config.api_key_cache_seconds));
        let (http_base, grpc_addr, shutdown, handle) = serve(&config, services.clone()).await;
        TestApp {
            backend: self.backend,
            http_base,
            grpc_addr,
            key: self.key.clone(),
            account_id: self.account_id.clone(),
            services,
            clock: self.clock.clone(),
            http: reqwest::Client::new(),
            database: TestDatabase {
                url: self.database.url.clone(),
                _dir: None,
                postgres: None,
            },
            shutdown: Some(shutdown),
            server: Some(handle),
        }
    }

    /// The server's current time (Unix seconds).
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Moves the server's clock forward.
    pub fn advance(&self, seconds: i64) {
        self.clock.advance(seconds);
    }

    /// A new key: for this account or a new one, in test or live mode.
    pub async fn new_key(&self, livemode: bool, same_account: bool) -> String {
        let account = if same_account {
            self.account_id.clone()
        } else {
            self.services.create_account().await.expect("account")
        };
        self.services
            .create_api_key(&account, livemode)
            .await
            .expect("key")
            .reveal()
            .to_string()
    }

    /// A service-level context for this app's key (to reach the service layer directly).
    pub async fn context(&self) -> RequestContext {
        let caller = self
            .services
            .authenticate(Some(&self.key))
            .await
            .expect("authenticate");
        RequestContext::new(caller.tenant)
    }

    /// Asserts the ledger audit of this app's account and mode finds nothing.
    pub async fn assert_audit_clean(&self) {
        let report = self
            .services
            .audit(&self.context().await)
            .await
            .expect("audit");
        assert!(report.is_clean(), "{report}");
    }

    /// Sends a REST request and checks the response against Stripe's OpenAPI schema.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        key: Option<&str>,
        idempotency_key: Option<&str>,
        body: &str,
    ) -> Reply {
        let mut request = self.http.request(
            method.clone(),
            format!("{}{}", self.http_base, path_and_query),
        );
        if let Some(key) = key {
            request = request.basic_auth(key, Some(""));
        }
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        if method == reqwest::Method::POST {
            request = request
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.to_string());
        }
        let response = request.send().await.expect("send request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"));
        let path = path_and_query.split('?').next().unwrap_or(path_and_query);
        check_schema(method.as_str(), path, status, &body);
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.request(reqwest::Method::POST, path, Some(&self.key), None, body)
            .await
    }

    pub async fn post_idempotent(&self, path: &str, idempotency_key: &str, body: &str) -> Reply {
        self.request(
            reqwest::Method::POST,
            path,
            Some(&self.key),
            Some(idempotency_key),
            body,
        )
        .await
    }

    pub async fn get(&self, path_and_query: &str) -> Reply {
        self.request(
            reqwest::Method::GET,
            path_and_query,
            Some(&self.key),
            None,
            "",
        )
        .await
    }

    pub async fn get_as(&self, key: Option<&str>, path_and_query: &str) -> Reply {
        self.request(reqwest::Method::GET, path_and_query, key, None, "")
            .await
    }

    /// Creates a customer over REST and returns its ID.
    pub async fn create_customer(&self, body: &str) -> String {
        let customer = self.post("/v1/customers", body).await.ok();
        customer["id"].as_str().expect("customer id").to_string()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect gRPC")
    }

    /// A gRPC request carrying this app's key.
    pub fn grpc<T>(&self, message: T) -> tonic::Request<T> {
        grpc_request(message, Some(&self.key), None)
    }

    pub fn grpc_idempotent<T>(&self, message: T, idempotency_key: &str) -> tonic::Request<T> {
        grpc_request(message, Some(&self.key), Some(idempotency_key))
    }

    pub async fn customers(
        &self,
    ) -> proto::customer_service_client::CustomerServiceClient<Channel> {
        proto::customer_service_client::CustomerServiceClient::new(self.channel().await)
    }

    pub async fn balance_transactions(
        &self,
    ) -> proto::customer_balance_transaction_service_client::CustomerBalanceTransactionServiceClient<Channel>{
        proto::customer_balance_transaction_service_client::CustomerBalanceTransactionServiceClient::new(
            self.channel().await,
        )
    }
}

/// Binds and runs a server for `services`; returns its HTTP base URL, gRPC address, and how to
/// stop it.
async fn serve(
    config: &ServeConfig,
    services: Services,
) -> (
    String,
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let server = Server::bind(config, services).await.expect("bind");
    let http_base = format!("http://{}", server.http_addr());
    let grpc_addr = server.grpc_addr();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        server
            .run_until(async move {
                let _ = stopped.await;
            })
            .await
            .expect("server run");
    });
    (http_base, grpc_addr, shutdown, handle)
}

pub fn grpc_request<T>(
    message: T,
    key: Option<&str>,
    idempotency_key: Option<&str>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("ascii key"),
        );
    }
    if let Some(idempotency_key) = idempotency_key {
        request.metadata_mut().insert(
            "idempotency-key",
            idempotency_key.parse().expect("ascii key"),
        );
    }
    request
}

/// Checks a REST response against the operation's schema; for operations the contract subset
/// leaves out (customer update), against the component named by the body's `object`.
#[track_caller]
pub fn check_schema(method: &str, path: &str, status: u16, body: &Value) {
    if let Err(report) = schema_violation(method, path, status, body) {
        panic!("{report}");
    }
}

/// [`check_schema`] without the panic: the report of what is wrong, if anything.
pub fn schema_violation(method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
    let spec = OpenApi::get();
    let Some(template) = spec.match_path(path) else {
        // Unknown routes must still answer with Stripe's error envelope.
        return spec.validate_component("error", body);
    };
    // The spec's list schema for credit balance transactions pins `url` to
    // `^/v1/billing/credit_grants` (a quirk of Stripe's spec); creditd returns the real
    // collection path so SDK auto-pagination works. Check that, then the rest of the shape.
    let quirk;
    let body = if method == "GET"
        && template == "/v1/billing/credit_balance_transactions"
        && status == 200
    {
        if body["url"] != "/v1/billing/credit_balance_transactions" {
            return Err(format!(
                "list url: expected \"/v1/billing/credit_balance_transactions\", got {}",
                body["url"]
            ));
        }
        let mut copy = body.clone();
        copy["url"] = Value::from("/v1/billing/credit_grants");
        quirk = copy;
        &quirk
    } else {
        body
    };
    let Err(report) = spec.validate_response(method, template, status, body) else {
        return Ok(());
    };
    let operation_known = spec
        .operations()
        .iter()
        .any(|(m, p)| m == method && *p == template);
    if operation_known {
        return Err(report);
    }
    let component = if (200..300).contains(&status) {
        body["object"].as_str().unwrap_or("error").to_string()
    } else {
        "error".to_string()
    };
    spec.validate_component(&component, body)
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Percent-encodes a form value.
pub fn enc(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
