//! All configuration, in one place: command-line flags, each with a `CREDITD_*` environment
//! variable, validated once at startup.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::store::DbOptions;

#[derive(Debug, Parser)]
#[command(
    name = "creditd",
    version,
    about = "Customers' credit balances, Stripe-compatible, over gRPC and a Stripe REST shim"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at startup; its size does not matter"
)]
pub enum Command {
    /// Run the gRPC and HTTP servers (applies migrations first).
    Serve(ServeConfig),
    /// Apply database migrations and exit.
    Migrate(DatabaseConfig),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Follow the account's events over gRPC and POST each one, signed like a Stripe webhook,
    /// to a local URL (like `stripe listen --forward-to`).
    Listen(ListenConfig),
    /// Recompute every balance and remainder from the ledger and report differences (exit status 1 when any).
    Audit {
        #[command(flatten)]
        database: DatabaseConfig,
        /// Print the report as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ListenConfig {
    /// Where to POST each event (Stripe's webhook JSON), e.g. http://localhost:4242/webhook.
    #[arg(long)]
    pub forward_to: String,
    /// Only these event types, comma-separated (exact names or groups such as `customer.*`);
    /// all when omitted.
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<String>,
    /// The API key to follow the events of.
    #[arg(long, env = "CREDITD_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// The creditd gRPC endpoint.
    #[arg(
        long,
        env = "CREDITD_GRPC_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub grpc_url: String,
    /// The webhook signing secret to sign with (`whsec_…`); a random one when omitted.
    #[arg(long, hide_env_values = true)]
    pub secret: Option<String>,
    /// Start after this event instead of at the current head.
    #[arg(long)]
    pub after_event: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it (the only time it is shown).
    Create {
        #[command(flatten)]
        database: DatabaseConfig,
        /// Create a live-mode key (sk_live_…) instead of a test-mode one.
        #[arg(long)]
        live: bool,
        /// The account the key belongs to; a new account when omitted.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        hashing: ApiKeyHashingConfig,
    },
    /// List keys (IDs, accounts, modes; never the secrets).
    List {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Revoke a key by its ID (key_…).
    Revoke {
        #[command(flatten)]
        database: DatabaseConfig,
        id: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// Database URL: `sqlite:<file>` (the embedded default) or `postgres://user@host/db`.
    #[arg(
        long,
        env = "CREDITD_DATABASE_URL",
        default_value = "sqlite:creditd.sqlite"
    )]
    pub database_url: String,
    /// Maximum pooled connections (PostgreSQL), or read connections (SQLite).
    #[arg(long, env = "CREDITD_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How long a request waits for a database connection before failing, in seconds.
    #[arg(long, env = "CREDITD_DB_ACQUIRE_TIMEOUT_SECONDS", default_value_t = 10)]
    pub db_acquire_timeout_seconds: u64,
}

impl DatabaseConfig {
    pub fn options(&self) -> DbOptions {
        DbOptions {
            url: self.database_url.clone(),
            max_connections: self.db_max_connections.max(1),
            acquire_timeout: Duration::from_secs(self.db_acquire_timeout_seconds.max(1)),
        }
    }
}

/// The server-side secret API keys are hashed with. Every process that creates or verifies
/// keys on one database (each replica, `creditd keys create`) must use the same pepper.
#[derive(Debug, Clone, Default, Args)]
pub struct ApiKeyHashingConfig {
    /// Secret (at least 32 bytes) API keys are hashed with (HMAC-SHA256), so a database dump
    /// alone cannot check a guessed key. Without it keys are stored as plain SHA-256.
    #[arg(
        long,
        env = "CREDITD_API_KEY_PEPPER",
        hide_env_values = true,
        conflicts_with = "api_key_pepper_file"
    )]
    pub api_key_pepper: Option<String>,
    /// File holding the pepper (a trailing newline is ignored), instead of --api-key-pepper.
    #[arg(long, env = "CREDITD_API_KEY_PEPPER_FILE")]
    pub api_key_pepper_file: Option<std::path::PathBuf>,
}

