//! Credit grants: create, read, update, expire, void. Every write locks the grant's customer,
//! changes the grant's materialized remainder and writes the matching ledger entry in one
//! transaction.

use super::events::EventBatch;
use super::{
    RequestContext, Services, idempotent_write, ledger, page_after_cursor, write_with_events,
};
use crate::domain::Tenant;
use crate::domain::credit_grant::{CreateCreditGrant, CreditGrant, UpdateCreditGrant};
use crate::domain::event::EventType;
use crate::domain::ids::{IdKind, new_id};
use crate::domain::ledger::{GrantChange, NewGrant};
use crate::domain::pagination::{ListRequest, Page};
use crate::error::{Error, Result};
use crate::render::CreditGrantJson;
use crate::store::{self, Transaction};

impl Services {
    pub async fn create_credit_grant(
        &self,
        ctx: &RequestContext,
        command: CreateCreditGrant,
    ) -> Result<CreditGrant> {
        let claim = self
            .idempotency
            .claim(ctx, "credit_grant.create", &command)?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            let customer = store::customers::lock(&tx, &ctx.tenant, command.customer_id())
                .await?
                .ok_or_else(|| Error::no_such("customer", command.customer_id(), "customer"))?;
            let now = self
                .customer_now(&tx, customer.test_clock.as_deref(), now)
                .await?;
            let change = CreditGrant::create(
                &command,
                NewGrant {
                    id: new_id(IdKind::CreditGrant, ctx.tenant.livemode),
                    livemode: ctx.tenant.livemode,
                    now,
                    test_clock: customer.test_clock,
                },
            )?;
            ledger::insert_new_grant(&tx, &ctx.tenant, change, &mut events).await
        })
    }

    pub async fn get_credit_grant(&self, ctx: &RequestContext, id: &str) -> Result<CreditGrant> {
        store::credit_grants::find(self.db.reader(), &ctx.tenant, id)
            .await?
            .ok_or_else(|| Error::resource_missing("credit grant", id, "id"))
    }

    pub async fn list_credit_grants(
        &self,
        ctx: &RequestContext,
        customer_id: Option<&str>,
        request: &ListRequest,
    ) -> Result<Page<CreditGrant>> {
        let conn = self.db.reader();
        if let Some(customer_id) = customer_id
            && !store::customers::exists(conn, &ctx.tenant, customer_id).await?
        {
            return Err(Error::no_such("customer", customer_id, "customer"));
        }
        let tenant = &ctx.tenant;
        let listed = store::credit_grants::list(conn, tenant, customer_id, request).await?;
        page_after_cursor(listed, request, "credit grant", |id| async move {
            Ok(store::credit_grants::find(conn, tenant, &id)
                .await?
                .is_some())
        })
        .await
    }

    pub async fn update_credit_grant(
        &self,
        ctx: &RequestContext,
        id: &str,
        command: UpdateCreditGrant,
    ) -> Result<CreditGrant> {
        let claim = self
            .idempotency
            .claim(ctx, "credit_grant.update", &(id, &command))?;
        self.change_grant(ctx, id, &claim, |grant, now| grant.update(&command, now))
            .await
    }

    /// Expires the grant now: `expires_at` becomes now and the remainder is written off as
    /// `credits_expired`.
    pub async fn expire_credit_grant(&self, ctx: &RequestContext, id: &str) -> Result<CreditGrant> {
        let claim = self.idempotency.claim(ctx, "credit_grant.expire", &id)?;
        self.change_grant(ctx, id, &claim, CreditGrant::expire_now)
            .await
    }

    /// Voids the grant: `voided_at` becomes now and the remainder is written off as
    /// `credits_voided`. Credits already applied stay applied.
    pub async fn void_credit_grant(&self, ctx: &RequestContext, id: &str) -> Result<CreditGrant> {
        let claim = self.idempotency.claim(ctx, "credit_grant.void", &id)?;
        self.change_grant(ctx, id, &claim, CreditGrant::void_now)
            .await
    }

    /// Locks the grant's customer, runs the lifecycle step `change` on the grant at the
    /// customer's now and persists what it decided.
    async fn change_grant(
        &self,
        ctx: &RequestContext,
        id: &str,
        claim: &super::idempotency::Claim,
        change: impl Fn(&CreditGrant, i64) -> Result<GrantChange>,
    ) -> Result<CreditGrant> {
        let change = &change;
        idempotent_write!(self, ctx, claim, |tx, now, events| {
            let before = locked_grant(&tx, &ctx.tenant, id).await?;
            let now = self
                .customer_now(&tx, before.test_clock.as_deref(), now)
                .await?;
            let change = change(&before, now)?;
            let (grant, _) = ledger::save_change(&tx, &ctx.tenant, change, &mut events).await?;
            super::credit_holds::record_lapsed_holds(&tx, &ctx.tenant, &grant.customer_id, now)
                .await?;
            events.emit_update(
                EventType::CreditGrantUpdated,
                Some(&grant.customer_id),
                &CreditGrantJson::new(before, None),
                &CreditGrantJson::new(grant.clone(), None),
            )?;
            Ok(grant)
        })
    }

    /// Writes `credits_expired` for grants whose `expires_at` has passed, each exactly once
    /// (the customer's row lock and a re-check make concurrent sweepers on several replicas
    /// safe). The entry's `effective_at` is the expiry time. Returns how many grants expired.
    pub async fn sweep_expired_credit_grants(&self) -> Result<u64> {
        self.sweep_due(
            |now| store::credit_grants::due_for_expiry(self.db.reader(), now, 100),
            |due| async move { self.record_expiry(&due).await },
        )
        .await
    }

    async fn record_expiry(&self, due: &store::credit_grants::DueForExpiry) -> Result<bool> {
        write_with_events!(
            self,
            |now| EventBatch::automatic(&due.tenant, now),
            |tx, events| {
                if store::customers::lock_including_deleted(tx, &due.tenant, &due.customer_id)
                    .await?
                    .is_none()
                {
                    return Ok(false);
                }
                let Some(grant) =
                    store::credit_grants::find(tx, &due.tenant, &due.grant_id).await?
                else {
                    return Ok(false);
                };
                // Decided under the lock: another sweeper may have been first.
                let Some(change) = grant.record_lapsed_expiry(now)? else {
                    return Ok(false);
                };
                ledger::save_change(tx, &due.tenant, change, events).await?;
                super::credit_holds::record_lapsed_holds(tx, &due.tenant, &due.customer_id, now)
                    .await?;
                Ok(true)
            }
        )
    }
}

/// Finds a grant and locks its customer, then reads the grant again under the lock.
pub(crate) async fn locked_grant(
    tx: &Transaction,
    tenant: &Tenant,
    id: &str,
) -> Result<CreditGrant> {
    let grant = store::credit_grants::find(tx, tenant, id)
        .await?
        .ok_or_else(|| Error::resource_missing("credit grant", id, "id"))?;
    store::customers::lock_including_deleted(tx, tenant, &grant.customer_id).await?;
    store::credit_grants::find(tx, tenant, id)
        .await?
        .ok_or_else(|| Error::resource_missing("credit grant", id, "id"))
}
