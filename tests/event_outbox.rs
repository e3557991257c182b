//! The outbox itself: every committed change has its events and every event a stream position
//! (on PostgreSQL given after commit by the sequencer: dense, unique, in insert order per
//! customer). Atomicity with a forced failure before commit is in `events.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::TestApp;
use creditd::store;

/// Every stored event of the app's tenant in stream order, once all are numbered.
async fn numbered_events(app: &TestApp) -> Vec<creditd::domain::event::Event> {
    let tenant = app.context().await.tenant;
    for _ in 0..200 {
        app.services
            .events
            .run_once(&app.services.db)
            .await
            .unwrap();
        let query = store::events::StreamQuery {
            tenant: &tenant,
            after: 0,
            types: &[],
            customer_id: None,
            limit: 10_000,
        };
        let events = store::events::read_after(app.services.db.reader(), &query)
            .await
            .unwrap();
        if events.iter().all(|event| event.sequence.is_some()) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("events stayed unnumbered");
}

on_every_backend! {
    async fn concurrent_writes_get_dense_positions_in_each_customers_order(app) {
        let mut customers = Vec::new();
        for n in 0..4 {
            customers.push(app.create_customer(&format!("name=c{n}")).await);
        }
        let writes = customers.iter().flat_map(|customer| {
            (0..10).map(move |n| (customer.clone(), n))
        });
        futures::future::join_all(writes.map(|(customer, n)| {
            let app = &app;
            async move {
                app.post(
                    &format!("/v1/customers/{customer}/balance_transactions"),
                    &format!("amount={}&currency=usd", n + 1),
                )
                .await
                .ok();
            }
        }))
        .await;
        let events = numbered_events(&app).await;
        // 4 creations, then each balance transaction moves `balance`: one customer.updated.
        assert_eq!(events.len(), 4 + 40);
        let positions: Vec<i64> = events.iter().map(|event| event.sequence.unwrap()).collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{positions:?}");
        if app.backend == common::Backend::Postgres {
            let first = positions[0];
            assert_eq!(
                positions,
                (first..first + positions.len() as i64).collect::<Vec<_>>(),
                "the sequencer numbers without gaps"
            );
        }
        // Each customer's balance moved one step at a time, in stream order.
        let mut balances: HashMap<String, i64> = HashMap::new();
        for event in events.iter().filter(|event| event.kind == "customer.updated") {
            let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
            let customer = event.customer_id.clone().unwrap();
            let previous = balances.get(&customer).copied().unwrap_or(0);
            assert_eq!(data["previous_attributes"]["balance"], previous, "{data}");
            let now = data["object"]["balance"].as_i64().unwrap();
            assert!(now > previous);
            balances.insert(customer, now);
        }
        for customer in &customers {
            assert_eq!(balances[customer], (1..=10).sum::<i64>());
        }
    }
}
