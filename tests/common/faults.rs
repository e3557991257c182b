//! Helpers for the fault tests (`fault_db_loss`, `fault_crash`, `fault_replicas`): a client that
//! retries a write with its idempotency key exactly as the README's failure contract tells
//! clients to, and fails on anything the contract calls final; plus PostgreSQL plumbing (the
//! name of a test database, terminating its backends).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::Value;

/// What retrying a request met on its way to success.
#[derive(Debug, Default, Clone, Copy)]
pub struct Retries {
    /// 503 / UNAVAILABLE answers.
    pub unavailable: u64,
    /// 409 `idempotency_key_in_use` / ABORTED answers.
    pub in_use: u64,
    /// 429 / RESOURCE_EXHAUSTED answers.
    pub rate_limited: u64,
    /// Requests that never got an answer (server down; only where that is expected).
    pub transport: u64,
}

impl Retries {
    pub fn add(&mut self, other: Retries) {
        self.unavailable += other.unavailable;
        self.in_use += other.in_use;
        self.rate_limited += other.rate_limited;
        self.transport += other.transport;
    }

    pub fn total(&self) -> u64 {
        self.unavailable + self.in_use + self.rate_limited + self.transport
    }
}

/// How long one logical write may keep being retried, and how many times.
pub const RETRY_BUDGET: Duration = Duration::from_secs(30);
pub const MAX_ATTEMPTS: u32 = 200;

fn pause(attempt: u32) -> Duration {
    Duration::from_millis((10u64 << attempt.min(5)).min(250))
}

/// One REST write (`POST`), retried with the same idempotency key until it succeeds. Only the
/// retryable answers of the failure contract are retried (503 with `Retry-After`, 429, 409
/// `idempotency_key_in_use`); transport errors too when `transport_retryable` (a server that
/// is being killed and restarted). Anything else is returned as an error describing it.
pub async fn rest_write(
    http: &reqwest::Client,
    base: impl Fn() -> String,
    key: &str,
    path: &str,
    idempotency_key: &str,
    body: &str,
    transport_retryable: bool,
) -> Result<(Value, Retries), String> {
    let mut retries = Retries::default();
    let started = Instant::now();
    for attempt in 0..MAX_ATTEMPTS {
        if started.elapsed() > RETRY_BUDGET {
            break;
        }
        let sent = http
            .post(format!("{}{path}", base()))
            .basic_auth(key, Some(""))
            .header("Idempotency-Key", idempotency_key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) if transport_retryable => {
                let _ = error;
                retries.transport += 1;
                tokio::time::sleep(pause(attempt)).await;
                continue;
            }
            Err(error) => return Err(format!("POST {path}: no answer: {error}")),
        };
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) if transport_retryable => {
                let _ = error;
                retries.transport += 1;
                continue;
            }
            Err(error) => return Err(format!("POST {path}: body lost: {error}")),
        };
        let body: Value = serde_json::from_str(&text)
            .map_err(|_| format!("POST {path}: non-JSON body ({status}): {text}"))?;
        super::check_schema("POST", path, status, &body);
        match status {
            200..=299 => return Ok((body, retries)),
            503 => {
                if retry_after.is_none() || body["error"]["type"] != "api_error" {
                    return Err(format!(
                        "POST {path}: 503 without Retry-After or api_error: {body}"
                    ));
                }
                retries.unavailable += 1;
            }
            429 => retries.rate_limited += 1,
            409 if body["error"]["code"] == "idempotency_key_in_use" => retries.in_use += 1,
            _ => {
                return Err(format!(
                    "POST {path} (key {idempotency_key}): {status} {body}"
                ));
            }
        }
        tokio::time::sleep(pause(attempt)).await;
    }
    Err(format!(
        "POST {path} (key {idempotency_key}): still failing after {retries:?}"
    ))
}

