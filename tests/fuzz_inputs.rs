//! Bounded fuzzing inside `cargo test`: random and SDK-shaped input to the REST form parser, to
//! every REST operation's parameter decoding and to every gRPC method's request conversion, on
//! every backend. Whatever the input, the answer is a typed refusal or a success: no panic, no
//! 5xx / INTERNAL / UNKNOWN, and REST errors in Stripe's envelope.
//!
//! The generator is seeded (`CREDITD_FUZZ_SEED`, default fixed so CI is repeatable) and bounded
//! (`CREDITD_FUZZ_CASES` per target, default 120). A long campaign:
//! `CREDITD_FUZZ_SEED=$RANDOM CREDITD_FUZZ_CASES=20000 cargo test --test fuzz_inputs`.
//! The cargo-fuzz targets in `fuzz/` cover the pure parsers with coverage guidance.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::BTreeMap;

use common::TestApp;
use creditd::grpc::proto;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn cases() -> usize {
    std::env::var("CREDITD_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(120)
}

fn rng(salt: u64) -> StdRng {
    let seed = std::env::var("CREDITD_FUZZ_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0x5eed_c0de);
    StdRng::seed_from_u64(seed ^ salt)
}

/// Form bodies shaped like the Stripe SDKs' (also the committed cargo-fuzz seed corpus).
const SDK_BODIES: &[&str] = &[
    "amount=-500&currency=usd&metadata[order]=1",
    "amount=-500&currency=usd&description=Refund%20for%20order%20%2342&metadata[order_id]=6735",
    "name=Jenny%20Rosen&email=jenny.rosen%40example.com&metadata[plan]=pro",
    "customer=cus_x&category=paid&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=1000&applicability_config[scope][price_type]=metered",
    "customer=cus_x&category=promotional&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=500&applicability_config[scope][prices][0][id]=price_1&applicability_config[scope][prices][1][id]=price_2&expires_at=1900000000&priority=10&name=Welcome",
    "expand[]=customer",
    "expand[0]=data.customer&limit=3&starting_after=cbtxn_x",
    "customer=cus_x&filter[type]=applicability_scope&filter[applicability_scope][price_type]=metered",
    "customer=cus_x&filter[type]=credit_grant&filter[credit_grant]=credgr_x",
    "created[gte]=1700000000&created[lt]=1800000000&limit=100",
    "frozen_time=1700000000&name=Month%20of%20credits",
    "metadata=&description=",
    "expires_at=&metadata[a]=",
];

/// Parameter names the operations read, and some they do not.
const KEYS: &[&str] = &[
    "name",
    "email",
    "description",
    "phone",
    "metadata[order]",
    "metadata",
    "metadata[]",
    "test_clock",
    "expand[]",
    "expand[0]",
    "amount",
    "currency",
    "customer",
    "customer_account",
    "category",
    "amount[type]",
    "amount[monetary][currency]",
    "amount[monetary][value]",
    "applicability_config[scope][price_type]",
    "applicability_config[scope][prices][0][id]",
    "applicability_config[scope][prices][][id]",
    "effective_at",
    "expires_at",
    "priority",
    "limit",
    "starting_after",
    "ending_before",
    "created",
    "created[gt]",
    "created[lte]",
    "invoice",
    "filter[type]",
    "filter[credit_grant]",
    "filter[applicability_scope][price_type]",
    "filter[applicability_scope][prices][0][id]",
    "credit_grant",
    "frozen_time",
    "balance",
    "a[b][c][d][e][f][g][h][i]",
    "[x]",
    "a]b",
    "a[",
    "metadata[a][b]",
    "amount[]",
];

/// Hostile and plausible strings: empty, NUL, control characters, multibyte text, numbers at
/// and past i64's range, enum words, IDs, very long text.
fn text(rng: &mut StdRng, ids: &[String]) -> String {
    match rng.random_range(0..16) {
        0 => String::new(),
        1 => "\0".to_string(),
        2 => format!("a\0{}", rng.random::<u32>()),
        3 => (0..rng.random_range(1..8))
            .map(|_| char::from(rng.random_range(0u8..0x20)))
            .collect(),
        4 => (0..rng.random_range(1..20))
            .map(|_| rng.random::<char>())
            .collect(),
        5 => [
            "-500",
            "0",
            "1",
            "100",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "1e3",
            " 1",
            "+1",
        ][rng.random_range(0..10)]
        .to_string(),
        6 => [
            "usd",
            "eur",
            "USD",
            "metered",
            "licensed",
            "paid",
            "promotional",
            "monetary",
            "credit_grant",
            "applicability_scope",
            "true",
            "false",
        ][rng.random_range(0..12)]
        .to_string(),
        7 if !ids.is_empty() => ids[rng.random_range(0..ids.len())].clone(),
        8 => "x".repeat(rng.random_range(200..300)),
        9 => "é".repeat(rng.random_range(4990..5010)),
        10 => "y".repeat(rng.random_range(10_000..40_000)),
        11 => "[]%&=+#".chars().take(rng.random_range(1..7)).collect(),
        _ => format!("x{}", rng.random_range(0..1000)),
    }
}

fn form_body(rng: &mut StdRng, ids: &[String]) -> String {
    if rng.random_bool(0.2) {
        let mut body = SDK_BODIES[rng.random_range(0..SDK_BODIES.len())].to_string();
        if rng.random_bool(0.5) {
            let at = rng.random_range(0..=body.len());
            let at = (0..=at)
                .rev()
                .find(|&i| body.is_char_boundary(i))
                .unwrap_or(0);
            body.insert_str(
                at,
                ["%00", "%FF", "&", "=", "[", "]", "%", "+"][rng.random_range(0..8)],
            );
        }
        return body;
    }
    if rng.random_bool(0.1) {
        // Raw bytes as text (lossy): percent signs, brackets and ampersands in odd places.
        return (0..rng.random_range(0..64))
            .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
            .collect();
    }
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for _ in 0..rng.random_range(0..8) {
        let key = if rng.random_bool(0.9) {
            KEYS[rng.random_range(0..KEYS.len())].to_string()
        } else {
            text(rng, ids)
        };
        serializer.append_pair(&key, &text(rng, ids));
    }
    serializer.finish()
}

/// Every REST operation, `{}` standing for a path ID.
const OPERATIONS: &[(&str, &str)] = &[
    ("POST", "/v1/customers"),
    ("GET", "/v1/customers"),
    ("GET", "/v1/customers/{}"),
    ("POST", "/v1/customers/{}"),
    ("POST", "/v1/customers/{}/balance_transactions"),
    ("GET", "/v1/customers/{}/balance_transactions"),
    ("GET", "/v1/customers/{}/balance_transactions/{}"),
    ("POST", "/v1/customers/{}/balance_transactions/{}"),
    ("POST", "/v1/billing/credit_grants"),
    ("GET", "/v1/billing/credit_grants"),
    ("GET", "/v1/billing/credit_grants/{}"),
    ("POST", "/v1/billing/credit_grants/{}"),
    ("POST", "/v1/billing/credit_grants/{}/expire"),
    ("POST", "/v1/billing/credit_grants/{}/void"),
    ("GET", "/v1/billing/credit_balance_summary"),
    ("GET", "/v1/billing/credit_balance_transactions"),
    ("GET", "/v1/billing/credit_balance_transactions/{}"),
    ("POST", "/v1/test_helpers/test_clocks"),
    ("GET", "/v1/test_helpers/test_clocks"),
    ("GET", "/v1/test_helpers/test_clocks/{}"),
    ("DELETE", "/v1/test_helpers/test_clocks/{}"),
    ("POST", "/v1/test_helpers/test_clocks/{}/advance"),
];

/// Real objects, so that some cases get past the lookups into the writes.
async fn seed_objects(app: &TestApp) -> Vec<String> {
    let customer = app.create_customer("name=fuzz").await;
    let grant = common::credits::grant(
        app,
        &format!("customer={customer}&category=paid&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=1000&applicability_config[scope][price_type]=metered"),
    )
    .await;
    let transaction = app
        .post(
            &format!("/v1/customers/{customer}/balance_transactions"),
            "amount=-500&currency=usd",
        )
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    vec![customer, grant, transaction]
}

fn path_segment(rng: &mut StdRng, ids: &[String]) -> String {
    match rng.random_range(0..6) {
        0 => "%FF".to_string(),
        1 => "%00".to_string(),
        2 => percent_encoding::utf8_percent_encode(
            &text(rng, ids),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string(),
        _ => ids[rng.random_range(0..ids.len())].clone(),
    }
}

#[test]
fn the_form_parser_never_panics_and_refuses_with_typed_errors() {
    let mut rng = rng(1);
    let ids = vec!["cus_x".to_string()];
    for body in SDK_BODIES {
        creditd::rest::params::parse(body.as_bytes()).expect("SDK-shaped bodies parse");
    }
    for _ in 0..cases() * 20 {
        let bytes: Vec<u8> = if rng.random_bool(0.5) {
            form_body(&mut rng, &ids).into_bytes()
        } else {
            (0..rng.random_range(0..128))
                .map(|_| rng.random())
                .collect()
        };
        if let Err(error) = creditd::rest::params::parse(&bytes) {
            let error: creditd::error::Error = error.into();
            assert_ne!(error.kind, creditd::error::ErrorKind::Internal, "{bytes:?}");
        }
    }
}

#[test]
fn the_grpc_string_guard_never_panics_on_arbitrary_bytes() {
    let mut rng = rng(2);
    let schema = Schema::load();
    let names: Vec<&String> = schema.messages.keys().collect();
    for _ in 0..cases() * 20 {
        let name = names[rng.random_range(0..names.len())];
        let bytes: Vec<u8> = if rng.random_bool(0.5) {
            schema.random_message(&mut rng, name, &[], 0)
        } else {
            (0..rng.random_range(0..96)).map(|_| rng.random()).collect()
        };
        let _ = creditd::grpc::guard::check_encoded(name, &bytes);
    }
}

on_every_backend! {
    async fn every_rest_operation_answers_random_parameters_with_a_typed_result(app) {
        let ids = seed_objects(&app).await;
        let mut rng = rng(3);
        for case in 0..cases() {
            let (method, template) = OPERATIONS[case % OPERATIONS.len()];
            let mut path = String::new();
            for (index, part) in template.split("{}").enumerate() {
                if index > 0 {
                    path.push_str(&path_segment(&mut rng, &ids));
                }
                path.push_str(part);
            }
            let mut body = form_body(&mut rng, &ids);
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            if method != reqwest::Method::POST {
                // A query string stays well within URL limits (the body carries the long ones).
                let cut = (0..=body.len().min(8000)).rev().find(|&i| body.is_char_boundary(i)).unwrap_or(0);
                body.truncate(cut);
            }
            let url = format!("{}{}", app.http_base, if method == reqwest::Method::POST { path.clone() } else { format!("{path}?{body}") });
            let send = || {
                let mut request = app.http.request(method.clone(), &url).basic_auth(&app.key, Some(""));
                if method == reqwest::Method::POST {
                    request = request.header("Content-Type", "application/x-www-form-urlencoded").body(body.clone());
                }
                request.send()
            };
            // A pooled connection the server closed after refusing a request without reading
            // its whole body fails once on the client; the retry gets a fresh connection.
            let response = match send().await {
                Ok(response) => response,
                Err(_) => match send().await {
                    Ok(response) => response,
                    Err(error) => panic!("{method} {} {}: no answer ({error})", shorten(&path), shorten(&body)),
                },
            };
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            let body = shorten(&body);
            let path = shorten(&path);
            assert!(status < 500, "{method} {path} {body:?}: {status} {text}");
            let json: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{method} {path} {body:?}: non-JSON {status} {text}"));
            if status >= 400 {
                assert!(json["error"]["type"].is_string(), "{method} {path}: {text}");
            }
        }
    }

    async fn every_grpc_method_answers_random_messages_with_a_typed_status(app) {
        let ids = seed_objects(&app).await;
        let schema = Schema::load();
        let mut rng = rng(4);
        let channel = app.channel().await;
        let methods = schema.methods();
        for case in 0..cases() {
            let (service, method, input) = &methods[case % methods.len()];
            let bytes = schema.random_message(&mut rng, input, &ids, 0);
            let status = call(&app, channel.clone(), method, &bytes).await;
            if let Err(status) = status {
                assert!(
                    !matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown),
                    "{service}/{method} {}: {status:?}",
                    shorten(&format!("{bytes:?}"))
                );
            }
        }
    }
}

/// The start of a long input, for a readable failure message.
fn shorten(text: &str) -> String {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}{}",
        &text[..end],
        if end < text.len() { "…" } else { "" }
    )
}

