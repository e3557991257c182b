//! The credit ledger's entries, and the invoice lines credits were applied to.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, Iterable, QueryFilter, QueryOrder};

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

/// Everything one or more invoice-line applications write, gathered to be written together by
/// [`ApplicationWrites::write`]: each drawn grant's final remainder (guarded by the remainder it
/// had when read, so a grant drawn by several lines is updated once), the `credits_applied`
/// entries and one application row per line.
#[derive(Default)]
pub struct ApplicationWrites {
    /// Drawn grants by ID: (new remainder, new `updated`, remainder when read).
    draws: Vec<(String, i64, i64, i64)>,
    /// Each drawn grant's place in `draws`.
    drawn: std::collections::HashMap<String, usize>,
    entries: Vec<entry::Model>,
    applications: Vec<application::Model>,
}

/// What one round trip of [`ApplicationWrites::write`] may carry.
struct TripLimits {
    /// Bound values: well inside PostgreSQL's 65,535 and SQLite's 32,766 per statement.
    values: usize,
    statements: usize,
    /// Inserted rows (and so rows per `INSERT`).
    rows: usize,
    /// Grants per guarded `UPDATE`.
    grants_per_update: usize,
}

impl TripLimits {
    /// On PostgreSQL a round trip crosses the network: as much as the values allow goes in one
    /// statement. On SQLite a round trip is a hand-off to the connection's thread and costs
    /// little, while sqlx keeps each distinct text it ran prepared (up to 100 per connection):
    /// small pieces of few shapes are prepared once and reused, where one text per batch size
    /// would be prepared anew each time and fill memory with big cached statements.
    fn of(backend: sea_orm::DbBackend) -> Self {
        match backend {
            sea_orm::DbBackend::Postgres => TripLimits {
                values: 30_000,
                statements: usize::MAX,
                rows: 500,
                grants_per_update: 500,
            },
            _ => TripLimits {
                values: 30_000,
                statements: 16,
                rows: 64,
                // SQLite plans an `UPDATE … FROM (VALUES …)` as a scan of the tenant's grants
                // against every row of the values.
                grants_per_update: 1,
            },
        }
    }
}

impl ApplicationWrites {
    /// Adds one line's application: the grants it drew (each with the remainder it had before
    /// this line), its entries and its record.
    pub fn add<'a>(
        &mut self,
        tenant: &Tenant,
        drawn: impl IntoIterator<Item = (&'a CreditGrant, i64)>,
        entries: &[CreditBalanceTransaction],
        line: &AppliedLine,
    ) -> Result<()> {
        for (grant, previous_remaining) in drawn {
            match self.drawn.get(&grant.id) {
                // Drawn by an earlier line of this write: the row still holds what that line
                // read, and takes this line's result.
                Some(&at) => {
                    (self.draws[at].1, self.draws[at].2) = (grant.remaining, grant.updated)
                }
                None => {
                    self.drawn.insert(grant.id.clone(), self.draws.len());
                    self.draws.push((
                        grant.id.clone(),
                        grant.remaining,
                        grant.updated,
                        previous_remaining,
                    ));
                }
            }
        }
        self.entries
            .extend(entries.iter().map(|entry| to_row(tenant, entry)));
        self.applications.push(application_row(tenant, line)?);
        Ok(())
    }

    /// Writes everything added in round trips within [`TripLimits`]: on PostgreSQL
    /// data-modifying CTEs in one statement (for any batch up to a few hundred lines), on
    /// SQLite batches of statements (one for a single line). A customer's lock (or SQLite's
    /// single writer) is so held across one round trip for a line's writes instead of three.
    pub async fn write(self, conn: &impl Connection, tenant: &Tenant) -> Result<()> {
        let backend = super::backend_of(conn);
        let limits = TripLimits::of(backend);
        let mut round_trips: Vec<RoundTrip> = Vec::new();
        for draws in self.draws.chunks(limits.grants_per_update) {
            let trip = room_for(&mut round_trips, backend, &limits, 2 + 4 * draws.len(), 0);
            let update = guarded_update(&mut trip.sql, tenant, draws);
            trip.statements.push(update);
            trip.updates += 1;
        }
        add_inserts::<entry::Entity>(&mut round_trips, backend, &limits, &self.entries);
        add_inserts::<application::Entity>(&mut round_trips, backend, &limits, &self.applications);
        let mut debited = 0;
        for trip in round_trips {
            debited += trip.run(conn).await?;
        }
        if debited != self.draws.len() as u64 {
            return Err(Error::internal(anyhow::anyhow!(
                "a credit grant changed under an application that held its customer's lock"
            )));
        }
        Ok(())
    }
}

/// The guarded update of `draws` (ID, new remainder, new `updated`, remainder when read): one
/// statement that changes every row still holding what was read.
fn guarded_update(
    sql: &mut SqlWithValues,
    tenant: &Tenant,
    draws: &[(String, i64, i64, i64)],
) -> String {
    if let [(id, remaining, updated, previous)] = draws {
        return format!(
            "UPDATE credit_grants SET remaining = {}, updated = {} \
             WHERE account_id = {} AND livemode = {} AND id = {} AND remaining = {}",
            sql.bind(*remaining),
            sql.bind(*updated),
            sql.bind(tenant.account_id.as_str()),
            sql.bind(tenant.livemode),
            sql.bind(id.as_str()),
            sql.bind(*previous),
        );
    }
    let rows: Vec<String> = draws
        .iter()
        .map(|(id, remaining, updated, previous)| {
            format!(
                "({}, {}, {}, {})",
                sql.bind(id.as_str()),
                sql.bind(*remaining),
                sql.bind(*updated),
                sql.bind(*previous)
            )
        })
        .collect();
    format!(
        "UPDATE credit_grants AS g SET remaining = v.remaining, updated = v.updated \
         FROM (VALUES {}) AS v (id, remaining, updated, previous) \
         WHERE g.account_id = {} AND g.livemode = {} AND g.id = v.id \
         AND g.remaining = v.previous",
        rows.join(", "),
        sql.bind(tenant.account_id.as_str()),
        sql.bind(tenant.livemode),
    )
}

