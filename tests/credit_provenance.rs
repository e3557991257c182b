//! Why each credit was spent: `ApplyCredits` answers, per draw, the grant's rank in the
//! burn-down order and the key that put it before the next eligible grant, and every grant it
//! skipped with why. A table of cases covers every key of the order (priority, a priority tie
//! broken by expiry, an expiry tie by category, a category tie by effective time, a full tie by
//! creation) and every skip reason (scope, future grant, other currency, exhausted, voided,
//! expired). Re-applying the line returns the same explanation, and `ExplainApplication`
//! returns it again later, with the entries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::BTreeMap;

use common::TestApp;
use common::credits::{
    BalanceClient, GrantClient, applicability, invoice_id, metered_line, metered_scope, monetary,
};
use creditd::grpc::proto;

/// A grant of a case, relative to the customer's now.
#[derive(Clone)]
struct Spec {
    label: &'static str,
    value: i64,
    currency: &'static str,
    priority: i64,
    expires_in: Option<i64>,
    promotional: bool,
    /// Seconds from now (negative: already effective for that long).
    effective_in: i64,
    prices: Option<&'static [&'static str]>,
    /// What happens to it before the line is applied.
    then: Then,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    Nothing,
    Void,
    Expire,
    /// Used up by an earlier line.
    UseUp,
}

fn spec(label: &'static str) -> Spec {
    Spec {
        label,
        value: 100,
        currency: "usd",
        priority: 50,
        expires_in: Some(1_000),
        promotional: false,
        effective_in: -100,
        prices: None,
        then: Then::Nothing,
    }
}

/// `(label, amount, rank, next label, deciding key)`.
type Draw = (
    &'static str,
    i64,
    u32,
    Option<&'static str>,
    Option<&'static str>,
);

/// What a case expects: the draws as `(label, amount, rank, next label, deciding key)`, and
/// the skipped grants as `(label, reason)`.
struct Case {
    name: &'static str,
    grants: Vec<Spec>,
    amount_due: i64,
    draws: Vec<Draw>,
    skipped: Vec<(&'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "priority decides",
            grants: vec![
                Spec {
                    priority: 20,
                    ..spec("b")
                },
                Spec {
                    priority: 10,
                    expires_in: Some(5_000),
                    ..spec("a")
                },
            ],
            amount_due: 150,
            draws: vec![
                ("a", 100, 1, Some("b"), Some("priority")),
                ("b", 50, 2, None, None),
            ],
            skipped: vec![],
        },
        Case {
            name: "a priority tie broken by expiry",
            grants: vec![
                Spec {
                    expires_in: None,
                    ..spec("never")
                },
                Spec {
                    expires_in: Some(500),
                    ..spec("soon")
                },
            ],
            amount_due: 60,
            // Only the first is drawn; it still names the grant it went before.
            draws: vec![("soon", 60, 1, Some("never"), Some("expires_at"))],
            skipped: vec![],
        },
        Case {
            name: "an expiry tie broken by category",
            grants: vec![
                spec("paid"),
                Spec {
                    promotional: true,
                    ..spec("promo")
                },
            ],
            amount_due: 200,
            draws: vec![
                ("promo", 100, 1, Some("paid"), Some("category")),
                ("paid", 100, 2, None, None),
            ],
            skipped: vec![],
        },
        Case {
            name: "a category tie broken by effective time",
            grants: vec![
                Spec {
                    effective_in: -50,
                    ..spec("later")
                },
                Spec {
                    effective_in: -90,
                    ..spec("earlier")
                },
            ],
            amount_due: 120,
            draws: vec![
                ("earlier", 100, 1, Some("later"), Some("effective_at")),
                ("later", 20, 2, None, None),
            ],
            skipped: vec![],
        },
        Case {
            name: "a full tie broken by creation",
            grants: vec![spec("first"), spec("second")],
            amount_due: 130,
            draws: vec![
                ("first", 100, 1, Some("second"), Some("created")),
                ("second", 30, 2, None, None),
            ],
            skipped: vec![],
        },
        Case {
            name: "every skip reason",
            grants: vec![
                Spec {
                    priority: 0,
                    prices: Some(&["price_other"]),
                    ..spec("scope")
                },
                Spec {
                    priority: 0,
                    effective_in: 100,
                    ..spec("future")
                },
                Spec {
                    priority: 0,
                    currency: "eur",
                    ..spec("euros")
                },
                Spec {
                    priority: 0,
                    then: Then::UseUp,
                    ..spec("used")
                },
                Spec {
                    priority: 0,
                    then: Then::Void,
                    ..spec("voided")
                },
                Spec {
                    priority: 0,
                    then: Then::Expire,
                    ..spec("expired")
                },
                Spec {
                    priority: 90,
                    ..spec("payer")
                },
            ],
            amount_due: 40,
            draws: vec![("payer", 40, 1, None, None)],
            skipped: vec![
                ("scope", "out_of_scope"),
                ("future", "not_yet_effective"),
                ("euros", "other_currency"),
                ("used", "exhausted"),
                ("voided", "voided"),
                ("expired", "expired"),
            ],
        },
        Case {
            name: "nothing eligible",
            grants: vec![Spec {
                currency: "eur",
                ..spec("euros")
            }],
            amount_due: 40,
            draws: vec![],
            skipped: vec![("euros", "other_currency")],
        },
    ]
}