/// Decodes `bytes` as the method's request type and calls it.
async fn call(
    app: &TestApp,
    channel: tonic::transport::Channel,
    method: &str,
    bytes: &[u8],
) -> Result<(), tonic::Status> {
    use proto::credit_balance_service_client::CreditBalanceServiceClient as Balance;
    use proto::credit_grant_service_client::CreditGrantServiceClient as Grants;
    use proto::credit_hold_service_client::CreditHoldServiceClient as Holds;
    use proto::customer_balance_transaction_service_client::CustomerBalanceTransactionServiceClient as Txns;
    use proto::customer_service_client::CustomerServiceClient as Customers;
    use proto::test_clock_service_client::TestClockServiceClient as Clocks;
    macro_rules! dispatch {
        ($($name:literal => $client:ident . $call:ident ($message:ty)),* $(,)?) => {
            match method {
                $($name => {
                    let message = <$message>::decode(bytes).expect("generated messages decode");
                    $client::new(channel).$call(app.grpc(message)).await.map(|_| ())
                })*
                _ => Ok(()),
            }
        };
    }
    dispatch! {
        "CreateCustomer" => Customers.create_customer(proto::CreateCustomerRequest),
        "GetCustomer" => Customers.get_customer(proto::GetCustomerRequest),
        "ListCustomers" => Customers.list_customers(proto::ListCustomersRequest),
        "UpdateCustomer" => Customers.update_customer(proto::UpdateCustomerRequest),
        "CreateCustomerBalanceTransaction" => Txns.create_customer_balance_transaction(proto::CreateCustomerBalanceTransactionRequest),
        "GetCustomerBalanceTransaction" => Txns.get_customer_balance_transaction(proto::GetCustomerBalanceTransactionRequest),
        "ListCustomerBalanceTransactions" => Txns.list_customer_balance_transactions(proto::ListCustomerBalanceTransactionsRequest),
        "UpdateCustomerBalanceTransaction" => Txns.update_customer_balance_transaction(proto::UpdateCustomerBalanceTransactionRequest),
        "CreateCreditGrant" => Grants.create_credit_grant(proto::CreateCreditGrantRequest),
        "GetCreditGrant" => Grants.get_credit_grant(proto::GetCreditGrantRequest),
        "ListCreditGrants" => Grants.list_credit_grants(proto::ListCreditGrantsRequest),
        "UpdateCreditGrant" => Grants.update_credit_grant(proto::UpdateCreditGrantRequest),
        "ExpireCreditGrant" => Grants.expire_credit_grant(proto::ExpireCreditGrantRequest),
        "VoidCreditGrant" => Grants.void_credit_grant(proto::VoidCreditGrantRequest),
        "GetCreditBalanceSummary" => Balance.get_credit_balance_summary(proto::GetCreditBalanceSummaryRequest),
        "GetCreditBalanceTransaction" => Balance.get_credit_balance_transaction(proto::GetCreditBalanceTransactionRequest),
        "ListCreditBalanceTransactions" => Balance.list_credit_balance_transactions(proto::ListCreditBalanceTransactionsRequest),
        "ApplyCredits" => Balance.apply_credits(proto::ApplyCreditsRequest),
        "ReinstateInvoiceCredits" => Balance.reinstate_invoice_credits(proto::ReinstateInvoiceCreditsRequest),
        "ExplainApplication" => Balance.explain_application(proto::ExplainApplicationRequest),
        "CreateCreditHold" => Holds.create_credit_hold(proto::CreateCreditHoldRequest),
        "CaptureCreditHold" => Holds.capture_credit_hold(proto::CaptureCreditHoldRequest),
        "ReleaseCreditHold" => Holds.release_credit_hold(proto::ReleaseCreditHoldRequest),
        "GetCreditHold" => Holds.get_credit_hold(proto::GetCreditHoldRequest),
        "ListCreditHolds" => Holds.list_credit_holds(proto::ListCreditHoldsRequest),
        "CreateTestClock" => Clocks.create_test_clock(proto::CreateTestClockRequest),
        "GetTestClock" => Clocks.get_test_clock(proto::GetTestClockRequest),
        "ListTestClocks" => Clocks.list_test_clocks(proto::ListTestClocksRequest),
        "DeleteTestClock" => Clocks.delete_test_clock(proto::DeleteTestClockRequest),
        "AdvanceTestClock" => Clocks.advance_test_clock(proto::AdvanceTestClockRequest),
    }
}

