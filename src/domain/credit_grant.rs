//! Billing credit grants: what a customer was granted, what remains, and the rules for using
//! it up. The burn-down order and the balance summary live here so they are the same for
//! every caller and can be tested as pure functions.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::text::{optional_text, required_id};
use super::{Currency, Metadata, MetadataUpdate};
use crate::error::{Error, Result};

pub const MAX_NAME_CHARS: usize = 100;
pub const MIN_PRIORITY: i64 = 0;
pub const MAX_PRIORITY: i64 = 100;
pub const DEFAULT_PRIORITY: i64 = 50;
/// The largest grant, in minor units (Stripe's usual 8-digit amount cap).
pub const MAX_GRANT_AMOUNT: i64 = 99_999_999;
/// At most this many prices in a scope.
pub const MAX_SCOPE_PRICES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Paid,
    Promotional,
}

impl Category {
    pub fn parse(raw: &str, param: &str) -> Result<Category> {
        match raw {
            "paid" => Ok(Category::Paid),
            "promotional" => Ok(Category::Promotional),
            _ => Err(Error::invalid_param(
                param,
                format!("Invalid {param}: must be one of paid or promotional"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Paid => "paid",
            Category::Promotional => "promotional",
        }
    }
}

/// Which prices a grant's credits apply to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every metered price.
    Metered,
    /// Only these price IDs.
    Prices(Vec<String>),
}

impl Scope {
    /// From the two mutually exclusive scope fields. `param` prefixes error params.
    pub fn parse(
        price_type: Option<String>,
        prices: Option<Vec<String>>,
        param: &str,
    ) -> Result<Scope> {
        match (price_type, prices) {
            (Some(_), Some(_)) => Err(Error::invalid_param(
                param,
                format!("You may only specify one of these parameters: {param}[price_type], {param}[prices]."),
            )
            .with_code("parameters_exclusive")),
            (Some(price_type), None) if price_type == "metered" => Ok(Scope::Metered),
            (Some(price_type), None) => Err(Error::invalid_param(
                format!("{param}[price_type]"),
                format!("Invalid {param}[price_type]: must be metered, not {price_type}"),
            )),
            (None, Some(prices)) => {
                if prices.is_empty() {
                    return Err(Error::invalid_param(format!("{param}[prices]"), "At least one price is required."));
                }
                if prices.len() > MAX_SCOPE_PRICES {
                    return Err(Error::invalid_param(
                        format!("{param}[prices]"),
                        format!("At most {MAX_SCOPE_PRICES} prices can be given."),
                    ));
                }
                for (index, price) in prices.iter().enumerate() {
                    if price.is_empty() || price.len() > 5000 {
                        return Err(Error::invalid_param(
                            format!("{param}[prices][{index}][id]"),
                            "Each price needs an ID.",
                        ));
                    }
                }
                let mut unique = prices;
                unique.sort();
                unique.dedup();
                Ok(Scope::Prices(unique))
            }
            (None, None) => Err(Error::missing_param(format!("{param}[price_type]"))),
        }
    }

    /// Whether credits with this scope can pay for a line with `price`.
    pub fn applies_to(&self, price: &PriceRef) -> bool {
        match self {
            Scope::Metered => price.metered,
            Scope::Prices(ids) => price
                .id
                .as_ref()
                .is_some_and(|id| ids.binary_search(id).is_ok()),
        }
    }

    /// Whether this grant belongs in a summary filtered by `filter`: a grant counts when it
    /// covers at least what the filter names (every metered price, or one of its prices).
    pub fn matches_filter(&self, filter: &Scope) -> bool {
        match (self, filter) {
            (Scope::Metered, _) => true,
            (Scope::Prices(_), Scope::Metered) => false,
            (Scope::Prices(mine), Scope::Prices(wanted)) => {
                wanted.iter().any(|id| mine.binary_search(id).is_ok())
            }
        }
    }
}

/// The price of an invoice line credits are applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRef {
    /// The price is metered (backed by a meter).
    pub metered: bool,
    pub id: Option<String>,
}

impl PriceRef {
    pub fn parse(price_type: Option<String>, id: Option<String>) -> Result<PriceRef> {
        let id = id.filter(|id| !id.is_empty());
        let metered = match price_type.as_deref() {
            None | Some("") => false,
            Some("metered") => true,
            Some("licensed") => false,
            Some(other) => {
                return Err(Error::invalid_param(
                    "price_type",
                    format!("Invalid price_type: must be metered or licensed, not {other}"),
                ));
            }
        };
        if !metered && id.is_none() {
            return Err(Error::missing_param("price"));
        }
        Ok(PriceRef { metered, id })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditGrant {
    pub id: String,
    pub livemode: bool,
    pub created: i64,
    pub updated: i64,
    pub customer_id: String,
    pub name: Option<String>,
    pub category: Category,
    pub priority: i64,
    pub currency: Currency,
    /// Granted, in minor units.
    pub amount: i64,
    /// Left to use: the signed sum of the grant's ledger entries. Never negative, never above
    /// `amount`.
    pub remaining: i64,
    pub scope: Scope,
    pub effective_at: i64,
    pub expires_at: Option<i64>,
    pub voided_at: Option<i64>,
    /// When the `credits_expired` entry for the expiry was written (by the sweeper or expire).
    pub expiry_recorded_at: Option<i64>,
    pub metadata: Metadata,
    pub test_clock: Option<String>,
}

impl CreditGrant {
    pub fn is_effective(&self, now: i64) -> bool {
        self.effective_at <= now
    }

    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= now)
    }

