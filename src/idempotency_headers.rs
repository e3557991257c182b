//! The idempotency headers, shared by both listeners (gRPC metadata is HTTP/2 headers of the
//! same names): a response to a request that carried `Idempotency-Key` echoes it, errors
//! included, and one replayed from the key's stored result also says
//! `Idempotent-Replayed: true`, as Stripe does. The service reports the replay through the
//! [`ReplayFlag`] this middleware puts in the request's extensions, which each transport's
//! context extraction hands to it.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;

use crate::service::ReplayFlag;

/// The request header (REST) or metadata key (gRPC) carrying the caller's key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header (or metadata) marking a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Middleware on every route of both listeners.
pub async fn echo(mut request: Request, next: Next) -> Response {
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
