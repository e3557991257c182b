//! Webhook endpoints: where events are POSTed, signed, and which types each one takes; and the
//! retry schedule of a failing delivery.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::EventType;
use super::text::{check_input, optional_text, text_update};
use super::{Metadata, MetadataUpdate};
use crate::error::{Error, Result};

pub const MAX_DESCRIPTION_CHARS: usize = 5000;
pub const MAX_URL_CHARS: usize = 5000;
/// Random characters after `whsec_` (base62, so about 190 bits).
pub const SECRET_RANDOM_CHARS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointStatus {
    Enabled,
    Disabled,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Enabled => "enabled",
            EndpointStatus::Disabled => "disabled",
        }
    }

    pub fn parse(raw: &str) -> Option<EndpointStatus> {
        match raw {
            "enabled" => Some(EndpointStatus::Enabled),
            "disabled" => Some(EndpointStatus::Disabled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub livemode: bool,
    pub created: i64,
    pub url: String,
    pub enabled_events: Vec<String>,
    pub status: EndpointStatus,
    pub description: Option<String>,
    pub metadata: Metadata,
    /// Stored as given; events are always rendered with creditd's own version (see README).
    pub api_version: Option<String>,
    /// `whsec_…`. Shown to the client only in the create response.
    pub secret: String,
}

impl WebhookEndpoint {
    /// Whether this endpoint takes events of `event_type` (enabled or not).
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        subscribes(&self.enabled_events, event_type)
    }
}

/// Whether a list of `enabled_events` takes `event_type`.
pub fn subscribes(enabled_events: &[String], event_type: &str) -> bool {
    enabled_events
        .iter()
        .any(|pattern| super::event::type_matches(pattern, event_type))
}

/// Unvalidated endpoint fields as a transport received them.
#[derive(Debug, Clone, Default)]
pub struct WebhookEndpointFields {
    pub url: Option<String>,
    pub enabled_events: Option<Vec<String>>,
    pub description: Option<String>,
    pub metadata: MetadataUpdate,
    /// Create only.
    pub api_version: Option<String>,
    /// Create only; only `false` is accepted (creditd has no connected accounts).
    pub connect: Option<bool>,
    /// Update only.
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateWebhookEndpoint {
    pub url: String,
    pub enabled_events: Vec<String>,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub api_version: Option<String>,
}

impl CreateWebhookEndpoint {
    pub fn parse(fields: WebhookEndpointFields) -> Result<CreateWebhookEndpoint> {
        let url = fields
            .url
            .filter(|url| !url.is_empty())
            .ok_or_else(|| Error::missing_param("url"))?;
        let enabled_events = fields
            .enabled_events
            .ok_or_else(|| Error::missing_param("enabled_events"))?;
        if fields.connect == Some(true) {
            return Err(Error::invalid_param(
                "connect",
                "creditd has no connected accounts: `connect` can only be false.",
            ));
        }
        Ok(CreateWebhookEndpoint {
            url: check_url(url)?,
            enabled_events: parse_enabled_events(enabled_events)?,
            description: optional_text(fields.description, "description", MAX_DESCRIPTION_CHARS)?,
            metadata: Metadata::default().apply(&fields.metadata)?,
            api_version: parse_api_version(fields.api_version)?,
        })
    }
}

/// A change to an endpoint. `None` leaves a field alone; `Some(None)` clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateWebhookEndpoint {
    pub url: Option<String>,
    pub enabled_events: Option<Vec<String>>,
    pub description: Option<Option<String>>,
    pub status: Option<EndpointStatus>,
    pub metadata: MetadataUpdate,
}

impl UpdateWebhookEndpoint {
    pub fn parse(fields: WebhookEndpointFields) -> Result<UpdateWebhookEndpoint> {
        // Stripe cannot change these after creation: the update schema does not have them.
        if fields.api_version.is_some() {
            return Err(Error::unknown_param("api_version"));
        }
        if fields.connect.is_some() {
            return Err(Error::unknown_param("connect"));
        }
        let url = fields.url.map(check_url).transpose()?;
        Ok(UpdateWebhookEndpoint {
            url,
            enabled_events: fields
                .enabled_events
                .map(parse_enabled_events)
                .transpose()?,
            description: text_update(fields.description, "description", MAX_DESCRIPTION_CHARS)?,
            status: fields.disabled.map(|disabled| {
                if disabled {
                    EndpointStatus::Disabled
                } else {
                    EndpointStatus::Enabled
                }
            }),
            metadata: fields.metadata,
        })
    }

    /// The endpoint after this update, with metadata limits checked on the merged result.
    pub fn apply_to(&self, endpoint: &WebhookEndpoint) -> Result<WebhookEndpoint> {
        let mut updated = endpoint.clone();
        if let Some(url) = &self.url {
            updated.url = url.clone();
        }
        if let Some(enabled_events) = &self.enabled_events {
            updated.enabled_events = enabled_events.clone();
        }
        if let Some(description) = &self.description {
            updated.description = description.clone();
        }
        if let Some(status) = self.status {
            updated.status = status;
        }
        updated.metadata = endpoint.metadata.apply(&self.metadata)?;
        Ok(updated)
    }
}

/// A valid endpoint URL, kept as the client wrote it (Stripe returns it unchanged).
pub fn check_url(raw: String) -> Result<String> {
    parse_url(&raw)?;
    Ok(raw)
}

/// An endpoint URL: absolute `http` or `https` with a host, no credentials in it.
pub fn parse_url(raw: &str) -> Result<url::Url> {
    check_input("url", raw)?;
    let invalid = |why: &str| Error::invalid_param("url", format!("Invalid URL: {why}"));
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(invalid("it is too long"));
    }
    let url = url::Url::parse(raw).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it must not contain credentials"));
    }
    Ok(url)
}

