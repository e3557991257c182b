//! The credit ledger's lifecycle rules: how each step in a grant's life changes the grant and
//! which ledger entries it writes. Every step is a pure function of the grant and the moment;
//! the service persists what it returns, inside the transaction and lock it owns.
//!
//! The steps: create ([`CreditGrant::create`]), change expiry or metadata
//! ([`CreditGrant::update`]), expire now ([`CreditGrant::expire_now`]), void now
//! ([`CreditGrant::void_now`]), record an expiry that has lapsed
//! ([`CreditGrant::record_lapsed_expiry`], used by the sweeper and by test-clock advances via
//! [`lapse_until`]), apply to an invoice line ([`apply_to_line`], in burn-down order), and
//! give applied credits back for a voided invoice ([`CreditGrant::reinstate`]).
//!
//! Dating an entry: `created` is always the moment the entry is recorded in the customer's
//! time (the real clock, or the customer's test clock); `effective_at` is when the change
//! took effect. They differ only for a lapsed expiry: its `effective_at` is the grant's
//! `expires_at` (the credits stopped being usable then), and its `created` is when it was
//! recorded — by the sweeper, shortly after; by a test-clock advance, which passes through
//! each moment in order, exactly at `expires_at`.

use std::collections::BTreeMap;

use super::credit_application::{ApplyCredits, Explanation};
use super::credit_balance_transaction::EntryType;
use super::credit_grant::{
    BurnPlan, CreateCreditGrant, CreditGrant, SkipReason, UpdateCreditGrant, check_expiry_after,
    plan_burn_down,
};
use super::credit_hold::{CaptureCreditHold, CreditHold, HoldStatus, available_view};
use crate::error::Result;

/// The invoice line an entry belongs to: `(invoice, invoice_line_item)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    pub invoice: String,
    pub invoice_line_item: String,
}

/// A ledger entry a lifecycle step decided to write, before it has an ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDraft {
    pub kind: EntryType,
    /// Always positive.
    pub amount: i64,
    pub created: i64,
    pub effective_at: i64,
    pub invoice_line: Option<InvoiceLine>,
    /// The grant's remainder right after this entry: the running sum of the grant's entries in
    /// ledger order (`created`, then ID), stored with the entry so a balance at any moment is
    /// one lookup (see [`crate::domain::credit_grant::state_at`]).
    pub remaining_after: i64,
}

/// The outcome of one lifecycle step on one grant: its new state, the remainder it had
/// before (the store's guard against a lost update), and the entries that explain the change,
/// in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantChange {
    pub grant: CreditGrant,
    pub previous_remaining: i64,
    pub entries: Vec<EntryDraft>,
}

impl GrantChange {
    fn start(grant: &CreditGrant) -> GrantChange {
        GrantChange {
            grant: grant.clone(),
            previous_remaining: grant.remaining,
            entries: Vec::new(),
        }
    }

    /// Adds an entry and moves the remainder by its signed amount (checked: never below zero,
    /// never above the granted amount).
    fn write(
        &mut self,
        kind: EntryType,
        amount: i64,
        created: i64,
        effective_at: i64,
        invoice_line: Option<InvoiceLine>,
    ) -> Result<()> {
        if kind.is_credit() {
            self.grant.credit(amount)?;
        } else {
            self.grant.debit(amount)?;
        }
        self.entries.push(EntryDraft {
            kind,
            amount,
            created,
            effective_at,
            invoice_line,
            remaining_after: self.grant.remaining,
        });
        Ok(())
    }

    /// Writes the whole remainder off as `kind` (nothing when it is already zero).
    fn write_off(&mut self, kind: EntryType, created: i64, effective_at: i64) -> Result<()> {
        let amount = self.grant.remaining;
        if amount > 0 {
            self.write(kind, amount, created, effective_at, None)?;
        }
        Ok(())
    }

    /// The signed effect of this change's entries on the remainder.
    pub fn net(&self) -> i64 {
        self.entries
            .iter()
            .map(|entry| entry.kind.signed(entry.amount))
            .sum()
    }
}

/// What a new grant is made of besides the command: decided by the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    pub id: String,
    pub livemode: bool,
    /// The customer's "now" (its test clock's time when it has one).
    pub now: i64,
    pub test_clock: Option<String>,
}

