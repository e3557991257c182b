//! Credit grants with their materialized remainders.

use std::collections::BTreeMap;

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use super::entities::credit_grant as grant;
use super::{
    Connection, KeysetPage, db_error, insert_row, keyset_page, metadata_from_json, metadata_to_json,
};
use crate::domain::credit_grant::{Category, CreditGrant, Scope};
use crate::domain::pagination::ListRequest;
use crate::domain::{Currency, Tenant};
use crate::error::{Error, Result};

fn scoped(tenant: &Tenant) -> Condition {
    Condition::all()
        .add(grant::Column::AccountId.eq(tenant.account_id.as_str()))
        .add(grant::Column::Livemode.eq(tenant.livemode))
}

pub async fn insert(
    conn: &impl Connection,
    tenant: &Tenant,
    credit_grant: &CreditGrant,
) -> Result<()> {
    let (scope_price_type, scope_prices) = scope_columns(&credit_grant.scope);
    insert_row(
        conn,
        grant::ActiveModel {
            id: Set(credit_grant.id.clone()),
            account_id: Set(tenant.account_id.clone()),
            livemode: Set(tenant.livemode),
            customer_id: Set(credit_grant.customer_id.clone()),
            created: Set(credit_grant.created),
            updated: Set(credit_grant.updated),
            name: Set(credit_grant.name.clone()),
            category: Set(credit_grant.category.as_str().to_string()),
            priority: Set(credit_grant.priority),
            currency: Set(credit_grant.currency.to_string()),
            amount: Set(credit_grant.amount),
            remaining: Set(credit_grant.remaining),
            scope_price_type: Set(scope_price_type),
            scope_prices: Set(scope_prices),
            effective_at: Set(credit_grant.effective_at),
            expires_at: Set(credit_grant.expires_at),
            voided_at: Set(credit_grant.voided_at),
            expiry_recorded_at: Set(credit_grant.expiry_recorded_at),
            metadata: Set(metadata_to_json(&credit_grant.metadata)),
            test_clock: Set(credit_grant.test_clock.clone()),
        },
    )
    .await?;
    Ok(())
}

/// Writes a grant's mutable state. `previous_remaining` guards against a lost update: the
/// row must still hold what the caller read.
pub async fn save(
    conn: &impl Connection,
    tenant: &Tenant,
    credit_grant: &CreditGrant,
    previous_remaining: i64,
) -> Result<()> {
    let result = grant::Entity::update_many()
        .col_expr(
            grant::Column::Remaining,
            Expr::value(credit_grant.remaining),
        )
        .col_expr(grant::Column::Updated, Expr::value(credit_grant.updated))
        .col_expr(
            grant::Column::ExpiresAt,
            Expr::value(credit_grant.expires_at),
        )
        .col_expr(grant::Column::VoidedAt, Expr::value(credit_grant.voided_at))
        .col_expr(
            grant::Column::ExpiryRecordedAt,
            Expr::value(credit_grant.expiry_recorded_at),
        )
        .col_expr(
            grant::Column::Metadata,
            Expr::value(metadata_to_json(&credit_grant.metadata)),
        )
        .filter(scoped(tenant).add(grant::Column::Id.eq(credit_grant.id.as_str())))
        .filter(grant::Column::Remaining.eq(previous_remaining))
        .exec(conn)
        .await
        .map_err(db_error)?;
    if result.rows_affected != 1 {
        return Err(Error::internal(anyhow::anyhow!(
            "credit grant {} changed under a write that held its customer's lock",
            credit_grant.id
        )));
    }
    Ok(())
}

