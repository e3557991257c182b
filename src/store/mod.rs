//! Persistence: the only module that knows SeaORM. It opens the database (a single writer and
//! a pool of readers on SQLite, one pool on PostgreSQL), applies migrations, classifies
//! database errors, and offers the queries the service layer composes into transactions.

pub mod accounts;
pub mod alerts;
pub mod audit;
pub mod credit_balance_transactions;
pub mod credit_grants;
pub mod credit_holds;
pub mod customer_balance_transactions;
pub mod customers;
pub mod entities;
pub mod events;
mod group_commit;
pub mod idempotency;
pub mod test_clocks;
pub mod webhooks;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
    SqlxSqliteConnector, TransactionTrait,
};

use crate::error::{Error, Result};

/// An open write transaction.
pub use group_commit::Transaction;
pub use sea_orm::ConnectionTrait as Connection;

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

/// Connections of the PostgreSQL pool for background work.
const BACKGROUND_CONNECTIONS: u32 = 4;

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

/// The claim of a SQLite database by the one server that writes it: an exclusive lock on
/// `<file>-creditd.lock`, held while the value lives (the operating system drops it when the
/// process dies, so a crashed server's restart takes it again). SQLite is for one process; a
/// second server on the same file is refused, which is what lets the first keep an in-memory
/// view of what it wrote (`service::grant_view`). Readers (`creditd audit`) need no claim.
#[derive(Debug)]
pub struct SqliteOwnership {
    _lock: std::fs::File,
}

impl SqliteOwnership {
    /// Claims the SQLite database of `url`; `None` for PostgreSQL or an in-memory database.
    pub fn claim(url: &str) -> Result<Option<SqliteOwnership>> {
        if !url.starts_with("sqlite:") {
            return Ok(None);
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| Error::invalid_param("database_url", error.to_string()))?;
        let file = options.get_filename();
        if url.contains(":memory:") || url.contains("mode=memory") || file.as_os_str().is_empty() {
            return Ok(None);
        }
        let mut path = file.as_os_str().to_owned();
        path.push("-creditd.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| {
                Error::unavailable("cannot create the SQLite database's lock file", error)
            })?;
        match lock.try_lock() {
            Ok(()) => Ok(Some(SqliteOwnership { _lock: lock })),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::invalid_param(
                "database_url",
                format!(
                    "Another creditd server is serving {}: a SQLite database is served by one \
                     process (run replicas on PostgreSQL).",
                    file.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(error)) => Err(Error::unavailable(
                "cannot lock the SQLite database's lock file",
                error,
            )),
        }
    }
}

