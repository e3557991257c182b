//! What a customer can spend (the summary), the credit ledger, and spending credits on
//! invoice lines: the heart of the service.

use std::collections::BTreeMap;

use super::grant_view::CustomerState;
use super::{RequestContext, Services, idempotent_write, ledger, page_after_cursor};
use crate::domain::credit_application::{
    AppliedLine, ApplyCredits, CreditApplication, ExplainLine, ReinstateCredits,
};
use crate::domain::credit_balance_transaction::{
    CreditBalanceTransaction, CreditTransactionFilter,
};
use crate::domain::credit_grant::{
    CreditGrant, CurrencyBalance, SummaryFilter, SummaryQuery, summarize,
};
use crate::domain::credit_hold::held_by_grant;
use crate::domain::ledger::{InvoiceLine, apply_to_line};
use crate::domain::pagination::{ListRequest, Page};
use crate::error::{Error, Result};
use crate::store;

/// Credits given back for a voided invoice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reinstatement {
    pub reinstated: i64,
    pub entries: Vec<CreditBalanceTransaction>,
}

impl Services {
    /// One balance per currency of the customer's grants matching `filter`, computed from
    /// the grants' materialized remainders (O(grants), not O(history)). With `as_of`, from each
    /// grant's state at that moment: its stored running remainder after its last entry
    /// recorded by then (one index lookup per grant, still not O(history)).
    pub async fn credit_balance_summary(
        &self,
        ctx: &RequestContext,
        query: &SummaryQuery,
    ) -> Result<Vec<CurrencyBalance>> {
        let (customer_id, filter) = (query.customer_id(), query.filter());
        let missing = || Error::no_such("customer", customer_id, "customer");
        let conn = self.db.reader();
        let (state, remaining_at) = match query.as_of() {
            None => (
                self.current_state(ctx, customer_id)
                    .await?
                    .ok_or_else(missing)?,
                None,
            ),
            Some(as_of) => {
                let (found, remaining_at) = store::credit_grants::customer_grants_as_of(
                    conn,
                    &ctx.tenant,
                    customer_id,
                    as_of,
                )
                .await?
                .ok_or_else(missing)?;
                let state = CustomerState {
                    clock_time: found.clock_time,
                    grants: found.grants,
                    holds: Vec::new(),
                };
                (state, Some(remaining_at))
            }
        };
        let now = state.clock_time.unwrap_or_else(|| self.clock.now());
        let moment = query.moment(now)?;
        let grants = state.grants;
        if let SummaryFilter::CreditGrant(id) = filter
            && !grants.iter().any(|grant| &grant.id == id)
        {
            return Err(Error::no_such("credit grant", id, "filter[credit_grant]"));
        }
        let (grants, held) = match remaining_at {
            None => {
                let held = held_by_grant(&state.holds, &grants, moment);
                (grants, held)
            }
            // Holds are not kept as history: a past balance leaves them out.
            Some(remaining_at) => (
                grants
                    .iter()
                    .zip(remaining_at)
                    .filter_map(|(grant, remaining)| grant.state_at(remaining, moment))
                    .collect::<Vec<CreditGrant>>(),
                BTreeMap::new(),
            ),
        };
        Ok(summarize(&grants, &held, filter, moment))
    }

    /// The customer's grants, active holds and clock time as committed (`None`: no such
    /// customer): from the in-memory view when this process has one and it is current, else
    /// from the database (one statement, two for a customer with active holds), kept in the
    /// view for the next read.
    async fn current_state(
        &self,
        ctx: &RequestContext,
        customer_id: &str,
    ) -> Result<Option<CustomerState>> {
        let miss = match &self.grant_view {
            Some(view) => match view.lookup(&ctx.tenant, customer_id) {
                Ok(state) => return Ok(Some(state)),
                Err(miss) => Some(miss),
            },
            None => None,
        };
        let conn = self.db.reader();
        let Some(found) =
            store::credit_grants::customer_grants(conn, &ctx.tenant, customer_id, None).await?
        else {
            return Ok(None);
        };
        let holds =
            store::credit_holds::active_for_found(conn, &ctx.tenant, customer_id, &found).await?;
        let state = CustomerState {
            clock_time: found.clock_time,
            grants: found.grants,
            holds,
        };
        if let (Some(view), Some(miss)) = (&self.grant_view, miss) {
            view.keep(miss, &state);
        }
        Ok(Some(state))
    }

