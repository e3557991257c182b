//! Credit holds (`creditd.v1.CreditHoldService`): a hold reserves in burn-down order over the
//! grants' available remainders; the summary's available balance subtracts live holds (the
//! ledger balance does not); capture writes `credits_applied` entries exactly like
//! ApplyCredits and releases the rest; release frees everything; an expired hold is released
//! once by the sweeper; a grant voided while held takes the held part with it (`lapsed_amount`);
//! every step emits its `creditd.credit_hold.*` event; and under concurrency (one server, and
//! two replicas on one PostgreSQL) live holds plus applied credits never exceed the grants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::TestApp;
use common::credits::{
    BalanceClient, GrantClient, METERED, METERED_PRICE, applicability, balance_in,
    grpc_ledger_and_available, grpc_summary, invoice_id, metered_filter, metered_grant,
    metered_line, summary,
};
use creditd::grpc::proto;
use serde_json::Value;
use tonic::transport::Channel;

type HoldClient = proto::credit_hold_service_client::CreditHoldServiceClient<Channel>;

const USD: &str = "usd";

async fn holds(app: &TestApp) -> HoldClient {
    HoldClient::new(app.channel().await)
}

/// A metered USD grant of `value` with `priority` (and an expiry when given); its ID.
async fn grant(
    app: &TestApp,
    customer: &str,
    value: i64,
    priority: i64,
    expires_at: Option<i64>,
) -> String {
    GrantClient::new(app.channel().await)
        .create_credit_grant(app.grpc(proto::CreateCreditGrantRequest {
            priority: Some(priority),
            expires_at,
            ..metered_grant(customer, USD, value)
        }))
        .await
        .expect("create grant")
        .into_inner()
        .id
}

fn hold_request(customer: &str, amount: i64) -> proto::CreateCreditHoldRequest {
    proto::CreateCreditHoldRequest {
        customer: customer.to_string(),
        currency: USD.to_string(),
        amount,
        price_type: Some("metered".to_string()),
        price: Some(METERED_PRICE.to_string()),
        ttl_seconds: None,
        expires_at: None,
    }
}

async fn hold(app: &TestApp, customer: &str, amount: i64) -> proto::CreditHold {
    holds(app)
        .await
        .create_credit_hold(app.grpc(hold_request(customer, amount)))
        .await
        .expect("create hold")
        .into_inner()
}

fn capture_request(
    id: &str,
    invoice: &str,
    amount: Option<i64>,
) -> proto::CaptureCreditHoldRequest {
    proto::CaptureCreditHoldRequest {
        id: id.to_string(),
        invoice: invoice.to_string(),
        invoice_line_item: "il_1".to_string(),
        amount,
    }
}

fn reserved_on(hold: &proto::CreditHold) -> Vec<(String, i64)> {
    hold.reservations
        .iter()
        .map(|r| (r.credit_grant.clone(), r.amount))
        .collect()
}

async fn metered_balances(app: &TestApp, customer: &str) -> (i64, i64) {
    let mut balance = BalanceClient::new(app.channel().await);
    grpc_ledger_and_available(
        &grpc_summary(&mut balance, app, customer, metered_filter()).await,
        USD,
    )
}

/// FAILED_PRECONDITION with a message, for the reason `reason` (the error's code).
#[track_caller]
fn assert_failed_precondition<T: std::fmt::Debug>(result: Result<T, tonic::Status>, reason: &str) {
    let status = result.expect_err(reason);
    assert_eq!(
        status.code(),
        tonic::Code::FailedPrecondition,
        "{reason}: {status:?}"
    );
    assert!(!status.message().is_empty(), "{status:?}");
}

/// The REST events of `kind`, newest first.
async fn events_of(app: &TestApp, kind: &str) -> Vec<Value> {
    let list = app
        .get(&format!("/v1/events?limit=100&type={kind}"))
        .await
        .ok();
    list["data"].as_array().unwrap().clone()
}

