//! `creditd listen --forward-to URL`: follows the account's events over the public gRPC API
//! (`WatchEvents`) and POSTs each one to a URL as Stripe delivers a webhook: the event's JSON,
//! signed in a `Stripe-Signature` header with a `whsec_…` secret printed at start, so code
//! written for Stripe's webhooks (and its SDKs' signature checks) runs against creditd
//! locally.
//!
//! It is only a client: it remembers the last event it handled and, when the connection
//! drops (a restart, a deploy), reconnects with backoff and resumes right after it, so no
//! event is skipped or sent twice across reconnects. A POST that fails is retried a few times,
//! then reported and passed over, as `stripe listen` does.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rand::Rng;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::config::ListenConfig;
use crate::grpc::proto::{self, event_service_client::EventServiceClient};
use crate::service::auth::hmac_sha256;

/// Attempts per event before it is passed over.
const POST_ATTEMPTS: u32 = 3;
/// The first and the longest wait between reconnects.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Runs until `shutdown` completes, or fails on an error reconnecting cannot fix (a bad key,
/// a bad filter, a resume point past the retention window).
pub async fn run(config: ListenConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let secret = match &config.secret {
        Some(secret) => secret.clone(),
        None => format!("whsec_{}", crate::domain::ids::random_base62(32)),
    };
    let endpoint = Endpoint::from_shared(config.grpc_url.clone())
        .context("--grpc-url is not a valid URL")?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {}", config.api_key)
            .parse()
            .context("the API key is not valid header text")?;
    println!(
        "Ready! Your webhook signing secret is {secret} (^C to quit)\nForwarding events to {}",
        config.forward_to
    );
    let mut listener = Listener {
        config,
        secret,
        http,
        authorization,
        last_event: None,
    };
    listener.last_event = listener.config.after_event.clone();
    tokio::select! {
        result = listener.follow(endpoint) => result,
        () = shutdown => Ok(()),
    }
}

struct Listener {
    config: ListenConfig,
    secret: String,
    http: reqwest::Client,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    /// The last event handled: where a reconnect resumes.
    last_event: Option<String>,
}

impl Listener {
    /// Follows the stream forever, reconnecting with exponential backoff and jitter.
    async fn follow(&mut self, endpoint: Endpoint) -> anyhow::Result<()> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match endpoint.connect().await {
                Ok(channel) => match self.stream(channel).await {
                    // The stream was open: the backoff starts over.
                    Ok(()) => backoff = FIRST_BACKOFF,
                    Err(status) if is_fatal(status.code()) => {
                        anyhow::bail!("WatchEvents refused: {}", status.message());
                    }
                    Err(status) => {
                        eprintln!(
                            "creditd listen: the stream failed ({:?}: {}); reconnecting",
                            status.code(),
                            status.message()
                        );
                    }
                },
                Err(error) => {
                    eprintln!(
                        "creditd listen: cannot connect to {}: {error}",
                        endpoint.uri()
                    );
                }
            }
            let jitter = rand::rng().random_range(0.5..1.5);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: opens the stream from the last event and forwards what arrives until it
    /// breaks. `Ok` when the stream had opened; the status when it could not.
    async fn stream(&mut self, channel: Channel) -> Result<(), tonic::Status> {
        let mut client = EventServiceClient::new(channel);
        let resume = match &self.last_event {
            Some(id) => proto::watch_events_request::Resume::AfterEvent(id.clone()),
            None => proto::watch_events_request::Resume::FromNow(true),
        };
        let mut request = tonic::Request::new(proto::WatchEventsRequest {
            resume: Some(resume),
            types: self.config.events.clone(),
            customer: None,
        });
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let mut stream = client.watch_events(request).await?.into_inner();
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    if let Some(event) = message.event {
                        self.forward(&event).await;
                        self.last_event = Some(event.id);
                    }
                }
                Ok(None) => {
                    eprintln!("creditd listen: the stream ended; reconnecting");
                    return Ok(());
                }
                Err(status) if is_fatal(status.code()) => return Err(status),
                Err(status) => {
                    eprintln!(
                        "creditd listen: the stream broke ({:?}: {}); resuming after {}",
                        status.code(),
                        status.message(),
                        self.last_event.as_deref().unwrap_or("the head")
                    );
                    return Ok(());
                }
            }
        }
    }

    /// POSTs one event, retrying a few times; a failure is reported, then passed over.
    async fn forward(&self, event: &proto::Event) {
        println!("--> {} [{}]", event.r#type, event.id);
        let body = match stripe_event_json(event) {
            Ok(body) => body,
            Err(error) => {
                eprintln!("creditd listen: skipping {}: {error}", event.id);
                return;
            }
        };
        for attempt in 1..=POST_ATTEMPTS {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0);
            let sent = self
                .http
                .post(&self.config.forward_to)
                .header("Content-Type", "application/json")
                .header(
                    "Stripe-Signature",
                    signature_header(&self.secret, timestamp, &body),
                )
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    println!(
                        "<-- [{}] POST {} [{}]",
                        response.status().as_u16(),
                        self.config.forward_to,
                        event.id
                    );
                    return;
                }
                Ok(response) => eprintln!(
                    "<-- [{}] POST {} [{}] (attempt {attempt} of {POST_ATTEMPTS})",
                    response.status().as_u16(),
                    self.config.forward_to,
                    event.id
                ),
                Err(error) => eprintln!(
                    "creditd listen: POST {} [{}] failed (attempt {attempt} of {POST_ATTEMPTS}): {error}",
                    self.config.forward_to, event.id
                ),
            }
            if attempt < POST_ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
        }
        eprintln!(
            "creditd listen: giving up on {} after {POST_ATTEMPTS} attempts",
            event.id
        );
    }
}

