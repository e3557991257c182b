//! gRPC serves health (`grpc.health.v1`) and reflection (v1 and v1alpha) so that grpcurl,
//! buf curl and Kubernetes probes work without local protos.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use tokio_stream::StreamExt;

on_every_backend! {
    async fn health_reports_serving_without_a_key(app) {
        let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
        for service in [
            "",
            "creditd.v1.CustomerService",
            "creditd.v1.CustomerBalanceTransactionService",
            "creditd.v1.CreditGrantService",
            "creditd.v1.CreditBalanceService",
            "creditd.v1.CreditHoldService",
            "creditd.v1.TestClockService",
            "creditd.v1.AlertService",
        ] {
            let response = health
                .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(response.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service}");
        }
        let http = app.http.get(format!("{}/healthz", app.http_base)).send().await.unwrap();
        assert_eq!(http.status(), 200);
    }

    async fn reflection_lists_every_creditd_service_in_v1_and_v1alpha(app) {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;

        let mut client = ServerReflectionClient::new(app.channel().await);
        let request = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let mut responses = client.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
        let response = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection response");
        };
        let names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
        for expected in [
            "creditd.v1.CustomerService",
            "creditd.v1.CustomerBalanceTransactionService",
            "creditd.v1.CreditGrantService",
            "creditd.v1.CreditBalanceService",
            "creditd.v1.CreditHoldService",
            "creditd.v1.TestClockService",
            "creditd.v1.AlertService",
            "grpc.health.v1.Health",
        ] {
            assert!(names.contains(&expected.to_string()), "{expected} missing from {names:?}");
        }

        // A client can fetch the file that defines a service, with its dependencies.
        let request = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::FileContainingSymbol("creditd.v1.CustomerBalanceTransactionService".into())) };
        let mut responses = client.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
        let response = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("unexpected reflection response");
        };
        assert!(!files.file_descriptor_proto.is_empty());

        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest as AlphaReflectionRequest;
        let mut alpha = AlphaClient::new(app.channel().await);
        let request = AlphaReflectionRequest { host: String::new(), message_request: Some(AlphaRequest::ListServices(String::new())) };
        let mut responses = alpha.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
        assert!(responses.next().await.unwrap().is_ok());
    }
}