pub async fn find(
    conn: &impl Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<CreditGrant>> {
    grant::Entity::find()
        .filter(scoped(tenant).add(grant::Column::Id.eq(id)))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

/// Every grant of one customer: the working set for a summary or an application, O(grants).
pub async fn for_customer(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
) -> Result<Vec<CreditGrant>> {
    grant::Entity::find()
        .filter(scoped(tenant).add(grant::Column::CustomerId.eq(customer_id)))
        .order_by_asc(grant::Column::Id)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(to_domain)
        .collect()
}

pub async fn list(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: Option<&str>,
    request: &ListRequest,
) -> Result<KeysetPage<CreditGrant>> {
    let mut condition = scoped(tenant);
    if let Some(customer_id) = customer_id {
        condition = condition.add(grant::Column::CustomerId.eq(customer_id));
    }
    keyset_page::<grant::Entity>(conn, condition, grant::Column::Id, request)
        .await?
        .try_map(to_domain)
}

/// A grant whose expiry has passed but whose `credits_expired` entry is not written yet.
#[derive(Debug, Clone)]
pub struct DueForExpiry {
    pub tenant: Tenant,
    pub grant_id: String,
    pub customer_id: String,
}

/// Up to `limit` grants past `expires_at <= now` with no expiry entry yet, oldest expiry first.
pub async fn due_for_expiry(
    conn: &impl Connection,
    now: i64,
    limit: u64,
) -> Result<Vec<DueForExpiry>> {
    let rows = grant::Entity::find()
        .select_only()
        .columns([
            grant::Column::AccountId,
            grant::Column::Livemode,
            grant::Column::Id,
            grant::Column::CustomerId,
        ])
        .filter(grant::Column::ExpiryRecordedAt.is_null())
        .filter(grant::Column::VoidedAt.is_null())
        .filter(grant::Column::ExpiresAt.lte(now))
        // Grants on test clocks expire when their clock is advanced, not in real time.
        .filter(grant::Column::TestClock.is_null())
        .order_by_asc(grant::Column::ExpiresAt)
        .limit(limit)
        .into_tuple::<(String, bool, String, String)>()
        .all(conn)
        .await
        .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(
            |(account_id, livemode, grant_id, customer_id)| DueForExpiry {
                tenant: Tenant {
                    account_id,
                    livemode,
                },
                grant_id,
                customer_id,
            },
        )
        .collect())
}

fn scope_columns(scope: &Scope) -> (Option<String>, Option<String>) {
    match scope {
        Scope::Metered => (Some("metered".to_string()), None),
        Scope::Prices(prices) => (
            None,
            Some(serde_json::to_string(prices).unwrap_or_else(|_| "[]".into())),
        ),
    }
}

fn stored(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::internal(anyhow::anyhow!("stored credit grant {what}: {detail}"))
}

fn to_domain(row: grant::Model) -> Result<CreditGrant> {
    let scope = match (row.scope_price_type.as_deref(), row.scope_prices.as_deref()) {
        (Some("metered"), None) => Scope::Metered,
        (None, Some(prices)) => {
            Scope::Prices(serde_json::from_str(prices).map_err(|error| stored("scope", error))?)
        }
        _ => return Err(stored("scope", "neither or both forms")),
    };
    let category =
        Category::parse(&row.category, "category").map_err(|error| stored("category", error))?;
    Ok(CreditGrant {
        currency: Currency::try_from(row.currency).map_err(|error| stored("currency", error))?,
        metadata: metadata_from_json(&row.metadata)?,
        id: row.id,
        livemode: row.livemode,
        created: row.created,
        updated: row.updated,
        customer_id: row.customer_id,
        name: row.name,
        category,
        priority: row.priority,
        amount: row.amount,
        remaining: row.remaining,
        scope,
        effective_at: row.effective_at,
        expires_at: row.expires_at,
        voided_at: row.voided_at,
        expiry_recorded_at: row.expiry_recorded_at,
        test_clock: row.test_clock,
    })
}

/// A customer's grants together with what a summary or an application needs to know about the
/// customer itself, read in one statement.
#[derive(Debug, Clone)]
pub struct CustomerGrants {
    /// The customer's test clock's frozen time, when it is on one.
    pub clock_time: Option<i64>,
    /// Whether credits were already applied to the invoice line asked about.
    pub line_applied: bool,
    /// Whether the customer may have `active` holds: `false` only when a read that looked found
    /// none, so the holds need no read of their own.
    pub may_have_holds: bool,
    /// Every grant of the customer, oldest first.
    pub grants: Vec<CreditGrant>,
}

/// Whether customer `c` has an `active` hold (the index `credit_holds_by_customer` answers it),
/// so that a read of its grants can spare the read of its holds.
const MAY_HAVE_HOLDS: &str = "EXISTS (SELECT 1 FROM credit_holds h \
     WHERE h.account_id = c.account_id AND h.livemode = c.livemode AND h.customer_id = c.id \
     AND h.status = 'active') AS may_have_holds";

/// The invoice line whose earlier application [`customer_grants`] should look for.
pub type InvoiceLine<'a> = (&'a str, &'a str);

/// The customer's grants, its test clock's time and (given a line) whether that line already
/// has an application, in one statement; `None` when this tenant has no such customer.
pub async fn customer_grants(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    line: Option<InvoiceLine<'_>>,
) -> Result<Option<CustomerGrants>> {
    read_customer(conn, tenant, customer_id, line, Customers::Any).await
}

/// Which customers a read of one finds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Customers {
    Any,
    /// Not deleted: a deleted customer takes no more writes.
    Live,
}