impl CreditGrant {
    /// Whether the grant's expiry has passed at `now` and its `credits_expired` entry is still
    /// to be written. The one predicate behind the sweeper, test-clock advances, the summary's
    /// pending expiry and the store's candidate query (which a test ties to this).
    pub fn needs_expiry_entry(&self, now: i64) -> bool {
        self.is_expired(now) && self.expiry_recorded_at.is_none() && !self.is_voided()
    }

    /// A new grant with its `credits_granted` entry. `effective_at` defaults to now.
    pub fn create(command: &CreateCreditGrant, new: NewGrant) -> Result<GrantChange> {
        let effective_at = command.effective_at.unwrap_or(new.now);
        if let Some(expires_at) = command.expires_at {
            check_expiry_after(expires_at, effective_at)?;
        }
        let grant = CreditGrant {
            id: new.id,
            livemode: new.livemode,
            created: new.now,
            updated: new.now,
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
            test_clock: new.test_clock,
        };
        Ok(GrantChange {
            entries: vec![EntryDraft {
                kind: EntryType::CreditsGranted,
                amount: grant.amount,
                created: new.now,
                effective_at,
                invoice_line: None,
                remaining_after: grant.remaining,
            }],
            previous_remaining: grant.remaining,
            grant,
        })
    }

    /// A change of expiry or metadata; writes no entry.
    pub fn update(&self, command: &UpdateCreditGrant, now: i64) -> Result<GrantChange> {
        let mut change = GrantChange::start(self);
        change.grant = command.apply_to(self, now)?;
        Ok(change)
    }

    /// Expires the grant now: `expires_at` becomes now and the remainder is written off as
    /// `credits_expired`. Refused for a grant already voided or expired.
    pub fn expire_now(&self, now: i64) -> Result<GrantChange> {
        self.check_still_usable(now, "expire")?;
        let mut change = GrantChange::start(self);
        change.grant.expires_at = Some(now);
        change.grant.expiry_recorded_at = Some(now);
        change.grant.updated = now;
        change.write_off(EntryType::CreditsExpired, now, now)?;
        Ok(change)
    }

    /// Voids the grant now: the remainder is written off as `credits_voided`. Credits already
    /// applied stay applied. Refused for a grant already voided or expired.
    pub fn void_now(&self, now: i64) -> Result<GrantChange> {
        self.check_still_usable(now, "void")?;
        let mut change = GrantChange::start(self);
        change.grant.voided_at = Some(now);
        change.grant.updated = now;
        change.write_off(EntryType::CreditsVoided, now, now)?;
        Ok(change)
    }

    /// Records an expiry that has already lapsed at `now`: the remainder is written off as
    /// `credits_expired`, effective at `expires_at` and created now (see the module docs).
    /// `None` when the grant needs no such entry (not yet expired, voided, or recorded).
    pub fn record_lapsed_expiry(&self, now: i64) -> Result<Option<GrantChange>> {
        let Some(expires_at) = self.expires_at.filter(|_| self.needs_expiry_entry(now)) else {
            return Ok(None);
        };
        let mut change = GrantChange::start(self);
        change.grant.expiry_recorded_at = Some(now);
        change.grant.updated = now;
        change.write_off(EntryType::CreditsExpired, now, expires_at)?;
        Ok(Some(change))
    }

    /// Gives `amount` applied to `line` back to this grant
    /// (`credits_application_invoice_voided`). When the grant has been voided, or has expired,
    /// since, the amount is written off again at once, so it can never be spent.
    pub fn reinstate(&self, amount: i64, line: InvoiceLine, now: i64) -> Result<GrantChange> {
        let mut change = GrantChange::start(self);
        change.write(
            EntryType::CreditsApplicationInvoiceVoided,
            amount,
            now,
            now,
            Some(line),
        )?;
        let write_off = if self.is_voided() {
            Some(EntryType::CreditsVoided)
        } else if self.is_expired(now) {
            Some(EntryType::CreditsExpired)
        } else {
            None
        };
        if let Some(kind) = write_off {
            change.write(kind, amount, now, now, None)?;
        }
        change.grant.updated = now;
        Ok(change)
    }
}

