//! The ledger audit (`creditd audit`, `AdminService.Audit`): a ledger built through the API
//! audits clean; each corruption written straight into the database is reported as exactly the
//! findings it causes, naming the right object; the CLI exits 1 and prints them (or JSON); the
//! RPC only sees the caller's account and mode.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::BTreeSet;

use common::credits::{
    BalanceClient, GrantClient, create_customer_as, create_customer_transaction_as, invoice_id,
    metered_grant, metered_line,
};
use common::{Backend, TestApp, grpc_request};
use creditd::grpc::proto;
use creditd::service::audit::{AuditReport, Checked, kind};
use sea_orm::ConnectionTrait;
use tonic::transport::Channel;

type AdminClient = proto::admin_service_client::AdminServiceClient<Channel>;

/// One tenant's view of the app: its key, over REST and gRPC.
struct Caller<'a> {
    app: &'a TestApp,
    key: String,
    grants: GrantClient,
    balance: BalanceClient,
}

impl<'a> Caller<'a> {
    async fn new(app: &'a TestApp, key: &str) -> Caller<'a> {
        let channel = app.channel().await;
        Caller {
            app,
            key: key.to_string(),
            grants: GrantClient::new(channel.clone()),
            balance: BalanceClient::new(channel),
        }
    }

    fn grpc<T>(&self, message: T) -> tonic::Request<T> {
        grpc_request(message, Some(&self.key), None)
    }

    async fn customer(&self, name: &str) -> String {
        create_customer_as(self.app, &self.key, &format!("name={name}")).await
    }

    /// A customer balance transaction; returns its ID.
    async fn balance_transaction(&self, customer: &str, amount: i64, currency: &str) -> String {
        let body = format!("amount={amount}&currency={currency}");
        create_customer_transaction_as(self.app, &self.key, customer, &body).await
    }

    async fn grant(&mut self, customer: &str, currency: &str, value: i64) -> String {
        let request = self.grpc(metered_grant(customer, currency, value));
        self.grants
            .create_credit_grant(request)
            .await
            .expect("create credit grant")
            .into_inner()
            .id
    }

    async fn apply(
        &mut self,
        customer: &str,
        currency: &str,
        invoice: &str,
        line: &str,
        amount_due: i64,
    ) -> proto::ApplyCreditsResponse {
        let request = self.grpc(metered_line(customer, currency, invoice, line, amount_due));
        self.balance
            .apply_credits(request)
            .await
            .expect("apply credits")
            .into_inner()
    }

    async fn void(&mut self, grant: &str) {
        let request = self.grpc(proto::VoidCreditGrantRequest {
            id: grant.to_string(),
        });
        self.grants.void_credit_grant(request).await.expect("void");
    }

    async fn expire(&mut self, grant: &str) {
        let request = self.grpc(proto::ExpireCreditGrantRequest {
            id: grant.to_string(),
        });
        self.grants
            .expire_credit_grant(request)
            .await
            .expect("expire");
    }

    async fn reinstate(&mut self, customer: &str, invoice: &str) -> i64 {
        let request = self.grpc(proto::ReinstateInvoiceCreditsRequest {
            customer: customer.to_string(),
            invoice: invoice.to_string(),
        });
        self.balance
            .reinstate_invoice_credits(request)
            .await
            .expect("reinstate")
            .into_inner()
            .reinstated
    }

    /// The audit over gRPC with this caller's key.
    async fn audit_rpc(&self) -> proto::AuditReport {
        let mut admin = AdminClient::new(self.app.channel().await);
        admin
            .audit(self.grpc(proto::AuditRequest {}))
            .await
            .expect("audit over gRPC")
            .into_inner()
    }
}

/// A ledger built through the API, and the IDs the corruptions aim at.
struct Ledger {
    /// Customer A: usd -500, +200, -300 (balance -600) and eur +1000, -250 (balance 750).
    alice: String,
    alice_usd: [String; 3],
    /// Customer B: usd +700.
    bob: String,
    /// usd 3000: applied 1000 (in_a/il_1), 2000 (in_b/il_1, reinstated), 200 (in_a/il_2);
    /// 1800 left.
    g1: String,
    /// usd 2000: applied 500 (in_b/il_1), voided (1500), reinstated 500 and voided again.
    g2: String,
    /// eur 1000, expired.
    g3: String,
    in_a: String,
    in_b: String,
    /// The `credits_applied` entry of in_a/il_2 (200 from g1).
    in_a_il_2_entry: String,
}

/// What [`build_ledger`] writes.
const LEDGER_CHECKED: Checked = Checked {
    customer_balances: 3,
    customer_balance_transactions: 6,
    credit_grants: 3,
    // g1: granted, 3 applied, 1 reinstated; g2: granted, applied, voided, reinstated, voided
    // again; g3: granted, expired.
    credit_balance_transactions: 12,
    // in_a/il_1, in_a/il_2, in_b/il_1, and an eur line nothing could be applied to.
    credit_applications: 4,
    credit_holds: 0,
};

async fn build_ledger(caller: &mut Caller<'_>) -> Ledger {
    let alice = caller.customer("Alice").await;
    let bob = caller.customer("Bob").await;
    let t1 = caller.balance_transaction(&alice, -500, "usd").await;
    let t2 = caller.balance_transaction(&alice, 200, "usd").await;
    let t3 = caller.balance_transaction(&alice, -300, "usd").await;
    caller.balance_transaction(&alice, 1000, "eur").await;
    caller.balance_transaction(&alice, -250, "eur").await;
    caller.balance_transaction(&bob, 700, "usd").await;

    let g1 = caller.grant(&alice, "usd", 3000).await;
    let g2 = caller.grant(&alice, "usd", 2000).await;
    let g3 = caller.grant(&alice, "eur", 1000).await;
    let in_a = invoice_id("a");
    let in_b = invoice_id("b");
    let in_c = invoice_id("c");
    assert_eq!(
        caller
            .apply(&alice, "usd", &in_a, "il_1", 1000)
            .await
            .applied,
        1000
    );
    assert_eq!(
        caller
            .apply(&alice, "usd", &in_b, "il_1", 2500)
            .await
            .applied,
        2500
    );
    caller.void(&g2).await;
    assert_eq!(caller.reinstate(&alice, &in_b).await, 2500);
    caller.expire(&g3).await;
    assert_eq!(
        caller
            .apply(&alice, "eur", &in_c, "il_1", 300)
            .await
            .applied,
        0
    );
    let applied = caller.apply(&alice, "usd", &in_a, "il_2", 200).await;
    assert_eq!(applied.entries.len(), 1, "{applied:?}");
    assert_eq!(applied.entries[0].credit_grant, g1, "{applied:?}");
    Ledger {
        alice,
        alice_usd: [t1, t2, t3],
        bob,
        g1,
        g2,
        g3,
        in_a,
        in_b,
        in_a_il_2_entry: applied.entries[0].id.clone(),
    }
}

/// Writes straight into the database, bypassing the service (one statement, committed).
async fn corrupt(app: &TestApp, sql: &str) {
    let tx = app.services.db.begin().await.expect("begin");
    tx.execute_unprepared(sql)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    tx.commit().await.expect("commit");
}

/// `(kind, object)` of every finding.
fn findings(report: &AuditReport) -> BTreeSet<(String, String)> {
    report
        .findings
        .iter()
        .map(|finding| (finding.kind.clone(), finding.object.clone()))
        .collect()
}

fn expected(findings: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    findings
        .iter()
        .map(|(kind, object)| (kind.to_string(), object.to_string()))
        .collect()
}

fn from_proto(report: proto::AuditReport) -> AuditReport {
    let checked = report.checked.expect("checked");
    AuditReport {
        checked: Checked {
            customer_balances: checked.customer_balances,
            customer_balance_transactions: checked.customer_balance_transactions,
            credit_grants: checked.credit_grants,
            credit_balance_transactions: checked.credit_balance_transactions,
            credit_applications: checked.credit_applications,
            credit_holds: checked.credit_holds,
        },
        findings: report
            .findings
            .into_iter()
            .map(|finding| creditd::service::audit::Finding {
                kind: finding.kind,
                object: finding.object,
                expected: finding.expected,
                actual: finding.actual,
                message: finding.message,
            })
            .collect(),
    }
}

/// Audits the app key's tenant through the service and the RPC, checks they agree, and returns
/// the report.
async fn audit(app: &TestApp) -> AuditReport {
    let report = app
        .services
        .audit(&app.context().await)
        .await
        .expect("audit through the service");
    let caller = Caller::new(app, &app.key).await;
    assert_eq!(
        from_proto(caller.audit_rpc().await),
        report,
        "RPC and service agree"
    );
    for finding in &report.findings {
        assert!(!finding.message.is_empty(), "{finding:?}");
        assert_ne!(finding.expected, finding.actual, "{finding:?}");
    }
    report
}

/// Asserts the audit reports exactly `wanted`.
#[track_caller]
fn assert_findings(report: &AuditReport, step: &str, wanted: &[(&str, &str)]) {
    assert_eq!(
        findings(report),
        expected(wanted),
        "{step}: {:#?}",
        report.findings
    );
}

/// One corruption: what it is, the SQL that does it, the SQL that undoes it, and exactly the
/// `(kind, object)` findings it must cause.
type Step<'a> = (&'a str, String, String, Vec<(&'a str, &'a str)>);