async fn read_customer(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    line: Option<InvoiceLine<'_>>,
    customers: Customers,
) -> Result<Option<CustomerGrants>> {
    let live = match customers {
        Customers::Any => "",
        Customers::Live => " AND c.deleted_at IS NULL",
    };
    let line_applied = match line {
        Some(_) => {
            "EXISTS (SELECT 1 FROM credit_applications a WHERE a.account_id = c.account_id \
             AND a.livemode = c.livemode AND a.invoice = $4 AND a.invoice_line_item = $5)"
        }
        None => "FALSE",
    };
    let sql = format!(
        "SELECT tc.frozen_time AS clock_time, {line_applied} AS line_applied, \
         {MAY_HAVE_HOLDS}, {columns} \
         FROM customers c \
         LEFT JOIN test_clocks tc ON tc.id = c.test_clock \
         LEFT JOIN credit_grants g ON g.account_id = c.account_id AND g.livemode = c.livemode \
         AND g.customer_id = c.id \
         WHERE c.id = $1 AND c.account_id = $2 AND c.livemode = $3{live} \
         ORDER BY g.id",
        columns = JOINED_GRANT_COLUMNS.as_str(),
    );
    let mut values: Vec<sea_orm::Value> = vec![
        customer_id.into(),
        tenant.account_id.as_str().into(),
        tenant.livemode.into(),
    ];
    if let Some((invoice, invoice_line_item)) = line {
        values.push(invoice.into());
        values.push(invoice_line_item.into());
    }
    read_customer_grants(conn, sql, values).await
}

/// [`customer_grants`] as of `as_of`, in one statement: with each grant, its running remainder
/// after its last entry recorded at or before `as_of` (`None`: it had none), found by one
/// lookup of the index `credit_balance_transactions_as_of` (migration 11) per grant.
pub async fn customer_grants_as_of(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    as_of: i64,
) -> Result<Option<(CustomerGrants, Vec<Option<i64>>)>> {
    let sql = format!(
        "SELECT tc.frozen_time AS clock_time, FALSE AS line_applied, TRUE AS may_have_holds, \
         {columns}, \
           (SELECT e.grant_remaining_after FROM credit_balance_transactions e \
            WHERE e.account_id = g.account_id AND e.livemode = g.livemode \
              AND e.credit_grant_id = g.id AND e.created <= $4 \
            ORDER BY {last} LIMIT 1) AS remaining_at \
         FROM customers c \
         LEFT JOIN test_clocks tc ON tc.id = c.test_clock \
         LEFT JOIN credit_grants g ON g.account_id = c.account_id AND g.livemode = c.livemode \
         AND g.customer_id = c.id \
         WHERE c.id = $1 AND c.account_id = $2 AND c.livemode = $3 \
         ORDER BY g.id",
        columns = JOINED_GRANT_COLUMNS.as_str(),
        last = super::credit_balance_transactions::ledger_order_last_first("e"),
    );
    let values: Vec<sea_orm::Value> = vec![
        customer_id.into(),
        tenant.account_id.as_str().into(),
        tenant.livemode.into(),
        as_of.into(),
    ];
    let mut remaining_at = Vec::new();
    let found = read_grant_rows(conn, sql, values, |row| {
        remaining_at.push(
            row.try_get::<Option<i64>>("", "remaining_at")
                .map_err(db_error)?,
        );
        Ok(())
    })
    .await?;
    Ok(found.map(|found| (found, remaining_at)))
}

