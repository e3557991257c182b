//! The credit ledger's entries, and the invoice lines credits were applied to.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder};

use super::entities::credit_application as application;
use super::entities::credit_balance_transaction as entry;
use super::{Connection, KeysetPage, db_error, insert_row, keyset_page};
use crate::domain::credit_application::AppliedLine;
use crate::domain::credit_balance_transaction::{
    CreditBalanceTransaction, CreditTransactionFilter, EntryType,
};
use crate::domain::credit_grant::CreditGrant;
use crate::domain::pagination::ListRequest;
use crate::domain::{Currency, Tenant};
use crate::error::{Error, Result};

/// The ledger order of a grant's entries: by `created` (the moment recorded, in the customer's
/// time), then by ID (time-ordered, so the write order within a second). Running remainders
/// follow it, the audit checks them in it and the summary's `as_of` reads it; `created` never
/// goes back within one grant (every write holds the customer's lock and dates entries at the
/// customer's now; a lapsed expiry is never dated before its grant's creation).
pub(crate) fn ledger_order(alias: &str) -> String {
    format!("{alias}.created, {alias}.id")
}

/// [`ledger_order`] reversed: the last entry first.
pub(crate) fn ledger_order_last_first(alias: &str) -> String {
    format!("{alias}.created DESC, {alias}.id DESC")
}

fn scoped(tenant: &Tenant) -> Condition {
    Condition::all()
        .add(entry::Column::AccountId.eq(tenant.account_id.as_str()))
        .add(entry::Column::Livemode.eq(tenant.livemode))
}

pub async fn insert(
    conn: &impl Connection,
    tenant: &Tenant,
    txn: &CreditBalanceTransaction,
) -> Result<()> {
    insert_row(conn, entry::ActiveModel::from(to_row(tenant, txn))).await
}

fn to_row(tenant: &Tenant, txn: &CreditBalanceTransaction) -> entry::Model {
    entry::Model {
        id: txn.id.clone(),
        account_id: tenant.account_id.clone(),
        livemode: tenant.livemode,
        customer_id: txn.customer_id.clone(),
        credit_grant_id: txn.credit_grant_id.clone(),
        created: txn.created,
        effective_at: txn.effective_at,
        kind: txn.kind.as_str().to_string(),
        amount: txn.amount,
        currency: txn.currency.to_string(),
        invoice: txn.invoice.clone(),
        invoice_line_item: txn.invoice_line_item.clone(),
        test_clock: txn.test_clock.clone(),
        grant_remaining_after: Some(txn.grant_remaining_after),
    }
}

/// A grant drawn from by an application: its new state and the remainder it had when read.
pub struct Draw<'a> {
    pub grant: &'a CreditGrant,
    pub previous_remaining: i64,
}

/// Writes everything an application changes: each drawn grant's remainder (guarded by the
/// remainder it had when read), its `credits_applied` entries and the invoice line's
/// application row, in one round trip: data-modifying CTEs in one statement on PostgreSQL,
/// one batch of statements on SQLite. The customer's lock (or SQLite's single writer) is so
/// held across one round trip for the writes instead of three or more.
pub async fn record_application(
    conn: &impl Connection,
    tenant: &Tenant,
    draws: &[Draw<'_>],
    entries: &[CreditBalanceTransaction],
    application: &AppliedLine,
) -> Result<()> {
    let application = application_row(tenant, application)?;
    let mut sql = SqlWithValues::default();
    let updates: Vec<String> = draws
        .iter()
        .map(|draw| {
            format!(
                "UPDATE credit_grants SET remaining = {}, updated = {} \
                 WHERE account_id = {} AND livemode = {} AND id = {} AND remaining = {}",
                sql.bind(draw.grant.remaining),
                sql.bind(draw.grant.updated),
                sql.bind(tenant.account_id.as_str()),
                sql.bind(tenant.livemode),
                sql.bind(draw.grant.id.as_str()),
                sql.bind(draw.previous_remaining),
            )
        })
        .collect();
    let entry_rows: Vec<entry::Model> = entries.iter().map(|e| to_row(tenant, e)).collect();
    let mut inserts = Vec::with_capacity(2);
    if !entry_rows.is_empty() {
        inserts.push(sql.insert::<entry::Entity>(&entry_rows));
    }
    inserts.push(sql.insert::<application::Entity>(std::slice::from_ref(&application)));
    let backend = super::backend_of(conn);
    let debited = if backend == sea_orm::DbBackend::Postgres {
        let mut ctes: Vec<String> = updates
            .iter()
            .enumerate()
            .map(|(n, update)| format!("d{n} AS ({update} RETURNING 1)"))
            .collect();
        ctes.extend(
            inserts
                .iter()
                .enumerate()
                .map(|(n, insert)| format!("i{n} AS ({insert})")),
        );
        let mut debited: Vec<String> = (0..updates.len())
            .map(|n| format!("(SELECT count(*) FROM d{n})"))
            .collect();
        debited.push("CAST(0 AS BIGINT)".to_string());
        let sql_text = format!(
            "WITH {} SELECT {} AS debited",
            ctes.join(", "),
            debited.join(" + ")
        );
        let statement = sea_orm::Statement::from_sql_and_values(backend, sql_text, sql.values);
        let row = conn
            .query_one_raw(statement)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("the application wrote no row")))?;
        row.try_get::<i64>("", "debited").map_err(db_error)?
    } else {
        // SQLite runs a batch of statements in one call; each insert writes its rows or fails,
        // so the total of changed rows is short exactly when a guarded update found nothing.
        let inserted = entries.len() as u64 + 1;
        let statement = sea_orm::Statement::from_sql_and_values(
            backend,
            format!("{};", [updates, inserts].concat().join("; ")),
            sql.values,
        );
        let changed = conn
            .execute_raw(statement)
            .await
            .map_err(db_error)?
            .rows_affected();
        changed.saturating_sub(inserted) as i64
    };
    if debited != draws.len() as i64 {
        return Err(Error::internal(anyhow::anyhow!(
            "a credit grant changed under an application that held its customer's lock"
        )));
    }
    Ok(())
}

