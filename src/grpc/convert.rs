//! Domain values to `creditd.v1` messages and request messages to domain inputs.

use std::collections::HashMap;

use super::proto;
use crate::domain::customer::Customer;
use crate::domain::customer_balance_transaction::CustomerBalanceTransaction;
use crate::domain::pagination::{ListRequest, TimeRangeFields};
use crate::domain::{Metadata, MetadataUpdate};
use crate::error::Result;

pub fn metadata_map(metadata: Metadata) -> HashMap<String, String> {
    metadata.into_map().into_iter().collect()
}

/// A map field with Stripe's rules: an empty value removes the key.
pub fn metadata_update(
    clear_all: bool,
    metadata: HashMap<String, String>,
) -> Result<MetadataUpdate> {
    MetadataUpdate::parse(clear_all, metadata)
}

pub fn list_request(page: Option<proto::PageRequest>) -> Result<ListRequest> {
    let page = page.unwrap_or_default();
    ListRequest::parse(
        page.limit.filter(|limit| *limit != 0),
        page.starting_after,
        page.ending_before,
    )
}

/// A `created` filter as sent, for a domain filter to validate.
pub fn created_fields(filter: Option<proto::CreatedFilter>) -> TimeRangeFields {
    let filter = filter.unwrap_or_default();
    TimeRangeFields {
        exactly: filter.eq,
        gt: filter.gt,
        gte: filter.gte,
        lt: filter.lt,
        lte: filter.lte,
    }
}

impl From<Customer> for proto::Customer {
    fn from(customer: Customer) -> Self {
        if customer.deleted {
            return proto::Customer {
                id: customer.id,
                object: "customer".to_string(),
                deleted: true,
                ..Default::default()
            };
        }
        proto::Customer {
            deleted: false,
            object: "customer".to_string(),
            balance: customer.balance(),
            invoice_credit_balance: customer.invoice_credit_balance().into_iter().collect(),
            id: customer.id,
            created: customer.created,
            currency: customer.currency.map(|currency| currency.to_string()),
            description: customer.description,
            email: customer.email,
            livemode: customer.livemode,
            metadata: metadata_map(customer.metadata),
            name: customer.name,
            phone: customer.phone,
            test_clock: customer.test_clock,
        }
    }
}

impl From<CustomerBalanceTransaction> for proto::CustomerBalanceTransaction {
    fn from(txn: CustomerBalanceTransaction) -> Self {
        proto::CustomerBalanceTransaction {
            id: txn.id,
            object: "customer_balance_transaction".to_string(),
            amount: txn.amount,
            checkout_session: txn.checkout_session,
            created: txn.created,
            credit_note: txn.credit_note,
            currency: txn.currency.to_string(),
            customer: txn.customer_id,
            customer_account: None,
            description: txn.description,
            ending_balance: txn.ending_balance,
            invoice: txn.invoice,
            livemode: txn.livemode,
            metadata: metadata_map(txn.metadata),
            r#type: txn.kind,
        }
    }
}

use crate::domain::Currency;
use crate::domain::credit_balance_transaction::CreditBalanceTransaction;
use crate::domain::credit_grant::{CreditGrant, CurrencyBalance, Scope};

pub fn credit_amount(currency: &Currency, value: i64) -> proto::CreditAmount {
    proto::CreditAmount {
        r#type: "monetary".to_string(),
        monetary: Some(proto::MonetaryAmount {
            currency: currency.to_string(),
            value,
        }),
    }
}

pub fn credit_scope(scope: Scope) -> proto::CreditScope {
    match scope {
        Scope::Metered => proto::CreditScope {
            price_type: Some("metered".to_string()),
            prices: Vec::new(),
        },
        Scope::Prices(prices) => proto::CreditScope {
            price_type: None,
            prices: prices
                .into_iter()
                .map(|id| proto::ApplicablePrice { id })
                .collect(),
        },
    }
}

/// The two scope fields of a request message, for [`Scope::parse`].
pub fn scope_fields(scope: Option<proto::CreditScope>) -> (Option<String>, Option<Vec<String>>) {
    match scope {
        None => (None, None),
        Some(scope) => {
            let prices = (!scope.prices.is_empty())
                .then(|| scope.prices.into_iter().map(|price| price.id).collect());
            (scope.price_type.filter(|t| !t.is_empty()), prices)
        }
    }
}

impl From<CreditGrant> for proto::CreditGrant {
    fn from(grant: CreditGrant) -> Self {
        proto::CreditGrant {
            object: "billing.credit_grant".to_string(),
            amount: Some(credit_amount(&grant.currency, grant.amount)),
            applicability_config: Some(proto::ApplicabilityConfig {
                scope: Some(credit_scope(grant.scope)),
            }),
            category: grant.category.as_str().to_string(),
            created: grant.created,
            customer: grant.customer_id,
            customer_account: None,
            effective_at: Some(grant.effective_at),
            expires_at: grant.expires_at,
            livemode: grant.livemode,
            metadata: metadata_map(grant.metadata),
            name: grant.name,
            priority: Some(grant.priority),
            test_clock: grant.test_clock,
            updated: grant.updated,
            voided_at: grant.voided_at,
            id: grant.id,
        }
    }
}

impl From<CreditBalanceTransaction> for proto::CreditBalanceTransaction {
    fn from(entry: CreditBalanceTransaction) -> Self {
        let amount = Some(credit_amount(&entry.currency, entry.amount));
        let line = match (entry.invoice, entry.invoice_line_item) {
            (Some(invoice), Some(invoice_line_item)) => Some(proto::InvoiceLineReference {
                invoice,
                invoice_line_item,
            }),
            _ => None,
        };
        let (credit, debit) = if entry.kind.is_credit() {
            let credit = proto::CreditBalanceCredit {
                amount,
                r#type: entry.kind.as_str().to_string(),
                credits_application_invoice_voided: line,
            };
            (Some(credit), None)
        } else {
            let debit = proto::CreditBalanceDebit {
                amount,
                r#type: entry.kind.as_str().to_string(),
                credits_applied: line,
            };
            (None, Some(debit))
        };
        proto::CreditBalanceTransaction {
            id: entry.id,
            object: "billing.credit_balance_transaction".to_string(),
            created: entry.created,
            credit,
            credit_grant: entry.credit_grant_id,
            debit,
            effective_at: entry.effective_at,
            livemode: entry.livemode,
            test_clock: entry.test_clock,
            r#type: if entry.kind.is_credit() {
                "credit"
            } else {
                "debit"
            }
            .to_string(),
        }
    }
}

impl From<CurrencyBalance> for proto::CreditBalance {
    fn from(balance: CurrencyBalance) -> Self {
        proto::CreditBalance {
            available_balance: Some(credit_amount(&balance.currency, balance.available)),
            ledger_balance: Some(credit_amount(&balance.currency, balance.ledger)),
        }
    }
}

impl From<crate::domain::test_clock::TestClock> for proto::TestClock {
    fn from(clock: crate::domain::test_clock::TestClock) -> Self {
        proto::TestClock {
            id: clock.id,
            object: "test_helpers.test_clock".to_string(),
            created: clock.created,
            deletes_after: clock.deletes_after,
            frozen_time: clock.frozen_time,
            livemode: clock.livemode,
            name: clock.name,
            status: clock.status.as_str().to_string(),
            status_details: Some(proto::TestClockStatusDetails {
                advancing: clock
                    .target_frozen_time
                    .map(|target_frozen_time| proto::AdvancingStatusDetails { target_frozen_time }),
            }),
        }
    }
}
