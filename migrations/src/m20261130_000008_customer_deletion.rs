//! Customers can be deleted (Stripe's `DELETE /v1/customers/{id}`). The ledger is never
//! rewritten, so a deleted customer keeps its row, grants and balance transactions; the row only
//! gains the time it was deleted. Lists leave such customers out, writes treat them as missing,
//! and retrieving one answers Stripe's `{id, object:"customer", deleted:true}` stub.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Customers {
    Table,
    DeletedAt,
}

/// PostgreSQL only: the locked read behind ApplyCredits (migration 6) now finds only live
/// customers, so a deleted customer takes no credit applications.
pub(crate) const LOCKED_READ: &str = r#"
CREATE OR REPLACE FUNCTION creditd_locked_customer_grants(
    p_account_id text,
    p_livemode boolean,
    p_customer_id text,
    p_invoice text,
    p_invoice_line_item text
)
RETURNS TABLE (out_clock_time bigint, out_line_applied boolean, out_grant credit_grants)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM customers
        WHERE id = p_customer_id AND account_id = p_account_id AND livemode = p_livemode
          AND deleted_at IS NULL
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT tc.frozen_time,
               EXISTS (SELECT 1 FROM credit_applications a
                       WHERE a.account_id = c.account_id AND a.livemode = c.livemode
                         AND a.invoice = p_invoice AND a.invoice_line_item = p_invoice_line_item),
               g
        FROM customers c
        LEFT JOIN test_clocks tc ON tc.id = c.test_clock
        LEFT JOIN credit_grants g ON g.account_id = c.account_id AND g.livemode = c.livemode
                                 AND g.customer_id = c.id
        WHERE c.id = p_customer_id AND c.account_id = p_account_id AND c.livemode = p_livemode
        ORDER BY g.id;
END
$$
"#;

/// Migration 6's function, as it was.
const RESTORE: &str = r#"
CREATE OR REPLACE FUNCTION creditd_locked_customer_grants(
    p_account_id text,
    p_livemode boolean,
    p_customer_id text,
    p_invoice text,
    p_invoice_line_item text
)
RETURNS TABLE (out_clock_time bigint, out_line_applied boolean, out_grant credit_grants)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM customers
        WHERE id = p_customer_id AND account_id = p_account_id AND livemode = p_livemode
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT tc.frozen_time,
               EXISTS (SELECT 1 FROM credit_applications a
                       WHERE a.account_id = c.account_id AND a.livemode = c.livemode
                         AND a.invoice = p_invoice AND a.invoice_line_item = p_invoice_line_item),
               g
        FROM customers c
        LEFT JOIN test_clocks tc ON tc.id = c.test_clock
        LEFT JOIN credit_grants g ON g.account_id = c.account_id AND g.livemode = c.livemode
                                 AND g.customer_id = c.id
        WHERE c.id = p_customer_id AND c.account_id = p_account_id AND c.livemode = p_livemode
        ORDER BY g.id;
END
$$
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Customers::Table)
                    .add_column(big_integer_null(Customers::DeletedAt))
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(LOCKED_READ)
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager.get_connection().execute_unprepared(RESTORE).await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Customers::Table)
                    .drop_column(Customers::DeletedAt)
                    .to_owned(),
            )
            .await
    }
}
