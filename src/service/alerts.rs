//! Billing alerts (`credit_balance_threshold`): create, read, list, activate, deactivate,
//! archive; and their evaluation after every change to a customer's credit balance.
//!
//! [`evaluate_alerts`] is called by [`super::events::EventBatch::write`], so in the same
//! transaction as the change, for each customer whose balance may have changed (the batch has
//! a ledger entry, grant or hold event for it). Every such write holds the customer's lock, so
//! the evaluations of one customer's alerts happen one at a time, each seeing the previous
//! one's state: an alert fires exactly once per crossing, whatever the concurrency.

use std::collections::BTreeMap;

use super::{RequestContext, Services, idempotent_write, page_after_cursor};
use crate::domain::Tenant;
use crate::domain::alert::{
    AlertAction, AlertFilter, AlertStatus, CreateAlert, CreditBalanceAlert, Crossing,
};
use crate::domain::ids::{IdKind, new_id};
use crate::domain::pagination::{ListRequest, Page};
use crate::error::{Error, Result};
use crate::store::{self, Transaction};

/// One alert that crossed its threshold in a write, with the balance that made it cross.
#[derive(Debug, Clone)]
pub(crate) struct AlertCrossing {
    pub crossing: Crossing,
    pub alert: CreditBalanceAlert,
    pub balance: i64,
}

/// Evaluates the active alerts of `customers` at their current balances (each customer's own
/// time: its test clock's, or `real_now`), records each alert's new state, and returns the
/// crossings. One indexed read when none of the customers has an active alert.
pub(crate) async fn evaluate_alerts(
    tx: &Transaction,
    tenant: &Tenant,
    real_now: i64,
    customers: &[&str],
) -> Result<Vec<AlertCrossing>> {
    let alerts = store::alerts::active_for_customers(tx, tenant, customers).await?;
    if alerts.is_empty() {
        return Ok(Vec::new());
    }
    let mut by_customer: BTreeMap<String, Vec<CreditBalanceAlert>> = BTreeMap::new();
    for alert in alerts {
        by_customer
            .entry(alert.customer_id.clone())
            .or_default()
            .push(alert);
    }
    let mut crossings = Vec::new();
    for (customer_id, mut alerts) in by_customer {
        let Some(found) =
            store::credit_grants::customer_grants(tx, tenant, &customer_id, None).await?
        else {
            continue;
        };
        let now = found.clock_time.unwrap_or(real_now);
        let held = held_on(tx, tenant, &customer_id, &found, now).await?;
        alerts.sort_by(|a, b| a.id.cmp(&b.id));
        for mut alert in alerts {
            let balance = alert.balance(&found.grants, &held, now);
            if let Some(crossing) = alert.evaluate(balance) {
                store::alerts::save_state(tx, tenant, &alert).await?;
                crossings.push(AlertCrossing {
                    crossing,
                    alert,
                    balance,
                });
            }
        }
    }
    Ok(crossings)
}

impl Services {
    /// Creates an active alert; its state starts as the customer's balance is now (an alert
    /// created at or below its threshold does not fire until the balance has risen above it
    /// and crossed again). The customer is locked, as for any balance change.
    pub async fn create_alert(
        &self,
        ctx: &RequestContext,
        command: CreateAlert,
    ) -> Result<CreditBalanceAlert> {
        let claim = self
            .idempotency
            .claim(ctx, "billing_alert.create", &command)?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            let found = store::credit_grants::lock_customer_grants(
                &tx,
                &ctx.tenant,
                &command.customer_id,
                None,
            )
            .await?
            .ok_or_else(|| {
                Error::no_such(
                    "customer",
                    &command.customer_id,
                    "credit_balance_threshold[filters][0][customer]",
                )
            })?;
            let mut alert = command.clone().into_alert(
                new_id(IdKind::BillingAlert, ctx.tenant.livemode),
                ctx.tenant.livemode,
                now,
            );
            let at = found.clock_time.unwrap_or(now);
            let held = held_on(&tx, &ctx.tenant, &command.customer_id, &found, at).await?;
            let balance = alert.balance(&found.grants, &held, at);
            alert.below = alert.is_below(balance);
            if let Some(hooks) = &self.tenant_hooks {
                hooks.forget_alerts(&ctx.tenant);
            }
            store::alerts::insert(&tx, &ctx.tenant, &alert).await?;
            Ok(alert)
        })
    }

    /// An alert, archived ones included.
    pub async fn get_alert(&self, ctx: &RequestContext, id: &str) -> Result<CreditBalanceAlert> {
        store::alerts::find(self.db.reader(), &ctx.tenant, id)
            .await?
            .ok_or_else(|| Error::resource_missing("billing alert", id, "id"))
    }

    /// Alerts that are not archived, newest first.
    pub async fn list_alerts(
        &self,
        ctx: &RequestContext,
        filter: &AlertFilter,
        request: &ListRequest,
    ) -> Result<Page<CreditBalanceAlert>> {
        let (conn, tenant) = (self.db.reader(), &ctx.tenant);
        let listed = store::alerts::list(conn, tenant, filter, request).await?;
        page_after_cursor(listed, request, "billing alert", |id| async move {
            store::alerts::exists(conn, tenant, &id).await
        })
        .await
    }

    /// Activates, deactivates or archives an alert. Activating an alert that was not active
    /// sets its state from the balance now, without an event (as at creation). Done under the
    /// customer's lock, so it cannot interleave with an evaluation.
    pub async fn change_alert(
        &self,
        ctx: &RequestContext,
        id: &str,
        action: AlertAction,
    ) -> Result<CreditBalanceAlert> {
        let claim = self
            .idempotency
            .claim(ctx, "billing_alert.change", &(id, action))?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            let missing = || Error::resource_missing("billing alert", id, "id");
            let customer_id = store::alerts::find(&tx, &ctx.tenant, id)
                .await?
                .ok_or_else(missing)?
                .customer_id;
            let found =
                store::credit_grants::lock_customer_grants(&tx, &ctx.tenant, &customer_id, None)
                    .await?;
            let current = store::alerts::find(&tx, &ctx.tenant, id)
                .await?
                .ok_or_else(missing)?;
            let mut changed = current.transition(action)?;
            if changed.status == AlertStatus::Active
                && current.status != AlertStatus::Active
                && let Some(found) = &found
            {
                let at = found.clock_time.unwrap_or(now);
                let held = held_on(&tx, &ctx.tenant, &customer_id, found, at).await?;
                let balance = changed.balance(&found.grants, &held, at);
                changed.below = changed.is_below(balance);
            }
            if changed != current {
                if let Some(hooks) = &self.tenant_hooks {
                    hooks.forget_alerts(&ctx.tenant);
                }
                store::alerts::save_state(&tx, &ctx.tenant, &changed).await?;
            }
            Ok(changed)
        })
    }
}

/// What the customer's live credit holds reserve on each of `found`'s grants at `now` (no read
/// when `found` saw no active hold): the summary's other input, so an alert's balance is the
/// summary's `available_balance`.
async fn held_on(
    conn: &impl store::Connection,
    tenant: &crate::domain::Tenant,
    customer_id: &str,
    found: &store::credit_grants::CustomerGrants,
    now: i64,
) -> Result<std::collections::BTreeMap<String, i64>> {
    let holds = store::credit_holds::active_for_found(conn, tenant, customer_id, found).await?;
    Ok(crate::domain::credit_hold::held_by_grant(
        &holds,
        &found.grants,
        now,
    ))
}
