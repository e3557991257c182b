//! Events: the record that something changed. Every change writes its events in the same
//! transaction as the change (the outbox), so an event exists exactly when its change
//! committed. An event's `data` is rendered once, when it is created, and never changes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::TimeRange;
use super::pagination::TimeRangeFields;
use crate::error::{Error, Result};

/// Every type creditd emits, with Stripe's names (`creditd.*` ones are creditd's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    CustomerCreated,
    CustomerUpdated,
    CustomerDeleted,
    CreditGrantCreated,
    CreditGrantUpdated,
    CreditBalanceTransactionCreated,
    CreditHoldCreated,
    CreditHoldCaptured,
    CreditHoldReleased,
    CreditHoldExpired,
    TestClockCreated,
    TestClockAdvancing,
    TestClockReady,
    TestClockInternalFailure,
    TestClockDeleted,
    /// A credit balance alert's balance crossed to at or below its threshold.
    BillingAlertTriggered,
    /// A triggered credit balance alert's balance rose back above its threshold (creditd's own
    /// name: Stripe's preview `billing.alert.recovered` is not in the contract).
    AlertRecovered,
}

impl EventType {
    pub const ALL: [EventType; 17] = [
        EventType::CustomerCreated,
        EventType::CustomerUpdated,
        EventType::CustomerDeleted,
        EventType::CreditGrantCreated,
        EventType::CreditGrantUpdated,
        EventType::CreditBalanceTransactionCreated,
        EventType::CreditHoldCreated,
        EventType::CreditHoldCaptured,
        EventType::CreditHoldReleased,
        EventType::CreditHoldExpired,
        EventType::TestClockCreated,
        EventType::TestClockAdvancing,
        EventType::TestClockReady,
        EventType::TestClockInternalFailure,
        EventType::TestClockDeleted,
        EventType::BillingAlertTriggered,
        EventType::AlertRecovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CustomerCreated => "customer.created",
            EventType::CustomerUpdated => "customer.updated",
            EventType::CustomerDeleted => "customer.deleted",
            EventType::CreditGrantCreated => "billing.credit_grant.created",
            EventType::CreditGrantUpdated => "billing.credit_grant.updated",
            EventType::CreditBalanceTransactionCreated => {
                "billing.credit_balance_transaction.created"
            }
            EventType::CreditHoldCreated => "creditd.credit_hold.created",
            EventType::CreditHoldCaptured => "creditd.credit_hold.captured",
            EventType::CreditHoldReleased => "creditd.credit_hold.released",
            EventType::CreditHoldExpired => "creditd.credit_hold.expired",
            EventType::TestClockCreated => "test_helpers.test_clock.created",
            EventType::TestClockAdvancing => "test_helpers.test_clock.advancing",
            EventType::TestClockReady => "test_helpers.test_clock.ready",
            EventType::TestClockInternalFailure => "test_helpers.test_clock.internal_failure",
            EventType::TestClockDeleted => "test_helpers.test_clock.deleted",
            EventType::BillingAlertTriggered => "billing.alert.triggered",
            EventType::AlertRecovered => "creditd.alert.recovered",
        }
    }

    pub fn parse(raw: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }

    /// Whether an event of type `raw` may have changed its customer's credit balance (so the
    /// customer's billing alerts are evaluated): a ledger entry, a grant change, or any credit
    /// hold event.
    pub fn may_change_credit_balance(raw: &str) -> bool {
        raw == EventType::CreditBalanceTransactionCreated.as_str()
            || raw.starts_with("billing.credit_grant.")
            || raw.starts_with("creditd.credit_hold.")
    }
}

/// Whether an event type matches `pattern`: the exact name, `*` (everything), or a group
/// ending in `*` such as `customer.*` or `billing.*`, which matches by prefix (so
/// `billing.*` also takes `billing.credit_grant.created`, as Stripe's examples read).
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

/// Who caused an event: the API request and its idempotency key, or nothing for an
/// automatic change (the expiry sweeper, the second step of a clock advance).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRequest {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