/// Statuses that reconnecting cannot fix.
fn is_fatal(code: Code) -> bool {
    matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::NotFound
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

/// The event as Stripe's webhook body: `{id, object, api_version, created, data, livemode,
/// pending_webhooks, request, type}`.
pub fn stripe_event_json(event: &proto::Event) -> anyhow::Result<String> {
    let data: Value =
        serde_json::from_str(&event.data_json).context("the event's data is not JSON")?;
    Ok(json!({
        "id": event.id,
        "object": "event",
        "api_version": event.api_version,
        "created": event.created,
        "data": data,
        "livemode": event.livemode,
        "pending_webhooks": event.pending_webhooks,
        "request": {
            "id": event.request_id,
            "idempotency_key": event.request_idempotency_key,
        },
        "type": event.r#type,
    })
    .to_string())
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with the whole secret>`,
/// as Stripe signs webhooks and its SDKs check them.
pub fn signature_header(secret: &str, timestamp: u64, body: &str) -> String {
    let signed = format!("{timestamp}.{body}");
    format!(
        "t={timestamp},v1={}",
        hex::encode(hmac_sha256(secret.as_bytes(), signed.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_stripes_event_shape() {
        let event = proto::Event {
            id: "evt_test_1".into(),
            object: "event".into(),
            r#type: "customer.created".into(),
            created: 1_700_000_000,
            livemode: false,
            api_version: "2025-01-01".into(),
            pending_webhooks: 0,
            request_id: Some("req_1".into()),
            request_idempotency_key: None,
            customer: Some("cus_1".into()),
            data_json: r#"{"object":{"id":"cus_1"}}"#.into(),
            sequence: 7,
        };
        let body: Value = serde_json::from_str(&stripe_event_json(&event).unwrap()).unwrap();
        assert_eq!(body["data"]["object"]["id"], "cus_1");
        assert_eq!(body["type"], "customer.created");
        assert_eq!(
            body["request"],
            json!({"id": "req_1", "idempotency_key": null})
        );
        assert!(body.get("sequence").is_none() && body.get("customer").is_none());
    }

    #[test]
    fn the_signature_is_hmac_of_timestamp_dot_body() {
        let header = signature_header("whsec_abc", 1_700_000_000, "{}");
        let expected = hex::encode(hmac_sha256(b"whsec_abc", b"1700000000.{}"));
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
    }
}
