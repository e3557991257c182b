//! Test clocks, the customers attached to them, and deleting a clock with everything on it.

use sea_orm::sea_query::{Expr, LockType};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect, Set};

use super::entities::{
    credit_application, credit_balance_transaction, credit_grant, customer, customer_balance,
    customer_balance_transaction, test_clock,
};
use super::{Connection, KeysetPage, db_error, insert_row, keyset_page};
use crate::domain::Tenant;
use crate::domain::pagination::ListRequest;
use crate::domain::test_clock::{ClockStatus, TestClock};
use crate::error::{Error, Result};

fn scoped(tenant: &Tenant) -> Condition {
    Condition::all()
        .add(test_clock::Column::AccountId.eq(tenant.account_id.as_str()))
        .add(test_clock::Column::Livemode.eq(tenant.livemode))
}

pub async fn insert(conn: &impl Connection, tenant: &Tenant, clock: &TestClock) -> Result<()> {
    insert_row(
        conn,
        test_clock::ActiveModel {
            id: Set(clock.id.clone()),
            account_id: Set(tenant.account_id.clone()),
            livemode: Set(tenant.livemode),
            created: Set(clock.created),
            name: Set(clock.name.clone()),
            frozen_time: Set(clock.frozen_time),
            status: Set(clock.status.as_str().to_string()),
            target_frozen_time: Set(clock.target_frozen_time),
            deletes_after: Set(clock.deletes_after),
        },
    )
    .await?;
    Ok(())
}

