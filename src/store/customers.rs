//! Customers and their materialized per-currency balances.

use std::collections::{BTreeMap, HashMap};

use sea_orm::sea_query::{Expr, LockType};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect, Set};

use super::entities::{customer, customer_balance};
use super::{
    Connection, KeysetPage, db_error, insert_row, keyset_page, metadata_from_json,
    metadata_to_json, time_condition,
};
use crate::domain::customer::{Customer, CustomerFilter};
use crate::domain::pagination::ListRequest;
use crate::domain::{Currency, Tenant};
use crate::error::{Error, Result};

pub async fn insert(conn: &impl Connection, tenant: &Tenant, customer: &Customer) -> Result<()> {
    insert_row(
        conn,
        customer::ActiveModel {
            id: Set(customer.id.clone()),
            account_id: Set(tenant.account_id.clone()),
            livemode: Set(tenant.livemode),
            created: Set(customer.created),
            name: Set(customer.name.clone()),
            email: Set(customer.email.clone()),
            description: Set(customer.description.clone()),
            phone: Set(customer.phone.clone()),
            currency: Set(customer.currency.as_ref().map(|c| c.to_string())),
            metadata: Set(metadata_to_json(&customer.metadata)),
            test_clock: Set(customer.test_clock.clone()),
            deleted_at: Set(None),
        },
    )
    .await?;
    Ok(())
}

/// Writes the descriptive fields and metadata (never balances or currency).
pub async fn update_details(
    conn: &impl Connection,
    tenant: &Tenant,
    customer: &Customer,
) -> Result<()> {
    customer::Entity::update_many()
        .col_expr(customer::Column::Name, Expr::value(customer.name.clone()))
        .col_expr(customer::Column::Email, Expr::value(customer.email.clone()))
        .col_expr(
            customer::Column::Description,
            Expr::value(customer.description.clone()),
        )
        .col_expr(customer::Column::Phone, Expr::value(customer.phone.clone()))
        .col_expr(
            customer::Column::Metadata,
            Expr::value(metadata_to_json(&customer.metadata)),
        )
        .filter(scoped(tenant).add(customer::Column::Id.eq(customer.id.as_str())))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

fn scoped(tenant: &Tenant) -> Condition {
    Condition::all()
        .add(customer::Column::AccountId.eq(tenant.account_id.as_str()))
        .add(customer::Column::Livemode.eq(tenant.livemode))
}

/// The customer with its balances, or `None` when this tenant has no such customer.
pub async fn find(conn: &impl Connection, tenant: &Tenant, id: &str) -> Result<Option<Customer>> {
    let Some(row) = customer::Entity::find()
        .filter(scoped(tenant).add(customer::Column::Id.eq(id)))
        .one(conn)
        .await
        .map_err(db_error)?
    else {
        return Ok(None);
    };
    let mut balances = load_balances(conn, std::slice::from_ref(&row.id)).await?;
    Ok(Some(to_domain(
        row,
        balances.remove(id).unwrap_or_default(),
    )?))
}

/// What a write needs to know about the customer it locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedCustomer {
    pub currency: Option<String>,
    pub test_clock: Option<String>,
}