struct Clients<'a> {
    app: &'a TestApp,
    grants: GrantClient,
    balance: BalanceClient,
}

impl Clients<'_> {
    async fn make_grant(&mut self, customer: &str, spec: &Spec) -> String {
        let now = self.app.now();
        let scope = match spec.prices {
            None => metered_scope(),
            Some(prices) => proto::CreditScope {
                price_type: None,
                prices: prices
                    .iter()
                    .map(|id| proto::ApplicablePrice { id: id.to_string() })
                    .collect(),
            },
        };
        let request = proto::CreateCreditGrantRequest {
            customer: customer.to_string(),
            amount: monetary(spec.currency, spec.value),
            applicability_config: applicability(scope),
            category: Some(
                if spec.promotional {
                    "promotional"
                } else {
                    "paid"
                }
                .to_string(),
            ),
            priority: Some(spec.priority),
            effective_at: Some(now + spec.effective_in),
            expires_at: spec.expires_in.map(|expires_in| now + expires_in),
            ..Default::default()
        };
        let id = self
            .grants
            .create_credit_grant(self.app.grpc(request))
            .await
            .expect("create grant")
            .into_inner()
            .id;
        match spec.then {
            Then::Nothing => {}
            Then::Void => {
                self.grants
                    .void_credit_grant(
                        self.app
                            .grpc(proto::VoidCreditGrantRequest { id: id.clone() }),
                    )
                    .await
                    .expect("void");
            }
            Then::Expire => {
                self.grants
                    .expire_credit_grant(
                        self.app
                            .grpc(proto::ExpireCreditGrantRequest { id: id.clone() }),
                    )
                    .await
                    .expect("expire");
            }
            Then::UseUp => {
                // Made before the case's other grants, so the only one this line can draw from.
                let line = metered_line(
                    customer,
                    spec.currency,
                    &invoice_id("use"),
                    "il_1",
                    spec.value,
                );
                let applied = self
                    .balance
                    .apply_credits(self.app.grpc(line))
                    .await
                    .expect("use up")
                    .into_inner();
                assert_eq!(applied.applied, spec.value, "{applied:?}");
            }
        }
        id
    }
}

