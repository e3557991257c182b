//! The Events API (`GET /v1/events`, `GET /v1/events/{id}`, gRPC `ListEvents` / `GetEvent`):
//! every change a real API call (or the sweeper, or a clock advance) makes has its event, with
//! `data.object` as `GET` renders the object and `previous_attributes` on updates; `request`
//! names the API request and its idempotency key, null for automatic changes; replays and
//! failed requests emit nothing; the list's filters and cursors; tenant isolation; REST and gRPC
//! agree; retention and pruning; and a failure before commit leaves neither change nor event.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::credits::{
    BalanceClient, GRANTS, TXNS, apply_credits, create_grant, customer_transactions_path, id_of,
    ids_of, sweep, usd_grant_body,
};
use common::{OpenApi, Reply, TestApp};
use creditd::grpc::proto;
use creditd::render::STRIPE_API_VERSION;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

const EVENTS: &str = "/v1/events";
const CUSTOMERS: &str = "/v1/customers";
const CLOCKS: &str = "/v1/test_helpers/test_clocks";
const DAY: i64 = 86_400;

type EventClient = proto::event_service_client::EventServiceClient<Channel>;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Checks an event against Stripe's `event` schema and the fields creditd always sets.
#[track_caller]
fn check_event(event: &Value) {
    if let Err(report) = OpenApi::get().validate_component("event", event) {
        panic!("{report}");
    }
    assert_eq!(event["object"], "event", "{event}");
    assert_eq!(event["api_version"], STRIPE_API_VERSION, "{event}");
    assert!(
        event["id"].as_str().unwrap().starts_with("evt_test_"),
        "{event}"
    );
    assert!(event["request"].is_object(), "{event}");
}

/// The events `query` lists (at most 100), newest first, each checked.
async fn list(app: &TestApp, query: &str) -> Vec<Value> {
    let list = app.get(&format!("{EVENTS}?limit=100&{query}")).await.ok();
    assert_eq!(list["object"], "list");
    assert_eq!(list["url"], EVENTS);
    let events = list["data"].as_array().unwrap().clone();
    events.iter().for_each(check_event);
    events
}

/// Every event of `kind`, newest first.
async fn of_type(app: &TestApp, kind: &str) -> Vec<Value> {
    let events = list(app, &format!("type={kind}")).await;
    assert!(events.iter().all(|event| event["type"] == kind));
    events
}

/// The newest event of `kind`.
async fn newest(app: &TestApp, kind: &str) -> Value {
    of_type(app, kind)
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {kind} event"))
}

/// How many events the tenant can see.
async fn count(app: &TestApp) -> usize {
    list(app, "").await.len()
}

fn types_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_string())
        .collect()
}

fn request_id(reply: &Reply) -> String {
    reply.headers["request-id"].to_str().unwrap().to_string()
}

/// Asserts the event was caused by the request that got `reply`, sent with `idempotency_key`.
#[track_caller]
fn assert_caused_by(event: &Value, reply: &Reply, idempotency_key: Option<&str>) {
    assert_eq!(
        event["request"],
        json!({"id": request_id(reply), "idempotency_key": idempotency_key}),
        "{event}"
    );
}

#[track_caller]
fn assert_automatic(event: &Value) {
    assert_eq!(
        event["request"],
        json!({"id": null, "idempotency_key": null}),
        "{event}"
    );
}

/// GET of the event by ID answers the same event.
async fn assert_retrievable(app: &TestApp, event: &Value) {
    let got = app
        .get(&format!("{EVENTS}/{}", event["id"].as_str().unwrap()))
        .await
        .ok();
    check_event(&got);
    assert_eq!(&got, event);
}

async fn get_ok(app: &TestApp, path: &str) -> Value {
    app.get(path).await.ok()
}

