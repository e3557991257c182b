//! Errors as gRPC statuses: the code comes from the shared error table; the details carry
//! `google.rpc.ErrorInfo` (Stripe's type and code), for a bad field `google.rpc.BadRequest`, and
//! for UNAVAILABLE and RESOURCE_EXHAUSTED (rate limited) `google.rpc.RetryInfo` (the REST
//! `Retry-After`).

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{Error, ErrorKind};

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error.kind {
            ErrorKind::Internal => tracing::error!(error = %error, "internal error"),
            ErrorKind::Unavailable => tracing::warn!(error = %error, "dependency unavailable"),
            _ => {}
        }
        let mut details = ErrorDetails::new();
        let mut info = std::collections::HashMap::new();
        info.insert("type".to_string(), error.kind.stripe_type().to_string());
        if let Some(param) = &error.param {
            info.insert("param".to_string(), param.clone());
        }
        let reason = error.code.unwrap_or(match error.kind {
            ErrorKind::Internal => "internal",
            ErrorKind::Unavailable => "unavailable",
            _ => "invalid_request",
        });
        details.set_error_info(reason, "creditd", info);
        if let Some(param) = &error.param
            && matches!(error.kind, ErrorKind::InvalidRequest | ErrorKind::NotFound)
        {
            details.add_bad_request_violation(param.clone(), error.message.clone());
        }
        if let Some(seconds) = error.kind.retry_after_seconds() {
            details.set_retry_info(Some(std::time::Duration::from_secs(u64::from(seconds))));
        }
        Status::with_error_details(error.kind.grpc_code(), error.message, details)
    }
}
