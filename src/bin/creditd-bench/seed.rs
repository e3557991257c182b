//! Bulk seeding and database baselines for the load generator. They live in the bench, not in
//! the library: the service never seeds in bulk, and this SQL goes around the store on purpose
//! (it writes the tables directly, so it must keep their invariants itself; `--audit` checks).
//!
//! - [`seed_credit_history`] writes a credit grant with a long ledger straight into the tables
//!   with multi-row INSERTs (a million entries through the API would take far too long), keeping
//!   every invariant `creditd audit` checks: one `credits_granted` entry of the grant's amount,
//!   the materialized `remaining` equal to the signed sum of the grant's entries (it is lowered
//!   in the same transaction as each batch), and one `credit_applications` row per invoice line
//!   whose `applied` is that line's `credits_applied` total.
//! - The scratch table and its one-row transactions are the baselines a benchmark divides by:
//!   what the same driver and pool commit per second with nothing of creditd around them.
//! - [`create_database`] / [`drop_database`] make and remove a throwaway PostgreSQL database.

use creditd::domain::Tenant;
use creditd::domain::ids::{IdKind, new_id};
use creditd::error::{Error, Result};
use creditd::store::{Db, DbOptions, commit, db_error, replace_database, rollback};
use sea_orm::{ConnectionTrait, Statement};

/// The table the database baselines write to.
pub const SCRATCH_TABLE: &str = "creditd_bench_scratch";

/// Rows per INSERT statement; a few statements make one transaction.
const ROWS_PER_STATEMENT: usize = 500;
const ROWS_PER_TRANSACTION: usize = 20_000;

/// The starting value of the scratch row that `UPDATE … SET v = v - 1` counts down.
const SCRATCH_START: i64 = 1_000_000_000_000_000;

/// A SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn boolean(value: bool) -> &'static str {
    if value { "TRUE" } else { "FALSE" }
}

/// (Re)creates the scratch table with its row `id = 1`.
pub async fn create_scratch_table(db: &Db) -> Result<()> {
    let id = if db.is_postgres() {
        "BIGSERIAL PRIMARY KEY"
    } else {
        "INTEGER PRIMARY KEY"
    };
    let writer = db.writer();
    for sql in [
        format!("DROP TABLE IF EXISTS {SCRATCH_TABLE}"),
        format!("CREATE TABLE {SCRATCH_TABLE} (id {id}, v BIGINT NOT NULL, note TEXT NOT NULL)"),
        format!("INSERT INTO {SCRATCH_TABLE} (v, note) VALUES ({SCRATCH_START}, 'counter')"),
    ] {
        writer.execute_unprepared(&sql).await.map_err(db_error)?;
    }
    Ok(())
}

pub async fn drop_scratch_table(db: &Db) -> Result<()> {
    db.writer()
        .execute_unprepared(&format!("DROP TABLE IF EXISTS {SCRATCH_TABLE}"))
        .await
        .map_err(db_error)?;
    Ok(())
}

/// One transaction that inserts one row and commits: the insert-commit baseline.
pub async fn scratch_insert(db: &Db, value: i64, note: &str) -> Result<()> {
    let tx = db.begin().await?;
    let statement = Statement::from_sql_and_values(
        db.backend(),
        format!("INSERT INTO {SCRATCH_TABLE} (v, note) VALUES ($1, $2)"),
        [value.into(), note.into()],
    );
    if let Err(error) = tx.execute_raw(statement).await {
        rollback(tx).await?;
        return Err(db_error(error));
    }
    commit(tx).await
}

/// One transaction that decrements the single row `id = 1` and commits: the baseline for
/// writes that all touch one row, one after another.
pub async fn scratch_update(db: &Db) -> Result<()> {
    let tx = db.begin().await?;
    let result = tx
        .execute_unprepared(&format!(
            "UPDATE {SCRATCH_TABLE} SET v = v - 1 WHERE id = 1"
        ))
        .await;
    match result {
        Ok(done) if done.rows_affected() == 1 => commit(tx).await,
        Ok(_) => {
            rollback(tx).await?;
            Err(Error::internal(anyhow::anyhow!(
                "the scratch row id = 1 is missing"
            )))
        }
        Err(error) => {
            rollback(tx).await?;
            Err(db_error(error))
        }
    }
}

