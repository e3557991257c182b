//! Applying credits to an invoice line, and giving them back when the invoice is voided.

use serde::{Deserialize, Serialize};

use super::Currency;
use super::credit_balance_transaction::CreditBalanceTransaction;
use super::credit_grant::{BurnKey, BurnPlan, CreditGrant, PriceRef, SkipReason};
use super::ledger::InvoiceLine;
use super::text::required_id;
use crate::error::{Error, Result};

/// The most invoice lines one `ApplyCreditsBatch` takes.
pub const MAX_BATCH_LINES: usize = 1000;

/// A batch of applications holds from 1 to [`MAX_BATCH_LINES`] lines.
pub fn check_batch_size(lines: usize) -> Result<()> {
    if lines == 0 || lines > MAX_BATCH_LINES {
        return Err(Error::invalid_param(
            "lines",
            format!(
                "A batch applies credits to between 1 and {MAX_BATCH_LINES} invoice lines; this one has {lines}."
            ),
        ));
    }
    Ok(())
}

/// The largest amount due accepted for one line.
pub const MAX_AMOUNT_DUE: i64 = 999_999_999_999;

/// Applying credits to one invoice line: built only by [`ApplyCredits::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyCredits {
    pub(in crate::domain) customer_id: String,
    pub(in crate::domain) currency: Currency,
    pub(in crate::domain) invoice: String,
    pub(in crate::domain) invoice_line_item: String,
    pub(in crate::domain) price: PriceRef,
    pub(in crate::domain) amount_due: i64,
}

/// Unvalidated input for [`ApplyCredits`].
#[derive(Debug, Clone, Default)]
pub struct ApplyFields {
    pub customer: String,
    pub currency: String,
    pub invoice: String,
    pub invoice_line_item: String,
    pub price_type: Option<String>,
    pub price: Option<String>,
    pub amount_due: i64,
}

impl ApplyCredits {
    pub fn parse(fields: ApplyFields) -> Result<ApplyCredits> {
        let customer_id = required_id(Some(fields.customer), "customer")?;
        let currency = Currency::parse(&fields.currency, "currency")?;
        let invoice = required_id(Some(fields.invoice), "invoice")?;
        let invoice_line_item = required_id(Some(fields.invoice_line_item), "invoice_line_item")?;
        if !(0..=MAX_AMOUNT_DUE).contains(&fields.amount_due) {
            return Err(Error::invalid_param(
                "amount_due",
                format!("Invalid amount_due: must be between 0 and {MAX_AMOUNT_DUE}."),
            ));
        }
        Ok(ApplyCredits {
            customer_id,
            currency,
            invoice,
            invoice_line_item,
            price: PriceRef::parse(fields.price_type, fields.price)?,
            amount_due: fields.amount_due,
        })
    }
}

/// Giving back the credits applied to a voided invoice's lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReinstateCredits {
    customer_id: String,
    invoice: String,
}

impl ReinstateCredits {
    pub fn parse(customer: Option<String>, invoice: Option<String>) -> Result<ReinstateCredits> {
        Ok(ReinstateCredits {
            customer_id: required_id(customer, "customer")?,
            invoice: required_id(invoice, "invoice")?,
        })
    }

    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    pub fn invoice(&self) -> &str {
        &self.invoice
    }
}

/// Why each credit of an application was spent: made by [`Explanation::of`] from the same
/// [`BurnPlan`] that decided the draws, and stored with the application.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Explanation {
    /// One per grant drawn from, in burn order.
    pub draws: Vec<DrawReason>,
    /// Every grant of the customer that could not pay for the line, with why.
    pub skipped: Vec<SkippedGrant>,
}

/// Why one grant was drawn from when it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawReason {
    pub credit_grant: String,
    pub amount: i64,
    /// 1-based position among the grants eligible for the line, in burn-down order.
    pub rank: u32,
    /// The next-ranked eligible grant, drawn from or not (`None` for the last eligible one).
    pub next_credit_grant: Option<String>,
    /// The burn-down key that put this grant before `next_credit_grant`.
    pub decided_by: Option<BurnKey>,
}

/// A grant that could not pay for the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedGrant {
    pub credit_grant: String,
    pub reason: SkipReason,
}

impl Explanation {
    /// The explanation of `plan` over `grants` (the grants it was planned over).
    pub fn of(plan: &BurnPlan, grants: &[CreditGrant]) -> Explanation {
        let id = |index: usize| grants[index].id.clone();
        Explanation {
            draws: plan
                .draws
                .iter()
                .map(|draw| DrawReason {
                    credit_grant: id(draw.index),
                    amount: draw.amount,
                    rank: draw.rank,
                    next_credit_grant: draw.before.map(|(next, _)| id(next)),
                    decided_by: draw.before.map(|(_, key)| key),
                })
                .collect(),
            skipped: plan
                .skipped
                .iter()
                .map(|&(index, reason)| SkippedGrant {
                    credit_grant: id(index),
                    reason,
                })
                .collect(),
        }
    }
}

