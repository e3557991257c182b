//! Billing alerts of type `credit_balance_threshold` (Stripe's preview API): tell the caller,
//! once, when a customer's available credit balance crosses to at or below a line.
//!
//! An alert remembers whether the balance was at or below its threshold when last evaluated
//! (`below`). Every write that may change a customer's balance evaluates the customer's active
//! alerts in its own transaction ([`CreditBalanceAlert::evaluate`]): a crossing from above to at
//! or below the threshold is a [`Crossing::Triggered`], a rise back above it a
//! [`Crossing::Recovered`]; anything else is nothing. The balance is the summary's
//! `available_balance`, computed by [`summarize`] itself.

use serde::{Deserialize, Serialize};

use super::Currency;
use super::credit_grant::{CreditGrant, Scope, SummaryFilter, summarize};
use super::text::required_id;
use crate::error::{Error, Result};

/// Stripe's limit on `title` at create.
pub const MAX_TITLE_CHARS: usize = 256;
/// The largest threshold, in minor units (a sum of grants can exceed one grant's cap).
pub const MAX_THRESHOLD: i64 = 999_999_999_999;
/// The only alert type creditd serves.
pub const CREDIT_BALANCE_THRESHOLD: &str = "credit_balance_threshold";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Active,
    Inactive,
    Archived,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Active => "active",
            AlertStatus::Inactive => "inactive",
            AlertStatus::Archived => "archived",
        }
    }

    pub fn parse(raw: &str) -> Option<AlertStatus> {
        match raw {
            "active" => Some(AlertStatus::Active),
            "inactive" => Some(AlertStatus::Inactive),
            "archived" => Some(AlertStatus::Archived),
            _ => None,
        }
    }
}

/// A stored `credit_balance_threshold` alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditBalanceAlert {
    pub id: String,
    pub livemode: bool,
    pub created: i64,
    pub title: String,
    pub status: AlertStatus,
    /// The customer whose balance is watched (`filters[0][customer]`).
    pub customer_id: String,
    /// `lte[monetary][currency]`.
    pub currency: Currency,
    /// `lte[monetary][value]`: the alert fires when the balance is at or below this.
    pub threshold: i64,
    /// `filters[0][credit_grants][applicability_config][scope]`: only grants that cover this
    /// count (the summary's `applicability_scope` filter); `None`: every grant.
    pub scope: Option<Scope>,
    /// Whether the balance was at or below the threshold when last evaluated.
    pub below: bool,
}

/// What one evaluation of an alert found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// From above the threshold to at or below it: `billing.alert.triggered`.
    Triggered,
    /// From at or below back above it: `creditd.alert.recovered`.
    Recovered,
}

impl CreditBalanceAlert {
    /// The summary filter this alert's balance is computed with.
    pub fn summary_filter(&self) -> SummaryFilter {
        match &self.scope {
            Some(scope) => SummaryFilter::ApplicabilityScope(scope.clone()),
            None => SummaryFilter::AllGrants,
        }
    }

    /// The customer's available balance in the alert's currency, over the grants it counts,
    /// at `now` (the customer's time), with `held` what live credit holds reserve on each grant:
    /// exactly the summary's `available_balance`.
    pub fn balance(
        &self,
        grants: &[CreditGrant],
        held: &std::collections::BTreeMap<String, i64>,
        now: i64,
    ) -> i64 {
        summarize(grants, held, &self.summary_filter(), now)
            .into_iter()
            .find(|balance| balance.currency == self.currency)
            .map_or(0, |balance| balance.available)
    }

    /// Whether `balance` is at or below the threshold.
    pub fn is_below(&self, balance: i64) -> bool {
        balance <= self.threshold
    }

    /// Compares `balance` with the remembered state and records the new one: the crossing,
    /// if the balance crossed the threshold since the last evaluation.
    pub fn evaluate(&mut self, balance: i64) -> Option<Crossing> {
        let below = self.is_below(balance);
        let crossing = match (self.below, below) {
            (false, true) => Some(Crossing::Triggered),
            (true, false) => Some(Crossing::Recovered),
            _ => None,
        };
        self.below = below;
        crossing
    }