/// One point read of the scratch row `id = 1` by primary key through the reader pool: the
/// driver's floor under any read request.
pub async fn scratch_read(db: &Db) -> Result<()> {
    let statement = Statement::from_sql_and_values(
        db.backend(),
        format!("SELECT v FROM {SCRATCH_TABLE} WHERE id = $1"),
        [1i64.into()],
    );
    match db
        .reader()
        .query_one_raw(statement)
        .await
        .map_err(db_error)?
    {
        Some(_) => Ok(()),
        None => Err(Error::internal(anyhow::anyhow!(
            "the scratch row id = 1 is missing"
        ))),
    }
}

/// What [`seed_credit_history`] wrote.
#[derive(Debug, Clone)]
pub struct SeededHistory {
    /// Ledger entries of the grant: one `credits_granted` and `entries - 1` `credits_applied`.
    pub entries: u64,
    /// The ID at `cursor_depth` in the list order (newest first, 1-based), when the history is
    /// that deep: `starting_after` it gives the page below that depth.
    pub cursor_id: Option<String>,
}

/// Gives the existing customer `customer_id` one metered USD grant with a ledger of `entries`
/// entries (at least 1): the `credits_granted` entry, then `entries - 1` applications of one
/// cent, each to its own invoice line with its `credit_applications` row. The grant's amount is
/// `max(99_999_999, entries)`, so it never runs out. Written in batches, each its own
/// transaction that also lowers the grant's `remaining`, so the ledger is consistent after every
/// commit.
pub async fn seed_credit_history(
    db: &Db,
    tenant: &Tenant,
    customer_id: &str,
    entries: u64,
    cursor_depth: u64,
    now: i64,
) -> Result<SeededHistory> {
    let entries = entries.max(1);
    let applications = entries - 1;
    let amount = 99_999_999_i64.max(entries as i64);
    let grant_id = new_id(IdKind::CreditGrant, tenant.livemode);
    let account = quote(&tenant.account_id);
    let livemode = boolean(tenant.livemode);
    let customer = quote(customer_id);
    let grant = quote(&grant_id);
    // Invoice IDs unique to this grant: the grant ID's random tail.
    let tag = &grant_id[grant_id.len().saturating_sub(10)..];
    // In list order (newest first) the entry at depth d is the (entries - d)-th written.
    let cursor_index =
        (cursor_depth >= 1 && cursor_depth <= entries).then(|| entries - cursor_depth);
    let mut cursor_id = None;

    // The grant at its full amount with its credits_granted entry.
    let granted_id = new_id(IdKind::CreditBalanceTransaction, tenant.livemode);
    if cursor_index == Some(0) {
        cursor_id = Some(granted_id.clone());
    }
    let tx = db.begin().await?;
    let first = [
        format!(
            "INSERT INTO credit_grants (id, account_id, livemode, customer_id, created, updated, \
               name, category, priority, currency, amount, remaining, scope_price_type, \
               scope_prices, effective_at, expires_at, voided_at, expiry_recorded_at, metadata, \
               test_clock) \
             VALUES ({grant}, {account}, {livemode}, {customer}, {now}, {now}, \
               'benchmark history', 'paid', 50, 'usd', {amount}, {amount}, 'metered', \
               NULL, {now}, NULL, NULL, NULL, '{{}}', NULL)"
        ),
        format!(
            "INSERT INTO credit_balance_transactions (id, account_id, livemode, customer_id, \
               credit_grant_id, created, effective_at, \"type\", amount, currency, invoice, \
               invoice_line_item, test_clock, grant_remaining_after) \
             VALUES ({}, {account}, {livemode}, {customer}, {grant}, {now}, {now}, \
               'credits_granted', {amount}, 'usd', NULL, NULL, NULL, {amount})",
            quote(&granted_id)
        ),
    ];
    for sql in &first {
        if let Err(error) = tx.execute_unprepared(sql).await {
            rollback(tx).await?;
            return Err(db_error(error));
        }
    }
    commit(tx).await?;

    let price = quote(r#"{"metered":true,"id":null}"#);
    let mut written: u64 = 0;
    while written < applications {
        let batch = (applications - written).min(ROWS_PER_TRANSACTION as u64);
        let tx = db.begin().await?;
        let mut statements = Vec::new();
        let mut entry_rows = Vec::with_capacity(ROWS_PER_STATEMENT);
        let mut application_rows = Vec::with_capacity(ROWS_PER_STATEMENT);
        for offset in 0..batch {
            let line = written + offset + 1;
            let id = new_id(IdKind::CreditBalanceTransaction, tenant.livemode);
            if cursor_index == Some(line) {
                cursor_id = Some(id.clone());
            }
            let invoice = quote(&format!("in_bench_{tag}_{}", line / 100));
            let line_item = quote(&format!("il_bench_{tag}_{line}"));
            // One cent per application: the grant's running remainder after line `line`.
            let remaining_after = amount - line as i64;
            entry_rows.push(format!(
                "({}, {account}, {livemode}, {customer}, {grant}, {now}, {now}, \
                 'credits_applied', 1, 'usd', {invoice}, {line_item}, NULL, {remaining_after})",
                quote(&id)
            ));
            application_rows.push(format!(
                "({account}, {livemode}, {invoice}, {line_item}, {customer}, 'usd', 1, 1, \
                 {price}, {now}, NULL)"
            ));
            if entry_rows.len() == ROWS_PER_STATEMENT || offset + 1 == batch {
                statements.push(format!(
                    "INSERT INTO credit_balance_transactions (id, account_id, livemode, \
                       customer_id, credit_grant_id, created, effective_at, \"type\", amount, \
                       currency, invoice, invoice_line_item, test_clock, grant_remaining_after) \
                       VALUES {}",
                    entry_rows.join(", ")
                ));
                statements.push(format!(
                    "INSERT INTO credit_applications (account_id, livemode, invoice, \
                       invoice_line_item, customer_id, currency, amount_due, applied, price, \
                       created, reinstated_at) VALUES {}",
                    application_rows.join(", ")
                ));
                entry_rows.clear();
                application_rows.clear();
            }
        }
        statements.push(format!(
            "UPDATE credit_grants SET remaining = remaining - {batch} WHERE id = {grant}"
        ));
        for sql in &statements {
            if let Err(error) = tx.execute_unprepared(sql).await {
                rollback(tx).await?;
                return Err(db_error(error));
            }
        }
        commit(tx).await?;
        written += batch;
    }
    Ok(SeededHistory { entries, cursor_id })
}

/// Creates the database `name` on the PostgreSQL server of `admin_url` and returns the URL of
/// the new database.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String> {
    check_database_name(name)?;
    let admin = Db::connect(&DbOptions {
        max_connections: 1,
        ..DbOptions::new(admin_url)
    })
    .await?;
    let created = admin
        .writer()
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(db_error);
    admin.close().await;
    created?;
    Ok(replace_database(admin_url, name))
}

/// Drops the database `name` on the PostgreSQL server of `admin_url`, closing its sessions.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    check_database_name(name)?;
    let admin = Db::connect(&DbOptions {
        max_connections: 1,
        ..DbOptions::new(admin_url)
    })
    .await?;
    let dropped = admin
        .writer()
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .map_err(db_error);
    admin.close().await;
    dropped.map(|_| ())
}

fn check_database_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_param(
            "database",
            format!("{name} is not a plain lowercase database name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_plain() {
        assert!(check_database_name("creditd_bench_ab12").is_ok());
        assert!(check_database_name("x; DROP").is_err());
        assert!(check_database_name("").is_err());
    }
}
