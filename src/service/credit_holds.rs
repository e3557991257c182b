//! Credit holds: reserve credits for metered work, then capture them against an invoice line
//! or release them. The rules are `domain::credit_hold` (and `domain::ledger::capture_hold`);
//! here each write takes the customer's lock (the same serialization as every credit write),
//! reads the customer's grants and active holds under it, and persists what the domain decided
//! with its events, in one transaction.

use serde::{Deserialize, Serialize};

use super::events::EventBatch;
use super::{
    RequestContext, Services, idempotent_write, ledger, page_after_cursor, write_with_events,
};
use crate::domain::Tenant;
use crate::domain::credit_application::CreditApplication;
use crate::domain::credit_grant::CreditGrant;
use crate::domain::credit_hold::{
    CaptureCreditHold, CreateCreditHold, CreditHold, HoldFilter, NewHold, reserve,
};
use crate::domain::event::EventType;
use crate::domain::ids::{IdKind, new_id};
use crate::domain::ledger::capture_hold;
use crate::domain::pagination::{ListRequest, Page};
use crate::error::{Error, Result};
use crate::render::CreditHoldJson;
use crate::store::{self, Transaction};

/// A captured hold and the application its capture recorded for the invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedHold {
    pub hold: CreditHold,
    pub application: CreditApplication,
}

fn hold_missing(id: &str) -> Error {
    Error::resource_missing("credit hold", id, "id")
}

impl Services {
    /// Reserves credits in burn-down order over the grants' available remainders, or refuses
    /// (`insufficient_credits`) without reserving anything.
    pub async fn create_credit_hold(
        &self,
        ctx: &RequestContext,
        command: CreateCreditHold,
    ) -> Result<CreditHold> {
        let claim = self
            .idempotency
            .claim(ctx, "credit_hold.create", &command)?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            let found = store::credit_grants::lock_customer_grants(
                &tx,
                &ctx.tenant,
                command.customer_id(),
                None,
            )
            .await?
            .ok_or_else(|| Error::no_such("customer", command.customer_id(), "customer"))?;
            let now = found.clock_time.unwrap_or(now);
            let holds = store::credit_holds::active_for_found(
                &tx,
                &ctx.tenant,
                command.customer_id(),
                &found,
            )
            .await?;
            let expires_at = command.expiry(now, self.max_hold_seconds)?;
            let hold = reserve(
                &found.grants,
                &holds,
                &command,
                NewHold {
                    id: new_id(IdKind::CreditHold, ctx.tenant.livemode),
                    livemode: ctx.tenant.livemode,
                    now,
                    expires_at,
                    // A customer's grants are on its test clock, if it has one.
                    test_clock: found.grants.first().and_then(|g| g.test_clock.clone()),
                },
            )?;
            store::credit_holds::insert(&tx, &ctx.tenant, &hold).await?;
            events.emit(
                EventType::CreditHoldCreated,
                Some(&hold.customer_id),
                &CreditHoldJson::from(hold.clone()),
            )?;
            Ok(hold)
        })
    }

    /// Spends all or part of what the hold reserves on an invoice line, exactly as
    /// `ApplyCredits` would (same entries, events and line record), and releases the rest.
    pub async fn capture_credit_hold(
        &self,
        ctx: &RequestContext,
        capture: CaptureCreditHold,
    ) -> Result<CapturedHold> {
        let claim = self
            .idempotency
            .claim(ctx, "credit_hold.capture", &capture)?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            let customer_id = store::credit_holds::find(&tx, &ctx.tenant, capture.hold_id())
                .await?
                .ok_or_else(|| hold_missing(capture.hold_id()))?
                .customer_id;
            let found = store::credit_grants::lock_customer_grants(
                &tx,
                &ctx.tenant,
                &customer_id,
                Some((capture.invoice(), capture.invoice_line_item())),
            )
            .await?
            .ok_or_else(|| Error::no_such("customer", &customer_id, "customer"))?;
            let hold = store::credit_holds::find(&tx, &ctx.tenant, capture.hold_id())
                .await?
                .ok_or_else(|| hold_missing(capture.hold_id()))?;
            let now = found.clock_time.unwrap_or(now);
            hold.check_open(now, "capture")?;
            if found.line_applied {
                return Err(Error::invalid_state(format!(
                    "Credits were already applied to invoice line {} of invoice {}.",
                    capture.invoice_line_item(),
                    capture.invoice()
                ))
                .with_code("invoice_line_already_applied"));
            }
            let captured = capture_hold(&hold, &found.grants, &capture, now)?;
            let application = ledger::record_line(
                &tx,
                &ctx.tenant,
                &captured.command,
                captured.application,
                now,
                &mut events,
            )
            .await?;
            store::credit_holds::save(&tx, &ctx.tenant, &captured.hold).await?;
            events.emit(
                EventType::CreditHoldCaptured,
                Some(&captured.hold.customer_id),
                &CreditHoldJson::from(captured.hold.clone()),
            )?;
            Ok(CapturedHold {
                hold: captured.hold,
                application,
            })
        })
    }

    /// Frees everything the hold reserves.
    pub async fn release_credit_hold(&self, ctx: &RequestContext, id: &str) -> Result<CreditHold> {
        let claim = self.idempotency.claim(ctx, "credit_hold.release", &id)?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            let (hold, grants, now) = locked_hold(&tx, &ctx.tenant, id, now).await?;
            let mut hold = hold;
            hold.check_open(now, "release")?;
            hold.lapse(&grants, now)?;
            let released = hold.release(now)?;
            store::credit_holds::save(&tx, &ctx.tenant, &released).await?;
            events.emit(
                EventType::CreditHoldReleased,
                Some(&released.customer_id),
                &CreditHoldJson::from(released.clone()),
            )?;
            Ok(released)
        })
    }

    pub async fn get_credit_hold(&self, ctx: &RequestContext, id: &str) -> Result<CreditHold> {
        store::credit_holds::find(self.db.reader(), &ctx.tenant, id)
            .await?
            .ok_or_else(|| hold_missing(id))
    }

    /// Newest first.
    pub async fn list_credit_holds(
        &self,
        ctx: &RequestContext,
        filter: &HoldFilter,
        request: &ListRequest,
    ) -> Result<Page<CreditHold>> {
        let conn = self.db.reader();
        if let Some(customer_id) = &filter.customer_id
            && !store::customers::exists(conn, &ctx.tenant, customer_id).await?
        {
            return Err(Error::no_such("customer", customer_id, "customer"));
        }
        let tenant = &ctx.tenant;
        let listed = store::credit_holds::list(conn, tenant, filter, request).await?;
        page_after_cursor(listed, request, "credit hold", |id| async move {
            Ok(store::credit_holds::find(conn, tenant, &id)
                .await?
                .is_some())
        })
        .await
    }

    /// Ends every active hold past its expiry as `expired` (freeing what it reserved), each
    /// exactly once: decided under the customer's lock after reading the hold again, so
    /// concurrent sweepers on several replicas are safe. Returns how many holds expired.
    pub async fn sweep_expired_credit_holds(&self) -> Result<u64> {
        self.sweep_due(
            |now| store::credit_holds::due_for_expiry(self.db.reader(), now, 100),
            |due| async move { self.expire_hold(&due).await },
        )
        .await
    }

    async fn expire_hold(&self, due: &store::credit_holds::DueHold) -> Result<bool> {
        write_with_events!(
            self,
            |now| EventBatch::automatic(&due.tenant, now),
            |tx, events| {
                // A deleted customer's holds still expire (as its grants do).
                if store::customers::lock_including_deleted(tx, &due.tenant, &due.customer_id)
                    .await?
                    .is_none()
                {
                    return Ok(false);
                }
                let grants =
                    store::credit_grants::for_customer(tx, &due.tenant, &due.customer_id).await?;
                let Some(mut hold) =
                    store::credit_holds::find(tx, &due.tenant, &due.hold_id).await?
                else {
                    return Ok(false);
                };
                hold.lapse(&grants, now)?;
                // Decided under the lock: another sweeper may have been first.
                let Some(expired) = hold.expire_if_due(now) else {
                    return Ok(false);
                };
                store::credit_holds::save(tx, &due.tenant, &expired).await?;
                events.emit(
                    EventType::CreditHoldExpired,
                    Some(&expired.customer_id),
                    &CreditHoldJson::from(expired.clone()),
                )?;
                Ok(true)
            }
        )
    }
}