/// Runs SQL on the app's database.
async fn execute(app: &TestApp, sql: &str) {
    app.services
        .db
        .writer()
        .execute_unprepared(sql)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

/// How many rows `events` holds (every tenant, hidden ones too).
async fn stored_events(app: &TestApp) -> i64 {
    let db = &app.services.db;
    let row = db
        .reader()
        .query_one_raw(Statement::from_string(
            db.backend(),
            "SELECT COUNT(*) AS n FROM events",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn events_client(app: &TestApp) -> EventClient {
    EventClient::new(app.channel().await)
}

// ---------------------------------------------------------------------------------------------
// Tests

on_every_backend! {
    async fn customer_changes_have_their_events_with_the_object_and_what_changed(app) {
        let created = app.post_idempotent(CUSTOMERS, "k-create", "name=Ada&metadata[tier]=gold").await;
        assert_eq!(created.status, 200, "{}", created.body);
        let customer = id_of(&created.body);
        let path = format!("{CUSTOMERS}/{customer}");

        let event = newest(&app, "customer.created").await;
        assert_eq!(event["data"]["object"], get_ok(&app, &path).await);
        assert!(event["data"].get("previous_attributes").is_none(), "{event}");
        assert_caused_by(&event, &created, Some("k-create"));
        assert_eq!(event["created"], app.now());
        assert_eq!(event["livemode"], false);
        assert_eq!(event["pending_webhooks"], 0);
        assert_retrievable(&app, &event).await;

        // An update: the new object, and the old value of each field that changed (a nested
        // object whole).
        app.advance(5);
        let updated = app.post(&path, "name=Grace&metadata[team]=blue").await;
        assert_eq!(updated.status, 200, "{}", updated.body);
        let event = newest(&app, "customer.updated").await;
        assert_eq!(event["data"]["object"], get_ok(&app, &path).await);
        assert_eq!(
            event["data"]["previous_attributes"],
            json!({"name": "Ada", "metadata": {"tier": "gold"}})
        );
        assert_caused_by(&event, &updated, None);
        assert_eq!(event["created"], app.now());

        // An update that changes nothing has no event.
        let before = count(&app).await;
        app.post(&path, "name=Grace").await.ok();
        assert_eq!(count(&app).await, before);

        // A customer balance transaction changes the balance: customer.updated with the old one.
        let first = app.post(&customer_transactions_path(&customer), "amount=-500&currency=usd").await;
        assert_eq!(first.status, 200, "{}", first.body);
        let event = newest(&app, "customer.updated").await;
        assert_eq!(event["data"]["object"], get_ok(&app, &path).await);
        assert_eq!(event["data"]["object"]["balance"], -500);
        assert_eq!(event["data"]["previous_attributes"]["balance"], 0);
        assert_caused_by(&event, &first, None);
        app.post(&customer_transactions_path(&customer), "amount=-200&currency=usd").await.ok();
        let event = newest(&app, "customer.updated").await;
        assert_eq!(event["data"]["object"]["balance"], -700);
        assert_eq!(event["data"]["previous_attributes"]["balance"], -500);
        assert_eq!(
            event["data"]["previous_attributes"]["invoice_credit_balance"],
            json!({"usd": 500})
        );

        // Setting the balance on the customer itself reports it the same way.
        app.post(&path, "balance=-1000").await.ok();
        let event = newest(&app, "customer.updated").await;
        assert_eq!(event["data"]["object"]["balance"], -1000);
        assert_eq!(event["data"]["previous_attributes"]["balance"], -700);

        // Deletion: the full customer as it was just before, not the deleted stub.
        let last = get_ok(&app, &path).await;
        let deleted = app.request(reqwest::Method::DELETE, &path, Some(&app.key), None, "").await;
        assert_eq!(deleted.status, 200, "{}", deleted.body);
        let event = newest(&app, "customer.deleted").await;
        assert_eq!(event["data"]["object"], last);
        assert!(event["data"].get("previous_attributes").is_none());
        assert_caused_by(&event, &deleted, None);

        assert_eq!(
            types_of(&list(&app, "").await),
            [
                "customer.deleted",
                "customer.updated",
                "customer.updated",
                "customer.updated",
                "customer.updated",
                "customer.created",
            ]
        );
    }

    async fn credit_grant_changes_have_grant_and_ledger_events(app) {
        let customer = app.create_customer("name=Ada").await;
        let created = app.post_idempotent(GRANTS, "k-grant", &usd_grant_body(&customer, 1000)).await;
        assert_eq!(created.status, 200, "{}", created.body);
        let grant = id_of(&created.body);
        let grant_path = format!("{GRANTS}/{grant}");

        // One request, two events, oldest first: the grant, then its credits_granted entry.
        let events = list(&app, "").await;
        assert_eq!(
            types_of(&events[..2]),
            ["billing.credit_balance_transaction.created", "billing.credit_grant.created"]
        );
        let (entry_event, grant_event) = (&events[0], &events[1]);
        assert_eq!(grant_event["data"]["object"], get_ok(&app, &grant_path).await);
        let entry = &entry_event["data"]["object"];
        assert_eq!(entry["credit"]["type"], "credits_granted");
        assert_eq!(
            *entry,
            get_ok(&app, &format!("{TXNS}/{}", entry["id"].as_str().unwrap())).await
        );
        for event in [entry_event, grant_event] {
            assert_caused_by(event, &created, Some("k-grant"));
        }

        // An update: billing.credit_grant.updated with what changed.
        app.advance(10);
        let expires_at = app.now() + DAY;
        let updated = app.post(&grant_path, &format!("metadata[a]=1&expires_at={expires_at}")).await;
        assert_eq!(updated.status, 200, "{}", updated.body);
        let event = newest(&app, "billing.credit_grant.updated").await;
        assert_eq!(event["data"]["object"], get_ok(&app, &grant_path).await);
        assert_eq!(event["data"]["object"]["expires_at"], expires_at);
        let previous = &event["data"]["previous_attributes"];
        assert_eq!(
            *previous,
            json!({"metadata": {}, "expires_at": null, "updated": created.body["updated"]})
        );
        assert_caused_by(&event, &updated, None);

        // Expire: the grant's update and its credits_expired entry, from the same request.
        let before = list(&app, "").await.len();
        let expired = app.post(&format!("{grant_path}/expire"), "").await;
        assert_eq!(expired.status, 200, "{}", expired.body);
        let events = list(&app, "").await;
        assert_eq!(events.len(), before + 2);
        assert_eq!(
            types_of(&events[..2]),
            ["billing.credit_grant.updated", "billing.credit_balance_transaction.created"]
        );
        assert_eq!(events[0]["data"]["object"], get_ok(&app, &grant_path).await);
        assert_eq!(events[0]["data"]["previous_attributes"]["expires_at"], expires_at);
        assert_eq!(events[1]["data"]["object"]["debit"]["type"], "credits_expired");
        assert_eq!(events[1]["data"]["object"]["debit"]["amount"]["monetary"]["value"], 1000);
        for event in &events[..2] {
            assert_caused_by(event, &expired, None);
        }

        // Void: likewise, with credits_voided.
        let other = id_of(&create_grant(&app, &usd_grant_body(&customer, 300)).await);
        let voided = app.post(&format!("{GRANTS}/{other}/void"), "").await;
        assert_eq!(voided.status, 200, "{}", voided.body);
        let events = list(&app, "").await;
        assert_eq!(
            types_of(&events[..2]),
            ["billing.credit_grant.updated", "billing.credit_balance_transaction.created"]
        );
        assert_eq!(events[0]["data"]["object"], get_ok(&app, &format!("{GRANTS}/{other}")).await);
        assert_eq!(events[0]["data"]["previous_attributes"]["voided_at"], Value::Null);
        assert_eq!(events[1]["data"]["object"]["debit"]["type"], "credits_voided");
        assert_eq!(events[1]["data"]["object"]["credit_grant"], other.as_str());
    }

    async fn applying_and_reinstating_credits_are_reported_by_their_entries(app) {
        let customer = app.create_customer("name=Ada").await;
        let grant = id_of(&create_grant(&app, &usd_grant_body(&customer, 1000)).await);
        let before = count(&app).await;

        let applied = apply_credits(&app, &customer, "in_evt_1", "il_1", 300).await;
        assert_eq!(applied.applied, 300);
        // Burn-down is reported by its ledger entry alone, not by a grant update.
        let events = list(&app, "").await;
        assert_eq!(events.len(), before + 1);
        let event = &events[0];
        assert_eq!(event["type"], "billing.credit_balance_transaction.created");
        let entry = &event["data"]["object"];
        assert_eq!(entry["debit"]["type"], "credits_applied");
        assert_eq!(entry["debit"]["amount"]["monetary"]["value"], 300);
        assert_eq!(entry["credit_grant"], grant.as_str());
        assert_eq!(
            *entry,
            get_ok(&app, &format!("{TXNS}/{}", entry["id"].as_str().unwrap())).await
        );
        assert!(event["request"]["id"].as_str().unwrap().starts_with("req_"), "{event}");

        let mut client = BalanceClient::new(app.channel().await);
        let reinstated = client
            .reinstate_invoice_credits(app.grpc_idempotent(
                proto::ReinstateInvoiceCreditsRequest {
                    customer: customer.clone(),
                    invoice: "in_evt_1".to_string(),
                },
                "k-reinstate",
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reinstated.reinstated, 300);
        let events = list(&app, "").await;
        assert_eq!(events.len(), before + 2);
        let event = &events[0];
        assert_eq!(event["type"], "billing.credit_balance_transaction.created");
        let entry = &event["data"]["object"];
        assert_eq!(entry["credit"]["type"], "credits_application_invoice_voided");
        assert_eq!(entry["credit"]["amount"]["monetary"]["value"], 300);
        assert_eq!(event["request"]["idempotency_key"], "k-reinstate");
    }

    async fn expiry_by_the_sweeper_is_an_automatic_ledger_event(app) {
        let customer = app.create_customer("name=Ada").await;
        let now = app.now();
        let grant = id_of(&create_grant(
            &app,
            &format!("{}&expires_at={}", usd_grant_body(&customer, 400), now + 100),
        ).await);
        let before = count(&app).await;
        app.advance(200);
        assert_eq!(sweep(&app).await, 1);

        let events = list(&app, "").await;
        assert_eq!(events.len(), before + 1, "only the entry: lapses are not grant updates");
        let event = &events[0];
        assert_eq!(event["type"], "billing.credit_balance_transaction.created");
        assert_eq!(event["data"]["object"]["debit"]["type"], "credits_expired");
        assert_eq!(event["data"]["object"]["credit_grant"], grant.as_str());
        assert_eq!(event["data"]["object"]["debit"]["amount"]["monetary"]["value"], 400);
        assert_automatic(event);
        assert_eq!(event["created"], app.now(), "real time when the sweeper ran");
        assert_retrievable(&app, event).await;
    }

    async fn test_clock_lifecycle_has_its_events(app) {
        let frozen = app.now() - 10 * DAY;
        let created = app.post(CLOCKS, &format!("frozen_time={frozen}&name=Sim")).await;
        assert_eq!(created.status, 200, "{}", created.body);
        let clock = id_of(&created.body);
        let clock_path = format!("{CLOCKS}/{clock}");
        let event = newest(&app, "test_helpers.test_clock.created").await;
        assert_eq!(event["data"]["object"], get_ok(&app, &clock_path).await);
        assert_caused_by(&event, &created, None);
        assert_eq!(event["created"], app.now(), "events are dated in real time");

        let customer = app.create_customer(&format!("name=Sim&test_clock={clock}")).await;
        let grant = id_of(&create_grant(
            &app,
            &format!("{}&expires_at={}", usd_grant_body(&customer, 250), frozen + DAY),
        ).await);
        let before = count(&app).await;

        let advanced = app.post(&format!("{clock_path}/advance"), &format!("frozen_time={}", frozen + 2 * DAY)).await;
        assert_eq!(advanced.status, 200, "{}", advanced.body);
        let events = list(&app, "").await;
        assert_eq!(
            types_of(&events[..3]),
            [
                "test_helpers.test_clock.ready",
                "billing.credit_balance_transaction.created",
                "test_helpers.test_clock.advancing",
            ]
        );
        assert_eq!(events.len(), before + 3);
        let (ready, lapsed, advancing) = (&events[0], &events[1], &events[2]);
        assert_caused_by(advancing, &advanced, None);
        assert_eq!(advancing["data"]["object"]["status"], "advancing");
        assert_eq!(
            advancing["data"]["object"]["status_details"]["advancing"]["target_frozen_time"],
            frozen + 2 * DAY
        );
        // The second step is automatic (a replica may finish it long after the request).
        assert_automatic(lapsed);
        assert_eq!(lapsed["data"]["object"]["debit"]["type"], "credits_expired");
        assert_eq!(lapsed["data"]["object"]["credit_grant"], grant.as_str());
        assert_automatic(ready);
        assert_eq!(ready["data"]["object"], get_ok(&app, &clock_path).await);
        assert_eq!(ready["data"]["object"]["status"], "ready");

        let last_customer = get_ok(&app, &format!("{CUSTOMERS}/{customer}")).await;
        let last_clock = get_ok(&app, &clock_path).await;
        let deleted = app.request(reqwest::Method::DELETE, &clock_path, Some(&app.key), None, "").await;
        assert_eq!(deleted.status, 200, "{}", deleted.body);
        let events = list(&app, "").await;
        assert_eq!(
            types_of(&events[..2]),
            ["test_helpers.test_clock.deleted", "customer.deleted"]
        );
        assert_eq!(events[0]["data"]["object"], last_clock);
        assert_eq!(events[1]["data"]["object"], last_customer);
        for event in &events[..2] {
            assert_caused_by(event, &deleted, None);
        }
    }

    async fn replays_and_failed_requests_emit_nothing(app) {
        let first = app.post_idempotent(CUSTOMERS, "k-once", "name=Ada").await;
        assert_eq!(first.status, 200);
        let replay = app.post_idempotent(CUSTOMERS, "k-once", "name=Ada").await;
        assert_eq!(replay.status, 200);
        assert_eq!(replay.body, first.body);
        let events = list(&app, "").await;
        assert_eq!(events.len(), 1, "the replay emitted nothing");
        assert_caused_by(&events[0], &first, Some("k-once"));

        // Failed requests: refused input, a missing object, an impossible change.
        app.post(CUSTOMERS, "email=not-an-email").await
            .assert_error(400, "invalid_request_error", Some("email_invalid"), Some("email"));
        assert_eq!(app.post(&format!("{CUSTOMERS}/cus_test_missing"), "name=x").await.status, 404);
        let customer = id_of(&first.body);
        let grant = id_of(&create_grant(&app, &usd_grant_body(&customer, 100)).await);
        let voided = app.post(&format!("{GRANTS}/{grant}/void"), "").await;
        assert_eq!(voided.status, 200);
        let after = count(&app).await;
        assert_eq!(app.post(&format!("{GRANTS}/{grant}/void"), "").await.status, 400);
        assert_eq!(app.post(&format!("{GRANTS}/{grant}/expire"), "").await.status, 400);
        assert_eq!(count(&app).await, after);
    }

    async fn the_list_filters_by_type_created_and_delivery_and_pages_by_cursor(app) {
        let start = app.now();
        let customer = app.create_customer("name=A").await;
        app.advance(10);
        app.post(&format!("{CUSTOMERS}/{customer}"), "name=B").await.ok();
        app.advance(10);
        create_grant(&app, &usd_grant_body(&customer, 100)).await;
        let all = list(&app, "").await;
        assert_eq!(
            types_of(&all),
            [
                "billing.credit_balance_transaction.created",
                "billing.credit_grant.created",
                "customer.updated",
                "customer.created",
            ]
        );
        let ids = ids_of(&json!({"data": all}));

        // type: exact, group, everything, a name creditd never emits.
        assert_eq!(types_of(&list(&app, "type=customer.updated").await), ["customer.updated"]);
        assert_eq!(
            types_of(&list(&app, "type=customer.*").await),
            ["customer.updated", "customer.created"]
        );
        assert_eq!(list(&app, "type=billing.*").await.len(), 2);
        assert_eq!(list(&app, "type=billing.credit_grant.*").await.len(), 1);
        assert_eq!(list(&app, "type=*").await.len(), 4);
        assert!(list(&app, "type=invoice.paid").await.is_empty());
        // The group is a literal prefix: case matters and LIKE's wildcards are plain text.
        assert!(list(&app, "type=CUSTOMER.*").await.is_empty());
        assert!(list(&app, "type=customer_*").await.is_empty());
        assert!(list(&app, "type=%25.*").await.is_empty());
        assert!(list(&app, "type=customer").await.is_empty());

        // types[]: exact names, either array form.
        assert_eq!(
            types_of(&list(&app, "types[]=customer.created&types[]=billing.credit_grant.created").await),
            ["billing.credit_grant.created", "customer.created"]
        );
        assert_eq!(list(&app, "types[0]=customer.created&types[1]=nothing.at_all").await.len(), 1);
        assert!(list(&app, "types[]=customer.*").await.is_empty(), "types takes exact names");
        let twenty: String = (0..20).map(|i| format!("&types[]=x.{i}")).collect();
        assert!(list(&app, &twenty).await.is_empty());
        app.get(&format!("{EVENTS}?types[]=x.20{twenty}")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("types"));
        app.get(&format!("{EVENTS}?type=customer.created&types[]=customer.updated")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("types"));

        // created: exact and ranges.
        assert_eq!(types_of(&list(&app, &format!("created={start}")).await), ["customer.created"]);
        assert_eq!(list(&app, &format!("created[gte]={}", start + 10)).await.len(), 3);
        assert_eq!(
            types_of(&list(&app, &format!("created[gt]={start}&created[lt]={}", start + 20)).await),
            ["customer.updated"]
        );
        assert_eq!(list(&app, &format!("created[lte]={}", start + 10)).await.len(), 2);
        app.get(&format!("{EVENTS}?created[gt]=-1")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("created[gt]"));

        // delivery_success: true ⇔ no endpoint still owed the event (pending_webhooks = 0).
        execute(&app, &format!("UPDATE events SET pending_webhooks = 2 WHERE id = '{}'", ids[2])).await;
        let pending = list(&app, "delivery_success=false").await;
        assert_eq!(ids_of(&json!({"data": pending})), [ids[2].as_str()]);
        assert_eq!(pending[0]["pending_webhooks"], 2);
        assert_eq!(list(&app, "delivery_success=true").await.len(), 3);
        assert_eq!(list(&app, "delivery_success=true&type=customer.*").await.len(), 1);
        app.get(&format!("{EVENTS}?delivery_success=maybe")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("delivery_success"));

        // Cursors and limit, newest first.
        let page = app.get(&format!("{EVENTS}?limit=2")).await.ok();
        assert_eq!(ids_of(&page), ids[..2]);
        assert_eq!(page["has_more"], true);
        let page = app.get(&format!("{EVENTS}?limit=2&starting_after={}", ids[1])).await.ok();
        assert_eq!(ids_of(&page), ids[2..]);
        assert_eq!(page["has_more"], false);
        let page = app.get(&format!("{EVENTS}?limit=2&ending_before={}", ids[3])).await.ok();
        assert_eq!(ids_of(&page), ids[1..3]);
        assert_eq!(page["has_more"], true);
        let page = app.get(&format!("{EVENTS}?limit=1&type=customer.*&starting_after={}", ids[0])).await.ok();
        assert_eq!(ids_of(&page), [ids[2].as_str()], "a cursor outside the filter still pages");
        let page = app.get(&format!("{EVENTS}?limit=3")).await.ok();
        assert_eq!(page["data"].as_array().unwrap().len(), 3);
        app.get(&format!("{EVENTS}?starting_after=evt_test_missing")).await
            .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("starting_after"));
        app.get(&format!("{EVENTS}?limit=101")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("limit"));
        app.get(&format!("{EVENTS}?unknown=1")).await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("unknown"));
        // Stripe's expandable fields hold no IDs: expanding them is accepted and changes nothing.
        let expanded = app.get(&format!("{EVENTS}?limit=100&expand[]=data.data&expand[]=data.request")).await.ok();
        assert_eq!(expanded["data"], json!(list(&app, "").await));
        let one = app.get(&format!("{EVENTS}/{}?expand[]=data", ids[0])).await.ok();
        assert_eq!(one, all[0]);
    }

    async fn another_tenant_or_mode_sees_none_of_the_events(app) {
        let customer = app.create_customer("name=Ada").await;
        create_grant(&app, &usd_grant_body(&customer, 100)).await;
        let mine = list(&app, "").await;
        assert_eq!(mine.len(), 3);
        let stranger = app.new_key(false, false).await;
        let live = app.new_key(true, true).await;
        for key in [&stranger, &live] {
            let theirs = app.get_as(Some(key), &format!("{EVENTS}?limit=100")).await.ok();
            assert_eq!(theirs["data"], json!([]), "{theirs}");
            for event in &mine {
                let id = event["id"].as_str().unwrap();
                app.get_as(Some(key), &format!("{EVENTS}/{id}")).await
                    .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
            }
            app.get_as(Some(key), &format!("{EVENTS}?starting_after={}", mine[0]["id"].as_str().unwrap())).await
                .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("starting_after"));
        }
        // Their own changes are theirs alone.
        common::credits::create_customer_as(&app, &stranger, "name=Eve").await;
        let theirs = app.get_as(Some(&stranger), EVENTS).await.ok();
        assert_eq!(theirs["data"].as_array().unwrap().len(), 1);
        assert_eq!(list(&app, "").await, mine);
        app.get(&format!("{EVENTS}/{}", theirs["data"][0]["id"].as_str().unwrap())).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
        assert_eq!(app.get_as(None, EVENTS).await.status, 401);
    }

    async fn rest_and_grpc_return_the_same_events(app) {
        let customer = app.create_customer("name=Ada").await;
        app.post_idempotent(&format!("{CUSTOMERS}/{customer}"), "k-upd", "name=Bo").await.ok();
        create_grant(&app, &usd_grant_body(&customer, 100)).await;
        let rest = list(&app, "").await;
        // Let the sequencer number them (PostgreSQL numbers after commit).
        app.services.events.run_once(&app.services.db).await.unwrap();

        let mut client = events_client(&app).await;
        let grpc = client
            .list_events(app.grpc(proto::ListEventsRequest {
                page: Some(proto::PageRequest { limit: Some(100), ..Default::default() }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(grpc.object, "list");
        assert_eq!(grpc.url, EVENTS);
        assert!(!grpc.has_more);
        assert_eq!(grpc.data.len(), rest.len());
        let mut sequences = Vec::new();
        for (message, json) in grpc.data.iter().zip(&rest) {
            assert_same(message, json, &customer);
            sequences.push(message.sequence);
            let got = client
                .get_event(app.grpc(proto::GetEventRequest { id: message.id.clone() }))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(&got, message);
        }
        // Newest first, so stream positions descend.
        assert!(sequences.windows(2).all(|pair| pair[0] > pair[1]), "{sequences:?}");
        assert!(sequences.iter().all(|sequence| *sequence > 0));

        // The same filters, parsed once for both transports.
        let filtered = client
            .list_events(app.grpc(proto::ListEventsRequest {
                r#type: Some("customer.*".to_string()),
                delivery_success: Some(true),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<String> = filtered.data.iter().map(|event| event.id.clone()).collect();
        assert_eq!(ids, ids_of(&json!({"data": list(&app, "type=customer.*&delivery_success=true").await})));
        let typed = client
            .list_events(app.grpc(proto::ListEventsRequest {
                types: vec!["billing.credit_grant.created".to_string()],
                created: Some(proto::CreatedFilter { gte: Some(app.now()), ..Default::default() }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(typed.data.len(), 1);
        assert_eq!(typed.data[0].r#type, "billing.credit_grant.created");
        let page = client
            .list_events(app.grpc(proto::ListEventsRequest {
                page: Some(proto::PageRequest {
                    limit: Some(1),
                    starting_after: Some(rest[0]["id"].as_str().unwrap().to_string()),
                    ending_before: None,
                }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.data[0].id, rest[1]["id"].as_str().unwrap());
        assert!(page.has_more);

        for request in [
            proto::ListEventsRequest {
                r#type: Some("customer.created".to_string()),
                types: vec!["customer.updated".to_string()],
                ..Default::default()
            },
            proto::ListEventsRequest {
                types: (0..21).map(|i| format!("x.{i}")).collect(),
                ..Default::default()
            },
        ] {
            let status = client.list_events(app.grpc(request)).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        }
        let status = client
            .get_event(app.grpc(proto::GetEventRequest { id: "evt_test_missing".to_string() }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        let stranger = app.new_key(false, false).await;
        let status = client
            .get_event(common::grpc_request(
                proto::GetEventRequest { id: grpc.data[0].id.clone() },
                Some(&stranger),
                None,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }

    async fn events_past_retention_are_hidden_and_pruned_but_the_newest_is_kept(app) {
        let customer = app.create_customer("name=Old").await;
        let old = list(&app, "").await;
        assert_eq!(old.len(), 1);
        let old_id = old[0]["id"].as_str().unwrap().to_string();

        // Just inside the 30-day window, then just past it.
        app.advance(30 * DAY);
        assert_eq!(list(&app, "").await.len(), 1);
        app.advance(1);
        app.get(&format!("{EVENTS}/{old_id}")).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("id"));
        assert!(list(&app, "").await.is_empty());
        app.get(&format!("{EVENTS}?starting_after={old_id}")).await
            .assert_error(400, "invalid_request_error", Some("resource_missing"), Some("starting_after"));
        let mut client = events_client(&app).await;
        let status = client
            .get_event(app.grpc(proto::GetEventRequest { id: old_id.clone() }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);

        // The pruner keeps the newest stream position even when it is past retention: on
        // PostgreSQL the sequencer numbers from the highest one.
        app.services.events.run_once(&app.services.db).await.unwrap();
        assert_eq!(app.services.prune_events(app.now()).await.unwrap(), 0);
        assert_eq!(stored_events(&app).await, 1);
        let head = app.services.events.run_once(&app.services.db).await.unwrap();
        assert!(head > 0);

        // Many old events (another tenant's too): deleted in batches, all but the newest.
        execute(
            &app,
            "INSERT INTO events (id, account_id, livemode, type, created, api_version, \
             pending_webhooks, data) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
             SELECT 'evt_test_bulk' || i, 'acct_other', false, 'customer.created', 1000 + i, \
             'v', 0, '{\"object\":{}}' FROM n",
        )
        .await;
        app.post(&format!("{CUSTOMERS}/{customer}"), "name=New").await.ok();
        let fresh = list(&app, "").await;
        assert_eq!(types_of(&fresh), ["customer.updated"]);
        let newest_head = app.services.events.run_once(&app.services.db).await.unwrap();
        assert_eq!(stored_events(&app).await, 2502);
        assert_eq!(app.services.prune_events(app.now()).await.unwrap(), 2501);
        assert_eq!(stored_events(&app).await, 1);
        assert_eq!(list(&app, "").await, fresh);
        assert_eq!(app.services.events.run_once(&app.services.db).await.unwrap(), newest_head);

        // New events keep numbering above the kept one.
        app.post(&format!("{CUSTOMERS}/{customer}"), "name=Newer").await.ok();
        assert!(app.services.events.run_once(&app.services.db).await.unwrap() > newest_head);
    }

    async fn a_failure_after_the_changes_and_before_commit_leaves_neither(app) {
        // The cleanest forced failure: a trigger that refuses inserts into `events`. A write
        // inserts its events last, after its own statements and its idempotency record and
        // just before COMMIT, so this fails the transaction at the latest point it can fail.
        let customer = app.create_customer("name=Before").await;
        let grant = id_of(&create_grant(&app, &usd_grant_body(&customer, 100)).await);
        let before = list(&app, "").await;
        match app.backend {
            common::Backend::Sqlite => {
                execute(
                    &app,
                    "CREATE TRIGGER events_refused BEFORE INSERT ON events \
                     BEGIN SELECT RAISE(ABORT, 'forced failure'); END",
                )
                .await;
            }
            common::Backend::Postgres => {
                execute(
                    &app,
                    "CREATE FUNCTION events_refused() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'forced failure'; END $$",
                )
                .await;
                execute(
                    &app,
                    "CREATE TRIGGER events_refused BEFORE INSERT ON events \
                     FOR EACH STATEMENT EXECUTE FUNCTION events_refused()",
                )
                .await;
            }
        }

        let failed = [
            app.post_idempotent(CUSTOMERS, "k-atomic", "name=Never").await,
            app.post(&format!("{CUSTOMERS}/{customer}"), "name=After&metadata[a]=1").await,
            app.post(&customer_transactions_path(&customer), "amount=-500&currency=usd").await,
            app.post(GRANTS, &usd_grant_body(&customer, 700)).await,
            app.post(&format!("{GRANTS}/{grant}/void"), "").await,
            app.post(CLOCKS, &format!("frozen_time={}", app.now())).await,
        ];
        for reply in &failed {
            assert_eq!(reply.status, 500, "{}", reply.body);
        }
        let status = BalanceClient::new(app.channel().await)
            .apply_credits(app.grpc(common::credits::metered_line(&customer, "usd", "in_atomic", "il_1", 50)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");

        match app.backend {
            common::Backend::Sqlite => execute(&app, "DROP TRIGGER events_refused").await,
            common::Backend::Postgres => {
                execute(&app, "DROP TRIGGER events_refused ON events").await;
                execute(&app, "DROP FUNCTION events_refused()").await;
            }
        }

        // Neither the changes nor their events.
        assert_eq!(list(&app, "").await, before);
        let customers = app.get(&format!("{CUSTOMERS}?limit=100")).await.ok();
        assert_eq!(ids_of(&customers), [customer.as_str()]);
        let current = get_ok(&app, &format!("{CUSTOMERS}/{customer}")).await;
        assert_eq!(current["name"], "Before");
        assert_eq!(current["metadata"], json!({}));
        assert_eq!(current["balance"], 0);
        let grants = app.get(&format!("{GRANTS}?customer={customer}")).await.ok();
        assert_eq!(ids_of(&grants), [grant.as_str()]);
        assert_eq!(get_ok(&app, &format!("{GRANTS}/{grant}")).await["voided_at"], Value::Null);
        let ledger = app.get(&format!("{TXNS}?customer={customer}")).await.ok();
        assert_eq!(ledger["data"].as_array().unwrap().len(), 1, "only credits_granted");
        assert_eq!(app.get(CLOCKS).await.ok()["data"], json!([]));
        assert_eq!(
            app.get(&customer_transactions_path(&customer)).await.ok()["data"],
            json!([])
        );

        // The idempotency record went with them: the same key now runs, once.
        let retried = app.post_idempotent(CUSTOMERS, "k-atomic", "name=Never").await;
        assert_eq!(retried.status, 200, "{}", retried.body);
        assert!(retried.headers.get("idempotent-replayed").is_none());
        let event = newest(&app, "customer.created").await;
        assert_eq!(event["data"]["object"], retried.body);
        assert_caused_by(&event, &retried, Some("k-atomic"));
        assert_eq!(list(&app, "").await.len(), before.len() + 1);
    }
}

/// A gRPC event and its REST rendering say the same.
#[track_caller]
fn assert_same(message: &proto::Event, json: &Value, customer: &str) {
    assert_eq!(message.id, json["id"].as_str().unwrap());
    assert_eq!(message.object, "event");
    assert_eq!(message.r#type, json["type"].as_str().unwrap());
    assert_eq!(message.created, json["created"].as_i64().unwrap());
    assert_eq!(message.livemode, json["livemode"].as_bool().unwrap());
    assert_eq!(message.api_version, json["api_version"].as_str().unwrap());
    assert_eq!(
        message.pending_webhooks,
        json["pending_webhooks"].as_i64().unwrap()
    );
    assert_eq!(
        message.request_id.as_deref(),
        json["request"]["id"].as_str()
    );
    assert_eq!(
        message.request_idempotency_key.as_deref(),
        json["request"]["idempotency_key"].as_str()
    );
    assert_eq!(message.customer.as_deref(), Some(customer));
    let data: Value = serde_json::from_str(&message.data_json).unwrap();
    assert_eq!(data, json["data"]);
}
