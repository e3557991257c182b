//! Customers: the owners of balances and credits. Their balances are derived from the
//! customer balance ledger and kept materialized per currency.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::pagination::TimeRangeFields;
use super::text::{optional_text, text_update};
use super::{Currency, Metadata, MetadataUpdate, TimeRange};
use crate::error::{Error, Result};

pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_EMAIL_CHARS: usize = 512;
pub const MAX_DESCRIPTION_CHARS: usize = 5000;
pub const MAX_PHONE_CHARS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub livemode: bool,
    pub created: i64,
    pub name: Option<String>,
    pub email: Option<String>,
    pub description: Option<String>,
    pub phone: Option<String>,
    /// Set by the first balance transaction.
    pub currency: Option<Currency>,
    /// Ledger balance per currency; negative means the customer holds credit.
    pub balances: BTreeMap<Currency, i64>,
    pub metadata: Metadata,
    pub test_clock: Option<String>,
    /// Deleted customers keep their ledger; they read as Stripe's `deleted_customer` stub and
    /// every write treats them as missing.
    pub deleted: bool,
}

impl Customer {
    /// Stripe's `balance`: the balance in the customer's own currency (0 before it has one).
    pub fn balance(&self) -> i64 {
        self.currency
            .as_ref()
            .and_then(|currency| self.balances.get(currency).copied())
            .unwrap_or(0)
    }

    /// Stripe's `invoice_credit_balance`: every currency's balance with the sign flipped, so
    /// that positive means credit.
    pub fn invoice_credit_balance(&self) -> BTreeMap<String, i64> {
        self.balances
            .iter()
            .map(|(currency, balance)| (currency.to_string(), -balance))
            .collect()
    }
}

/// Unvalidated customer fields as a transport received them.
#[derive(Debug, Clone, Default)]
pub struct CustomerFields {
    pub name: Option<String>,
    pub email: Option<String>,
    pub description: Option<String>,
    pub phone: Option<String>,
    pub metadata: MetadataUpdate,
    /// Stripe's `balance`: the absolute balance in minor units, negative = credit.
    pub balance: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateCustomer {
    pub name: Option<String>,
    pub email: Option<String>,
    pub description: Option<String>,
    pub phone: Option<String>,
    pub metadata: Metadata,
    pub test_clock: Option<String>,
}

impl CreateCustomer {
    pub fn parse(fields: CustomerFields, test_clock: Option<String>) -> Result<CreateCustomer> {
        let email = optional_text(fields.email, "email", MAX_EMAIL_CHARS)?;
        if let Some(email) = &email {
            check_email(email)?;
        }
        // The balance lives in the customer's currency, which only a balance transaction sets;
        // a new customer has none, so the only balance it can start with is 0.
        if fields.balance.is_some_and(|balance| balance != 0) {
            return Err(no_currency_for_balance());
        }
        Ok(CreateCustomer {
            name: optional_text(fields.name, "name", MAX_NAME_CHARS)?,
            email,
            description: optional_text(fields.description, "description", MAX_DESCRIPTION_CHARS)?,
            phone: optional_text(fields.phone, "phone", MAX_PHONE_CHARS)?,
            metadata: Metadata::default().apply(&fields.metadata)?,
            test_clock: test_clock.filter(|clock| !clock.is_empty()),
        })
    }
}

/// A change to a customer. `None` leaves a field alone; `Some(None)` clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateCustomer {
    pub name: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub metadata: MetadataUpdate,
    /// The new absolute balance (not a delta), written through the ledger.
    pub balance: Option<i64>,
}

impl UpdateCustomer {
    pub fn parse(fields: CustomerFields) -> Result<UpdateCustomer> {
        let email = text_update(fields.email, "email", MAX_EMAIL_CHARS)?;
        if let Some(Some(email)) = &email {
            check_email(email)?;
        }
        Ok(UpdateCustomer {
            name: text_update(fields.name, "name", MAX_NAME_CHARS)?,
            email,
            description: text_update(fields.description, "description", MAX_DESCRIPTION_CHARS)?,
            phone: text_update(fields.phone, "phone", MAX_PHONE_CHARS)?,
            metadata: fields.metadata,
            balance: fields.balance,
        })
    }

    /// The one ledger entry that setting `balance` writes: its currency and amount (new − old),
    /// or `None` when nothing changes. The balance is in the customer's currency; without one it
    /// can only be set to 0.
    pub fn balance_adjustment(&self, customer: &Customer) -> Result<Option<(Currency, i64)>> {
        let Some(target) = self.balance else {
            return Ok(None);
        };
        let Some(currency) = &customer.currency else {
            return match target {
                0 => Ok(None),
                _ => Err(no_currency_for_balance()),
            };
        };
        let current = customer.balances.get(currency).copied().unwrap_or(0);
        let amount = target.checked_sub(current).ok_or_else(|| {
            Error::invalid_param("balance", "The balance change is out of range.")
        })?;
        Ok((amount != 0).then(|| (currency.clone(), amount)))
    }