/// SQL text with numbered `$n` placeholders (PostgreSQL's, which sqlx's SQLite driver accepts
/// too), and the values they stand for.
#[derive(Default)]
struct SqlWithValues {
    values: Vec<sea_orm::Value>,
}

impl SqlWithValues {
    fn bind(&mut self, value: impl Into<sea_orm::Value>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    /// `INSERT INTO <table> (<every column>) VALUES (…), …` for `rows`.
    fn insert<E: EntityTrait>(&mut self, rows: &[E::Model]) -> String {
        use sea_orm::{IdenStatic, Iterable, ModelTrait};
        let columns: Vec<E::Column> = E::Column::iter().collect();
        let names: Vec<&str> = columns.iter().map(|column| column.as_str()).collect();
        let tuples: Vec<String> = rows
            .iter()
            .map(|row| {
                let placeholders: Vec<String> = columns
                    .iter()
                    .map(|column| self.bind(row.get(*column)))
                    .collect();
                format!("({})", placeholders.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO {} ({}) VALUES {}",
            E::default().table_name(),
            names.join(", "),
            tuples.join(", ")
        )
    }
}

pub async fn find(
    conn: &impl Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<CreditBalanceTransaction>> {
    entry::Entity::find()
        .filter(scoped(tenant).add(entry::Column::Id.eq(id)))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

pub async fn list(
    conn: &impl Connection,
    tenant: &Tenant,
    filter: &CreditTransactionFilter,
    request: &ListRequest,
) -> Result<KeysetPage<CreditBalanceTransaction>> {
    let mut condition =
        scoped(tenant).add(entry::Column::CustomerId.eq(filter.customer_id.as_str()));
    if let Some(grant) = &filter.credit_grant_id {
        condition = condition.add(entry::Column::CreditGrantId.eq(grant.as_str()));
    }
    keyset_page::<entry::Entity>(conn, condition, entry::Column::Id, request)
        .await?
        .try_map(to_domain)
}

/// The `credits_applied` entries of one invoice line, in the order they were written.
pub async fn applied_to_line(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    invoice: &str,
    invoice_line_item: &str,
) -> Result<Vec<CreditBalanceTransaction>> {
    entry::Entity::find()
        .filter(
            scoped(tenant)
                .add(entry::Column::CustomerId.eq(customer_id))
                .add(entry::Column::Invoice.eq(invoice))
                .add(entry::Column::InvoiceLineItem.eq(invoice_line_item))
                .add(entry::Column::Kind.eq(EntryType::CreditsApplied.as_str())),
        )
        .order_by_asc(entry::Column::Id)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(to_domain)
        .collect()
}

fn to_domain(row: entry::Model) -> Result<CreditBalanceTransaction> {
    let kind = EntryType::parse(&row.kind)
        .ok_or_else(|| Error::internal(anyhow::anyhow!("stored credit entry type {}", row.kind)))?;
    let grant_remaining_after = row.grant_remaining_after.ok_or_else(|| {
        Error::internal(anyhow::anyhow!(
            "stored credit entry {} has no running remainder",
            row.id
        ))
    })?;
    Ok(CreditBalanceTransaction {
        currency: Currency::try_from(row.currency)
            .map_err(|error| Error::internal(anyhow::anyhow!("stored currency: {error}")))?,
        id: row.id,
        livemode: row.livemode,
        created: row.created,
        effective_at: row.effective_at,
        customer_id: row.customer_id,
        credit_grant_id: row.credit_grant_id,
        kind,
        amount: row.amount,
        invoice: row.invoice,
        invoice_line_item: row.invoice_line_item,
        test_clock: row.test_clock,
        grant_remaining_after,
    })
}

fn application_row(tenant: &Tenant, line: &AppliedLine) -> Result<application::Model> {
    Ok(application::Model {
        account_id: tenant.account_id.clone(),
        livemode: tenant.livemode,
        invoice: line.invoice.clone(),
        invoice_line_item: line.invoice_line_item.clone(),
        customer_id: line.customer_id.clone(),
        currency: line.currency.to_string(),
        amount_due: line.amount_due,
        applied: line.applied,
        price: serde_json::to_string(&line.price).map_err(Error::internal)?,
        created: line.created,
        reinstated_at: line.reinstated_at,
        explanation: line
            .explanation
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(Error::internal)?,
    })
}

fn applied_line(row: application::Model) -> Result<AppliedLine> {
    let stored = |what: &str, detail: &dyn std::fmt::Display| {
        Error::internal(anyhow::anyhow!(
            "stored credit application {what}: {detail}"
        ))
    };
    Ok(AppliedLine {
        currency: Currency::try_from(row.currency).map_err(|error| stored("currency", &error))?,
        price: serde_json::from_str(&row.price).map_err(|error| stored("price", &error))?,
        customer_id: row.customer_id,
        invoice: row.invoice,
        invoice_line_item: row.invoice_line_item,
        amount_due: row.amount_due,
        applied: row.applied,
        created: row.created,
        reinstated_at: row.reinstated_at,
        explanation: row
            .explanation
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|error| stored("explanation", &error))?,
    })
}

pub async fn find_application(
    conn: &impl Connection,
    tenant: &Tenant,
    invoice: &str,
    invoice_line_item: &str,
) -> Result<Option<AppliedLine>> {
    application::Entity::find_by_id((
        tenant.account_id.clone(),
        tenant.livemode,
        invoice.to_string(),
        invoice_line_item.to_string(),
    ))
    .one(conn)
    .await
    .map_err(db_error)?
    .map(applied_line)
    .transpose()
}

/// The application records of any of `lines` (invoice, line item) that have one, in one query
/// per 200 lines: a `UNION ALL` of primary-key lookups (an `OR` of the pairs makes SQLite scan
/// the tenant's whole table once there are a few of them).
pub async fn find_applications(
    conn: &impl Connection,
    tenant: &Tenant,
    lines: &[(&str, &str)],
) -> Result<Vec<AppliedLine>> {
    let mut found = Vec::new();
    for chunk in lines.chunks(200) {
        let mut values: Vec<sea_orm::Value> =
            vec![tenant.account_id.as_str().into(), tenant.livemode.into()];
        let lookups: Vec<String> = chunk
            .iter()
            .map(|(invoice, item)| {
                values.push((*invoice).into());
                values.push((*item).into());
                format!(
                    "SELECT * FROM credit_applications WHERE account_id = $1 AND livemode = $2 \
                     AND invoice = ${} AND invoice_line_item = ${}",
                    values.len() - 1,
                    values.len()
                )
            })
            .collect();
        let statement = sea_orm::Statement::from_sql_and_values(
            super::backend_of(conn),
            lookups.join(" UNION ALL "),
            values,
        );
        let rows = application::Entity::find()
            .from_raw_sql(statement)
            .all(conn)
            .await
            .map_err(db_error)?;
        for row in rows {
            found.push(applied_line(row)?);
        }
    }
    Ok(found)
}

/// The lines of an invoice whose credits have not been given back yet.
pub async fn applications_to_reinstate(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    invoice: &str,
) -> Result<Vec<AppliedLine>> {
    application::Entity::find()
        .filter(application::Column::AccountId.eq(tenant.account_id.as_str()))
        .filter(application::Column::Livemode.eq(tenant.livemode))
        .filter(application::Column::CustomerId.eq(customer_id))
        .filter(application::Column::Invoice.eq(invoice))
        .filter(application::Column::ReinstatedAt.is_null())
        .order_by_asc(application::Column::InvoiceLineItem)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(applied_line)
        .collect()
}

pub async fn mark_reinstated(
    conn: &impl Connection,
    tenant: &Tenant,
    invoice: &str,
    invoice_line_item: &str,
    at: i64,
) -> Result<()> {
    application::Entity::update_many()
        .col_expr(application::Column::ReinstatedAt, Expr::value(at))
        .filter(application::Column::AccountId.eq(tenant.account_id.as_str()))
        .filter(application::Column::Livemode.eq(tenant.livemode))
        .filter(application::Column::Invoice.eq(invoice))
        .filter(application::Column::InvoiceLineItem.eq(invoice_line_item))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}
