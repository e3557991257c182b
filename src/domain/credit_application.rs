//! Applying credits to an invoice line, and giving them back when the invoice is voided.

use serde::{Deserialize, Serialize};

use super::Currency;
use super::credit_balance_transaction::CreditBalanceTransaction;
use super::credit_grant::PriceRef;
use crate::error::{Error, Result};

/// The largest amount due accepted for one line.
pub const MAX_AMOUNT_DUE: i64 = 999_999_999_999;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyCredits {
    pub customer_id: String,
    pub currency: Currency,
    pub invoice: String,
    pub invoice_line_item: String,
    pub price: PriceRef,
    pub amount_due: i64,
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
        let required = |value: String, param: &str| -> Result<String> {
            if value.is_empty() {
                Err(Error::missing_param(param))
            } else {
                Ok(value)
            }
        };
        let customer_id = required(fields.customer, "customer")?;
        let currency = Currency::parse(&fields.currency, "currency")?;
        let invoice = required(fields.invoice, "invoice")?;
        let invoice_line_item = required(fields.invoice_line_item, "invoice_line_item")?;
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
}

impl CreditApplication {
    pub fn remaining_due(&self) -> i64 {
        self.amount_due - self.applied
    }
}