    pub fn is_voided(&self) -> bool {
        self.voided_at.is_some()
    }

    /// Can pay for a line in `currency` with `price` at `now`.
    pub fn is_eligible(&self, currency: &Currency, price: &PriceRef, now: i64) -> bool {
        self.ineligibility(currency, price, now).is_none()
    }

    /// Why this grant cannot pay for a line in `currency` with `price` at `now` (the first
    /// reason that applies, in this order), or `None` when it can.
    pub fn ineligibility(
        &self,
        currency: &Currency,
        price: &PriceRef,
        now: i64,
    ) -> Option<SkipReason> {
        if &self.currency != currency {
            Some(SkipReason::OtherCurrency)
        } else if self.is_voided() {
            Some(SkipReason::Voided)
        } else if self.is_expired(now) {
            Some(SkipReason::Expired)
        } else if !self.is_effective(now) {
            Some(SkipReason::NotYetEffective)
        } else if !self.scope.applies_to(price) {
            Some(SkipReason::OutOfScope)
        } else if self.remaining <= 0 {
            Some(SkipReason::Exhausted)
        } else {
            None
        }
    }

    /// The remainder that has expired but whose `credits_expired` entry is not written yet.
    pub fn pending_expiry(&self, now: i64) -> i64 {
        if self.needs_expiry_entry(now) {
            self.remaining
        } else {
            0
        }
    }

    /// Expire and void both refuse a grant that is already voided or expired.
    pub fn check_still_usable(&self, now: i64, action: &str) -> Result<()> {
        if self.is_voided() {
            return Err(Error::invalid_state(format!(
                "You cannot {action} credit grant {} because it has already been voided.",
                self.id
            )));
        }
        if self.is_expired(now) || self.expiry_recorded_at.is_some() {
            return Err(Error::invalid_state(format!(
                "You cannot {action} credit grant {} because it has already expired.",
                self.id
            )));
        }
        Ok(())
    }

    /// This grant as it stood at `as_of` (recording time), given `remaining_at`: its running
    /// remainder after its last entry recorded at or before `as_of` (`None` when it had none).
    /// `None` when the grant was created after `as_of` (it did not exist yet). A void or a
    /// recorded expiry counts from the moment it was recorded; the expiry time is the grant's
    /// current `expires_at` (its history is not stored: see the README's "Balance at any
    /// moment"), so a grant whose `expires_at` had passed by `as_of` but whose
    /// `credits_expired` entry was recorded later is lapsed-but-unswept at `as_of`, exactly as
    /// [`summarize`] treats such a grant now. [`summarize`] turns these states into balances.
    pub fn state_at(&self, remaining_at: Option<i64>, as_of: i64) -> Option<CreditGrant> {
        if self.created > as_of {
            return None;
        }
        let mut state = self.clone();
        state.remaining = remaining_at.unwrap_or(0);
        state.voided_at = self.voided_at.filter(|at| *at <= as_of);
        state.expiry_recorded_at = self.expiry_recorded_at.filter(|at| *at <= as_of);
        Some(state)
    }

    /// Takes `amount` out of the remainder.
    pub fn debit(&mut self, amount: i64) -> Result<()> {
        if amount <= 0 || amount > self.remaining {
            return Err(Error::internal(anyhow::anyhow!(
                "debit of {amount} from grant {} with remaining {}",
                self.id,
                self.remaining
            )));
        }
        self.remaining -= amount;
        Ok(())
    }

    /// Puts `amount` back into the remainder (never above the granted amount).
    pub fn credit(&mut self, amount: i64) -> Result<()> {
        let next = self
            .remaining
            .checked_add(amount)
            .filter(|next| amount > 0 && *next <= self.amount);
        match next {
            Some(next) => {
                self.remaining = next;
                Ok(())
            }
            None => Err(Error::internal(anyhow::anyhow!(
                "credit of {amount} to grant {} would exceed its amount",
                self.id
            ))),
        }
    }
}

/// Why a grant could not pay for an invoice line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The grant is in another currency than the line.
    OtherCurrency,
    Voided,
    /// Past its `expires_at` (whether or not its `credits_expired` entry is written yet).
    Expired,
    /// Its `effective_at` has not come yet.
    NotYetEffective,
    /// Its scope does not cover the line's price.
    OutOfScope,
    /// Nothing left.
    Exhausted,
    /// Something left, but all of it reserved by live credit holds.
    Held,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::OtherCurrency => "other_currency",
            SkipReason::Voided => "voided",
            SkipReason::Expired => "expired",
            SkipReason::NotYetEffective => "not_yet_effective",
            SkipReason::OutOfScope => "out_of_scope",
            SkipReason::Exhausted => "exhausted",
            SkipReason::Held => "held",
        }
    }
}

/// The keys of the burn-down order, in the order [`burn_order_decided`] compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BurnKey {
    /// `priority` ascending.
    Priority,
    /// The soonest `expires_at`, never-expiring last.
    ExpiresAt,
    /// `promotional` before `paid`.
    Category,
    /// The earliest `effective_at`.
    EffectiveAt,
    /// Creation order (`created`, then the time-ordered ID).
    Created,
}