/// Sum of the `credits_applied` entries of a customer's ledger.
async fn applied_total(app: &TestApp, customer: &str) -> i64 {
    let mut balance = BalanceClient::new(app.channel().await);
    let entries = common::credits::grpc_transactions(&mut balance, app, customer, None).await;
    entries
        .iter()
        .filter_map(|entry| entry.debit.as_ref())
        .filter(|debit| debit.r#type == "credits_applied")
        .map(|debit| {
            debit
                .amount
                .as_ref()
                .unwrap()
                .monetary
                .as_ref()
                .unwrap()
                .value
        })
        .sum()
}

/// Every hold of the customer (all pages are one: fewer than 100 in these tests).
async fn all_holds(app: &TestApp, customer: &str) -> Vec<proto::CreditHold> {
    holds(app)
        .await
        .list_credit_holds(app.grpc(proto::ListCreditHoldsRequest {
            customer: Some(customer.to_string()),
            status: None,
            page: Some(proto::PageRequest {
                limit: Some(100),
                ..Default::default()
            }),
        }))
        .await
        .expect("list holds")
        .into_inner()
        .data
}

/// Many holds, captures, releases and ApplyCredits racing on one customer over `apps` (one
/// server, or replicas), with REST summary reads alongside: live holds plus applied credits
/// never exceed what was granted.
async fn race(apps: &[&TestApp], customer: &str, granted: i64) {
    let mut tasks = Vec::new();
    for task in 0..40usize {
        let app = apps[task % apps.len()];
        let mut client = holds(app).await;
        let mut balances = BalanceClient::new(app.channel().await);
        let metadata = app.grpc(()).metadata().clone();
        let customer = customer.to_string();
        let small = task as i64 % 7;
        tasks.push(tokio::spawn(async move {
            fn with<T>(metadata: &tonic::metadata::MetadataMap, message: T) -> tonic::Request<T> {
                let mut request = tonic::Request::new(message);
                *request.metadata_mut() = metadata.clone();
                request
            }
            match task % 4 {
                0 | 1 => {
                    let Ok(created) = client
                        .create_credit_hold(with(&metadata, hold_request(&customer, 23 + small)))
                        .await
                    else {
                        return;
                    };
                    let id = created.into_inner().id;
                    if task % 8 == 0 {
                        let _ = client
                            .release_credit_hold(with(
                                &metadata,
                                proto::ReleaseCreditHoldRequest { id },
                            ))
                            .await;
                    } else {
                        let line = capture_request(&id, &invoice_id("cap"), Some(11 + small));
                        let _ = client.capture_credit_hold(with(&metadata, line)).await;
                    }
                }
                2 => {
                    let _ = client
                        .create_credit_hold(with(&metadata, hold_request(&customer, 23 + small)))
                        .await;
                }
                _ => {
                    let line =
                        metered_line(&customer, USD, &invoice_id("race"), "il_1", 17 + small);
                    let _ = balances.apply_credits(with(&metadata, line)).await;
                }
            }
        }));
    }
    // Meanwhile the REST shim reads the summary: never more available than on the ledger, never
    // more on the ledger than was granted, never below zero.
    let done = std::sync::atomic::AtomicBool::new(false);
    let work = async {
        for task in tasks {
            task.await.expect("task");
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let reads = async {
        let mut reads = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let app = apps[reads % apps.len()];
            let (available, ledger) = balance_in(&summary(app, customer, METERED).await, USD);
            assert!(
                0 <= available && available <= ledger && ledger <= granted,
                "REST mid-race: available {available}, ledger {ledger}, granted {granted}"
            );
            reads += 1;
        }
        reads
    };
    let ((), reads) = tokio::join!(work, reads);
    assert!(reads > 0, "the REST reads ran during the race");
    let app = apps[0];
    let live: i64 = all_holds(app, customer)
        .await
        .iter()
        .filter(|hold| hold.status == "active")
        .map(|hold| hold.reserved)
        .sum();
    let applied = applied_total(app, customer).await;
    assert!(
        live + applied <= granted,
        "live {live} + applied {applied} > {granted}"
    );
    assert!(
        applied > 0 && live > 0,
        "the race did something: live {live}, applied {applied}"
    );
    let (ledger, available) = metered_balances(app, customer).await;
    assert_eq!(ledger, granted - applied);
    assert_eq!(available, ledger - live);
    app.assert_audit_clean().await;
}

on_every_backend! {
    async fn a_hold_reserves_in_burn_down_order_and_lowers_only_the_available_balance(app) {
        let customer = app.create_customer("name=Ada").await;
        let late = grant(&app, &customer, 100, 50, None).await;
        let first = grant(&app, &customer, 100, 10, None).await;
        // Ranks first by priority but lapses (unswept) before the hold is made.
        let lapsing = grant(&app, &customer, 100, 0, Some(app.now() + 5)).await;
        // Ranks first but covers another price only.
        let other_price = GrantClient::new(app.channel().await)
            .create_credit_grant(app.grpc(proto::CreateCreditGrantRequest {
                priority: Some(0),
                applicability_config: applicability(proto::CreditScope {
                    price_type: None,
                    prices: vec![proto::ApplicablePrice { id: "price_other".into() }],
                }),
                ..metered_grant(&customer, USD, 100)
            }))
            .await
            .unwrap()
            .into_inner()
            .id;
        app.advance(10);

        let created = hold(&app, &customer, 150).await;
        assert!(created.id.starts_with("credhold_test_"), "{}", created.id);
        assert_eq!(created.status, "active");
        assert_eq!(created.reserved, 150);
        assert_eq!(reserved_on(&created), [(first.clone(), 100), (late.clone(), 50)]);
        assert!(!reserved_on(&created).iter().any(|(g, _)| *g == lapsing || *g == other_price));
        assert!(created.expires_at > app.now());

        // Ledger: the two metered grants plus the lapsed-but-unswept one; available: minus
        // the lapsed one and the hold.
        let (ledger, available) = metered_balances(&app, &customer).await;
        assert_eq!((ledger, available), (300, 50));

        // ApplyCredits cannot spend held credits; the explanation says the first is held.
        let applied = BalanceClient::new(app.channel().await)
            .apply_credits(app.grpc(metered_line(&customer, USD, &invoice_id("apply"), "il_1", 100)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(applied.applied, 50);
        let explanation = applied.explanation.unwrap();
        assert_eq!(explanation.draws[0].credit_grant, late);
        assert!(explanation.skipped.iter().any(|s| s.credit_grant == first && s.reason == "held"), "{explanation:?}");

        // Nothing is left to hold: all or nothing, refused precisely.
        let refused = holds(&app).await.create_credit_hold(app.grpc(hold_request(&customer, 1))).await;
        let status = refused.expect_err("insufficient");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("Insufficient credits"), "{status:?}");
        app.assert_audit_clean().await;
    }

    async fn a_partial_capture_applies_like_apply_credits_and_releases_the_rest(app) {
        let customer = app.create_customer("name=Ada").await;
        let granted = grant(&app, &customer, 100, 50, None).await;
        let created = hold(&app, &customer, 80).await;
        let invoice = invoice_id("capture");
        let mut client = holds(&app).await;
        let captured = client
            .capture_credit_hold(app.grpc(capture_request(&created.id, &invoice, Some(30))))
            .await
            .unwrap()
            .into_inner();
        let captured_hold = captured.credit_hold.clone().unwrap();
        assert_eq!(captured_hold.status, "captured");
        assert_eq!((captured_hold.captured_amount, captured_hold.reserved), (30, 0));
        assert_eq!(captured_hold.invoice.as_deref(), Some(invoice.as_str()));
        assert_eq!(captured.applied, 30);
        assert_eq!(captured.entries.len(), 1);
        let entry = &captured.entries[0];
        assert_eq!(entry.credit_grant, granted);
        assert_eq!(entry.debit.as_ref().unwrap().r#type, "credits_applied");
        assert_eq!(metered_balances(&app, &customer).await, (70, 70));

        // The line is recorded as applied: ApplyCredits of it answers the capture's result.
        let again = BalanceClient::new(app.channel().await)
            .apply_credits(app.grpc(proto::ApplyCreditsRequest {
                price: Some(METERED_PRICE.into()),
                ..metered_line(&customer, USD, &invoice, "il_1", 30)
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.applied, 30);
        assert_eq!(again.entries[0].id, entry.id);
        let explained = BalanceClient::new(app.channel().await)
            .explain_application(app.grpc(proto::ExplainApplicationRequest {
                customer: customer.clone(),
                invoice: invoice.clone(),
                invoice_line_item: "il_1".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(explained.applied, 30);

        // Ended: capture and release again are refused precisely.
        assert_failed_precondition(
            client.capture_credit_hold(app.grpc(capture_request(&created.id, &invoice_id("x"), None))).await,
            "credit_hold_ended",
        );
        assert_failed_precondition(
            client.release_credit_hold(app.grpc(proto::ReleaseCreditHoldRequest { id: created.id.clone() })).await,
            "credit_hold_ended",
        );
        // More than reserved is refused too.
        let other = hold(&app, &customer, 20).await;
        assert_failed_precondition(
            client.capture_credit_hold(app.grpc(capture_request(&other.id, &invoice_id("y"), Some(21)))).await,
            "amount_too_large",
        );
        // A line already applied cannot take a capture.
        assert_failed_precondition(
            client.capture_credit_hold(app.grpc(capture_request(&other.id, &invoice, Some(5)))).await,
            "invoice_line_already_applied",
        );
        app.assert_audit_clean().await;
    }

    async fn release_frees_everything_and_every_write_is_idempotent_with_a_key(app) {
        let customer = app.create_customer("name=Ada").await;
        grant(&app, &customer, 100, 50, None).await;
        let mut client = holds(&app).await;
        let first = client
            .create_credit_hold(app.grpc_idempotent(hold_request(&customer, 60), "hold-1"))
            .await
            .unwrap()
            .into_inner();
        let replay = client
            .create_credit_hold(app.grpc_idempotent(hold_request(&customer, 60), "hold-1"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first, replay);
        assert_eq!(all_holds(&app, &customer).await.len(), 1);
        assert_eq!(metered_balances(&app, &customer).await, (100, 40));

        let release = || app.grpc_idempotent(proto::ReleaseCreditHoldRequest { id: first.id.clone() }, "release-1");
        let released = client.release_credit_hold(release()).await.unwrap().into_inner();
        assert_eq!((released.status.as_str(), released.reserved), ("released", 0));
        assert!(released.ended_at.is_some());
        assert_eq!(client.release_credit_hold(release()).await.unwrap().into_inner(), released);
        assert_eq!(metered_balances(&app, &customer).await, (100, 100));
        // Without the key, a second release is refused; so is a capture.
        assert_failed_precondition(
            client.release_credit_hold(app.grpc(proto::ReleaseCreditHoldRequest { id: first.id.clone() })).await,
            "credit_hold_ended",
        );
        assert_failed_precondition(
            client.capture_credit_hold(app.grpc(capture_request(&first.id, &invoice_id("r"), None))).await,
            "credit_hold_ended",
        );

        // Capture with a key: replayed, one application.
        let second = hold(&app, &customer, 50).await;
        let invoice = invoice_id("idem");
        let capture = || app.grpc_idempotent(capture_request(&second.id, &invoice, None), "capture-1");
        let captured = client.capture_credit_hold(capture()).await.unwrap().into_inner();
        assert_eq!(captured.applied, 50);
        assert_eq!(client.capture_credit_hold(capture()).await.unwrap().into_inner(), captured);
        assert_eq!(applied_total(&app, &customer).await, 50);
        let fetched = client
            .get_credit_hold(app.grpc(proto::GetCreditHoldRequest { id: second.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(Some(fetched), captured.credit_hold);
        let missing = client.get_credit_hold(app.grpc(proto::GetCreditHoldRequest { id: "credhold_nope".into() })).await;
        assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);
        app.assert_audit_clean().await;
    }

    async fn an_expired_hold_frees_its_credits_and_is_released_once_by_the_sweeper(app) {
        let customer = app.create_customer("name=Ada").await;
        grant(&app, &customer, 100, 50, None).await;
        let mut client = holds(&app).await;
        let created = client
            .create_credit_hold(app.grpc(proto::CreateCreditHoldRequest {
                ttl_seconds: Some(60),
                ..hold_request(&customer, 70)
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.expires_at, created.created + 60);
        // Beyond the configured maximum (7 days by default): refused.
        let too_long = client
            .create_credit_hold(app.grpc(proto::CreateCreditHoldRequest {
                ttl_seconds: Some(8 * 24 * 3600),
                ..hold_request(&customer, 1)
            }))
            .await;
        assert_eq!(too_long.unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(metered_balances(&app, &customer).await, (100, 30));

        app.advance(61);
        // Past its expiry it reserves nothing, even before the sweeper ran, and cannot be captured.
        assert_eq!(metered_balances(&app, &customer).await, (100, 100));
        assert_failed_precondition(
            client.capture_credit_hold(app.grpc(capture_request(&created.id, &invoice_id("late"), None))).await,
            "credit_hold_ended",
        );

        // Two sweeps at once expire it exactly once.
        let (a, b) = tokio::join!(
            app.services.sweep_expired_credit_holds(),
            app.services.sweep_expired_credit_holds()
        );
        assert_eq!(a.unwrap() + b.unwrap(), 1);
        assert_eq!(app.services.sweep_expired_credit_holds().await.unwrap(), 0);
        let expired = client
            .get_credit_hold(app.grpc(proto::GetCreditHoldRequest { id: created.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((expired.status.as_str(), expired.reserved), ("expired", 0));
        let events = events_of(&app, "creditd.credit_hold.expired").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["data"]["object"]["id"], created.id.as_str());
        assert_eq!(events[0]["data"]["object"]["status"], "expired");
        assert_failed_precondition(
            client.release_credit_hold(app.grpc(proto::ReleaseCreditHoldRequest { id: created.id.clone() })).await,
            "credit_hold_ended",
        );
    }

    async fn a_grant_voided_while_held_takes_the_held_part_with_it(app) {
        let customer = app.create_customer("name=Ada").await;
        let first = grant(&app, &customer, 100, 10, None).await;
        let second = grant(&app, &customer, 100, 50, None).await;
        let created = hold(&app, &customer, 150).await;
        assert_eq!(reserved_on(&created), [(first.clone(), 100), (second.clone(), 50)]);

        GrantClient::new(app.channel().await)
            .void_credit_grant(app.grpc(proto::VoidCreditGrantRequest { id: first.clone() }))
            .await
            .unwrap();
        let mut client = holds(&app).await;
        let shrunk = client
            .get_credit_hold(app.grpc(proto::GetCreditHoldRequest { id: created.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((shrunk.status.as_str(), shrunk.reserved, shrunk.lapsed_amount), ("active", 50, 100));
        assert_eq!(reserved_on(&shrunk), [(second.clone(), 50)]);
        assert_eq!(metered_balances(&app, &customer).await, (100, 50));

        // A grant that expires while held: the same, recorded by the sweeper.
        let third = grant(&app, &customer, 40, 0, Some(app.now() + 30)).await;
        let other = hold(&app, &customer, 60).await;
        assert_eq!(reserved_on(&other), [(third.clone(), 40), (second.clone(), 20)]);
        app.advance(31);
        assert_eq!(metered_balances(&app, &customer).await, (140, 30));
        assert_eq!(common::credits::sweep(&app).await, 1);
        let other = client
            .get_credit_hold(app.grpc(proto::GetCreditHoldRequest { id: other.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((other.reserved, other.lapsed_amount), (20, 40));

        // Capture takes what is left; more than that is refused.
        assert_failed_precondition(
            client.capture_credit_hold(app.grpc(capture_request(&created.id, &invoice_id("v"), Some(51)))).await,
            "amount_too_large",
        );
        let captured = client
            .capture_credit_hold(app.grpc(capture_request(&created.id, &invoice_id("v"), None)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(captured.applied, 50);
        let captured_hold = captured.credit_hold.unwrap();
        assert_eq!((captured_hold.captured_amount, captured_hold.lapsed_amount), (50, 100));
        app.assert_audit_clean().await;
    }

    async fn every_step_emits_its_credit_hold_event(app) {
        let customer = app.create_customer("name=Ada").await;
        grant(&app, &customer, 100, 50, None).await;
        // The stream sees them too (opened before the changes, from now).
        let mut stream = proto::event_service_client::EventServiceClient::new(app.channel().await)
            .watch_events(app.grpc(proto::WatchEventsRequest {
                resume: Some(proto::watch_events_request::Resume::FromNow(true)),
                types: ["created", "captured", "released", "expired"]
                    .iter()
                    .map(|step| format!("creditd.credit_hold.{step}"))
                    .collect(),
                customer: Some(customer.clone()),
            }))
            .await
            .unwrap()
            .into_inner();
        let mut client = holds(&app).await;
        let a = hold(&app, &customer, 10).await;
        let b = hold(&app, &customer, 10).await;
        client.release_credit_hold(app.grpc(proto::ReleaseCreditHoldRequest { id: a.id.clone() })).await.unwrap();
        client.capture_credit_hold(app.grpc(capture_request(&b.id, &invoice_id("ev"), Some(4)))).await.unwrap();
        let mut streamed = Vec::new();
        for _ in 0..4 {
            let message = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .unwrap();
            streamed.push(message.event.unwrap().r#type);
        }
        assert_eq!(
            streamed,
            ["creditd.credit_hold.created", "creditd.credit_hold.created", "creditd.credit_hold.released", "creditd.credit_hold.captured"]
        );

        let created = events_of(&app, "creditd.credit_hold.created").await;
        assert_eq!(created.len(), 2);
        assert_eq!(created[0]["data"]["object"]["object"], "creditd.credit_hold");
        assert_eq!(created[0]["data"]["object"]["id"], b.id.as_str());
        assert_eq!(created[0]["data"]["object"]["reserved"], 10);
        let released = events_of(&app, "creditd.credit_hold.released").await;
        assert_eq!(released.len(), 1);
        assert_eq!(released[0]["data"]["object"]["id"], a.id.as_str());
        let captured = events_of(&app, "creditd.credit_hold.captured").await;
        assert_eq!(captured.len(), 1);
        assert_eq!(captured[0]["data"]["object"]["captured_amount"], 4);
        assert_eq!(events_of(&app, "creditd.credit_hold.*").await.len(), 4);
        // The capture's entry has its ledger event as usual.
        let entries = events_of(&app, "billing.credit_balance_transaction.created").await;
        assert_eq!(entries[0]["data"]["object"]["debit"]["type"], "credits_applied");
    }

    async fn a_clock_advance_lapses_and_expires_the_holds_of_its_customers(app) {
        let frozen = app.now() - 1_000;
        let clock = app.post("/v1/test_helpers/test_clocks", &format!("frozen_time={frozen}")).await.ok();
        let clock_id = clock["id"].as_str().unwrap().to_string();
        let customer = app.post("/v1/customers", &format!("name=Ada&test_clock={clock_id}")).await.ok();
        let customer = customer["id"].as_str().unwrap().to_string();
        let lapsing = grant(&app, &customer, 40, 0, Some(frozen + 100)).await;
        let lasting = grant(&app, &customer, 100, 50, None).await;
        let mut client = holds(&app).await;
        let short = client
            .create_credit_hold(app.grpc(proto::CreateCreditHoldRequest { ttl_seconds: Some(500), ..hold_request(&customer, 60) }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((short.created, short.test_clock.as_deref()), (frozen, Some(clock_id.as_str())));
        assert_eq!(reserved_on(&short), [(lapsing.clone(), 40), (lasting.clone(), 20)]);

        let advance_path = format!("/v1/test_helpers/test_clocks/{clock_id}/advance");
        app.post(&advance_path, &format!("frozen_time={}", frozen + 200)).await.ok();
        let after_lapse = client.get_credit_hold(app.grpc(proto::GetCreditHoldRequest { id: short.id.clone() })).await.unwrap().into_inner();
        assert_eq!((after_lapse.status.as_str(), after_lapse.reserved, after_lapse.lapsed_amount), ("active", 20, 40));
        assert_eq!(metered_balances(&app, &customer).await, (100, 80));

        app.post(&advance_path, &format!("frozen_time={}", frozen + 600)).await.ok();
        let expired = client.get_credit_hold(app.grpc(proto::GetCreditHoldRequest { id: short.id.clone() })).await.unwrap().into_inner();
        assert_eq!((expired.status.as_str(), expired.reserved, expired.ended_at), ("expired", 0, Some(frozen + 600)));
        assert_eq!(metered_balances(&app, &customer).await, (100, 100));
        assert_eq!(events_of(&app, "creditd.credit_hold.expired").await.len(), 1);
        // The real-time sweeper leaves clock holds alone.
        assert_eq!(app.services.sweep_expired_credit_holds().await.unwrap(), 0);
        app.assert_audit_clean().await;
    }

    async fn racing_holds_captures_and_applications_never_exceed_the_grants(app) {
        let customer = app.create_customer("name=Ada").await;
        grant(&app, &customer, 300, 10, None).await;
        grant(&app, &customer, 200, 50, None).await;
        race(&[&app], &customer, 500).await;
    }
}

mod replicas {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_on_one_postgres_never_exceed_the_grants() {
        if !common::postgres_configured() {
            eprintln!("skipped: {} is not set", common::POSTGRES_URL_ENV);
            return;
        }
        let app = TestApp::spawn(common::Backend::Postgres).await;
        let replica = app.spawn_replica().await;
        let customer = app.create_customer("name=Ada").await;
        grant(&app, &customer, 300, 10, None).await;
        grant(&app, &customer, 200, 50, None).await;
        race(&[&app, &replica], &customer, 500).await;
        // Both replicas sweep at once: each expired hold is expired once.
        app.advance(8 * 24 * 3600);
        let active = all_holds(&app, &customer)
            .await
            .iter()
            .filter(|h| h.status == "active")
            .count() as u64;
        let (a, b) = tokio::join!(
            app.services.sweep_expired_credit_holds(),
            replica.services.sweep_expired_credit_holds()
        );
        assert_eq!(a.unwrap() + b.unwrap(), active);
        assert_eq!(
            events_of(&app, "creditd.credit_hold.expired").await.len() as u64,
            active
        );
    }
}
