//! Startup: connect and migrate, bind both listeners (reporting the real ports, so tests can
//! bind port 0), then serve until a shutdown signal, draining in-flight requests.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::service::Services;
use crate::store::Db;

pub struct Server {
    services: Services,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    grace: Duration,
    expiry_sweep_interval: Duration,
    event_poll_interval: Duration,
    webhooks: crate::service::webhook_delivery::DeliverySettings,
    limits: crate::rest::Limits,
    /// TLS for both listeners, when configured.
    tls: Option<crate::tls::ServerTls>,
    /// This process's claim of its SQLite database, held until the server stops.
    _sqlite: Option<crate::store::SqliteOwnership>,
}

impl Server {
    /// Connects to the database, applies migrations, ensures API keys, and binds.
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Server> {
        // A bad TLS configuration stops startup before the database is touched.
        crate::tls::ServerTls::from_config(config)?;
        let pepper = config.api_key_hashing.pepper()?;
        let sqlite = crate::store::SqliteOwnership::claim(&config.database.database_url)?;
        let db = Db::connect(&config.database.options()).await?;
        db.migrate().await?;
        let mut services = Services::new(db.clone());
        if db.has_one_writer() {
            // The lock above makes this process the database's only writer.
            services = services.as_only_writer(config.summary_view_customers);
        }
        let services = services
            .with_rate_limit(config.rate_limit_per_key)
            .with_key_cache(Duration::from_secs(config.api_key_cache_seconds))
            .with_api_key_pepper(pepper)
            .with_event_retention(Duration::from_secs(
                config.event_retention_days.saturating_mul(24 * 60 * 60),
            ))
            .with_max_event_streams(config.max_event_streams)
            .with_max_hold_seconds(config.max_hold_seconds);
        services.ensure_api_keys(&config.api_keys).await?;
        if !config.no_bootstrap_key
            && let Some(key) = services.bootstrap_test_key().await?
        {
            // Printed once, to the terminal of whoever started the server, never logged.
            println!(
                "creditd: created a test-mode API key for this new database (shown only once):\n\n    {}\n",
                key.reveal()
            );
        }
        let mut server = Self::bind(config, services).await?;
        server._sqlite = sqlite;
        Ok(server)
    }

    /// Binds the listeners for already-built services.
    pub async fn bind(config: &ServeConfig, services: Services) -> anyhow::Result<Server> {
        let tls = crate::tls::ServerTls::from_config(config)?;
        let grpc_listener = TcpListener::bind(config.grpc_addr).await?;
        let http_listener = TcpListener::bind(config.http_addr).await?;
        let mut webhooks = config.webhooks.settings();
        // Finished deliveries are kept as long as events are.
        webhooks.finished_retention =
            Duration::from_secs(config.event_retention_days.max(1).saturating_mul(86400));
        let services =
            services.with_private_webhook_addresses_refused(webhooks.refuse_private_addresses);
        Ok(Server {
            services,
            webhooks,
            grpc_listener,
            http_listener,
            grace: config.shutdown_grace(),
            expiry_sweep_interval: Duration::from_secs(config.expiry_sweep_interval_seconds),
            event_poll_interval: Duration::from_millis(config.event_poll_interval_ms.max(1)),
            limits: crate::rest::Limits {
                request_timeout: Duration::from_secs(config.request_timeout_seconds.max(1)),
                max_body_bytes: config.max_body_bytes.max(1024),
                max_concurrent_requests: config.max_concurrent_requests.max(1),
            },
            tls,
            _sqlite: None,
        })
    }