/// [`customer_grants`] inside a write transaction, with the customer locked for the rest of it
/// so that writes for one customer happen one at a time. On SQLite the single writer
/// connection already does this. On PostgreSQL the customer row is locked first and read
/// after, inside `creditd_locked_customer_grants` (migrations 6, 8 and 14): one round trip, and the read
/// takes its snapshot after the lock is granted, so it sees the previous holder's writes.
pub async fn lock_customer_grants(
    tx: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    line: Option<InvoiceLine<'_>>,
) -> Result<Option<CustomerGrants>> {
    if super::backend_of(tx) != sea_orm::DbBackend::Postgres {
        // A deleted customer takes no more writes (the PostgreSQL function checks the same).
        return read_customer(tx, tenant, customer_id, line, Customers::Live).await;
    }
    let sql = format!(
        "SELECT f.out_clock_time AS clock_time, f.out_line_applied AS line_applied, \
         f.out_may_have_holds AS may_have_holds, {columns} \
         FROM creditd_locked_customer_grants($1, $2, $3, $4, $5) f \
         ORDER BY (f.out_grant).id",
        columns = RETURNED_GRANT_COLUMNS.as_str(),
    );
    let values: Vec<sea_orm::Value> = vec![
        tenant.account_id.as_str().into(),
        tenant.livemode.into(),
        customer_id.into(),
        line.map(|(invoice, _)| invoice).into(),
        line.map(|(_, item)| item).into(),
    ];
    read_customer_grants(tx, sql, values).await
}

static JOINED_GRANT_COLUMNS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| grant_columns("g"));
static RETURNED_GRANT_COLUMNS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| grant_columns("(f.out_grant)"));

