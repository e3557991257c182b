//! The REST form/bracket parser on arbitrary bytes: never panics, and every refusal is a typed
//! `invalid_request_error` (never an internal error).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = creditd::rest::params::parse(data) {
        let error: creditd::error::Error = error.into();
        assert_ne!(error.kind, creditd::error::ErrorKind::Internal);
    }
});