impl BurnKey {
    pub fn as_str(self) -> &'static str {
        match self {
            BurnKey::Priority => "priority",
            BurnKey::ExpiresAt => "expires_at",
            BurnKey::Category => "category",
            BurnKey::EffectiveAt => "effective_at",
            BurnKey::Created => "created",
        }
    }
}

/// The documented burn-down order: priority ascending (0 first), then the soonest
/// `expires_at` (never-expiring last), then promotional before paid, then the earliest
/// `effective_at`, then creation order (the time-ordered ID breaks the final tie). Also says
/// which key decided: the first that differs ([`BurnKey::Created`] when none does). The one
/// definition of the order: [`burn_order`] and every explanation of a draw come from here.
pub fn burn_order_decided(a: &CreditGrant, b: &CreditGrant) -> (Ordering, BurnKey) {
    let expiry = |grant: &CreditGrant| grant.expires_at.unwrap_or(i64::MAX);
    let category = |grant: &CreditGrant| match grant.category {
        Category::Promotional => 0,
        Category::Paid => 1,
    };
    let keys = [
        (BurnKey::Priority, a.priority.cmp(&b.priority)),
        (BurnKey::ExpiresAt, expiry(a).cmp(&expiry(b))),
        (BurnKey::Category, category(a).cmp(&category(b))),
        (BurnKey::EffectiveAt, a.effective_at.cmp(&b.effective_at)),
        (
            BurnKey::Created,
            a.created.cmp(&b.created).then(a.id.cmp(&b.id)),
        ),
    ];
    keys.into_iter()
        .find(|(_, ordering)| ordering.is_ne())
        .map_or((Ordering::Equal, BurnKey::Created), |(key, ordering)| {
            (ordering, key)
        })
}

/// [`burn_order_decided`] without the deciding key.
pub fn burn_order(a: &CreditGrant, b: &CreditGrant) -> Ordering {
    burn_order_decided(a, b).0
}

/// One draw of a [`BurnPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDraw {
    /// The grant's index in the grants given.
    pub index: usize,
    pub amount: i64,
    /// 1-based position among the grants eligible for the line, in burn-down order.
    pub rank: u32,
    /// The next-ranked eligible grant (drawn or not) and the key that put this one before
    /// it; `None` for the last eligible grant.
    pub before: Option<(usize, BurnKey)>,
}

/// How to pay an amount from a customer's grants, and why: the draws in burn order, and every
/// grant that could not pay with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BurnPlan {
    pub draws: Vec<PlannedDraw>,
    /// `(grant index, reason)`, in the order the grants were given.
    pub skipped: Vec<(usize, SkipReason)>,
}

/// How much to draw from which grant to pay `amount_due`, and why: eligible grants in burn
/// order, each drained before the next; their sum is `min(amount_due, total eligible
/// remainder)`.
pub fn plan_burn_down(
    grants: &[CreditGrant],
    currency: &Currency,
    price: &PriceRef,
    amount_due: i64,
    now: i64,
) -> BurnPlan {
    let mut plan = BurnPlan::default();
    let mut order = Vec::with_capacity(grants.len());
    for (index, grant) in grants.iter().enumerate() {
        match grant.ineligibility(currency, price, now) {
            None => order.push(index),
            Some(reason) => plan.skipped.push((index, reason)),
        }
    }
    order.sort_by(|&a, &b| burn_order(&grants[a], &grants[b]));
    let mut left = amount_due.max(0);
    for (position, &index) in order.iter().enumerate() {
        if left == 0 {
            break;
        }
        let take = grants[index].remaining.min(left);
        let before = order
            .get(position + 1)
            .map(|&next| (next, burn_order_decided(&grants[index], &grants[next]).1));
        plan.draws.push(PlannedDraw {
            index,
            amount: take,
            rank: u32::try_from(position + 1).unwrap_or(u32::MAX),
            before,
        });
        left -= take;
    }
    plan
}

/// The draws of [`plan_burn_down`]: `(grant index, amount)` pairs.
pub fn burn_down(
    grants: &[CreditGrant],
    currency: &Currency,
    price: &PriceRef,
    amount_due: i64,
    now: i64,
) -> Vec<(usize, i64)> {
    plan_burn_down(grants, currency, price, amount_due, now)
        .draws
        .into_iter()
        .map(|draw| (draw.index, draw.amount))
        .collect()
}

/// What a summary is filtered by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SummaryFilter {
    CreditGrant(String),
    ApplicabilityScope(Scope),
    /// Every grant (a billing alert without an applicability filter; not a Stripe filter).
    AllGrants,
}

/// A scope's two mutually exclusive fields, unvalidated.
#[derive(Debug, Clone, Default)]
pub struct ScopeFields {
    pub price_type: Option<String>,
    pub prices: Option<Vec<String>>,
}

/// A summary filter as a transport received it (Stripe's `filter[…]` parameters).
#[derive(Debug, Clone, Default)]
pub struct SummaryFilterFields {
    /// `filter[type]`.
    pub kind: Option<String>,
    /// `filter[credit_grant]`.
    pub credit_grant: Option<String>,
    /// `filter[applicability_scope]`, when sent at all.
    pub applicability_scope: Option<ScopeFields>,
}