/// A pepper shorter than this is refused: it must not be guessable either.
pub const MIN_PEPPER_BYTES: usize = 32;

impl ApiKeyHashingConfig {
    /// The configured pepper, read and checked; `None` when there is none.
    pub fn pepper(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let pepper = match (&self.api_key_pepper, &self.api_key_pepper_file) {
            (Some(pepper), _) => pepper.as_bytes().to_vec(),
            (None, Some(path)) => {
                let mut bytes = std::fs::read(path).map_err(|err| {
                    anyhow::anyhow!(
                        "cannot read --api-key-pepper-file {}: {err}",
                        path.display()
                    )
                })?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                bytes
            }
            (None, None) => return Ok(None),
        };
        if pepper.len() < MIN_PEPPER_BYTES {
            anyhow::bail!(
                "the API key pepper (--api-key-pepper / CREDITD_API_KEY_PEPPER or its file) must be at least {MIN_PEPPER_BYTES} bytes, e.g. `head -c 32 /dev/urandom | base64`"
            );
        }
        Ok(Some(pepper))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, pretty otherwise.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Address of the gRPC listener.
    #[arg(long, env = "CREDITD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP listener (the Stripe REST shim).
    #[arg(long, env = "CREDITD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// API keys to make sure exist, comma-separated: `sk_…` or `acct_…:sk_…`.
    #[arg(
        long,
        env = "CREDITD_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    #[command(flatten)]
    pub api_key_hashing: ApiKeyHashingConfig,
    /// Do not create and print a test key when the database has no keys.
    #[arg(long, env = "CREDITD_NO_BOOTSTRAP_KEY")]
    pub no_bootstrap_key: bool,
    /// How often the expiry sweeper writes `credits_expired` for lapsed grants, in seconds
    /// (0 turns it off; balances are right either way).
    #[arg(
        long,
        env = "CREDITD_EXPIRY_SWEEP_INTERVAL_SECONDS",
        default_value_t = 30
    )]
    pub expiry_sweep_interval_seconds: u64,
    /// How often, in milliseconds, to look for events committed by other replicas (this
    /// process's own are seen at once). Bounds the stream's latency across replicas.
    #[arg(long, env = "CREDITD_EVENT_POLL_INTERVAL_MS", default_value_t = 50)]
    pub event_poll_interval_ms: u64,
    /// How many days events are kept (the Events API and stream resume window).
    #[arg(long, env = "CREDITD_EVENT_RETENTION_DAYS", default_value_t = 30)]
    pub event_retention_days: u64,
    /// Event streams (`WatchEvents`) served at once by this process; more are refused with
    /// RESOURCE_EXHAUSTED. Each holds a database connection only for its short reads.
    #[arg(long, env = "CREDITD_MAX_EVENT_STREAMS", default_value_t = 1024)]
    pub max_event_streams: usize,
    /// The longest a credit hold may live, in seconds (its TTL or expiry time must fall within
    /// it; also the lifetime of a hold given neither). Default 7 days.
    #[arg(long, env = "CREDITD_MAX_HOLD_SECONDS", default_value_t = 7 * 24 * 3600)]
    pub max_hold_seconds: i64,
    /// On SQLite (served by this process alone: `serve` locks the database), answer credit
    /// balance summaries from an in-memory view of up to this many customers' grants and holds,
    /// invalidated by every write before it is acknowledged. `0` turns it off; PostgreSQL never
    /// has one (another replica may write).
    #[arg(long, env = "CREDITD_SUMMARY_VIEW_CUSTOMERS", default_value_t = 4_000)]
    pub summary_view_customers: usize,
    /// Longest a request may run before it is answered with a timeout, in seconds.
    #[arg(long, env = "CREDITD_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub request_timeout_seconds: u64,
    /// Largest accepted request body (REST) or message (gRPC), in bytes.
    #[arg(long, env = "CREDITD_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Requests handled at once per listener; more are refused at once (429 /
    /// RESOURCE_EXHAUSTED) instead of queueing.
    #[arg(long, env = "CREDITD_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,
    /// Requests per second allowed for one API key (0 = unlimited); bursts up to twice this.
    #[arg(long, env = "CREDITD_RATE_LIMIT_PER_KEY", default_value_t = 0)]
    pub rate_limit_per_key: u32,
    /// How long a verified API key is trusted before its row is read again, in seconds (0 =
    /// every request). A key revoked by another process stops working within this time.
    #[arg(long, env = "CREDITD_API_KEY_CACHE_SECONDS", default_value_t = 5)]
    pub api_key_cache_seconds: u64,
    /// PEM certificate chain: serve TLS on both listeners (needs --tls-key).
    #[arg(long, env = "CREDITD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CREDITD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate signed by one (mutual TLS).
    #[arg(long, env = "CREDITD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// How long shutdown waits for in-flight requests, in seconds.
    #[arg(long, env = "CREDITD_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Log format.
    #[arg(long, env = "CREDITD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub webhooks: WebhookConfig,
}

