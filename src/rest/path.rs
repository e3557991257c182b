//! Path IDs (`/v1/customers/{customer}`): every segment obeys the ID rule
//! ([`crate::domain::text::check_id`]), and a segment that is not UTF-8 is an error in Stripe's
//! envelope rather than axum's plain-text 400.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::RestError;
use crate::domain::text::check_id;
use crate::error::Error;

/// Drop-in for `axum::extract::Path` whose rejections are Stripe errors.
pub struct Path<T>(pub T);

fn undecodable_path() -> RestError {
    RestError(
        Error::invalid_param(
            "id",
            "Invalid URL: a path segment is not valid percent-encoded UTF-8.",
        )
        .with_param("id"),
    )
}

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| undecodable_path())?;
        for (name, value) in &raw {
            check_id(name, value)?;
        }
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|_| undecodable_path())?;
        Ok(Path(value))
    }
}
