//! Webhook endpoints and their deliveries. A write that emits events also inserts, in the same
//! transaction, one `pending` delivery per (event, matching enabled endpoint); the delivery
//! worker claims due deliveries with a lease (`lease_until`, Unix milliseconds), so with several
//! replicas one attempt at a time runs per delivery and a crashed worker's lease simply expires.
//! `next_attempt_at`, `lease_until` and `delivered_at` are Unix milliseconds; `created` is the
//! event's time in seconds. Endpoints are deleted for real (their pending deliveries are marked
//! `failed` first).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const ENDPOINTS: &str = r#"
CREATE TABLE webhook_endpoints (
    id TEXT NOT NULL PRIMARY KEY,
    account_id TEXT NOT NULL,
    livemode BOOLEAN NOT NULL,
    url TEXT NOT NULL,
    enabled_events TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
    description TEXT NULL,
    metadata TEXT NOT NULL,
    api_version TEXT NULL,
    secret TEXT NOT NULL,
    created BIGINT NOT NULL
)
"#;

const SQLITE_DELIVERIES: &str = r#"
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    livemode BOOLEAN NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT NULL,
    last_status BIGINT NULL,
    last_error TEXT NULL,
    created BIGINT NOT NULL,
    delivered_at BIGINT NULL,
    UNIQUE (event_id, endpoint_id)
)
"#;

const POSTGRES_DELIVERIES: &str = r#"
CREATE TABLE webhook_deliveries (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    livemode BOOLEAN NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT NULL,
    last_status BIGINT NULL,
    last_error TEXT NULL,
    created BIGINT NOT NULL,
    delivered_at BIGINT NULL,
    UNIQUE (event_id, endpoint_id)
)
"#;

const INDEXES: &[&str] = &[
    // Fan-out: one indexed read of a tenant's enabled endpoints per write that emits events.
    "CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (account_id, livemode, status)",
    // Listing: newest first within an account and mode.
    "CREATE INDEX webhook_endpoints_by_id ON webhook_endpoints (account_id, livemode, id)",
    // The worker's claim: due pending deliveries in due order.
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at)",
    // Deleting an endpoint stops its pending deliveries.
    "CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, state)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let deliveries = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_DELIVERIES,
            _ => SQLITE_DELIVERIES,
        };
        crate::execute_all(manager, &[ENDPOINTS, deliveries]).await?;
        crate::execute_all(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(
            manager,
            &[
                "DROP TABLE webhook_deliveries",
                "DROP TABLE webhook_endpoints",
            ],
        )
        .await
    }
}
