//! Credit holds: credits reserved for metered work before it is invoiced, so two jobs can never
//! both spend the last dollar.
//!
//! The rules (the service persists what these functions decide, under the customer's lock):
//! - A hold reserves from specific grants, in the burn-down order ([`plan_burn_down`], the one
//!   home of that order), over each grant's AVAILABLE remainder: its remainder minus what other
//!   live holds reserve on it ([`held_by_grant`]). So priority, scope, effective time and expiry
//!   are honoured when the hold is made.
//! - A hold is all or nothing: when the eligible available credits are less than the amount
//!   asked, it is refused ([`insufficient`], `FAILED_PRECONDITION`) and nothing is reserved.
//! - A hold is live while `active` and before its `expires_at`. Live holds lower the summary's
//!   `available_balance`, never its `ledger_balance` (held credits are still on the ledger).
//! - Capture (all or part of what is still reserved) spends the reserved credits on an invoice
//!   line exactly like `ApplyCredits` (see [`crate::domain::ledger::capture_hold`]); the rest is
//!   released. Release frees everything. An expired hold is released by the sweeper.
//! - A grant that expires or is voided while part of it is held: the held part lapses with the
//!   grant (its remainder is written off as usual) and the hold shrinks by it, recorded on the
//!   hold as `lapsed_amount` ([`CreditHold::lapse`]). Until that is recorded, the reservation on
//!   a dead grant already counts for nothing ([`held_by_grant`] skips it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Currency;
use super::credit_application::MAX_AMOUNT_DUE;
use super::credit_grant::{CreditGrant, PriceRef, plan_burn_down};
use super::text::required_id;
use crate::error::{Error, Result};

/// The default and largest lifetime of a hold, in seconds (7 days), unless configured.
pub const DEFAULT_MAX_HOLD_SECONDS: i64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Active,
    Captured,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<HoldStatus> {
        [
            HoldStatus::Active,
            HoldStatus::Captured,
            HoldStatus::Released,
            HoldStatus::Expired,
        ]
        .into_iter()
        .find(|status| status.as_str() == raw)
    }
}

/// What a hold still reserves on one grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub credit_grant: String,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditHold {
    pub id: String,
    pub livemode: bool,
    pub customer_id: String,
    pub currency: Currency,
    /// Reserved when the hold was made (always the amount asked).
    pub amount: i64,
    pub price: PriceRef,
    pub status: HoldStatus,
    /// Still reserved, per grant, in burn-down order: empty once the hold has ended.
    pub reservations: Vec<Reservation>,
    /// Spent on the invoice line by the capture.
    pub captured_amount: i64,
    /// Lost with grants that expired or were voided while held.
    pub lapsed_amount: i64,
    /// The invoice line the hold was captured against.
    pub invoice: Option<String>,
    pub invoice_line_item: Option<String>,
    pub created: i64,
    pub expires_at: i64,
    /// When it was captured, released or expired.
    pub ended_at: Option<i64>,
    pub test_clock: Option<String>,
}

impl CreditHold {
    /// Still reserved.
    pub fn reserved(&self) -> i64 {
        self.reservations.iter().map(|r| r.amount).sum()
    }

    /// Reserves credits now: active and before its expiry.
    pub fn is_live(&self, now: i64) -> bool {
        self.status == HoldStatus::Active && now < self.expires_at
    }

    /// Can the hold still be captured or released at `now`? A precise refusal otherwise.
    pub fn check_open(&self, now: i64, action: &str) -> Result<()> {
        let ended = match self.status {
            HoldStatus::Active if now < self.expires_at => return Ok(()),
            HoldStatus::Active | HoldStatus::Expired => "it has expired",
            HoldStatus::Captured => "it has already been captured",
            HoldStatus::Released => "it has already been released",
        };
        Err(Error::invalid_state(format!(
            "You cannot {action} credit hold {} because {ended}.",
            self.id
        ))
        .with_code("credit_hold_ended"))
    }