/// The request schema from the compiled descriptor set, to generate any message of the API.
struct Schema {
    messages: BTreeMap<String, DescriptorProto>,
    services: Vec<(String, String, String)>,
}

impl Schema {
    fn load() -> Schema {
        let set = FileDescriptorSet::decode(creditd::grpc::FILE_DESCRIPTOR_SET).unwrap();
        let mut messages = BTreeMap::new();
        let mut services = Vec::new();
        fn add(
            messages: &mut BTreeMap<String, DescriptorProto>,
            prefix: &str,
            message: &DescriptorProto,
        ) {
            let name = format!("{prefix}.{}", message.name());
            for nested in &message.nested_type {
                add(messages, &name, nested);
            }
            messages.insert(name, message.clone());
        }
        for file in &set.file {
            for message in &file.message_type {
                add(&mut messages, &format!(".{}", file.package()), message);
            }
            for service in &file.service {
                for method in &service.method {
                    services.push((
                        service.name().to_string(),
                        method.name().to_string(),
                        method.input_type().to_string(),
                    ));
                }
            }
        }
        Schema { messages, services }
    }

    fn methods(&self) -> Vec<(String, String, String)> {
        self.services
            .iter()
            .filter(|(service, _, _)| service != "AdminService")
            .cloned()
            .collect()
    }