/// `enabled_events`: at least one, each a type creditd emits or `*`; duplicates dropped, order
/// kept.
pub fn parse_enabled_events(events: Vec<String>) -> Result<Vec<String>> {
    if events.is_empty() {
        return Err(Error::invalid_param(
            "enabled_events",
            "Invalid enabled_events: at least one event type (or `*`) is required.",
        ));
    }
    let mut parsed: Vec<String> = Vec::with_capacity(events.len());
    for event in events {
        if event != "*" && EventType::parse(&event).is_none() {
            let shown: String = event.chars().take(100).collect();
            return Err(Error::invalid_param(
                "enabled_events",
                format!(
                    "Invalid enabled_events: `{shown}` is not an event type creditd emits (use `*` or one of: {}).",
                    EventType::ALL.map(EventType::as_str).join(", ")
                ),
            ));
        }
        if !parsed.contains(&event) {
            parsed.push(event);
        }
    }
    Ok(parsed)
}

/// `api_version`: any version in Stripe's form (`2026-07-29.dahlia`, or `2020-08-27`); stored and
/// returned, while events are rendered with creditd's own version.
pub fn parse_api_version(raw: Option<String>) -> Result<Option<String>> {
    let Some(raw) = raw.filter(|raw| !raw.is_empty()) else {
        return Ok(None);
    };
    let bytes = raw.as_bytes();
    let date_ok = bytes.len() >= 10
        && bytes[..10]
            .iter()
            .enumerate()
            .all(|(index, byte)| match index {
                4 | 7 => *byte == b'-',
                _ => byte.is_ascii_digit(),
            });
    let name_ok = match raw.get(10..) {
        Some("") => true,
        Some(rest) => rest.strip_prefix('.').is_some_and(|name| {
            !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_lowercase())
        }),
        None => false,
    };
    if date_ok && name_ok {
        Ok(Some(raw))
    } else {
        let shown: String = raw.chars().take(100).collect();
        Err(Error::invalid_param(
            "api_version",
            format!("Invalid api_version: `{shown}` is not a Stripe API version."),
        ))
    }
}

/// A new endpoint secret: `whsec_` and [`SECRET_RANDOM_CHARS`] random base62 characters.
pub fn new_secret() -> String {
    format!("whsec_{}", super::ids::random_base62(SECRET_RANDOM_CHARS))
}

/// Addresses a multi-tenant deployment must not POST to: loopback, private (RFC 1918, unique
/// local), link-local, unspecified, shared (CGNAT), multicast and broadcast; IPv4-mapped IPv6
/// addresses by their IPv4 address.
pub fn is_internal_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_address(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        }
    }
}