    /// Records the lapse of every reservation on a grant that has been voided or has expired
    /// at `now`: the reservation is dropped and its amount added to `lapsed_amount`. Returns
    /// whether anything lapsed. Only an active hold lapses (an ended one reserves nothing).
    pub fn lapse(&mut self, grants: &[CreditGrant], now: i64) -> Result<bool> {
        if self.status != HoldStatus::Active {
            return Ok(false);
        }
        let mut lapsed = 0i64;
        self.reservations.retain(|reservation| {
            let dead = grants
                .iter()
                .find(|grant| grant.id == reservation.credit_grant)
                .is_none_or(|grant| grant_is_dead(grant, now));
            if dead {
                lapsed += reservation.amount;
            }
            !dead
        });
        self.lapsed_amount = self
            .lapsed_amount
            .checked_add(lapsed)
            .ok_or_else(|| overflow("lapsed_amount"))?;
        Ok(lapsed > 0)
    }

    /// Ends the hold as `status` at `now`, freeing whatever it still reserved.
    pub fn end(&mut self, status: HoldStatus, now: i64) {
        self.status = status;
        self.reservations.clear();
        self.ended_at = Some(now);
    }

    /// Releases it now (refused once ended).
    pub fn release(&self, now: i64) -> Result<CreditHold> {
        self.check_open(now, "release")?;
        let mut released = self.clone();
        released.end(HoldStatus::Released, now);
        Ok(released)
    }

    /// The sweeper's step: an active hold past its expiry ends as `expired`. `None` when there
    /// is nothing to do (already ended, or not expired yet): decided under the lock, so two
    /// sweepers expire it once.
    pub fn expire_if_due(&self, now: i64) -> Option<CreditHold> {
        if self.status != HoldStatus::Active || now < self.expires_at {
            return None;
        }
        let mut expired = self.clone();
        expired.end(HoldStatus::Expired, now);
        Some(expired)
    }
}

fn grant_is_dead(grant: &CreditGrant, now: i64) -> bool {
    grant.is_voided() || grant.is_expired(now)
}

fn overflow(what: &str) -> Error {
    Error::internal(anyhow::anyhow!("{what} overflowed"))
}

/// What live holds reserve on each grant at `now`, by grant ID. A reservation on a grant that
/// has been voided or has expired counts for nothing (it lapsed with the grant).
pub fn held_by_grant(
    holds: &[CreditHold],
    grants: &[CreditGrant],
    now: i64,
) -> BTreeMap<String, i64> {
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    for hold in holds.iter().filter(|hold| hold.is_live(now)) {
        for reservation in &hold.reservations {
            let alive = grants
                .iter()
                .find(|grant| grant.id == reservation.credit_grant)
                .is_some_and(|grant| !grant_is_dead(grant, now));
            if alive {
                let total = held.entry(reservation.credit_grant.clone()).or_insert(0);
                *total = total.saturating_add(reservation.amount);
            }
        }
    }
    held
}

/// The grants as burn-down sees them once `held` is set aside: each remainder lowered by what
/// live holds reserve on it (never below zero).
pub fn available_view(grants: &[CreditGrant], held: &BTreeMap<String, i64>) -> Vec<CreditGrant> {
    grants
        .iter()
        .map(|grant| {
            let mut view = grant.clone();
            let on_hold = held.get(&grant.id).copied().unwrap_or(0);
            view.remaining = grant.remaining.saturating_sub(on_hold).max(0);
            view
        })
        .collect()
}

/// A request for a hold: built only by [`CreateCreditHold::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateCreditHold {
    customer_id: String,
    currency: Currency,
    amount: i64,
    price: PriceRef,
    ttl_seconds: Option<i64>,
    expires_at: Option<i64>,
}

