//! Domain values to `creditd.v1` messages and request messages to domain inputs.

use std::collections::HashMap;

use super::proto;
use crate::domain::customer::Customer;
use crate::domain::customer_balance_transaction::CustomerBalanceTransaction;
use crate::domain::pagination::{ListRequest, TimeRange};
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

pub fn time_range(filter: Option<proto::CreatedFilter>) -> TimeRange {
    let Some(filter) = filter else {
        return TimeRange::default();
    };
    let mut range = filter.eq.map(TimeRange::exactly).unwrap_or_default();
    range.gt = filter.gt.or(range.gt);
    range.gte = filter.gte.or(range.gte);
    range.lt = filter.lt.or(range.lt);
    range.lte = filter.lte.or(range.lte);
    range
}

impl From<Customer> for proto::Customer {
    fn from(customer: Customer) -> Self {
        proto::Customer {
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
