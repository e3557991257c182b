//! Credit holds (migration 12): what each reserves, per grant, as a JSON column.

use std::collections::HashMap;

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use super::credit_grants::CustomerGrants;
use super::entities::credit_hold as hold;
use super::{Connection, KeysetPage, db_error, insert_row, keyset_page};
use crate::domain::credit_hold::{CreditHold, HoldFilter, HoldStatus, Reservation};
use crate::domain::pagination::ListRequest;
use crate::domain::{Currency, Tenant};
use crate::error::{Error, Result};

fn scoped(tenant: &Tenant) -> Condition {
    Condition::all()
        .add(hold::Column::AccountId.eq(tenant.account_id.as_str()))
        .add(hold::Column::Livemode.eq(tenant.livemode))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|error| Error::internal(anyhow::Error::from(error)))
}

pub async fn insert(
    conn: &impl Connection,
    tenant: &Tenant,
    credit_hold: &CreditHold,
) -> Result<()> {
    insert_row(
        conn,
        hold::ActiveModel {
            id: Set(credit_hold.id.clone()),
            account_id: Set(tenant.account_id.clone()),
            livemode: Set(tenant.livemode),
            customer_id: Set(credit_hold.customer_id.clone()),
            currency: Set(credit_hold.currency.to_string()),
            amount: Set(credit_hold.amount),
            price: Set(to_json(&credit_hold.price)?),
            status: Set(credit_hold.status.as_str().to_string()),
            reservations: Set(to_json(&credit_hold.reservations)?),
            captured_amount: Set(credit_hold.captured_amount),
            lapsed_amount: Set(credit_hold.lapsed_amount),
            invoice: Set(credit_hold.invoice.clone()),
            invoice_line_item: Set(credit_hold.invoice_line_item.clone()),
            created: Set(credit_hold.created),
            expires_at: Set(credit_hold.expires_at),
            ended_at: Set(credit_hold.ended_at),
            test_clock: Set(credit_hold.test_clock.clone()),
        },
    )
    .await
}

/// Writes a hold's mutable state. Only an `active` row changes: an ended hold never does.
pub async fn save(conn: &impl Connection, tenant: &Tenant, credit_hold: &CreditHold) -> Result<()> {
    let result = hold::Entity::update_many()
        .col_expr(
            hold::Column::Status,
            Expr::value(credit_hold.status.as_str()),
        )
        .col_expr(
            hold::Column::Reservations,
            Expr::value(to_json(&credit_hold.reservations)?),
        )
        .col_expr(
            hold::Column::CapturedAmount,
            Expr::value(credit_hold.captured_amount),
        )
        .col_expr(
            hold::Column::LapsedAmount,
            Expr::value(credit_hold.lapsed_amount),
        )
        .col_expr(
            hold::Column::Invoice,
            Expr::value(credit_hold.invoice.clone()),
        )
        .col_expr(
            hold::Column::InvoiceLineItem,
            Expr::value(credit_hold.invoice_line_item.clone()),
        )
        .col_expr(hold::Column::EndedAt, Expr::value(credit_hold.ended_at))
        .filter(scoped(tenant).add(hold::Column::Id.eq(credit_hold.id.as_str())))
        .filter(hold::Column::Status.eq(HoldStatus::Active.as_str()))
        .exec(conn)
        .await
        .map_err(db_error)?;
    if result.rows_affected != 1 {
        return Err(Error::internal(anyhow::anyhow!(
            "credit hold {} changed under a write that held its customer's lock",
            credit_hold.id
        )));
    }
    Ok(())
}