/// Unvalidated input for [`CreateCreditHold`].
#[derive(Debug, Clone, Default)]
pub struct HoldFields {
    pub customer: String,
    pub currency: String,
    pub amount: i64,
    pub price_type: Option<String>,
    pub price: Option<String>,
    pub ttl_seconds: Option<i64>,
    pub expires_at: Option<i64>,
}

impl CreateCreditHold {
    pub fn parse(fields: HoldFields) -> Result<CreateCreditHold> {
        let customer_id = required_id(Some(fields.customer), "customer")?;
        let currency = Currency::parse(&fields.currency, "currency")?;
        if !(1..=MAX_AMOUNT_DUE).contains(&fields.amount) {
            return Err(Error::invalid_param(
                "amount",
                format!("Invalid amount: must be between 1 and {MAX_AMOUNT_DUE}."),
            ));
        }
        if fields.ttl_seconds.is_some() && fields.expires_at.is_some() {
            return Err(Error::invalid_param(
                "expires_at",
                "Give either ttl_seconds or expires_at, not both.",
            ));
        }
        if fields.ttl_seconds.is_some_and(|ttl| ttl <= 0) {
            return Err(Error::invalid_param(
                "ttl_seconds",
                "Invalid ttl_seconds: must be positive.",
            ));
        }
        Ok(CreateCreditHold {
            customer_id,
            currency,
            amount: fields.amount,
            price: PriceRef::parse(fields.price_type, fields.price)?,
            ttl_seconds: fields.ttl_seconds,
            expires_at: fields.expires_at,
        })
    }

    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    /// When a hold made at `now` expires: `now + ttl_seconds`, or `expires_at`, or `now +
    /// max_seconds` when neither is given; must be after `now` and at most `max_seconds` away.
    pub fn expiry(&self, now: i64, max_seconds: i64) -> Result<i64> {
        let (param, expires_at) = match (self.ttl_seconds, self.expires_at) {
            (Some(ttl), _) => ("ttl_seconds", now.checked_add(ttl)),
            (None, Some(at)) => ("expires_at", Some(at)),
            (None, None) => ("ttl_seconds", now.checked_add(max_seconds)),
        };
        let latest = now.saturating_add(max_seconds);
        match expires_at {
            Some(at) if at > now && at <= latest => Ok(at),
            _ => Err(Error::invalid_param(
                param,
                format!(
                    "Invalid {param}: a hold must expire after now ({now}) and at most {max_seconds} seconds later."
                ),
            )),
        }
    }
}

/// What a new hold is made of besides the command: decided by the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHold {
    pub id: String,
    pub livemode: bool,
    /// The customer's "now".
    pub now: i64,
    pub expires_at: i64,
    pub test_clock: Option<String>,
}

/// The refusal of a hold the eligible available credits cannot cover.
pub fn insufficient(asked: i64, available: i64) -> Error {
    Error::invalid_state(format!(
        "Insufficient credits: the hold asks for {asked} but only {available} is available for this currency and price."
    ))
    .with_code("insufficient_credits")
}

/// Reserves `command.amount` from `grants` in burn-down order over their available remainders
/// (`holds` are the customer's other holds), or refuses with [`insufficient`].
pub fn reserve(
    grants: &[CreditGrant],
    holds: &[CreditHold],
    command: &CreateCreditHold,
    new: NewHold,
) -> Result<CreditHold> {
    let held = held_by_grant(holds, grants, new.now);
    let view = available_view(grants, &held);
    let plan = plan_burn_down(
        &view,
        &command.currency,
        &command.price,
        command.amount,
        new.now,
    );
    let reservations: Vec<Reservation> = plan
        .draws
        .iter()
        .map(|draw| Reservation {
            credit_grant: view[draw.index].id.clone(),
            amount: draw.amount,
        })
        .collect();
    let reserved: i64 = reservations.iter().map(|r| r.amount).sum();
    if reserved < command.amount {
        return Err(insufficient(command.amount, reserved));
    }
    Ok(CreditHold {
        id: new.id,
        livemode: new.livemode,
        customer_id: command.customer_id.clone(),
        currency: command.currency.clone(),
        amount: command.amount,
        price: command.price.clone(),
        status: HoldStatus::Active,
        reservations,
        captured_amount: 0,
        lapsed_amount: 0,
        invoice: None,
        invoice_line_item: None,
        created: new.now,
        expires_at: new.expires_at,
        ended_at: None,
        test_clock: new.test_clock,
    })
}