/// The database. On SQLite every write goes through one connection, so writers queue in the
/// process instead of failing with "database is locked", while readers use their own pool
/// (WAL mode lets them read while the writer writes).
#[derive(Clone)]
pub struct Db {
    writer: DatabaseConnection,
    reader: DatabaseConnection,
    backend: DbBackend,
    /// SQLite: the writer's transactions, committed in groups (see `group_commit`).
    group: Option<std::sync::Arc<group_commit::GroupCommitter>>,
    /// PostgreSQL: a small pool of its own for background work (see [`Db::for_background`]).
    background: Option<DatabaseConnection>,
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
            let mut background = ConnectOptions::new(options.url.clone());
            background
                .max_connections(BACKGROUND_CONNECTIONS)
                .min_connections(0)
                .acquire_timeout(options.acquire_timeout)
                .sqlx_logging(false);
            let background = Database::connect(background)
                .await
                .map_err(|error| Error::unavailable("cannot connect to PostgreSQL", error))?;
            Ok(Db {
                writer: pool.clone(),
                reader: pool,
                backend: DbBackend::Postgres,
                group: None,
                background: Some(background),
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
            // Group commit gives each request a savepoint: its rollback journal (the pages it
            // changed first) stays in memory instead of a temporary file written per request.
            .pragma("temp_store", "memory")
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
            group: Some(group_commit::GroupCommitter::new(writer.clone())),
            writer,
            reader,
            backend: DbBackend::Sqlite,
            background: None,
        })
    }

    pub async fn migrate(&self) -> Result<()> {
        Migrator::up(&self.writer, None)
            .await
            .map_err(|error| Error::internal(anyhow::Error::new(error).context("migration failed")))
    }

    /// The database for background work (numbering events, delivering webhooks). On PostgreSQL
    /// it has its own few connections, so that it never queues for a connection behind the
    /// requests that fill the main pool under load (which delayed the event stream by the time
    /// a request waits); on SQLite, where every write goes through the one writer anyway, it is
    /// the same database.
    pub fn for_background(&self) -> Db {
        match &self.background {
            Some(pool) => Db {
                writer: pool.clone(),
                reader: pool.clone(),
                backend: self.backend,
                group: None,
                background: None,
            },
            None => self.clone(),
        }
    }

    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    /// Whether every write goes through this process's one writer connection (SQLite: a
    /// served file is locked to one server, see [`SqliteOwnership`]).
    pub fn has_one_writer(&self) -> bool {
        self.group.is_some()
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

    /// SQLite: (write transactions, group commits) so far; `None` on PostgreSQL.
    pub fn group_commits(&self) -> Option<(u64, u64)> {
        self.group.as_ref().map(|group| group.counts())
    }

    /// Starts a write transaction: on SQLite a member of the writer's next group commit.
    pub async fn begin(&self) -> Result<Transaction> {
        match &self.group {
            Some(group) => group.begin().await,
            None => self.writer.begin().await.map(Transaction::plain),
        }
        .map_err(db_error)
    }

    /// Runs `attempt` (which opens, uses and commits its own transaction) again when it failed
    /// in a way that certainly left nothing behind: a serialization failure or deadlock, or a
    /// connection lost before COMMIT (the server rolled the transaction back). Attempts and
    /// their backoff are bounded; a connection lost during COMMIT is never retried here (see
    /// [`commit`]): the caller gets 503 and retries with its idempotency key.
    pub async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        // Conflicts clear in milliseconds; a lost connection needs a new one, and a restarting
        // server a little longer: about a second and a half in all before answering 503.
        const MAX_CONFLICT_ATTEMPTS: u32 = 8;
        const MAX_RECONNECT_ATTEMPTS: u32 = 5;
        let mut tries = 0;
        loop {
            tries += 1;
            let error = match attempt().await {
                Err(error) => error,
                ok => return ok,
            };
            let backoff = match retry_class(&error) {
                Some(Retry::Conflict) if tries < MAX_CONFLICT_ATTEMPTS => {
                    tracing::debug!(tries, "retrying a transaction after a transient conflict");
                    Duration::from_millis(2u64 << tries.min(6))
                }
                Some(Retry::Reconnect) if tries < MAX_RECONNECT_ATTEMPTS => {
                    tracing::info!(tries, error = %error, "retrying a transaction that lost its database connection before commit");
                    Duration::from_millis(50u64 << tries.min(4))
                }
                _ => return Err(error),
            };
            tokio::time::sleep(backoff).await;
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
        if let Some(background) = self.background {
            let _ = background.close().await;
        }
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

/// How many write transactions this process has committed (or tried to): read by the
/// embedded deployment's in-memory grant view to tell what it holds is current. Every commit
/// goes through [`Transaction::commit`], which advances it before returning.
static WRITE_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a commit (whatever its answer: a lost COMMIT may have committed), before the
/// committer answers.
fn advance_write_generation() {
    WRITE_GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// The current write generation (see `service::grant_view`).
pub fn write_generation() -> u64 {
    WRITE_GENERATION.load(std::sync::atomic::Ordering::SeqCst)
}

/// Ends a transaction by its outcome: commits on success, rolls back at once on failure.
pub async fn settle<T>(tx: Transaction, outcome: Result<T>) -> Result<T> {
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
pub async fn rollback(tx: Transaction) -> Result<()> {
    tx.rollback().await.map_err(db_error)
}

/// One connection pool's usage.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub name: &'static str,
    pub size: u32,
    pub idle: u32,
}

/// Commits, mapping the error. A connection lost while COMMIT was on its way leaves the outcome
/// unknown (the server may have committed before the connection dropped): that is 503 like any
/// lost connection, but marked [`CommitOutcomeUnknown`] so [`Db::retrying`] never runs the
/// transaction again on its own; the client's retry with its idempotency key settles it (the
/// stored result is replayed if the commit happened). A COMMIT the server refused (a
/// serialization failure, say) certainly did not commit and is classified as usual.
pub async fn commit(tx: Transaction) -> Result<()> {
    tx.commit().await.map_err(|error| {
        if is_connection_lost(&error) {
            Error::unavailable(UNAVAILABLE_MESSAGE, CommitOutcomeUnknown(error))
        } else {
            db_error(error)
        }
    })
}

/// The source of a 503 for a COMMIT that got no answer: it may or may not have committed.
#[derive(Debug, thiserror::Error)]
#[error("the connection was lost during COMMIT; the transaction may have committed: {0}")]
pub struct CommitOutcomeUnknown(#[source] pub DbErr);

const UNAVAILABLE_MESSAGE: &str = "The database is unavailable; please retry.";

/// Database error codes that mean "try the transaction again".
const RETRYABLE_CODES: &[&str] = &[
    "40001", // PostgreSQL serialization_failure
    "40P01", // PostgreSQL deadlock_detected
    "5",     // SQLITE_BUSY
    "6",     // SQLITE_LOCKED
    "517",   // SQLITE_BUSY_SNAPSHOT
];

fn sqlx_error(error: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match error {
        DbErr::Exec(RuntimeErr::SqlxError(sqlx_error))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx_error))
        | DbErr::Conn(RuntimeErr::SqlxError(sqlx_error)) => Some(sqlx_error.as_ref()),
        _ => None,
    }
}

fn database_code(error: &DbErr) -> Option<String> {
    match sqlx_error(error)? {
        sea_orm::sqlx::Error::Database(database) => database.code().map(|code| code.into_owned()),
        _ => None,
    }
}

/// SQLSTATEs (and classes) that mean the session is gone or the server cannot take it now:
/// `08…` connection exceptions, `57P01` admin shutdown (`pg_terminate_backend`, a fast
/// shutdown), `57P02` crash shutdown, `57P03` cannot connect now (starting up or in recovery),
/// `57P05` idle session timeout, `53300` too many connections, `25P03` idle-in-transaction
/// timeout. Whatever the transaction did is rolled back.
fn is_lost_session_code(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57P05" | "53300" | "25P03"
        )
}

/// `true` when the error says the connection to the database is gone (or never came): I/O and
/// TLS failures, protocol desynchronization after a dropped connection, a crashed SQLite
/// worker, a closed pool, or a session-ending SQLSTATE ([`is_lost_session_code`]).
fn is_connection_lost(error: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    if let DbErr::ConnectionAcquire(_) = error {
        return true;
    }
    if let DbErr::Conn(RuntimeErr::Internal(_)) = error {
        return true;
    }
    match sqlx_error(error) {
        Some(Sqlx::Io(_) | Sqlx::Tls(_) | Sqlx::Protocol(_) | Sqlx::WorkerCrashed) => true,
        Some(Sqlx::PoolTimedOut | Sqlx::PoolClosed) => true,
        Some(Sqlx::Database(database)) => database.code().is_some_and(|c| is_lost_session_code(&c)),
        _ => false,
    }
}

/// Maps a database error to the caller's error: a lost or unobtainable connection (see
/// [`is_connection_lost`]), a pool timeout and any failure to open a connection are
/// `Unavailable` (503, UNAVAILABLE: retry); everything else is internal. The `DbErr` stays in
/// the source so [`Db::retrying`] can recognise what may be re-run.
pub fn db_error(error: DbErr) -> Error {
    if is_connection_lost(&error) || matches!(error, DbErr::Conn(_)) {
        Error::unavailable(UNAVAILABLE_MESSAGE, error)
    } else {
        Error::internal(error)
    }
}

/// Why a failed transaction may be run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A serialization failure or deadlock: the database rolled it back; run it again soon.
    Conflict,
    /// The connection was lost (or could not be had) before COMMIT: the server rolled the
    /// transaction back, so it can run again on a new connection.
    Reconnect,
}