pub async fn find(conn: &impl Connection, tenant: &Tenant, id: &str) -> Result<Option<TestClock>> {
    test_clock::Entity::find()
        .filter(scoped(tenant).add(test_clock::Column::Id.eq(id)))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

/// Locks the clock's row for the rest of the transaction (PostgreSQL `FOR UPDATE`) and reads
/// it: a locking read returns the row as the lock holder before us committed it. SeaORM leaves
/// the lock clause out on SQLite, whose single writer already serializes writes.
pub async fn lock(conn: &impl Connection, tenant: &Tenant, id: &str) -> Result<Option<TestClock>> {
    test_clock::Entity::find()
        .filter(scoped(tenant).add(test_clock::Column::Id.eq(id)))
        .lock(LockType::Update)
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

/// The clock's frozen time (any tenant: the caller already holds the customer that names it).
pub async fn frozen_time(conn: &impl Connection, id: &str) -> Result<i64> {
    test_clock::Entity::find_by_id(id.to_string())
        .select_only()
        .column(test_clock::Column::FrozenTime)
        .into_tuple::<i64>()
        .one(conn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Error::internal(anyhow::anyhow!("customer names missing test clock {id}")))
}

pub async fn list(
    conn: &impl Connection,
    tenant: &Tenant,
    request: &ListRequest,
) -> Result<KeysetPage<TestClock>> {
    keyset_page::<test_clock::Entity>(conn, scoped(tenant), test_clock::Column::Id, request)
        .await?
        .try_map(to_domain)
}

/// Writes the clock's time and status.
pub async fn save_state(conn: &impl Connection, clock: &TestClock) -> Result<()> {
    test_clock::Entity::update_many()
        .col_expr(
            test_clock::Column::FrozenTime,
            Expr::value(clock.frozen_time),
        )
        .col_expr(
            test_clock::Column::Status,
            Expr::value(clock.status.as_str()),
        )
        .col_expr(
            test_clock::Column::TargetFrozenTime,
            Expr::value(clock.target_frozen_time),
        )
        .filter(test_clock::Column::Id.eq(clock.id.as_str()))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Clocks left `advancing` (a crash, or another replica still at work).
pub async fn advancing(conn: &impl Connection) -> Result<Vec<(Tenant, String)>> {
    let rows = test_clock::Entity::find()
        .select_only()
        .columns([
            test_clock::Column::AccountId,
            test_clock::Column::Livemode,
            test_clock::Column::Id,
        ])
        .filter(test_clock::Column::Status.eq(ClockStatus::Advancing.as_str()))
        .into_tuple::<(String, bool, String)>()
        .all(conn)
        .await
        .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|(account_id, livemode, id)| {
            (
                Tenant {
                    account_id,
                    livemode,
                },
                id,
            )
        })
        .collect())
}

/// IDs of the customers attached to a clock, in creation order.
pub async fn customers_on(
    conn: &impl Connection,
    tenant: &Tenant,
    clock_id: &str,
) -> Result<Vec<String>> {
    use sea_orm::QueryOrder;
    customer::Entity::find()
        .select_only()
        .column(customer::Column::Id)
        .filter(customer::Column::AccountId.eq(tenant.account_id.as_str()))
        .filter(customer::Column::Livemode.eq(tenant.livemode))
        .filter(customer::Column::TestClock.eq(clock_id))
        .order_by_asc(customer::Column::Id)
        .into_tuple::<String>()
        .all(conn)
        .await
        .map_err(db_error)
}

/// Attaches a customer (and its grants) to a clock, for good.
pub async fn attach_customer(
    conn: &impl Connection,
    customer_id: &str,
    clock_id: &str,
) -> Result<()> {
    customer::Entity::update_many()
        .col_expr(customer::Column::TestClock, Expr::value(clock_id))
        .filter(customer::Column::Id.eq(customer_id))
        .filter(customer::Column::TestClock.is_null())
        .exec(conn)
        .await
        .map_err(db_error)?;
    credit_grant::Entity::update_many()
        .col_expr(credit_grant::Column::TestClock, Expr::value(clock_id))
        .filter(credit_grant::Column::CustomerId.eq(customer_id))
        .exec(conn)
        .await
        .map_err(db_error)?;
    credit_balance_transaction::Entity::update_many()
        .col_expr(
            credit_balance_transaction::Column::TestClock,
            Expr::value(clock_id),
        )
        .filter(credit_balance_transaction::Column::CustomerId.eq(customer_id))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Deletes the clock and every object of the customers on it.
pub async fn delete_with_customers(
    conn: &impl Connection,
    tenant: &Tenant,
    clock_id: &str,
    customer_ids: &[String],
) -> Result<()> {
    if !customer_ids.is_empty() {
        let ids = || customer_ids.iter().map(String::as_str);
        credit_application::Entity::delete_many()
            .filter(credit_application::Column::CustomerId.is_in(ids()))
            .exec(conn)
            .await
            .map_err(db_error)?;
        credit_balance_transaction::Entity::delete_many()
            .filter(credit_balance_transaction::Column::CustomerId.is_in(ids()))
            .exec(conn)
            .await
            .map_err(db_error)?;
        credit_grant::Entity::delete_many()
            .filter(credit_grant::Column::CustomerId.is_in(ids()))
            .exec(conn)
            .await
            .map_err(db_error)?;
        customer_balance_transaction::Entity::delete_many()
            .filter(customer_balance_transaction::Column::CustomerId.is_in(ids()))
            .exec(conn)
            .await
            .map_err(db_error)?;
        customer_balance::Entity::delete_many()
            .filter(customer_balance::Column::CustomerId.is_in(ids()))
            .exec(conn)
            .await
            .map_err(db_error)?;
        customer::Entity::delete_many()
            .filter(customer::Column::Id.is_in(ids()))
            .exec(conn)
            .await
            .map_err(db_error)?;
    }
    test_clock::Entity::delete_many()
        .filter(scoped(tenant).add(test_clock::Column::Id.eq(clock_id)))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

fn to_domain(row: test_clock::Model) -> Result<TestClock> {
    let status = ClockStatus::parse(&row.status)
        .ok_or_else(|| Error::internal(anyhow::anyhow!("stored clock status {}", row.status)))?;
    Ok(TestClock {
        id: row.id,
        livemode: row.livemode,
        created: row.created,
        name: row.name,
        frozen_time: row.frozen_time,
        status,
        target_frozen_time: row.target_frozen_time,
        deletes_after: row.deletes_after,
    })
}
