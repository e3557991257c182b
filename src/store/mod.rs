//! Persistence: the only module that knows SeaORM. It opens the database (a single writer and
//! a pool of readers on SQLite, one pool on PostgreSQL), applies migrations, classifies
//! database errors, and offers the queries the service layer composes into transactions.

pub mod accounts;
pub mod audit;
pub mod credit_balance_transactions;
pub mod credit_grants;
pub mod customer_balance_transactions;
pub mod customers;
pub mod entities;
pub mod idempotency;
pub mod test_clocks;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, RuntimeErr, SqlxSqliteConnector, TransactionTrait,
};

use crate::error::{Error, Result};

pub use sea_orm::ConnectionTrait as Connection;
/// An open write transaction.
pub type Transaction = DatabaseTransaction;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub url: String,
    /// Pool size for PostgreSQL, and for SQLite's read connections.
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl DbOptions {
    pub fn new(url: impl Into<String>) -> Self {
        DbOptions {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// `url` with its database (path) replaced by `database`, keeping any query string.
pub fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |index| index + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |index| scheme_end + index);
    let mut result = format!("{}/{}", &base[..host_end], database);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

/// The database. On SQLite every write goes through one connection, so writers queue in the
/// process instead of failing with "database is locked", while readers use their own pool
/// (WAL mode lets them read while the writer writes).
#[derive(Clone)]
pub struct Db {
    writer: DatabaseConnection,
    reader: DatabaseConnection,
    backend: DbBackend,
}

impl Db {
    pub async fn connect(options: &DbOptions) -> Result<Db> {
        if options.url.starts_with("sqlite:") {
            Self::connect_sqlite(options).await
        } else if options.url.starts_with("postgres:") || options.url.starts_with("postgresql:") {
            let mut connect = ConnectOptions::new(options.url.clone());
            connect
                .max_connections(options.max_connections)
                .min_connections(1)
                .acquire_timeout(options.acquire_timeout)
                .sqlx_logging(false);
            let pool = Database::connect(connect)
                .await
                .map_err(|error| Error::unavailable("cannot connect to PostgreSQL", error))?;
            Ok(Db {
                writer: pool.clone(),
                reader: pool,
                backend: DbBackend::Postgres,
            })
        } else {
            Err(Error::invalid_param(
                "database_url",
                "The database URL must start with sqlite: or postgres://",
            ))
        }
    }

    async fn connect_sqlite(options: &DbOptions) -> Result<Db> {
        let base = SqliteConnectOptions::from_str(&options.url)
            .map_err(|error| Error::invalid_param("database_url", error.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let open = |max: u32, options: SqliteConnectOptions, acquire: Duration| async move {
            sea_orm::sqlx::pool::PoolOptions::<sea_orm::sqlx::Sqlite>::new()
                .max_connections(max)
                .min_connections(1)
                .acquire_timeout(acquire)
                .connect_with(options)
                .await
                .map(SqlxSqliteConnector::from_sqlx_sqlite_pool)
                .map_err(|error| Error::unavailable("cannot open the SQLite database", error))
        };
        // The writer is opened first so the file and WAL mode exist before readers attach.
        // Queued writers can wait a long time under load: that is back-pressure, not failure.
        let writer = open(
            1,
            base.clone(),
            options.acquire_timeout.max(Duration::from_secs(30)),
        )
        .await?;
        let readers = options.max_connections.clamp(1, 8);
        let reader = open(readers, base.read_only(false), options.acquire_timeout).await?;
        Ok(Db {
            writer,
            reader,
            backend: DbBackend::Sqlite,
        })
    }

    pub async fn migrate(&self) -> Result<()> {
        Migrator::up(&self.writer, None)
            .await
            .map_err(|error| Error::internal(anyhow::Error::new(error).context("migration failed")))
    }

    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    pub fn is_postgres(&self) -> bool {
        self.backend == DbBackend::Postgres
    }

    /// For reads outside a transaction.
    pub fn reader(&self) -> &DatabaseConnection {
        &self.reader
    }

    /// For single-statement writes outside a transaction (they still go through the writer).
    pub fn writer(&self) -> &DatabaseConnection {
        &self.writer
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<DatabaseTransaction> {
        self.writer.begin().await.map_err(db_error)
    }

    /// Runs `attempt` (which opens, uses and commits its own transaction) again when the
    /// database reports a serialization failure or deadlock, so callers never see them.
    pub async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        const MAX_ATTEMPTS: u32 = 8;
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Err(error) if tries < MAX_ATTEMPTS && is_retryable(&error) => {
                    tracing::debug!(tries, "retrying a transaction after a transient conflict");
                    let backoff = Duration::from_millis(2u64 << tries.min(6));
                    tokio::time::sleep(backoff).await;
                }
                other => return other,
            }
        }
    }

    /// Size and idle connections of each pool, for metrics.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        let stats = |name: &'static str, conn: &DatabaseConnection| match self.backend {
            DbBackend::Postgres => {
                let pool = conn.get_postgres_connection_pool();
                PoolStats {
                    name,
                    size: pool.size(),
                    idle: pool.num_idle() as u32,
                }
            }
            _ => {
                let pool = conn.get_sqlite_connection_pool();
                PoolStats {
                    name,
                    size: pool.size(),
                    idle: pool.num_idle() as u32,
                }
            }
        };
        match self.backend {
            DbBackend::Postgres => vec![stats("postgres", &self.writer)],
            _ => vec![
                stats("sqlite_writer", &self.writer),
                stats("sqlite_readers", &self.reader),
            ],
        }
    }

    pub async fn ping(&self) -> Result<()> {
        self.reader.ping().await.map_err(db_error)
    }

    pub async fn close(self) {
        let _ = self.writer.close().await;
        let _ = self.reader.close().await;
    }
}

