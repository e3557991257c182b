//! The gRPC string guard on arbitrary encodings of each request type: never panics. The first
//! byte picks the message type.
#![no_main]

use libfuzzer_sys::fuzz_target;

const TYPES: &[&str] = &[
    ".creditd.v1.CreateCustomerRequest",
    ".creditd.v1.UpdateCustomerRequest",
    ".creditd.v1.ListCustomersRequest",
    ".creditd.v1.CreateCustomerBalanceTransactionRequest",
    ".creditd.v1.CreateCreditGrantRequest",
    ".creditd.v1.GetCreditBalanceSummaryRequest",
    ".creditd.v1.ListCreditBalanceTransactionsRequest",
    ".creditd.v1.ApplyCreditsRequest",
];

fuzz_target!(|data: &[u8]| {
    if let Some((&pick, bytes)) = data.split_first() {
        let name = TYPES[usize::from(pick) % TYPES.len()];
        let _ = creditd::grpc::guard::check_encoded(name, bytes);
    }
});
