//! Errors as gRPC statuses: the code comes from the shared error table; the details carry
//! `google.rpc.ErrorInfo` (Stripe's type and code), for a bad field `google.rpc.BadRequest`, and
//! for UNAVAILABLE and RESOURCE_EXHAUSTED (rate limited) `google.rpc.RetryInfo` (the REST
//! `Retry-After`).

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{Error, ErrorKind};

/// The longest message or parameter name a status carries. A message may quote the caller's
/// input (up to 5000 characters) and travels twice in HTTP/2 headers (`grpc-message` and the
/// details), which clients cap at 16 KiB: longer text is cut, with an ellipsis.
const MAX_STATUS_TEXT_CHARS: usize = 500;

fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_STATUS_TEXT_CHARS) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

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
        let param = error.param.as_deref().map(bounded);
        let message = bounded(&error.message);
        if let Some(param) = &param {
            info.insert("param".to_string(), param.clone());
        }
        details.set_error_info(reason(&error), "creditd", info);
        if let Some(param) = param
            && matches!(error.kind, ErrorKind::InvalidRequest | ErrorKind::NotFound)
        {
            details.add_bad_request_violation(param, message.clone());
        }
        if let Some(seconds) = error.kind.retry_after_seconds() {
            details.set_retry_info(Some(std::time::Duration::from_secs(u64::from(seconds))));
        }
        Status::with_error_details(error.kind.grpc_code(), message, details)
    }
}

/// The ErrorInfo reason: the error's code, or one named after its kind.
fn reason(error: &Error) -> &'static str {
    error.code.unwrap_or(match error.kind {
        ErrorKind::Internal => "internal",
        ErrorKind::Unavailable => "unavailable",
        _ => "invalid_request",
    })
}

/// A refusal of one line of a batch, carrying what its status would (code, message, and the
/// ErrorInfo's type, reason and param).
impl From<Error> for crate::grpc::proto::ApplyCreditsLineError {
    fn from(error: Error) -> Self {
        crate::grpc::proto::ApplyCreditsLineError {
            code: error.kind.grpc_code() as i32,
            message: bounded(&error.message),
            r#type: error.kind.stripe_type().to_string(),
            reason: reason(&error).to_string(),
            param: error.param.as_deref().map(bounded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_quoting_a_huge_input_stays_small_enough_for_http2_headers() {
        let huge = "x".repeat(5_000);
        let error = Error::invalid_param(huge.clone(), format!("Invalid currency: {huge}"));
        let status = Status::from(error);
        assert!(status.message().chars().count() <= MAX_STATUS_TEXT_CHARS + 1);
        assert!(status.message().ends_with('…'));
        assert!(status.details().len() < 4_096, "{}", status.details().len());
        assert_eq!(bounded("short"), "short");
        assert_eq!(
            bounded(&"é".repeat(600)).chars().count(),
            MAX_STATUS_TEXT_CHARS + 1
        );
    }
}
