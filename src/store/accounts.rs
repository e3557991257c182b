//! Accounts and their API keys.

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};

use super::entities::{account, api_key};
use super::{Connection, db_error, insert_row};
use crate::error::Result;

pub async fn insert_account(conn: &impl Connection, id: &str, created: i64) -> Result<()> {
    insert_row(
        conn,
        account::ActiveModel {
            id: Set(id.to_string()),
            created: Set(created),
        },
    )
    .await?;
    Ok(())
}

pub async fn account_exists(conn: &impl Connection, id: &str) -> Result<bool> {
    Ok(account::Entity::find_by_id(id.to_string())
        .one(conn)
        .await
        .map_err(db_error)?
        .is_some())
}

/// The oldest account, which keys injected without an account belong to.
pub async fn first_account(conn: &impl Connection) -> Result<Option<String>> {
    use sea_orm::QueryOrder;
    Ok(account::Entity::find()
        .order_by_asc(account::Column::Created)
        .order_by_asc(account::Column::Id)
        .one(conn)
        .await
        .map_err(db_error)?
        .map(|row| row.id))
}

/// A stored API key: everything about it but the secret, which is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub account_id: String,
    pub livemode: bool,
    /// `sk_…` plus the first 12 secret characters, on a row written by a version before
    /// migration 7 (or by such a version still running during a rolling upgrade) that has not
    /// been upgraded yet; `None` once the row keeps no secret characters.
    pub legacy_lookup_prefix: Option<String>,
    /// Hex digest of the whole key, made as `hash_scheme` says. Unique: rows are found by it.
    pub key_hash: String,
    /// `sha256` or `hmac-sha256`.
    pub hash_scheme: String,
    /// The key's last four characters, for display (`sk_test_…abcd`); `None` on legacy rows.
    pub key_hint: Option<String>,
    pub created: i64,
    pub revoked_at: Option<i64>,
}

impl From<api_key::Model> for ApiKeyRecord {
    fn from(row: api_key::Model) -> Self {
        ApiKeyRecord {
            legacy_lookup_prefix: (row.lookup_prefix != row.id).then_some(row.lookup_prefix),
            id: row.id,
            account_id: row.account_id,
            livemode: row.livemode,
            key_hash: row.key_hash,
            hash_scheme: row.hash_scheme,
            key_hint: row.key_hint,
            created: row.created,
            revoked_at: row.revoked_at,
        }
    }
}

pub async fn count_api_keys(conn: &impl Connection) -> Result<u64> {
    api_key::Entity::find().count(conn).await.map_err(db_error)
}

pub async fn insert_api_key(conn: &impl Connection, key: &ApiKeyRecord) -> Result<()> {
    insert_row(
        conn,
        api_key::ActiveModel {
            id: Set(key.id.clone()),
            account_id: Set(key.account_id.clone()),
            livemode: Set(key.livemode),
            lookup_prefix: Set(key
                .legacy_lookup_prefix
                .clone()
                .unwrap_or_else(|| key.id.clone())),
            key_hash: Set(key.key_hash.clone()),
            hash_scheme: Set(key.hash_scheme.clone()),
            key_hint: Set(key.key_hint.clone()),
            created: Set(key.created),
            revoked_at: Set(key.revoked_at),
        },
    )
    .await?;
    Ok(())
}

/// The key whose stored hash is one of `hashes` (the presented key hashed each way the
/// server can hash it).
pub async fn find_api_key_by_hash(
    conn: &impl Connection,
    hashes: &[String],
) -> Result<Option<ApiKeyRecord>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::KeyHash.is_in(hashes.iter().cloned()))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(ApiKeyRecord::from))
}

/// Rewrites a verified key's row to a new hash (and scheme and hint) and clears any plaintext
/// prefix. Only if the row still has `old_hash`, so a concurrent upgrade is harmless.
pub async fn upgrade_api_key(
    conn: &impl Connection,
    id: &str,
    old_hash: &str,
    new_hash: &str,
    hash_scheme: &str,
    key_hint: &str,
) -> Result<()> {
    use sea_orm::sea_query::Expr;
    api_key::Entity::update_many()
        .col_expr(api_key::Column::KeyHash, Expr::value(new_hash))
        .col_expr(api_key::Column::HashScheme, Expr::value(hash_scheme))
        .col_expr(api_key::Column::KeyHint, Expr::value(key_hint))
        .col_expr(api_key::Column::LookupPrefix, Expr::value(id))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::KeyHash.eq(old_hash))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}
pub async fn list_api_keys(conn: &impl Connection) -> Result<Vec<ApiKeyRecord>> {
    use sea_orm::QueryOrder;
    Ok(api_key::Entity::find()
        .order_by_asc(api_key::Column::Created)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(ApiKeyRecord::from)
        .collect())
}

/// Marks a key revoked; returns whether a live (unrevoked) key was found.
pub async fn revoke_api_key(conn: &impl Connection, id: &str, at: i64) -> Result<bool> {
    use sea_orm::sea_query::Expr;
    let result = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(at))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected == 1)
}
