//! Emitting events (the transactional outbox) and following them.
//!
//! A write collects its events in an [`EventBatch`] and writes them in its own transaction, just
//! before it commits: an event exists exactly when its change committed. A replayed idempotent
//! request runs no body, so it emits nothing. After commit the writer wakes the [`EventPump`],
//! which (on PostgreSQL) numbers newly committed events and publishes the newest stream
//! position to the process's watchers; it also polls, to see other replicas' events.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, watch};

use super::tenant_hooks::TenantHooks;
use super::{RequestContext, Services, page_after_cursor};
use crate::domain::Tenant;
use crate::domain::alert::Crossing;
use crate::domain::event::{Event, EventFilter, EventRequest, EventType, event_data};
use crate::domain::ids::{IdKind, new_id};
use crate::domain::pagination::{ListRequest, Page};
use crate::domain::webhook::subscribes;
use crate::error::{Error, Result};
use crate::render::{AlertCrossingJson, STRIPE_API_VERSION};
use crate::store::{self, Db, Transaction};

/// How long events are kept unless configured otherwise (Stripe's 30 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How many events one sequencer transaction numbers at most.
const SEQUENCER_BATCH: u64 = 1000;

/// The events one write emits, in the order its changes happened.
pub(crate) struct EventBatch {
    tenant: Tenant,
    request: EventRequest,
    created: i64,
    events: Vec<Event>,
}

impl EventBatch {
    /// Events caused by the API request `ctx`, at `now` (real time, seconds).
    pub(crate) fn for_request(ctx: &RequestContext, now: i64) -> Self {
        EventBatch {
            tenant: ctx.tenant.clone(),
            request: EventRequest {
                id: ctx.request_id.clone(),
                idempotency_key: ctx.idempotency_key.clone(),
            },
            created: now,
            events: Vec::new(),
        }
    }

    /// Events of an automatic change (no request), at `now`.
    pub(crate) fn automatic(tenant: &Tenant, now: i64) -> Self {
        EventBatch {
            tenant: tenant.clone(),
            request: EventRequest::automatic(),
            created: now,
            events: Vec::new(),
        }
    }