    /// The alert after `action`, or why it cannot be done. Archiving is final: an archived
    /// alert can be archived again (nothing changes) but neither activated nor deactivated.
    pub fn transition(&self, action: AlertAction) -> Result<CreditBalanceAlert> {
        let status = match (self.status, action) {
            (AlertStatus::Archived, AlertAction::Archive) => AlertStatus::Archived,
            (AlertStatus::Archived, _) => {
                return Err(Error::invalid_state(format!(
                    "This alert ({}) is archived and cannot be {}d.",
                    self.id,
                    action.as_str()
                )));
            }
            (_, AlertAction::Activate) => AlertStatus::Active,
            (_, AlertAction::Deactivate) => AlertStatus::Inactive,
            (_, AlertAction::Archive) => AlertStatus::Archived,
        };
        Ok(CreditBalanceAlert {
            status,
            ..self.clone()
        })
    }
}

/// The three lifecycle operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertAction {
    Activate,
    Deactivate,
    Archive,
}

impl AlertAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertAction::Activate => "activate",
            AlertAction::Deactivate => "deactivate",
            AlertAction::Archive => "archive",
        }
    }
}

/// One `credit_balance_threshold[filters][i]` as a transport received it.
#[derive(Debug, Clone, Default)]
pub struct AlertFilterFields {
    pub kind: Option<String>,
    pub customer: Option<String>,
    /// `credit_grants[applicability_config][scope]`, when sent.
    pub scope_price_type: Option<String>,
    pub scope_prices: Option<Vec<String>>,
    pub has_scope: bool,
}

/// Unvalidated alert fields as a transport received them.
#[derive(Debug, Clone, Default)]
pub struct AlertFields {
    pub alert_type: Option<String>,
    pub title: Option<String>,
    /// `usage_threshold` was sent (creditd has no meters).
    pub usage_threshold: bool,
    /// `credit_balance_threshold` was sent.
    pub credit_balance_threshold: bool,
    pub filters: Vec<AlertFilterFields>,
    /// `lte[balance_type]`.
    pub balance_type: Option<String>,
    pub currency: Option<String>,
    pub value: Option<i64>,
    /// `lte[custom_pricing_unit]` was sent.
    pub custom_pricing_unit: bool,
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAlert {
    pub title: String,
    pub customer_id: String,
    pub currency: Currency,
    pub threshold: i64,
    pub scope: Option<Scope>,
}

const CBT: &str = "credit_balance_threshold";

impl CreateAlert {
    pub fn parse(fields: AlertFields) -> Result<CreateAlert> {
        let alert_type = fields
            .alert_type
            .filter(|kind| !kind.is_empty())
            .ok_or_else(|| Error::missing_param("alert_type"))?;
        if alert_type != CREDIT_BALANCE_THRESHOLD {
            return Err(Error::invalid_param(
                "alert_type",
                format!(
                    "Invalid alert_type: creditd supports only credit_balance_threshold alerts, not {alert_type}."
                ),
            ));
        }
        if fields.usage_threshold {
            return Err(Error::invalid_param(
                "usage_threshold",
                "usage_threshold can only be used with alert_type=usage_threshold.",
            ));
        }
        let title = fields
            .title
            .filter(|title| !title.is_empty())
            .ok_or_else(|| Error::missing_param("title"))?;
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(Error::invalid_param(
                "title",
                format!("Invalid title: must be at most {MAX_TITLE_CHARS} characters."),
            ));
        }
        if !fields.credit_balance_threshold {
            return Err(Error::missing_param(CBT));
        }
        let (customer_id, scope) = parse_filters(fields.filters)?;
        let balance_type = fields
            .balance_type
            .filter(|kind| !kind.is_empty())
            .ok_or_else(|| Error::missing_param(format!("{CBT}[lte][balance_type]")))?;
        if balance_type != "monetary" || fields.custom_pricing_unit {
            return Err(Error::invalid_param(
                format!("{CBT}[lte][balance_type]"),
                "Invalid balance_type: creditd supports only monetary thresholds.",
            ));
        }
        let currency = fields
            .currency
            .ok_or_else(|| Error::missing_param(format!("{CBT}[lte][monetary][currency]")))?;
        let currency = Currency::parse(&currency, &format!("{CBT}[lte][monetary][currency]"))?;
        let threshold = fields
            .value
            .ok_or_else(|| Error::missing_param(format!("{CBT}[lte][monetary][value]")))?;
        if !(0..=MAX_THRESHOLD).contains(&threshold) {
            return Err(Error::invalid_param(
                format!("{CBT}[lte][monetary][value]"),
                format!("Invalid value: must be between 0 and {MAX_THRESHOLD}."),
            ));
        }
        Ok(CreateAlert {
            title,
            customer_id,
            currency,
            threshold,
            scope,
        })
    }

