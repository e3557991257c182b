//! Billing alerts (`credit_balance_threshold`): one row per alert, with the crossing state
//! (`below`: whether the customer's balance was at or below the threshold when last evaluated).
//! The scope columns have the form of a grant's (`scope_price_type` = `metered`, or
//! `scope_prices` = a JSON array of price IDs), both null when the alert counts every grant.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const ALERTS: &str = r#"
CREATE TABLE billing_alerts (
    id TEXT NOT NULL PRIMARY KEY,
    account_id TEXT NOT NULL,
    livemode BOOLEAN NOT NULL,
    title TEXT NOT NULL,
    alert_type TEXT NOT NULL CHECK (alert_type IN ('credit_balance_threshold')),
    status TEXT NOT NULL CHECK (status IN ('active', 'inactive', 'archived')),
    customer_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    lte_value BIGINT NOT NULL CHECK (lte_value >= 0),
    scope_price_type TEXT NULL CHECK (scope_price_type IS NULL OR scope_price_type = 'metered'),
    scope_prices TEXT NULL,
    below BOOLEAN NOT NULL,
    created BIGINT NOT NULL,
    CHECK (scope_price_type IS NULL OR scope_prices IS NULL)
)
"#;

const INDEXES: &[&str] = &[
    // The evaluation after a balance change: one customer's active alerts.
    "CREATE INDEX billing_alerts_by_customer ON billing_alerts (account_id, livemode, customer_id, status)",
    // Listing: newest first within an account and mode.
    "CREATE INDEX billing_alerts_by_id ON billing_alerts (account_id, livemode, id)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, &[ALERTS]).await?;
        crate::execute_all(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, &["DROP TABLE billing_alerts"]).await
    }
}
