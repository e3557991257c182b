//! Credit holds: credits reserved for a customer's metered work before it is invoiced. A hold
//! reserves from specific grants (`reservations`, a JSON array of `{credit_grant, amount}` still
//! held, in burn-down order) until it is captured against an invoice line, released, or expires.
//! The summary's `available_balance` subtracts what live holds reserve; the ledger is untouched
//! until a capture writes `credits_applied` entries. Looked up per customer and status (every
//! write reads the customer's live holds under its lock) and by status and expiry (the sweeper).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const HOLDS: &str = r#"
CREATE TABLE credit_holds (
    id TEXT NOT NULL PRIMARY KEY,
    account_id TEXT NOT NULL,
    livemode BOOLEAN NOT NULL,
    customer_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    price TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'captured', 'released', 'expired')),
    reservations TEXT NOT NULL,
    captured_amount BIGINT NOT NULL DEFAULT 0 CHECK (captured_amount >= 0),
    lapsed_amount BIGINT NOT NULL DEFAULT 0 CHECK (lapsed_amount >= 0),
    invoice TEXT NULL,
    invoice_line_item TEXT NULL,
    created BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at BIGINT NULL,
    test_clock TEXT NULL,
    CHECK (captured_amount + lapsed_amount <= amount),
    CHECK ((status = 'active') = (ended_at IS NULL))
)
"#;

const INDEXES: &[&str] = &[
    // A customer's live holds, read under its lock by every credit write.
    "CREATE INDEX credit_holds_by_customer ON credit_holds (account_id, livemode, customer_id, status)",
    // The sweeper: active holds past their expiry.
    "CREATE INDEX credit_holds_due ON credit_holds (status, expires_at)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, &[HOLDS]).await?;
        crate::execute_all(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, &["DROP TABLE credit_holds"]).await
    }
}