/// Applies each step's corruption, checks the audit reports exactly its findings (and that the
/// counts do not move), repairs it and checks the audit is clean again.
async fn run_steps(app: &TestApp, steps: &[Step<'_>]) {
    for (step, corruption, repair, wanted) in steps {
        corrupt(app, corruption).await;
        let report = audit(app).await;
        assert_findings(&report, step, wanted);
        assert_eq!(report.checked, LEDGER_CHECKED, "{step}");
        corrupt(app, repair).await;
        assert_findings(&audit(app).await, &format!("{step}, repaired"), &[]);
    }
}

/// The result of running `creditd audit`.
struct CliRun {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run_cli(app: &TestApp, json: bool) -> CliRun {
    let url = app.database.url.clone();
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_creditd"));
        command.args(["audit", "--database-url", &url]);
        if json {
            command.arg("--json");
        }
        let output = command
            .env_remove("CREDITD_DATABASE_URL")
            .output()
            .expect("run creditd audit");
        CliRun {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

/// Runs the SQL with the database's own guards (foreign keys and, with `checks`, CHECK
/// constraints) lifted, to write what the schema would refuse. The test database is
/// thrown away afterwards.
async fn corrupt_unguarded(app: &TestApp, sql: &str, checks: bool) {
    match app.backend {
        Backend::Sqlite => {
            // Connection-level pragmas: the writer pool has a single connection.
            let writer = app.services.db.writer();
            let mut pragmas = vec!["PRAGMA foreign_keys = OFF"];
            if checks {
                pragmas.push("PRAGMA ignore_check_constraints = ON");
            }
            for pragma in &pragmas {
                writer.execute_unprepared(pragma).await.expect(pragma);
            }
            writer.execute_unprepared(sql).await.expect(sql);
            writer
                .execute_unprepared("PRAGMA foreign_keys = ON")
                .await
                .expect("foreign keys back on");
            writer
                .execute_unprepared("PRAGMA ignore_check_constraints = OFF")
                .await
                .expect("checks back on");
        }
        Backend::Postgres => {
            let tx = app.services.db.begin().await.expect("begin");
            // Foreign keys are triggers, which a replica session does not fire.
            tx.execute_unprepared("SET LOCAL session_replication_role = replica")
                .await
                .expect("replica role");
            if checks {
                tx.execute_unprepared(
                    "DO $$ DECLARE c record; BEGIN \
                       FOR c IN SELECT conname FROM pg_constraint \
                         WHERE conrelid = 'credit_grants'::regclass AND contype = 'c' LOOP \
                         EXECUTE format('ALTER TABLE credit_grants DROP CONSTRAINT %I', c.conname); \
                       END LOOP; END $$",
                )
                .await
                .expect("drop the grant checks");
            }
            tx.execute_unprepared(sql).await.expect(sql);
            tx.commit().await.expect("commit");
        }
    }
}

on_every_backend! {
    async fn holds_that_overcommit_a_grant_or_do_not_add_up_are_reported(app) {
        let mut holds = proto::credit_hold_service_client::CreditHoldServiceClient::new(app.channel().await);
        let customer = app.create_customer("name=Holder").await;
        let grant = GrantClient::new(app.channel().await)
            .create_credit_grant(app.grpc(metered_grant(&customer, "usd", 100)))
            .await
            .expect("grant")
            .into_inner()
            .id;
        let request = |amount: i64| proto::CreateCreditHoldRequest {
            customer: customer.clone(),
            currency: "usd".into(),
            amount,
            price_type: Some("metered".into()),
            price: None,
            ttl_seconds: None,
            expires_at: None,
        };
        let live = holds.create_credit_hold(app.grpc(request(60))).await.expect("hold").into_inner().id;
        let ended = holds.create_credit_hold(app.grpc(request(30))).await.expect("hold").into_inner().id;
        holds
            .release_credit_hold(app.grpc(proto::ReleaseCreditHoldRequest { id: ended.clone() }))
            .await
            .expect("release");
        let report = audit(&app).await;
        assert_findings(&report, "clean", &[]);
        assert_eq!(report.checked.credit_holds, 1, "the live hold");

        let reserving = |amount: i64| format!("[{{\"credit_grant\":\"{grant}\",\"amount\":{amount}}}]");
        let steps: Vec<Step<'_>> = vec![
            (
                "a live hold reserves more than the grant has left",
                format!("UPDATE credit_holds SET amount = 160, reservations = '{}' WHERE id = '{live}'", reserving(160)),
                format!("UPDATE credit_holds SET amount = 60, reservations = '{}' WHERE id = '{live}'", reserving(60)),
                vec![(kind::HOLD_OVERCOMMITTED, grant.as_str())],
            ),
            (
                "an active hold's amounts do not add up",
                format!("UPDATE credit_holds SET lapsed_amount = 5 WHERE id = '{live}'"),
                format!("UPDATE credit_holds SET lapsed_amount = 0 WHERE id = '{live}'"),
                vec![(kind::HOLD_AMOUNT_MISMATCH, live.as_str())],
            ),
            (
                "a released hold still reserves",
                format!("UPDATE credit_holds SET reservations = '{}' WHERE id = '{ended}'", reserving(30)),
                format!("UPDATE credit_holds SET reservations = '[]' WHERE id = '{ended}'"),
                vec![(kind::HOLD_AMOUNT_MISMATCH, ended.as_str())],
            ),
        ];
        for (step, corruption, repair, wanted) in &steps {
            corrupt(&app, corruption).await;
            assert_findings(&audit(&app).await, step, wanted);
            corrupt(&app, repair).await;
            assert_findings(&audit(&app).await, &format!("{step}, repaired"), &[]);
        }
        // A reservation on a grant of another customer.
        let other = app.create_customer("name=Other").await;
        let foreign = GrantClient::new(app.channel().await)
            .create_credit_grant(app.grpc(metered_grant(&other, "usd", 100)))
            .await
            .expect("grant")
            .into_inner()
            .id;
        corrupt(&app, &format!("UPDATE credit_holds SET reservations = '[{{\"credit_grant\":\"{foreign}\",\"amount\":60}}]' WHERE id = '{live}'")).await;
        assert_findings(&audit(&app).await, "a foreign reservation", &[(kind::HOLD_FOREIGN_RESERVATION, &format!("{live}/{foreign}"))]);
    }

    async fn a_ledger_built_through_the_api_audits_clean_everywhere(app) {
        let mut caller = Caller::new(&app, &app.key).await;
        build_ledger(&mut caller).await;

        let report = audit(&app).await;
        assert_findings(&report, "clean", &[]);
        assert_eq!(report.checked, LEDGER_CHECKED);
        let everything = app.services.audit_everything().await.expect("audit everything");
        assert_eq!(everything, report, "one tenant: the whole database is the tenant");

        let cli = run_cli(&app, false).await;
        assert_eq!(cli.status, Some(0), "stdout: {}\nstderr: {}", cli.stdout, cli.stderr);
        assert!(cli.stdout.contains("no findings"), "{}", cli.stdout);
        assert!(cli.stdout.contains("checked 3 customer balances, 6 customer balance transactions, 3 credit grants, 12 credit balance transactions, 4 credit applications"), "{}", cli.stdout);
        let cli = run_cli(&app, true).await;
        assert_eq!(cli.status, Some(0), "stdout: {}\nstderr: {}", cli.stdout, cli.stderr);
        let json: AuditReport = serde_json::from_str(&cli.stdout).expect("--json prints the report");
        assert_eq!(json, report);

        // Health and reflection know the service.
        let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
        let response = health
            .check(tonic_health::pb::HealthCheckRequest { service: "creditd.v1.AdminService".into() })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(response.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

        // Without a key there is no audit.
        let mut admin = AdminClient::new(app.channel().await);
        let status = admin.audit(proto::AuditRequest {}).await.expect_err("no key");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    async fn every_customer_ledger_corruption_is_reported_as_exactly_its_findings(app) {
        let mut caller = Caller::new(&app, &app.key).await;
        let ledger = build_ledger(&mut caller).await;
        let alice_usd = format!("{}/usd", ledger.alice);
        let [t1, t2, t3] = &ledger.alice_usd;
        let balance = format!("customer_id = '{}' AND currency = 'usd'", ledger.alice);
        let steps: Vec<Step> = vec![
            (
                "balance changed",
                format!("UPDATE customer_balances SET balance = balance + 7 WHERE {balance}"),
                format!("UPDATE customer_balances SET balance = balance - 7 WHERE {balance}"),
                vec![(kind::CUSTOMER_BALANCE_MISMATCH, alice_usd.as_str())],
            ),
            (
                "transaction count changed",
                format!("UPDATE customer_balances SET transaction_count = 4 WHERE {balance}"),
                format!("UPDATE customer_balances SET transaction_count = 3 WHERE {balance}"),
                vec![(kind::TRANSACTION_COUNT_MISMATCH, alice_usd.as_str())],
            ),
            (
                "a middle amount changed",
                format!("UPDATE customer_balance_transactions SET amount = 250 WHERE id = '{t2}'"),
                format!("UPDATE customer_balance_transactions SET amount = 200 WHERE id = '{t2}'"),
                vec![
                    (kind::CHAIN_BREAK, t2.as_str()),
                    (kind::CUSTOMER_BALANCE_MISMATCH, alice_usd.as_str()),
                ],
            ),
            (
                "a middle ending balance changed",
                format!("UPDATE customer_balance_transactions SET ending_balance = ending_balance + 5 WHERE id = '{t2}'"),
                format!("UPDATE customer_balance_transactions SET ending_balance = ending_balance - 5 WHERE id = '{t2}'"),
                vec![(kind::CHAIN_BREAK, t2.as_str())],
            ),
            (
                "the first ending balance changed",
                format!("UPDATE customer_balance_transactions SET ending_balance = -499 WHERE id = '{t1}'"),
                format!("UPDATE customer_balance_transactions SET ending_balance = -500 WHERE id = '{t1}'"),
                vec![(kind::CHAIN_BREAK, t1.as_str())],
            ),
            (
                "the last ending balance changed",
                format!("UPDATE customer_balance_transactions SET ending_balance = ending_balance + 5 WHERE id = '{t3}'"),
                format!("UPDATE customer_balance_transactions SET ending_balance = ending_balance - 5 WHERE id = '{t3}'"),
                vec![(kind::CHAIN_BREAK, t3.as_str())],
            ),
            (
                "a sequence moved",
                format!("UPDATE customer_balance_transactions SET sequence = 5 WHERE id = '{t3}'"),
                format!("UPDATE customer_balance_transactions SET sequence = 3 WHERE id = '{t3}'"),
                vec![(kind::CHAIN_GAP, t3.as_str())],
            ),
        ];
        run_steps(&app, &steps).await;

        // The values in one finding.
        corrupt(&app, &format!("UPDATE customer_balances SET balance = balance + 7 WHERE {balance}")).await;
        let report = audit(&app).await;
        let finding = &report.findings[0];
        assert_eq!((finding.expected.as_str(), finding.actual.as_str()), ("-600", "-593"));

        // The CLI reports it and exits 1; --json parses.
        let cli = run_cli(&app, false).await;
        assert_eq!(cli.status, Some(1), "stdout: {}\nstderr: {}", cli.stdout, cli.stderr);
        assert!(cli.stdout.contains("1 finding:"), "{}", cli.stdout);
        assert!(
            cli.stdout.lines().any(|line| line.starts_with(&format!("customer_balance_mismatch {alice_usd}: expected -600, actual -593"))),
            "{}",
            cli.stdout
        );
        let cli = run_cli(&app, true).await;
        assert_eq!(cli.status, Some(1), "stdout: {}\nstderr: {}", cli.stdout, cli.stderr);
        let json: serde_json::Value = serde_json::from_str(&cli.stdout).expect("JSON");
        assert_eq!(json["findings"][0]["kind"], "customer_balance_mismatch");
        assert_eq!(json["findings"][0]["object"], alice_usd.as_str());
        assert_eq!(json["checked"]["customer_balance_transactions"], 6);
        corrupt(&app, &format!("UPDATE customer_balances SET balance = balance - 7 WHERE {balance}")).await;

        // Deleting a transaction from the middle leaves a gap at the next one.
        corrupt(&app, &format!("DELETE FROM customer_balance_transactions WHERE id = '{t2}'")).await;
        let report = audit(&app).await;
        assert_findings(&report, "a middle transaction deleted", &[
            (kind::CHAIN_GAP, t3.as_str()),
            (kind::CUSTOMER_BALANCE_MISMATCH, alice_usd.as_str()),
            (kind::TRANSACTION_COUNT_MISMATCH, alice_usd.as_str()),
        ]);
        assert_eq!(report.checked.customer_balance_transactions, 5);

        // Deleting the last one too leaves the chain whole but short.
        corrupt(&app, &format!("DELETE FROM customer_balance_transactions WHERE id = '{t3}'")).await;
        assert_findings(&audit(&app).await, "the last transaction deleted", &[
            (kind::CUSTOMER_BALANCE_MISMATCH, alice_usd.as_str()),
            (kind::TRANSACTION_COUNT_MISMATCH, alice_usd.as_str()),
        ]);
        let _ = ledger.bob;
    }

    async fn transactions_without_a_balance_row_are_orphans(app) {
        let mut caller = Caller::new(&app, &app.key).await;
        let ledger = build_ledger(&mut caller).await;
        // The foreign key from transactions to their balance row forbids this: lift it.
        corrupt_unguarded(
            &app,
            &format!("DELETE FROM customer_balances WHERE customer_id = '{}'", ledger.bob),
            false,
        )
        .await;
        let report = audit(&app).await;
        let bob_usd = format!("{}/usd", ledger.bob);
        assert_findings(&report, "balance row deleted", &[(kind::ORPHAN_TRANSACTIONS, bob_usd.as_str())]);
        assert_eq!(report.checked.customer_balances, 2);
        assert_eq!(report.checked.customer_balance_transactions, 6);
    }

    async fn every_credit_corruption_is_reported_as_exactly_its_findings(app) {
        let mut caller = Caller::new(&app, &app.key).await;
        let ledger = build_ledger(&mut caller).await;
        let g1 = ledger.g1.as_str();
        let entry = ledger.in_a_il_2_entry.as_str();
        let in_a_il_1 = format!("{}/il_1", ledger.in_a);
        let in_a_il_2 = format!("{}/il_2", ledger.in_a);
        let granted = format!("credit_grant_id = '{g1}' AND \"type\" = 'credits_granted'");
        let line = |invoice: &str, item: &str| {
            format!("invoice = '{invoice}' AND invoice_line_item = '{item}'")
        };
        let steps: Vec<Step> = vec![
            (
                "a remainder changed",
                format!("UPDATE credit_grants SET remaining = 1700 WHERE id = '{g1}'"),
                format!("UPDATE credit_grants SET remaining = 1800 WHERE id = '{g1}'"),
                vec![(kind::GRANT_REMAINING_MISMATCH, g1)],
            ),
            (
                "an applied entry's amount changed",
                format!("UPDATE credit_balance_transactions SET amount = 150 WHERE id = '{entry}'"),
                format!("UPDATE credit_balance_transactions SET amount = 200 WHERE id = '{entry}'"),
                vec![
                    (kind::GRANT_REMAINING_MISMATCH, g1),
                    (kind::RUNNING_REMAINDER_MISMATCH, g1),
                    (kind::APPLICATION_APPLIED_MISMATCH, in_a_il_2.as_str()),
                ],
            ),
            (
                "the granted entry's amount changed",
                format!("UPDATE credit_balance_transactions SET amount = 2999 WHERE {granted}"),
                format!("UPDATE credit_balance_transactions SET amount = 3000 WHERE {granted}"),
                vec![
                    (kind::GRANT_GRANTED_ENTRY, g1),
                    (kind::GRANT_REMAINING_MISMATCH, g1),
                    (kind::RUNNING_REMAINDER_MISMATCH, g1),
                ],
            ),
            (
                "an application's applied changed",
                format!("UPDATE credit_applications SET applied = 900 WHERE {}", line(&ledger.in_a, "il_1")),
                format!("UPDATE credit_applications SET applied = 1000 WHERE {}", line(&ledger.in_a, "il_1")),
                vec![(kind::APPLICATION_APPLIED_MISMATCH, in_a_il_1.as_str())],
            ),
            (
                "an entry's currency changed",
                format!("UPDATE credit_balance_transactions SET currency = 'eur' WHERE id = '{entry}'"),
                format!("UPDATE credit_balance_transactions SET currency = 'usd' WHERE id = '{entry}'"),
                vec![(kind::GRANT_ENTRY_MISMATCH, entry)],
            ),
            (
                "an entry moved to another customer",
                format!("UPDATE credit_balance_transactions SET customer_id = '{}' WHERE id = '{entry}'", ledger.bob),
                format!("UPDATE credit_balance_transactions SET customer_id = '{}' WHERE id = '{entry}'", ledger.alice),
                // Bob has no application for the line, and Alice's lost an entry.
                vec![
                    (kind::GRANT_ENTRY_MISMATCH, entry),
                    (kind::APPLICATION_APPLIED_MISMATCH, in_a_il_2.as_str()),
                    (kind::APPLICATION_MISSING, in_a_il_2.as_str()),
                ],
            ),
        ];
        run_steps(&app, &steps).await;

        // A remainder changed: expected is the ledger's sum, actual what is stored.
        corrupt(&app, &format!("UPDATE credit_grants SET remaining = 1700 WHERE id = '{g1}'")).await;
        let report = audit(&app).await;
        assert_eq!((report.findings[0].expected.as_str(), report.findings[0].actual.as_str()), ("1800", "1700"));
        let cli = run_cli(&app, false).await;
        assert_eq!(cli.status, Some(1), "stdout: {}\nstderr: {}", cli.stdout, cli.stderr);
        assert!(cli.stdout.contains(&format!("grant_remaining_mismatch {g1}: expected 1800, actual 1700")), "{}", cli.stdout);
        corrupt(&app, &format!("UPDATE credit_grants SET remaining = 1800 WHERE id = '{g1}'")).await;

        // A deleted application leaves its entries unrecorded.
        corrupt(&app, &format!("DELETE FROM credit_applications WHERE {}", line(&ledger.in_a, "il_2"))).await;
        let report = audit(&app).await;
        assert_findings(&report, "an application deleted", &[(kind::APPLICATION_MISSING, in_a_il_2.as_str())]);
        assert_eq!(report.checked.credit_applications, 3);
        let _ = (&ledger.g2, &ledger.g3, &ledger.in_b);
    }

    async fn findings_the_check_constraints_prevent_are_still_reported(app) {
        let mut caller = Caller::new(&app, &app.key).await;
        let ledger = build_ledger(&mut caller).await;
        let (g1, g2, g3) = (ledger.g1.as_str(), ledger.g2.as_str(), ledger.g3.as_str());
        // A voided grant and an expired one with credits left; a remainder above the amount.
        corrupt_unguarded(
            &app,
            &format!("UPDATE credit_grants SET remaining = 5 WHERE id IN ('{g2}', '{g3}')"),
            true,
        )
        .await;
        corrupt_unguarded(
            &app,
            &format!("UPDATE credit_grants SET remaining = 3500 WHERE id = '{g1}'"),
            true,
        )
        .await;
        let report = audit(&app).await;
        assert_findings(&report, "out of range and written off", &[
            (kind::GRANT_REMAINING_MISMATCH, g1),
            (kind::GRANT_REMAINING_OUT_OF_RANGE, g1),
            (kind::GRANT_REMAINING_MISMATCH, g2),
            (kind::GRANT_WRITTEN_OFF_NOT_ZERO, g2),
            (kind::GRANT_REMAINING_MISMATCH, g3),
            (kind::GRANT_WRITTEN_OFF_NOT_ZERO, g3),
        ]);
    }

    async fn the_rpc_audits_only_the_callers_account_and_mode(app) {
        let mut mine = Caller::new(&app, &app.key).await;
        build_ledger(&mut mine).await;
        let other_key = app.new_key(false, false).await;
        let live_key = app.new_key(true, true).await;
        let mut other = Caller::new(&app, &other_key).await;
        let mut live = Caller::new(&app, &live_key).await;
        let mut corrupted = Vec::new();
        for stranger in [&mut other, &mut live] {
            let customer = stranger.customer("Stranger").await;
            stranger.balance_transaction(&customer, 900, "usd").await;
            let grant = stranger.grant(&customer, "usd", 400).await;
            let invoice = invoice_id("stranger");
            stranger.apply(&customer, "usd", &invoice, "il_1", 100).await;
            corrupted.push((customer, grant, invoice));
        }
        // Both strangers start clean and see only their own rows.
        for stranger in [&other, &live] {
            let report = from_proto(stranger.audit_rpc().await);
            assert_findings(&report, "stranger, clean", &[]);
            assert_eq!(report.checked, Checked {
                customer_balances: 1,
                customer_balance_transactions: 1,
                credit_grants: 1,
                credit_balance_transactions: 2,
                credit_applications: 1,
                credit_holds: 0,
            });
        }
        for (customer, grant, invoice) in &corrupted {
            corrupt(&app, &format!("UPDATE customer_balances SET balance = 1 WHERE customer_id = '{customer}'")).await;
            corrupt(&app, &format!("UPDATE credit_grants SET remaining = 1 WHERE id = '{grant}'")).await;
            corrupt(&app, &format!("UPDATE credit_applications SET applied = 0 WHERE invoice = '{invoice}'")).await;
        }

        // The caller's audit stays clean and counts only its own rows.
        let report = audit(&app).await;
        assert_findings(&report, "mine, with strangers corrupted", &[]);
        assert_eq!(report.checked, LEDGER_CHECKED);

        // Each stranger sees its own three findings, never the other's.
        for (stranger, (customer, grant, invoice)) in [&other, &live].into_iter().zip(&corrupted) {
            let report = from_proto(stranger.audit_rpc().await);
            let balance = format!("{customer}/usd");
            let line = format!("{invoice}/il_1");
            assert_findings(&report, "stranger", &[
                (kind::CUSTOMER_BALANCE_MISMATCH, balance.as_str()),
                (kind::GRANT_REMAINING_MISMATCH, grant.as_str()),
                (kind::APPLICATION_APPLIED_MISMATCH, line.as_str()),
            ]);
        }

        // The CLI audits everything.
        let everything = app.services.audit_everything().await.expect("audit everything");
        assert_eq!(everything.findings.len(), 6, "{:#?}", everything.findings);
        let cli = run_cli(&app, true).await;
        assert_eq!(cli.status, Some(1), "stdout: {}\nstderr: {}", cli.stdout, cli.stderr);
        let json: AuditReport = serde_json::from_str(&cli.stdout).expect("JSON");
        assert_eq!(json, everything);
    }
}