/// Every grant column of `source` (a table alias or a row value), as `g_<column>`.
fn grant_columns(source: &str) -> String {
    use sea_orm::{IdenStatic, Iterable};
    grant::Column::iter()
        .map(|column| {
            let name = column.as_str();
            format!("{source}.{name} AS g_{name}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs a query of `clock_time`, `line_applied`, `may_have_holds` and `g_`-prefixed grant columns (one row per
/// grant, or one row of null grant columns for a customer without grants; none when there is
/// no such customer).
async fn read_customer_grants(
    conn: &impl Connection,
    sql: String,
    values: Vec<sea_orm::Value>,
) -> Result<Option<CustomerGrants>> {
    read_grant_rows(conn, sql, values, |_| Ok(())).await
}

/// [`read_customer_grants`], handing each grant's row to `extra` (in grant order) for the
/// columns a caller added.
async fn read_grant_rows(
    conn: &impl Connection,
    sql: String,
    values: Vec<sea_orm::Value>,
    mut extra: impl FnMut(&sea_orm::QueryResult) -> Result<()>,
) -> Result<Option<CustomerGrants>> {
    use sea_orm::Statement;
    let backend = super::backend_of(conn);
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .map_err(db_error)?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let clock_time = first
        .try_get::<Option<i64>>("", "clock_time")
        .map_err(db_error)?;
    let line_applied = first
        .try_get::<bool>("", "line_applied")
        .map_err(db_error)?;
    let may_have_holds = first
        .try_get::<bool>("", "may_have_holds")
        .map_err(db_error)?;
    let mut grants = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(grant) = grant_in_row(row)? {
            grants.push(grant);
            extra(row)?;
        }
    }
    Ok(Some(CustomerGrants {
        clock_time,
        line_applied,
        may_have_holds,
        grants,
    }))
}

/// The grant in a row of `g_`-prefixed grant columns; `None` when they are null (a customer
/// without grants, left-joined).
fn grant_in_row(row: &sea_orm::QueryResult) -> Result<Option<CreditGrant>> {
    use sea_orm::FromQueryResult;
    if row
        .try_get::<Option<String>>("g_", "id")
        .map_err(db_error)?
        .is_none()
    {
        return Ok(None);
    }
    to_domain(grant::Model::from_query_result(row, "g_").map_err(db_error)?).map(Some)
}

/// [`lock_customer_grants`] for several customers at once (a batch of applications): each
/// customer's grants and test clock time, by customer ID; a customer that does not exist or was
/// deleted is absent. On PostgreSQL one statement locks the customers' rows in ID order (so
/// two batches can never wait on each other in a cycle) and a second reads, its snapshot taken
/// after every lock was granted. On SQLite the single writer connection serializes writes and
/// one statement reads.
pub async fn lock_customers_grants(
    tx: &impl Connection,
    tenant: &Tenant,
    customer_ids: &[&str],
) -> Result<BTreeMap<String, CustomerGrants>> {
    use sea_orm::Statement;
    let backend = super::backend_of(tx);
    let mut found = BTreeMap::new();
    let mut customer_ids = customer_ids.to_vec();
    customer_ids.sort_unstable();
    customer_ids.dedup();
    for chunk in customer_ids.chunks(1_000) {
        let mut values: Vec<sea_orm::Value> =
            vec![tenant.account_id.as_str().into(), tenant.livemode.into()];
        values.extend(chunk.iter().map(|id| sea_orm::Value::from(*id)));
        let placeholders: Vec<String> = (3..values.len() + 1).map(|n| format!("${n}")).collect();
        let live = format!(
            "c.account_id = $1 AND c.livemode = $2 AND c.deleted_at IS NULL AND c.id IN ({})",
            placeholders.join(", ")
        );
        if backend == sea_orm::DbBackend::Postgres {
            let lock =
                format!("SELECT c.id FROM customers c WHERE {live} ORDER BY c.id FOR UPDATE");
            tx.query_all_raw(Statement::from_sql_and_values(
                backend,
                lock,
                values.clone(),
            ))
            .await
            .map_err(db_error)?;
        }
        let read = format!(
            "SELECT c.id AS customer_id, tc.frozen_time AS clock_time, {MAY_HAVE_HOLDS}, \
             {columns} \
             FROM customers c \
             LEFT JOIN test_clocks tc ON tc.id = c.test_clock \
             LEFT JOIN credit_grants g ON g.account_id = c.account_id \
             AND g.livemode = c.livemode AND g.customer_id = c.id \
             WHERE {live} ORDER BY c.id, g.id",
            columns = JOINED_GRANT_COLUMNS.as_str(),
        );
        let rows = tx
            .query_all_raw(Statement::from_sql_and_values(backend, read, values))
            .await
            .map_err(db_error)?;
        for row in &rows {
            let customer_id: String = row.try_get("", "customer_id").map_err(db_error)?;
            let customer = match found.entry(customer_id) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => entry.insert(CustomerGrants {
                    clock_time: row
                        .try_get::<Option<i64>>("", "clock_time")
                        .map_err(db_error)?,
                    line_applied: false,
                    may_have_holds: row
                        .try_get::<bool>("", "may_have_holds")
                        .map_err(db_error)?,
                    grants: Vec::new(),
                }),
            };
            if let Some(grant) = grant_in_row(row)? {
                customer.grants.push(grant);
            }
        }
    }
    Ok(found)
}
