//! Webhook endpoints and the delivery queue.
//!
//! Deliveries are claimed with a lease: a claim sets `lease_until` on due, pending rows nobody
//! holds, in one statement (on PostgreSQL its row selection takes `FOR UPDATE SKIP LOCKED`, so
//! concurrent claimers on other replicas pass over each other's rows; on SQLite the statement
//! runs under the database's single write lock). Every outcome is recorded only by the lease
//! holder (`lease_until` still equal to its claim), and a crashed holder's lease simply expires.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect, Set,
    Statement, Value,
};

use super::entities::{event, webhook_delivery, webhook_endpoint};
use super::{
    Connection, KeysetPage, backend_of, db_error, insert_row, keyset_page, metadata_from_json,
    metadata_to_json,
};
use crate::domain::Tenant;
use crate::domain::pagination::ListRequest;
use crate::domain::webhook::{EndpointStatus, WebhookEndpoint};
use crate::error::{Error, Result};

pub const PENDING: &str = "pending";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

fn scoped(tenant: &Tenant) -> Condition {
    Condition::all()
        .add(webhook_endpoint::Column::AccountId.eq(tenant.account_id.as_str()))
        .add(webhook_endpoint::Column::Livemode.eq(tenant.livemode))
}

fn events_to_json(events: &[String]) -> String {
    serde_json::to_string(events).unwrap_or_else(|_| "[]".to_string())
}

fn events_from_json(json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|error| {
        Error::internal(anyhow::Error::new(error).context("stored enabled_events is not a list"))
    })
}

fn to_domain(row: webhook_endpoint::Model) -> Result<WebhookEndpoint> {
    let status = EndpointStatus::parse(&row.status).ok_or_else(|| {
        Error::internal(anyhow::anyhow!("stored endpoint status {:?}", row.status))
    })?;
    Ok(WebhookEndpoint {
        enabled_events: events_from_json(&row.enabled_events)?,
        metadata: metadata_from_json(&row.metadata)?,
        id: row.id,
        livemode: row.livemode,
        created: row.created,
        url: row.url,
        status,
        description: row.description,
        api_version: row.api_version,
        secret: row.secret,
    })
}

pub async fn insert_endpoint(
    conn: &impl Connection,
    tenant: &Tenant,
    endpoint: &WebhookEndpoint,
) -> Result<()> {
    insert_row(
        conn,
        webhook_endpoint::ActiveModel {
            id: Set(endpoint.id.clone()),
            account_id: Set(tenant.account_id.clone()),
            livemode: Set(tenant.livemode),
            url: Set(endpoint.url.clone()),
            enabled_events: Set(events_to_json(&endpoint.enabled_events)),
            status: Set(endpoint.status.as_str().to_string()),
            description: Set(endpoint.description.clone()),
            metadata: Set(metadata_to_json(&endpoint.metadata)),
            api_version: Set(endpoint.api_version.clone()),
            secret: Set(endpoint.secret.clone()),
            created: Set(endpoint.created),
        },
    )
    .await
}

