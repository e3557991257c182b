//! The event stream (`WatchEvents`) and `creditd listen`: every event committed after the
//! resume point arrives once, none skipped, in stream order (so each customer's in commit
//! order), across disconnects, concurrent writers, out-of-order commits (PostgreSQL), replicas
//! and restarts; filters and tenancy; resume errors; a client that never reads holds a bounded
//! number of events on the server; `creditd listen` delivers each event signed as Stripe signs
//! webhooks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::credits::usd_grant_body;
use common::{Backend, TestApp};
use creditd::domain::Tenant;
use creditd::domain::event::{Event, EventRequest};
use creditd::domain::ids::{IdKind, new_id, new_id_at};
use creditd::grpc::proto::{self, event_service_client::EventServiceClient};
use creditd::service::event_stream::{MAX_HELD_PER_STREAM, WatchFilter, WatchFrom};
use creditd::store::events::{StreamQuery, read_after};
use futures::StreamExt;
use proto::watch_events_request::Resume;
use rand::Rng;
use tonic::Streaming;

type Watch = Streaming<proto::WatchEventsResponse>;

/// Opens a stream on `app` with `key`.
async fn watch_as(
    app: &TestApp,
    key: &str,
    resume: Resume,
    types: &[&str],
    customer: Option<&str>,
) -> Result<Watch, tonic::Status> {
    let mut client = EventServiceClient::new(app.channel().await);
    let request = common::grpc_request(
        proto::WatchEventsRequest {
            resume: Some(resume),
            types: types.iter().map(|t| t.to_string()).collect(),
            customer: customer.map(str::to_string),
        },
        Some(key),
        None,
    );
    client
        .watch_events(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn watch(app: &TestApp, resume: Resume) -> Watch {
    watch_as(app, &app.key, resume, &[], None).await.unwrap()
}

fn after(id: &str) -> Resume {
    Resume::AfterEvent(id.to_string())
}

fn now() -> Resume {
    Resume::FromNow(true)
}

/// The next event, failing after 10 s.
async fn next(stream: &mut Watch) -> proto::Event {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("the stream is healthy")
        .expect("the stream goes on")
        .event
        .expect("an event")
}

async fn take(stream: &mut Watch, count: usize) -> Vec<proto::Event> {
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        events.push(next(stream).await);
    }
    events
}

/// Asserts nothing arrives for a moment.
async fn assert_quiet(stream: &mut Watch) {
    if let Ok(message) = tokio::time::timeout(Duration::from_millis(400), stream.message()).await {
        panic!("expected nothing, got {message:?}");
    }
}

async fn tenant(app: &TestApp) -> Tenant {
    app.context().await.tenant
}

/// Numbers what committed (PostgreSQL) and tells the app's streams; then every event of the
/// tenant in stream order.
async fn stream_in_db(app: &TestApp) -> Vec<Event> {
    app.services
        .events
        .run_once(&app.services.db)
        .await
        .unwrap();
    let tenant = tenant(app).await;
    let mut all: Vec<Event> = Vec::new();
    loop {
        let page = read_after(
            app.services.db.reader(),
            &StreamQuery {
                tenant: &tenant,
                after: all.last().and_then(|e| e.sequence).unwrap_or(0),
                types: &[],
                customer_id: None,
                limit: 500,
            },
        )
        .await
        .unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

fn ids(events: &[proto::Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

fn db_ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

/// An event as a write would emit it at `created`, for inserting directly. (Recent: the
/// server's pruner deletes events past retention.)
fn raw_event(tenant: &Tenant, customer: Option<&str>, created: i64) -> Event {
    Event {
        id: new_id(IdKind::Event, tenant.livemode),
        livemode: tenant.livemode,
        created,
        kind: "customer.updated".to_string(),
        customer_id: customer.map(str::to_string),
        request: EventRequest::automatic(),
        api_version: "2025-03-31.basil".to_string(),
        pending_webhooks: 0,
        data: r#"{"object":{"object":"customer"}}"#.to_string(),
        sequence: None,
    }
}

/// One write of mixed kinds (each emits at least one event) on `customer`.
async fn write(app: &TestApp, customer: &str, n: usize) {
    match n % 3 {
        0 => {
            app.post(
                &format!("/v1/customers/{customer}"),
                &format!("metadata[n]={n}"),
            )
            .await
            .ok();
        }
        1 => {
            app.post(
                &format!("/v1/customers/{customer}/balance_transactions"),
                "amount=-100&currency=usd",
            )
            .await
            .ok();
        }
        _ => {
            app.post("/v1/billing/credit_grants", &usd_grant_body(customer, 100))
                .await
                .ok();
        }
    }
}

/// A watcher that drops its stream at random points and resumes after the last event it
/// received, until it has received `last` (known once the writers are done).
async fn resuming_watcher(
    app: Arc<TestApp>,
    start: Resume,
    mut last: tokio::sync::watch::Receiver<Option<String>>,
    first_events: Option<tokio::sync::oneshot::Sender<String>>,
) -> (Vec<proto::Event>, usize) {
    let mut received: Vec<proto::Event> = Vec::new();
    let mut reconnects = 0;
    let mut first_events = first_events;
    let mut resume = start;
    loop {
        let mut stream = watch(&app, resume.clone()).await;
        let budget = rand::rng().random_range(1..40);
        let mut taken = 0;
        while taken < budget {
            let message = tokio::select! {
                message = stream.message() => message.unwrap().unwrap(),
                // Nothing for a while: check whether everything arrived. A watcher that has
                // nothing yet keeps its "from now" stream (reopening it would move "now").
                _ = tokio::time::sleep(Duration::from_millis(300)) => {
                    if received.is_empty() { continue } else { break }
                }
            };
            taken += 1;
            received.push(message.event.unwrap());
            if received.len() == 5
                && let Some(sender) = first_events.take()
            {
                let _ = sender.send(received[4].id.clone());
            }
        }
        let done = last.borrow_and_update().clone();
        if let (Some(done), Some(got)) = (done, received.last())
            && *got.id == done
        {
            return (received, reconnects);
        }
        resume = after(&received.last().unwrap().id);
        reconnects += 1;
        drop(stream);
    }
}

on_every_backend! {
    async fn concurrent_writers_and_resuming_watchers_see_every_event_once_in_order(app) {
        let started = Instant::now();
        let app = Arc::new(app);
        let (last_tx, last_rx) = tokio::sync::watch::channel(None::<String>);
        let (fifth_tx, fifth_rx) = tokio::sync::oneshot::channel();
        // The first watcher starts before anything is written: it must see all of it.
        let first = tokio::spawn(resuming_watcher(app.clone(), now(), last_rx.clone(), Some(fifth_tx)));
        tokio::time::sleep(Duration::from_millis(300)).await;

        let mut customers = Vec::new();
        for i in 0..10 {
            customers.push(app.create_customer(&format!("name=c{i}")).await);
        }
        let customers = Arc::new(customers);
        let mut writers = tokio::task::JoinSet::new();
        for task in 0..8 {
            let (app, customers) = (app.clone(), customers.clone());
            writers.spawn(async move {
                for n in 0..25 {
                    let customer = &customers[(task * 25 + n) % customers.len()];
                    write(&app, customer, task + n).await;
                }
            });
        }
        // The second starts mid-way, after the first watcher's fifth event.
        let fifth = fifth_rx.await.unwrap();
        let second = tokio::spawn(resuming_watcher(app.clone(), after(&fifth), last_rx, None));
        while let Some(result) = writers.join_next().await {
            result.unwrap();
        }
        let in_db = stream_in_db(&app).await;
        assert!(in_db.len() >= 210, "{} events", in_db.len());
        last_tx.send(Some(in_db.last().unwrap().id.clone())).unwrap();

        let (first, first_reconnects) = first.await.unwrap();
        let (second, second_reconnects) = second.await.unwrap();
        assert_eq!(ids(&first), db_ids(&in_db), "the first watcher saw exactly the stream");
        let from = in_db.iter().position(|e| e.id == fifth).unwrap() + 1;
        assert_eq!(ids(&second), db_ids(&in_db[from..]), "the second watcher saw exactly the stream after its resume point");
        for list in [&first, &second] {
            let unique: HashSet<&str> = list.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(unique.len(), list.len(), "no duplicates");
            assert!(list.windows(2).all(|w| w[0].sequence < w[1].sequence), "increasing sequences");
        }
        // Each customer's events in the order its changes committed: the order in which they
        // were inserted (a customer's writes are serialized, so for one customer insert order
        // is commit order), which is what the stream gave.
        assert_customer_order_is_insert_order(&app, &first).await;
        assert!(first_reconnects >= 3 && second_reconnects >= 3, "reconnects: {first_reconnects}, {second_reconnects}");
        eprintln!(
            "gap-freedom ({:?}): {} events, watchers reconnected {first_reconnects} and {second_reconnects} times, {:?}",
            app.backend, in_db.len(), started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(40));
    }

    async fn from_now_skips_history_and_filters_select_types_and_customers(app) {
        let old = app.create_customer("name=before").await;
        let mut all = watch(&app, now()).await;
        let mut customer_only = watch_as(&app, &app.key, now(), &[], Some(&old)).await.unwrap();
        let mut customers_group = watch_as(&app, &app.key, now(), &["customer.*"], None).await.unwrap();
        let mut grants_only = watch_as(&app, &app.key, now(), &["billing.credit_grant.created"], None).await.unwrap();
        assert_quiet(&mut all).await;

        let new = app.create_customer("name=after").await;
        app.post(&format!("/v1/customers/{old}"), "name=renamed").await.ok();
        app.post("/v1/billing/credit_grants", &usd_grant_body(&new, 500)).await.ok();
        let in_db = stream_in_db(&app).await;
        let fresh: Vec<&Event> = in_db.iter().skip(1).collect();
        assert_eq!(in_db[0].customer_id.as_deref(), Some(old.as_str()), "history: the first customer's creation");

        let got = take(&mut all, fresh.len()).await;
        assert_eq!(ids(&got), fresh.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
        assert_eq!(got[0].r#type, "customer.created");
        assert_eq!(got[0].object, "event");
        assert_eq!(got[0].customer.as_deref(), Some(new.as_str()));
        let data: serde_json::Value = serde_json::from_str(&got[0].data_json).unwrap();
        assert_eq!(data["object"]["id"], new.as_str());
        assert!(got.iter().all(|e| e.sequence > 0));

        let mine = take(&mut customer_only, 1).await;
        assert_eq!(mine[0].r#type, "customer.updated");
        assert_eq!(mine[0].customer.as_deref(), Some(old.as_str()));
        assert_quiet(&mut customer_only).await;

        let expected: Vec<String> = fresh.iter().filter(|e| e.kind.starts_with("customer.")).map(|e| e.id.clone()).collect();
        assert_eq!(ids(&take(&mut customers_group, expected.len()).await), expected);
        assert_quiet(&mut customers_group).await;

        let grants = take(&mut grants_only, 1).await;
        assert_eq!(grants[0].r#type, "billing.credit_grant.created");
        assert_quiet(&mut grants_only).await;

        // Unknown types are refused.
        let refused = watch_as(&app, &app.key, now(), &["charge.succeeded"], None).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }

    async fn another_account_sees_nothing_and_resume_errors_are_precise(app) {
        let other_key = app.new_key(false, false).await;
        let mut theirs = watch_as(&app, &other_key, now(), &[], None).await.unwrap();
        let mut mine = watch(&app, now()).await;
        let customer = app.create_customer("name=mine").await;
        let event = next(&mut mine).await;
        assert_eq!(event.customer.as_deref(), Some(customer.as_str()));
        assert_quiet(&mut theirs).await;
        // Another account cannot resume from my event either: it does not exist for it.
        let status = watch_as(&app, &other_key, after(&event.id), &[], None).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

        let unknown = new_id(IdKind::Event, false);
        let status = watch_as(&app, &app.key, after(&unknown), &[], None).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        assert!(status.message().contains(&unknown), "{}", status.message());

        let forty_days_ago = (app.now() - 40 * 86_400) as u64 * 1000;
        let ancient = new_id_at(IdKind::Event, false, forty_days_ago);
        let status = watch_as(&app, &app.key, after(&ancient), &[], None).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
        assert!(status.message().contains("older than the event retention window"), "{}", status.message());

        let status = watch_as(&app, &app.key, after(""), &[], None).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let status = watch_as(&app, "sk_test_nope", now(), &[], None).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

        // An event still stored but past retention cannot be resumed from either: events after
        // it may already be pruned.
        app.advance(31 * 86_400);
        let status = watch_as(&app, &app.key, after(&event.id), &[], None).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");

        // Dropped streams release their producers.
        drop((theirs, mine));
        let deadline = Instant::now() + Duration::from_secs(5);
        while app.services.event_streams.open_streams() > 0 {
            assert!(Instant::now() < deadline, "streams still open: {}", app.services.event_streams.open_streams());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn a_client_that_never_reads_holds_a_bounded_number_of_events(app) {
        let ctx = app.context().await;
        let mut stream = app.services.watch_events(&ctx, WatchFrom::Now, WatchFilter::default()).await.unwrap();
        // 600 events in one transaction, published at once.
        let events: Vec<Event> = (0..600).map(|_| raw_event(&ctx.tenant, None, app.now())).collect();
        let tx = app.services.db.begin().await.unwrap();
        creditd::store::events::insert(&tx, &ctx.tenant, &events).await.unwrap();
        creditd::store::commit(tx).await.unwrap();
        app.services.events.run_once(&app.services.db).await.unwrap();

        // The producer fills the channel and parks: what it holds stops growing, well below 600.
        let mut held = 0;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now_held = app.services.event_streams.held_events();
            if now_held == held && held > 0 {
                break;
            }
            held = now_held;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let parked = app.services.event_streams.held_events();
        assert!(parked > 0 && parked <= MAX_HELD_PER_STREAM, "held {parked}");
        assert_eq!(parked, held, "the producer is parked");

        let mut received = Vec::new();
        while received.len() < events.len() {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
            received.push(event.id);
        }
        assert_eq!(received, db_ids(&events));
        assert_eq!(app.services.event_streams.held_events(), 0);
        eprintln!("back-pressure ({:?}): a stream that was not read held {parked} of 600 events (bound {MAX_HELD_PER_STREAM})", app.backend);
    }

    async fn commit_to_watcher_latency_on_the_same_server(app) {
        let [response_p50, response_max, send_p50, send_max] = measure_latency(&app, &app, 50).await;
        eprintln!(
            "latency ({:?}, same server, 50 writes): from response p50 {response_p50:.1} ms, max {response_max:.1} ms; from send p50 {send_p50:.1} ms, max {send_max:.1} ms",
            app.backend
        );
        assert!(send_p50 < 500.0, "{send_p50} ms");
    }

    async fn streams_per_process_are_capped(app) {
        let ctx = app.context().await;
        let capped = creditd::service::Services::with_clock(app.services.db.clone(), app.clock.clone())
            .with_max_event_streams(2);
        let first = capped.watch_events(&ctx, WatchFrom::Now, WatchFilter::default()).await.unwrap();
        let _second = capped.watch_events(&ctx, WatchFrom::Now, WatchFilter::default()).await.unwrap();
        let Err(refused) = capped.watch_events(&ctx, WatchFrom::Now, WatchFilter::default()).await else {
            panic!("a third stream was opened");
        };
        assert_eq!(refused.kind, creditd::ErrorKind::RateLimited);
        assert_eq!(capped.event_streams.open_streams(), 2);
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(5);
        while capped.event_streams.open_streams() > 1 {
            assert!(Instant::now() < deadline, "a dropped stream kept its slot");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        capped.watch_events(&ctx, WatchFrom::Now, WatchFilter::default()).await.unwrap();
    }

    async fn a_watcher_resumes_exactly_on_a_restarted_server(app) {
        let first_server = app.spawn_replica().await;
        let mut stream = watch(&first_server, now()).await;
        let customer = app.create_customer("name=restart").await;
        for n in 0..4 {
            write(&app, &customer, n).await;
        }
        let before = take(&mut stream, 3).await;
        // The server stops: the stream ends with UNAVAILABLE instead of hanging.
        first_server.services.event_streams.close();
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("the stream ends at shutdown") {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break status,
            }
        };
        assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
        drop(stream);
        drop(first_server);

        for n in 4..8 {
            write(&app, &customer, n).await;
        }
        let restarted = app.spawn_replica().await;
        let mut resumed = watch(&restarted, after(&before.last().unwrap().id)).await;
        let in_db = stream_in_db(&app).await;
        let rest = take(&mut resumed, in_db.len() - before.len()).await;
        let mut all = before.clone();
        all.extend(rest);
        assert_eq!(ids(&all), db_ids(&in_db));
        assert_quiet(&mut resumed).await;
    }
}

async fn assert_customer_order_is_insert_order(app: &TestApp, received: &[proto::Event]) {
    use creditd::store::entities::event;
    use sea_orm::{EntityTrait, QueryOrder};
    let rows = event::Entity::find()
        .order_by_asc(event::Column::Position)
        .all(app.services.db.reader())
        .await
        .unwrap();
    let mut customers: std::collections::HashMap<String, Vec<String>> = Default::default();
    for row in rows {
        if let Some(customer) = row.customer_id {
            customers.entry(customer).or_default().push(row.id);
        }
    }
    for (customer, inserted) in customers {
        let streamed: Vec<String> = received
            .iter()
            .filter(|e| e.customer.as_deref() == Some(customer.as_str()))
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(streamed, inserted, "customer {customer}");
    }
}

fn postgres_or_skip() -> bool {
    if common::postgres_configured() {
        return true;
    }
    eprintln!(
        "skipped on PostgreSQL: {} is not set (SQLite only)",
        common::POSTGRES_URL_ENV
    );
    false
}

/// PostgreSQL only: a transaction that inserted its event first but commits last gets the
/// higher sequence, and a watcher that already passed the other event still receives it.
/// (SQLite has one writer: the later write would wait for the first transaction.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_late_commit_of_an_early_insert_is_not_skipped() {
    if !postgres_or_skip() {
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let tenant = tenant(&app).await;
    let mut stream = watch(&app, now()).await;

    let early = raw_event(&tenant, None, app.now());
    let tx = app.services.db.begin().await.unwrap();
    creditd::store::events::insert(&tx, &tenant, std::slice::from_ref(&early))
        .await
        .unwrap();
    // Meanwhile a normal write inserts after it and commits first.
    let customer = app.create_customer("name=overtakes").await;
    let overtaking = next(&mut stream).await;
    assert_eq!(overtaking.customer.as_deref(), Some(customer.as_str()));
    assert_quiet(&mut stream).await;

    creditd::store::commit(tx).await.unwrap();
    let late = next(&mut stream).await;
    assert_eq!(late.id, early.id);
    assert!(late.sequence > overtaking.sequence);

    use creditd::store::entities::event;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let mut positions = Vec::new();
    for id in [&early.id, &overtaking.id] {
        let row = event::Entity::find()
            .filter(event::Column::Id.eq(id.as_str()))
            .one(app.services.db.reader())
            .await
            .unwrap()
            .unwrap();
        positions.push(row.position);
    }
    assert!(
        positions[0] < positions[1],
        "the late event was inserted first"
    );
    assert_eq!(ids(&[overtaking, late]), db_ids(&stream_in_db(&app).await));
}

/// PostgreSQL only: writes on one replica reach a watcher on another, all of them, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_watcher_on_another_replica_receives_every_event_in_order() {
    if !postgres_or_skip() {
        return;
    }
    let writer = Arc::new(TestApp::spawn(Backend::Postgres).await);
    let reader = writer.spawn_replica().await;
    let mut stream = watch(&reader, now()).await;
    let customers = [
        writer.create_customer("name=r1").await,
        writer.create_customer("name=r2").await,
    ];
    let mut writes = tokio::task::JoinSet::new();
    for task in 0..4 {
        let (writer, customers) = (writer.clone(), customers.clone());
        writes.spawn(async move {
            for n in 0..10 {
                write(&writer, &customers[(task + n) % 2], task * 10 + n).await;
            }
        });
    }
    while let Some(result) = writes.join_next().await {
        result.unwrap();
    }
    let in_db = stream_in_db(&writer).await;
    let got = take(&mut stream, in_db.len()).await;
    assert_eq!(ids(&got), db_ids(&in_db));
    assert_quiet(&mut stream).await;
}

/// `creditd listen` (the real binary) forwards each event to a local receiver, signed as
/// Stripe signs webhooks; the receiver checks signatures as Stripe's SDKs do. It retries a
/// delivery the receiver failed, and when its server restarts it reconnects and resumes after
/// the last event it handled: every event is accepted exactly once. The backend does not
/// matter to this client, so SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_forwards_every_event_signed_like_a_stripe_webhook_across_a_restart() {
    use axum::routing::post;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let started = Instant::now();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (deliveries_tx, mut deliveries) =
        tokio::sync::mpsc::unbounded_channel::<(Option<String>, String)>();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let receiver = axum::Router::new().route(
        "/webhook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let deliveries = deliveries_tx.clone();
            let counted = counted.clone();
            async move {
                assert_eq!(
                    headers.get("content-type").unwrap().to_str().unwrap(),
                    "application/json"
                );
                // The very first delivery fails once: listen must retry it.
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                let signature = headers
                    .get("stripe-signature")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let _ = deliveries.send((signature, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    // listen talks to its own server on the app's database, which restarts on the same port.
    let server = RunningServer::start(&app, "127.0.0.1:0".parse().unwrap()).await;
    let grpc_addr = server.grpc_addr;
    let mut listen = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_creditd"))
            .args([
                "listen",
                "--forward-to",
                &format!("http://{receiver_addr}/webhook"),
                "--grpc-url",
                &format!("http://{grpc_addr}"),
                "--events",
                "customer.*,billing.*",
            ])
            .env("CREDITD_API_KEY", &app.key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = listen.0.stdout.take().unwrap();
    let (secret_tx, secret_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut secret_tx = Some(secret_tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(secret) = line.split_whitespace().find(|w| w.starts_with("whsec_"))
                && let Some(sender) = secret_tx.take()
            {
                let _ = sender.send(secret.to_string());
            }
        }
    });
    let secret = secret_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.services.event_streams.open_streams() == 0 {
        assert!(Instant::now() < deadline, "listen never opened its stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let customer = app
        .create_customer("name=webhook&email=a%40example.com")
        .await;
    write(&app, &customer, 0).await;
    write(&app, &customer, 1).await;
    let mut received = Vec::new();
    let before_restart = stream_in_db(&app).await.len();
    receive_verified(&mut deliveries, &secret, &mut received, before_restart).await;

    // The server stops (its streams end with UNAVAILABLE), changes go on meanwhile, and a new
    // server comes up on the same address.
    server.stop().await;
    write(&app, &customer, 2).await;
    write(&app, &customer, 3).await;
    let restarted = RunningServer::start(&app, grpc_addr).await;
    let in_db = stream_in_db(&app).await;
    assert!(in_db.len() > before_restart);
    receive_verified(&mut deliveries, &secret, &mut received, in_db.len()).await;

    let received_ids: Vec<String> = received
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(received_ids, db_ids(&in_db), "every event once, in order");
    assert_eq!(received[0]["type"], "customer.created");
    assert_eq!(received[0]["data"]["object"]["email"], "a@example.com");
    // Nothing more arrives (no duplicate after the resume).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), deliveries.recv())
            .await
            .is_err()
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        in_db.len() + 1,
        "one retry"
    );
    eprintln!(
        "listen: {} events delivered across a server restart in {:?}",
        in_db.len(),
        started.elapsed()
    );
    drop(listen);
    restarted.stop().await;
}

/// Receives deliveries until `received` holds `count`, checking each one's signature and shape.
async fn receive_verified(
    deliveries: &mut tokio::sync::mpsc::UnboundedReceiver<(Option<String>, String)>,
    secret: &str,
    received: &mut Vec<serde_json::Value>,
    count: usize,
) {
    while received.len() < count {
        let (signature, body) = tokio::time::timeout(Duration::from_secs(20), deliveries.recv())
            .await
            .expect("a delivery within 20 s")
            .unwrap();
        let signature = signature.expect("a Stripe-Signature header");
        assert!(
            stripe_signature_is_valid(secret, &signature, &body),
            "bad signature {signature}"
        );
        assert!(!stripe_signature_is_valid("whsec_other", &signature, &body));
        let event: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(event["object"], "event");
        assert!(event["data"]["object"].is_object(), "{event}");
        assert!(event["request"].is_object(), "{event}");
        received.push(event);
    }
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server on `app`'s database at a chosen address (port 0 = any), stopped gracefully.
struct RunningServer {
    grpc_addr: std::net::SocketAddr,
    services: creditd::service::Services,
    shutdown: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    async fn start(app: &TestApp, grpc_addr: std::net::SocketAddr) -> RunningServer {
        let mut config = creditd::config::ServeConfig::ephemeral(app.database.url.clone());
        config.grpc_addr = grpc_addr;
        let db = creditd::store::Db::connect(&config.database.options())
            .await
            .unwrap();
        let services = creditd::service::Services::with_clock(db, app.clock.clone());
        let server = creditd::server::Server::bind(&config, services.clone())
            .await
            .unwrap();
        let grpc_addr = server.grpc_addr();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .run_until(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        RunningServer {
            grpc_addr,
            services,
            shutdown,
            handle,
        }
    }

    /// Stops the server; its open streams end at once, so draining takes far less than the
    /// grace period (5 s) a stream that never ends would hold it for.
    async fn stop(self) {
        let _ = self.shutdown.send(());
        tokio::time::timeout(Duration::from_secs(3), self.handle)
            .await
            .expect("the server drains quickly: its streams end at shutdown")
            .unwrap();
    }
}

/// Stripe's check: `t` within 300 s of now, and any `v1` equal to the hex HMAC-SHA256 of
/// `"{t}.{body}"` keyed with the whole `whsec_` secret. Written here from the definition, not
/// with creditd's own helper.
fn stripe_signature_is_valid(secret: &str, header: &str, body: &str) -> bool {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => candidates.push(value.to_string()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - timestamp).abs() > 300 {
        return false;
    }
    let expected = hex::encode(hmac(
        secret.as_bytes(),
        format!("{timestamp}.{body}").as_bytes(),
    ));
    candidates.contains(&expected)
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

/// Commit-to-watcher latency, bracketed: from each write's response (after its commit: a lower
/// bound) and from its send (an upper bound) to its event reaching a watcher, for `writes`
/// sequential customer creations on `writer` watched on `watcher`. Returns (p50, max) of both,
/// in milliseconds. Debug build on a shared machine: indicative figures, loosely asserted.
async fn measure_latency(writer: &TestApp, watcher: &TestApp, writes: usize) -> [f64; 4] {
    let mut stream = watch(watcher, now()).await;
    let arrivals = tokio::spawn(async move {
        let mut arrivals = std::collections::HashMap::new();
        while arrivals.len() < writes {
            let event = next(&mut stream).await;
            arrivals.insert(event.customer.unwrap(), Instant::now());
        }
        arrivals
    });
    let mut calls = Vec::new();
    let mut customers = writer.customers().await;
    for n in 0..writes {
        let sent = Instant::now();
        let customer = customers
            .create_customer(writer.grpc(proto::CreateCustomerRequest {
                name: Some(format!("latency {n}")),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        calls.push((customer.id, sent, Instant::now()));
    }
    let arrivals = arrivals.await.unwrap();
    let mut from_response = Vec::new();
    let mut from_send = Vec::new();
    for (customer, sent, answered) in calls {
        let arrived = arrivals[&customer];
        from_send.push(arrived.duration_since(sent).as_secs_f64() * 1000.0);
        from_response.push(arrived.saturating_duration_since(answered).as_secs_f64() * 1000.0);
    }
    let stats = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        (values[values.len() / 2], values[values.len() - 1])
    };
    let (response_p50, response_max) = stats(from_response);
    let (send_p50, send_max) = stats(from_send);
    [response_p50, response_max, send_p50, send_max]
}

/// A stream lives past the request timeout, which bounds calls until their response starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_the_request_timeout() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, |config| config.request_timeout_seconds = 1).await;
    let mut stream = watch(&app, now()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let customer = app.create_customer("name=late").await;
    assert_eq!(
        next(&mut stream).await.customer.as_deref(),
        Some(customer.as_str())
    );
}

/// PostgreSQL only: the same across replicas, bounded by the poll interval (50 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_to_watcher_latency_across_replicas() {
    if !postgres_or_skip() {
        return;
    }
    let writer = TestApp::spawn(Backend::Postgres).await;
    let reader = writer.spawn_replica().await;
    let [response_p50, response_max, send_p50, send_max] =
        measure_latency(&writer, &reader, 50).await;
    eprintln!(
        "latency (Postgres, across replicas, 50 writes): from response p50 {response_p50:.1} ms, max {response_max:.1} ms; from send p50 {send_p50:.1} ms, max {send_max:.1} ms"
    );
    assert!(send_p50 < 1000.0, "{send_p50} ms");
}

/// PostgreSQL only: resuming after an event that committed but is not numbered yet waits for
/// the sequencer, then continues right after it. The test holds the sequencer's lock (by
/// running one in an open transaction) so the event stays unnumbered for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_resuming_after_an_unnumbered_event_waits_for_its_number() {
    if !postgres_or_skip() {
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let ctx = app.context().await;
    let sequencer = app.services.db.begin().await.unwrap();
    creditd::store::events::assign_sequences(&sequencer, 1000)
        .await
        .unwrap();

    let resume_point = raw_event(&ctx.tenant, None, app.now());
    let tx = app.services.db.begin().await.unwrap();
    creditd::store::events::insert(&tx, &ctx.tenant, std::slice::from_ref(&resume_point))
        .await
        .unwrap();
    creditd::store::commit(tx).await.unwrap();
    let stored =
        creditd::store::events::find(app.services.db.reader(), &ctx.tenant, &resume_point.id)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        stored.sequence, None,
        "not numbered while the test holds the sequencer"
    );

    let services = app.services.clone();
    let (resume_ctx, id) = (ctx.clone(), resume_point.id.clone());
    let opening = tokio::spawn(async move {
        services
            .watch_events(
                &resume_ctx,
                WatchFrom::AfterEvent(id),
                WatchFilter::default(),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!opening.is_finished(), "the resume waits for the number");

    creditd::store::commit(sequencer).await.unwrap();
    let mut stream = tokio::time::timeout(Duration::from_secs(5), opening)
        .await
        .expect("opens once the event is numbered")
        .unwrap()
        .unwrap();
    let customer = app.create_customer("name=after-the-resume-point").await;
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.customer_id.as_deref(), Some(customer.as_str()));
}