/// One gRPC call, retried (the call builds a fresh request each time, with the same
/// idempotency key) on UNAVAILABLE, ABORTED (key in use) and RESOURCE_EXHAUSTED. UNAVAILABLE
/// also covers a server that cannot be reached, which is only expected when
/// `transport_retryable`; otherwise an UNAVAILABLE must carry creditd's `RetryInfo`.
pub async fn grpc_write<T, F, Fut>(
    what: &str,
    transport_retryable: bool,
    mut call: F,
) -> Result<(T, Retries), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    use tonic_types::StatusExt;
    let mut retries = Retries::default();
    let started = Instant::now();
    for attempt in 0..MAX_ATTEMPTS {
        if started.elapsed() > RETRY_BUDGET {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(20), call()).await {
            Ok(Ok(response)) => return Ok((response.into_inner(), retries)),
            Ok(Err(status)) => match status.code() {
                tonic::Code::Unavailable => {
                    let from_creditd = status.get_details_retry_info().is_some();
                    if !from_creditd && !transport_retryable {
                        return Err(format!("{what}: UNAVAILABLE without RetryInfo: {status:?}"));
                    }
                    if from_creditd {
                        retries.unavailable += 1;
                    } else {
                        retries.transport += 1;
                    }
                }
                tonic::Code::Aborted => retries.in_use += 1,
                tonic::Code::ResourceExhausted => retries.rate_limited += 1,
                tonic::Code::Unknown | tonic::Code::Cancelled if transport_retryable => {
                    retries.transport += 1;
                }
                _ => return Err(format!("{what}: {status:?}")),
            },
            Err(_) if transport_retryable => retries.transport += 1,
            Err(_) => return Err(format!("{what}: no answer within 20 s")),
        }
        tokio::time::sleep(pause(attempt)).await;
    }
    Err(format!("{what}: still failing after {retries:?}"))
}

/// The database name in a PostgreSQL URL.
pub fn database_name(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or_default().to_string()
}

/// `url` with its `host:port` replaced by `address`.
pub fn with_address(url: &str, address: std::net::SocketAddr) -> String {
    let scheme_end = url.find("://").map_or(0, |index| index + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host_start = authority.rfind('@').map_or(0, |index| index + 1);
    format!(
        "{}{}{address}{}",
        &url[..scheme_end],
        &authority[..host_start],
        &rest[authority_end..]
    )
}

/// The `host:port` of a PostgreSQL URL (default port 5432).
pub fn address_of(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |index| index + 3);
    let rest = &url[scheme_end..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host = &authority[authority.rfind('@').map_or(0, |index| index + 1)..];
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    }
}

/// A connection to the PostgreSQL server's admin database, for terminating the backends of
/// one test database (never any other).
pub struct Terminator {
    admin: creditd::store::Db,
    database: String,
}

impl Terminator {
    pub async fn new(database_url: &str) -> Terminator {
        let admin_url = super::postgres_url().expect("PostgreSQL configured");
        let admin = creditd::store::Db::connect(&creditd::store::DbOptions {
            max_connections: 1,
            ..creditd::store::DbOptions::new(admin_url)
        })
        .await
        .expect("admin connection");
        Terminator {
            admin,
            database: database_name(database_url),
        }
    }

    /// Terminates every backend connected to the test database; returns how many.
    pub async fn terminate_all(&self) -> u64 {
        self.terminate_where("true").await
    }

    /// Terminates the test database's backends matching `condition` (SQL over
    /// `pg_stat_activity`); returns how many.
    pub async fn terminate_where(&self, condition: &str) -> u64 {
        use sea_orm::ConnectionTrait;
        let sql = format!(
            "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid() AND ({condition})",
            self.database
        );
        let rows = self
            .admin
            .reader()
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                sql,
            ))
            .await
            .expect("pg_terminate_backend");
        rows.iter()
            .filter(|row| row.try_get::<bool>("", "done").unwrap_or(false))
            .count() as u64
    }

    /// How many of the test database's backends match `condition`.
    pub async fn count_where(&self, condition: &str) -> u64 {
        use sea_orm::ConnectionTrait;
        let sql = format!(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid() AND ({condition})",
            self.database
        );
        let row = self
            .admin
            .reader()
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                sql,
            ))
            .await
            .expect("pg_stat_activity")
            .expect("a row");
        row.try_get::<i64>("", "n").unwrap_or(0) as u64
    }

    pub async fn close(self) {
        self.admin.close().await;
    }
}

/// Each balance transaction's `ending_balance` is the running sum of the amounts before it
/// (oldest first): no step skipped or repeated.
#[track_caller]
pub fn assert_gapless_chain(chain: &[serde_json::Value]) {
    let mut balance = 0;
    for transaction in chain {
        balance += transaction["amount"].as_i64().expect("amount");
        assert_eq!(
            transaction["ending_balance"].as_i64(),
            Some(balance),
            "chain breaks at {transaction}"
        );
    }
}
