//! The application's one API. Both transports call these functions and nothing else; they
//! own every transaction boundary, the per-customer serialization of writes, tenant scoping
//! and idempotency.

pub mod alerts;
pub mod apply_batch;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod credit_balance;
pub mod credit_grants;
pub mod credit_holds;
pub mod customer_balance_transactions;
pub mod customers;
pub mod event_stream;
pub mod events;
pub mod grant_view;
pub mod idempotency;
pub mod key_cache;
mod ledger;
pub mod rate_limit;
pub mod tenant_hooks;
pub mod test_clocks;
pub mod webhook_delivery;
pub mod webhooks;

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::Tenant;
use crate::error::Result;
use crate::store::{self, Db, Transaction};

pub use clock::{Clock, ManualClock, SystemClock};
pub use idempotency::{IdempotencyKeys, ReplayFlag};

/// Who is calling and how: produced by authentication, passed to every service call.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub tenant: Tenant,
    /// The caller's idempotency key for this write, if any.
    pub idempotency_key: Option<String>,
    /// Set when the answer is replayed from the key's stored result.
    pub replayed: ReplayFlag,
    /// The `req_…` ID the transport gave the request (events name it as their cause).
    pub request_id: Option<String>,
}

impl RequestContext {
    pub fn new(tenant: Tenant) -> Self {
        RequestContext {
            tenant,
            idempotency_key: None,
            replayed: ReplayFlag::default(),
            request_id: None,
        }
    }

    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }

    /// Reports replays through `flag` (a clone the transport keeps to read after the call).
    pub fn with_replay_flag(mut self, flag: ReplayFlag) -> Self {
        self.replayed = flag;
        self
    }
}

/// Shared state behind every request.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub idempotency: IdempotencyKeys,
    /// Per-key request rate limit, when configured.
    pub rate_limiter: Option<Arc<rate_limit::RateLimiter>>,
    /// Recently verified API keys, when caching is on.
    pub key_cache: Option<Arc<key_cache::KeyCache>>,
    /// The server-side secret API keys are hashed with (HMAC-SHA256), when configured.
    pub api_key_pepper: Option<Arc<[u8]>>,
    /// Numbers committed events and tells watchers the stream moved.
    pub events: events::EventPump,
    /// How long events are kept: older ones are neither listed nor found, and are pruned.
    pub event_retention: std::time::Duration,
    /// The open event streams: their cap, what they hold, and their shutdown signal.
    pub event_streams: Arc<event_stream::EventStreams>,
    /// Refuse webhook endpoint URLs on internal addresses (multi-tenant deployments).
    pub refuse_private_webhook_addresses: bool,
    /// The longest a credit hold may live, in seconds.
    pub max_hold_seconds: i64,
    /// The in-memory view of customers' grants, on SQLite served by this process alone.
    pub grant_view: Option<Arc<grant_view::GrantView>>,
    /// Which tenants have no webhook endpoint or alert, on SQLite served by this process alone.
    pub tenant_hooks: Option<Arc<tenant_hooks::TenantHooks>>,
    /// Turns for `ApplyCreditsBatch` (see [`apply_batch::BATCHES_AT_ONCE`]).
    pub batch_turns: Arc<tokio::sync::Semaphore>,
}

impl Services {
    pub fn new(db: Db) -> Self {
        Self::with_clock(db, Arc::new(SystemClock))
    }

    pub fn with_clock(db: Db, clock: Arc<dyn Clock>) -> Self {
        Services {
            db,
            clock,
            idempotency: IdempotencyKeys::default(),
            rate_limiter: None,
            key_cache: None,
            api_key_pepper: None,
            events: events::EventPump::default(),
            event_retention: events::DEFAULT_RETENTION,
            event_streams: Arc::new(event_stream::EventStreams::default()),
            refuse_private_webhook_addresses: false,
            max_hold_seconds: crate::domain::credit_hold::DEFAULT_MAX_HOLD_SECONDS,
            grant_view: None,
            tenant_hooks: None,
            batch_turns: Arc::new(tokio::sync::Semaphore::new(apply_batch::BATCHES_AT_ONCE)),
        }
    }

    /// Keeps events for `retention` (the Events API's window and the pruner's cutoff).
    pub fn with_event_retention(mut self, retention: std::time::Duration) -> Self {
        self.event_retention = retention;
        self
    }

