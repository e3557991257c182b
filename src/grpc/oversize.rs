//! A request message over `--max-body-bytes` is RESOURCE_EXHAUSTED, as gRPC's own servers
//! answer it (and as the README promises). tonic's decoder reports it as OUT_OF_RANGE ("decoded
//! message length too large") before any handler runs, so the status is rewritten on the way
//! out, innermost, where the response is still tonic's trailers-only error.

use http::HeaderValue;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tower::util::MapResponseLayer;

/// tonic's wording for a message over `max_decoding_message_size` (percent-encoded in
/// `grpc-message`).
const TONIC_TOO_LARGE: &str = "message%20length%20too%20large";
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// The layer that turns tonic's oversized-message OUT_OF_RANGE into RESOURCE_EXHAUSTED.
pub fn oversized_message_layer<B>(
    max_message_bytes: usize,
) -> MapResponseLayer<impl Fn(http::Response<B>) -> http::Response<B> + Clone> {
    MapResponseLayer::new(move |response| remap_oversized(response, max_message_bytes))
}

/// Rewrites the status of tonic's "message too large" answer; leaves every other response alone.
pub fn remap_oversized<B>(
    mut response: http::Response<B>,
    max_message_bytes: usize,
) -> http::Response<B> {
    let headers = response.headers_mut();
    let is_oversized = headers
        .get("grpc-status")
        .is_some_and(|status| status == OUT_OF_RANGE)
        && headers
            .get("grpc-message")
            .and_then(|message| message.to_str().ok())
            .is_some_and(|message| message.contains(TONIC_TOO_LARGE));
    if is_oversized {
        let message = format!(
            "The request message is larger than this server's limit of {max_message_bytes} bytes."
        );
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
        if let Ok(value) =
            HeaderValue::from_str(&utf8_percent_encode(&message, NON_ALPHANUMERIC).to_string())
        {
            headers.insert("grpc-message", value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_oversized_message_status_changes() {
        let status = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 5000 bytes, the limit is: 4096 bytes",
        );
        let response = remap_oversized(status.into_http::<()>(), 4096);
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("4096 bytes"),
            "{}",
            status.message()
        );

        let other = tonic::Status::out_of_range("a page past the end");
        let response = remap_oversized(other.into_http::<()>(), 4096);
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::OutOfRange);
    }
}
