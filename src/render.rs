//! Stripe's JSON shapes (API version 2026-07-29.dahlia), shared by the REST shim and by events,
//! whose `data.object` is the resource exactly as the REST API renders it.
//! Fields creditd does not track are rendered with Stripe's empty values.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::customer::Customer;
use crate::domain::customer_balance_transaction::CustomerBalanceTransaction;
use crate::domain::pagination::Page;

/// The API version every object and event is rendered with.
pub const STRIPE_API_VERSION: &str = "2026-07-29.dahlia";

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
    pub test_clock: Option<Expandable<TestClockJson>>,
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
            test_clock: customer.test_clock.map(Expandable::Id),
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

#[derive(Debug, Serialize)]
pub struct MonetaryJson {
    pub currency: String,
    pub value: i64,
}

/// Stripe's `billing_credit_grants_resource_amount`.
#[derive(Debug, Serialize)]
pub struct CreditAmountJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub monetary: MonetaryJson,
}

impl CreditAmountJson {
    pub fn new(currency: &crate::domain::Currency, value: i64) -> Self {
        CreditAmountJson {
            kind: "monetary",
            monetary: MonetaryJson {
                currency: currency.to_string(),
                value,
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PriceJson {
    pub id: String,
}

#[derive(Debug, Serialize)]
pub struct ScopeJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prices: Option<Vec<PriceJson>>,
}

impl ScopeJson {
    pub fn new(scope: crate::domain::credit_grant::Scope) -> Self {
        use crate::domain::credit_grant::Scope;
        match scope {
            Scope::Metered => ScopeJson {
                price_type: Some("metered"),
                prices: None,
            },
            Scope::Prices(prices) => ScopeJson {
                price_type: None,
                prices: Some(prices.into_iter().map(|id| PriceJson { id }).collect()),
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ApplicabilityConfigJson {
    pub scope: ScopeJson,
}

#[derive(Debug, Serialize)]
pub struct CreditGrantJson {
    pub id: String,
    pub object: &'static str,
    pub amount: CreditAmountJson,
    pub applicability_config: ApplicabilityConfigJson,
    pub category: &'static str,
    pub created: i64,
    pub customer: Expandable<CustomerJson>,
    pub customer_account: Option<String>,
    pub effective_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub livemode: bool,
    pub metadata: BTreeMap<String, String>,
    pub name: Option<String>,
    pub priority: Option<i64>,
    pub test_clock: Option<String>,
    pub updated: i64,
    pub voided_at: Option<i64>,
}

impl CreditGrantJson {
    pub fn new(
        grant: crate::domain::credit_grant::CreditGrant,
        customer: Option<Customer>,
    ) -> Self {
        let scope = ScopeJson::new(grant.scope);
        CreditGrantJson {
            object: "billing.credit_grant",
            amount: CreditAmountJson::new(&grant.currency, grant.amount),
            applicability_config: ApplicabilityConfigJson { scope },
            category: grant.category.as_str(),
            created: grant.created,
            customer: match customer {
                Some(customer) => Expandable::Object(Box::new(customer.into())),
                None => Expandable::Id(grant.customer_id),
            },
            customer_account: None,
            effective_at: Some(grant.effective_at),
            expires_at: grant.expires_at,
            livemode: grant.livemode,
            metadata: grant.metadata.into_map(),
            name: grant.name,
            priority: Some(grant.priority),
            test_clock: grant.test_clock,
            updated: grant.updated,
            voided_at: grant.voided_at,
            id: grant.id,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InvoiceLineJson {
    pub invoice: String,
    pub invoice_line_item: String,
}

#[derive(Debug, Serialize)]
pub struct CreditJson {
    pub amount: CreditAmountJson,
    pub credits_application_invoice_voided: Option<InvoiceLineJson>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct DebitJson {
    pub amount: CreditAmountJson,
    pub credits_applied: Option<InvoiceLineJson>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct CreditBalanceTransactionJson {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub credit: Option<CreditJson>,
    pub credit_grant: Expandable<CreditGrantJson>,
    pub debit: Option<DebitJson>,
    pub effective_at: i64,
    pub livemode: bool,
    pub test_clock: Option<String>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl CreditBalanceTransactionJson {
    pub fn new(
        entry: crate::domain::credit_balance_transaction::CreditBalanceTransaction,
        grant: Option<CreditGrantJson>,
    ) -> Self {
        let amount = CreditAmountJson::new(&entry.currency, entry.amount);
        let line = match (entry.invoice, entry.invoice_line_item) {
            (Some(invoice), Some(invoice_line_item)) => Some(InvoiceLineJson {
                invoice,
                invoice_line_item,
            }),
            _ => None,
        };
        let is_credit = entry.kind.is_credit();
        let (credit, debit) = if is_credit {
            let credit = CreditJson {
                amount,
                credits_application_invoice_voided: line,
                kind: entry.kind.as_str(),
            };
            (Some(credit), None)
        } else {
            let debit = DebitJson {
                amount,
                credits_applied: line,
                kind: entry.kind.as_str(),
            };
            (None, Some(debit))
        };
        CreditBalanceTransactionJson {
            id: entry.id,
            object: "billing.credit_balance_transaction",
            created: entry.created,
            credit,
            credit_grant: match grant {
                Some(grant) => Expandable::Object(Box::new(grant)),
                None => Expandable::Id(entry.credit_grant_id),
            },
            debit,
            effective_at: entry.effective_at,
            livemode: entry.livemode,
            test_clock: entry.test_clock,
            kind: if is_credit { "credit" } else { "debit" },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CreditBalanceJson {
    pub available_balance: CreditAmountJson,
    pub ledger_balance: CreditAmountJson,
}

#[derive(Debug, Serialize)]
pub struct CreditBalanceSummaryJson {
    pub object: &'static str,
    pub balances: Vec<CreditBalanceJson>,
    pub customer: Expandable<CustomerJson>,
    pub customer_account: Option<String>,
    pub livemode: bool,
}

#[derive(Debug, Serialize)]
pub struct AdvancingJson {
    pub target_frozen_time: i64,
}

#[derive(Debug, Serialize)]
pub struct StatusDetailsJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advancing: Option<AdvancingJson>,
}

#[derive(Debug, Serialize)]
pub struct TestClockJson {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub deletes_after: i64,
    pub frozen_time: i64,
    pub livemode: bool,
    pub name: Option<String>,
    pub status: &'static str,
    pub status_details: StatusDetailsJson,
}

impl From<crate::domain::test_clock::TestClock> for TestClockJson {
    fn from(clock: crate::domain::test_clock::TestClock) -> Self {
        TestClockJson {
            id: clock.id,
            object: "test_helpers.test_clock",
            created: clock.created,
            deletes_after: clock.deletes_after,
            frozen_time: clock.frozen_time,
            livemode: clock.livemode,
            name: clock.name,
            status: clock.status.as_str(),
            status_details: StatusDetailsJson {
                advancing: clock
                    .target_frozen_time
                    .map(|target_frozen_time| AdvancingJson { target_frozen_time }),
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DeletedJson {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}

/// Stripe's `notification_event_request`: the API request behind an event, both fields null
/// for an automatic change.
#[derive(Debug, Serialize)]
pub struct EventRequestJson {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// JSON text written into the output as it is (an event's stored `data`), never re-encoded, so
/// its keys keep their order and its content is exactly what was stored. Text that is not JSON
/// (which creditd never stores) would come out as a JSON string rather than break the output.
#[derive(Debug)]
pub struct RawJson(pub String);

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&serde_json::value::RawValue>(&self.0) {
            Ok(raw) => raw.serialize(serializer),
            Err(error) => {
                tracing::error!(error = %error, "an event's stored data is not JSON");
                serializer.serialize_str(&self.0)
            }
        }
    }
}

/// Stripe's `event`, the body of `GET /v1/events/{id}` and of a webhook delivery. `request` is
/// always an object (Stripe's schema allows null; Stripe sends `{id: null, …}` for automatic
/// events, and so does creditd).
#[derive(Debug, Serialize)]
pub struct EventJson {
    pub id: String,
    pub object: &'static str,
    pub api_version: Option<String>,
    pub created: i64,
    pub data: RawJson,
    pub livemode: bool,
    pub pending_webhooks: i64,
    pub request: EventRequestJson,
    #[serde(rename = "type")]
    pub kind: String,
}

impl From<crate::domain::event::Event> for EventJson {
    fn from(event: crate::domain::event::Event) -> Self {
        EventJson {
            id: event.id,
            object: "event",
            api_version: Some(event.api_version),
            created: event.created,
            data: RawJson(event.data),
            livemode: event.livemode,
            pending_webhooks: event.pending_webhooks,
            request: EventRequestJson {
                id: event.request.id,
                idempotency_key: event.request.idempotency_key,
            },
            kind: event.kind,
        }
    }
}

/// An event as JSON text, exactly as `GET /v1/events/{id}` renders it (for webhook bodies).
pub fn render_event_body(event: &crate::domain::event::Event) -> String {
    // Cannot fail: every field is a string, number, bool or null, and `data` is written as is.
    serde_json::to_string(&EventJson::from(event.clone())).unwrap_or_default()
}

/// Stripe's `webhook_endpoint`. `secret` is only in the create response (the key is left out
/// everywhere else, as Stripe's spec says "Only returned at creation").
#[derive(Debug, Serialize)]
pub struct WebhookEndpointJson {
    pub id: String,
    pub object: &'static str,
    pub api_version: Option<String>,
    pub application: Option<String>,
    pub created: i64,
    pub description: Option<String>,
    pub enabled_events: Vec<String>,
    pub livemode: bool,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub status: &'static str,
    pub url: String,
}

impl WebhookEndpointJson {
    /// The endpoint, with its secret only when `with_secret` (the create response).
    pub fn new(endpoint: crate::domain::webhook::WebhookEndpoint, with_secret: bool) -> Self {
        WebhookEndpointJson {
            object: "webhook_endpoint",
            api_version: endpoint.api_version,
            application: None,
            created: endpoint.created,
            description: endpoint.description,
            enabled_events: endpoint.enabled_events,
            livemode: endpoint.livemode,
            metadata: endpoint.metadata.into_map(),
            secret: with_secret.then_some(endpoint.secret),
            status: endpoint.status.as_str(),
            url: endpoint.url,
            id: endpoint.id,
        }
    }
}

/// Stripe's `billing.alert` of type `credit_balance_threshold` (preview shape): every config
/// key present, `null` for the types creditd does not serve.
#[derive(Debug, Serialize)]
pub struct BillingAlertJson {
    pub id: String,
    pub object: &'static str,
    pub alert_type: &'static str,
    pub credit_balance_threshold: Option<CreditBalanceThresholdJson>,
    pub livemode: bool,
    pub spend_threshold: Option<()>,
    pub status: Option<&'static str>,
    pub title: String,
    pub usage_threshold: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct CreditBalanceThresholdJson {
    pub filters: Option<Vec<AlertFilterJson>>,
    pub lte: AlertLteJson,
}

#[derive(Debug, Serialize)]
pub struct AlertFilterJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub customer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit_grants: Option<ApplicabilityJson>,
}

/// `credit_grants` of an alert filter: `{applicability_config: {scope}}`.
#[derive(Debug, Serialize)]
pub struct ApplicabilityJson {
    pub applicability_config: ApplicabilityConfigJson,
}

#[derive(Debug, Serialize)]
pub struct AlertLteJson {
    pub balance_type: &'static str,
    pub custom_pricing_unit: Option<()>,
    pub monetary: Option<AlertMonetaryJson>,
}

#[derive(Debug, Serialize)]
pub struct AlertMonetaryJson {
    pub currency: String,
    pub value: i64,
}

impl BillingAlertJson {
    pub fn new(alert: crate::domain::alert::CreditBalanceAlert) -> Self {
        BillingAlertJson {
            object: "billing.alert",
            alert_type: crate::domain::alert::CREDIT_BALANCE_THRESHOLD,
            credit_balance_threshold: Some(CreditBalanceThresholdJson {
                filters: Some(vec![AlertFilterJson {
                    kind: "customer",
                    customer: alert.customer_id,
                    credit_grants: alert.scope.map(|scope| ApplicabilityJson {
                        applicability_config: ApplicabilityConfigJson {
                            scope: ScopeJson::new(scope),
                        },
                    }),
                }]),
                lte: AlertLteJson {
                    balance_type: "monetary",
                    custom_pricing_unit: None,
                    monetary: Some(AlertMonetaryJson {
                        currency: alert.currency.as_str().to_string(),
                        value: alert.threshold,
                    }),
                },
            }),
            livemode: alert.livemode,
            spend_threshold: None,
            status: Some(alert.status.as_str()),
            title: alert.title,
            usage_threshold: None,
            id: alert.id,
        }
    }
}

/// The `data.object` of `billing.alert.triggered` (Stripe's `billing.alert_triggered`) and of
/// creditd's `creditd.alert.recovered` (`creditd.alert_recovered`, the same fields): the alert
/// as it is after the crossing, the customer, and the balance that crossed (`value`, minor
/// units of `currency`). `created` is the event's time.
#[derive(Debug, Serialize)]
pub struct AlertCrossingJson {
    pub object: &'static str,
    pub alert: BillingAlertJson,
    pub created: i64,
    pub currency: String,
    pub customer: String,
    pub livemode: bool,
    pub value: i64,
}

impl AlertCrossingJson {
    pub fn new(
        crossing: crate::domain::alert::Crossing,
        alert: crate::domain::alert::CreditBalanceAlert,
        value: i64,
        created: i64,
    ) -> Self {
        use crate::domain::alert::Crossing;
        AlertCrossingJson {
            object: match crossing {
                Crossing::Triggered => "billing.alert_triggered",
                Crossing::Recovered => "creditd.alert_recovered",
            },
            currency: alert.currency.as_str().to_string(),
            customer: alert.customer_id.clone(),
            livemode: alert.livemode,
            alert: BillingAlertJson::new(alert),
            created,
            value,
        }
    }
}

/// What a credit hold still reserves on one grant.
#[derive(Debug, Serialize)]
pub struct CreditHoldReservationJson {
    pub credit_grant: String,
    pub amount: i64,
}

/// The price a hold is for (like an invoice line's): `price_type` and/or `price`.
#[derive(Debug, Serialize)]
pub struct CreditHoldApplicabilityJson {
    pub price_type: Option<&'static str>,
    pub price: Option<String>,
}

/// creditd's own `creditd.credit_hold` (no Stripe counterpart): a reservation of credits, the
/// `data.object` of the `creditd.credit_hold.*` events.
#[derive(Debug, Serialize)]
pub struct CreditHoldJson {
    pub id: String,
    pub object: &'static str,
    pub amount: CreditAmountJson,
    pub applicability: CreditHoldApplicabilityJson,
    pub captured_amount: i64,
    pub created: i64,
    pub currency: String,
    pub customer: String,
    pub ended_at: Option<i64>,
    pub expires_at: i64,
    pub invoice: Option<String>,
    pub invoice_line_item: Option<String>,
    pub lapsed_amount: i64,
    pub livemode: bool,
    pub reserved: i64,
    pub reservations: Vec<CreditHoldReservationJson>,
    pub status: &'static str,
    pub test_clock: Option<String>,
}

impl From<crate::domain::credit_hold::CreditHold> for CreditHoldJson {
    fn from(hold: crate::domain::credit_hold::CreditHold) -> Self {
        CreditHoldJson {
            object: "creditd.credit_hold",
            amount: CreditAmountJson::new(&hold.currency, hold.amount),
            applicability: CreditHoldApplicabilityJson {
                price_type: hold.price.metered.then_some("metered"),
                price: hold.price.id.clone(),
            },
            captured_amount: hold.captured_amount,
            created: hold.created,
            currency: hold.currency.to_string(),
            ended_at: hold.ended_at,
            expires_at: hold.expires_at,
            invoice: hold.invoice.clone(),
            invoice_line_item: hold.invoice_line_item.clone(),
            lapsed_amount: hold.lapsed_amount,
            livemode: hold.livemode,
            reserved: hold.reserved(),
            status: hold.status.as_str(),
            test_clock: hold.test_clock.clone(),
            reservations: hold
                .reservations
                .into_iter()
                .map(|r| CreditHoldReservationJson {
                    credit_grant: r.credit_grant,
                    amount: r.amount,
                })
                .collect(),
            customer: hold.customer_id,
            id: hold.id,
        }
    }
}