    pub async fn get_credit_balance_transaction(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> Result<CreditBalanceTransaction> {
        store::credit_balance_transactions::find(self.db.reader(), &ctx.tenant, id)
            .await?
            .ok_or_else(|| Error::resource_missing("credit balance transaction", id, "id"))
    }

    pub async fn list_credit_balance_transactions(
        &self,
        ctx: &RequestContext,
        filter: &CreditTransactionFilter,
        request: &ListRequest,
    ) -> Result<Page<CreditBalanceTransaction>> {
        let conn = self.db.reader();
        if !store::customers::exists(conn, &ctx.tenant, &filter.customer_id).await? {
            return Err(Error::no_such("customer", &filter.customer_id, "customer"));
        }
        if let Some(grant_id) = &filter.credit_grant_id {
            let grant = store::credit_grants::find(conn, &ctx.tenant, grant_id).await?;
            if grant.is_none_or(|grant| grant.customer_id != filter.customer_id) {
                return Err(Error::no_such("credit grant", grant_id, "credit_grant"));
            }
        }
        let tenant = &ctx.tenant;
        let listed =
            store::credit_balance_transactions::list(conn, tenant, filter, request).await?;
        page_after_cursor(
            listed,
            request,
            "credit balance transaction",
            |id| async move {
                Ok(store::credit_balance_transactions::find(conn, tenant, &id)
                    .await?
                    .is_some())
            },
        )
        .await
    }

    /// Applies the customer's eligible credits to one invoice line in burn-down order, one
    /// `credits_applied` entry per grant drawn from. The customer's row is locked for the
    /// whole transaction, so concurrent applications can never overspend. Applying the same
    /// line again returns the first result.
    pub async fn apply_credits(
        &self,
        ctx: &RequestContext,
        command: ApplyCredits,
    ) -> Result<CreditApplication> {
        let claim = self.idempotency.claim(ctx, "credits.apply", &command)?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            let line_ref = (command.invoice(), command.invoice_line_item());
            let found = store::credit_grants::lock_customer_grants(
                &tx,
                &ctx.tenant,
                command.customer_id(),
                Some(line_ref),
            )
            .await?
            .ok_or_else(|| Error::no_such("customer", command.customer_id(), "customer"))?;
            if found.line_applied {
                let existing = store::credit_balance_transactions::find_application(
                    &tx,
                    &ctx.tenant,
                    command.invoice(),
                    command.invoice_line_item(),
                )
                .await?
                .ok_or_else(|| {
                    Error::internal(anyhow::anyhow!("an application vanished under its lock"))
                })?;
                return earlier_application(&tx, ctx, &command, existing).await;
            }
            let now = found.clock_time.unwrap_or(now);
            let holds = store::credit_holds::active_for_found(
                &tx,
                &ctx.tenant,
                command.customer_id(),
                &found,
            )
            .await?;
            let held = held_by_grant(&holds, &found.grants, now);
            let application = apply_to_line(&found.grants, &held, &command, now)?;
            ledger::record_line(&tx, &ctx.tenant, &command, application, now, &mut events).await
        })
    }

    /// The application of one invoice line as recorded: its entries and the stored explanation
    /// of each draw and skip (exactly what `ApplyCredits` answered). `resource_missing` when no
    /// credits were applied to that line for this customer.
    pub async fn explain_application(
        &self,
        ctx: &RequestContext,
        line: &ExplainLine,
    ) -> Result<CreditApplication> {
        let conn = self.db.reader();
        let (customer_id, invoice, item) =
            (line.customer_id(), line.invoice(), line.invoice_line_item());
        if !store::customers::exists(conn, &ctx.tenant, customer_id).await? {
            return Err(Error::no_such("customer", customer_id, "customer"));
        }
        let applied =
            store::credit_balance_transactions::find_application(conn, &ctx.tenant, invoice, item)
                .await?
                .filter(|applied| applied.customer_id == customer_id)
                .ok_or_else(|| {
                    Error::resource_missing(
                        "credit application",
                        &format!("{invoice}/{item}"),
                        "invoice_line_item",
                    )
                })?;
        let entries = store::credit_balance_transactions::applied_to_line(
            conn,
            &ctx.tenant,
            customer_id,
            invoice,
            item,
        )
        .await?;
        Ok(applied.outcome(entries))
    }

    /// The invoice was voided: gives every amount applied to its lines back to the grant it
    /// came from (`credits_application_invoice_voided`). A grant that has expired or been
    /// voided since gets the credits written off again at once. Idempotent per line.
    pub async fn reinstate_invoice_credits(
        &self,
        ctx: &RequestContext,
        command: &ReinstateCredits,
    ) -> Result<Reinstatement> {
        let (customer_id, invoice) = (command.customer_id(), command.invoice());
        let claim = self
            .idempotency
            .claim(ctx, "credits.reinstate", &(customer_id, invoice))?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            let customer = store::customers::lock(&tx, &ctx.tenant, customer_id)
                .await?
                .ok_or_else(|| Error::no_such("customer", customer_id, "customer"))?;
            let now = self
                .customer_now(&tx, customer.test_clock.as_deref(), now)
                .await?;
            let lines = store::credit_balance_transactions::applications_to_reinstate(
                &tx,
                &ctx.tenant,
                customer_id,
                invoice,
            )
            .await?;
            // Each grant's state as the reinstatement goes, with the remainder it had when read.
            let mut grants: BTreeMap<String, (CreditGrant, i64)> = BTreeMap::new();
            let mut entries = Vec::new();
            let mut reinstated = 0;
            for line in &lines {
                let applied = store::credit_balance_transactions::applied_to_line(
                    &tx,
                    &ctx.tenant,
                    customer_id,
                    invoice,
                    &line.invoice_line_item,
                )
                .await?;
                for application in applied {
                    let grant_id = &application.credit_grant_id;
                    if !grants.contains_key(grant_id) {
                        let grant = store::credit_grants::find(&tx, &ctx.tenant, grant_id)
                            .await?
                            .ok_or_else(|| {
                                Error::internal(anyhow::anyhow!("applied entry without its grant"))
                            })?;
                        let remaining = grant.remaining;
                        grants.insert(grant_id.clone(), (grant, remaining));
                    }
                    let Some((grant, _)) = grants.get_mut(grant_id) else {
                        continue;
                    };
                    let step = grant.reinstate(
                        application.amount,
                        InvoiceLine {
                            invoice: invoice.to_string(),
                            invoice_line_item: line.invoice_line_item.clone(),
                        },
                        now,
                    )?;
                    entries.extend(ledger::entries_of(&ctx.tenant, &step.grant, &step.entries));
                    *grant = step.grant;
                    reinstated += application.amount;
                }
                store::credit_balance_transactions::mark_reinstated(
                    &tx,
                    &ctx.tenant,
                    invoice,
                    &line.invoice_line_item,
                    now,
                )
                .await?;
            }
            ledger::insert_entries(&tx, &ctx.tenant, &entries, &mut events).await?;
            for (grant, previous_remaining) in grants.values() {
                ledger::save_grant(&tx, &ctx.tenant, grant, *previous_remaining).await?;
            }
            Ok(Reinstatement {
                reinstated,
                entries,
            })
        })
    }
}

/// The result of an earlier application of the same line, or an error when it came with
/// different terms.
/// The refusal of a line that was already applied on other terms.
pub(super) fn other_terms(command: &ApplyCredits) -> Error {
    Error::invalid_state(format!(
        "Credits were already applied to invoice line {} of invoice {} with a different customer, currency or amount due.",
        command.invoice_line_item(),
        command.invoice()
    ))
}

pub(super) async fn earlier_application(
    tx: &store::Transaction,
    ctx: &RequestContext,
    command: &ApplyCredits,
    existing: AppliedLine,
) -> Result<CreditApplication> {
    if !existing.has_terms_of(command) {
        return Err(other_terms(command));
    }
    let entries = store::credit_balance_transactions::applied_to_line(
        tx,
        &ctx.tenant,
        command.customer_id(),
        command.invoice(),
        command.invoice_line_item(),
    )
    .await?;
    Ok(existing.outcome(entries))
}