    /// For the database's only writer (`Db::has_one_writer`: SQLite under `creditd serve`'s
    /// lock), which sees every change and so may keep what another replica's writes would make
    /// stale: summaries from an in-memory view of up to `summary_view_customers` customers'
    /// grants (`0`: no view), and which tenants have no webhook endpoint or alert.
    pub fn as_only_writer(mut self, summary_view_customers: usize) -> Self {
        self.grant_view = (summary_view_customers > 0)
            .then(|| Arc::new(grant_view::GrantView::new(summary_view_customers)));
        self.tenant_hooks = Some(Arc::default());
        self
    }

    /// Bounds the lifetime of credit holds to `seconds` (at least one second).
    pub fn with_max_hold_seconds(mut self, seconds: i64) -> Self {
        self.max_hold_seconds = seconds.max(1);
        self
    }

    /// Serves at most `max` event streams at once.
    pub fn with_max_event_streams(mut self, max: usize) -> Self {
        self.event_streams = Arc::new(event_stream::EventStreams::new(max));
        self
    }

    /// Refuses webhook endpoint URLs whose host is or resolves to an internal address.
    pub fn with_private_webhook_addresses_refused(mut self, refuse: bool) -> Self {
        self.refuse_private_webhook_addresses = refuse;
        self
    }

    /// These services on the database's background connections (see [`Db::for_background`]),
    /// for work that runs beside the requests.
    pub fn with_background_db(&self) -> Self {
        let mut background = self.clone();
        background.db = self.db.for_background();
        background
    }

    /// Limits each API key to `per_second` requests per second (0 = no limit).
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limiter =
            (per_second > 0).then(|| Arc::new(rate_limit::RateLimiter::new(per_second)));
        self
    }

    /// Hashes API keys with `pepper` (HMAC-SHA256) instead of plain SHA-256.
    pub fn with_api_key_pepper(mut self, pepper: Option<Vec<u8>>) -> Self {
        self.api_key_pepper = pepper.map(Arc::from);
        self
    }

    /// Trusts a verified API key for `ttl` before reading its row again (zero = every request).
    pub fn with_key_cache(mut self, ttl: std::time::Duration) -> Self {
        self.key_cache = (!ttl.is_zero()).then(|| Arc::new(key_cache::KeyCache::new(ttl)));
        self
    }
}

/// The page of a keyset list once its cursor is known to exist: a cursor among the listed rows
/// surely does; otherwise (a cursor outside the filter, or none such) `cursor_exists` is asked.
/// `object` names the cursor's kind in the error.
pub(crate) async fn page_after_cursor<T, Fut>(
    listed: store::KeysetPage<T>,
    request: &crate::domain::ListRequest,
    object: &str,
    cursor_exists: impl FnOnce(String) -> Fut,
) -> Result<crate::domain::Page<T>>
where
    Fut: std::future::Future<Output = Result<bool>>,
{
    if let Some(cursor) = &request.cursor
        && !listed.cursor_matched
        && !cursor_exists(cursor.id().to_string()).await?
    {
        return Err(crate::error::Error::no_such(
            object,
            cursor.id(),
            cursor.param(),
        ));
    }
    Ok(listed.page)
}

/// Runs `$body` as one idempotent write transaction: opens it (replaying a stored result for
/// the claimed key instead, if there is one), runs the body with the transaction, its "now"
/// and the batch collecting its events, then writes the events, stores the result and commits,
/// or rolls back on error; the whole is retried on serialization failures and deadlocks. A
/// replay runs no body, so it emits no event. A macro because the body borrows the transaction
/// across awaits, which an async closure cannot express with a `Send` future.
macro_rules! idempotent_write {
    ($services:expr, $ctx:expr, $claim:expr, |$tx:ident, $now:ident, $events:ident| $body:expr) => {
        $services
            .db
            .retrying(|| async {
                let ($tx, $now) = match $services.begin_write($claim).await? {
                    $crate::service::Write::Replay(result) => return Ok(result),
                    $crate::service::Write::Run(tx, now) => (tx, now),
                };
                #[allow(unused_mut, reason = "a write that emits nothing")]
                let mut $events = $crate::service::events::EventBatch::for_request($ctx, $now);
                let outcome = async { $body }.await;
                $services
                    .finish_write($tx, $now, $claim, outcome, $events)
                    .await
            })
            .await
    };
}
pub(crate) use idempotent_write;