/// Writes the fields an update can change.
pub async fn update_endpoint(
    conn: &impl Connection,
    tenant: &Tenant,
    endpoint: &WebhookEndpoint,
) -> Result<()> {
    webhook_endpoint::Entity::update_many()
        .col_expr(
            webhook_endpoint::Column::Url,
            Expr::value(endpoint.url.clone()),
        )
        .col_expr(
            webhook_endpoint::Column::EnabledEvents,
            Expr::value(events_to_json(&endpoint.enabled_events)),
        )
        .col_expr(
            webhook_endpoint::Column::Status,
            Expr::value(endpoint.status.as_str()),
        )
        .col_expr(
            webhook_endpoint::Column::Description,
            Expr::value(endpoint.description.clone()),
        )
        .col_expr(
            webhook_endpoint::Column::Metadata,
            Expr::value(metadata_to_json(&endpoint.metadata)),
        )
        .filter(scoped(tenant).add(webhook_endpoint::Column::Id.eq(endpoint.id.as_str())))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

pub async fn find_endpoint(
    conn: &impl Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<WebhookEndpoint>> {
    find_where(
        conn,
        scoped(tenant).add(webhook_endpoint::Column::Id.eq(id)),
    )
    .await
}

/// Like [`find_endpoint`], locking the row for the rest of the transaction (PostgreSQL).
pub async fn lock_endpoint(
    conn: &impl Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<WebhookEndpoint>> {
    webhook_endpoint::Entity::find()
        .filter(scoped(tenant).add(webhook_endpoint::Column::Id.eq(id)))
        .lock(sea_orm::sea_query::LockType::Update)
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

async fn find_where(
    conn: &impl Connection,
    condition: Condition,
) -> Result<Option<WebhookEndpoint>> {
    webhook_endpoint::Entity::find()
        .filter(condition)
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

pub async fn endpoint_exists(conn: &impl Connection, tenant: &Tenant, id: &str) -> Result<bool> {
    Ok(webhook_endpoint::Entity::find()
        .select_only()
        .column(webhook_endpoint::Column::Id)
        .filter(scoped(tenant).add(webhook_endpoint::Column::Id.eq(id)))
        .into_tuple::<String>()
        .one(conn)
        .await
        .map_err(db_error)?
        .is_some())
}

pub async fn list_endpoints(
    conn: &impl Connection,
    tenant: &Tenant,
    request: &ListRequest,
) -> Result<KeysetPage<WebhookEndpoint>> {
    keyset_page::<webhook_endpoint::Entity>(
        conn,
        scoped(tenant),
        webhook_endpoint::Column::Id,
        request,
    )
    .await?
    .try_map(to_domain)
}

/// Deletes the endpoint and marks its pending deliveries failed; false if there was none.
pub async fn delete_endpoint(
    conn: &impl Connection,
    tenant: &Tenant,
    id: &str,
    now_ms: i64,
) -> Result<bool> {
    let deleted = webhook_endpoint::Entity::delete_many()
        .filter(scoped(tenant).add(webhook_endpoint::Column::Id.eq(id)))
        .exec(conn)
        .await
        .map_err(db_error)?;
    if deleted.rows_affected == 0 {
        return Ok(false);
    }
    webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::State, Expr::value(FAILED))
        .col_expr(
            webhook_delivery::Column::LastError,
            Expr::value("the endpoint was deleted"),
        )
        .col_expr(
            webhook_delivery::Column::LeaseUntil,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(now_ms))
        .filter(webhook_delivery::Column::EndpointId.eq(id))
        .filter(webhook_delivery::Column::State.eq(PENDING))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(true)
}

/// The tenant's enabled endpoints: ID and `enabled_events` (one indexed query).
pub async fn enabled_endpoints(
    conn: &impl Connection,
    tenant: &Tenant,
) -> Result<Vec<(String, Vec<String>)>> {
    let rows: Vec<(String, String)> = webhook_endpoint::Entity::find()
        .select_only()
        .column(webhook_endpoint::Column::Id)
        .column(webhook_endpoint::Column::EnabledEvents)
        .filter(
            scoped(tenant)
                .add(webhook_endpoint::Column::Status.eq(EndpointStatus::Enabled.as_str())),
        )
        .into_tuple()
        .all(conn)
        .await
        .map_err(db_error)?;
    rows.into_iter()
        .map(|(id, events)| Ok((id, events_from_json(&events)?)))
        .collect()
}

/// A delivery to create: one event to one endpoint, due at `next_attempt_at` (ms).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub event_id: String,
    pub endpoint_id: String,
    pub created: i64,
    pub next_attempt_at: i64,
}

pub async fn insert_deliveries(
    conn: &impl Connection,
    tenant: &Tenant,
    deliveries: Vec<NewDelivery>,
) -> Result<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let rows = deliveries
        .into_iter()
        .map(|delivery| webhook_delivery::ActiveModel {
            id: sea_orm::ActiveValue::NotSet,
            event_id: Set(delivery.event_id),
            endpoint_id: Set(delivery.endpoint_id),
            account_id: Set(tenant.account_id.clone()),
            livemode: Set(tenant.livemode),
            state: Set(PENDING.to_string()),
            attempts: Set(0),
            next_attempt_at: Set(delivery.next_attempt_at),
            lease_until: Set(None),
            last_status: Set(None),
            last_error: Set(None),
            created: Set(delivery.created),
            delivered_at: Set(None),
        });
    webhook_delivery::Entity::insert_many(rows)
        .exec_without_returning(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// A delivery a worker holds until `lease_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub event_id: String,
    pub endpoint_id: String,
    pub tenant: Tenant,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The event's `created` (seconds): the retry window runs from it.
    pub created: i64,
    pub lease_until: i64,
}

/// Claims up to `limit` due pending deliveries nobody holds (or whose holder's lease expired
/// before `now_ms`), oldest due first, leaving out `busy_endpoints`; holds them until
/// `lease_until`.
pub async fn claim(
    conn: &impl Connection,
    now_ms: i64,
    lease_until: i64,
    limit: u64,
    busy_endpoints: &[String],
) -> Result<Vec<ClaimedDelivery>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let backend = backend_of(conn);
    // Placeholders are numbered in order of appearance, each with its own value, which reads
    // the same to PostgreSQL (`$n`) and SQLite (`?`).
    let mut values: Vec<Value> = Vec::new();
    let mut mark = |value: Value| {
        values.push(value);
        match backend {
            DbBackend::Postgres => format!("${}", values.len()),
            _ => "?".to_string(),
        }
    };
    let lease = mark(lease_until.into());
    let now = mark(now_ms.into());
    let now_again = mark(now_ms.into());
    let mut busy = String::new();
    if !busy_endpoints.is_empty() {
        let marks: Vec<String> = busy_endpoints
            .iter()
            .map(|id| mark(Value::from(id.as_str())))
            .collect();
        busy = format!(" AND endpoint_id NOT IN ({})", marks.join(", "));
    }
    let limit_mark = mark((limit as i64).into());
    let lock = match backend {
        DbBackend::Postgres => " FOR UPDATE SKIP LOCKED",
        _ => "",
    };
    let sql = format!(
        "UPDATE webhook_deliveries SET lease_until = {lease} \
         WHERE id IN (SELECT id FROM webhook_deliveries \
                      WHERE state = 'pending' AND next_attempt_at <= {now} \
                        AND (lease_until IS NULL OR lease_until < {now_again}){busy} \
                      ORDER BY next_attempt_at LIMIT {limit_mark}{lock}) \
         RETURNING id, event_id, endpoint_id, account_id, livemode, attempts, created"
    );
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .map_err(db_error)?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let get = |error: sea_orm::DbErr| Error::internal(error);
        claimed.push(ClaimedDelivery {
            id: row.try_get("", "id").map_err(get)?,
            event_id: row.try_get("", "event_id").map_err(get)?,
            endpoint_id: row.try_get("", "endpoint_id").map_err(get)?,
            tenant: Tenant {
                account_id: row.try_get("", "account_id").map_err(get)?,
                livemode: row.try_get("", "livemode").map_err(get)?,
            },
            attempts: row.try_get("", "attempts").map_err(get)?,
            created: row.try_get("", "created").map_err(get)?,
            lease_until,
        });
    }
    claimed.sort_by_key(|delivery| delivery.id);
    Ok(claimed)
}

fn held(delivery: &ClaimedDelivery) -> Condition {
    Condition::all()
        .add(webhook_delivery::Column::Id.eq(delivery.id))
        .add(webhook_delivery::Column::State.eq(PENDING))
        .add(webhook_delivery::Column::LeaseUntil.eq(delivery.lease_until))
}

/// Gives a claimed delivery back untried (due again at once).
pub async fn release(conn: &impl Connection, delivery: &ClaimedDelivery) -> Result<()> {
    webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::LeaseUntil,
            Expr::value(Option::<i64>::None),
        )
        .filter(held(delivery))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Records a 2xx answer and takes one off the event's `pending_webhooks` (never below 0), in
/// the caller's transaction. False when the lease was lost (nothing recorded).
pub async fn record_success(
    conn: &impl Connection,
    delivery: &ClaimedDelivery,
    now_ms: i64,
    status: u16,
) -> Result<bool> {
    let updated = webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::State, Expr::value(SUCCEEDED))
        .col_expr(
            webhook_delivery::Column::Attempts,
            Expr::value(delivery.attempts + 1),
        )
        .col_expr(
            webhook_delivery::Column::LeaseUntil,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(webhook_delivery::Column::DeliveredAt, Expr::value(now_ms))
        .col_expr(
            webhook_delivery::Column::LastStatus,
            Expr::value(i64::from(status)),
        )
        .col_expr(
            webhook_delivery::Column::LastError,
            Expr::value(Option::<String>::None),
        )
        .filter(held(delivery))
        .exec(conn)
        .await
        .map_err(db_error)?;
    if updated.rows_affected != 1 {
        return Ok(false);
    }
    event::Entity::update_many()
        .col_expr(
            event::Column::PendingWebhooks,
            Expr::col(event::Column::PendingWebhooks).sub(1),
        )
        .filter(event::Column::Id.eq(delivery.event_id.as_str()))
        .filter(event::Column::PendingWebhooks.gt(0))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(true)
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time (ms).
    RetryAt(i64),
    /// Stop: the retry window is over, or the endpoint is gone or disabled.
    GiveUp,
}

/// Records a failed attempt (or a stop without an attempt when `attempted` is false).
pub async fn record_failure(
    conn: &impl Connection,
    delivery: &ClaimedDelivery,
    attempted: bool,
    status: Option<u16>,
    error: &str,
    next: AfterFailure,
) -> Result<bool> {
    let mut update = webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::Attempts,
            Expr::value(delivery.attempts + i64::from(attempted)),
        )
        .col_expr(
            webhook_delivery::Column::LeaseUntil,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(
            webhook_delivery::Column::LastError,
            Expr::value(error.chars().take(500).collect::<String>()),
        );
    if attempted {
        update = update.col_expr(
            webhook_delivery::Column::LastStatus,
            Expr::value(status.map(i64::from)),
        );
    }
    update = match next {
        AfterFailure::RetryAt(at) => {
            update.col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(at))
        }
        AfterFailure::GiveUp => {
            update.col_expr(webhook_delivery::Column::State, Expr::value(FAILED))
        }
    };
    let updated = update
        .filter(held(delivery))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(updated.rows_affected == 1)
}

