//! Entries of the credit ledger (`billing.credit_balance_transaction`): immutable, amounts
//! always positive, direction given by the type. A grant's entries sum to its remainder.

use serde::{Deserialize, Serialize};

use super::Currency;
use super::text::{optional_id, required_id};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    CreditsGranted,
    CreditsApplicationInvoiceVoided,
    CreditsApplied,
    CreditsExpired,
    CreditsVoided,
}

impl EntryType {
    pub const ALL: [EntryType; 5] = [
        EntryType::CreditsGranted,
        EntryType::CreditsApplicationInvoiceVoided,
        EntryType::CreditsApplied,
        EntryType::CreditsExpired,
        EntryType::CreditsVoided,
    ];

    pub fn is_credit(self) -> bool {
        matches!(
            self,
            EntryType::CreditsGranted | EntryType::CreditsApplicationInvoiceVoided
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::CreditsGranted => "credits_granted",
            EntryType::CreditsApplicationInvoiceVoided => "credits_application_invoice_voided",
            EntryType::CreditsApplied => "credits_applied",
            EntryType::CreditsExpired => "credits_expired",
            EntryType::CreditsVoided => "credits_voided",
        }
    }

    pub fn parse(raw: &str) -> Option<EntryType> {
        EntryType::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }

    /// The signed effect on the grant's remainder of an entry of `amount`.
    pub fn signed(self, amount: i64) -> i64 {
        if self.is_credit() { amount } else { -amount }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditBalanceTransaction {
    pub id: String,
    pub livemode: bool,
    pub created: i64,
    pub effective_at: i64,
    pub customer_id: String,
    pub credit_grant_id: String,
    pub kind: EntryType,
    /// Always positive.
    pub amount: i64,
    pub currency: Currency,
    /// For `credits_applied` and `credits_application_invoice_voided`.
    pub invoice: Option<String>,
    pub invoice_line_item: Option<String>,
    pub test_clock: Option<String>,
    /// The grant's remainder right after this entry (the running sum of the grant's entries in
    /// ledger order: `created`, then ID). Not part of Stripe's object: it answers
    /// "what was left at time T" in one lookup.
    pub grant_remaining_after: i64,
}

/// Filters for listing credit balance transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditTransactionFilter {
    pub customer_id: String,
    pub credit_grant_id: Option<String>,
}

impl CreditTransactionFilter {
    /// `customer` is required; `credit_grant` narrows to one grant.
    pub fn parse(
        customer: Option<String>,
        credit_grant: Option<String>,
    ) -> Result<CreditTransactionFilter> {
        Ok(CreditTransactionFilter {
            customer_id: required_id(customer, "customer")?,
            credit_grant_id: optional_id(credit_grant, "credit_grant")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_and_credits_add() {
        for kind in EntryType::ALL {
            assert_eq!(EntryType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EntryType::CreditsGranted.signed(5), 5);
        assert_eq!(EntryType::CreditsApplied.signed(5), -5);
        assert_eq!(EntryType::CreditsApplicationInvoiceVoided.signed(5), 5);
    }
}