on_every_backend! {
    async fn every_draw_names_its_rank_and_deciding_key_and_every_skip_its_reason(app) {
        let channel = app.channel().await;
        let mut clients = Clients {
            app: &app,
            grants: GrantClient::new(channel.clone()),
            balance: BalanceClient::new(channel),
        };
        for case in cases() {
            let customer = app.create_customer("name=Provenance").await;
            let mut ids: BTreeMap<&str, String> = BTreeMap::new();
            // A grant to use up is made (and used) before the others exist, so it is the
            // only one an earlier line can draw from.
            let (first, rest): (Vec<&Spec>, Vec<&Spec>) =
                case.grants.iter().partition(|spec| spec.then == Then::UseUp);
            for spec in first.into_iter().chain(rest) {
                let id = clients.make_grant(&customer, spec).await;
                ids.insert(spec.label, id);
            }
            let label = |id: &str| {
                ids.iter()
                    .find(|(_, grant)| grant.as_str() == id)
                    .map(|(label, _)| *label)
                    .unwrap_or_else(|| panic!("{}: unknown grant {id}", case.name))
            };
            let line = metered_line(&customer, "usd", &invoice_id("why"), "il_1", case.amount_due);
            let response = clients
                .balance
                .apply_credits(app.grpc(line.clone()))
                .await
                .expect("apply")
                .into_inner();
            let explanation = response.explanation.clone().expect("an explanation");
            let draws: Vec<_> = explanation
                .draws
                .iter()
                .map(|draw| {
                    (
                        label(&draw.credit_grant),
                        draw.amount,
                        draw.rank,
                        draw.next_credit_grant.as_deref().map(label),
                        draw.decided_by.as_deref(),
                    )
                })
                .collect();
            assert_eq!(draws, case.draws, "{}: draws", case.name);
            let mut skipped: Vec<_> = explanation
                .skipped
                .iter()
                .map(|skipped| (label(&skipped.credit_grant), skipped.reason.as_str()))
                .collect();
            skipped.sort_unstable();
            let mut wanted = case.skipped.clone();
            wanted.sort_unstable();
            assert_eq!(skipped, wanted, "{}: skipped", case.name);
            // The draws are the entries, grant for grant and amount for amount.
            let entries: Vec<(String, i64)> = response
                .entries
                .iter()
                .map(|entry| {
                    let debit = entry.debit.as_ref().expect("a debit");
                    let amount = debit.amount.as_ref().and_then(|a| a.monetary.as_ref()).expect("amount");
                    (entry.credit_grant.clone(), amount.value)
                })
                .collect();
            let drawn: Vec<(String, i64)> = explanation
                .draws
                .iter()
                .map(|draw| (draw.credit_grant.clone(), draw.amount))
                .collect();
            assert_eq!(entries, drawn, "{}: entries", case.name);

            // Applying the line again applies nothing more and explains the same.
            let again = clients
                .balance
                .apply_credits(app.grpc(line.clone()))
                .await
                .expect("apply again")
                .into_inner();
            assert_eq!(again, response, "{}: re-apply", case.name);

            // Later, the stored explanation is the one the response carried.
            let explained = clients
                .balance
                .explain_application(app.grpc(proto::ExplainApplicationRequest {
                    customer: customer.clone(),
                    invoice: line.invoice.clone(),
                    invoice_line_item: line.invoice_line_item.clone(),
                }))
                .await
                .expect("explain")
                .into_inner();
            assert_eq!(explained.explanation, response.explanation, "{}: explain", case.name);
            assert_eq!(explained.entries, response.entries, "{}: explain entries", case.name);
            assert_eq!(
                (explained.applied, explained.amount_due, explained.currency.as_str()),
                (response.applied, case.amount_due, "usd"),
                "{}",
                case.name
            );
            assert_eq!(
                (explained.customer.as_str(), explained.invoice.as_str(), explained.invoice_line_item.as_str()),
                (customer.as_str(), line.invoice.as_str(), line.invoice_line_item.as_str())
            );
        }
    }

    async fn explaining_a_line_nobody_applied_is_not_found(app) {
        let mut balance = BalanceClient::new(app.channel().await);
        let customer = app.create_customer("name=Nobody").await;
        let other = app.create_customer("name=Other").await;
        let mut grants = GrantClient::new(app.channel().await);
        let mut grant = common::credits::metered_grant(&customer, "usd", 500);
        grant.priority = Some(1);
        grants.create_credit_grant(app.grpc(grant)).await.expect("grant");
        let invoice = invoice_id("nobody");
        balance
            .apply_credits(app.grpc(metered_line(&customer, "usd", &invoice, "il_1", 10)))
            .await
            .expect("apply");
        let ask = |customer: &str, item: &str| proto::ExplainApplicationRequest {
            customer: customer.to_string(),
            invoice: invoice.clone(),
            invoice_line_item: item.to_string(),
        };
        for (request, code) in [
            (ask(&customer, "il_2"), tonic::Code::NotFound),
            (ask(&other, "il_1"), tonic::Code::NotFound),
            // A missing customer named by a parameter: as everywhere, 400 resource_missing.
            (ask("cus_missing", "il_1"), tonic::Code::InvalidArgument),
            (ask(&customer, ""), tonic::Code::InvalidArgument),
        ] {
            let status = balance
                .explain_application(app.grpc(request.clone()))
                .await
                .expect_err("refused");
            assert_eq!(status.code(), code, "{request:?}: {status:?}");
        }
        let found = balance
            .explain_application(app.grpc(ask(&customer, "il_1")))
            .await
            .expect("explain")
            .into_inner();
        assert_eq!(found.applied, 10);
        assert_eq!(found.explanation.expect("explanation").draws.len(), 1);
    }
}
