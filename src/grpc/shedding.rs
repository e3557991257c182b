//! Load shedding for gRPC that spares the health service: calls past the concurrency limit
//! are refused at once with RESOURCE_EXHAUSTED, but `grpc.health.v1` is always answered, so a
//! busy replica is not mistaken for a dead one by its probes.

use std::task::{Context, Poll};

use http::Request;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShed;
use tower::{Layer, Service, ServiceExt};

#[derive(Clone)]
pub struct ShedExceptHealthLayer {
    limit: GlobalConcurrencyLimitLayer,
}

impl ShedExceptHealthLayer {
    pub fn new(max_concurrent_requests: usize) -> Self {
        ShedExceptHealthLayer {
            limit: GlobalConcurrencyLimitLayer::new(max_concurrent_requests.max(1)),
        }
    }
}

impl<S: Clone> Layer<S> for ShedExceptHealthLayer {
    type Service = ShedExceptHealth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ShedExceptHealth {
            limited: LoadShed::new(self.limit.layer(inner.clone())),
            unlimited: inner,
        }
    }
}

#[derive(Clone)]
pub struct ShedExceptHealth<S> {
    limited: LoadShed<tower::limit::ConcurrencyLimit<S>>,
    unlimited: S,
}

const HEALTH_PREFIX: &str = "/grpc.health.v1.";

impl<S, B> Service<Request<B>> for ShedExceptHealth<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is decided per call: each call drives its own clone (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            let service = self.unlimited.clone();
            Box::pin(async move { service.oneshot(request).await.map_err(Into::into) })
        } else {
            let service = self.limited.clone();
            Box::pin(service.oneshot(request))
        }
    }
}