impl EventRequest {
    pub fn automatic() -> Self {
        EventRequest::default()
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub livemode: bool,
    /// When the change happened, in real time (seconds), whatever the objects' test clock.
    pub created: i64,
    pub kind: String,
    /// The customer the change belongs to, if any (the stream's per-customer filter).
    pub customer_id: Option<String>,
    pub request: EventRequest,
    pub api_version: String,
    /// Enabled endpoints subscribed to the type that have not yet answered 2xx.
    pub pending_webhooks: i64,
    /// `{"object": …, "previous_attributes": …}` as JSON text, rendered at creation.
    pub data: String,
    /// The stream position, assigned after commit by the sequencer; `None` for a moment.
    pub sequence: Option<i64>,
}

/// The `data` of an event about `object`; for an update, `previous` is the object as it was
/// and `data.previous_attributes` holds the old value of each top-level field that changed
/// (a nested object or array whole, as Stripe reports them). `None` when an update changed
/// nothing a client can see: no event is due then.
pub fn event_data(object: Value, previous: Option<&Value>) -> Option<String> {
    let mut data = Map::new();
    if let Some(previous) = previous {
        let changed = previous_attributes(previous, &object);
        if changed.is_empty() {
            return None;
        }
        data.insert("object".into(), object);
        data.insert("previous_attributes".into(), Value::Object(changed));
    } else {
        data.insert("object".into(), object);
    }
    Some(Value::Object(data).to_string())
}

/// The top-level fields of `old` whose value differs in `new`, with their old values.
fn previous_attributes(old: &Value, new: &Value) -> Map<String, Value> {
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        return Map::new();
    };
    old.iter()
        .filter(|(key, value)| new.get(key.as_str()) != Some(value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// At most this many names in the Events API's `types` filter, as in Stripe.
pub const MAX_TYPES: usize = 20;

/// Which types an Events API list keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TypeFilter {
    /// Every type (no filter, or `type=*`).
    #[default]
    Any,
    /// One exact name (`type=customer.created`).
    Exact(String),
    /// A group: every type starting with this text (`type=customer.*` keeps `customer.`).
    Prefix(String),
    /// Any of these exact names (`types[]=…`).
    OneOf(Vec<String>),
}

impl TypeFilter {
    /// Whether an event of `event_type` passes (the same rule the store applies in SQL).
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            TypeFilter::Any => true,
            TypeFilter::Exact(name) => name == event_type,
            TypeFilter::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
            TypeFilter::OneOf(names) => names.iter().any(|name| name == event_type),
        }
    }
}

/// Filters for listing events (`GET /v1/events`, `ListEvents`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub created: TimeRange,
    pub types: TypeFilter,
    /// `true`: no endpoint is still owed the event (`pending_webhooks = 0`, which includes
    /// events no endpoint subscribed to); `false`: some endpoint still is
    /// (`pending_webhooks > 0`, whether its attempts are pending or have failed).
    pub delivery_success: Option<bool>,
}