/// Inserts one row without reading it back: SeaORM's `ActiveModel::insert` re-selects the
/// row it wrote on SQLite, a second statement no caller here needs.
pub(crate) async fn insert_row<A>(conn: &impl ConnectionTrait, row: A) -> Result<()>
where
    A: sea_orm::ActiveModelTrait,
{
    use sea_orm::EntityTrait;
    let inserted = A::Entity::insert(row)
        .exec_without_returning(conn)
        .await
        .map_err(db_error)?;
    if inserted != 1 {
        return Err(Error::internal(anyhow::anyhow!(
            "an insert wrote {inserted} rows instead of one"
        )));
    }
    Ok(())
}

/// Ends a transaction by its outcome: commits on success, rolls back at once on failure.
pub async fn settle<T>(tx: DatabaseTransaction, outcome: Result<T>) -> Result<T> {
    match outcome {
        Ok(value) => {
            commit(tx).await?;
            Ok(value)
        }
        Err(error) => {
            rollback(tx).await?;
            Err(error)
        }
    }
}

/// Rolls back now (dropping a transaction only queues the rollback, keeping its locks).
pub async fn rollback(tx: DatabaseTransaction) -> Result<()> {
    tx.rollback().await.map_err(db_error)
}

/// One connection pool's usage.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub name: &'static str,
    pub size: u32,
    pub idle: u32,
}

/// Commits, mapping the error.
pub async fn commit(tx: DatabaseTransaction) -> Result<()> {
    tx.commit().await.map_err(db_error)
}

/// Database error codes that mean "try the transaction again".
const RETRYABLE_CODES: &[&str] = &[
    "40001", // PostgreSQL serialization_failure
    "40P01", // PostgreSQL deadlock_detected
    "5",     // SQLITE_BUSY
    "6",     // SQLITE_LOCKED
    "517",   // SQLITE_BUSY_SNAPSHOT
];

fn database_code(error: &DbErr) -> Option<String> {
    let runtime = match error {
        DbErr::Exec(runtime) | DbErr::Query(runtime) | DbErr::Conn(runtime) => runtime,
        _ => return None,
    };
    match runtime {
        RuntimeErr::SqlxError(sqlx_error) => match sqlx_error.as_ref() {
            sea_orm::sqlx::Error::Database(database) => {
                database.code().map(|code| code.into_owned())
            }
            _ => None,
        },
        _ => None,
    }
}

/// Maps a database error to the caller's error: timeouts and lost connections are
/// `Unavailable`, everything else is internal. Retryable conflicts keep their code in the
/// source so [`Db::retrying`] can recognise them.
pub fn db_error(error: DbErr) -> Error {
    match &error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
            Error::unavailable("The database is unavailable; please retry.", error)
        }
        _ => Error::internal(error),
    }
}

fn is_retryable(error: &Error) -> bool {
    error
        .source
        .as_ref()
        .and_then(|source| source.downcast_ref::<DbErr>())
        .and_then(database_code)
        .is_some_and(|code| RETRYABLE_CODES.contains(&code.as_str()))
}