    #[allow(
        clippy::expect_used,
        reason = "a bound TCP listener always has a local address"
    )]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    #[allow(
        clippy::expect_used,
        reason = "a bound TCP listener always has a local address"
    )]
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Serves until `shutdown` completes, then stops accepting and waits up to the grace
    /// period for in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        };

        let limits = self.limits;
        let grpc_routes = crate::grpc::routes(self.services.clone(), limits.max_body_bytes).await?;
        // Past the concurrency limit, calls are refused at once with RESOURCE_EXHAUSTED
        // (health checks excepted).
        let grpc_router = tonic::transport::Server::builder()
            .timeout(limits.request_timeout)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(
                tower::ServiceBuilder::new()
                    .layer(crate::telemetry::RequestTelemetryLayer::new("grpc"))
                    .layer(crate::grpc::ShedExceptHealthLayer::new(
                        limits.max_concurrent_requests,
                    ))
                    .layer(crate::grpc::oversized_message_layer(limits.max_body_bytes)),
            )
            .add_routes(grpc_routes);
        let http_router = crate::rest::router_with_limits(self.services.clone(), limits);
        // With TLS, both listeners hand out connections whose handshake has completed.
        let (grpc, http): (
            BoxFuture<Result<(), tonic::transport::Error>>,
            BoxFuture<io::Result<()>>,
        ) = match &self.tls {
            Some(tls) => {
                tracing::info!(
                    client_certificates = tls.requires_client_certificates(),
                    "serving TLS on both listeners"
                );
                let grpc = grpc_router.serve_with_incoming_shutdown(
                    tls.grpc_incoming(self.grpc_listener),
                    stopped(stop_rx.clone()),
                );
                let http_listener =
                    crate::rest::transport::EnvelopeListener(tls.http_listener(self.http_listener));
                let http = axum::serve(http_listener, http_router)
                    .with_graceful_shutdown(stopped(stop_rx.clone()));
                (Box::pin(grpc), Box::pin(async move { http.await }))
            }
            None => {
                // Nagle's algorithm would hold small responses for the peer's delayed ACK
                // (~40 ms); every request/response socket turns it off.
                let grpc = grpc_router.serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(self.grpc_listener)
                        .with_nodelay(Some(true)),
                    stopped(stop_rx.clone()),
                );
                let http_listener =
                    axum::serve::ListenerExt::tap_io(self.http_listener, |stream| {
                        let _ = stream.set_nodelay(true);
                    });
                let http = axum::serve(
                    crate::rest::transport::EnvelopeListener(http_listener),
                    http_router,
                )
                .with_graceful_shutdown(stopped(stop_rx.clone()));
                (Box::pin(grpc), Box::pin(async move { http.await }))
            }
        };

        let prune = tokio::spawn(prune_idempotency_records(
            self.services.clone(),
            stop_rx.clone(),
        ));
        let prune_events = tokio::spawn(prune_old_events(self.services.clone(), stop_rx.clone()));
        let sweep = (!self.expiry_sweep_interval.is_zero()).then(|| {
            tokio::spawn(sweep_expired_grants(
                self.services.clone(),
                self.expiry_sweep_interval,
                stop_rx.clone(),
            ))
        });

        let event_pump = tokio::spawn(
            self.services
                .events
                .clone()
                .run(self.services.db.for_background(), self.event_poll_interval),
        );
        let webhook_worker = crate::service::webhook_delivery::spawn(
            self.services.with_background_db(),
            self.webhooks.clone(),
        )?;
        crate::telemetry::metrics::register_pool_metrics(&self.services.db);
        crate::telemetry::metrics::register_event_stream_metrics(&self.services.event_streams);
        // A clock left `advancing` by a crash is finished before serving.
        if let Err(error) = self.services.resume_advancing_test_clocks().await {
            tracing::warn!(error = %error, "resuming test clocks failed");
        }

        let grace = self.grace;
        let mut grpc_task = tokio::spawn(grpc);
        let mut http_task = tokio::spawn(http);
        tokio::select! {
            _ = shutdown => {}
            result = &mut grpc_task => { tracing::error!(?result, "gRPC server stopped"); }
            result = &mut http_task => { tracing::error!(?result, "HTTP server stopped"); }
        }
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down, draining in-flight requests"
        );
        let _ = stop_tx.send(true);
        // Streams never end on their own: end them, so they do not hold the drain.
        self.services.event_streams.close();
        let drained = tokio::time::timeout(grace, async {
            let _ = (&mut grpc_task).await;
            let _ = (&mut http_task).await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("grace period over; abandoning remaining requests");
            grpc_task.abort();
            http_task.abort();
        }
        prune.abort();
        prune_events.abort();
        event_pump.abort();
        webhook_worker.abort();
        if let Some(sweep) = sweep {
            sweep.abort();
        }
        self.services.db.close().await;
        Ok(())
    }
}

async fn prune_idempotency_records(
    services: Services,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(15 * 60));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match crate::service::idempotency::prune(&services.db, services.clock.now()).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned expired idempotency records"),
            Err(error) => tracing::warn!(error = %error, "pruning idempotency records failed"),
        }
    }
}

/// Deletes events past the retention window every few minutes (in small batches; the Events
/// API already hides them). Safe on every replica at once.
async fn prune_old_events(services: Services, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_secs(5 * 60));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match services.prune_events(services.clock.now()).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned events past retention"),
            Err(error) => tracing::warn!(error = %error, "pruning events failed"),
        }
    }
}

/// Writes `credits_expired` entries for lapsed grants every `interval`. Safe to run on every
/// replica at once: each grant is expired exactly once under its customer's lock.
async fn sweep_expired_grants(
    services: Services,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match services.resume_advancing_test_clocks().await {
            Ok(0) => {}
            Ok(resumed) => tracing::info!(resumed, "finished advancing test clocks"),
            Err(error) => tracing::warn!(error = %error, "resuming test clocks failed"),
        }
        match services.sweep_expired_credit_grants().await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired lapsed credit grants"),
            Err(error) => tracing::warn!(error = %error, "expiry sweep failed"),
        }
        match services.sweep_expired_credit_holds().await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "released expired credit holds"),
            Err(error) => tracing::warn!(error = %error, "credit hold expiry sweep failed"),
        }
    }
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