impl SummaryFilter {
    /// `filter[type]` with its matching sub-field; a sub-field of the other type is refused.
    pub fn parse(fields: Option<SummaryFilterFields>) -> Result<SummaryFilter> {
        let fields = fields.ok_or_else(|| Error::missing_param("filter"))?;
        let kind = fields
            .kind
            .filter(|kind| !kind.is_empty())
            .ok_or_else(|| Error::missing_param("filter[type]"))?;
        match kind.as_str() {
            "credit_grant" => {
                if fields.applicability_scope.is_some() {
                    return Err(Error::invalid_param(
                        "filter[applicability_scope]",
                        "filter[applicability_scope] can only be used with filter[type]=applicability_scope.",
                    ));
                }
                let grant = fields
                    .credit_grant
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| Error::missing_param("filter[credit_grant]"))?;
                Ok(SummaryFilter::CreditGrant(grant))
            }
            "applicability_scope" => {
                if fields.credit_grant.is_some() {
                    return Err(Error::invalid_param(
                        "filter[credit_grant]",
                        "filter[credit_grant] can only be used with filter[type]=credit_grant.",
                    ));
                }
                let scope = fields
                    .applicability_scope
                    .ok_or_else(|| Error::missing_param("filter[applicability_scope]"))?;
                Ok(SummaryFilter::ApplicabilityScope(Scope::parse(
                    scope.price_type,
                    scope.prices,
                    "filter[applicability_scope]",
                )?))
            }
            other => Err(Error::invalid_param(
                "filter[type]",
                format!(
                    "Invalid filter[type]: must be one of applicability_scope or credit_grant, not {other}"
                ),
            )),
        }
    }
}

/// A request for a customer's credit balance summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryQuery {
    customer_id: String,
    filter: SummaryFilter,
    /// The balances as they stood at this moment (recording time; see
    /// [`CreditGrant::state_at`]) instead of now.
    as_of: Option<i64>,
}

impl SummaryQuery {
    /// The customer is required, then the filter.
    pub fn parse(
        customer: Option<String>,
        filter: Option<SummaryFilterFields>,
    ) -> Result<SummaryQuery> {
        let customer_id = required_id(customer, "customer")?;
        Ok(SummaryQuery {
            customer_id,
            filter: SummaryFilter::parse(filter)?,
            as_of: None,
        })
    }

    /// The same query as of `as_of` (a Unix time, not negative), or now for `None`.
    pub fn at(self, as_of: Option<i64>) -> Result<SummaryQuery> {
        if as_of.is_some_and(|at| at < 0) {
            return Err(Error::invalid_param(
                "as_of",
                "Invalid as_of: must be a Unix timestamp.",
            ));
        }
        Ok(SummaryQuery { as_of, ..self })
    }

    pub fn as_of(&self) -> Option<i64> {
        self.as_of
    }

    /// The moment the summary describes: `as_of`, or `now`. An `as_of` after the customer's
    /// `now` is refused: what the ledger will know then is not known yet.
    pub fn moment(&self, now: i64) -> Result<i64> {
        match self.as_of {
            Some(as_of) if as_of > now => Err(Error::invalid_param(
                "as_of",
                format!("Invalid as_of: {as_of} is after the customer's current time {now}."),
            )),
            Some(as_of) => Ok(as_of),
            None => Ok(now),
        }
    }

    /// From an already parsed filter (the customer is still checked).
    pub fn for_customer(customer: &str, filter: SummaryFilter) -> Result<SummaryQuery> {
        Ok(SummaryQuery {
            customer_id: required_id(Some(customer.to_string()), "customer")?,
            filter,
            as_of: None,
        })
    }

    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    pub fn filter(&self) -> &SummaryFilter {
        &self.filter
    }
}

/// One currency's balances in a summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyBalance {
    pub currency: Currency,
    /// Committed ledger: the remainders of matching, effective grants.
    pub ledger: i64,
    /// Ledger minus what has already expired but is not yet written as `credits_expired`, and
    /// minus what live credit holds reserve.
    pub available: i64,
}

/// The balance summary over a customer's grants: one entry per currency of the matching
/// grants, in O(grants). `held` is what live credit holds reserve on each grant (by grant ID;
/// see [`crate::domain::credit_hold::held_by_grant`]): it lowers `available`, never `ledger`.
pub fn summarize(
    grants: &[CreditGrant],
    held: &BTreeMap<String, i64>,
    filter: &SummaryFilter,
    now: i64,
) -> Vec<CurrencyBalance> {
    let mut by_currency: BTreeMap<Currency, CurrencyBalance> = BTreeMap::new();
    for grant in grants {
        let matches = match filter {
            SummaryFilter::CreditGrant(id) => &grant.id == id,
            SummaryFilter::ApplicabilityScope(scope) => grant.scope.matches_filter(scope),
            SummaryFilter::AllGrants => true,
        };
        if !matches {
            continue;
        }
        let entry = by_currency
            .entry(grant.currency.clone())
            .or_insert_with(|| CurrencyBalance {
                currency: grant.currency.clone(),
                ledger: 0,
                available: 0,
            });
        if grant.is_effective(now) && !grant.is_voided() {
            entry.ledger += grant.remaining;
            let pending = grant.pending_expiry(now);
            // A lapsed grant's held part is already in its pending expiry.
            let on_hold = if pending > 0 {
                0
            } else {
                held.get(&grant.id)
                    .copied()
                    .unwrap_or(0)
                    .min(grant.remaining)
            };
            entry.available += grant.remaining - pending - on_hold;
        }
    }
    by_currency.into_values().collect()
}