    /// The customer after this update, with metadata limits checked on the merged result.
    pub fn apply_to(&self, customer: &Customer) -> Result<Customer> {
        let mut updated = customer.clone();
        if let Some(name) = &self.name {
            updated.name = name.clone();
        }
        if let Some(email) = &self.email {
            updated.email = email.clone();
        }
        if let Some(description) = &self.description {
            updated.description = description.clone();
        }
        if let Some(phone) = &self.phone {
            updated.phone = phone.clone();
        }
        updated.metadata = customer.metadata.apply(&self.metadata)?;
        Ok(updated)
    }
}

/// Filters for listing customers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerFilter {
    pub created: TimeRange,
    pub email: Option<String>,
    /// Only customers on this clock; without it, customers on clocks are left out.
    pub test_clock: Option<String>,
}

impl CustomerFilter {
    /// The customer list's filters as a transport received them; an empty `email` or
    /// `test_clock` counts as absent.
    pub fn parse(
        created: TimeRangeFields,
        email: Option<String>,
        test_clock: Option<String>,
    ) -> Result<CustomerFilter> {
        Ok(CustomerFilter {
            created: TimeRange::parse("created", created)?,
            email: super::text::optional_id(email, "email")?,
            test_clock: super::text::optional_id(test_clock, "test_clock")?,
        })
    }
}

fn check_email(email: &str) -> Result<()> {
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(
            Error::invalid_param("email", format!("Invalid email address: {email}"))
                .with_code("email_invalid"),
        )
    }
}

fn no_currency_for_balance() -> Error {
    Error::invalid_param(
        "balance",
        "This customer has no currency yet, so its balance can only be 0. Create a customer balance transaction with a currency first.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer() -> Customer {
        Customer {
            id: "cus_1".into(),
            livemode: false,
            created: 1,
            name: Some("Ada".into()),
            email: None,
            description: None,
            phone: None,
            currency: Some(Currency::parse("usd", "currency").unwrap()),
            balances: [
                (Currency::parse("usd", "c").unwrap(), -500),
                (Currency::parse("eur", "c").unwrap(), 200),
            ]
            .into_iter()
            .collect(),
            metadata: Metadata::default(),
            test_clock: None,
            deleted: false,
        }
    }

    #[test]
    fn balance_is_in_the_customer_currency_and_invoice_credit_balance_flips_the_sign() {
        let customer = customer();
        assert_eq!(customer.balance(), -500);
        let credit = customer.invoice_credit_balance();
        assert_eq!(credit["usd"], 500);
        assert_eq!(credit["eur"], -200);
    }

    #[test]
    fn an_update_changes_only_what_it_names() {
        let update = UpdateCustomer::parse(CustomerFields {
            email: Some("a@example.com".into()),
            name: Some(String::new()),
            ..CustomerFields::default()
        })
        .unwrap();
        let updated = update.apply_to(&customer()).unwrap();
        assert_eq!(updated.email.as_deref(), Some("a@example.com"));
        assert_eq!(updated.name, None);
        assert_eq!(updated.balances, customer().balances);
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in ["plain", "@x.com", "a@", "a b@x.com", "a@b@c"] {
            let fields = CustomerFields {
                email: Some(bad.into()),
                ..CustomerFields::default()
            };
            assert!(CreateCustomer::parse(fields, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn balance_is_absolute_and_changes_write_the_difference_in_the_customers_currency() {
        let set = |balance| {
            UpdateCustomer::parse(CustomerFields {
                balance: Some(balance),
                ..CustomerFields::default()
            })
            .unwrap()
        };
        let usd = Currency::parse("usd", "c").unwrap();
        assert_eq!(
            set(-800).balance_adjustment(&customer()).unwrap(),
            Some((usd.clone(), -300))
        );
        assert_eq!(set(-500).balance_adjustment(&customer()).unwrap(), None);
        let unchanged = UpdateCustomer::parse(CustomerFields::default()).unwrap();
        assert_eq!(unchanged.balance_adjustment(&customer()).unwrap(), None);

        let mut no_currency = customer();
        no_currency.currency = None;
        assert_eq!(set(0).balance_adjustment(&no_currency).unwrap(), None);
        assert!(set(100).balance_adjustment(&no_currency).is_err());

        let mut far = customer();
        far.balances.insert(usd, i64::MIN);
        assert!(set(1).balance_adjustment(&far).is_err());

        let create = |balance| {
            CreateCustomer::parse(
                CustomerFields {
                    balance: Some(balance),
                    ..CustomerFields::default()
                },
                None,
            )
        };
        assert!(create(0).is_ok());
        assert!(create(-100).is_err());
    }
}
