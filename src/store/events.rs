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

use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, Condition, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, Statement,
};

use super::entities::event;
use super::{Connection, backend_of, db_error};
use crate::domain::Tenant;
use crate::domain::event::{Event, EventRequest};
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