/// Unvalidated grant fields as a transport received them.
#[derive(Debug, Clone, Default)]
pub struct GrantFields {
    pub customer: Option<String>,
    pub amount_type: Option<String>,
    pub currency: Option<String>,
    pub value: Option<i64>,
    pub scope_price_type: Option<String>,
    pub scope_prices: Option<Vec<String>>,
    pub category: Option<String>,
    pub priority: Option<i64>,
    pub effective_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub name: Option<String>,
    pub metadata: MetadataUpdate,
}

/// A new grant: built only by [`CreateCreditGrant::parse`]; turned into a grant by
/// `CreditGrant::create` (in `domain::ledger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateCreditGrant {
    pub(in crate::domain) customer_id: String,
    pub(in crate::domain) currency: Currency,
    pub(in crate::domain) amount: i64,
    pub(in crate::domain) scope: Scope,
    pub(in crate::domain) category: Category,
    pub(in crate::domain) priority: i64,
    /// `None` means "now" (the customer's now, with its clock).
    pub(in crate::domain) effective_at: Option<i64>,
    pub(in crate::domain) expires_at: Option<i64>,
    pub(in crate::domain) name: Option<String>,
    pub(in crate::domain) metadata: Metadata,
}

impl CreateCreditGrant {
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    pub fn parse(fields: GrantFields) -> Result<CreateCreditGrant> {
        let customer_id = fields
            .customer
            .filter(|customer| !customer.is_empty())
            .ok_or_else(|| Error::missing_param("customer"))?;
        match fields.amount_type.as_deref() {
            Some("monetary") => {}
            None => return Err(Error::missing_param("amount[type]")),
            Some(other) => {
                return Err(Error::invalid_param(
                    "amount[type]",
                    format!("Invalid amount[type]: must be monetary, not {other}"),
                ));
            }
        }
        let currency = fields
            .currency
            .ok_or_else(|| Error::missing_param("amount[monetary][currency]"))?;
        let currency = Currency::parse(&currency, "amount[monetary][currency]")?;
        let amount = fields
            .value
            .ok_or_else(|| Error::missing_param("amount[monetary][value]"))?;
        if amount <= 0 || amount > MAX_GRANT_AMOUNT {
            return Err(Error::invalid_param(
                "amount[monetary][value]",
                format!(
                    "Invalid amount[monetary][value]: must be a positive integer no greater than {MAX_GRANT_AMOUNT}."
                ),
            ));
        }
        let scope = Scope::parse(
            fields.scope_price_type,
            fields.scope_prices,
            "applicability_config[scope]",
        )?;
        let category = match fields.category {
            None => Category::Paid,
            Some(category) => Category::parse(&category, "category")?,
        };
        let priority = fields.priority.unwrap_or(DEFAULT_PRIORITY);
        if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&priority) {
            return Err(Error::invalid_param(
                "priority",
                format!("Invalid priority: must be between {MIN_PRIORITY} and {MAX_PRIORITY}."),
            ));
        }
        if let (Some(effective_at), Some(expires_at)) = (fields.effective_at, fields.expires_at) {
            check_expiry_after(expires_at, effective_at)?;
        }
        if fields.effective_at.is_some_and(|at| at < 0) {
            return Err(Error::invalid_param(
                "effective_at",
                "Invalid effective_at: must be a Unix timestamp.",
            ));
        }
        Ok(CreateCreditGrant {
            customer_id,
            currency,
            amount,
            scope,
            category,
            priority,
            effective_at: fields.effective_at,
            expires_at: fields.expires_at,
            name: optional_text(fields.name, "name", MAX_NAME_CHARS)?,
            metadata: Metadata::default().apply(&fields.metadata)?,
        })
    }
}

pub fn check_expiry_after(expires_at: i64, effective_at: i64) -> Result<()> {
    if expires_at <= effective_at {
        return Err(Error::invalid_param(
            "expires_at",
            "Invalid expires_at: must be after effective_at.",
        ));
    }
    Ok(())
}

/// A change to a grant: only its expiry and metadata can change. Built only by
/// [`UpdateCreditGrant::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateCreditGrant {
    /// `None`: leave; `Some(None)`: never expires; `Some(Some(t))`: expires at `t`.
    expires_at: Option<Option<i64>>,
    metadata: MetadataUpdate,
}

/// An update as a transport received it.
#[derive(Debug, Clone, Default)]
pub struct UpdateGrantFields {
    /// A new expiry.
    pub expires_at: Option<i64>,
    /// Remove the expiry (the grant never expires).
    pub clear_expires_at: bool,
    pub metadata: MetadataUpdate,
}

impl UpdateCreditGrant {
    pub fn parse(fields: UpdateGrantFields) -> Result<UpdateCreditGrant> {
        let expires_at = match (fields.expires_at, fields.clear_expires_at) {
            (Some(_), true) => {
                return Err(Error::invalid_param(
                    "clear_expires_at",
                    "Send either expires_at or clear_expires_at, not both.",
                ));
            }
            (Some(at), false) => Some(Some(at)),
            (None, true) => Some(None),
            (None, false) => None,
        };
        Ok(UpdateCreditGrant {
            expires_at,
            metadata: fields.metadata,
        })
    }

