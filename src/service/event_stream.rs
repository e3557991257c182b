//! Following the event stream (`WatchEvents`, and through it `creditd listen`).
//!
//! A stream starts at a resume point: right after an event the client names (its stream
//! position, looked up in the caller's account), or at the current head ("from now"). It then
//! reads the account's events after its position in stream order, in short queries on the
//! reader pool ([`READ_BATCH`] at a time), hands each one on, and when there is nothing new
//! waits for the [`EventPump`](super::events::EventPump) to announce a newer head (with a
//! fallback poll, [`FALLBACK_POLL`]). Because a reader can only ever see a prefix of the stream
//! (see [`crate::store::events`]), continuing from the last position read never skips an
//! event and never repeats one.
//!
//! Back-pressure: each stream has one producer task and a bounded channel of
//! [`STREAM_BUFFER`] events to its client. When the client does not read (and the transport's
//! flow-control window is full), the channel fills, the producer parks on `send` and reads
//! nothing more, so a stream holds at most [`MAX_HELD_PER_STREAM`] events in memory whatever the
//! client does. [`EventStreams::held_events`] counts them across the process.
//!
//! A read that fails (the database lost) ends the stream with that error, UNAVAILABLE for a
//! lost connection: the client resumes after the last event it received, here or elsewhere.
//!
//! Streams per process are capped ([`EventStreams::new`], `CREDITD_MAX_EVENT_STREAMS`): each
//! holds no database connection while it waits, only for its one short read, so the cap bounds
//! the load on the pool. At shutdown every stream ends with UNAVAILABLE, so clients resume
//! elsewhere instead of holding the drain for its whole grace period.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::{RequestContext, Services};
use crate::domain::event::{Event, EventType, type_matches};
use crate::domain::ids::id_created_millis;
use crate::error::{Error, ErrorKind, Result};
use crate::store::{self, events::StreamQuery};

/// How many events a stream buffers for its client before its producer waits.
pub const STREAM_BUFFER: usize = 64;
/// How many events one read takes from the database.
pub const READ_BATCH: u64 = 100;
/// The most events one stream holds in memory: a full channel plus the batch being handed on.
pub const MAX_HELD_PER_STREAM: usize = STREAM_BUFFER + READ_BATCH as usize;
/// How often an idle stream reads even without news from the pump (a lost wake-up's bound).
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// How long a resume waits for its event to be numbered (PostgreSQL) before giving up.
const SEQUENCE_WAIT: Duration = Duration::from_secs(5);
/// The most type filters one stream takes.
pub const MAX_TYPE_FILTERS: usize = 20;

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchFrom {
    /// Right after this event (the last one the client processed).
    AfterEvent(String),
    /// At the current head: only events that commit from now on.
    Now,
}

/// Which events a stream carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Exact type names (groups are expanded); empty = every type.
    types: Vec<String>,
    customer_id: Option<String>,
}

impl WatchFilter {
    /// Checks `patterns` (exact names or groups ending in `*`, at most [`MAX_TYPE_FILTERS`]),
    /// expanding groups into the types they match so the database filters them all. A
    /// pattern that matches no type creditd emits is refused, as Stripe refuses an unknown
    /// `enabled_events` entry.
    pub fn parse(patterns: Vec<String>, customer_id: Option<String>) -> Result<WatchFilter> {
        if patterns.len() > MAX_TYPE_FILTERS {
            return Err(Error::invalid_param(
                "types",
                format!("At most {MAX_TYPE_FILTERS} types may be given."),
            ));
        }
        let mut types: Vec<String> = Vec::new();
        for pattern in &patterns {
            if pattern == "*" {
                return Ok(WatchFilter {
                    types: Vec::new(),
                    customer_id,
                });
            }
            let matching: Vec<&str> = EventType::ALL
                .iter()
                .map(|kind| kind.as_str())
                .filter(|name| type_matches(pattern, name))
                .collect();
            if matching.is_empty() {
                return Err(Error::invalid_param(
                    "types",
                    format!(
                        "Invalid event type: {pattern:?} is not a type creditd emits, nor a \
                         group ending in `*` that matches one."
                    ),
                ));
            }
            for name in matching {
                if !types.iter().any(|known| known == name) {
                    types.push(name.to_string());
                }
            }
        }
        types.sort();
        Ok(WatchFilter { types, customer_id })
    }

    pub fn matches(&self, event: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&event.kind))
            && (self.customer_id.is_none() || self.customer_id == event.customer_id)
    }
}

