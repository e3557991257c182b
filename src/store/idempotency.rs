//! Stored first results of idempotent requests. The service sees them as [`StoredResponse`]
//! values; the entity stays here.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Statement};

use super::entities::idempotency_record as record;
use super::{Connection, backend_of, db_error, insert_row, is_unique_violation};
use crate::domain::Tenant;
use crate::error::Result;

/// The first result of an idempotent request under one key of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The operation the key was first used for (`customer.create`, ...).
    pub operation: String,
    /// SHA-256 of the operation and its parameters, hex.
    pub request_hash: String,
    /// The result, as JSON.
    pub response: String,
    /// When it was stored (Unix seconds).
    pub created: i64,
}

pub async fn find(
    conn: &impl Connection,
    tenant: &Tenant,
    key: &str,
) -> Result<Option<StoredResponse>> {
    let row =
        record::Entity::find_by_id((tenant.account_id.clone(), tenant.livemode, key.to_string()))
            .one(conn)
            .await
            .map_err(db_error)?;
    Ok(row.map(|row| StoredResponse {
        operation: row.operation,
        request_hash: row.request_hash,
        response: row.response,
        created: row.created,
    }))
}

/// Stores the first result under `key`. `Ok(false)` when the key already has one (another
/// replica stored it first); the transaction must then be rolled back.
pub async fn insert(
    conn: &impl Connection,
    tenant: &Tenant,
    key: &str,
    stored: &StoredResponse,
) -> Result<bool> {
    let row = record::ActiveModel::from(record::Model {
        account_id: tenant.account_id.clone(),
        livemode: tenant.livemode,
        key: key.to_string(),
        operation: stored.operation.clone(),
        request_hash: stored.request_hash.clone(),
        response: stored.response.clone(),
        created: stored.created,
    });
    match insert_row(conn, row).await {
        Ok(()) => Ok(true),
        Err(error) if is_unique_violation(&error) => Ok(false),
        Err(error) => Err(error),
    }
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
