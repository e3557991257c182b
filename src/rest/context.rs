//! The authenticated caller of a REST request: the key from HTTP Basic or Bearer auth, and
//! the `Idempotency-Key` header on POSTs; and, on the way out, the idempotency headers.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use super::RestError;
use crate::service::auth::key_from_authorization;
use crate::service::idempotency::not_ascii;
use crate::service::{ReplayFlag, RequestContext, Services};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Middleware on every route, as Stripe does: a response to a request that carried an
/// `Idempotency-Key` echoes it (errors included), and one replayed from the key's stored
/// result also says `Idempotent-Replayed: true`. The service reports the replay through the
/// [`ReplayFlag`] put here in the request's extensions, which [`Ctx`] hands to it.
pub(super) async fn idempotency_headers(mut request: Request, next: Next) -> Response {
    let key = request.headers().get(IDEMPOTENCY_KEY).cloned();
    let replayed = ReplayFlag::default();
    request.extensions_mut().insert(replayed.clone());
    let mut response = next.run(request).await;
    if let Some(key) = key {
        let headers = response.headers_mut();
        headers.insert(IDEMPOTENCY_KEY, key);
        if replayed.is_set() {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
    }
    response
}

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
        Ok(Ctx(RequestContext::new(caller.tenant)
            .with_idempotency_key(idempotency_key)
            .with_replay_flag(replayed)))
    }
}