/// Finds a hold, locks its customer (reading its grants), and reads the hold again under the
/// lock; with the customer's now.
async fn locked_hold(
    tx: &Transaction,
    tenant: &Tenant,
    id: &str,
    now: i64,
) -> Result<(CreditHold, Vec<CreditGrant>, i64)> {
    let customer_id = store::credit_holds::find(tx, tenant, id)
        .await?
        .ok_or_else(|| hold_missing(id))?
        .customer_id;
    let found = store::credit_grants::lock_customer_grants(tx, tenant, &customer_id, None)
        .await?
        .ok_or_else(|| Error::no_such("customer", &customer_id, "customer"))?;
    let hold = store::credit_holds::find(tx, tenant, id)
        .await?
        .ok_or_else(|| hold_missing(id))?;
    Ok((hold, found.grants, found.clock_time.unwrap_or(now)))
}

/// A test-clock advance to `target` for a customer on the clock (under its lock, after the
/// clock's grant lapses were written): records lapses on its active holds, and expires those
/// whose `expires_at` the clock has reached (`creditd.credit_hold.expired`), as the real-time
/// sweeper does for customers without a clock.
pub(crate) async fn advance_holds(
    tx: &Transaction,
    tenant: &Tenant,
    customer_id: &str,
    target: i64,
    events: &mut EventBatch,
) -> Result<()> {
    let holds = store::credit_holds::active_for_customer(tx, tenant, customer_id).await?;
    if holds.is_empty() {
        return Ok(());
    }
    let grants = store::credit_grants::for_customer(tx, tenant, customer_id).await?;
    for mut hold in holds {
        let lapsed = hold.lapse(&grants, target)?;
        if let Some(expired) = hold.expire_if_due(target) {
            store::credit_holds::save(tx, tenant, &expired).await?;
            events.emit(
                EventType::CreditHoldExpired,
                Some(&expired.customer_id),
                &CreditHoldJson::from(expired.clone()),
            )?;
        } else if lapsed {
            store::credit_holds::save(tx, tenant, &hold).await?;
        }
    }
    Ok(())
}

/// Records, on the customer's active holds, the lapse of what they reserved on grants that
/// have just been voided or expired (called under the customer's lock after such a change).
/// The held part lapses with the grant; the hold shrinks by it (`lapsed_amount`).
pub(crate) async fn record_lapsed_holds(
    tx: &Transaction,
    tenant: &Tenant,
    customer_id: &str,
    now: i64,
) -> Result<()> {
    let holds = store::credit_holds::active_for_customer(tx, tenant, customer_id).await?;
    if holds.is_empty() {
        return Ok(());
    }
    let grants = store::credit_grants::for_customer(tx, tenant, customer_id).await?;
    for mut hold in holds {
        if hold.lapse(&grants, now)? {
            store::credit_holds::save(tx, tenant, &hold).await?;
        }
    }
    Ok(())
}
