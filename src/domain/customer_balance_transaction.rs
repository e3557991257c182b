//! The customer balance ledger: immutable entries whose `ending_balance` values form an
//! unbroken running sum per customer and currency. Only `description` and `metadata` change.

use serde::{Deserialize, Serialize};

use super::pagination::TimeRangeFields;
use super::text::{optional_text, text_update};
use super::{Currency, Metadata, MetadataUpdate, TimeRange};
use crate::error::{Error, Result};

pub const MAX_DESCRIPTION_CHARS: usize = 350;
/// The largest single movement accepted, in minor units (ten billion in a two-decimal currency).
pub const MAX_AMOUNT: i64 = 999_999_999_999;
/// Balances stay within 2^53 so that JSON clients using doubles read them exactly.
pub const MAX_BALANCE: i64 = 9_007_199_254_740_991;

/// Stripe's transaction types. Transactions created through the API are adjustments.
pub const TYPE_ADJUSTMENT: &str = "adjustment";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerBalanceTransaction {
    pub id: String,
    pub livemode: bool,
    pub created: i64,
    pub customer_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub ending_balance: i64,
    /// Position in the customer's chain for this currency, from 1.
    pub sequence: i64,
    pub kind: String,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub invoice: Option<String>,
    pub credit_note: Option<String>,
    pub checkout_session: Option<String>,
}

/// Unvalidated input for a new transaction.
#[derive(Debug, Clone, Default)]
pub struct TransactionFields {
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub description: Option<String>,
    pub metadata: MetadataUpdate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateBalanceTransaction {
    pub customer_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub description: Option<String>,
    pub metadata: Metadata,
}

impl CreateBalanceTransaction {
    pub fn parse(customer_id: String, fields: TransactionFields) -> Result<Self> {
        let amount = fields
            .amount
            .ok_or_else(|| Error::missing_param("amount"))?;
        if amount == 0 {
            return Err(Error::invalid_param(
                "amount",
                "Invalid amount: must not be zero.",
            ));
        }
        if amount.unsigned_abs() > MAX_AMOUNT as u64 {
            return Err(Error::invalid_param(
                "amount",
                format!("Invalid amount: must be between -{MAX_AMOUNT} and {MAX_AMOUNT}."),
            ));
        }
        let currency = fields
            .currency
            .ok_or_else(|| Error::missing_param("currency"))?;
        Ok(CreateBalanceTransaction {
            customer_id,
            amount,
            currency: Currency::parse(&currency, "currency")?,
            description: optional_text(fields.description, "description", MAX_DESCRIPTION_CHARS)?,
            metadata: Metadata::default().apply(&fields.metadata)?,
        })
    }
}

/// The balance after moving `balance` by `amount`, refusing to leave the safe range.
pub fn next_balance(balance: i64, amount: i64) -> Result<i64> {
    balance
        .checked_add(amount)
        .filter(|next| next.unsigned_abs() <= MAX_BALANCE as u64)
        .ok_or_else(|| {
            Error::invalid_param(
                "amount",
                "This transaction would move the customer's balance beyond the supported range.",
            )
        })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateBalanceTransaction {
    pub description: Option<Option<String>>,
    pub metadata: MetadataUpdate,
}

impl UpdateBalanceTransaction {
    pub fn parse(description: Option<String>, metadata: MetadataUpdate) -> Result<Self> {
        Ok(UpdateBalanceTransaction {
            description: text_update(description, "description", MAX_DESCRIPTION_CHARS)?,
            metadata,
        })
    }

    pub fn apply_to(
        &self,
        transaction: &CustomerBalanceTransaction,
    ) -> Result<CustomerBalanceTransaction> {
        let mut updated = transaction.clone();
        if let Some(description) = &self.description {
            updated.description = description.clone();
        }
        updated.metadata = transaction.metadata.apply(&self.metadata)?;
        Ok(updated)
    }
}

/// The longest invoice ID the `invoice` filter accepts (Stripe's limit for IDs).
pub const MAX_INVOICE_ID_CHARS: usize = 5000;

/// Which of a customer's balance transactions a list returns: Stripe's `created` and
/// `invoice` filters, validated once here for both transports. The default filters nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerBalanceTransactionFilter {
    created: TimeRange,
    invoice: Option<String>,
}

impl CustomerBalanceTransactionFilter {
    pub fn parse(created: TimeRangeFields, invoice: Option<String>) -> Result<Self> {
        let created = TimeRange::parse("created", created)?;
        if let Some(invoice) = &invoice {
            if invoice.is_empty() {
                return Err(Error::invalid_param(
                    "invoice",
                    "You passed an empty string for 'invoice'. Pass an invoice ID, or leave the filter out.",
                )
                .with_code("parameter_invalid_empty"));
            }
            if invoice.chars().count() > MAX_INVOICE_ID_CHARS {
                return Err(Error::invalid_param(
                    "invoice",
                    format!("Invalid invoice: must be at most {MAX_INVOICE_ID_CHARS} characters"),
                ));
            }
        }
        Ok(CustomerBalanceTransactionFilter { created, invoice })
    }