/// Everything a test-clock advance to `target` records on these grants: each grant whose
/// expiry lapsed by `target` gets its `credits_expired` entry, in time order, recorded at the
/// moment the clock passes its expiry.
pub fn lapse_until(grants: &[CreditGrant], target: i64) -> Result<Vec<GrantChange>> {
    let mut due: Vec<&CreditGrant> = grants
        .iter()
        .filter(|grant| grant.needs_expiry_entry(target))
        .collect();
    due.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then(a.id.cmp(&b.id)));
    let mut changes = Vec::with_capacity(due.len());
    for grant in due {
        // Never before the grant existed (a grant can be created already lapsed): a grant's
        // entries are in `created` order, which the running remainders follow.
        let at = grant.expires_at.unwrap_or(target).max(grant.created);
        if let Some(change) = grant.record_lapsed_expiry(at)? {
            changes.push(change);
        }
    }
    Ok(changes)
}

/// What applying credits to one line changes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineApplication {
    /// One change per grant drawn from, in burn order.
    pub changes: Vec<GrantChange>,
    /// Made from the same plan as the changes.
    pub explanation: Explanation,
}

/// Applies the customer's eligible credits to one invoice line, in burn-down order: one
/// `credits_applied` entry per grant drawn from, each grant drained before the next. What live
/// holds reserve (`held`, by grant: [`held_by_grant`]) is set aside first, so an application
/// never spends held credits. Returns one change per grant drawn from, in that order (their
/// total is `min(amount_due, eligible available remainder)`), with the explanation of each draw
/// and skip (a grant whose whole remainder is held is skipped as `held`).
pub fn apply_to_line(
    grants: &[CreditGrant],
    held: &BTreeMap<String, i64>,
    command: &ApplyCredits,
    now: i64,
) -> Result<LineApplication> {
    let view = available_view(grants, held);
    let plan = plan_burn_down(
        &view,
        &command.currency,
        &command.price,
        command.amount_due,
        now,
    );
    spend(grants, plan, command, now)
}

