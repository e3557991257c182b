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
    /// The key's first characters: enough to find the row, not enough to use the key.
    pub lookup_prefix: String,
    /// SHA-256 of the whole key, hex.
    pub key_hash: String,
    pub created: i64,
    pub revoked_at: Option<i64>,
}

impl From<api_key::Model> for ApiKeyRecord {
    fn from(row: api_key::Model) -> Self {
        ApiKeyRecord {
            id: row.id,
            account_id: row.account_id,
            livemode: row.livemode,
            lookup_prefix: row.lookup_prefix,
            key_hash: row.key_hash,
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
            lookup_prefix: Set(key.lookup_prefix.clone()),
            key_hash: Set(key.key_hash.clone()),
            created: Set(key.created),
            revoked_at: Set(key.revoked_at),
        },
    )
    .await?;
    Ok(())
}

pub async fn find_api_key_by_prefix(
    conn: &impl Connection,
    prefix: &str,
) -> Result<Option<ApiKeyRecord>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::LookupPrefix.eq(prefix))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(ApiKeyRecord::from))
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