/// Deletes up to `limit` finished (succeeded or failed) deliveries last scheduled before
/// `before_ms`; returns how many.
pub async fn prune_finished(conn: &impl Connection, before_ms: i64, limit: u64) -> Result<u64> {
    let ids: Vec<i64> = webhook_delivery::Entity::find()
        .select_only()
        .column(webhook_delivery::Column::Id)
        .filter(webhook_delivery::Column::State.is_in([SUCCEEDED, FAILED]))
        .filter(webhook_delivery::Column::NextAttemptAt.lt(before_ms))
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await
        .map_err(db_error)?;
    if ids.is_empty() {
        return Ok(0);
    }
    let deleted = webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::Id.is_in(ids))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(deleted.rows_affected)
}

/// How many deliveries are pending (for the queue-depth gauge).
pub async fn pending_count(conn: &impl Connection) -> Result<u64> {
    webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::State.eq(PENDING))
        .count(conn)
        .await
        .map_err(db_error)
}

/// A delivery's state, for tests and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    pub event_id: String,
    pub endpoint_id: String,
    pub state: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// Every delivery to an endpoint, oldest first.
pub async fn deliveries_to(
    conn: &impl Connection,
    endpoint_id: &str,
) -> Result<Vec<DeliveryState>> {
    use sea_orm::QueryOrder;
    Ok(webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
        .order_by_asc(webhook_delivery::Column::Id)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|row| DeliveryState {
            event_id: row.event_id,
            endpoint_id: row.endpoint_id,
            state: row.state,
            attempts: row.attempts,
            last_status: row.last_status,
            last_error: row.last_error,
        })
        .collect())
}