/// Capturing a hold against an invoice line: built only by [`CaptureCreditHold::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaptureCreditHold {
    pub(in crate::domain) hold_id: String,
    pub(in crate::domain) invoice: String,
    pub(in crate::domain) invoice_line_item: String,
    /// `None`: everything still reserved.
    pub(in crate::domain) amount: Option<i64>,
}

impl CaptureCreditHold {
    pub fn parse(
        hold: String,
        invoice: String,
        invoice_line_item: String,
        amount: Option<i64>,
    ) -> Result<CaptureCreditHold> {
        if amount.is_some_and(|amount| !(0..=MAX_AMOUNT_DUE).contains(&amount)) {
            return Err(Error::invalid_param(
                "amount",
                format!("Invalid amount: must be between 0 and {MAX_AMOUNT_DUE}."),
            ));
        }
        Ok(CaptureCreditHold {
            hold_id: required_id(Some(hold), "id")?,
            invoice: required_id(Some(invoice), "invoice")?,
            invoice_line_item: required_id(Some(invoice_line_item), "invoice_line_item")?,
            amount,
        })
    }

    pub fn hold_id(&self) -> &str {
        &self.hold_id
    }

    pub fn invoice(&self) -> &str {
        &self.invoice
    }

    pub fn invoice_line_item(&self) -> &str {
        &self.invoice_line_item
    }
}

/// Which holds to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HoldFilter {
    pub customer_id: Option<String>,
    pub status: Option<HoldStatus>,
}

