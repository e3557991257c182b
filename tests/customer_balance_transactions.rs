//! The customer balance ledger over REST and gRPC: running balances, currencies, updates,
//! pagination, expand and every kind of bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::credits::{
    CustomerTransactionClient, customer_transactions_path, grpc_customer_transactions, id_of,
    ids_of,
};
use common::{Reply, TestApp};
use creditd::grpc::proto;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

/// One filtered list query, in both transports' words.
struct Query {
    rest: String,
    created: Option<proto::CreatedFilter>,
    invoice: Option<String>,
    page: proto::PageRequest,
}

impl Query {
    fn new(rest: &str) -> Query {
        Query {
            rest: rest.to_string(),
            created: None,
            invoice: None,
            page: proto::PageRequest::default(),
        }
    }

    fn created(mut self, created: proto::CreatedFilter) -> Query {
        self.created = Some(created);
        self
    }

    fn invoice(mut self, invoice: &str) -> Query {
        self.invoice = Some(invoice.to_string());
        self
    }

    fn page(
        mut self,
        limit: i64,
        starting_after: Option<&str>,
        ending_before: Option<&str>,
    ) -> Query {
        self.page = proto::PageRequest {
            limit: Some(limit),
            starting_after: starting_after.map(str::to_string),
            ending_before: ending_before.map(str::to_string),
        };
        self
    }

    fn grpc(&self, customer: &str) -> proto::ListCustomerBalanceTransactionsRequest {
        proto::ListCustomerBalanceTransactionsRequest {
            customer: customer.to_string(),
            page: Some(self.page.clone()),
            created: self.created,
            invoice: self.invoice.clone(),
        }
    }
}

/// Lists over REST and over gRPC, checks both give the same page, and returns its IDs and
/// `has_more`.
async fn list_both_ways(
    app: &TestApp,
    client: &mut CustomerTransactionClient,
    customer: &str,
    query: &Query,
) -> (Vec<String>, bool) {
    let rest = app
        .get(&format!(
            "{}?{}",
            customer_transactions_path(customer),
            query.rest
        ))
        .await
        .ok();
    let grpc = client
        .list_customer_balance_transactions(app.grpc(query.grpc(customer)))
        .await
        .unwrap_or_else(|status| panic!("{}: {status:?}", query.rest))
        .into_inner();
    let grpc_ids: Vec<String> = grpc.data.iter().map(|txn| txn.id.clone()).collect();
    assert_eq!(ids_of(&rest), grpc_ids, "{}", query.rest);
    assert_eq!(rest["has_more"], grpc.has_more, "{}", query.rest);
    (grpc_ids, grpc.has_more)
}

/// A REST error and a gRPC status for the same bad input say the same thing: code, param and
/// message.
#[track_caller]
fn assert_same_refusal(rest: &Reply, grpc: &tonic::Status, code: &str, param: &str) {
    rest.assert_error(400, "invalid_request_error", Some(code), Some(param));
    assert_eq!(grpc.code(), Code::InvalidArgument, "{grpc:?}");
    let details = grpc.get_error_details();
    let info = details.error_info().expect("error info");
    assert_eq!(info.reason, code);
    assert_eq!(info.metadata.get("param").map(String::as_str), Some(param));
    assert_eq!(
        grpc.message(),
        rest.body["error"]["message"].as_str().unwrap()
    );
}

fn created(
    eq: Option<i64>,
    gt: Option<i64>,
    gte: Option<i64>,
    lt: Option<i64>,
    lte: Option<i64>,
) -> proto::CreatedFilter {
    proto::CreatedFilter {
        eq,
        gt,
        gte,
        lt,
        lte,
    }
}

