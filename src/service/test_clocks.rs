//! Test clocks. Advancing is two steps: the clock is marked `advancing` (committed), then one
//! transaction runs everything that became due on its customers in time order and sets the
//! new frozen time. A crash between the two leaves the clock `advancing`; it is resumed (by
//! any replica) and never half-applied, because the second step is a single transaction.

use super::idempotency::Claim;
use super::{
    RequestContext, Services, Write, idempotent_write, ledger, page_after_cursor, write_with_events,
};

use super::events::EventBatch;
use crate::domain::Tenant;
use crate::domain::event::EventType;
use crate::domain::ids::{IdKind, new_id};
use crate::domain::ledger::lapse_until;
use crate::domain::pagination::{ListRequest, Page};
use crate::domain::test_clock::{
    ClockStatus, CreateTestClock, LIFETIME_SECONDS, TestClock, check_test_mode,
};
use crate::error::{Error, Result};
use crate::render::{CustomerJson, TestClockJson};
use crate::store;

/// The outcome of an advance's first step.
enum Advance {
    /// The key's stored answer.
    Replayed(TestClock),
    /// The clock, now `advancing`.
    Marked(TestClock),
}

impl Services {
    pub async fn create_test_clock(
        &self,
        ctx: &RequestContext,
        command: CreateTestClock,
    ) -> Result<TestClock> {
        check_test_mode(ctx.tenant.livemode)?;
        let claim = self.idempotency.claim(ctx, "test_clock.create", &command)?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            // Clocks only exist in test mode, so their IDs need no `_test_` marker.
            let clock = TestClock {
                id: new_id(IdKind::TestClock, true),
                livemode: false,
                created: now,
                name: command.name.clone(),
                frozen_time: command.frozen_time,
                status: ClockStatus::Ready,
                target_frozen_time: None,
                deletes_after: now + LIFETIME_SECONDS,
            };
            if let Some(customer_id) = &command.customer {
                let customer = store::customers::lock(&tx, &ctx.tenant, customer_id)
                    .await?
                    .ok_or_else(|| Error::no_such("customer", customer_id, "customer"))?;
                if let Some(existing) = customer.test_clock {
                    return Err(Error::invalid_param(
                        "customer",
                        format!(
                            "Customer {customer_id} is already attached to test clock {existing}; a customer can never leave its clock."
                        ),
                    ));
                }
                store::test_clocks::insert(&tx, &ctx.tenant, &clock).await?;
                store::test_clocks::attach_customer(&tx, customer_id, &clock.id).await?;
            } else {
                store::test_clocks::insert(&tx, &ctx.tenant, &clock).await?;
            }
            events.emit(
                EventType::TestClockCreated,
                None,
                &TestClockJson::from(clock.clone()),
            )?;
            Ok(clock)
        })
    }

    pub async fn get_test_clock(&self, ctx: &RequestContext, id: &str) -> Result<TestClock> {
        check_test_mode(ctx.tenant.livemode)?;
        store::test_clocks::find(self.db.reader(), &ctx.tenant, id)
            .await?
            .ok_or_else(|| Error::resource_missing("test_clock", id, "test_clock"))
    }

    pub async fn list_test_clocks(
        &self,
        ctx: &RequestContext,
        request: &ListRequest,
    ) -> Result<Page<TestClock>> {
        check_test_mode(ctx.tenant.livemode)?;
        let (conn, tenant) = (self.db.reader(), &ctx.tenant);
        let listed = store::test_clocks::list(conn, tenant, request).await?;
        page_after_cursor(listed, request, "test_clock", |id| async move {
            Ok(store::test_clocks::find(conn, tenant, &id).await?.is_some())
        })
        .await
    }

    /// Deletes the clock and every object of its customers (the customers too).
    pub async fn delete_test_clock(&self, ctx: &RequestContext, id: &str) -> Result<String> {
        check_test_mode(ctx.tenant.livemode)?;
        self.db
            .retrying(|| async {
                let tx = self.db.begin().await?;
                let mut events = EventBatch::for_request(ctx, self.clock.now());
                let outcome = async {
                    let clock = store::test_clocks::lock(&tx, &ctx.tenant, id)
                        .await?
                        .ok_or_else(|| Error::resource_missing("test_clock", id, "test_clock"))?;
                    let customers = store::test_clocks::customers_on(&tx, &ctx.tenant, id).await?;
                    for customer_id in &customers {
                        store::customers::lock_including_deleted(&tx, &ctx.tenant, customer_id)
                            .await?;
                        // Customers deleted before keep their one `customer.deleted`.
                        if let Some(customer) =
                            store::customers::find(&tx, &ctx.tenant, customer_id).await?
                            && !customer.deleted
                        {
                            events.emit(
                                EventType::CustomerDeleted,
                                Some(customer_id),
                                &CustomerJson::from(customer),
                            )?;
                        }
                    }
                    store::test_clocks::delete_with_customers(&tx, &ctx.tenant, id, &customers)
                        .await?;
                    events.emit(
                        EventType::TestClockDeleted,
                        None,
                        &TestClockJson::from(clock),
                    )
                }
                .await;
                self.settle_with_events(tx, outcome, events)
                    .await
                    .map(|()| id.to_string())
            })
            .await
    }

    /// Moves the clock forward to `target` and runs what became due: grants whose
    /// `expires_at` passed get their `credits_expired` entry, dated at the expiry, in time
    /// order (grants whose `effective_at` passed simply start counting). Returns the clock,
    /// `ready` once done, or still `advancing` if the work failed and will be resumed.
    pub async fn advance_test_clock(
        &self,
        ctx: &RequestContext,
        id: &str,
        target: i64,
    ) -> Result<TestClock> {
        check_test_mode(ctx.tenant.livemode)?;
        let claim = self
            .idempotency
            .claim(ctx, "test_clock.advance", &(id, target))?;
        // Step one: mark the clock advancing (committed on its own), unless this key already
        // has its answer, which is replayed. The answer is stored by step two, with the work.
        let marked = self
            .db
            .retrying(|| async {
                let (tx, now) = match self.begin_write::<TestClock>(&claim).await? {
                    Write::Replay(answer) => return Ok(Advance::Replayed(answer)),
                    Write::Run(tx, now) => (tx, now),
                };
                let mut events = EventBatch::for_request(ctx, now);
                let outcome = async {
                    let mut clock = store::test_clocks::lock(&tx, &ctx.tenant, id)
                        .await?
                        .ok_or_else(|| Error::resource_missing("test_clock", id, "test_clock"))?;
                    if claim.is_keyed()
                        && clock.status == ClockStatus::Ready
                        && clock.frozen_time == target
                    {
                        // An earlier attempt with this key marked the advance and was cut off
                        // (a crash) before it could store its answer; the resumer finished the
                        // work. The clock is where the key asked for: that is the answer, kept
                        // for the key's later retries, with nothing to do or emit.
                        claim.record(&tx, now, &clock).await?;
                        return Ok(clock);
                    }
                    clock.check_advance(target)?;
                    clock.status = ClockStatus::Advancing;
                    clock.target_frozen_time = Some(target);
                    store::test_clocks::save_state(&tx, &clock).await?;
                    events.emit(
                        EventType::TestClockAdvancing,
                        None,
                        &TestClockJson::from(clock.clone()),
                    )?;
                    Ok(clock)
                }
                .await;
                self.settle_with_events(tx, outcome, events)
                    .await
                    .map(Advance::Marked)
            })
            .await?;
        let advancing = match marked {
            Advance::Replayed(answer) => return Ok(answer),
            Advance::Marked(clock) => clock,
        };
        match self.complete_advance(&ctx.tenant, id, Some(&claim)).await {
            Ok(Some(clock)) => Ok(clock),
            Ok(None) => Err(Error::resource_missing("test_clock", id, "test_clock")),
            Err(error) => {
                tracing::warn!(clock = id, error = %error, "advancing a test clock failed; it will be resumed");
                Ok(advancing)
            }
        }
    }

    /// Finishes every clock left `advancing`; returns how many.
    pub async fn resume_advancing_test_clocks(&self) -> Result<u64> {
        let mut resumed = 0;
        for (tenant, id) in store::test_clocks::advancing(self.db.reader()).await? {
            if self.complete_advance(&tenant, &id, None).await?.is_some() {
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// The second step of an advance, in one transaction under the clock's and its customers'
    /// row locks. A clock that is not advancing (another replica finished it) is left alone.
    async fn complete_advance(
        &self,
        tenant: &Tenant,
        id: &str,
        claim: Option<&Claim>,
    ) -> Result<Option<TestClock>> {
        // Automatic: a replica may resume the advance long after its request.
        write_with_events!(
            self,
            |now| EventBatch::automatic(tenant, now),
            |tx, events| {
                let Some(mut clock) = store::test_clocks::lock(tx, tenant, id).await? else {
                    return Ok(None);
                };
                let Some(target) = clock
                    .target_frozen_time
                    .filter(|_| clock.status == ClockStatus::Advancing)
                else {
                    return Ok(Some(clock));
                };
                let customers = store::test_clocks::customers_on(tx, tenant, id).await?;
                let mut grants = Vec::new();
                for customer in &customers {
                    store::customers::lock_including_deleted(tx, tenant, customer).await?;
                    grants.extend(store::credit_grants::for_customer(tx, tenant, customer).await?);
                }
                for change in lapse_until(&grants, target)? {
                    ledger::save_change(tx, tenant, change, events).await?;
                }
                for customer in &customers {
                    super::credit_holds::advance_holds(tx, tenant, customer, target, events)
                        .await?;
                }
                clock.frozen_time = target;
                clock.status = ClockStatus::Ready;
                clock.target_frozen_time = None;
                store::test_clocks::save_state(tx, &clock).await?;
                if let Some(claim) = claim {
                    claim.record(tx, now, &clock).await?;
                }
                events.emit(
                    EventType::TestClockReady,
                    None,
                    &TestClockJson::from(clock.clone()),
                )?;
                Ok(Some(clock))
            }
        )
    }
}