/// Writes the draws of `plan` (made over a view of `grants`, same order) as `credits_applied`
/// entries on the real grants, with the explanation.
fn spend(
    grants: &[CreditGrant],
    mut plan: BurnPlan,
    command: &ApplyCredits,
    now: i64,
) -> Result<LineApplication> {
    let line = command.line();
    for (index, reason) in &mut plan.skipped {
        if *reason == SkipReason::Exhausted && grants[*index].remaining > 0 {
            *reason = SkipReason::Held;
        }
    }
    let changes = plan
        .draws
        .iter()
        .map(|draw| {
            let mut change = GrantChange::start(&grants[draw.index]);
            change.write(
                EntryType::CreditsApplied,
                draw.amount,
                now,
                now,
                Some(line.clone()),
            )?;
            change.grant.updated = now;
            Ok(change)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(LineApplication {
        changes,
        explanation: Explanation::of(&plan, grants),
    })
}

/// What capturing a hold decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldCapture {
    /// The hold, captured (what was not captured is released).
    pub hold: CreditHold,
    /// The line's application, exactly as `ApplyCredits` would record it: the same entries,
    /// the same record (so a later `ApplyCredits` of the line is answered from it).
    pub command: ApplyCredits,
    pub application: LineApplication,
}

/// Captures `capture.amount` (all that is still reserved when `None`) of `hold` against an
/// invoice line: `credits_applied` entries drawn only from the hold's reserved grants, in
/// burn-down order, at most what the hold reserves on each. The rest is released. Refused when
/// the hold has ended (captured, released, expired) or the amount exceeds what is still
/// reserved (after reservations on grants that died lapsed: [`CreditHold::lapse`]).
pub fn capture_hold(
    hold: &CreditHold,
    grants: &[CreditGrant],
    capture: &CaptureCreditHold,
    now: i64,
) -> Result<HoldCapture> {
    hold.check_open(now, "capture")?;
    let mut hold = hold.clone();
    hold.lapse(grants, now)?;
    let reserved = hold.reserved();
    let amount = capture.amount.unwrap_or(reserved);
    if amount > reserved {
        return Err(crate::error::Error::invalid_state(format!(
            "You cannot capture {amount} from credit hold {}: only {reserved} is still reserved.",
            hold.id
        ))
        .with_code("amount_too_large")
        .with_param("amount"));
    }
    let command = ApplyCredits {
        customer_id: hold.customer_id.clone(),
        currency: hold.currency.clone(),
        invoice: capture.invoice.clone(),
        invoice_line_item: capture.invoice_line_item.clone(),
        price: hold.price.clone(),
        amount_due: amount,
    };
    let view: Vec<CreditGrant> = grants
        .iter()
        .map(|grant| {
            let mut view = grant.clone();
            let reserved_here: i64 = hold
                .reservations
                .iter()
                .filter(|r| r.credit_grant == grant.id)
                .map(|r| r.amount)
                .sum();
            view.remaining = reserved_here.min(grant.remaining);
            view
        })
        .collect();
    let plan = plan_burn_down(&view, &hold.currency, &hold.price, amount, now);
    let drawn: i64 = plan.draws.iter().map(|draw| draw.amount).sum();
    if drawn != amount {
        return Err(crate::error::Error::internal(anyhow::anyhow!(
            "credit hold {} reserves {reserved} but only {drawn} of {amount} could be drawn",
            hold.id
        )));
    }
    let application = spend(grants, plan, &command, now)?;
    hold.captured_amount = amount;
    hold.invoice = Some(capture.invoice.clone());
    hold.invoice_line_item = Some(capture.invoice_line_item.clone());
    hold.end(HoldStatus::Captured, now);
    Ok(HoldCapture {
        hold,
        command,
        application,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credit_grant::{Category, Scope};
    use crate::domain::{Currency, Metadata};

    fn usd() -> Currency {
        Currency::parse("usd", "currency").unwrap()
    }

    fn grant(id: &str, remaining: i64, expires_at: Option<i64>) -> CreditGrant {
        CreditGrant {
            id: id.into(),
            livemode: false,
            created: 0,
            updated: 0,
            customer_id: "cus_1".into(),
            name: None,
            category: Category::Paid,
            priority: 50,
            currency: usd(),
            amount: 100,
            remaining,
            scope: Scope::Metered,
            effective_at: 0,
            expires_at,
            voided_at: None,
            expiry_recorded_at: None,
            metadata: Metadata::default(),
            test_clock: None,
        }
    }

    fn line() -> InvoiceLine {
        InvoiceLine {
            invoice: "in_1".into(),
            invoice_line_item: "il_1".into(),
        }
    }

    fn kinds(change: &GrantChange) -> Vec<(EntryType, i64)> {
        change
            .entries
            .iter()
            .map(|entry| (entry.kind, entry.amount))
            .collect()
    }

    #[test]
    fn expire_now_writes_the_remainder_off_and_dates_everything_now() {
        let change = grant("g", 60, Some(5_000)).expire_now(1_000).unwrap();
        assert_eq!(change.grant.expires_at, Some(1_000));
        assert_eq!(change.grant.expiry_recorded_at, Some(1_000));
        assert_eq!(change.grant.remaining, 0);
        assert_eq!(change.previous_remaining, 60);
        assert_eq!(kinds(&change), [(EntryType::CreditsExpired, 60)]);
        assert_eq!(
            (change.entries[0].created, change.entries[0].effective_at),
            (1_000, 1_000)
        );
        assert_eq!(change.net(), -60);
    }

    #[test]
    fn a_used_up_grant_expires_without_an_entry() {
        let change = grant("g", 0, None).void_now(10).unwrap();
        assert_eq!(change.grant.voided_at, Some(10));
        assert!(change.entries.is_empty());
    }

    #[test]
    fn expire_and_void_refuse_a_grant_already_ended() {
        let voided = grant("g", 60, None).void_now(10).unwrap().grant;
        assert!(voided.expire_now(20).is_err());
        assert!(voided.void_now(20).is_err());
        let lapsed = grant("g", 60, Some(50));
        assert!(lapsed.expire_now(60).is_err());
        assert!(lapsed.void_now(60).is_err());
    }

    #[test]
    fn a_lapsed_expiry_is_effective_at_expiry_and_created_when_recorded() {
        let change = grant("g", 40, Some(500))
            .record_lapsed_expiry(900)
            .unwrap()
            .unwrap();
        assert_eq!(kinds(&change), [(EntryType::CreditsExpired, 40)]);
        assert_eq!(change.entries[0].effective_at, 500);
        assert_eq!(change.entries[0].created, 900);
        assert_eq!(change.grant.expiry_recorded_at, Some(900));
        assert_eq!(change.grant.updated, 900);
    }

    #[test]
    fn only_a_lapsed_unrecorded_unvoided_expiry_needs_an_entry() {
        let live = grant("g", 40, Some(500));
        assert!(!live.needs_expiry_entry(499));
        assert!(live.needs_expiry_entry(500));
        assert!(live.record_lapsed_expiry(499).unwrap().is_none());
        let recorded = live.record_lapsed_expiry(600).unwrap().unwrap().grant;
        assert!(!recorded.needs_expiry_entry(700));
        assert!(recorded.record_lapsed_expiry(700).unwrap().is_none());
        let mut voided = grant("v", 40, Some(500));
        voided.voided_at = Some(100);
        assert!(!voided.needs_expiry_entry(600));
        assert!(!grant("never", 40, None).needs_expiry_entry(i64::MAX));
        // The summary's pending expiry is the same predicate.
        assert_eq!(live.pending_expiry(600), 40);
        assert_eq!(voided.pending_expiry(600), 0);
    }

    #[test]
    fn a_clock_advance_records_each_expiry_at_its_own_moment_in_time_order() {
        let grants = [
            grant("late", 10, Some(900)),
            grant("early", 20, Some(300)),
            grant("after", 30, Some(2_000)),
            grant("none", 40, None),
        ];
        let changes = lapse_until(&grants, 1_000).unwrap();
        let recorded: Vec<(&str, i64, i64)> = changes
            .iter()
            .map(|change| {
                (
                    change.grant.id.as_str(),
                    change.entries[0].created,
                    change.entries[0].effective_at,
                )
            })
            .collect();
        assert_eq!(recorded, [("early", 300, 300), ("late", 900, 900)]);
    }

    #[test]
    fn every_entry_carries_the_remainder_it_leaves() {
        let change = grant("g", 30, None).reinstate(50, line(), 1_000).unwrap();
        assert_eq!(change.entries[0].remaining_after, 80);
        let mut voided = grant("v", 0, None);
        voided.voided_at = Some(10);
        let change = voided.reinstate(50, line(), 1_000).unwrap();
        let after: Vec<i64> = change.entries.iter().map(|e| e.remaining_after).collect();
        assert_eq!(after, [50, 0]);
    }

    #[test]
    fn a_clock_never_dates_a_lapse_before_its_grant_was_created() {
        // Created at 700 already past its expiry at 300 (effective_at can be in the past).
        let mut late = grant("late", 40, Some(300));
        late.created = 700;
        let changes = lapse_until(&[late], 1_000).unwrap();
        assert_eq!(
            (
                changes[0].entries[0].created,
                changes[0].entries[0].effective_at
            ),
            (700, 300)
        );
        assert_eq!(changes[0].grant.expiry_recorded_at, Some(700));
    }

    #[test]
    fn reinstating_onto_a_live_grant_gives_the_credits_back() {
        let change = grant("g", 30, None).reinstate(50, line(), 1_000).unwrap();
        assert_eq!(change.grant.remaining, 80);
        assert_eq!(
            kinds(&change),
            [(EntryType::CreditsApplicationInvoiceVoided, 50)]
        );
        assert_eq!(change.entries[0].invoice_line, Some(line()));
    }

    #[test]
    fn reinstating_onto_an_ended_grant_writes_the_amount_off_again_at_once() {
        let mut voided = grant("v", 0, None);
        voided.voided_at = Some(10);
        let change = voided.reinstate(50, line(), 1_000).unwrap();
        assert_eq!(change.grant.remaining, 0);
        assert_eq!(
            kinds(&change),
            [
                (EntryType::CreditsApplicationInvoiceVoided, 50),
                (EntryType::CreditsVoided, 50)
            ]
        );
        let expired = grant("e", 5, Some(500));
        let change = expired.reinstate(50, line(), 1_000).unwrap();
        // Only the reinstated amount: the lapsed remainder is the sweeper's to record.
        assert_eq!(change.grant.remaining, 5);
        assert_eq!(change.entries[1].kind, EntryType::CreditsExpired);
        assert_eq!(change.net(), 0);
    }

    #[test]
    fn reinstating_more_than_was_granted_is_refused() {
        assert!(grant("g", 90, None).reinstate(20, line(), 0).is_err());
    }

    #[test]
    fn an_application_draws_in_burn_order_with_one_entry_per_grant() {
        let mut first = grant("first", 30, Some(600));
        first.priority = 0;
        let second = grant("second", 50, None);
        let command = ApplyCredits::parse(crate::domain::credit_application::ApplyFields {
            customer: "cus_1".into(),
            currency: "usd".into(),
            invoice: "in_1".into(),
            invoice_line_item: "il_1".into(),
            price_type: Some("metered".into()),
            price: None,
            amount_due: 45,
        })
        .unwrap();
        let changes = apply_to_line(&[second, first], &BTreeMap::new(), &command, 100)
            .unwrap()
            .changes;
        let drawn: Vec<(&str, i64, i64)> = changes
            .iter()
            .map(|change| {
                (
                    change.grant.id.as_str(),
                    change.entries[0].amount,
                    change.grant.remaining,
                )
            })
            .collect();
        assert_eq!(drawn, [("first", 30, 0), ("second", 15, 35)]);
        assert!(
            changes
                .iter()
                .all(|change| change.entries[0].kind == EntryType::CreditsApplied
                    && change.entries[0].invoice_line == Some(line()))
        );
    }

    #[test]
    fn create_dates_the_grant_and_its_entry_at_the_customers_now() {
        let command = CreateCreditGrant::parse(crate::domain::credit_grant::GrantFields {
            customer: Some("cus_1".into()),
            amount_type: Some("monetary".into()),
            currency: Some("usd".into()),
            value: Some(1_000),
            scope_price_type: Some("metered".into()),
            expires_at: Some(400),
            ..Default::default()
        })
        .unwrap();
        let new = NewGrant {
            id: "credgr_1".into(),
            livemode: false,
            now: 300,
            test_clock: Some("clock_1".into()),
        };
        let change = CreditGrant::create(&command, new.clone()).unwrap();
        assert_eq!(change.grant.effective_at, 300);
        assert_eq!(change.grant.remaining, 1_000);
        assert_eq!(kinds(&change), [(EntryType::CreditsGranted, 1_000)]);
        // The default effective time must still come before the expiry.
        let late = NewGrant { now: 500, ..new };
        assert!(CreditGrant::create(&command, late).is_err());
    }

    #[test]
    fn a_capture_draws_only_what_the_hold_reserves_in_burn_order() {
        use crate::domain::credit_hold::{CreateCreditHold, HoldFields, NewHold, reserve};
        let mut first = grant("first", 30, None);
        first.priority = 0;
        let second = grant("second", 100, None);
        let grants = [second, first];
        let command = CreateCreditHold::parse(HoldFields {
            customer: "cus_1".into(),
            currency: "usd".into(),
            amount: 50,
            price_type: Some("metered".into()),
            ..Default::default()
        })
        .unwrap();
        let new = NewHold {
            id: "h".into(),
            livemode: false,
            now: 10,
            expires_at: 100,
            test_clock: None,
        };
        let hold = reserve(&grants, &[], &command, new).unwrap();
        let capture =
            CaptureCreditHold::parse("h".into(), "in_1".into(), "il_1".into(), Some(40)).unwrap();
        let captured = capture_hold(&hold, &grants, &capture, 20).unwrap();
        let drawn: Vec<(&str, i64)> = captured
            .application
            .changes
            .iter()
            .map(|change| (change.grant.id.as_str(), change.entries[0].amount))
            .collect();
        assert_eq!(drawn, [("first", 30), ("second", 10)]);
        assert_eq!(captured.hold.status, HoldStatus::Captured);
        assert_eq!(
            (captured.hold.captured_amount, captured.hold.reserved()),
            (40, 0)
        );
        assert_eq!(captured.command.amount_due(), 40);
        let too_much =
            CaptureCreditHold::parse("h".into(), "in_1".into(), "il_1".into(), Some(51)).unwrap();
        assert!(capture_hold(&hold, &grants, &too_much, 20).is_err());
        assert!(capture_hold(&captured.hold, &grants, &capture, 20).is_err());
    }
}
