//! The events table (the outbox) and its stream position.
//!
//! Where a reader follows the stream depends on the backend:
//! - SQLite: one write transaction at a time holds the write lock from its first insert to its
//!   commit, so insert order is commit order and the autoincrement `position` is the stream
//!   position as soon as the row commits.
//! - PostgreSQL: transactions commit in any order relative to when they inserted, so a reader
//!   following `position` could pass a row that commits later with a smaller one. There the
//!   sequencer ([`assign_sequences`]) numbers committed rows after the fact, one sequencer at a
//!   time across replicas (an advisory lock), each run above everything numbered before; a
//!   reader follows `sequence` and can never see a number before the numbers below it.

use sea_orm::sea_query::{Expr, LikeExpr};
use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, Condition, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, Statement,
};

use super::entities::event;
use super::{Connection, KeysetPage, backend_of, db_error, keyset_page, time_condition};
use crate::domain::event::{Event, EventFilter, EventRequest, TypeFilter};
use crate::domain::{ListRequest, Tenant};
use crate::error::Result;

/// The advisory lock key that makes one PostgreSQL sequencer run at a time.
const SEQUENCER_LOCK: i64 = 0x6372_6564_6576_7331; // "credevs1"

/// Inserts `events` in one statement, in order (so their `position`s follow it).
pub async fn insert(conn: &impl Connection, tenant: &Tenant, events: &[Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let rows = events.iter().map(|event| event::ActiveModel {
        position: NotSet,
        id: Set(event.id.clone()),
        account_id: Set(tenant.account_id.clone()),
        livemode: Set(tenant.livemode),
        kind: Set(event.kind.clone()),
        created: Set(event.created),
        customer_id: Set(event.customer_id.clone()),
        request_id: Set(event.request.id.clone()),
        idempotency_key: Set(event.request.idempotency_key.clone()),
        api_version: Set(event.api_version.clone()),
        pending_webhooks: Set(event.pending_webhooks),
        data: Set(event.data.clone()),
        sequence: Set(None),
    });
    event::Entity::insert_many(rows)
        .exec_without_returning(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The column a stream reader follows on this backend (see the module's docs).
fn stream_column(conn: &impl Connection) -> event::Column {
    match backend_of(conn) {
        DbBackend::Postgres => event::Column::Sequence,
        _ => event::Column::Position,
    }
}

pub(crate) fn to_domain(backend: DbBackend, row: event::Model) -> Event {
    let sequence = match backend {
        DbBackend::Postgres => row.sequence,
        _ => Some(row.position),
    };
    Event {
        id: row.id,
        livemode: row.livemode,
        created: row.created,
        kind: row.kind,
        customer_id: row.customer_id,
        request: EventRequest {
            id: row.request_id,
            idempotency_key: row.idempotency_key,
        },
        api_version: row.api_version,
        pending_webhooks: row.pending_webhooks,
        data: row.data,
        sequence,
    }
}

fn scoped(tenant: &Tenant) -> Condition {
    Condition::all()
        .add(event::Column::AccountId.eq(tenant.account_id.as_str()))
        .add(event::Column::Livemode.eq(tenant.livemode))
}

pub async fn find(conn: &impl Connection, tenant: &Tenant, id: &str) -> Result<Option<Event>> {
    let backend = backend_of(conn);
    Ok(event::Entity::find()
        .filter(scoped(tenant).add(event::Column::Id.eq(id)))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(|row| to_domain(backend, row)))
}

/// The newest stream position committed (and, on PostgreSQL, numbered), or 0.
pub async fn head(conn: &impl Connection) -> Result<i64> {
    let column = stream_column(conn);
    let max: Option<Option<i64>> = event::Entity::find()
        .select_only()
        .column_as(column.max(), "head")
        .into_tuple()
        .one(conn)
        .await
        .map_err(db_error)?;
    Ok(max.flatten().unwrap_or(0))
}

/// PostgreSQL: whether any committed event still waits for its number (one probe of the
/// partial index of unnumbered rows). Always false elsewhere, where nothing is numbered later.
pub async fn any_unsequenced(conn: &impl Connection) -> Result<bool> {
    if backend_of(conn) != DbBackend::Postgres {
        return Ok(false);
    }
    Ok(event::Entity::find()
        .select_only()
        .column(event::Column::Position)
        .filter(event::Column::Sequence.is_null())
        .into_tuple::<i64>()
        .one(conn)
        .await
        .map_err(db_error)?
        .is_some())
}

/// What a stream reader asks for: the tenant's events after `after`, optionally only some
/// types and one customer, at most `limit` of them.
#[derive(Debug, Clone)]
pub struct StreamQuery<'a> {
    pub tenant: &'a Tenant,
    pub after: i64,
    pub types: &'a [String],
    pub customer_id: Option<&'a str>,
    pub limit: u64,
}

/// Events after a stream position, in stream order.
pub async fn read_after(conn: &impl Connection, query: &StreamQuery<'_>) -> Result<Vec<Event>> {
    let backend = backend_of(conn);
    let column = stream_column(conn);
    let mut condition = scoped(query.tenant).add(column.gt(query.after));
    if !query.types.is_empty() {
        condition = condition.add(event::Column::Kind.is_in(query.types.iter().cloned()));
    }
    if let Some(customer_id) = query.customer_id {
        condition = condition.add(event::Column::CustomerId.eq(customer_id));
    }
    Ok(event::Entity::find()
        .filter(condition)
        .order_by_asc(column)
        .limit(query.limit)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|row| to_domain(backend, row))
        .collect())
}

/// PostgreSQL only (a no-op returning 0 elsewhere): numbers up to `limit` committed,
/// unnumbered events in `position` order, above every number given before, in the caller's
/// transaction. Waits for any other sequencer (on another replica) to commit first. Returns
/// how many it numbered.
pub async fn assign_sequences(conn: &impl Connection, limit: u64) -> Result<u64> {
    if backend_of(conn) != DbBackend::Postgres {
        return Ok(0);
    }
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [SEQUENCER_LOCK.into()],
    ))
    .await
    .map_err(db_error)?;
    // Runs after the lock is held, so its snapshot includes the previous sequencer's commit.
    let numbered = conn
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE events SET sequence = numbered.next \
             FROM (SELECT position, \
                          (SELECT COALESCE(MAX(sequence), 0) FROM events) \
                          + ROW_NUMBER() OVER (ORDER BY position) AS next \
                   FROM events WHERE sequence IS NULL ORDER BY position LIMIT $1) AS numbered \
             WHERE events.position = numbered.position",
            [(limit as i64).into()],
        ))
        .await
        .map_err(db_error)?;
    Ok(numbered.rows_affected())
}