/// The process's streams: how many may be open, how many events they hold, and the signal that
/// ends them at shutdown.
pub struct EventStreams {
    permits: Arc<Semaphore>,
    max: usize,
    held: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
}

/// The default cap on streams per process.
pub const DEFAULT_MAX_STREAMS: usize = 1024;

impl Default for EventStreams {
    fn default() -> Self {
        EventStreams::new(DEFAULT_MAX_STREAMS)
    }
}

impl EventStreams {
    /// At most `max` streams open at once (at least 1).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        EventStreams {
            permits: Arc::new(Semaphore::new(max)),
            max,
            held: Arc::new(AtomicUsize::new(0)),
            stop: watch::Sender::new(false),
        }
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Events read from the database and not yet taken by their clients, over every stream.
    pub fn held_events(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Ends every stream (with UNAVAILABLE) and refuses new ones: the server is stopping.
    pub fn close(&self) {
        self.stop.send_replace(true);
        self.permits.close();
    }
}

/// An event on its way to a client, counted in [`EventStreams::held_events`] until dropped.
struct Held {
    event: Event,
    counter: Arc<AtomicUsize>,
}

impl Held {
    fn new(event: Event, counter: &Arc<AtomicUsize>) -> Held {
        counter.fetch_add(1, Ordering::Relaxed);
        Held {
            event,
            counter: counter.clone(),
        }
    }

    fn take(mut self) -> Event {
        std::mem::replace(&mut self.event, empty_event())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

fn empty_event() -> Event {
    Event {
        id: String::new(),
        livemode: false,
        created: 0,
        kind: String::new(),
        customer_id: None,
        request: Default::default(),
        api_version: String::new(),
        pending_webhooks: 0,
        data: String::new(),
        sequence: None,
    }
}

/// A stream of events in stream order; ends only with an error (the database failed, or the
/// server is stopping). Dropping it stops its producer at once.
pub struct EventStream {
    receiver: mpsc::Receiver<Result<Held>>,
    producer: tokio::task::JoinHandle<()>,
    ended: bool,
}

impl futures::Stream for EventStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.receiver.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(held))) => Poll::Ready(Some(Ok(held.take()))),
            Poll::Ready(Some(Err(error))) => {
                self.ended = true;
                Poll::Ready(Some(Err(error)))
            }
            // The producer stopped without a word (at shutdown, with the channel full): the
            // client still learns the stream did not end normally.
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(stopping())))
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.producer.abort();
    }
}

impl Services {
    /// Follows the caller's account's events from `from`, only those `filter` lets through. See
    /// the module's docs for the guarantees.
    pub async fn watch_events(
        &self,
        ctx: &RequestContext,
        from: WatchFrom,
        filter: WatchFilter,
    ) -> Result<EventStream> {
        if *self.event_streams.stop.borrow() {
            return Err(stopping());
        }
        let permit = self
            .event_streams
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Error::new(
                    ErrorKind::RateLimited,
                    format!(
                        "This server already serves its maximum of {} event streams; retry \
                         later or on another replica.",
                        self.event_streams.max
                    ),
                )
                .with_code("rate_limit")
            })?;
        let after = self.resume_position(ctx, &from).await?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let producer = Producer {
            services: self.clone(),
            tenant: ctx.tenant.clone(),
            filter,
            after,
            _permit: permit,
        };
        let producer = tokio::spawn(producer.run(sender));
        Ok(EventStream {
            receiver,
            producer,
            ended: false,
        })
    }

    /// The stream position a stream starts after.
    async fn resume_position(&self, ctx: &RequestContext, from: &WatchFrom) -> Result<i64> {
        let id = match from {
            // On PostgreSQL, what committed before this call is numbered first, so "now" does
            // not let an already committed (and acknowledged) event through as new.
            WatchFrom::Now => return self.events.run_once(&self.db).await,
            WatchFrom::AfterEvent(id) => id,
        };
        let mut head = self.events.subscribe();
        let deadline = tokio::time::Instant::now() + SEQUENCE_WAIT;
        loop {
            head.borrow_and_update();
            let Some(event) = store::events::find(self.db.reader(), &ctx.tenant, id).await? else {
                return Err(self.unknown_resume_point(id));
            };
            // Still stored but past retention: events after it may already be pruned.
            if event.created < self.clock.now().saturating_sub(self.retention_seconds()) {
                return Err(self.resume_point_expired(id));
            }
            if let Some(sequence) = event.sequence {
                return Ok(sequence);
            }
            // Committed but not yet numbered (PostgreSQL): the pump is about to.
            if tokio::time::timeout_at(deadline, head.changed())
                .await
                .is_err()
            {
                return Err(Error::unavailable(
                    "The resume event has not been given its stream position yet; retry.",
                    anyhow::anyhow!("event {id} still unnumbered after {SEQUENCE_WAIT:?}"),
                ));
            }
        }
    }

    fn retention_seconds(&self) -> i64 {
        i64::try_from(self.event_retention.as_secs()).unwrap_or(i64::MAX)
    }

    /// An `after_event` this account has no event for: older than the retention window (so
    /// possibly pruned) or never one of its events.
    fn unknown_resume_point(&self, id: &str) -> Error {
        let now_millis = self.clock.now().saturating_mul(1000);
        let retention_millis = self.retention_seconds().saturating_mul(1000);
        match id_created_millis(id) {
            Some(created)
                if id.starts_with("evt_")
                    && created < now_millis.saturating_sub(retention_millis) =>
            {
                self.resume_point_expired(id)
            }
            _ => Error::resource_missing("event", id, "after_event"),
        }
    }

    fn resume_point_expired(&self, id: &str) -> Error {
        Error::new(
            ErrorKind::OutOfRange,
            format!(
                "The resume point '{id}' is older than the event retention window ({} days): \
                 events after it may be gone. Start again with from_now (and reconcile from the \
                 objects themselves).",
                self.retention_seconds() / 86_400
            ),
        )
        .with_code("resume_point_expired")
        .with_param("after_event")
    }
}

