//! Errors in Stripe's envelope: `{"error": {"type", "code", "param", "message"}}` with the
//! status from the shared error table. Answers a client should retry later (503: the database
//! is unavailable or the connection was lost; 429: rate limited) say when, in `Retry-After`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, ErrorKind};

/// An [`Error`] on its way out of the REST shim.
#[derive(Debug)]
pub struct RestError(pub Error);

impl From<Error> for RestError {
    fn from(error: Error) -> Self {
        RestError(error)
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
    message: &'a str,
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let error = self.0;
        match error.kind {
            ErrorKind::Internal => tracing::error!(error = %error, "internal error"),
            ErrorKind::Unavailable => tracing::warn!(error = %error, "dependency unavailable"),
            _ => {}
        }
        let status = StatusCode::from_u16(error.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let envelope = Envelope {
            error: Body {
                kind: error.kind.stripe_type(),
                code: error.code,
                param: error.param.as_deref(),
                message: &error.message,
            },
        };
        let mut response = (status, Json(envelope)).into_response();
        if let Some(seconds) = error.kind.retry_after_seconds() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<super::params::ParamError> for RestError {
    fn from(error: super::params::ParamError) -> Self {
        RestError(error.into())
    }
}

/// The JSON body of an error in Stripe's envelope, for responses built outside axum (the HTTP
/// parser's own refusals, see `rest::transport`).
pub(crate) fn envelope_body(error: &Error) -> Vec<u8> {
    let envelope = Envelope {
        error: Body {
            kind: error.kind.stripe_type(),
            code: error.code,
            param: error.param.as_deref(),
            message: &error.message,
        },
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}