    /// Records a `*.created`, `*.deleted` or other event about `object` (rendered as the REST
    /// API renders it).
    pub(crate) fn emit(
        &mut self,
        kind: EventType,
        customer_id: Option<&str>,
        object: &impl Serialize,
    ) -> Result<()> {
        let data = event_data(to_value(object)?, None)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("an event without data")))?;
        self.push(kind, customer_id, data);
        Ok(())
    }

    /// Records an update of an object from `before` to `after` (both rendered), with the old
    /// values of what changed; nothing when nothing a client can see changed.
    pub(crate) fn emit_update(
        &mut self,
        kind: EventType,
        customer_id: Option<&str>,
        before: &impl Serialize,
        after: &impl Serialize,
    ) -> Result<()> {
        let before = to_value(before)?;
        if let Some(data) = event_data(to_value(after)?, Some(&before)) {
            self.push(kind, customer_id, data);
        }
        Ok(())
    }

    fn push(&mut self, kind: EventType, customer_id: Option<&str>, data: String) {
        self.events.push(Event {
            id: new_id(IdKind::Event, self.tenant.livemode),
            livemode: self.tenant.livemode,
            created: self.created,
            kind: kind.as_str().to_string(),
            customer_id: customer_id.map(str::to_string),
            request: self.request.clone(),
            api_version: STRIPE_API_VERSION.to_string(),
            pending_webhooks: 0,
            data,
            sequence: None,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Writes the events in the caller's transaction, with their webhook deliveries: one read
    /// of the tenant's enabled endpoints (none for a batch without events), then one pending
    /// delivery per (event, endpoint subscribed to its type), and each event's
    /// `pending_webhooks` set to its number of deliveries. An endpoint disabled now never gets
    /// these events, even if enabled later.
    /// `hooks` (a single-writer deployment) spares the lookups of a tenant known to have no
    /// endpoint or alert.
    pub(crate) async fn write(
        mut self,
        tx: &Transaction,
        hooks: Option<&TenantHooks>,
    ) -> Result<()> {
        if self.events.is_empty() {
            return Ok(());
        }
        self.fire_alerts(tx, hooks).await?;
        let endpoints = match hooks {
            Some(hooks) if hooks.no_endpoints(&self.tenant) => Vec::new(),
            _ => {
                let endpoints = store::webhooks::enabled_endpoints(tx, &self.tenant).await?;
                if let Some(hooks) = hooks {
                    hooks.saw_endpoints(&self.tenant, !endpoints.is_empty());
                }
                endpoints
            }
        };
        let mut deliveries = Vec::new();
        if !endpoints.is_empty() {
            let due = super::webhook_delivery::now_ms();
            for event in &mut self.events {
                for (endpoint_id, enabled_events) in &endpoints {
                    if subscribes(enabled_events, &event.kind) {
                        deliveries.push(store::webhooks::NewDelivery {
                            event_id: event.id.clone(),
                            endpoint_id: endpoint_id.clone(),
                            created: event.created,
                            next_attempt_at: due,
                        });
                        event.pending_webhooks += 1;
                    }
                }
            }
        }
        store::events::insert(tx, &self.tenant, &self.events).await?;
        store::webhooks::insert_deliveries(tx, &self.tenant, deliveries).await
    }
}

impl EventBatch {
    /// The billing alert hook: evaluates the active alerts of every customer whose credit
    /// balance this batch may have changed (see [`EventType::may_change_credit_balance`]) and
    /// adds a `billing.alert.triggered` or `creditd.alert.recovered` event per crossing, after
    /// the change's own events, with no `request` (automatic, as the contract has it for alert
    /// triggering). Nothing is read for a batch without such events.
    async fn fire_alerts(&mut self, tx: &Transaction, hooks: Option<&TenantHooks>) -> Result<()> {
        let mut customers: Vec<&str> = self
            .events
            .iter()
            .filter(|event| EventType::may_change_credit_balance(&event.kind))
            .filter_map(|event| event.customer_id.as_deref())
            .collect();
        if customers.is_empty() {
            return Ok(());
        }
        if let Some(hooks) = hooks {
            let any = match hooks.has_alerts(&self.tenant) {
                Some(any) => any,
                None => {
                    let any = store::alerts::any_active(tx, &self.tenant).await?;
                    hooks.saw_alerts(&self.tenant, any);
                    any
                }
            };
            if !any {
                return Ok(());
            }
        }
        customers.sort_unstable();
        customers.dedup();
        let crossings =
            super::alerts::evaluate_alerts(tx, &self.tenant, self.created, &customers).await?;
        for crossing in crossings {
            let customer = crossing.alert.customer_id.clone();
            let kind = match crossing.crossing {
                Crossing::Triggered => EventType::BillingAlertTriggered,
                Crossing::Recovered => EventType::AlertRecovered,
            };
            let object = AlertCrossingJson::new(
                crossing.crossing,
                crossing.alert,
                crossing.balance,
                self.created,
            );
            self.emit(kind, Some(&customer), &object)?;
            // A crossing is automatic, like an expiry: Stripe's `request` is null for it.
            if let Some(event) = self.events.last_mut() {
                event.request = EventRequest::automatic();
            }
        }
        Ok(())
    }
}

fn to_value(object: &impl Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(object).map_err(Error::internal)
}

/// Numbers committed events (PostgreSQL) and tells the process's watchers how far the stream
/// has come. Cheap to clone.
#[derive(Clone)]
pub struct EventPump {
    wake: Arc<Notify>,
    head: watch::Sender<i64>,
    /// Wakes the webhook delivery worker (a commit that wrote events may have queued
    /// deliveries).
    deliveries: Arc<Notify>,
}

impl Default for EventPump {
    fn default() -> Self {
        EventPump {
            wake: Arc::new(Notify::new()),
            head: watch::Sender::new(0),
            deliveries: Arc::new(Notify::new()),
        }
    }
}

impl EventPump {
    /// Called after a commit that wrote events.
    pub(crate) fn committed(&self) {
        self.wake.notify_one();
        self.deliveries.notify_one();
    }

    /// What the webhook delivery worker waits on between polls.
    pub(crate) fn delivery_wakeup(&self) -> Arc<Notify> {
        self.deliveries.clone()
    }

    /// The newest stream position this process knows of; changes as events commit.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// One round: numbers what committed (PostgreSQL), then publishes the newest position.
    pub async fn run_once(&self, db: &Db) -> Result<i64> {
        // Only when something waits to be numbered: an idle server opens no transactions.
        if db.is_postgres() && store::events::any_unsequenced(db.reader()).await? {
            loop {
                let numbered = db
                    .retrying(|| async {
                        let tx = db.begin().await?;
                        let outcome = store::events::assign_sequences(&tx, SEQUENCER_BATCH).await;
                        store::settle(tx, outcome).await
                    })
                    .await?;
                if numbered < SEQUENCER_BATCH {
                    break;
                }
            }
        }
        let head = store::events::head(db.reader()).await?;
        self.head.send_if_modified(|known| {
            let moved = head > *known;
            if moved {
                *known = head;
            }
            moved
        });
        Ok(head)
    }

    /// Runs until the process stops: a round after every wake-up from a local commit, and at
    /// least every `poll` (other replicas' events, and anything a lost wake-up missed).
    pub async fn run(self, db: Db, poll: Duration) {
        loop {
            if let Err(error) = self.run_once(&db).await {
                tracing::warn!(error = %error, "numbering or reading new events failed; retrying");
            }
            let _ = tokio::time::timeout(poll, self.wake.notified()).await;
        }
    }
}

/// The Events API: reading events within the retention window, and pruning older ones.
impl Services {
    /// The oldest `created` still visible at `now`: events before it are past retention.
    fn events_visible_from(&self, now: i64) -> i64 {
        let retention = i64::try_from(self.event_retention.as_secs()).unwrap_or(i64::MAX);
        now.saturating_sub(retention)
    }

    /// The caller's events that pass `filter`, newest first, within the retention window
    /// (older ones are hidden even before the pruner deletes them).
    pub async fn list_events(
        &self,
        ctx: &RequestContext,
        filter: &EventFilter,
        request: &ListRequest,
    ) -> Result<Page<Event>> {
        let (conn, tenant) = (self.db.reader(), &ctx.tenant);
        let visible_from = self.events_visible_from(self.clock.now());
        let listed = store::events::list(conn, tenant, filter, request, visible_from).await?;
        page_after_cursor(listed, request, "event", |id| async move {
            Ok(store::events::find(conn, tenant, &id)
                .await?
                .is_some_and(|event| event.created >= visible_from))
        })
        .await
    }

    /// One of the caller's events; `resource_missing` if there is none or it is past retention.
    pub async fn get_event(&self, ctx: &RequestContext, id: &str) -> Result<Event> {
        let visible_from = self.events_visible_from(self.clock.now());
        store::events::find(self.db.reader(), &ctx.tenant, id)
            .await?
            .filter(|event| event.created >= visible_from)
            .ok_or_else(|| Error::resource_missing("event", id, "id"))
    }

    /// Deletes events past retention at `now` (keeping the newest stream position; see
    /// [`store::events::prune`]). Returns how many it deleted.
    pub async fn prune_events(&self, now: i64) -> Result<u64> {
        store::events::prune(self.db.writer(), self.events_visible_from(now)).await
    }
}