/// Whether (and how) the transaction that failed with `error` may be re-run. A COMMIT
/// without an answer ([`CommitOutcomeUnknown`]) may not; nor may a pool that timed out (it
/// already waited the acquire timeout) or was closed (the server is shutting down).
fn retry_class(error: &Error) -> Option<Retry> {
    let db_error = error.source.as_ref()?.downcast_ref::<DbErr>()?;
    if database_code(db_error).is_some_and(|code| RETRYABLE_CODES.contains(&code.as_str())) {
        return Some(Retry::Conflict);
    }
    let pool_gave_up = matches!(db_error, DbErr::ConnectionAcquire(_))
        || matches!(
            sqlx_error(db_error),
            Some(sea_orm::sqlx::Error::PoolTimedOut | sea_orm::sqlx::Error::PoolClosed)
        );
    (is_connection_lost(db_error) && !pool_gave_up).then_some(Retry::Reconnect)
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
    use std::borrow::Cow;
    use std::sync::Arc;

    use sea_orm::sqlx;
    use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};

    use super::{CommitOutcomeUnknown, Retry, db_error, replace_database, retry_class};
    use crate::error::{Error, ErrorKind};

    /// A server error with a SQLSTATE, as PostgreSQL or SQLite would report it.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            "test"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn query(error: sqlx::Error) -> DbErr {
        DbErr::Query(RuntimeErr::SqlxError(Arc::new(error)))
    }

    fn sqlstate(code: &'static str) -> DbErr {
        query(sqlx::Error::Database(Box::new(Sqlstate(code))))
    }

    fn classified(error: DbErr) -> (ErrorKind, Option<Retry>) {
        let error = db_error(error);
        (error.kind, retry_class(&error))
    }

    #[test]
    fn a_lost_connection_is_unavailable_and_rerun_before_commit() {
        let lost = [
            query(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())),
            query(sqlx::Error::Io(std::io::ErrorKind::UnexpectedEof.into())),
            query(sqlx::Error::Protocol("unexpected message".into())),
            query(sqlx::Error::WorkerCrashed),
            sqlstate("57P01"),
            sqlstate("57P02"),
            sqlstate("57P03"),
            sqlstate("08006"),
            sqlstate("08003"),
            DbErr::Conn(RuntimeErr::Internal("connection closed".into())),
        ];
        for error in lost {
            let shown = error.to_string();
            assert_eq!(
                classified(error),
                (ErrorKind::Unavailable, Some(Retry::Reconnect)),
                "{shown}"
            );
        }
    }

    #[test]
    fn conflicts_are_rerun_and_an_exhausted_pool_is_unavailable_without_rerun() {
        assert_eq!(classified(sqlstate("40001")).1, Some(Retry::Conflict));
        assert_eq!(classified(sqlstate("40P01")).1, Some(Retry::Conflict));
        for pool in [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            query(sqlx::Error::PoolTimedOut),
        ] {
            assert_eq!(classified(pool), (ErrorKind::Unavailable, None));
        }
    }

    #[test]
    fn other_database_errors_stay_internal() {
        assert_eq!(classified(sqlstate("23505")), (ErrorKind::Internal, None));
        assert_eq!(classified(sqlstate("42P01")), (ErrorKind::Internal, None));
        assert_eq!(
            classified(query(sqlx::Error::RowNotFound)),
            (ErrorKind::Internal, None)
        );
    }

    #[test]
    fn a_commit_without_an_answer_is_unavailable_and_never_rerun() {
        let lost = query(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()));
        let error = Error::unavailable("x", CommitOutcomeUnknown(lost));
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert_eq!(retry_class(&error), None);
    }

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            replace_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