/// The invoice line whose application to explain: built only by [`ExplainLine::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainLine {
    customer_id: String,
    invoice: String,
    invoice_line_item: String,
}

impl ExplainLine {
    pub fn parse(customer: String, invoice: String, invoice_line_item: String) -> Result<Self> {
        Ok(ExplainLine {
            customer_id: required_id(Some(customer), "customer")?,
            invoice: required_id(Some(invoice), "invoice")?,
            invoice_line_item: required_id(Some(invoice_line_item), "invoice_line_item")?,
        })
    }

    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    pub fn invoice(&self) -> &str {
        &self.invoice
    }

    pub fn invoice_line_item(&self) -> &str {
        &self.invoice_line_item
    }
}

/// The record of credits applied to one invoice line: one per line, so a line is applied once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLine {
    pub customer_id: String,
    pub currency: Currency,
    pub invoice: String,
    pub invoice_line_item: String,
    pub amount_due: i64,
    pub applied: i64,
    pub price: PriceRef,
    pub created: i64,
    /// When the line's credits were given back for a voided invoice.
    pub reinstated_at: Option<i64>,
    /// Why each credit was spent; `None` for lines applied before explanations were stored.
    pub explanation: Option<Explanation>,
}

impl AppliedLine {
    /// Whether an earlier application of this line was asked with the same terms as `command`
    /// (a line applied once can only be replayed, never applied with other terms).
    pub fn has_terms_of(&self, command: &ApplyCredits) -> bool {
        command.has_terms(&self.customer_id, &self.currency, self.amount_due)
    }
}

impl ApplyCredits {
    /// Whether this asks for the line on the terms an application of it was made with: the
    /// same customer, currency and amount due (a line applied once can only be replayed).
    fn has_terms(&self, customer_id: &str, currency: &Currency, amount_due: i64) -> bool {
        self.customer_id == customer_id
            && self.currency == *currency
            && self.amount_due == amount_due
    }

    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    pub fn invoice(&self) -> &str {
        &self.invoice
    }

    pub fn invoice_line_item(&self) -> &str {
        &self.invoice_line_item
    }

    pub fn amount_due(&self) -> i64 {
        self.amount_due
    }

    pub fn line(&self) -> InvoiceLine {
        InvoiceLine {
            invoice: self.invoice.clone(),
            invoice_line_item: self.invoice_line_item.clone(),
        }
    }

    /// The line's record once `applied` was applied at `now`, for the reasons `explanation`.
    pub fn record(&self, applied: i64, now: i64, explanation: Explanation) -> AppliedLine {
        AppliedLine {
            customer_id: self.customer_id.clone(),
            currency: self.currency.clone(),
            invoice: self.invoice.clone(),
            invoice_line_item: self.invoice_line_item.clone(),
            amount_due: self.amount_due,
            applied,
            price: self.price.clone(),
            created: now,
            reinstated_at: None,
            explanation: Some(explanation),
        }
    }
}

impl AppliedLine {
    /// What the caller is told about this line, with the entries written for it.
    pub fn outcome(self, entries: Vec<CreditBalanceTransaction>) -> CreditApplication {
        CreditApplication {
            customer_id: self.customer_id,
            currency: self.currency,
            invoice: self.invoice,
            invoice_line_item: self.invoice_line_item,
            amount_due: self.amount_due,
            applied: self.applied,
            entries,
            explanation: self.explanation,
        }
    }
}

/// The outcome of applying credits to one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditApplication {
    pub customer_id: String,
    pub currency: Currency,
    pub invoice: String,
    pub invoice_line_item: String,
    pub amount_due: i64,
    pub applied: i64,
    /// One `credits_applied` entry per grant drawn from, in burn order.
    pub entries: Vec<CreditBalanceTransaction>,
    /// Why each credit was spent (`None` for lines applied before explanations were stored).
    #[serde(default)]
    pub explanation: Option<Explanation>,
}

impl CreditApplication {
    pub fn remaining_due(&self) -> i64 {
        self.amount_due - self.applied
    }

    /// Whether `command` names this line on the terms it was applied with (see
    /// [`AppliedLine::has_terms_of`]).
    pub fn has_terms_of(&self, command: &ApplyCredits) -> bool {
        command.has_terms(&self.customer_id, &self.currency, self.amount_due)
    }
}