/// `true` when the error came from a unique-key violation in the database.
pub fn is_unique_violation(error: &Error) -> bool {
    error
        .source
        .as_ref()
        .and_then(|source| source.downcast_ref::<DbErr>())
        .and_then(DbErr::sql_err)
        .is_some_and(|sql| matches!(sql, sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

pub(crate) fn metadata_to_json(metadata: &crate::domain::Metadata) -> String {
    serde_json::to_string(metadata.as_map()).unwrap_or_else(|_| "{}".to_string())
}

pub(crate) fn metadata_from_json(json: &str) -> Result<crate::domain::Metadata> {
    serde_json::from_str(json)
        .map(crate::domain::Metadata::from_stored)
        .map_err(|error| {
            Error::internal(
                anyhow::Error::new(error).context("stored metadata is not a JSON object"),
            )
        })
}

/// The backend of any connection or transaction.
pub(crate) fn backend_of(conn: &impl ConnectionTrait) -> DbBackend {
    conn.get_database_backend()
}

/// `created` bounds as a condition on `column`.
pub(crate) fn time_condition(
    column: impl sea_orm::ColumnTrait,
    range: &crate::domain::TimeRange,
) -> sea_orm::Condition {
    let mut condition = sea_orm::Condition::all();
    if let Some(at) = range.gt {
        condition = condition.add(column.gt(at));
    }
    if let Some(at) = range.gte {
        condition = condition.add(column.gte(at));
    }
    if let Some(at) = range.lt {
        condition = condition.add(column.lt(at));
    }
    if let Some(at) = range.lte {
        condition = condition.add(column.lte(at));
    }
    condition
}

/// A keyset page and whether the cursor's own row matched the query's condition (then it
/// surely exists; otherwise the service checks that it exists before trusting the page).
pub struct KeysetPage<T> {
    pub page: crate::domain::Page<T>,
    pub cursor_matched: bool,
}

impl<T> KeysetPage<T> {
    /// Converts every item, failing on the first error.
    pub fn try_map<U>(self, f: impl FnMut(T) -> Result<U>) -> Result<KeysetPage<U>> {
        Ok(KeysetPage {
            page: self.page.try_map(f)?,
            cursor_matched: self.cursor_matched,
        })
    }
}

/// One page of a keyset query over time-ordered IDs: newest first, or (for `ending_before`)
/// oldest first so that [`crate::domain::Page::from_probe`] can take the rows nearest the
/// cursor; one row more than the limit is fetched to know `has_more` exactly. The range is
/// taken inclusive of the cursor (one row more again) so the same statement tells whether the
/// cursor's row is among the listed ones; that row is then dropped. A deep page thus costs one
/// statement, like the first.
pub(crate) async fn keyset_page<E>(
    conn: &impl ConnectionTrait,
    condition: sea_orm::Condition,
    id_column: E::Column,
    request: &crate::domain::ListRequest,
) -> Result<KeysetPage<E::Model>>
where
    E: sea_orm::EntityTrait,
{
    use crate::domain::Cursor;
    use sea_orm::{ColumnTrait, ModelTrait, QueryFilter, QueryOrder, QuerySelect};
    let query = match &request.cursor {
        None => E::find().filter(condition).order_by_desc(id_column),
        Some(Cursor::StartingAfter(id)) => E::find()
            .filter(condition.add(id_column.lte(id.as_str())))
            .order_by_desc(id_column),
        Some(Cursor::EndingBefore(id)) => E::find()
            .filter(condition.add(id_column.gte(id.as_str())))
            .order_by_asc(id_column),
    };
    let extra = u64::from(request.cursor.is_some());
    let mut rows = query
        .limit(request.limit + 1 + extra)
        .all(conn)
        .await
        .map_err(db_error)?;
    let cursor_matched = match (&request.cursor, rows.first()) {
        (Some(cursor), Some(first)) => {
            first.get(id_column) == sea_orm::Value::from(cursor.id().to_string())
        }
        _ => false,
    };
    if cursor_matched {
        rows.remove(0);
    } else if extra == 1 {
        rows.truncate(request.limit as usize + 1);
    }
    Ok(KeysetPage {
        page: crate::domain::Page::from_probe(rows, request),
        cursor_matched,
    })
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            replace_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