    /// The new alert, active; its state is set by its first evaluation.
    pub fn into_alert(self, id: String, livemode: bool, created: i64) -> CreditBalanceAlert {
        CreditBalanceAlert {
            id,
            livemode,
            created,
            title: self.title,
            status: AlertStatus::Active,
            customer_id: self.customer_id,
            currency: self.currency,
            threshold: self.threshold,
            scope: self.scope,
            below: false,
        }
    }
}

/// Exactly one filter, of type `customer`, naming the customer; optionally narrowed to grants
/// with an applicability scope.
fn parse_filters(filters: Vec<AlertFilterFields>) -> Result<(String, Option<Scope>)> {
    let param = format!("{CBT}[filters]");
    let mut filters = filters.into_iter();
    let (Some(filter), None) = (filters.next(), filters.next()) else {
        return Err(Error::invalid_param(
            param,
            "Exactly one filter, of type customer, is required.",
        ));
    };
    let param = format!("{param}[0]");
    match filter.kind.as_deref() {
        None | Some("") => return Err(Error::missing_param(format!("{param}[type]"))),
        Some("customer") => {}
        Some(other) => {
            return Err(Error::invalid_param(
                format!("{param}[type]"),
                format!("Invalid type: creditd supports only customer filters, not {other}."),
            ));
        }
    }
    let customer = required_id(filter.customer, &format!("{param}[customer]"))?;
    let scope = if filter.has_scope {
        Some(Scope::parse(
            filter.scope_price_type,
            filter.scope_prices,
            &format!("{param}[credit_grants][applicability_config][scope]"),
        )?)
    } else {
        None
    };
    Ok((customer, scope))
}

/// Filters for listing alerts. Archived alerts are never listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    pub customer_id: Option<String>,
    /// Another alert type was asked for: nothing matches.
    pub other_type: bool,
}

