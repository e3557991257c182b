//! PostgreSQL only: `creditd_locked_customer_grants` locks a customer's row and then reads its
//! grants, test clock time and whether an invoice line already has an application, in one
//! call. A plain statement cannot do both: in READ COMMITTED its snapshot is taken before it
//! waits for the lock, so the grants it read would predate the previous lock holder's commit.
//! Each statement inside a VOLATILE function takes a new snapshot, so the read sees every
//! write committed before the lock was granted. (On SQLite the single writer connection
//! serializes writes and there is nothing to create.)

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r#"
CREATE FUNCTION creditd_locked_customer_grants(
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

const DROP: &str = "DROP FUNCTION creditd_locked_customer_grants(text, boolean, text, text, text)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager.get_connection().execute_unprepared(CREATE).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager.get_connection().execute_unprepared(DROP).await?;
        }
        Ok(())
    }
}
