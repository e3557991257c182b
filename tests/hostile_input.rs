//! Hostile input gets the same precise answer on every backend: a NUL character (which
//! PostgreSQL cannot store and SQLite can) or an over-long string anywhere in a request is a
//! 400 `parameter_invalid` naming the parameter (REST) or INVALID_ARGUMENT with a `BadRequest`
//! field (gRPC), never a 500 on one backend and a stored value on the other. Transport-level
//! refusals (an undecodable path, an unknown route, a wrong method, an oversized gRPC message)
//! come in Stripe's envelope or with the documented gRPC code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::TestApp;
use common::credits::{BalanceClient, GrantClient, metered_grant, metered_line};
use creditd::grpc::proto;
use tonic::Code;
use tonic_types::StatusExt;

/// Asserts a gRPC INVALID_ARGUMENT whose `BadRequest` names `field`.
#[track_caller]
fn assert_invalid_field(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("bad request details")
        .field_violations;
    assert!(
        violations.iter().any(|violation| violation.field == field),
        "expected a violation for {field}: {violations:?}"
    );
}

/// Sends `request` as raw bytes (clients refuse to build such requests) and returns the
/// response's status and JSON body.
async fn raw_http(app: &TestApp, request: String) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let addr = app.http_base.trim_start_matches("http://").to_string();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        // The server may answer and close before it has read everything.
        let _ = stream.write_all(request.as_bytes());
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).to_string();
        let status = text
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .unwrap_or("");
        let json = serde_json::from_str(body)
            .unwrap_or(serde_json::Value::String(text.chars().take(300).collect()));
        (status, json)
    })
    .await
    .unwrap()
}

