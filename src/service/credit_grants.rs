//! Credit grants: create, read, update, expire, void. Every write locks the grant's customer,
//! changes the grant's materialized remainder and writes the matching ledger entry in one
//! transaction.

use super::{RequestContext, Services, idempotent_write, page_after_cursor};
use crate::domain::Tenant;
use crate::domain::credit_balance_transaction::{CreditBalanceTransaction, EntryType};
use crate::domain::credit_grant::{
    CreateCreditGrant, CreditGrant, UpdateCreditGrant, check_expiry_after,
};
use crate::domain::ids::{IdKind, new_id};
use crate::domain::pagination::{ListRequest, Page};
use crate::error::{Error, Result};
use crate::store::{self, Connection, Transaction};

impl Services {
    pub async fn create_credit_grant(
        &self,
        ctx: &RequestContext,
        command: CreateCreditGrant,
    ) -> Result<CreditGrant> {
        let claim = self
            .idempotency
            .claim(ctx, "credit_grant.create", &command)?;
        idempotent_write!(self, &claim, |tx, now| {
            let customer = store::customers::lock(&tx, &ctx.tenant, &command.customer_id)
                .await?
                .ok_or_else(|| Error::no_such("customer", &command.customer_id, "customer"))?;
            let now = self
                .customer_now(&tx, customer.test_clock.as_deref(), now)
                .await?;
            let effective_at = command.effective_at.unwrap_or(now);
            if let Some(expires_at) = command.expires_at {
                check_expiry_after(expires_at, effective_at)?;
            }
            let grant = CreditGrant {
                id: new_id(IdKind::CreditGrant, ctx.tenant.livemode),
                livemode: ctx.tenant.livemode,
                created: now,
                updated: now,
                customer_id: command.customer_id.clone(),
                name: command.name.clone(),
                category: command.category,
                priority: command.priority,
                currency: command.currency.clone(),
                amount: command.amount,
                remaining: command.amount,
                scope: command.scope.clone(),
                effective_at,
                expires_at: command.expires_at,
                voided_at: None,
                expiry_recorded_at: None,
                metadata: command.metadata.clone(),
                test_clock: customer.test_clock,
            };
            store::credit_grants::insert(&tx, &ctx.tenant, &grant).await?;
            write_entry(
                &tx,
                &ctx.tenant,
                &grant,
                EntryType::CreditsGranted,
                grant.amount,
                now,
                effective_at,
                None,
            )
            .await?;
            Ok(grant)
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
        self.change_grant(ctx, id, &claim, |grant, now| {
            let previous = grant.remaining;
            *grant = command.apply_to(grant, now)?;
            debug_assert_eq!(previous, grant.remaining);
            Ok(None)
        })
        .await
    }

    /// Expires the grant now: `expires_at` becomes now and the remainder is written off as
    /// `credits_expired`.
    pub async fn expire_credit_grant(&self, ctx: &RequestContext, id: &str) -> Result<CreditGrant> {
        let claim = self.idempotency.claim(ctx, "credit_grant.expire", &id)?;
        self.change_grant(ctx, id, &claim, |grant, now| {
            grant.check_still_usable(now, "expire")?;
            grant.expires_at = Some(now);
            grant.expiry_recorded_at = Some(now);
            Ok(Some(EntryType::CreditsExpired))
        })
        .await
    }

    /// Voids the grant: `voided_at` becomes now and the remainder is written off as
    /// `credits_voided`. Credits already applied stay applied.
    pub async fn void_credit_grant(&self, ctx: &RequestContext, id: &str) -> Result<CreditGrant> {
        let claim = self.idempotency.claim(ctx, "credit_grant.void", &id)?;
        self.change_grant(ctx, id, &claim, |grant, now| {
            grant.check_still_usable(now, "void")?;
            grant.voided_at = Some(now);
            Ok(Some(EntryType::CreditsVoided))
        })
        .await
    }

    /// Locks the grant's customer, applies `change` to the grant and, when it names an entry
    /// type, writes the grant's whole remainder off as that entry.
    async fn change_grant(
        &self,
        ctx: &RequestContext,
        id: &str,
        claim: &super::idempotency::Claim,
        change: impl Fn(&mut CreditGrant, i64) -> Result<Option<EntryType>>,
    ) -> Result<CreditGrant> {
        let change = &change;
        idempotent_write!(self, claim, |tx, now| {
            let mut grant = locked_grant(&tx, &ctx.tenant, id).await?;
            let now = self
                .customer_now(&tx, grant.test_clock.as_deref(), now)
                .await?;
            let previous_remaining = grant.remaining;
            let write_off = change(&mut grant, now)?;
            grant.updated = now;
            if let Some(kind) = write_off {
                let amount = grant.remaining;
                if amount > 0 {
                    grant.debit(amount)?;
                    write_entry(&tx, &ctx.tenant, &grant, kind, amount, now, now, None).await?;
                }
            }
            store::credit_grants::save(&tx, &ctx.tenant, &grant, previous_remaining).await?;
            Ok(grant)
        })
    }

    /// Writes `credits_expired` for grants whose `expires_at` has passed, each exactly once
    /// (the customer's row lock and a re-check make concurrent sweepers on several replicas
    /// safe). The entry's `effective_at` is the expiry time. Returns how many grants expired.
    pub async fn sweep_expired_credit_grants(&self) -> Result<u64> {
        let mut expired = 0;
        loop {
            let now = self.clock.now();
            let due = store::credit_grants::due_for_expiry(self.db.reader(), now, 100).await?;
            if due.is_empty() {
                return Ok(expired);
            }
            let mut progressed = false;
            for candidate in &due {
                if self.record_expiry(candidate).await? {
                    expired += 1;
                    progressed = true;
                }
            }
            if !progressed {
                // Another replica took the rest between our read and our locks.
                return Ok(expired);
            }
        }
    }

    async fn record_expiry(&self, due: &store::credit_grants::DueForExpiry) -> Result<bool> {
        self.db
            .retrying(|| async {
                let now = self.clock.now();
                let tx = self.db.begin().await?;
                let outcome = async {
                    if store::customers::lock(&tx, &due.tenant, &due.customer_id)
                        .await?
                        .is_none()
                    {
                        return Ok(false);
                    }
                    let Some(mut grant) =
                        store::credit_grants::find(&tx, &due.tenant, &due.grant_id).await?
                    else {
                        return Ok(false);
                    };
                    let Some(expires_at) = grant.expires_at else {
                        return Ok(false);
                    };
                    // Re-checked under the lock: another sweeper may have been first.
                    if grant.expiry_recorded_at.is_some() || grant.is_voided() || expires_at > now {
                        return Ok(false);
                    }
                    let previous_remaining = grant.remaining;
                    if grant.remaining > 0 {
                        let amount = grant.remaining;
                        grant.debit(amount)?;
                        write_entry(
                            &tx,
                            &due.tenant,
                            &grant,
                            EntryType::CreditsExpired,
                            amount,
                            now,
                            expires_at,
                            None,
                        )
                        .await?;
                    }
                    grant.expiry_recorded_at = Some(now);
                    grant.updated = now;
                    store::credit_grants::save(&tx, &due.tenant, &grant, previous_remaining)
                        .await?;
                    Ok(true)
                }
                .await;
                store::settle(tx, outcome).await
            })
            .await
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
    store::customers::lock(tx, tenant, &grant.customer_id).await?;
    store::credit_grants::find(tx, tenant, id)
        .await?
        .ok_or_else(|| Error::resource_missing("credit grant", id, "id"))
}

/// Writes one ledger entry for `grant`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_entry(
    conn: &impl Connection,
    tenant: &Tenant,
    grant: &CreditGrant,
    kind: EntryType,
    amount: i64,
    created: i64,
    effective_at: i64,
    invoice_line: Option<(&str, &str)>,
) -> Result<CreditBalanceTransaction> {
    let entry = new_entry(
        tenant,
        grant,
        kind,
        amount,
        created,
        effective_at,
        invoice_line,
    );
    store::credit_balance_transactions::insert(conn, tenant, &entry).await?;
    count_entries(std::slice::from_ref(&entry));
    Ok(entry)
}

/// Counts written ledger entries in the metrics. Counted when written: a transaction retried
/// after a deadlock may count twice.
pub(crate) fn count_entries(entries: &[CreditBalanceTransaction]) {
    for entry in entries {
        crate::telemetry::metrics::record_credit_entry(
            entry.kind.as_str(),
            entry.currency.as_str(),
            entry.amount,
        );
    }
}

/// A new ledger entry for `grant` (not yet written).
pub(crate) fn new_entry(
    tenant: &Tenant,
    grant: &CreditGrant,
    kind: EntryType,
    amount: i64,
    created: i64,
    effective_at: i64,
    invoice_line: Option<(&str, &str)>,
) -> CreditBalanceTransaction {
    CreditBalanceTransaction {
        id: new_id(IdKind::CreditBalanceTransaction, tenant.livemode),
        livemode: tenant.livemode,
        created,
        effective_at,
        customer_id: grant.customer_id.clone(),
        credit_grant_id: grant.id.clone(),
        kind,
        amount,
        currency: grant.currency.clone(),
        invoice: invoice_line.map(|(invoice, _)| invoice.to_string()),
        invoice_line_item: invoice_line.map(|(_, line)| line.to_string()),
        test_clock: grant.test_clock.clone(),
    }
}
