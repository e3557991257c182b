//! Billing alerts.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect, Set};

use super::entities::billing_alert as alert;
use super::{Connection, KeysetPage, db_error, insert_row, keyset_page};
use crate::domain::alert::{
    AlertFilter, AlertStatus, CREDIT_BALANCE_THRESHOLD, CreditBalanceAlert,
};
use crate::domain::credit_grant::Scope;
use crate::domain::pagination::ListRequest;
use crate::domain::{Currency, Tenant};
use crate::error::{Error, Result};

fn scoped(tenant: &Tenant) -> Condition {
    Condition::all()
        .add(alert::Column::AccountId.eq(tenant.account_id.as_str()))
        .add(alert::Column::Livemode.eq(tenant.livemode))
}

fn stored(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::internal(anyhow::anyhow!("stored billing alert {what}: {detail}"))
}

fn to_domain(row: alert::Model) -> Result<CreditBalanceAlert> {
    let scope = match (row.scope_price_type.as_deref(), row.scope_prices.as_deref()) {
        (None, None) => None,
        (Some("metered"), None) => Some(Scope::Metered),
        (None, Some(prices)) => Some(Scope::Prices(
            serde_json::from_str(prices).map_err(|error| stored("scope", error))?,
        )),
        _ => return Err(stored("scope", "both forms")),
    };
    let status = AlertStatus::parse(&row.status).ok_or_else(|| stored("status", &row.status))?;
    let currency =
        Currency::parse(&row.currency, "currency").map_err(|error| stored("currency", error))?;
    Ok(CreditBalanceAlert {
        id: row.id,
        livemode: row.livemode,
        created: row.created,
        title: row.title,
        status,
        customer_id: row.customer_id,
        currency,
        threshold: row.lte_value,
        scope,
        below: row.below,
    })
}

pub async fn insert(
    conn: &impl Connection,
    tenant: &Tenant,
    alert: &CreditBalanceAlert,
) -> Result<()> {
    let (scope_price_type, scope_prices) = match &alert.scope {
        None => (None, None),
        Some(Scope::Metered) => (Some("metered".to_string()), None),
        Some(Scope::Prices(prices)) => (
            None,
            Some(serde_json::to_string(prices).map_err(Error::internal)?),
        ),
    };
    insert_row(
        conn,
        alert::ActiveModel {
            id: Set(alert.id.clone()),
            account_id: Set(tenant.account_id.clone()),
            livemode: Set(tenant.livemode),
            title: Set(alert.title.clone()),
            alert_type: Set(CREDIT_BALANCE_THRESHOLD.to_string()),
            status: Set(alert.status.as_str().to_string()),
            customer_id: Set(alert.customer_id.clone()),
            currency: Set(alert.currency.as_str().to_string()),
            lte_value: Set(alert.threshold),
            scope_price_type: Set(scope_price_type),
            scope_prices: Set(scope_prices),
            below: Set(alert.below),
            created: Set(alert.created),
        },
    )
    .await
}

/// Writes what can change: the status and the crossing state.
pub async fn save_state(
    conn: &impl Connection,
    tenant: &Tenant,
    alert: &CreditBalanceAlert,
) -> Result<()> {
    alert::Entity::update_many()
        .col_expr(alert::Column::Status, Expr::value(alert.status.as_str()))
        .col_expr(alert::Column::Below, Expr::value(alert.below))
        .filter(scoped(tenant).add(alert::Column::Id.eq(alert.id.as_str())))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

pub async fn find(
    conn: &impl Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<CreditBalanceAlert>> {
    alert::Entity::find()
        .filter(scoped(tenant).add(alert::Column::Id.eq(id)))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

/// The active alerts of these customers, in one indexed statement (the evaluation after a
/// balance change; empty, and cheap, for a tenant without alerts).
/// Whether the tenant has any active alert.
pub async fn any_active(conn: &impl Connection, tenant: &Tenant) -> Result<bool> {
    Ok(alert::Entity::find()
        .select_only()
        .column(alert::Column::Id)
        .filter(scoped(tenant).add(alert::Column::Status.eq(AlertStatus::Active.as_str())))
        .into_tuple::<String>()
        .one(conn)
        .await
        .map_err(db_error)?
        .is_some())
}

pub async fn active_for_customers(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_ids: &[&str],
) -> Result<Vec<CreditBalanceAlert>> {
    if customer_ids.is_empty() {
        return Ok(Vec::new());
    }
    let customers = customer_ids.iter().map(|id| id.to_string());
    alert::Entity::find()
        .filter(
            scoped(tenant)
                .add(alert::Column::CustomerId.is_in(customers))
                .add(alert::Column::Status.eq(AlertStatus::Active.as_str())),
        )
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(to_domain)
        .collect()
}

fn listed(tenant: &Tenant, filter: &AlertFilter) -> Condition {
    let mut condition =
        scoped(tenant).add(alert::Column::Status.ne(AlertStatus::Archived.as_str()));
    if let Some(customer) = &filter.customer_id {
        condition = condition.add(alert::Column::CustomerId.eq(customer.as_str()));
    }
    if filter.other_type {
        condition = condition.add(alert::Column::AlertType.ne(CREDIT_BALANCE_THRESHOLD));
    }
    condition
}

/// Alerts that are not archived, newest first.
pub async fn list(
    conn: &impl Connection,
    tenant: &Tenant,
    filter: &AlertFilter,
    request: &ListRequest,
) -> Result<KeysetPage<CreditBalanceAlert>> {
    keyset_page::<alert::Entity>(conn, listed(tenant, filter), alert::Column::Id, request)
        .await?
        .try_map(to_domain)
}

pub async fn exists(conn: &impl Connection, tenant: &Tenant, id: &str) -> Result<bool> {
    Ok(alert::Entity::find()
        .select_only()
        .column(alert::Column::Id)
        .filter(scoped(tenant).add(alert::Column::Id.eq(id)))
        .into_tuple::<String>()
        .one(conn)
        .await
        .map_err(db_error)?
        .is_some())
}