/// Runs `$body` in a write transaction of its own, with `$tx: &Transaction`, `$now` and
/// `$events: &mut EventBatch` (started by `$start`, which may use `$now`), then settles it
/// (`Services::settle_with_events`); run again when that is safe (`Db::retrying`). For
/// writes without an idempotency key: automatic ones (the sweepers, a clock's advance) and
/// batches (idempotent per line).
macro_rules! write_with_events {
    ($services:expr, |$now:ident| $start:expr, |$tx:ident, $events:ident| $body:expr) => {
        $services
            .db
            .retrying(|| async {
                let $now = $services.clock.now();
                let transaction = $services.db.begin().await?;
                let mut batch = $start;
                let outcome = {
                    let $tx = &transaction;
                    let $events = &mut batch;
                    async { $body }.await
                };
                $services
                    .settle_with_events(transaction, outcome, batch)
                    .await
            })
            .await
    };
}
pub(crate) use write_with_events;

/// The start of an idempotent write: either the stored result of an earlier identical
/// request, or an open transaction to do the work in, with its "now".
pub(crate) enum Write<T> {
    Replay(T),
    Run(Transaction, i64),
}

impl Services {
    /// Opens a write transaction (fixing "now" for it) and checks the claimed idempotency key.
    pub(crate) async fn begin_write<T: DeserializeOwned>(
        &self,
        claim: &idempotency::Claim,
    ) -> Result<Write<T>> {
        let now = self.clock.now();
        let tx = self.db.begin().await?;
        match claim.replay(&tx, now).await {
            Ok(None) => Ok(Write::Run(tx, now)),
            Ok(Some(result)) => {
                store::rollback(tx).await?;
                claim.mark_replayed();
                Ok(Write::Replay(result))
            }
            Err(error) => {
                store::rollback(tx).await?;
                Err(error)
            }
        }
    }

    /// "Now" for a customer: its test clock's frozen time, or `real_now` without a clock.
    pub(crate) async fn customer_now(
        &self,
        conn: &impl store::Connection,
        test_clock: Option<&str>,
        real_now: i64,
    ) -> Result<i64> {
        match test_clock {
            Some(clock) => store::test_clocks::frozen_time(conn, clock).await,
            None => Ok(real_now),
        }
    }

    /// Ends a write: on success stores the result for the idempotency key and writes its
    /// events in the same transaction and commits; on failure rolls back at once, so no lock
    /// (row or advisory) outlives the request.
    pub(crate) async fn finish_write<T: Serialize>(
        &self,
        tx: Transaction,
        now: i64,
        claim: &idempotency::Claim,
        outcome: Result<T>,
        events: events::EventBatch,
    ) -> Result<T> {
        let outcome = match outcome {
            Ok(result) => claim.record(&tx, now, &result).await.map(|()| result),
            Err(error) => Err(error),
        };
        self.settle_with_events(tx, outcome, events).await
    }

    /// Works through what is due in batches of 100 (`due(now)`, read outside any transaction)
    /// until none is left, settling each with `settle_one` (its own transaction, which decides
    /// under the customer's lock whether it is still due). Stops early when a whole batch was
    /// taken by another replica between the read and the locks. Returns how many it settled.
    pub(crate) async fn sweep_due<D, Due, Settle>(
        &self,
        due: impl Fn(i64) -> Due,
        settle_one: impl Fn(D) -> Settle,
    ) -> Result<u64>
    where
        Due: Future<Output = Result<Vec<D>>>,
        Settle: Future<Output = Result<bool>>,
    {
        let mut settled = 0;
        loop {
            let batch = due(self.clock.now()).await?;
            if batch.is_empty() {
                return Ok(settled);
            }
            let mut progressed = false;
            for candidate in batch {
                if settle_one(candidate).await? {
                    settled += 1;
                    progressed = true;
                }
            }
            if !progressed {
                return Ok(settled);
            }
        }
    }

    /// Ends a write by its outcome: on success writes `events` in the transaction and commits
    /// (then wakes the event pump), on failure rolls back, so the change and its events commit
    /// together or not at all.
    pub(crate) async fn settle_with_events<T>(
        &self,
        tx: Transaction,
        outcome: Result<T>,
        events: events::EventBatch,
    ) -> Result<T> {
        let emitted = !events.is_empty();
        let outcome = match outcome {
            Ok(value) => events
                .write(&tx, self.tenant_hooks.as_deref())
                .await
                .map(|()| value),
            Err(error) => Err(error),
        };
        let committed = store::settle(tx, outcome).await?;
        if emitted {
            self.events.committed();
        }
        Ok(committed)
    }
}
