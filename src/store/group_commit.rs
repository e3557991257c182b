//! Group commit on SQLite's single writer connection.
//!
//! Every write transaction on SQLite runs on one connection, one at a time. Instead of one
//! `BEGIN … COMMIT` (and one fsync) each, the transactions that queue for the writer share one:
//! the first opens the group's transaction, each member runs inside its own `SAVEPOINT` (so a
//! member that fails rolls back only its own work), and the group is committed when no other
//! writer is waiting or it holds [`MAX_GROUP`] members. A member's `commit` returns only after
//! the group's `COMMIT` did, with `synchronous=FULL` kept: nothing is acknowledged before it is
//! durable. At low load the queue is empty, so every transaction commits at once, alone.
//!
//! If the group's `COMMIT` fails, every member fails with it (503: nothing of theirs was
//! committed, or it is unknown; clients retry with their idempotency keys). A member that
//! leaves the group open (others were queued) starts a watchdog that commits the group if no
//! later member did within [`WATCHDOG_DELAY`]: queued writers may be cancelled before their
//! turn, and a cancelled member never reaches its commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, RuntimeErr, Statement, TransactionTrait,
};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

/// The most write transactions one group (one `COMMIT`) carries.
pub const MAX_GROUP: usize = 64;

/// How long a group left open waits for a later member before a watchdog commits it.
const WATCHDOG_DELAY: Duration = Duration::from_millis(5);

/// A group's outcome, once committed (or failed): shared by its members.
type Outcome = Option<Result<(), Arc<str>>>;

struct OpenGroup {
    id: u64,
    outer: DatabaseTransaction,
    members: usize,
    outcome: watch::Sender<Outcome>,
}

/// Groups SQLite's write transactions (see the module documentation).
pub struct GroupCommitter {
    writer: DatabaseConnection,
    /// The writer's turn, with the group open on it, if any.
    gate: Arc<Mutex<Option<OpenGroup>>>,
    /// Writers waiting for their turn.
    queued: AtomicUsize,
    next_id: AtomicU64,
    /// Member transactions started, and groups committed (or failed).
    members: AtomicU64,
    commits: AtomicU64,
}

/// Counts a writer as queued until it has its turn or gives up (cancellation-safe).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl GroupCommitter {
    pub fn new(writer: DatabaseConnection) -> Arc<GroupCommitter> {
        Arc::new(GroupCommitter {
            writer,
            gate: Arc::new(Mutex::new(None)),
            queued: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            members: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        })
    }

    /// (member transactions, group commits) so far: their ratio is the mean group size.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.members.load(Ordering::Relaxed),
            self.commits.load(Ordering::Relaxed),
        )
    }

    /// Waits for the writer's turn and starts a member transaction in the open group (opening
    /// one if none is).
    pub async fn begin(self: &Arc<Self>) -> Result<Transaction, DbErr> {
        let mut turn = {
            self.queued.fetch_add(1, Ordering::SeqCst);
            let _queued = Queued(&self.queued);
            self.gate.clone().lock_owned().await
        };
        let group = match turn.as_mut() {
            Some(group) => group,
            None => turn.insert(OpenGroup {
                id: self.next_id.fetch_add(1, Ordering::SeqCst),
                outer: self.writer.begin().await?,
                members: 0,
                outcome: watch::channel(None).0,
            }),
        };
        let inner = group.outer.begin().await?;
        group.members += 1;
        self.members.fetch_add(1, Ordering::Relaxed);
        let member = Member {
            committer: self.clone(),
            group_id: group.id,
            outcome: group.outcome.subscribe(),
            turn,
        };
        Ok(Transaction {
            inner: Some(inner),
            member: Some(member),
        })
    }

    /// Commits the open group (if any) and tells its members.
    async fn flush(&self, turn: &mut Option<OpenGroup>) -> Result<(), DbErr> {
        let Some(group) = turn.take() else {
            return Ok(());
        };
        let committed = group.outer.commit().await;
        self.commits.fetch_add(1, Ordering::Relaxed);
        super::advance_write_generation();
        let outcome = committed
            .as_ref()
            .map(|_| ())
            .map_err(|error| Arc::<str>::from(error.to_string()));
        group.outcome.send_replace(Some(outcome));
        committed
    }

    /// Makes sure the group `id` is committed soon even if no later member commits it.
    fn watch_over(self: &Arc<Self>, id: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let committer = self.clone();
        runtime.spawn(async move {
            tokio::time::sleep(WATCHDOG_DELAY).await;
            let mut turn = committer.gate.lock().await;
            if turn.as_ref().is_some_and(|group| group.id == id)
                && let Err(error) = committer.flush(&mut turn).await
            {
                tracing::warn!(error = %error, "a group commit failed");
            }
        });
    }
}

