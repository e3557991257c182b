//! Balance at any moment, and why each credit was spent.
//!
//! - `credit_balance_transactions.grant_remaining_after`: the grant's remainder right after the
//!   entry, i.e. the running sum of the grant's entries in ledger order (`created`, then `id`;
//!   the service writes it with every entry). Existing rows are backfilled here by that prefix
//!   sum. Nullable only because SQLite cannot add a NOT NULL column without a default; every
//!   row has it, and `creditd audit` checks each one against the prefix sum.
//! - The index `(account_id, livemode, credit_grant_id, created, id)` makes "the last entry of
//!   grant G recorded at or before T" one index lookup, so a summary `as_of` T costs one lookup
//!   per grant however long the history is.
//! - `credit_applications.explanation`: JSON of each draw's rank and deciding key and of the
//!   grants skipped and why; null for lines applied before this migration.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The signed amount of an entry (credits add, debits subtract), as the service's
/// `EntryType::signed`.
const BACKFILL: &str = "UPDATE credit_balance_transactions \
    SET grant_remaining_after = running.remaining_after \
    FROM ( \
      SELECT id, CAST(SUM(CASE WHEN \"type\" IN ('credits_granted', \
          'credits_application_invoice_voided') THEN amount ELSE -amount END) \
        OVER (PARTITION BY credit_grant_id ORDER BY created, id \
          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS remaining_after \
      FROM credit_balance_transactions \
    ) running \
    WHERE credit_balance_transactions.id = running.id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(
            manager,
            &[
                "ALTER TABLE credit_balance_transactions ADD COLUMN grant_remaining_after BIGINT NULL",
                BACKFILL,
                "CREATE INDEX credit_balance_transactions_as_of ON credit_balance_transactions \
                 (account_id, livemode, credit_grant_id, created, id)",
                "ALTER TABLE credit_applications ADD COLUMN explanation TEXT NULL",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(
            manager,
            &[
                "ALTER TABLE credit_applications DROP COLUMN explanation",
                "DROP INDEX credit_balance_transactions_as_of",
                "ALTER TABLE credit_balance_transactions DROP COLUMN grant_remaining_after",
            ],
        )
        .await
    }
}
