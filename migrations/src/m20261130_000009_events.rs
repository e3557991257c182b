//! Events (the transactional outbox). Every change inserts its events in its own transaction.
//! `position` is given at insert (an autoincrement, so a customer's later change always gets a
//! higher one: it could only take the customer's lock after the earlier change committed);
//! `sequence`, the stream position, is given after commit by one sequencer at a time, in
//! `position` order, to committed rows only, so readers that follow `sequence` never skip a
//! row that commits late. `data` is the rendered JSON, kept as text so it never changes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE_TABLE: &str = r#"
CREATE TABLE events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    livemode BOOLEAN NOT NULL,
    type TEXT NOT NULL,
    created BIGINT NOT NULL,
    customer_id TEXT NULL,
    request_id TEXT NULL,
    idempotency_key TEXT NULL,
    api_version TEXT NOT NULL,
    pending_webhooks BIGINT NOT NULL DEFAULT 0 CHECK (pending_webhooks >= 0),
    data TEXT NOT NULL,
    sequence BIGINT NULL UNIQUE
)
"#;

const POSTGRES_TABLE: &str = r#"
CREATE TABLE events (
    position BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    livemode BOOLEAN NOT NULL,
    type TEXT NOT NULL,
    created BIGINT NOT NULL,
    customer_id TEXT NULL,
    request_id TEXT NULL,
    idempotency_key TEXT NULL,
    api_version TEXT NOT NULL,
    pending_webhooks BIGINT NOT NULL DEFAULT 0 CHECK (pending_webhooks >= 0),
    data TEXT NOT NULL,
    sequence BIGINT NULL UNIQUE
)
"#;

const INDEXES: &[&str] = &[
    // The Events API: newest first (by time-ordered ID) within an account and mode.
    "CREATE INDEX events_by_id ON events (account_id, livemode, id)",
    // Streams: an account's events in stream order.
    "CREATE INDEX events_by_sequence ON events (account_id, livemode, sequence)",
    // The sequencer's work list stays as small as the rows it has not yet numbered.
    "CREATE INDEX events_unsequenced ON events (position) WHERE sequence IS NULL",
    // Retention pruning.
    "CREATE INDEX events_by_age ON events (created)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let table = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_TABLE,
            _ => SQLITE_TABLE,
        };
        crate::execute_all(manager, &[table]).await?;
        crate::execute_all(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, &["DROP TABLE events"]).await
    }
}
