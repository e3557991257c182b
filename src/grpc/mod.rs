//! The gRPC transport: tonic services that translate `creditd.v1` messages into service
//! calls and back, plus `grpc.health.v1` and server reflection. No rules live here.

mod admin;
mod alerts;
mod convert;
mod credit_holds;
mod credits;
mod customer_balance_transactions;
mod customers;
mod event_stream;
mod events;
pub mod guard;
mod oversize;
mod shedding;
mod status;
mod test_clocks;
mod webhook_endpoints;

use tonic::{Request, Status};

use crate::service::auth::key_from_authorization;
use crate::service::idempotency::not_ascii;
use crate::service::{ReplayFlag, RequestContext, Services};

use crate::idempotency_headers::IDEMPOTENCY_KEY;

/// Generated code for `proto/creditd/v1`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("creditd.v1");
}

/// The encoded descriptor set of every `creditd.v1` file, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/creditd_descriptor.bin"));

pub use admin::AdminApi;
pub use alerts::AlertApi;
pub use credit_holds::CreditHoldApi;
pub use credits::{CreditBalanceApi, CreditGrantApi};
pub use customer_balance_transactions::CustomerBalanceTransactionApi;
pub use customers::CustomerApi;
pub use events::EventApi;
pub use oversize::oversized_message_layer;
pub use shedding::ShedExceptHealthLayer;
pub use test_clocks::TestClockApi;
pub use webhook_endpoints::WebhookEndpointApi;

/// Builds the routes: every creditd service, health and reflection (v1 and v1alpha).
pub async fn routes(
    services: Services,
    max_message_bytes: usize,
) -> anyhow::Result<tonic::service::Routes> {
    use proto::admin_service_server::AdminServiceServer;
    use proto::alert_service_server::AlertServiceServer;
    use proto::credit_balance_service_server::CreditBalanceServiceServer;
    use proto::credit_grant_service_server::CreditGrantServiceServer;
    use proto::credit_hold_service_server::CreditHoldServiceServer;
    use proto::customer_balance_transaction_service_server::CustomerBalanceTransactionServiceServer;
    use proto::customer_service_server::CustomerServiceServer;
    use proto::event_service_server::EventServiceServer;
    use proto::test_clock_service_server::TestClockServiceServer;
    use proto::webhook_endpoint_service_server::WebhookEndpointServiceServer;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CustomerServiceServer<CustomerApi>>()
        .await;
    health_reporter
        .set_serving::<CustomerBalanceTransactionServiceServer<CustomerBalanceTransactionApi>>()
        .await;
    health_reporter
        .set_serving::<CreditGrantServiceServer<CreditGrantApi>>()
        .await;
    health_reporter
        .set_serving::<CreditBalanceServiceServer<CreditBalanceApi>>()
        .await;
    health_reporter
        .set_serving::<CreditHoldServiceServer<CreditHoldApi>>()
        .await;

    health_reporter
        .set_serving::<TestClockServiceServer<TestClockApi>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<AdminApi>>()
        .await;
    health_reporter
        .set_serving::<EventServiceServer<EventApi>>()
        .await;
    health_reporter
        .set_serving::<WebhookEndpointServiceServer<WebhookEndpointApi>>()
        .await;
    health_reporter
        .set_serving::<AlertServiceServer<AlertApi>>()
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            CustomerServiceServer::new(CustomerApi::new(services.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            CustomerBalanceTransactionServiceServer::new(CustomerBalanceTransactionApi::new(
                services.clone(),
            ))
            .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            CreditGrantServiceServer::new(CreditGrantApi::new(services.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            CreditBalanceServiceServer::new(CreditBalanceApi::new(services.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            CreditHoldServiceServer::new(CreditHoldApi::new(services.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            AdminServiceServer::new(AdminApi::new(services.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            EventServiceServer::new(EventApi::new(services.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            WebhookEndpointServiceServer::new(WebhookEndpointApi::new(services.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            AlertServiceServer::new(AlertApi::new(services.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            TestClockServiceServer::new(TestClockApi::new(services))
                .max_decoding_message_size(max_message_bytes),
        );
    let router = routes
        .routes()
        .into_axum_router()
        .layer(axum::middleware::from_fn(crate::idempotency_headers::echo));
    Ok(tonic::service::Routes::from(router))
}

/// Authenticates a call from its `authorization` metadata and picks up `idempotency-key`.
///
/// It also applies the rule for string inputs to every string of the message (see [`guard`]),
/// so no handler can forget it.
pub(crate) async fn context<T: prost::Message>(
    services: &Services,
    request: &Request<T>,
) -> Result<RequestContext, Status> {
    let metadata = request.metadata();
    let presented = metadata
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(|value| key_from_authorization(value).unwrap_or_else(|| value.trim().to_string()));
    let caller = services.authenticate(presented.as_deref()).await?;
    guard::check_message(request.get_ref())?;
    let idempotency_key = match metadata.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Status::from(not_ascii()))?
                .to_string(),
        ),
    };
    let replayed = request
        .extensions()
        .get::<ReplayFlag>()
        .cloned()
        .unwrap_or_default();
    let request_id = request
        .extensions()
        .get::<crate::telemetry::RequestId>()
        .map(|id| id.0.clone());
    Ok(RequestContext::new(caller.tenant)
        .with_idempotency_key(idempotency_key)
        .with_replay_flag(replayed)
        .with_request_id(request_id))
}