/// Webhook delivery settings (see the README's "Webhooks" section).
#[derive(Debug, Clone, Args)]
pub struct WebhookConfig {
    /// How long one delivery attempt may take (connect and answer), in seconds.
    #[arg(long, env = "CREDITD_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub webhook_timeout_seconds: f64,
    /// How long after its event a failing delivery is retried before it is given up, in seconds
    /// (default 3 days, as Stripe does in live mode).
    #[arg(long, env = "CREDITD_WEBHOOK_MAX_AGE_SECONDS", default_value_t = 3.0 * 86400.0)]
    pub webhook_max_age_seconds: f64,
    /// The delay before the first retry, in seconds; each further retry waits up to twice as
    /// long (with full jitter), up to --webhook-max-retry-delay-seconds.
    #[arg(
        long,
        env = "CREDITD_WEBHOOK_FIRST_RETRY_SECONDS",
        default_value_t = 30.0
    )]
    pub webhook_first_retry_seconds: f64,
    /// The longest wait between two attempts, in seconds (default 12 hours).
    #[arg(long, env = "CREDITD_WEBHOOK_MAX_RETRY_DELAY_SECONDS", default_value_t = 12.0 * 3600.0)]
    pub webhook_max_retry_delay_seconds: f64,
    /// Delivery attempts in flight at once in this process, over all endpoints.
    #[arg(long, env = "CREDITD_WEBHOOK_CONCURRENCY", default_value_t = 32)]
    pub webhook_concurrency: usize,
    /// Delivery attempts in flight at once to one endpoint, in this process.
    #[arg(
        long,
        env = "CREDITD_WEBHOOK_PER_ENDPOINT_CONCURRENCY",
        default_value_t = 4
    )]
    pub webhook_per_endpoint_concurrency: usize,
    /// Refuse endpoint URLs whose host is (or resolves to) a loopback, private, link-local or
    /// unspecified address, at create/update and again at every delivery: turn on when tenants
    /// are not trusted with the server's network.
    #[arg(
        long,
        env = "CREDITD_WEBHOOK_REFUSE_PRIVATE_ADDRESSES",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub webhook_refuse_private_addresses: bool,
    /// How often, in milliseconds, to look for due retries and other replicas' deliveries (this
    /// process's own new deliveries start at once).
    #[arg(long, env = "CREDITD_WEBHOOK_POLL_INTERVAL_MS", default_value_t = 500)]
    pub webhook_poll_interval_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            webhook_timeout_seconds: 10.0,
            webhook_max_age_seconds: 3.0 * 86400.0,
            webhook_first_retry_seconds: 30.0,
            webhook_max_retry_delay_seconds: 12.0 * 3600.0,
            webhook_concurrency: 32,
            webhook_per_endpoint_concurrency: 4,
            webhook_refuse_private_addresses: false,
            webhook_poll_interval_ms: 500,
        }
    }
}