/// The task behind one stream.
struct Producer {
    services: Services,
    tenant: crate::domain::Tenant,
    filter: WatchFilter,
    after: i64,
    _permit: OwnedSemaphorePermit,
}

impl Producer {
    async fn run(mut self, sender: mpsc::Sender<Result<Held>>) {
        let held = self.services.event_streams.held.clone();
        let mut stop = self.services.event_streams.stop.subscribe();
        let mut head = self.services.events.subscribe();
        loop {
            if *stop.borrow_and_update() {
                let _ = sender.send(Err(stopping())).await;
                return;
            }
            // Marked seen before reading: a head announced after this point wakes the wait.
            head.borrow_and_update();
            let batch = match self.read().await {
                Ok(batch) => batch,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = tokio::time::timeout(FALLBACK_POLL, head.changed()) => {}
                    _ = stop.changed() => {}
                    () = sender.closed() => return,
                }
                continue;
            }
            let batch: Vec<Held> = batch
                .into_iter()
                .map(|event| Held::new(event, &held))
                .collect();
            for event in batch {
                if let Some(position) = event.event.sequence {
                    self.after = position;
                }
                tokio::select! {
                    sent = sender.send(Ok(event)) => if sent.is_err() { return },
                    _ = stop.changed() => {
                        let _ = sender.try_send(Err(stopping()));
                        return;
                    }
                }
            }
        }
    }

    async fn read(&self) -> Result<Vec<Event>> {
        let events = store::events::read_after(
            self.services.db.reader(),
            &StreamQuery {
                tenant: &self.tenant,
                after: self.after,
                types: &self.filter.types,
                customer_id: self.filter.customer_id.as_deref(),
                limit: READ_BATCH,
            },
        )
        .await?;
        debug_assert!(events.iter().all(|event| self.filter.matches(event)));
        Ok(events)
    }
}

fn stopping() -> Error {
    Error::unavailable(
        "The server is shutting down; resume from the last event you received.",
        anyhow::anyhow!("event stream ended by shutdown"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_expand_to_the_types_they_match() {
        let filter =
            WatchFilter::parse(vec!["customer.*".into(), "customer.created".into()], None).unwrap();
        assert_eq!(
            filter.types,
            ["customer.created", "customer.deleted", "customer.updated"]
        );
        let all = WatchFilter::parse(vec!["billing.*".into(), "*".into()], None).unwrap();
        assert!(all.types.is_empty());
        assert!(WatchFilter::parse(vec![], None).unwrap().types.is_empty());
    }

    #[test]
    fn unknown_types_and_too_many_filters_are_refused() {
        let error = WatchFilter::parse(vec!["charge.succeeded".into()], None).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert_eq!(error.param.as_deref(), Some("types"));
        assert!(WatchFilter::parse(vec!["nothing.*".into()], None).is_err());
        let many = vec!["customer.created".to_string(); MAX_TYPE_FILTERS + 1];
        assert!(WatchFilter::parse(many, None).is_err());
    }
}