/// When a failing delivery is tried again: exponential from `first`, doubling per attempt and
/// capped at `cap`, with full jitter (a uniform draw in `[0, delay]`, with `jitter` in `[0, 1]`),
/// so many endpoints failing at once do not retry in lockstep. `attempts` counts the attempts
/// made so far (1 after the first failure).
pub fn retry_delay(attempts: u32, first: Duration, cap: Duration, jitter: f64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(40);
    let ceiling = first
        .checked_mul(1u32 << exponent.min(31))
        .unwrap_or(cap)
        .min(cap);
    ceiling.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(url: &str, events: &[&str]) -> WebhookEndpointFields {
        WebhookEndpointFields {
            url: Some(url.into()),
            enabled_events: Some(events.iter().map(|e| e.to_string()).collect()),
            ..WebhookEndpointFields::default()
        }
    }

    #[test]
    fn create_needs_an_http_url_and_known_event_types() {
        let ok = CreateWebhookEndpoint::parse(fields(
            "https://example.com/hook",
            &["customer.created", "*", "customer.created"],
        ))
        .unwrap();
        assert_eq!(ok.enabled_events, vec!["customer.created", "*"]);
        for url in [
            "ftp://example.com",
            "not a url",
            "http://",
            "https://u:p@example.com/",
        ] {
            let error = CreateWebhookEndpoint::parse(fields(url, &["*"])).unwrap_err();
            assert_eq!(error.param.as_deref(), Some("url"), "{url}");
        }
        for events in [&[][..], &["customer.*"], &["charge.succeeded"]] {
            let error =
                CreateWebhookEndpoint::parse(fields("https://example.com", events)).unwrap_err();
            assert_eq!(error.param.as_deref(), Some("enabled_events"), "{events:?}");
        }
        let mut missing = fields("https://example.com", &["*"]);
        missing.enabled_events = None;
        assert!(CreateWebhookEndpoint::parse(missing).is_err());
        let mut connect = fields("https://example.com", &["*"]);
        connect.connect = Some(true);
        assert!(CreateWebhookEndpoint::parse(connect).is_err());
    }

    #[test]
    fn api_versions_in_stripes_form_are_accepted() {
        for good in ["2026-07-29.dahlia", "2020-08-27", "2024-09-30.acacia"] {
            assert_eq!(
                parse_api_version(Some(good.into())).unwrap().as_deref(),
                Some(good)
            );
        }
        for bad in [
            "latest",
            "2026-07-29.",
            "2026-7-29",
            "2026-07-29.Dahlia",
            "2026-07-29x",
        ] {
            assert!(parse_api_version(Some(bad.into())).is_err(), "{bad}");
        }
        assert_eq!(parse_api_version(None).unwrap(), None);
    }

    #[test]
    fn update_cannot_change_api_version_or_connect_and_maps_disabled_to_status() {
        let mut fields = WebhookEndpointFields {
            api_version: Some("2020-08-27".into()),
            ..WebhookEndpointFields::default()
        };
        assert_eq!(
            UpdateWebhookEndpoint::parse(fields.clone())
                .unwrap_err()
                .code,
            Some("parameter_unknown")
        );
        fields.api_version = None;
        fields.disabled = Some(true);
        fields.description = Some(String::new());
        let update = UpdateWebhookEndpoint::parse(fields).unwrap();
        assert_eq!(update.status, Some(EndpointStatus::Disabled));
        assert_eq!(update.description, Some(None));
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal_address(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal_address(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn retry_delays_grow_exponentially_up_to_the_cap_with_full_jitter() {
        let first = Duration::from_secs(30);
        let cap = Duration::from_secs(12 * 3600);
        assert_eq!(retry_delay(1, first, cap, 1.0), first);
        assert_eq!(retry_delay(2, first, cap, 1.0), first * 2);
        assert_eq!(retry_delay(5, first, cap, 1.0), first * 16);
        assert_eq!(retry_delay(30, first, cap, 1.0), cap);
        assert_eq!(retry_delay(u32::MAX, first, cap, 1.0), cap);
        assert_eq!(retry_delay(3, first, cap, 0.0), Duration::ZERO);
        assert_eq!(retry_delay(2, first, cap, 0.5), first);
        assert_eq!(retry_delay(1, first, cap, 7.0), first);
    }

    #[test]
    fn secrets_are_long_and_prefixed() {
        let secret = new_secret();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(secret.len(), 6 + SECRET_RANDOM_CHARS);
        assert_ne!(secret, new_secret());
    }

    #[test]
    fn subscriptions_match_exact_types_and_star() {
        let star = vec!["*".to_string()];
        assert!(subscribes(&star, "customer.created"));
        let one = vec!["customer.created".to_string()];
        assert!(subscribes(&one, "customer.created"));
        assert!(!subscribes(&one, "customer.updated"));
    }
}
