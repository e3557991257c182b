//! Database schema for creditd, as sea-orm migrations that run unchanged on SQLite and
//! PostgreSQL. Invariants that a row can state about itself are also CHECK constraints,
//! so a bug in the service cannot write a row the domain would reject.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_foundation;
mod m20261122_000002_billing_credits;
mod m20261122_000003_test_clocks;
mod m20261122_000004_grant_lookup_index;
mod m20261122_000005_ledger_lookup_indexes;
mod m20261122_000006_locked_customer_grants;
mod m20261130_000007_api_key_secrets;
mod m20261130_000008_customer_deletion;
mod m20261130_000009_events;
mod m20261130_000010_webhooks;
mod m20261130_000011_entry_running_remainder;
mod m20261130_000012_credit_holds;
mod m20261130_000013_billing_alerts;
mod m20261130_000014_locked_customer_holds;

/// Runs each statement of `sql` in order (a migration written as plain SQL).
pub(crate) async fn execute_all(manager: &SchemaManager<'_>, sql: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for statement in sql {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_foundation::Migration),
            Box::new(m20261122_000002_billing_credits::Migration),
            Box::new(m20261122_000003_test_clocks::Migration),
            Box::new(m20261122_000004_grant_lookup_index::Migration),
            Box::new(m20261122_000005_ledger_lookup_indexes::Migration),
            Box::new(m20261122_000006_locked_customer_grants::Migration),
            Box::new(m20261130_000007_api_key_secrets::Migration),
            Box::new(m20261130_000008_customer_deletion::Migration),
            Box::new(m20261130_000009_events::Migration),
            Box::new(m20261130_000010_webhooks::Migration),
            Box::new(m20261130_000011_entry_running_remainder::Migration),
            Box::new(m20261130_000012_credit_holds::Migration),
            Box::new(m20261130_000013_billing_alerts::Migration),
            Box::new(m20261130_000014_locked_customer_holds::Migration),
        ]
    }
}
