//! The one error type every layer returns, and the one table that decides how each kind of
//! error is shown: HTTP status and Stripe `type` for the REST shim, gRPC code for gRPC.
//! Transports render an [`Error`]; they never invent their own.

use std::fmt;

/// A closed set of error kinds. Each decides the HTTP status, the Stripe error `type` and the
/// gRPC code (see [`ErrorKind::http_status`], [`ErrorKind::stripe_type`], [`ErrorKind::grpc_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule (400, `invalid_request_error`, INVALID_ARGUMENT).
    InvalidRequest,
    /// The request is well formed but the object's state forbids it (400, FAILED_PRECONDITION).
    InvalidState,
    /// An ID names nothing this key can see (404, `resource_missing`, NOT_FOUND).
    NotFound,
    /// A position outside what is kept, such as a stream resume point older than the retention
    /// window (400, `invalid_request_error`, OUT_OF_RANGE).
    OutOfRange,
    /// No key, or an unknown or revoked key (401, UNAUTHENTICATED).
    Unauthenticated,
    /// The key may not do this (403, PERMISSION_DENIED).
    PermissionDenied,
    /// The idempotency key was used with other parameters (400, `idempotency_error`).
    IdempotencyMismatch,
    /// A request with the same idempotency key is still running (409, ABORTED).
    IdempotencyInUse,
    /// Too many requests, for the key or for the server (429, RESOURCE_EXHAUSTED).
    RateLimited,
    /// The request body is over the configured limit (413, RESOURCE_EXHAUSTED).
    PayloadTooLarge,
    /// The request ran past the configured timeout (504, DEADLINE_EXCEEDED).
    Timeout,
    /// The database or another dependency is unavailable or timed out (503, UNAVAILABLE).
    Unavailable,
    /// A bug or an unexpected failure (500, `api_error`, INTERNAL).
    Internal,
}

impl ErrorKind {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::InvalidState => 400,
            ErrorKind::IdempotencyMismatch | ErrorKind::OutOfRange => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::IdempotencyInUse => 409,
            ErrorKind::RateLimited => 429,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Timeout => 504,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// Stripe's error `type`. Its enum has no authentication or rate-limit type: those are
    /// `invalid_request_error` and the SDKs pick their exception from the HTTP status.
    pub fn stripe_type(self) -> &'static str {
        match self {
            ErrorKind::IdempotencyMismatch => "idempotency_error",
            ErrorKind::Unavailable | ErrorKind::Internal | ErrorKind::Timeout => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// How long a client should wait before retrying the same request (with the same
    /// idempotency key): REST `Retry-After`, gRPC `google.rpc.RetryInfo`. Only for the kinds
    /// that are retryable as they are: the database unavailable or its connection lost (the
    /// write either did not happen or is settled by the idempotency key), and rate limits.
    pub fn retry_after_seconds(self) -> Option<u32> {
        match self {
            ErrorKind::Unavailable | ErrorKind::RateLimited => Some(1),
            _ => None,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::InvalidRequest => tonic::Code::InvalidArgument,
            ErrorKind::InvalidState => tonic::Code::FailedPrecondition,
            ErrorKind::IdempotencyMismatch => tonic::Code::FailedPrecondition,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::OutOfRange => tonic::Code::OutOfRange,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorKind::IdempotencyInUse => tonic::Code::Aborted,
            ErrorKind::RateLimited | ErrorKind::PayloadTooLarge => tonic::Code::ResourceExhausted,
            ErrorKind::Timeout => tonic::Code::DeadlineExceeded,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }
}

/// An error as the caller sees it: a kind, Stripe's optional `code` and `param`, a message,
/// and (for internal errors) the cause, which is logged but never shown.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
    pub source: Option<anyhow::Error>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            code: None,
            param: None,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// A bad parameter value: 400 `invalid_request_error` naming the parameter.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidRequest, message)
            .with_code("parameter_invalid")
            .with_param(param)
    }

    pub fn missing_param(param: impl Into<String>) -> Self {
        let param = param.into();
        Error::new(
            ErrorKind::InvalidRequest,
            format!("Missing required param: {param}."),
        )
        .with_code("parameter_missing")
        .with_param(param)
    }

    pub fn unknown_param(param: impl Into<String>) -> Self {
        let param = param.into();
        Error::new(
            ErrorKind::InvalidRequest,
            format!("Received unknown parameter: {param}"),
        )
        .with_code("parameter_unknown")
        .with_param(param)
    }

    /// An ID that names nothing visible to the caller. `param` is the field that carried it.
    pub fn resource_missing(resource: &str, id: &str, param: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, format!("No such {resource}: '{id}'"))
            .with_code("resource_missing")
            .with_param(param)
    }

    /// An ID given in a parameter (not the path) that names nothing visible to the caller:
    /// Stripe answers these with 400, not 404.
    pub fn no_such(resource: &str, id: &str, param: impl Into<String>) -> Self {
        Error::new(
            ErrorKind::InvalidRequest,
            format!("No such {resource}: '{id}'"),
        )
        .with_code("resource_missing")
        .with_param(param)
    }

    pub fn invalid_state(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidState, message)
    }

    /// Too many requests: Stripe's `rate_limit` error.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::RateLimited, message).with_code("rate_limit")
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unauthenticated, message)
    }

    pub fn unavailable(message: impl Into<String>, source: impl Into<anyhow::Error>) -> Self {
        let mut error = Error::new(ErrorKind::Unavailable, message);
        error.source = Some(source.into());
        error
    }

    /// An unexpected failure. The cause is kept for the logs; the caller sees a generic message.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut error = Error::new(
            ErrorKind::Internal,
            "An unexpected error occurred while processing the request.",
        );
        error.source = Some(source.into());
        error
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source:#}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_a_status_a_stripe_type_and_a_grpc_code() {
        let kinds = [
            (ErrorKind::InvalidRequest, 400, "invalid_request_error"),
            (ErrorKind::InvalidState, 400, "invalid_request_error"),
            (ErrorKind::NotFound, 404, "invalid_request_error"),
            (ErrorKind::Unauthenticated, 401, "invalid_request_error"),
            (ErrorKind::PermissionDenied, 403, "invalid_request_error"),
            (ErrorKind::IdempotencyMismatch, 400, "idempotency_error"),
            (ErrorKind::IdempotencyInUse, 409, "invalid_request_error"),
            (ErrorKind::RateLimited, 429, "invalid_request_error"),
            (ErrorKind::PayloadTooLarge, 413, "invalid_request_error"),
            (ErrorKind::Timeout, 504, "api_error"),
            (ErrorKind::Unavailable, 503, "api_error"),
            (ErrorKind::Internal, 500, "api_error"),
        ];
        for (kind, status, stripe_type) in kinds {
            assert_eq!(kind.http_status(), status, "{kind:?}");
            assert_eq!(kind.stripe_type(), stripe_type, "{kind:?}");
        }
        assert_eq!(ErrorKind::NotFound.grpc_code(), tonic::Code::NotFound);
        assert_eq!(ErrorKind::Unavailable.retry_after_seconds(), Some(1));
        assert_eq!(ErrorKind::RateLimited.retry_after_seconds(), Some(1));
        assert_eq!(ErrorKind::Internal.retry_after_seconds(), None);
    }

    #[test]
    fn internal_errors_hide_their_cause_from_the_message() {
        let error = Error::internal(anyhow::anyhow!("connection reset by peer"));
        assert!(!error.message.contains("reset"));
        assert!(error.to_string().contains("reset"));
    }
}
