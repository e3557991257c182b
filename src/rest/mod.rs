//! The Stripe REST shim: axum handlers that speak Stripe's form-encoded API and JSON shapes,
//! translating to the same service calls as gRPC. No rules live here.

mod alerts;
mod body;
mod context;
mod credit_balance;
mod credit_grants;
mod customer_balance_transactions;
mod customers;
mod error;
mod events;
mod expand;
mod form;

pub mod params;
mod path;
mod test_clocks;
pub mod transport;
mod webhook_endpoints;

use axum::Router;
use axum::http::{HeaderValue, Method, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::service::Services;

pub use error::RestError;

/// The API version whose shapes the shim returns.
pub use crate::render::STRIPE_API_VERSION;

/// Protective limits for the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_timeout: std::time::Duration,
    pub max_body_bytes: usize,
    pub max_concurrent_requests: usize,
}

/// The shim with its protective layers: requests past the concurrency limit are refused at
/// once with 429 (load shedding, not queueing), slow ones end with 504, big bodies with 413;
/// all in Stripe's error shape.
pub fn router_with_limits(services: Services, limits: Limits) -> Router {
    use axum::error_handling::HandleErrorLayer;
    use tower::ServiceBuilder;
    router(services).layer(
        ServiceBuilder::new()
            .layer(crate::telemetry::RequestTelemetryLayer::new("http"))
            .layer(HandleErrorLayer::new(overload_error))
            .load_shed()
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                limits.max_concurrent_requests.max(1),
            ))
            .timeout(limits.request_timeout)
            .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes)),
    )
}

async fn overload_error(error: tower::BoxError) -> RestError {
    use crate::error::{Error, ErrorKind};
    if error.is::<tower::load_shed::error::Overloaded>() {
        RestError(Error::rate_limited(
            "The server is handling too many requests right now. Please retry with exponential backoff.",
        ))
    } else if error.is::<tower::timeout::error::Elapsed>() {
        RestError(Error::new(
            ErrorKind::Timeout,
            "The request took too long and was stopped.",
        ))
    } else {
        RestError(Error::internal(anyhow::anyhow!("{error}")))
    }
}

pub fn router(services: Services) -> Router {
    Router::new()
        .route(
            "/v1/customers",
            get(customers::list).post(customers::create),
        )
        .route(
            "/v1/customers/{customer}",
            get(customers::retrieve)
                .post(customers::update)
                .delete(customers::delete),
        )
        .route(
            "/v1/customers/{customer}/balance_transactions",
            get(customer_balance_transactions::list).post(customer_balance_transactions::create),
        )
        .route(
            "/v1/customers/{customer}/balance_transactions/{transaction}",
            get(customer_balance_transactions::retrieve)
                .post(customer_balance_transactions::update),
        )
        .route(
            "/v1/billing/credit_grants",
            get(credit_grants::list).post(credit_grants::create),
        )
        .route(
            "/v1/billing/credit_grants/{id}",
            get(credit_grants::retrieve).post(credit_grants::update),
        )
        .route(
            "/v1/billing/credit_grants/{id}/expire",
            post(credit_grants::expire),
        )
        .route(
            "/v1/billing/credit_grants/{id}/void",
            post(credit_grants::void),
        )
        .route(
            "/v1/billing/credit_balance_summary",
            get(credit_balance::summary),
        )
        .route(
            "/v1/billing/credit_balance_transactions",
            get(credit_balance::list_transactions),
        )
        .route(
            "/v1/billing/credit_balance_transactions/{id}",
            get(credit_balance::retrieve_transaction),
        )
        .route("/v1/billing/alerts", get(alerts::list).post(alerts::create))
        .route("/v1/billing/alerts/{id}", get(alerts::retrieve))
        .route("/v1/billing/alerts/{id}/activate", post(alerts::activate))
        .route(
            "/v1/billing/alerts/{id}/deactivate",
            post(alerts::deactivate),
        )
        .route("/v1/billing/alerts/{id}/archive", post(alerts::archive))
        .route(
            "/v1/test_helpers/test_clocks",
            get(test_clocks::list).post(test_clocks::create),
        )
        .route(
            "/v1/test_helpers/test_clocks/{test_clock}",
            get(test_clocks::retrieve).delete(test_clocks::delete),
        )
        .route(
            "/v1/test_helpers/test_clocks/{test_clock}/advance",
            post(test_clocks::advance),
        )
        .route("/v1/events", get(events::list))
        .route("/v1/events/{id}", get(events::retrieve))
        .route(
            "/v1/webhook_endpoints",
            get(webhook_endpoints::list).post(webhook_endpoints::create),
        )
        .route(
            "/v1/webhook_endpoints/{webhook_endpoint}",
            get(webhook_endpoints::retrieve)
                .post(webhook_endpoints::update)
                .delete(webhook_endpoints::delete),
        )
        .route("/healthz", get(health))
        .fallback(unrecognized_url)
        .method_not_allowed_fallback(unrecognized_url)
        .layer(axum::middleware::map_response(stripe_headers))
        .layer(axum::middleware::from_fn(crate::idempotency_headers::echo))
        .with_state(services)
}

async fn stripe_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        "stripe-version",
        HeaderValue::from_static(STRIPE_API_VERSION),
    );
    // `request-id` is set by the telemetry layer, which also puts it in the logs.
    response
}

async fn health(
    axum::extract::State(services): axum::extract::State<Services>,
) -> axum::response::Response {
    match services.db.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(error) => RestError(error).into_response(),
    }
}

async fn unrecognized_url(method: Method, uri: Uri) -> RestError {
    RestError(crate::error::Error::new(
        crate::error::ErrorKind::NotFound,
        format!("Unrecognized request URL ({method}: {}).", uri.path()),
    ))
}