/// Statements sent to the database together: the first `updates` of them guarded updates, the
/// rest inserts.
struct RoundTrip {
    sql: SqlWithValues,
    statements: Vec<String>,
    updates: usize,
}

/// Adds `INSERT`s of `rows` to `round_trips`, within `limits`.
fn add_inserts<E: EntityTrait>(
    round_trips: &mut Vec<RoundTrip>,
    backend: sea_orm::DbBackend,
    limits: &TripLimits,
    rows: &[E::Model],
) {
    let columns = E::Column::iter().count();
    for chunk in rows.chunks(limits.rows) {
        let values = chunk.len() * columns;
        let trip = room_for(round_trips, backend, limits, values, chunk.len() as u64);
        let insert = trip.sql.insert::<E>(chunk);
        trip.statements.push(insert);
    }
}

/// The last of `round_trips` if it has room within `limits` for one more statement of `values`
/// bound values inserting `rows` rows, else a new one.
fn room_for<'a>(
    round_trips: &'a mut Vec<RoundTrip>,
    backend: sea_orm::DbBackend,
    limits: &TripLimits,
    values: usize,
    rows: u64,
) -> &'a mut RoundTrip {
    let full = round_trips.last().is_none_or(|trip| {
        trip.sql.values.len() + values > limits.values
            || trip.statements.len() + 1 > limits.statements
            || trip.sql.inserted_rows + rows > limits.rows as u64
    });
    if full {
        round_trips.push(RoundTrip {
            sql: SqlWithValues::new(backend),
            statements: Vec::new(),
            updates: 0,
        });
    }
    let last = round_trips.len() - 1;
    &mut round_trips[last]
}

impl RoundTrip {
    /// Runs the statements in one round trip; returns the number of rows the updates changed.
    async fn run(self, conn: &impl Connection) -> Result<u64> {
        let RoundTrip {
            sql,
            statements,
            updates,
        } = self;
        let backend = super::backend_of(conn);
        if backend == sea_orm::DbBackend::Postgres {
            let ctes: Vec<String> = statements
                .iter()
                .enumerate()
                .map(|(n, statement)| {
                    if n < updates {
                        format!("w{n} AS ({statement} RETURNING 1)")
                    } else {
                        format!("w{n} AS ({statement})")
                    }
                })
                .collect();
            let mut debited: Vec<String> = (0..updates)
                .map(|n| format!("(SELECT count(*) FROM w{n})"))
                .collect();
            debited.push("CAST(0 AS BIGINT)".to_string());
            let text = format!(
                "WITH {} SELECT {} AS debited",
                ctes.join(", "),
                debited.join(" + ")
            );
            let statement = sea_orm::Statement::from_sql_and_values(backend, text, sql.values);
            let row = conn
                .query_one_raw(statement)
                .await
                .map_err(db_error)?
                .ok_or_else(|| Error::internal(anyhow::anyhow!("the application wrote no row")))?;
            let debited = row.try_get::<i64>("", "debited").map_err(db_error)?;
            Ok(u64::try_from(debited).unwrap_or_default())
        } else {
            // SQLite runs a batch of statements in one call and reports the rows all of them
            // changed; each insert writes its rows or fails, so the updates changed the rest.
            let inserted = sql.inserted_rows;
            let statement = sea_orm::Statement::from_sql_and_values(
                backend,
                format!("{};", statements.join("; ")),
                sql.values,
            );
            let changed = conn
                .execute_raw(statement)
                .await
                .map_err(db_error)?
                .rows_affected();
            Ok(changed.saturating_sub(inserted))
        }
    }
}

/// SQL text with placeholders, and the values they stand for, in the order they appear.
/// PostgreSQL's are numbered (`$n`); SQLite's are anonymous (`?`): sqlx looks a numbered one up
/// by its name, a walk of all the statement's parameter names, so a statement of n numbered
/// parameters costs O(n²) to bind.
struct SqlWithValues {
    backend: sea_orm::DbBackend,
    values: Vec<sea_orm::Value>,
    /// Rows the `INSERT`s written by [`SqlWithValues::insert`] add.
    inserted_rows: u64,
}

impl SqlWithValues {
    fn new(backend: sea_orm::DbBackend) -> Self {
        SqlWithValues {
            backend,
            values: Vec::new(),
            inserted_rows: 0,
        }
    }

    /// A placeholder for `value`; call in the order the placeholders appear in the text.
    fn bind(&mut self, value: impl Into<sea_orm::Value>) -> String {
        self.values.push(value.into());
        match self.backend {
            sea_orm::DbBackend::Postgres => format!("${}", self.values.len()),
            _ => "?".to_string(),
        }
    }

    /// `INSERT INTO <table> (<every column>) VALUES (…), …` for `rows`.
    fn insert<E: EntityTrait>(&mut self, rows: &[E::Model]) -> String {
        use sea_orm::{IdenStatic, ModelTrait};
        let columns: Vec<E::Column> = E::Column::iter().collect();
        let names: Vec<&str> = columns.iter().map(|column| column.as_str()).collect();
        self.inserted_rows += rows.len() as u64;
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