/// The Events API's list: the tenant's events created at `visible_from` or later (the
/// retention window) that pass `filter`, newest first. Event IDs are time-ordered, so ID
/// order is creation order and a page is a keyset query on the ID.
///
/// `delivery_success`: `true` keeps events no endpoint is still owed (`pending_webhooks = 0`,
/// which includes events nothing subscribed to), `false` those some endpoint still is
/// (`pending_webhooks > 0`).
pub async fn list(
    conn: &impl Connection,
    tenant: &Tenant,
    filter: &EventFilter,
    request: &ListRequest,
    visible_from: i64,
) -> Result<KeysetPage<Event>> {
    let backend = backend_of(conn);
    let mut condition = scoped(tenant)
        .add(event::Column::Created.gte(visible_from))
        .add(time_condition(event::Column::Created, &filter.created));
    condition = match &filter.types {
        TypeFilter::Any => condition,
        TypeFilter::Exact(name) => condition.add(event::Column::Kind.eq(name.as_str())),
        TypeFilter::OneOf(names) => condition.add(event::Column::Kind.is_in(names.iter().cloned())),
        TypeFilter::Prefix(prefix) => condition.add(prefix_condition(backend, prefix)),
    };
    condition = match filter.delivery_success {
        None => condition,
        Some(true) => condition.add(event::Column::PendingWebhooks.eq(0)),
        Some(false) => condition.add(event::Column::PendingWebhooks.gt(0)),
    };
    let listed = keyset_page::<event::Entity>(conn, condition, event::Column::Id, request).await?;
    listed.try_map(|row| Ok(to_domain(backend, row)))
}

/// `type` starts with `prefix`: a LIKE with the prefix's own `%`, `_` and `\` escaped, plus
/// an exact comparison of the leading characters, because SQLite's LIKE ignores ASCII case
/// (`CUSTOMER.*` must match nothing, as on PostgreSQL).
fn prefix_condition(backend: DbBackend, prefix: &str) -> Condition {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for character in prefix.chars() {
        if matches!(character, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(character);
    }
    pattern.push('%');
    let length = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
    Condition::all()
        .add(event::Column::Kind.like(LikeExpr::new(pattern).escape('\\')))
        .add(Expr::cust_with_values(
            match backend {
                DbBackend::Postgres => r#"substr("type", 1, $1) = $2"#,
                _ => r#"substr("type", 1, ?) = ?"#,
            },
            [sea_orm::Value::from(length), sea_orm::Value::from(prefix)],
        ))
}

/// How many events one pruning statement deletes at most, so no statement holds the table
/// (or SQLite's one writer) for long.
const PRUNE_BATCH: i64 = 1000;

/// Deletes events created before `cutoff`, in statements of at most [`PRUNE_BATCH`] rows,
/// each committed on its own. The row holding the newest stream position is always kept, so
/// numbering never restarts: on PostgreSQL the sequencer numbers from `MAX(sequence)`, and
/// the stream head is `MAX(position)` on SQLite. On PostgreSQL rows not yet numbered are left
/// for a later run, so pruning never races the sequencer. Returns how many it deleted.
pub async fn prune(conn: &impl Connection, cutoff: i64) -> Result<u64> {
    let backend = backend_of(conn);
    let sql = match backend {
        DbBackend::Postgres => {
            "DELETE FROM events WHERE position IN (\
                 SELECT position FROM events \
                 WHERE created < $1 AND sequence IS NOT NULL \
                   AND sequence < (SELECT MAX(sequence) FROM events) \
                 ORDER BY position LIMIT $2)"
        }
        _ => {
            "DELETE FROM events WHERE position IN (\
                 SELECT position FROM events \
                 WHERE created < ? AND position < (SELECT MAX(position) FROM events) \
                 ORDER BY position LIMIT ?)"
        }
    };
    let mut deleted = 0;
    loop {
        let result = conn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [cutoff.into(), PRUNE_BATCH.into()],
            ))
            .await
            .map_err(db_error)?;
        deleted += result.rows_affected();
        if result.rows_affected() < PRUNE_BATCH as u64 {
            return Ok(deleted);
        }
    }
}