/// Locks the customer row for the rest of the transaction (PostgreSQL `FOR UPDATE`) so that
/// writes for one customer happen one at a time; `None` if this tenant has no such customer or
/// it was deleted (a deleted customer takes no more writes).
/// SeaORM leaves the lock clause out on SQLite, where the single writer connection already
/// serializes every write transaction.
pub async fn lock(
    conn: &impl Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<LockedCustomer>> {
    lock_where(
        conn,
        scoped(tenant).add(customer::Column::DeletedAt.is_null()),
        id,
    )
    .await
}

/// Like [`lock`], but a deleted customer is locked too: for work the system does on its own
/// (grant expiry, clock advance and clock deletion) on a ledger that outlives the customer.
pub async fn lock_including_deleted(
    conn: &impl Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<LockedCustomer>> {
    lock_where(conn, scoped(tenant), id).await
}

async fn lock_where(
    conn: &impl Connection,
    condition: Condition,
    id: &str,
) -> Result<Option<LockedCustomer>> {
    let row = customer::Entity::find()
        .select_only()
        .column(customer::Column::Currency)
        .column(customer::Column::TestClock)
        .filter(condition.add(customer::Column::Id.eq(id)))
        .lock(LockType::Update)
        .into_tuple::<(Option<String>, Option<String>)>()
        .one(conn)
        .await
        .map_err(db_error)?;
    Ok(row.map(|(currency, test_clock)| LockedCustomer {
        currency,
        test_clock,
    }))
}

/// Marks a live customer deleted; false if there was none to delete.
pub async fn mark_deleted(
    conn: &impl Connection,
    tenant: &Tenant,
    id: &str,
    deleted_at: i64,
) -> Result<bool> {
    let updated = customer::Entity::update_many()
        .col_expr(customer::Column::DeletedAt, Expr::value(deleted_at))
        .filter(
            scoped(tenant)
                .add(customer::Column::Id.eq(id))
                .add(customer::Column::DeletedAt.is_null()),
        )
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(updated.rows_affected == 1)
}

/// Whether this tenant has the customer, deleted or not: a deleted customer's ledger stays
/// readable.
pub async fn exists(conn: &impl Connection, tenant: &Tenant, id: &str) -> Result<bool> {
    Ok(customer::Entity::find()
        .select_only()
        .column(customer::Column::Id)
        .filter(scoped(tenant).add(customer::Column::Id.eq(id)))
        .into_tuple::<String>()
        .one(conn)
        .await
        .map_err(db_error)?
        .is_some())
}

/// Sets the customer's currency if it has none yet (the first balance transaction does this).
pub async fn set_currency_if_unset(
    conn: &impl Connection,
    id: &str,
    currency: &Currency,
) -> Result<()> {
    customer::Entity::update_many()
        .col_expr(customer::Column::Currency, Expr::value(currency.as_str()))
        .filter(customer::Column::Id.eq(id))
        .filter(customer::Column::Currency.is_null())
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The materialized balance and chain length for one customer and currency.
pub async fn balance(
    conn: &impl Connection,
    customer_id: &str,
    currency: &Currency,
) -> Result<Option<(i64, i64)>> {
    Ok(
        customer_balance::Entity::find_by_id((customer_id.to_string(), currency.to_string()))
            .one(conn)
            .await
            .map_err(db_error)?
            .map(|row| (row.balance, row.transaction_count)),
    )
}

/// Stores the balance after a new ledger entry.
pub async fn save_balance(
    conn: &impl Connection,
    customer_id: &str,
    currency: &Currency,
    balance: i64,
    transaction_count: i64,
) -> Result<()> {
    if transaction_count == 1 {
        return insert_row(
            conn,
            customer_balance::ActiveModel {
                customer_id: Set(customer_id.to_string()),
                currency: Set(currency.to_string()),
                balance: Set(balance),
                transaction_count: Set(transaction_count),
            },
        )
        .await;
    }
    let updated = customer_balance::Entity::update_many()
        .col_expr(customer_balance::Column::Balance, Expr::value(balance))
        .col_expr(
            customer_balance::Column::TransactionCount,
            Expr::value(transaction_count),
        )
        .filter(customer_balance::Column::CustomerId.eq(customer_id))
        .filter(customer_balance::Column::Currency.eq(currency.as_str()))
        .exec(conn)
        .await
        .map_err(db_error)?;
    if updated.rows_affected != 1 {
        return Err(Error::internal(anyhow::anyhow!(
            "customer {customer_id} has no {currency} balance row to update"
        )));
    }
    Ok(())
}

pub async fn list(
    conn: &impl Connection,
    tenant: &Tenant,
    filter: &CustomerFilter,
    request: &ListRequest,
) -> Result<KeysetPage<Customer>> {
    let mut condition = scoped(tenant)
        .add(customer::Column::DeletedAt.is_null())
        .add(time_condition(customer::Column::Created, &filter.created));
    condition = match &filter.test_clock {
        Some(clock) => condition.add(customer::Column::TestClock.eq(clock.as_str())),
        None => condition.add(customer::Column::TestClock.is_null()),
    };
    if let Some(email) = &filter.email {
        condition = condition.add(customer::Column::Email.eq(email.as_str()));
    }
    let listed =
        keyset_page::<customer::Entity>(conn, condition, customer::Column::Id, request).await?;
    let ids: Vec<String> = listed.page.data.iter().map(|row| row.id.clone()).collect();
    let mut balances = load_balances(conn, &ids).await?;
    listed.try_map(|row| {
        let row_balances = balances.remove(&row.id).unwrap_or_default();
        to_domain(row, row_balances)
    })
}

async fn load_balances(
    conn: &impl Connection,
    customer_ids: &[String],
) -> Result<HashMap<String, BTreeMap<Currency, i64>>> {
    let mut by_customer: HashMap<String, BTreeMap<Currency, i64>> = HashMap::new();
    if customer_ids.is_empty() {
        return Ok(by_customer);
    }
    let rows = customer_balance::Entity::find()
        .filter(customer_balance::Column::CustomerId.is_in(customer_ids.iter().map(String::as_str)))
        .all(conn)
        .await
        .map_err(db_error)?;
    for row in rows {
        let currency = Currency::try_from(row.currency)
            .map_err(|error| Error::internal(anyhow::anyhow!("stored currency: {error}")))?;
        by_customer
            .entry(row.customer_id)
            .or_default()
            .insert(currency, row.balance);
    }
    Ok(by_customer)
}

fn to_domain(row: customer::Model, balances: BTreeMap<Currency, i64>) -> Result<Customer> {
    let currency = row
        .currency
        .map(Currency::try_from)
        .transpose()
        .map_err(|error| Error::internal(anyhow::anyhow!("stored currency: {error}")))?;
    Ok(Customer {
        metadata: metadata_from_json(&row.metadata)?,
        id: row.id,
        livemode: row.livemode,
        created: row.created,
        name: row.name,
        email: row.email,
        description: row.description,
        phone: row.phone,
        currency,
        balances,
        test_clock: row.test_clock,
        deleted: row.deleted_at.is_some(),
    })
}
