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

pub async fn count_api_keys(conn: &impl Connection) -> Result<u64> {
    api_key::Entity::find().count(conn).await.map_err(db_error)
}

pub async fn insert_api_key(conn: &impl Connection, row: api_key::Model) -> Result<()> {
    insert_row(conn, api_key::ActiveModel::from(row)).await?;
    Ok(())
}

pub async fn find_api_key_by_prefix(
    conn: &impl Connection,
    prefix: &str,
) -> Result<Option<api_key::Model>> {
    api_key::Entity::find()
        .filter(api_key::Column::LookupPrefix.eq(prefix))
        .one(conn)
        .await
        .map_err(db_error)
}

pub async fn list_api_keys(conn: &impl Connection) -> Result<Vec<api_key::Model>> {
    use sea_orm::QueryOrder;
    api_key::Entity::find()
        .order_by_asc(api_key::Column::Created)
        .all(conn)
        .await
        .map_err(db_error)
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