pub async fn find(conn: &impl Connection, tenant: &Tenant, id: &str) -> Result<Option<CreditHold>> {
    hold::Entity::find()
        .filter(scoped(tenant).add(hold::Column::Id.eq(id)))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

/// The customer's `active` holds (live or past expiry but not yet swept), oldest first.
pub async fn active_for_customer(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
) -> Result<Vec<CreditHold>> {
    hold::Entity::find()
        .filter(
            scoped(tenant)
                .add(hold::Column::CustomerId.eq(customer_id))
                .add(hold::Column::Status.eq(HoldStatus::Active.as_str())),
        )
        .order_by_asc(hold::Column::Id)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// [`active_for_customer`] after a read of the customer's grants (`found`), without a read of
/// its own when that one saw no active hold.
pub async fn active_for_found(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    found: &CustomerGrants,
) -> Result<Vec<CreditHold>> {
    if !found.may_have_holds {
        return Ok(Vec::new());
    }
    active_for_customer(conn, tenant, customer_id).await
}

/// [`active_for_customer`] for several customers in one query, by customer ID (a customer
/// without active holds is absent).
pub async fn active_for_customers(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_ids: &[&str],
) -> Result<HashMap<String, Vec<CreditHold>>> {
    let mut found: HashMap<String, Vec<CreditHold>> = HashMap::new();
    for chunk in customer_ids.chunks(1_000) {
        let rows = hold::Entity::find()
            .filter(
                scoped(tenant)
                    .add(hold::Column::CustomerId.is_in(chunk.iter().copied()))
                    .add(hold::Column::Status.eq(HoldStatus::Active.as_str())),
            )
            .order_by_asc(hold::Column::Id)
            .all(conn)
            .await
            .map_err(db_error)?;
        for row in rows {
            let hold = to_domain(row)?;
            found
                .entry(hold.customer_id.clone())
                .or_default()
                .push(hold);
        }
    }
    Ok(found)
}

pub async fn list(
    conn: &impl Connection,
    tenant: &Tenant,
    filter: &HoldFilter,
    request: &ListRequest,
) -> Result<KeysetPage<CreditHold>> {
    let mut condition = scoped(tenant);
    if let Some(customer_id) = &filter.customer_id {
        condition = condition.add(hold::Column::CustomerId.eq(customer_id.as_str()));
    }
    if let Some(status) = filter.status {
        condition = condition.add(hold::Column::Status.eq(status.as_str()));
    }
    keyset_page::<hold::Entity>(conn, condition, hold::Column::Id, request)
        .await?
        .try_map(to_domain)
}

/// An active hold past its expiry, for the sweeper.
#[derive(Debug, Clone)]
pub struct DueHold {
    pub tenant: Tenant,
    pub hold_id: String,
    pub customer_id: String,
}

/// Up to `limit` active holds with `expires_at <= now`, soonest expiry first. Holds of customers
/// on test clocks stop reserving at their expiry in the clock's time and are not swept.
pub async fn due_for_expiry(conn: &impl Connection, now: i64, limit: u64) -> Result<Vec<DueHold>> {
    let rows = hold::Entity::find()
        .select_only()
        .columns([
            hold::Column::AccountId,
            hold::Column::Livemode,
            hold::Column::Id,
            hold::Column::CustomerId,
        ])
        .filter(hold::Column::Status.eq(HoldStatus::Active.as_str()))
        .filter(hold::Column::ExpiresAt.lte(now))
        .filter(hold::Column::TestClock.is_null())
        .order_by_asc(hold::Column::ExpiresAt)
        .limit(limit)
        .into_tuple::<(String, bool, String, String)>()
        .all(conn)
        .await
        .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|(account_id, livemode, hold_id, customer_id)| DueHold {
            tenant: Tenant {
                account_id,
                livemode,
            },
            hold_id,
            customer_id,
        })
        .collect())
}

/// For the audit: every hold in `scope` (everything when `None`) that is `active` or still
/// lists reservations (an ended hold never should), with its owner, oldest first.
pub async fn reserving(
    conn: &impl Connection,
    scope: Option<&Tenant>,
) -> Result<Vec<(Tenant, CreditHold)>> {
    let mut condition = Condition::any()
        .add(hold::Column::Status.eq(HoldStatus::Active.as_str()))
        .add(hold::Column::Reservations.ne("[]"));
    if let Some(tenant) = scope {
        condition = scoped(tenant).add(condition);
    }
    hold::Entity::find()
        .filter(condition)
        .order_by_asc(hold::Column::Id)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|row| {
            let tenant = Tenant {
                account_id: row.account_id.clone(),
                livemode: row.livemode,
            };
            Ok((tenant, to_domain(row)?))
        })
        .collect()
}

fn stored(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::internal(anyhow::anyhow!("stored credit hold {what}: {detail}"))
}

fn to_domain(row: hold::Model) -> Result<CreditHold> {
    let reservations: Vec<Reservation> =
        serde_json::from_str(&row.reservations).map_err(|error| stored("reservations", error))?;
    Ok(CreditHold {
        currency: Currency::try_from(row.currency).map_err(|error| stored("currency", error))?,
        price: serde_json::from_str(&row.price).map_err(|error| stored("price", error))?,
        status: HoldStatus::parse(&row.status).ok_or_else(|| stored("status", &row.status))?,
        reservations,
        id: row.id,
        livemode: row.livemode,
        customer_id: row.customer_id,
        amount: row.amount,
        captured_amount: row.captured_amount,
        lapsed_amount: row.lapsed_amount,
        invoice: row.invoice,
        invoice_line_item: row.invoice_line_item,
        created: row.created,
        expires_at: row.expires_at,
        ended_at: row.ended_at,
        test_clock: row.test_clock,
    })
}