    /// A random, well-formed encoding of message `name` with hostile strings and numbers.
    fn random_message(
        &self,
        rng: &mut StdRng,
        name: &str,
        ids: &[String],
        depth: usize,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(message) = self.messages.get(name) else {
            return out;
        };
        for field in &message.field {
            if !rng.random_bool(0.7) {
                continue;
            }
            let count = if field.label() == Label::Repeated {
                rng.random_range(0..3)
            } else {
                1
            };
            for _ in 0..count {
                let number = field.number() as u64;
                match field.r#type() {
                    Type::String => {
                        let value = text(rng, ids);
                        put_bytes(&mut out, number, value.as_bytes());
                    }
                    Type::Message if depth < 4 => {
                        let nested = self.random_message(rng, field.type_name(), ids, depth + 1);
                        put_bytes(&mut out, number, &nested);
                    }
                    Type::Message => {}
                    Type::Bool => put_varint_field(&mut out, number, rng.random_range(0..2)),
                    _ => {
                        let value: i64 = match rng.random_range(0..6) {
                            0 => 0,
                            1 => -1,
                            2 => i64::MAX,
                            3 => i64::MIN,
                            4 => rng.random_range(1_600_000_000..2_000_000_000),
                            _ => rng.random_range(-1000..1000),
                        };
                        put_varint_field(&mut out, number, value as u64);
                    }
                }
            }
        }
        out
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_varint_field(out: &mut Vec<u8>, number: u64, value: u64) {
    put_varint(out, number << 3);
    put_varint(out, value);
}

fn put_bytes(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_varint(out, (number << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}
