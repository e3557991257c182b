//! The request body, read up to the configured limit; an oversized or unreadable body is a
//! Stripe-shaped error rather than axum's plain-text rejection.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};

use super::RestError;
use crate::error::{Error, ErrorKind};

pub struct FormBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for FormBody {
    type Rejection = RestError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(FormBody(bytes)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(RestError(Error::new(
                    ErrorKind::PayloadTooLarge,
                    "The request body is larger than this server accepts.",
                )))
            }
            Err(rejection) => Err(RestError(Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "The request body could not be read: {}",
                    rejection.body_text()
                ),
            ))),
        }
    }
}
