//! Stored first results of idempotent requests.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Statement};

use super::entities::idempotency_record as record;
use super::{Connection, backend_of, db_error, insert_row};
use crate::domain::Tenant;
use crate::error::Result;

pub async fn find(
    conn: &impl Connection,
    tenant: &Tenant,
    key: &str,
) -> Result<Option<record::Model>> {
    record::Entity::find_by_id((tenant.account_id.clone(), tenant.livemode, key.to_string()))
        .one(conn)
        .await
        .map_err(db_error)
}

pub async fn insert(conn: &impl Connection, row: record::Model) -> Result<()> {
    insert_row(conn, record::ActiveModel::from(row)).await?;
    Ok(())
}

/// Removes one record (a stale one being replaced).
pub async fn delete(conn: &impl Connection, tenant: &Tenant, key: &str) -> Result<()> {
    record::Entity::delete_by_id((tenant.account_id.clone(), tenant.livemode, key.to_string()))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Deletes records created before `cutoff`; returns how many.
pub async fn delete_older_than(conn: &impl Connection, cutoff: i64) -> Result<u64> {
    Ok(record::Entity::delete_many()
        .filter(record::Column::Created.lt(cutoff))
        .exec(conn)
        .await
        .map_err(db_error)?
        .rows_affected)
}

/// On PostgreSQL, tries to take a transaction-scoped advisory lock on the key, so that two
/// replicas running the same key at once see each other: `false` means another transaction
/// holds it. Other backends serialize writes in-process and always get `true`.
pub async fn try_lock_key(conn: &impl Connection, tenant: &Tenant, key: &str) -> Result<bool> {
    let backend = backend_of(conn);
    if backend != sea_orm::DbBackend::Postgres {
        return Ok(true);
    }
    let lock_id = lock_id(tenant, key);
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "SELECT pg_try_advisory_xact_lock($1) AS locked",
            [lock_id.into()],
        ))
        .await
        .map_err(db_error)?;
    match row {
        Some(row) => row.try_get::<bool>("", "locked").map_err(db_error),
        None => Ok(false),
    }
}

/// A stable 64-bit lock ID for (account, mode, key).
fn lock_id(tenant: &Tenant, key: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"creditd-idempotency\0");
    hasher.update(tenant.account_id.as_bytes());
    hasher.update([0, u8::from(tenant.livemode), 0]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    i64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}
