//! The authenticated caller of a REST request: the key from HTTP Basic or Bearer auth, and
//! the `Idempotency-Key` header on POSTs.

use axum::extract::FromRequestParts;
use axum::http::Method;
use axum::http::request::Parts;

use super::RestError;
use crate::service::auth::key_from_authorization;
use crate::service::idempotency::not_ascii;
use crate::service::{ReplayFlag, RequestContext, Services};

use crate::idempotency_headers::IDEMPOTENCY_KEY;

/// Extracting this authenticates the request; handlers take it first.
pub struct Ctx(pub RequestContext);

impl FromRequestParts<Services> for Ctx {
    type Rejection = RestError;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Services,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(key_from_authorization);
        let caller = services.authenticate(presented.as_deref()).await?;
        // Idempotency applies to POST only; Stripe ignores the header on GET and DELETE.
        let idempotency_key = if parts.method == Method::POST {
            match parts.headers.get(IDEMPOTENCY_KEY) {
                None => None,
                Some(value) => Some(value.to_str().map_err(|_| not_ascii())?.to_string()),
            }
        } else {
            None
        };
        let replayed = parts
            .extensions
            .get::<ReplayFlag>()
            .cloned()
            .unwrap_or_default();
        let request_id = parts
            .extensions
            .get::<crate::telemetry::RequestId>()
            .map(|id| id.0.clone());
        Ok(Ctx(RequestContext::new(caller.tenant)
            .with_idempotency_key(idempotency_key)
            .with_replay_flag(replayed)
            .with_request_id(request_id)))
    }
}