    /// The grant after this update, at `now`.
    pub fn apply_to(&self, grant: &CreditGrant, now: i64) -> Result<CreditGrant> {
        let mut updated = grant.clone();
        if let Some(expires_at) = self.expires_at {
            if grant.is_voided() {
                return Err(Error::invalid_state(format!(
                    "You cannot change the expiry of credit grant {} because it has been voided.",
                    grant.id
                )));
            }
            // Past its expiry the remainder is already gone (even before the sweeper writes
            // the entry); a new expiry must not bring it back.
            if grant.expiry_recorded_at.is_some() || grant.is_expired(now) {
                return Err(Error::invalid_state(format!(
                    "You cannot change the expiry of credit grant {} because it has already expired.",
                    grant.id
                )));
            }
            if let Some(at) = expires_at {
                check_expiry_after(at, grant.effective_at)?;
            }
            updated.expires_at = expires_at;
        }
        updated.metadata = grant.metadata.apply(&self.metadata)?;
        updated.updated = now;
        Ok(updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The summary with no credit holds.
    fn summarize_all(
        grants: &[CreditGrant],
        filter: &SummaryFilter,
        now: i64,
    ) -> Vec<CurrencyBalance> {
        summarize(grants, &BTreeMap::new(), filter, now)
    }

    fn usd() -> Currency {
        Currency::parse("usd", "currency").unwrap()
    }

    fn grant(
        id: &str,
        priority: i64,
        expires_at: Option<i64>,
        category: Category,
        effective_at: i64,
        created: i64,
        remaining: i64,
    ) -> CreditGrant {
        CreditGrant {
            id: id.into(),
            livemode: false,
            created,
            updated: created,
            customer_id: "cus_1".into(),
            name: None,
            category,
            priority,
            currency: usd(),
            amount: remaining.max(1),
            remaining,
            scope: Scope::Metered,
            effective_at,
            expires_at,
            voided_at: None,
            expiry_recorded_at: None,
            metadata: Metadata::default(),
            test_clock: None,
        }
    }

    fn metered() -> PriceRef {
        PriceRef {
            metered: true,
            id: Some("price_1".into()),
        }
    }

    fn order_of(grants: &[CreditGrant]) -> Vec<&str> {
        burn_down(grants, &usd(), &metered(), i64::MAX / 4, 1_000)
            .into_iter()
            .map(|(index, _)| grants[index].id.as_str())
            .collect()
    }

    #[test]
    fn priority_decides_first_and_zero_is_highest() {
        let grants = [
            grant("low", 90, Some(10_000), Category::Promotional, 0, 0, 5),
            grant("high", 0, None, Category::Paid, 0, 0, 5),
        ];
        assert_eq!(order_of(&grants), ["high", "low"]);
    }

    #[test]
    fn ties_break_by_expiry_then_category_then_effective_then_creation() {
        let grants = [
            grant("never", 50, None, Category::Promotional, 0, 0, 5),
            grant("late", 50, Some(9_000), Category::Promotional, 0, 0, 5),
            grant("soon_paid", 50, Some(5_000), Category::Paid, 0, 0, 5),
            grant(
                "soon_promo_later",
                50,
                Some(5_000),
                Category::Promotional,
                100,
                0,
                5,
            ),
            grant(
                "soon_promo_early_b",
                50,
                Some(5_000),
                Category::Promotional,
                50,
                20,
                5,
            ),
            grant(
                "soon_promo_early_a",
                50,
                Some(5_000),
                Category::Promotional,
                50,
                10,
                5,
            ),
        ];
        assert_eq!(
            order_of(&grants),
            [
                "soon_promo_early_a",
                "soon_promo_early_b",
                "soon_promo_later",
                "soon_paid",
                "late",
                "never"
            ]
        );
    }

    #[test]
    fn the_comparator_names_the_first_key_that_differs() {
        let base = grant("a", 50, Some(5_000), Category::Paid, 100, 10, 5);
        let with = |change: fn(&mut CreditGrant)| {
            let mut other = base.clone();
            other.id = "b".into();
            change(&mut other);
            burn_order_decided(&base, &other)
        };
        assert_eq!(
            with(|g| g.priority = 60),
            (Ordering::Less, BurnKey::Priority)
        );
        assert_eq!(
            with(|g| g.expires_at = None),
            (Ordering::Less, BurnKey::ExpiresAt)
        );
        assert_eq!(
            with(|g| g.category = Category::Promotional),
            (Ordering::Greater, BurnKey::Category)
        );
        assert_eq!(
            with(|g| g.effective_at = 50),
            (Ordering::Greater, BurnKey::EffectiveAt)
        );
        assert_eq!(with(|g| g.created = 20), (Ordering::Less, BurnKey::Created));
        assert_eq!(
            with(|_| {}),
            (Ordering::Less, BurnKey::Created),
            "the ID breaks the tie"
        );
        assert_eq!(
            burn_order_decided(&base, &base),
            (Ordering::Equal, BurnKey::Created)
        );
    }

    #[test]
    fn each_grant_is_drained_before_the_next() {
        let grants = [
            grant("a", 1, None, Category::Paid, 0, 0, 30),
            grant("b", 2, None, Category::Paid, 0, 0, 30),
            grant("c", 3, None, Category::Paid, 0, 0, 30),
        ];
        let draws = burn_down(&grants, &usd(), &metered(), 45, 1_000);
        assert_eq!(draws, vec![(0, 30), (1, 15)]);
    }

    #[test]
    fn ineligible_grants_are_skipped() {
        let mut voided = grant("voided", 0, None, Category::Paid, 0, 0, 10);
        voided.voided_at = Some(1);
        let future = grant("future", 0, None, Category::Paid, 5_000, 0, 10);
        let expired = grant("expired", 0, Some(500), Category::Paid, 0, 0, 10);
        let mut euros = grant("euros", 0, None, Category::Paid, 0, 0, 10);
        euros.currency = Currency::parse("eur", "c").unwrap();
        let mut other_price = grant("other_price", 0, None, Category::Paid, 0, 0, 10);
        other_price.scope = Scope::Prices(vec!["price_2".into()]);
        let mut this_price = grant("this_price", 0, None, Category::Paid, 0, 0, 10);
        this_price.scope = Scope::Prices(vec!["price_1".into()]);
        let grants = [voided, future, expired, euros, other_price, this_price];
        assert_eq!(order_of(&grants), ["this_price"]);
        let licensed = PriceRef {
            metered: false,
            id: Some("price_9".into()),
        };
        assert!(burn_down(&grants, &usd(), &licensed, 100, 1_000).is_empty());
    }

    #[test]
    fn summary_counts_effective_grants_and_subtracts_pending_expiry() {
        let live = grant("live", 50, None, Category::Paid, 0, 0, 100);
        let lapsed = grant("lapsed", 50, Some(500), Category::Paid, 0, 0, 40);
        let future = grant("future", 50, None, Category::Paid, 5_000, 0, 70);
        let grants = [live, lapsed.clone(), future];
        let all = SummaryFilter::ApplicabilityScope(Scope::Metered);
        let summary = summarize_all(&grants, &all, 1_000);
        assert_eq!(
            summary,
            vec![CurrencyBalance {
                currency: usd(),
                ledger: 140,
                available: 100
            }]
        );
        let mut recorded = lapsed;
        recorded.expiry_recorded_at = Some(600);
        recorded.remaining = 0;
        let after_sweep = summarize_all(&[grants[0].clone(), recorded], &all, 1_000);
        assert_eq!(after_sweep[0].ledger, after_sweep[0].available);
        let one = summarize_all(&grants, &SummaryFilter::CreditGrant("lapsed".into()), 1_000);
        assert_eq!(one[0].ledger, 40);
    }

    #[test]
    fn a_grant_as_of_a_moment_is_what_was_recorded_by_then() {
        let mut g = grant("g", 50, Some(800), Category::Paid, 100, 100, 0);
        g.amount = 90;
        g.voided_at = Some(600);
        assert_eq!(g.state_at(Some(90), 99), None, "not created yet");
        let before_void = g.state_at(Some(40), 500).unwrap();
        assert_eq!((before_void.remaining, before_void.voided_at), (40, None));
        let after_void = g.state_at(Some(0), 600).unwrap();
        assert_eq!(after_void.voided_at, Some(600));
        // An expiry recorded late: lapsed but unswept in between, as the live summary has it.
        let mut lapsing = grant("l", 50, Some(300), Category::Paid, 0, 0, 0);
        lapsing.amount = 70;
        lapsing.expiry_recorded_at = Some(400);
        let unswept = lapsing.state_at(Some(70), 350).unwrap();
        assert_eq!(unswept.expiry_recorded_at, None);
        let all = SummaryFilter::ApplicabilityScope(Scope::Metered);
        let at_350 = summarize_all(&[unswept], &all, 350);
        assert_eq!((at_350[0].ledger, at_350[0].available), (70, 0));
        let swept = lapsing.state_at(Some(0), 400).unwrap();
        assert_eq!(swept.expiry_recorded_at, Some(400));
        // No entry by then: nothing left.
        assert_eq!(lapsing.state_at(None, 10).unwrap().remaining, 0);
    }

    #[test]
    fn as_of_is_refused_after_now() {
        let query = SummaryQuery::parse(
            Some("cus_1".into()),
            Some(SummaryFilterFields {
                kind: Some("credit_grant".into()),
                credit_grant: Some("g".into()),
                applicability_scope: None,
            }),
        )
        .unwrap();
        assert_eq!(query.moment(50).unwrap(), 50);
        let past = query.clone().at(Some(40)).unwrap();
        assert_eq!(past.moment(50).unwrap(), 40);
        let error = query.clone().at(Some(60)).unwrap().moment(50).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("as_of"));
        assert!(query.at(Some(-1)).is_err());
    }

    #[test]
    fn scope_filters_match_grants_that_cover_them() {
        let prices = Scope::Prices(vec!["p1".into(), "p2".into()]);
        assert!(Scope::Metered.matches_filter(&Scope::Prices(vec!["p9".into()])));
        assert!(prices.matches_filter(&Scope::Prices(vec!["p2".into()])));
        assert!(!prices.matches_filter(&Scope::Prices(vec!["p3".into()])));
        assert!(!prices.matches_filter(&Scope::Metered));
    }

    #[test]
    fn grant_input_is_validated() {
        let valid = || GrantFields {
            customer: Some("cus_1".into()),
            amount_type: Some("monetary".into()),
            currency: Some("usd".into()),
            value: Some(1000),
            scope_price_type: Some("metered".into()),
            ..GrantFields::default()
        };
        let parsed = CreateCreditGrant::parse(valid()).unwrap();
        assert_eq!((parsed.category, parsed.priority), (Category::Paid, 50));
        let cases: Vec<(GrantFields, &str)> = vec![
            (
                GrantFields {
                    value: Some(0),
                    ..valid()
                },
                "amount[monetary][value]",
            ),
            (
                GrantFields {
                    value: None,
                    ..valid()
                },
                "amount[monetary][value]",
            ),
            (
                GrantFields {
                    priority: Some(101),
                    ..valid()
                },
                "priority",
            ),
            (
                GrantFields {
                    category: Some("gift".into()),
                    ..valid()
                },
                "category",
            ),
            (
                GrantFields {
                    scope_prices: Some(vec!["p".into()]),
                    ..valid()
                },
                "applicability_config[scope]",
            ),
            (
                GrantFields {
                    scope_price_type: None,
                    ..valid()
                },
                "applicability_config[scope][price_type]",
            ),
            (
                GrantFields {
                    effective_at: Some(100),
                    expires_at: Some(100),
                    ..valid()
                },
                "expires_at",
            ),
            (
                GrantFields {
                    name: Some("n".repeat(101)),
                    ..valid()
                },
                "name",
            ),
            (
                GrantFields {
                    customer: None,
                    ..valid()
                },
                "customer",
            ),
            (
                GrantFields {
                    currency: Some("xxx".into()),
                    ..valid()
                },
                "amount[monetary][currency]",
            ),
        ];
        for (fields, param) in cases {
            let error = CreateCreditGrant::parse(fields).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(param), "{}", error.message);
        }
    }