on_every_backend! {
    async fn transactions_keep_a_running_balance_and_set_the_customer_currency(app) {
        let customer = app.create_customer("name=Ada").await;
        let first = app.post(&customer_transactions_path(&customer), "amount=-500&currency=usd&description=goodwill&metadata[ticket]=42").await.ok();
        assert!(first["id"].as_str().unwrap().starts_with("cbtxn_test_"));
        assert_eq!(first["object"], "customer_balance_transaction");
        assert_eq!(first["amount"], -500);
        assert_eq!(first["ending_balance"], -500);
        assert_eq!(first["currency"], "usd");
        assert_eq!(first["type"], "adjustment");
        assert_eq!(first["customer"], customer.as_str());
        assert_eq!(first["description"], "goodwill");
        assert_eq!(first["metadata"], json!({"ticket": "42"}));

        let second = app.post(&customer_transactions_path(&customer), "amount=200&currency=USD").await.ok();
        assert_eq!(second["ending_balance"], -300);
        assert_eq!(second["currency"], "usd");
        let euros = app.post(&customer_transactions_path(&customer), "amount=-1000&currency=eur").await.ok();
        assert_eq!(euros["ending_balance"], -1000);

        let after = app.get(&format!("/v1/customers/{customer}")).await.ok();
        assert_eq!(after["currency"], "usd", "the first transaction sets the currency");
        assert_eq!(after["balance"], -300);
        assert_eq!(after["invoice_credit_balance"], json!({"usd": 300, "eur": 1000}), "credit is positive here");
    }

    async fn a_transaction_is_retrieved_updated_and_expanded(app) {
        let customer = app.create_customer("name=Ada").await;
        let created = app.post(&customer_transactions_path(&customer), "amount=750&currency=usd&metadata[a]=1&metadata[b]=2").await.ok();
        let id = created["id"].as_str().unwrap();
        let path = format!("{}/{id}", customer_transactions_path(&customer));

        assert_eq!(app.get(&path).await.ok(), created);

        let updated = app.post(&path, "description=fixed&metadata[a]=&metadata[c]=3").await.ok();
        assert_eq!(updated["description"], "fixed");
        assert_eq!(updated["metadata"], json!({"b": "2", "c": "3"}));
        assert_eq!(updated["amount"], 750, "amounts never change");
        assert_eq!(updated["ending_balance"], 750);

        let cleared = app.post(&path, "description=&metadata=").await.ok();
        assert_eq!(cleared["description"], Value::Null);
        assert_eq!(cleared["metadata"], json!({}));

        let expanded = app.get(&format!("{path}?expand[]=customer")).await.ok();
        assert_eq!(expanded["customer"]["id"], customer.as_str());
        assert_eq!(expanded["customer"]["object"], "customer");
        assert_eq!(expanded["customer"]["balance"], 750);

        let list = app.get(&format!("{}?expand[0]=data.customer", customer_transactions_path(&customer))).await.ok();
        assert_eq!(list["data"][0]["customer"]["id"], customer.as_str());
        app.get(&format!("{}?expand[]=customer", customer_transactions_path(&customer))).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("expand"));
    }

    async fn transaction_lists_page_newest_first_with_has_more(app) {
        let customer = app.create_customer("name=Ada").await;
        let mut ids = Vec::new();
        for amount in 1..=7 {
            let txn = app.post(&customer_transactions_path(&customer), &format!("amount={amount}&currency=usd")).await.ok();
            ids.push(txn["id"].as_str().unwrap().to_string());
        }
        ids.reverse();
        let ids_of = |page: &Value| -> Vec<String> {
            page["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
        };
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = match &cursor {
                Some(id) => format!("?limit=3&starting_after={id}"),
                None => "?limit=3".to_string(),
            };
            let page = app.get(&format!("{}{query}", customer_transactions_path(&customer))).await.ok();
            assert_eq!(page["url"], customer_transactions_path(&customer));
            seen.extend(ids_of(&page));
            if page["has_more"] == false {
                break;
            }
            cursor = seen.last().cloned();
        }
        assert_eq!(seen, ids);
        let before = app.get(&format!("{}?limit=2&ending_before={}", customer_transactions_path(&customer), ids[3])).await.ok();
        assert_eq!(ids_of(&before), ids[1..3]);
        assert_eq!(before["has_more"], true);

        let none_for_invoice = app.get(&format!("{}?invoice=in_123", customer_transactions_path(&customer))).await.ok();
        assert_eq!(none_for_invoice["data"], json!([]));
    }

    async fn bad_transaction_input_gets_stripe_errors(app) {
        let customer = app.create_customer("name=Ada").await;
        let path = customer_transactions_path(&customer);
        app.post(&path, "currency=usd").await
            .assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("amount"));
        app.post(&path, "amount=5").await
            .assert_error(400, "invalid_request_error", Some("parameter_missing"), Some("currency"));
        app.post(&path, "amount=1.5&currency=usd").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid_integer"), Some("amount"));
        app.post(&path, "amount=ten&currency=usd").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid_integer"), Some("amount"));
        app.post(&path, "amount=0&currency=usd").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("amount"));
        app.post(&path, "amount=10000000000000&currency=usd").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("amount"));
        app.post(&path, "amount=5&currency=zzz").await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("currency"));
        app.post(&path, &format!("amount=5&currency=usd&description={}", "d".repeat(351))).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("description"));
        app.post(&path, "amount=5&currency=usd&type=credit_note").await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("type"));
        app.post(&customer_transactions_path("cus_test_missing"), "amount=5&currency=usd").await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("customer"));
        app.get(&customer_transactions_path("cus_test_missing")).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("customer"));
        app.get(&format!("{path}/cbtxn_test_missing")).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("transaction"));
        app.get(&format!("{path}?limit=1000")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("limit"));
        app.get(&format!("{path}?starting_after=cbtxn_test_x&ending_before=cbtxn_test_y")).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some("ending_before"));

        let txn = app.post(&path, "amount=5&currency=usd").await.ok();
        let txn_path = format!("{path}/{}", txn["id"].as_str().unwrap());
        app.post(&txn_path, "amount=10").await
            .assert_error(400, "invalid_request_error", Some("parameter_unknown"), Some("amount"));
        app.post(&txn_path, &format!("metadata[{}]=v", "k".repeat(41))).await
            .assert_error(400, "invalid_request_error", Some("parameter_invalid"), Some(&format!("metadata[{}]", "k".repeat(41))));
        // A transaction is only reachable through its own customer.
        let other = app.create_customer("name=Other").await;
        app.get(&format!("{}/{}", customer_transactions_path(&other), txn["id"].as_str().unwrap())).await
            .assert_error(404, "invalid_request_error", Some("resource_missing"), Some("transaction"));

        let ledger = app.get(&path).await.ok();
        assert_eq!(ledger["data"].as_array().unwrap().len(), 1, "no failed request wrote anything");
        assert_eq!(app.get(&format!("/v1/customers/{customer}")).await.ok()["balance"], 5);
    }

    async fn lists_filter_by_created_and_invoice_and_page_within_the_filter(app) {
        let customer = app.create_customer("name=Ada").await;
        let path = customer_transactions_path(&customer);
        let mut client = app.balance_transactions().await;
        // Three batches, ten seconds apart: times t[0..3], IDs newest first in each.
        let mut times = Vec::new();
        let mut batches: Vec<Vec<String>> = Vec::new();
        for size in [3, 4, 2] {
            times.push(app.now());
            let mut ids = Vec::new();
            for _ in 0..size {
                ids.push(id_of(&app.post(&path, "amount=1&currency=usd").await.ok()));
            }
            ids.reverse();
            batches.push(ids);
            app.advance(10);
        }
        let (t0, t1, t2) = (times[0], times[1], times[2]);
        let newest_first = |which: &[usize]| -> Vec<String> {
            which.iter().rev().flat_map(|batch| batches[*batch].clone()).collect()
        };

        let exact = Query::new(&format!("created={t0}")).created(created(Some(t0), None, None, None, None));
        assert_eq!(list_both_ways(&app, &mut client, &customer, &exact).await, (newest_first(&[0]), false));
        let after = Query::new(&format!("created[gt]={t0}")).created(created(None, Some(t0), None, None, None));
        assert_eq!(list_both_ways(&app, &mut client, &customer, &after).await.0, newest_first(&[1, 2]));
        let until = Query::new(&format!("created[lte]={t1}")).created(created(None, None, None, None, Some(t1)));
        assert_eq!(list_both_ways(&app, &mut client, &customer, &until).await.0, newest_first(&[0, 1]));

        // Pages of the middle batch only: forward, then back again.
        let middle = |extra: &str| format!("created[gte]={t1}&created[lt]={t2}&{extra}");
        let range = created(None, None, Some(t1), Some(t2), None);
        let first = Query::new(&middle("limit=3")).created(range).page(3, None, None);
        let (first_ids, more) = list_both_ways(&app, &mut client, &customer, &first).await;
        assert_eq!((first_ids.as_slice(), more), (&batches[1][..3], true));
        let next = Query::new(&middle(&format!("limit=3&starting_after={}", first_ids[2])))
            .created(range)
            .page(3, Some(&first_ids[2]), None);
        assert_eq!(list_both_ways(&app, &mut client, &customer, &next).await, (batches[1][3..].to_vec(), false));
        let back = Query::new(&middle(&format!("limit=3&ending_before={}", batches[1][3])))
            .created(range)
            .page(3, None, Some(&batches[1][3]));
        assert_eq!(list_both_ways(&app, &mut client, &customer, &back).await, (batches[1][..3].to_vec(), false));
        // A cursor outside the filter is still a position in the list.
        let from_newest = Query::new(&format!("created[gte]={t1}&starting_after={}", batches[2][0]))
            .created(created(None, None, Some(t1), None, None))
            .page(10, Some(&batches[2][0]), None);
        let mut expected = batches[2][1..].to_vec();
        expected.extend(batches[1].clone());
        assert_eq!(list_both_ways(&app, &mut client, &customer, &from_newest).await, (expected, false));
        let past_the_end = Query::new(&format!("created[gte]={t2}&starting_after={}", batches[0][0]))
            .created(created(None, None, Some(t2), None, None))
            .page(10, Some(&batches[0][0]), None);
        assert_eq!(list_both_ways(&app, &mut client, &customer, &past_the_end).await, (Vec::new(), false));

        // `invoice`: creditd writes no invoice-linked entries yet, so link two by hand.
        let linked = [batches[1][1].clone(), batches[0][2].clone()];
        app.services
            .db
            .writer()
            .execute_unprepared(&format!(
                "UPDATE customer_balance_transactions SET invoice = 'in_filter' WHERE id IN ('{}', '{}')",
                linked[0], linked[1]
            ))
            .await
            .expect("link to an invoice");
        let invoice = Query::new("invoice=in_filter").invoice("in_filter");
        assert_eq!(list_both_ways(&app, &mut client, &customer, &invoice).await, (linked.to_vec(), false));
        let one = Query::new("invoice=in_filter&limit=1").invoice("in_filter").page(1, None, None);
        assert_eq!(list_both_ways(&app, &mut client, &customer, &one).await, (vec![linked[0].clone()], true));
        let rest_of_it = Query::new(&format!("invoice=in_filter&limit=1&starting_after={}", linked[0]))
            .invoice("in_filter")
            .page(1, Some(&linked[0]), None);
        assert_eq!(list_both_ways(&app, &mut client, &customer, &rest_of_it).await, (vec![linked[1].clone()], false));
        let both = Query::new(&format!("invoice=in_filter&created={t1}"))
            .invoice("in_filter")
            .created(created(Some(t1), None, None, None, None));
        assert_eq!(list_both_ways(&app, &mut client, &customer, &both).await, (vec![linked[0].clone()], false));
        let other = Query::new("invoice=in_other").invoice("in_other");
        assert_eq!(list_both_ways(&app, &mut client, &customer, &other).await, (Vec::new(), false));
    }

    async fn bad_list_filters_are_refused_alike_over_rest_and_grpc(app) {
        let customer = app.create_customer("name=Ada").await;
        let path = customer_transactions_path(&customer);
        let mut client = app.balance_transactions().await;
        let long = "i".repeat(5001);
        let cases = [
            ("created[gt]=-1", created(None, Some(-1), None, None, None), None, "parameter_invalid", "created[gt]"),
            ("created[lte]=-10", created(None, None, None, None, Some(-10)), None, "parameter_invalid", "created[lte]"),
            ("created=-5", created(Some(-5), None, None, None, None), None, "parameter_invalid", "created"),
            ("invoice=", created(None, None, None, None, None), Some(String::new()), "parameter_invalid_empty", "invoice"),
            (&*format!("invoice={long}"), created(None, None, None, None, None), Some(long.clone()), "parameter_invalid", "invoice"),
        ];
        for (query, created, invoice, code, param) in cases {
            let rest = app.get(&format!("{path}?{query}")).await;
            let request = proto::ListCustomerBalanceTransactionsRequest {
                customer: customer.clone(),
                created: Some(created),
                invoice,
                ..Default::default()
            };
            let grpc = client.list_customer_balance_transactions(app.grpc(request)).await.unwrap_err();
            assert_same_refusal(&rest, &grpc, code, param);
        }

        // Shapes only a form can get wrong.
        for (query, code, param) in [
            ("created[gt]=soon", "parameter_invalid_integer", "created[gt]"),
            ("created=1.5", "parameter_invalid_integer", "created"),
            ("created=", "parameter_invalid", "created"),
            ("created[between]=1", "parameter_unknown", "created[between]"),
        ] {
            app.get(&format!("{path}?{query}")).await
                .assert_error(400, "invalid_request_error", Some(code), Some(param));
        }
        // And one only a message can: the exact time together with bounds.
        let both = proto::ListCustomerBalanceTransactionsRequest {
            customer: customer.clone(),
            created: Some(created(Some(5), Some(3), None, None, None)),
            ..Default::default()
        };
        let status = client.list_customer_balance_transactions(app.grpc(both)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.get_error_details().error_info().unwrap().metadata["param"], "created");
    }

    async fn the_ledger_works_over_grpc(app) {
        let mut customers = app.customers().await;
        let mut txns = app.balance_transactions().await;
        let customer = customers
            .create_customer(app.grpc(proto::CreateCustomerRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let created = txns
            .create_customer_balance_transaction(app.grpc(proto::CreateCustomerBalanceTransactionRequest {
                customer: customer.id.clone(),
                amount: -250,
                currency: "usd".into(),
                description: Some("refund".into()),
                metadata: [("k".to_string(), "v".to_string())].into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.ending_balance, -250);
        assert_eq!(created.r#type, "adjustment");
        assert_eq!(created.object, "customer_balance_transaction");

        let updated = txns
            .update_customer_balance_transaction(app.grpc(proto::UpdateCustomerBalanceTransactionRequest {
                customer: customer.id.clone(),
                id: created.id.clone(),
                description: Some(String::new()),
                clear_metadata: true,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.description, None);
        assert!(updated.metadata.is_empty());

        let fetched = txns
            .get_customer_balance_transaction(app.grpc(proto::GetCustomerBalanceTransactionRequest {
                customer: customer.id.clone(),
                id: created.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fetched, updated);

        let list = grpc_customer_transactions(&mut txns, &app, &customer.id).await;
        assert_eq!(list.data, vec![updated]);
        assert_eq!(list.url, customer_transactions_path(&customer.id));

        let customer = customers
            .get_customer(app.grpc(proto::GetCustomerRequest { id: customer.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(customer.balance, -250);
        assert_eq!(customer.invoice_credit_balance["usd"], 250);

        let missing_amount = txns
            .create_customer_balance_transaction(app.grpc(proto::CreateCustomerBalanceTransactionRequest {
                customer: customer.id.clone(),
                currency: "usd".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(missing_amount.code(), Code::InvalidArgument);
        let unknown_customer = txns
            .create_customer_balance_transaction(app.grpc(proto::CreateCustomerBalanceTransactionRequest {
                customer: "cus_test_nope".into(),
                amount: 5,
                currency: "usd".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(unknown_customer.code(), Code::NotFound);
    }
}
