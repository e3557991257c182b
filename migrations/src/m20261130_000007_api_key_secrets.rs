//! API keys stop keeping any of their secret in clear (defect 6). Until now each row held
//! `sk_test_` plus the first 12 secret characters (`lookup_prefix`) beside an unsalted SHA-256 of
//! the whole key, so a short key could be brute-forced from a dump. Rows are now found by their
//! hash (unique), `lookup_prefix` holds the key's own ID (non-secret; the column stays because
//! SQLite cannot drop a UNIQUE column), `key_hint` keeps the last four characters for display,
//! and `hash_scheme` says how `key_hash` was made: `sha256` (legacy, or no pepper configured) or
//! `hmac-sha256` (keyed with the server's pepper). Rehashing needs the raw key, so the service
//! upgrades a `sha256` row to `hmac-sha256` at its next successful verification; the plaintext
//! prefixes can go now, since nothing needs them any more.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    LookupPrefix,
    KeyHash,
    KeyHint,
    HashScheme,
}

const HASH_INDEX: &str = "api_keys_by_key_hash";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(text_null(ApiKeys::KeyHint))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(text(ApiKeys::HashScheme).default("sha256"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(HASH_INDEX)
                    .table(ApiKeys::Table)
                    .col(ApiKeys::KeyHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table(ApiKeys::Table)
                    .value(ApiKeys::LookupPrefix, Expr::col(ApiKeys::Id))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The cleared prefixes cannot come back; keys are found by hash either way.
        manager
            .drop_index(
                Index::drop()
                    .name(HASH_INDEX)
                    .table(ApiKeys::Table)
                    .to_owned(),
            )
            .await?;
        for column in [ApiKeys::HashScheme, ApiKeys::KeyHint] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeys::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