    fn arbitrary_grant() -> impl Strategy<Value = CreditGrant> {
        (
            0i64..=100,
            proptest::option::of(0i64..2_000),
            any::<bool>(),
            0i64..2_000,
            0i64..1_000,
            1i64..1_000,
            0usize..3,
        )
            .prop_map(
                |(priority, expires_at, promotional, effective_at, created, remaining, scope)| {
                    let category = if promotional {
                        Category::Promotional
                    } else {
                        Category::Paid
                    };
                    let mut g = grant(
                        &format!("g{created}_{priority}_{remaining}"),
                        priority,
                        expires_at,
                        category,
                        effective_at,
                        created,
                        remaining,
                    );
                    g.scope = match scope {
                        0 => Scope::Metered,
                        1 => Scope::Prices(vec!["price_1".into()]),
                        _ => Scope::Prices(vec!["price_2".into()]),
                    };
                    g
                },
            )
    }

    proptest! {
        #[test]
        fn burn_down_never_overspends_and_takes_all_it_can(
            grants in proptest::collection::vec(arbitrary_grant(), 0..12),
            amount_due in 0i64..5_000,
            now in 0i64..2_500,
        ) {
            let draws = burn_down(&grants, &usd(), &metered(), amount_due, now);
            let eligible: i64 = grants.iter().filter(|g| g.is_eligible(&usd(), &metered(), now)).map(|g| g.remaining).sum();
            let drawn: i64 = draws.iter().map(|(_, amount)| amount).sum();
            prop_assert_eq!(drawn, amount_due.min(eligible));
            for (index, amount) in &draws {
                prop_assert!(*amount > 0 && *amount <= grants[*index].remaining);
                prop_assert!(grants[*index].is_eligible(&usd(), &metered(), now));
            }
            // Only the last grant touched may be left partly used.
            for (index, amount) in draws.iter().rev().skip(1) {
                prop_assert_eq!(*amount, grants[*index].remaining);
            }
            // The order is the documented one.
            for pair in draws.windows(2) {
                prop_assert_ne!(burn_order(&grants[pair[0].0], &grants[pair[1].0]), Ordering::Greater);
            }
            // The plan explains itself with the same comparator: each draw comes before the
            // next eligible grant by the key named, every key before it ties, and every grant
            // not eligible is skipped with the reason that keeps it out.
            let plan = plan_burn_down(&grants, &usd(), &metered(), amount_due, now);
            for (rank, draw) in plan.draws.iter().enumerate() {
                prop_assert_eq!(draw.rank as usize, rank + 1);
                if let Some((next, key)) = draw.before {
                    prop_assert_eq!(burn_order_decided(&grants[draw.index], &grants[next]), (Ordering::Less, key));
                }
            }
            for (index, reason) in &plan.skipped {
                prop_assert_eq!(grants[*index].ineligibility(&usd(), &metered(), now), Some(*reason));
            }
            prop_assert_eq!(
                plan.skipped.len(),
                grants.iter().filter(|g| !g.is_eligible(&usd(), &metered(), now)).count()
            );
        }

        #[test]
        fn the_summary_is_the_sum_of_matching_remainders(
            grants in proptest::collection::vec(arbitrary_grant(), 0..12),
            now in 0i64..2_500,
        ) {
            let summary = summarize_all(&grants, &SummaryFilter::ApplicabilityScope(Scope::Metered), now);
            let ledger: i64 = grants.iter().filter(|g| g.scope == Scope::Metered && g.is_effective(now)).map(|g| g.remaining).sum();
            let available: i64 = grants.iter().filter(|g| g.scope == Scope::Metered && g.is_effective(now) && !g.is_expired(now)).map(|g| g.remaining).sum();
            let total_ledger: i64 = summary.iter().map(|b| b.ledger).sum();
            let total_available: i64 = summary.iter().map(|b| b.available).sum();
            prop_assert_eq!(total_ledger, ledger);
            prop_assert_eq!(total_available, available);
            prop_assert!(total_available <= total_ledger && total_available >= 0);
        }
    }
}
