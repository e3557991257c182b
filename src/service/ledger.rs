//! Persisting the credit ledger: the domain's lifecycle steps (`domain::ledger`) decide what
//! changes; this module gives their entries IDs and writes them with the grant's new state,
//! inside the caller's transaction. Every write of a credit entry goes through here.

use crate::domain::Tenant;
use crate::domain::credit_application::{ApplyCredits, CreditApplication};
use crate::domain::credit_balance_transaction::CreditBalanceTransaction;
use crate::domain::credit_grant::CreditGrant;
use crate::domain::event::EventType;
use crate::domain::ids::{IdKind, new_id};
use crate::domain::ledger::{EntryDraft, GrantChange, LineApplication};
use crate::error::Result;
use crate::render::{CreditBalanceTransactionJson, CreditGrantJson};
use crate::store::credit_balance_transactions::ApplicationWrites;
use crate::store::{self, Transaction};

use super::events::EventBatch;

/// The stored form of `drafts` for `grant`, each with a new (time-ordered) ID. Call it when the
/// step happens, so IDs follow the order of the steps.
pub(crate) fn entries_of(
    tenant: &Tenant,
    grant: &CreditGrant,
    drafts: &[EntryDraft],
) -> Vec<CreditBalanceTransaction> {
    drafts
        .iter()
        .map(|draft| CreditBalanceTransaction {
            id: new_id(IdKind::CreditBalanceTransaction, tenant.livemode),
            livemode: tenant.livemode,
            created: draft.created,
            effective_at: draft.effective_at,
            customer_id: grant.customer_id.clone(),
            credit_grant_id: grant.id.clone(),
            kind: draft.kind,
            amount: draft.amount,
            currency: grant.currency.clone(),
            invoice: draft.invoice_line.as_ref().map(|line| line.invoice.clone()),
            invoice_line_item: draft
                .invoice_line
                .as_ref()
                .map(|line| line.invoice_line_item.clone()),
            test_clock: grant.test_clock.clone(),
            grant_remaining_after: draft.remaining_after,
        })
        .collect()
}

/// Writes a new grant and its entries, with their events.
pub(crate) async fn insert_new_grant(
    tx: &Transaction,
    tenant: &Tenant,
    change: GrantChange,
    events: &mut EventBatch,
) -> Result<CreditGrant> {
    store::credit_grants::insert(tx, tenant, &change.grant).await?;
    events.emit(
        EventType::CreditGrantCreated,
        Some(&change.grant.customer_id),
        &CreditGrantJson::new(change.grant.clone(), None),
    )?;
    insert_entries(
        tx,
        tenant,
        &entries_of(tenant, &change.grant, &change.entries),
        events,
    )
    .await?;
    Ok(change.grant)
}

/// Writes one change of an existing grant: its entries, then its new state (guarded by the
/// remainder it had when read). Returns the grant and the written entries.
pub(crate) async fn save_change(
    tx: &Transaction,
    tenant: &Tenant,
    change: GrantChange,
    events: &mut EventBatch,
) -> Result<(CreditGrant, Vec<CreditBalanceTransaction>)> {
    let entries = entries_of(tenant, &change.grant, &change.entries);
    insert_entries(tx, tenant, &entries, events).await?;
    save_grant(tx, tenant, &change.grant, change.previous_remaining).await?;
    Ok((change.grant, entries))
}

/// Writes a grant's new state; `previous_remaining` is what the row must still hold.
pub(crate) async fn save_grant(
    tx: &Transaction,
    tenant: &Tenant,
    grant: &CreditGrant,
    previous_remaining: i64,
) -> Result<()> {
    store::credit_grants::save(tx, tenant, grant, previous_remaining).await
}

/// Writes one invoice line's application as burn-down decided it (`application` of `command`
/// at `now`): its `credits_applied` entries, the drawn grants' new remainders and the line's
/// record, in one round trip, with the entries' events. `ApplyCredits` and a hold's capture
/// write a line through here; a batch stages its lines with [`stage_line`] and writes them
/// together.
pub(crate) async fn record_line(
    tx: &Transaction,
    tenant: &Tenant,
    command: &ApplyCredits,
    application: LineApplication,
    now: i64,
    events: &mut EventBatch,
) -> Result<CreditApplication> {
    let mut writes = ApplicationWrites::default();
    let outcome = stage_line(tenant, command, application, now, &mut writes, events)?;
    writes.write(tx, tenant).await?;
    Ok(outcome)
}

/// [`record_line`] without the write: adds the line's rows to `writes` (which the caller writes
/// in its transaction) and emits the entries' events.
pub(crate) fn stage_line(
    tenant: &Tenant,
    command: &ApplyCredits,
    application: LineApplication,
    now: i64,
    writes: &mut ApplicationWrites,
    events: &mut EventBatch,
) -> Result<CreditApplication> {
    let changes = application.changes;
    let entries: Vec<CreditBalanceTransaction> = changes
        .iter()
        .flat_map(|change| entries_of(tenant, &change.grant, &change.entries))
        .collect();
    let record = command.record(
        entries.iter().map(|entry| entry.amount).sum(),
        now,
        application.explanation,
    );
    writes.add(
        tenant,
        changes
            .iter()
            .map(|change| (&change.grant, change.previous_remaining)),
        &entries,
        &record,
    )?;
    entries_written(&entries, events)?;
    Ok(record.outcome(entries))
}

/// Writes entries already given IDs by [`entries_of`], with their events.
pub(crate) async fn insert_entries(
    tx: &Transaction,
    tenant: &Tenant,
    entries: &[CreditBalanceTransaction],
    events: &mut EventBatch,
) -> Result<()> {
    for entry in entries {
        store::credit_balance_transactions::insert(tx, tenant, entry).await?;
    }
    entries_written(entries, events)
}

/// What follows every write of ledger entries, however they were written: one
/// `billing.credit_balance_transaction.created` event each, and the metrics. Counted when
/// written: a transaction retried after a deadlock may count twice.
pub(crate) fn entries_written(
    entries: &[CreditBalanceTransaction],
    events: &mut EventBatch,
) -> Result<()> {
    for entry in entries {
        events.emit(
            EventType::CreditBalanceTransactionCreated,
            Some(&entry.customer_id),
            &CreditBalanceTransactionJson::new(entry.clone(), None),
        )?;
    }
    count_entries(entries);
    Ok(())
}

fn count_entries(entries: &[CreditBalanceTransaction]) {
    for entry in entries {
        crate::telemetry::metrics::record_credit_entry(
            entry.kind.as_str(),
            entry.currency.as_str(),
            entry.amount,
        );
    }
}