impl HoldFilter {
    pub fn parse(customer: Option<String>, status: Option<String>) -> Result<HoldFilter> {
        let status = match status.filter(|s| !s.is_empty()) {
            None => None,
            Some(raw) => Some(HoldStatus::parse(&raw).ok_or_else(|| {
                Error::invalid_param(
                    "status",
                    format!(
                        "Invalid status: must be one of active, captured, released or expired, not {raw}"
                    ),
                )
            })?),
        };
        Ok(HoldFilter {
            customer_id: customer.filter(|c| !c.is_empty()),
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Metadata;
    use crate::domain::credit_grant::{Category, Scope};

    fn usd() -> Currency {
        Currency::parse("usd", "currency").unwrap()
    }

    fn grant(id: &str, remaining: i64, priority: i64) -> CreditGrant {
        CreditGrant {
            id: id.into(),
            livemode: false,
            created: 0,
            updated: 0,
            customer_id: "cus_1".into(),
            name: None,
            category: Category::Paid,
            priority,
            currency: usd(),
            amount: 100,
            remaining,
            scope: Scope::Metered,
            effective_at: 0,
            expires_at: None,
            voided_at: None,
            expiry_recorded_at: None,
            metadata: Metadata::default(),
            test_clock: None,
        }
    }

    fn command(amount: i64) -> CreateCreditHold {
        CreateCreditHold::parse(HoldFields {
            customer: "cus_1".into(),
            currency: "usd".into(),
            amount,
            price_type: Some("metered".into()),
            ..Default::default()
        })
        .unwrap()
    }

    fn new(id: &str, now: i64) -> NewHold {
        NewHold {
            id: id.into(),
            livemode: false,
            now,
            expires_at: now + 100,
            test_clock: None,
        }
    }

    fn reserved(hold: &CreditHold) -> Vec<(&str, i64)> {
        hold.reservations
            .iter()
            .map(|r| (r.credit_grant.as_str(), r.amount))
            .collect()
    }

    #[test]
    fn holds_reserve_in_burn_down_order_over_what_other_holds_left() {
        let grants = [grant("late", 100, 50), grant("first", 60, 0)];
        let one = reserve(&grants, &[], &command(80), new("h1", 10)).unwrap();
        assert_eq!(reserved(&one), [("first", 60), ("late", 20)]);
        let two = reserve(
            &grants,
            std::slice::from_ref(&one),
            &command(80),
            new("h2", 10),
        )
        .unwrap();
        assert_eq!(reserved(&two), [("late", 80)]);
        let error = reserve(&grants, &[one, two], &command(1), new("h3", 10)).unwrap_err();
        assert_eq!(error.code, Some("insufficient_credits"));
    }

    #[test]
    fn only_live_holds_on_live_grants_count() {
        let mut grants = vec![grant("a", 100, 0), grant("b", 100, 1)];
        let hold = reserve(&grants, &[], &command(150), new("h", 10)).unwrap();
        let held = held_by_grant(std::slice::from_ref(&hold), &grants, 10);
        assert_eq!(held.get("a"), Some(&100));
        assert_eq!(held.get("b"), Some(&50));
        // Past its expiry, or ended, it holds nothing.
        assert!(held_by_grant(std::slice::from_ref(&hold), &grants, 110).is_empty());
        assert!(held_by_grant(&[hold.release(20).unwrap()], &grants, 20).is_empty());
        // On a voided grant, the reservation lapses.
        grants[0].voided_at = Some(15);
        let held = held_by_grant(std::slice::from_ref(&hold), &grants, 20);
        assert_eq!((held.get("a"), held.get("b")), (None, Some(&50)));
        let mut shrunk = hold.clone();
        assert!(shrunk.lapse(&grants, 20).unwrap());
        assert_eq!((shrunk.reserved(), shrunk.lapsed_amount), (50, 100));
        assert!(!shrunk.lapse(&grants, 20).unwrap());
    }

    #[test]
    fn an_ended_hold_refuses_capture_and_release_with_the_reason() {
        let grants = [grant("a", 100, 0)];
        let hold = reserve(&grants, &[], &command(10), new("h", 10)).unwrap();
        assert!(hold.check_open(109, "capture").is_ok());
        let late = hold.check_open(110, "capture").unwrap_err();
        assert!(late.message.contains("expired"), "{}", late.message);
        let released = hold.release(20).unwrap();
        let again = released.release(21).unwrap_err();
        assert!(again.message.contains("released"), "{}", again.message);
        assert!(hold.expire_if_due(109).is_none());
        let expired = hold.expire_if_due(110).unwrap();
        assert_eq!(
            (expired.status, expired.reserved()),
            (HoldStatus::Expired, 0)
        );
        assert!(expired.expire_if_due(200).is_none());
    }

    #[test]
    fn a_hold_expires_within_the_configured_maximum() {
        let ttl = |ttl| CreateCreditHold {
            ttl_seconds: ttl,
            ..command(1)
        };
        assert_eq!(ttl(None).expiry(1_000, 500).unwrap(), 1_500);
        assert_eq!(ttl(Some(60)).expiry(1_000, 500).unwrap(), 1_060);
        assert!(ttl(Some(501)).expiry(1_000, 500).is_err());
        let at = |at| CreateCreditHold {
            expires_at: Some(at),
            ..command(1)
        };
        assert!(at(1_000).expiry(1_000, 500).is_err());
        assert_eq!(at(1_200).expiry(1_000, 500).unwrap(), 1_200);
    }

    /// One step of a random history.
    #[derive(Debug, Clone)]
    enum Step {
        Hold(i64, i64),
        Capture(usize, i64),
        Release(usize),
        Apply(i64),
        Void(usize),
        Advance(i64),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (1i64..120, 1i64..400).prop_map(|(amount, ttl)| Step::Hold(amount, ttl)),
            (0usize..8, 0i64..120).prop_map(|(hold, amount)| Step::Capture(hold, amount)),
            (0usize..8).prop_map(Step::Release),
            (0i64..120).prop_map(Step::Apply),
            (0usize..4).prop_map(Step::Void),
            (1i64..150).prop_map(Step::Advance),
        ]
    }

    proptest::proptest! {
        /// Whatever happens, live holds never reserve more than a grant has left, and applied
        /// plus live holds never exceed what was granted.
        #[test]
        fn holds_and_applications_never_overspend(
            steps in proptest::collection::vec(step(), 1..40),
        ) {
            use crate::domain::credit_application::{ApplyCredits, ApplyFields};
            use crate::domain::ledger::{apply_to_line, capture_hold};
            let mut grants: Vec<CreditGrant> = (0..4)
                .map(|i| {
                    let mut g = grant(&format!("g{i}"), 100, i * 10);
                    g.expires_at = (i == 1).then_some(300);
                    g
                })
                .collect();
            let granted: i64 = grants.iter().map(|g| g.amount).sum();
            let mut holds: Vec<CreditHold> = Vec::new();
            let (mut now, mut applied, mut lines) = (10i64, 0i64, 0);
            for step in steps {
                match step {
                    Step::Hold(amount, ttl) => {
                        let new = NewHold { id: format!("h{}", holds.len()), livemode: false, now, expires_at: now + ttl, test_clock: None };
                        if let Ok(hold) = reserve(&grants, &holds, &command(amount), new) {
                            holds.push(hold);
                        }
                    }
                    Step::Capture(index, amount) => {
                        let Some(hold) = holds.get(index).cloned() else { continue };
                        lines += 1;
                        let capture = CaptureCreditHold::parse(hold.id.clone(), "in_1".into(), format!("il_{lines}"), Some(amount)).unwrap();
                        if let Ok(captured) = capture_hold(&hold, &grants, &capture, now) {
                            for change in captured.application.changes {
                                applied += change.entries.iter().map(|e| e.amount).sum::<i64>();
                                let slot = grants.iter_mut().find(|g| g.id == change.grant.id).unwrap();
                                *slot = change.grant;
                            }
                            holds[index] = captured.hold;
                        }
                    }
                    Step::Release(index) => {
                        if let Some(released) = holds.get(index).and_then(|hold| hold.release(now).ok()) {
                            holds[index] = released;
                        }
                    }
                    Step::Apply(amount) => {
                        lines += 1;
                        let command = ApplyCredits::parse(ApplyFields {
                            customer: "cus_1".into(), currency: "usd".into(), invoice: "in_1".into(),
                            invoice_line_item: format!("il_{lines}"), price_type: Some("metered".into()), price: None, amount_due: amount,
                        }).unwrap();
                        let held = held_by_grant(&holds, &grants, now);
                        for change in apply_to_line(&grants, &held, &command, now).unwrap().changes {
                            applied += change.entries.iter().map(|e| e.amount).sum::<i64>();
                            let slot = grants.iter_mut().find(|g| g.id == change.grant.id).unwrap();
                            *slot = change.grant;
                        }
                    }
                    Step::Void(index) => {
                        if let Ok(change) = grants[index].void_now(now) {
                            grants[index] = change.grant;
                            for hold in &mut holds {
                                hold.lapse(&grants, now).unwrap();
                            }
                        }
                    }
                    Step::Advance(seconds) => now += seconds,
                }
                let held = held_by_grant(&holds, &grants, now);
                for grant in &grants {
                    let on_hold = held.get(&grant.id).copied().unwrap_or(0);
                    proptest::prop_assert!(on_hold <= grant.remaining, "{} holds {on_hold} of {}", grant.id, grant.remaining);
                }
                let live: i64 = held.values().sum();
                proptest::prop_assert!(applied + live <= granted);
                for hold in &holds {
                    proptest::prop_assert_eq!(hold.captured_amount + hold.lapsed_amount + hold.reserved() <= hold.amount, true);
                }
            }
        }
    }
}