impl EventFilter {
    /// The event list's filters as a transport received them. `type` is one name or a group
    /// ending in `*`; `types` up to [`MAX_TYPES`] exact names; not both. An empty `type` and
    /// an empty `types` count as absent. Names that are not creditd types are accepted (as
    /// Stripe does): they match nothing.
    pub fn parse(
        created: TimeRangeFields,
        kind: Option<String>,
        types: Option<Vec<String>>,
        delivery_success: Option<bool>,
    ) -> Result<EventFilter> {
        let created = TimeRange::parse("created", created)?;
        let kind = kind.filter(|kind| !kind.is_empty());
        let types = types.filter(|types| !types.is_empty());
        let types = match (kind, types) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid_param(
                    "types",
                    "You may pass either `type` or `types`, but not both.",
                ));
            }
            (Some(kind), None) => match kind.strip_suffix('*') {
                Some("") => TypeFilter::Any,
                Some(prefix) => TypeFilter::Prefix(prefix.to_string()),
                None => TypeFilter::Exact(kind),
            },
            (None, Some(types)) if types.len() > MAX_TYPES => {
                return Err(Error::invalid_param(
                    "types",
                    format!(
                        "Invalid types: at most {MAX_TYPES} event types may be given, got {}.",
                        types.len()
                    ),
                ));
            }
            (None, Some(types)) => TypeFilter::OneOf(types),
            (None, None) => TypeFilter::Any,
        };
        Ok(EventFilter {
            created,
            types,
            delivery_success,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_type_round_trips_through_its_name() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse("customer.*"), None);
    }

    #[test]
    fn balance_changing_types_are_ledger_grant_and_hold_events() {
        for kind in [
            "billing.credit_balance_transaction.created",
            "billing.credit_grant.created",
            "billing.credit_grant.updated",
            "creditd.credit_hold.created",
            "creditd.credit_hold.expired",
        ] {
            assert!(EventType::may_change_credit_balance(kind), "{kind}");
        }
        for kind in [
            "customer.updated",
            "billing.alert.triggered",
            "creditd.alert.recovered",
            "test_helpers.test_clock.ready",
        ] {
            assert!(!EventType::may_change_credit_balance(kind), "{kind}");
        }
    }

    #[test]
    fn patterns_match_exactly_or_by_wildcard_prefix() {
        assert!(type_matches("*", "customer.created"));
        assert!(type_matches("customer.*", "customer.updated"));
        assert!(type_matches("billing.*", "billing.credit_grant.created"));
        assert!(!type_matches("customer.*", "billing.credit_grant.created"));
        assert!(type_matches("customer.created", "customer.created"));
        assert!(!type_matches("customer.created", "customer.updated"));
        assert!(!type_matches("customer", "customer.created"));
    }

    #[test]
    fn an_update_reports_old_values_of_changed_fields_only() {
        let old = json!({"id": "cus_1", "balance": 0, "metadata": {"a": "1"}, "name": "x"});
        let new =
            json!({"id": "cus_1", "balance": -500, "metadata": {"a": "1", "b": "2"}, "name": "x"});
        let data: Value =
            serde_json::from_str(&event_data(new.clone(), Some(&old)).unwrap()).unwrap();
        assert_eq!(data["object"], new);
        assert_eq!(
            data["previous_attributes"],
            json!({"balance": 0, "metadata": {"a": "1"}})
        );
    }

    #[test]
    fn an_update_that_changed_nothing_has_no_event() {
        let same = json!({"id": "cus_1", "name": "x"});
        assert_eq!(event_data(same.clone(), Some(&same)), None);
    }

    #[test]
    fn a_created_event_has_no_previous_attributes_key() {
        let data: Value =
            serde_json::from_str(&event_data(json!({"id": "x"}), None).unwrap()).unwrap();
        assert!(data.get("previous_attributes").is_none());
    }

    fn filter(kind: Option<&str>, types: Option<&[&str]>) -> Result<EventFilter> {
        EventFilter::parse(
            TimeRangeFields::default(),
            kind.map(str::to_string),
            types.map(|types| types.iter().map(|name| name.to_string()).collect()),
            None,
        )
    }

    #[test]
    fn type_is_exact_or_a_prefix_group() {
        assert_eq!(
            filter(Some("customer.created"), None).unwrap().types,
            TypeFilter::Exact("customer.created".into())
        );
        assert_eq!(
            filter(Some("customer.*"), None).unwrap().types,
            TypeFilter::Prefix("customer.".into())
        );
        assert_eq!(filter(Some("*"), None).unwrap().types, TypeFilter::Any);
        assert_eq!(filter(Some(""), None).unwrap().types, TypeFilter::Any);
        assert_eq!(filter(None, None).unwrap(), EventFilter::default());
        // Not creditd's: accepted, matching nothing.
        assert_eq!(
            filter(Some("invoice.paid"), None).unwrap().types,
            TypeFilter::Exact("invoice.paid".into())
        );
    }

    #[test]
    fn types_takes_up_to_twenty_exact_names_and_not_with_type() {
        let names: Vec<String> = (0..MAX_TYPES).map(|i| format!("x.{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            filter(None, Some(&refs)).unwrap().types,
            TypeFilter::OneOf(names.clone())
        );
        let mut too_many = refs.clone();
        too_many.push("x.20");
        let error = filter(None, Some(&too_many)).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("types"));
        assert_eq!(error.kind, crate::error::ErrorKind::InvalidRequest);
        let error = filter(Some("customer.created"), Some(&["customer.updated"])).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("types"));
        assert_eq!(error.kind.http_status(), 400);
        // An empty list counts as absent (gRPC cannot tell the two apart).
        assert_eq!(
            filter(Some("customer.created"), Some(&[])).unwrap().types,
            TypeFilter::Exact("customer.created".into())
        );
    }

    #[test]
    fn created_and_delivery_success_pass_through() {
        let parsed = EventFilter::parse(
            TimeRangeFields {
                gte: Some(10),
                ..TimeRangeFields::default()
            },
            None,
            None,
            Some(false),
        )
        .unwrap();
        assert_eq!(parsed.created.gte, Some(10));
        assert_eq!(parsed.delivery_success, Some(false));
        let error = EventFilter::parse(
            TimeRangeFields {
                gt: Some(-1),
                ..TimeRangeFields::default()
            },
            None,
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(error.param.as_deref(), Some("created[gt]"));
    }

    #[test]
    fn type_filters_match_like_the_store() {
        assert!(TypeFilter::Any.matches("customer.created"));
        assert!(TypeFilter::Prefix("customer.".into()).matches("customer.updated"));
        assert!(!TypeFilter::Prefix("customer.".into()).matches("billing.credit_grant.created"));
        assert!(TypeFilter::OneOf(vec!["a".into(), "b".into()]).matches("b"));
        assert!(!TypeFilter::Exact("a".into()).matches("ab"));
    }
}