on_every_backend! {
    async fn a_nul_character_anywhere_in_a_rest_request_is_parameter_invalid(app) {
        let customer = app.create_customer("name=ok").await;
        let grant = common::credits::grant(
            &app,
            &format!("customer={customer}&category=paid&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=100&applicability_config[scope][price_type]=metered"),
        )
        .await;
        let cases: Vec<(&str, String, &str, &str)> = vec![
            ("POST", "/v1/customers".into(), "name=a%00b", "name"),
            ("POST", "/v1/customers".into(), "description=%00", "description"),
            ("POST", "/v1/customers".into(), "email=a%00@example.com", "email"),
            ("POST", "/v1/customers".into(), "metadata[order]=1%00", "metadata[order]"),
            ("POST", "/v1/customers".into(), "metadata[ord%00er]=1", "metadata[ord\\u0000er]"),
            ("POST", "/v1/customers".into(), "expand[]=test%00clock", "expand[]"),
            ("POST", format!("/v1/customers/{customer}"), "name=%00", "name"),
            ("POST", "/v1/customers/cus_%00x".into(), "name=x", "customer"),
            ("GET", "/v1/customers?starting_after=cus_%00".into(), "", "starting_after"),
            ("GET", "/v1/customers?ending_before=cus_%00".into(), "", "ending_before"),
            ("GET", "/v1/customers?email=%00".into(), "", "email"),
            ("GET", "/v1/customers?test_clock=clock_%00".into(), "", "test_clock"),
            ("GET", "/v1/customers/cus_%00".into(), "", "customer"),
            (
                "POST",
                format!("/v1/customers/{customer}/balance_transactions"),
                "amount=-500&currency=usd&description=a%00",
                "description",
            ),
            (
                "POST",
                format!("/v1/customers/{customer}/balance_transactions"),
                "amount=-500&currency=us%00",
                "currency",
            ),
            ("GET", format!("/v1/customers/{customer}/balance_transactions?invoice=in_%00"), "", "invoice"),
            ("GET", format!("/v1/customers/{customer}/balance_transactions/cbtxn_%00"), "", "transaction"),
            (
                "POST",
                "/v1/billing/credit_grants".into(),
                "customer=cus_%00&category=paid&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=100&applicability_config[scope][price_type]=metered",
                "customer",
            ),
            (
                "POST",
                "/v1/billing/credit_grants".into(),
                "customer=x&category=paid&amount[type]=monetary&amount[monetary][currency]=usd&amount[monetary][value]=100&applicability_config[scope][prices][0][id]=price_%00",
                "applicability_config[scope][prices][0][id]",
            ),
            ("POST", format!("/v1/billing/credit_grants/{grant}"), "metadata[a]=%00", "metadata[a]"),
            ("POST", "/v1/billing/credit_grants/credgr_%00/void".into(), "", "id"),
            ("GET", "/v1/billing/credit_grants?customer=cus_%00".into(), "", "customer"),
            (
                "GET",
                format!("/v1/billing/credit_balance_summary?customer={customer}&filter[type]=credit_grant&filter[credit_grant]=credgr_%00"),
                "",
                "filter[credit_grant]",
            ),
            (
                "GET",
                format!("/v1/billing/credit_balance_transactions?customer={customer}&credit_grant=%00"),
                "",
                "credit_grant",
            ),
            ("GET", "/v1/billing/credit_balance_transactions/cbtxn_%00".into(), "", "id"),
            ("POST", "/v1/test_helpers/test_clocks".into(), "frozen_time=1700000000&name=%00", "name"),
            ("GET", "/v1/test_helpers/test_clocks/clock_%00".into(), "", "test_clock"),
        ];
        for (method, path, body, param) in cases {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let reply = app.request(method.clone(), &path, Some(&app.key), None, body).await;
            assert_eq!(reply.status, 400, "{method} {path} {body}: {}", reply.body);
            reply.assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some(param));
        }
        // Nothing was stored on either backend.
        let customers = app.get("/v1/customers").await.ok();
        assert_eq!(customers["data"].as_array().unwrap().len(), 1);
    }

    async fn every_string_has_a_limit_and_ids_stop_at_255_characters(app) {
        let customer = app.create_customer("name=ok").await;
        let at_limit = "i".repeat(255);
        let past_limit = "i".repeat(256);
        app.get(&format!("/v1/customers/{customer}/balance_transactions?invoice={at_limit}")).await.ok();
        app.get(&format!("/v1/customers/{customer}/balance_transactions?invoice={past_limit}"))
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("invoice"));
        app.get(&format!("/v1/customers?starting_after={past_limit}"))
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("starting_after"));
        app.get(&format!("/v1/customers/{past_limit}"))
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("customer"));
        app.post("/v1/customers", &format!("metadata[k]=v&expand[]={past_limit}"))
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("expand[]"));

        let mut balance = BalanceClient::new(app.channel().await);
        let huge = "l".repeat(900_000);
        let status = balance
            .apply_credits(app.grpc(metered_line(&customer, "usd", "in_1", &huge, 100)))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "invoice_line_item");
        let status = balance
            .apply_credits(app.grpc(metered_line(&customer, "usd", &past_limit, "il_1", 100)))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "invoice");
        let status = balance
            .reinstate_invoice_credits(app.grpc(proto::ReinstateInvoiceCreditsRequest {
                customer: customer.clone(),
                invoice: past_limit.clone(),
            }))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "invoice");
        balance
            .apply_credits(app.grpc(metered_line(&customer, "usd", &at_limit, &at_limit, 100)))
            .await
            .expect("255-character references are accepted");
    }

    async fn a_nul_character_anywhere_in_a_grpc_request_is_invalid_argument(app) {
        let customer = app.create_customer("name=ok").await;
        let mut customers = app.customers().await;
        let status = customers
            .create_customer(app.grpc(proto::CreateCustomerRequest {
                name: Some("a\0b".into()),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "name");
        let status = customers
            .create_customer(app.grpc(proto::CreateCustomerRequest {
                metadata: [("order".to_string(), "\0".to_string())].into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "metadata[order]");
        let status = customers
            .get_customer(app.grpc(proto::GetCustomerRequest { id: "cus_\0".into() }))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "id");
        let status = customers
            .list_customers(app.grpc(proto::ListCustomersRequest {
                page: Some(proto::PageRequest {
                    starting_after: Some("cus_\0".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "page[starting_after]");
        let status = customers
            .update_customer(app.grpc(proto::UpdateCustomerRequest {
                id: customer.clone(),
                description: Some("\0".into()),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "description");

        let mut grants = GrantClient::new(app.channel().await);
        let mut request = metered_grant(&customer, "usd", 100);
        request.name = Some("\0".into());
        let status = grants.create_credit_grant(app.grpc(request)).await.unwrap_err();
        assert_invalid_field(&status, "name");

        let mut balance = BalanceClient::new(app.channel().await);
        let status = balance
            .apply_credits(app.grpc(metered_line(&customer, "usd", "in_\0", "il_1", 100)))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "invoice");
        let status = balance
            .apply_credits(app.grpc(metered_line(&customer, "usd", "in_1", "il_\0", 100)))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "invoice_line_item");
        let mut line = metered_line(&customer, "usd", "in_1", "il_1", 100);
        line.price = Some("price_\0".into());
        let status = balance.apply_credits(app.grpc(line)).await.unwrap_err();
        assert_invalid_field(&status, "price");
        let listed = customers
            .list_customers(app.grpc(proto::ListCustomersRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.data.len(), 1, "nothing was stored");
    }

    async fn transport_errors_come_in_stripe_envelope(app) {
        app.get("/v1/customers/%FF")
            .await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("id"));
        app.get("/v1/no_such_thing").await.assert_error(404, "invalid_request_error", None, None);
        app.request(reqwest::Method::DELETE, "/v1/customers", Some(&app.key), None, "")
            .await
            .assert_error(404, "invalid_request_error", None, None);
    }

    async fn the_http_parsers_own_refusals_come_in_stripe_envelope(app) {
        let long_uri = format!("GET /v1/customers?email={} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
        let (status, body) = raw_http(&app, long_uri).await;
        assert_eq!(status, 414, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        let many_headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
        let (status, body) = raw_http(&app, format!("GET /v1/customers HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n")).await;
        assert_eq!(status, 431, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        let huge_header = format!("GET /v1/customers HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "b".repeat(500_000));
        let (status, body) = raw_http(&app, huge_header).await;
        assert_eq!(status, 431, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        // The connection still serves ordinary requests.
        app.get("/v1/customers").await.ok();
    }

    async fn an_oversized_grpc_message_is_resource_exhausted(_app) {
        let app = TestApp::spawn_with(_app.backend, |config| config.max_body_bytes = 4096).await;
        let mut customers = app.customers().await;
        let status = customers
            .create_customer(app.grpc(proto::CreateCustomerRequest {
                description: Some("x".repeat(8192)),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("4096 bytes"), "{}", status.message());
        customers
            .create_customer(app.grpc(proto::CreateCustomerRequest {
                description: Some("small".into()),
                ..Default::default()
            }))
            .await
            .expect("a message under the limit is served");
    }
}
