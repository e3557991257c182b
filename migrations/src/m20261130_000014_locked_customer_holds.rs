//! PostgreSQL only: the locked read behind ApplyCredits and holds (migrations 6 and 8) also says
//! whether the customer has an `active` credit hold, so a write for a customer without one
//! needs no read of its holds. The return type changes, so the function is dropped and created
//! again (inside the migration's transaction: no call sees it missing).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const DROP: &str = "DROP FUNCTION creditd_locked_customer_grants(text, boolean, text, text, text)";

const CREATE: &str = r#"
CREATE FUNCTION creditd_locked_customer_grants(
    p_account_id text,
    p_livemode boolean,
    p_customer_id text,
    p_invoice text,
    p_invoice_line_item text
)
RETURNS TABLE (
    out_clock_time bigint,
    out_line_applied boolean,
    out_may_have_holds boolean,
    out_grant credit_grants
)
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
               EXISTS (SELECT 1 FROM credit_holds h
                       WHERE h.account_id = c.account_id AND h.livemode = c.livemode
                         AND h.customer_id = c.id AND h.status = 'active'),
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
        if manager.get_database_backend() == DbBackend::Postgres {
            crate::execute_all(manager, &[DROP, CREATE]).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            crate::execute_all(
                manager,
                &[DROP, crate::m20261130_000008_customer_deletion::LOCKED_READ],
            )
            .await?;
        }
        Ok(())
    }
}