    /// Only transactions created within this range.
    pub fn created(&self) -> &TimeRange {
        &self.created
    }

    /// Only transactions related to this invoice.
    pub fn invoice(&self) -> Option<&str> {
        self.invoice.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amount_and_currency_are_required_and_zero_is_refused() {
        let missing = CreateBalanceTransaction::parse("cus_1".into(), TransactionFields::default());
        assert_eq!(missing.unwrap_err().param.as_deref(), Some("amount"));
        let zero = TransactionFields {
            amount: Some(0),
            currency: Some("usd".into()),
            ..Default::default()
        };
        assert!(CreateBalanceTransaction::parse("cus_1".into(), zero).is_err());
        let no_currency = TransactionFields {
            amount: Some(5),
            ..Default::default()
        };
        let error = CreateBalanceTransaction::parse("cus_1".into(), no_currency).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("currency"));
    }

    #[test]
    fn the_list_filter_checks_its_time_range_and_invoice() {
        let filter = CustomerBalanceTransactionFilter::parse(
            TimeRangeFields {
                gte: Some(10),
                ..TimeRangeFields::default()
            },
            Some("in_123".into()),
        )
        .unwrap();
        assert_eq!(filter.created().gte, Some(10));
        assert_eq!(filter.invoice(), Some("in_123"));
        assert_eq!(
            CustomerBalanceTransactionFilter::parse(TimeRangeFields::default(), None).unwrap(),
            CustomerBalanceTransactionFilter::default()
        );

        let empty = CustomerBalanceTransactionFilter::parse(
            TimeRangeFields::default(),
            Some(String::new()),
        )
        .unwrap_err();
        assert_eq!(
            (empty.param.as_deref(), empty.code),
            (Some("invoice"), Some("parameter_invalid_empty"))
        );
        let long = "i".repeat(MAX_INVOICE_ID_CHARS + 1);
        assert!(
            CustomerBalanceTransactionFilter::parse(TimeRangeFields::default(), Some(long))
                .is_err()
        );
        let negative = TimeRangeFields {
            gt: Some(-1),
            ..TimeRangeFields::default()
        };
        let error = CustomerBalanceTransactionFilter::parse(negative, None).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("created[gt]"));
    }

    #[test]
    fn balances_never_overflow() {
        assert_eq!(next_balance(-100, 250).unwrap(), 150);
        assert!(next_balance(MAX_BALANCE, 1).is_err());
        assert!(next_balance(i64::MIN + 1, -5).is_err());
    }

    proptest! {
        #[test]
        fn a_chain_of_entries_always_ends_at_the_sum_of_its_amounts(
            amounts in proptest::collection::vec(-MAX_AMOUNT..=MAX_AMOUNT, 1..200)
        ) {
            let mut balance = 0i64;
            for amount in &amounts {
                balance = next_balance(balance, *amount).unwrap();
            }
            prop_assert_eq!(balance, amounts.iter().sum::<i64>());
        }
    }
}