impl AlertFilter {
    /// `alert_type` (only `credit_balance_threshold` can match anything, but
    /// `usage_threshold` is accepted and lists nothing) and `customer`.
    pub fn parse(alert_type: Option<String>, customer: Option<String>) -> Result<AlertFilter> {
        let customer_id = customer.filter(|customer| !customer.is_empty());
        match alert_type.as_deref() {
            None | Some("") | Some(CREDIT_BALANCE_THRESHOLD) => Ok(AlertFilter {
                customer_id,
                other_type: false,
            }),
            Some("usage_threshold" | "spend_threshold") => Ok(AlertFilter {
                customer_id,
                other_type: true,
            }),
            Some(other) => Err(Error::invalid_param(
                "alert_type",
                format!(
                    "Invalid alert_type: must be one of credit_balance_threshold, spend_threshold or usage_threshold, not {other}"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AlertFields {
        AlertFields {
            alert_type: Some(CREDIT_BALANCE_THRESHOLD.into()),
            title: Some("low".into()),
            credit_balance_threshold: true,
            filters: vec![AlertFilterFields {
                kind: Some("customer".into()),
                customer: Some("cus_1".into()),
                ..AlertFilterFields::default()
            }],
            balance_type: Some("monetary".into()),
            currency: Some("usd".into()),
            value: Some(500),
            ..AlertFields::default()
        }
    }

    fn alert() -> CreditBalanceAlert {
        CreateAlert::parse(fields())
            .unwrap()
            .into_alert("alrt_1".into(), false, 1)
    }

    #[test]
    fn parses_a_customer_threshold() {
        let create = CreateAlert::parse(fields()).unwrap();
        assert_eq!(create.customer_id, "cus_1");
        assert_eq!(create.threshold, 500);
        assert_eq!(create.scope, None);
        let mut scoped = fields();
        scoped.filters[0].has_scope = true;
        scoped.filters[0].scope_price_type = Some("metered".into());
        assert_eq!(
            CreateAlert::parse(scoped).unwrap().scope,
            Some(Scope::Metered)
        );
    }

    #[test]
    fn refuses_what_creditd_cannot_watch() {
        type Change = Box<dyn Fn(&mut AlertFields)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|f| f.alert_type = None), "alert_type"),
            (
                Box::new(|f| f.alert_type = Some("usage_threshold".into())),
                "alert_type",
            ),
            (Box::new(|f| f.title = None), "title"),
            (Box::new(|f| f.title = Some("x".repeat(257))), "title"),
            (
                Box::new(|f| f.credit_balance_threshold = false),
                "credit_balance_threshold",
            ),
            (
                Box::new(|f| f.filters.clear()),
                "credit_balance_threshold[filters]",
            ),
            (
                Box::new(|f| f.filters[0].kind = Some("tenant".into())),
                "credit_balance_threshold[filters][0][type]",
            ),
            (
                Box::new(|f| f.filters[0].customer = None),
                "credit_balance_threshold[filters][0][customer]",
            ),
            (
                Box::new(|f| f.balance_type = Some("custom_pricing_unit".into())),
                "credit_balance_threshold[lte][balance_type]",
            ),
            (
                Box::new(|f| f.value = Some(-1)),
                "credit_balance_threshold[lte][monetary][value]",
            ),
            (
                Box::new(|f| f.currency = Some("xyz".into())),
                "credit_balance_threshold[lte][monetary][currency]",
            ),
        ];
        for (change, param) in cases {
            let mut f = fields();
            change(&mut f);
            let error = CreateAlert::parse(f).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(param));
        }
    }

    #[test]
    fn fires_once_per_crossing_and_recovers() {
        let mut alert = alert();
        assert_eq!(alert.evaluate(1000), None);
        assert_eq!(alert.evaluate(500), Some(Crossing::Triggered));
        assert_eq!(alert.evaluate(100), None);
        assert_eq!(alert.evaluate(0), None);
        assert_eq!(alert.evaluate(501), Some(Crossing::Recovered));
        assert_eq!(alert.evaluate(502), None);
        assert_eq!(alert.evaluate(0), Some(Crossing::Triggered));
    }

    #[test]
    fn archive_is_final() {
        let alert = alert();
        let inactive = alert.transition(AlertAction::Deactivate).unwrap();
        assert_eq!(inactive.status, AlertStatus::Inactive);
        let archived = inactive.transition(AlertAction::Archive).unwrap();
        assert_eq!(archived.status, AlertStatus::Archived);
        assert!(archived.transition(AlertAction::Activate).is_err());
        assert!(archived.transition(AlertAction::Deactivate).is_err());
        assert_eq!(
            archived.transition(AlertAction::Archive).unwrap().status,
            AlertStatus::Archived
        );
    }

    #[test]
    fn other_alert_types_list_nothing() {
        assert!(
            AlertFilter::parse(Some("usage_threshold".into()), None)
                .unwrap()
                .other_type
        );
        assert!(
            !AlertFilter::parse(Some(CREDIT_BALANCE_THRESHOLD.into()), None)
                .unwrap()
                .other_type
        );
        assert!(AlertFilter::parse(Some("x".into()), None).is_err());
    }
}