/// Seconds as a duration; a negative, NaN or huge value falls back to `default`.
fn seconds(value: f64, default: Duration) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(default)
}

impl WebhookConfig {
    pub fn settings(&self) -> crate::service::webhook_delivery::DeliverySettings {
        let defaults = WebhookConfig::default();
        crate::service::webhook_delivery::DeliverySettings {
            timeout: seconds(
                self.webhook_timeout_seconds,
                Duration::from_secs_f64(defaults.webhook_timeout_seconds),
            )
            .max(Duration::from_millis(10)),
            max_age: seconds(
                self.webhook_max_age_seconds,
                Duration::from_secs_f64(defaults.webhook_max_age_seconds),
            ),
            first_retry: seconds(
                self.webhook_first_retry_seconds,
                Duration::from_secs_f64(defaults.webhook_first_retry_seconds),
            ),
            max_retry_delay: seconds(
                self.webhook_max_retry_delay_seconds,
                Duration::from_secs_f64(defaults.webhook_max_retry_delay_seconds),
            ),
            concurrency: self.webhook_concurrency.max(1),
            per_endpoint_concurrency: self.webhook_per_endpoint_concurrency.max(1),
            refuse_private_addresses: self.webhook_refuse_private_addresses,
            poll_interval: Duration::from_millis(self.webhook_poll_interval_ms.max(10)),
            finished_retention: Duration::from_secs(30 * 86400),
        }
    }
}

impl ServeConfig {
    /// A configuration for tests and tools: given database, ephemeral ports on loopback.
    pub fn ephemeral(database_url: impl Into<String>) -> ServeConfig {
        ServeConfig {
            database: DatabaseConfig {
                database_url: database_url.into(),
                db_max_connections: 16,
                db_acquire_timeout_seconds: 10,
            },
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_keys: Vec::new(),
            api_key_hashing: ApiKeyHashingConfig::default(),
            no_bootstrap_key: true,
            expiry_sweep_interval_seconds: 0,
            event_poll_interval_ms: 50,
            event_retention_days: 30,
            max_event_streams: 1024,
            max_hold_seconds: 7 * 24 * 3600,
            summary_view_customers: 4_000,
            request_timeout_seconds: 30,
            max_body_bytes: 1024 * 1024,
            max_concurrent_requests: 1024,
            rate_limit_per_key: 0,
            api_key_cache_seconds: 5,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            shutdown_grace_seconds: 5,
            log_format: LogFormat::Pretty,
            webhooks: WebhookConfig::default(),
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_settings_fall_back_on_impossible_values() {
        let config = WebhookConfig {
            webhook_timeout_seconds: -1.0,
            webhook_first_retry_seconds: f64::NAN,
            webhook_max_age_seconds: 0.5,
            webhook_concurrency: 0,
            ..WebhookConfig::default()
        };
        let settings = config.settings();
        assert_eq!(settings.timeout, Duration::from_secs(10));
        assert_eq!(settings.first_retry, Duration::from_secs(30));
        assert_eq!(settings.max_age, Duration::from_millis(500));
        assert_eq!(settings.concurrency, 1);
        assert!(!settings.refuse_private_addresses);
    }

    #[test]
    fn webhook_flags_parse_with_fractions() {
        let cli = Cli::try_parse_from([
            "creditd",
            "serve",
            "--webhook-first-retry-seconds",
            "0.05",
            "--webhook-refuse-private-addresses",
            "true",
        ])
        .unwrap();
        let Command::Serve(config) = cli.command else {
            panic!("not serve");
        };
        let settings = config.webhooks.settings();
        assert_eq!(settings.first_retry, Duration::from_millis(50));
        assert!(settings.refuse_private_addresses);
    }
}