/// A transaction's place in a group: its turn at the writer until it is done.
struct Member {
    committer: Arc<GroupCommitter>,
    group_id: u64,
    outcome: watch::Receiver<Outcome>,
    turn: OwnedMutexGuard<Option<OpenGroup>>,
}

impl Member {
    /// Done with the writer: commit the group now if nobody is waiting (or it is full), else
    /// leave it to the next member. With `durable`, returns only once the group is committed.
    async fn leave(self, durable: bool) -> Result<(), DbErr> {
        let Member {
            committer,
            group_id,
            mut outcome,
            mut turn,
        } = self;
        let full = turn
            .as_ref()
            .is_some_and(|group| group.members >= MAX_GROUP);
        if full || committer.queued.load(Ordering::SeqCst) == 0 {
            return committer.flush(&mut turn).await;
        }
        drop(turn);
        committer.watch_over(group_id);
        if !durable {
            return Ok(());
        }
        loop {
            if let Some(result) = outcome.borrow_and_update().clone() {
                return result.map_err(group_failed);
            }
            if outcome.changed().await.is_err() {
                return Err(group_failed(Arc::from("the group was dropped uncommitted")));
            }
        }
    }

    /// The member's savepoint could not be released: the group's state is unknown, so nothing
    /// of it is committed.
    async fn abandon(self, error: &DbErr) {
        let Member { mut turn, .. } = self;
        if let Some(group) = turn.take() {
            let message: Arc<str> = Arc::from(format!("a member of the group failed: {error}"));
            if let Err(rollback) = group.outer.rollback().await {
                tracing::warn!(error = %rollback, "rolling back a failed group");
            }
            group.outcome.send_replace(Some(Err(message)));
        }
    }
}

/// Like a lost connection at COMMIT: the caller gets 503 and retries with its key.
fn group_failed(message: Arc<str>) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(format!(
        "the group commit failed: {message}"
    )))
}

/// A write transaction: on SQLite a member of a group commit, on PostgreSQL (and for read
/// snapshots) a plain transaction. Used like SeaORM's `DatabaseTransaction`.
pub struct Transaction {
    inner: Option<DatabaseTransaction>,
    member: Option<Member>,
}

fn finished() -> DbErr {
    DbErr::Custom("the transaction has already ended".to_string())
}

impl Transaction {
    /// A transaction of its own (no group).
    pub fn plain(inner: DatabaseTransaction) -> Transaction {
        Transaction {
            inner: Some(inner),
            member: None,
        }
    }

    fn inner(&self) -> Result<&DatabaseTransaction, DbErr> {
        self.inner.as_ref().ok_or_else(finished)
    }

    /// Commits: returns once the work is durable (for a group member, once its group is).
    pub async fn commit(mut self) -> Result<(), DbErr> {
        let inner = self.inner.take().ok_or_else(finished)?;
        match self.member.take() {
            None => {
                let committed = inner.commit().await;
                super::advance_write_generation();
                committed
            }
            Some(member) => match inner.commit().await {
                Ok(()) => member.leave(true).await,
                Err(error) => {
                    member.abandon(&error).await;
                    Err(error)
                }
            },
        }
    }

    /// Rolls back this transaction's work only.
    pub async fn rollback(mut self) -> Result<(), DbErr> {
        let inner = self.inner.take().ok_or_else(finished)?;
        let rolled_back = inner.rollback().await;
        if let Some(member) = self.member.take() {
            match &rolled_back {
                Ok(()) => member.leave(false).await?,
                Err(error) => member.abandon(error).await,
            }
        }
        rolled_back
    }
}

impl Drop for Transaction {
    /// Dropped unfinished (its request was cancelled): its savepoint is rolled back when the
    /// connection is next used, and its group is committed by the watchdog.
    fn drop(&mut self) {
        if let Some(member) = self.member.take() {
            drop(self.inner.take());
            member.committer.watch_over(member.group_id);
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Transaction {
    fn get_database_backend(&self) -> DbBackend {
        self.inner
            .as_ref()
            .map_or(DbBackend::Sqlite, |inner| inner.get_database_backend())
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.inner()?.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.inner()?.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.inner()?.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.inner()?.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.support_returning())
    }
}
