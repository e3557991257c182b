//! Stripe's JSON shapes, as the shim's own wire model (API version 2026-07-29.dahlia).
//! Fields creditd does not track are rendered with Stripe's empty values.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::customer::Customer;
use crate::domain::customer_balance_transaction::CustomerBalanceTransaction;
use crate::domain::pagination::Page;

/// An ID, or the object it names when expanded.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    Id(String),
    Object(Box<T>),
}

#[derive(Debug, Serialize)]
pub struct List<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub has_more: bool,
    pub url: String,
}

impl<T> List<T> {
    pub fn new<D>(page: Page<D>, url: String, render: impl FnMut(D) -> T) -> List<T> {
        List {
            object: "list",
            has_more: page.has_more,
            data: page.data.into_iter().map(render).collect(),
            url,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InvoiceSettingsJson {
    pub custom_fields: Option<()>,
    pub default_payment_method: Option<()>,
    pub footer: Option<()>,
    pub rendering_options: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct CustomerJson {
    pub id: String,
    pub object: &'static str,
    pub address: Option<()>,
    pub balance: i64,
    pub created: i64,
    pub currency: Option<String>,
    pub default_source: Option<()>,
    pub delinquent: bool,
    pub description: Option<String>,
    pub discount: Option<()>,
    pub email: Option<String>,
    pub invoice_credit_balance: BTreeMap<String, i64>,
    pub invoice_prefix: Option<String>,
    pub invoice_settings: InvoiceSettingsJson,
    pub livemode: bool,
    pub metadata: BTreeMap<String, String>,
    pub name: Option<String>,
    pub next_invoice_sequence: i64,
    pub phone: Option<String>,
    pub preferred_locales: Vec<String>,
    pub shipping: Option<()>,
    pub tax_exempt: &'static str,
    pub test_clock: Option<String>,
}

impl From<Customer> for CustomerJson {
    fn from(customer: Customer) -> Self {
        CustomerJson {
            object: "customer",
            address: None,
            balance: customer.balance(),
            invoice_credit_balance: customer.invoice_credit_balance(),
            created: customer.created,
            currency: customer.currency.map(|currency| currency.to_string()),
            default_source: None,
            delinquent: false,
            description: customer.description,
            discount: None,
            email: customer.email,
            invoice_prefix: None,
            invoice_settings: InvoiceSettingsJson {
                custom_fields: None,
                default_payment_method: None,
                footer: None,
                rendering_options: None,
            },
            livemode: customer.livemode,
            metadata: customer.metadata.into_map(),
            name: customer.name,
            next_invoice_sequence: 1,
            phone: customer.phone,
            preferred_locales: Vec::new(),
            shipping: None,
            tax_exempt: "none",
            test_clock: customer.test_clock,
            id: customer.id,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CustomerBalanceTransactionJson {
    pub id: String,
    pub object: &'static str,
    pub amount: i64,
    pub checkout_session: Option<String>,
    pub created: i64,
    pub credit_note: Option<String>,
    pub currency: String,
    pub customer: Expandable<CustomerJson>,
    pub customer_account: Option<String>,
    pub description: Option<String>,
    pub ending_balance: i64,
    pub invoice: Option<String>,
    pub livemode: bool,
    pub metadata: BTreeMap<String, String>,
    #[serde(rename = "type")]
    pub kind: String,
}

impl CustomerBalanceTransactionJson {
    pub fn new(txn: CustomerBalanceTransaction, customer: Option<Customer>) -> Self {
        CustomerBalanceTransactionJson {
            object: "customer_balance_transaction",
            amount: txn.amount,
            checkout_session: txn.checkout_session,
            created: txn.created,
            credit_note: txn.credit_note,
            currency: txn.currency.to_string(),
            customer: match customer {
                Some(customer) => Expandable::Object(Box::new(customer.into())),
                None => Expandable::Id(txn.customer_id),
            },
            customer_account: None,
            description: txn.description,
            ending_balance: txn.ending_balance,
            invoice: txn.invoice,
            livemode: txn.livemode,
            metadata: txn.metadata.into_map(),
            kind: txn.kind,
            id: txn.id,
        }
    }
}
