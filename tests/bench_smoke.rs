//! Keeps the load generator from rotting: a short run of `creditd-bench` over tiny data, every
//! scenario, against a child `creditd serve` on SQLite (and on PostgreSQL when
//! `CREDITD_TEST_POSTGRES_URL` is set, as it must be under CI). Every scenario must print a JSON
//! result line with successful calls and latencies, the ratios must come out, and the seeded
//! ledger (a bulk-SQL history included) must pass the audit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

const SCENARIOS: [&str; 10] = [
    "noop",
    "summary",
    "apply",
    "hot",
    "cbt-grpc",
    "cbt-rest",
    "history",
    "db-insert",
    "db-update",
    "db-read",
];

fn run_bench(extra: &[&str]) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_creditd-bench"))
        .args(["--creditd-bin", env!("CARGO_BIN_EXE_creditd")])
        .args(["--customers", "20", "--history-entries", "2000"])
        .args(["--duration", "1s", "--warmup", "0s"])
        .args(["--concurrency", "4", "--connections", "1"])
        .args(["--json", "--audit"])
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .expect("run creditd-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "creditd-bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("a stdout line that is not JSON: {line}\n{stderr}"))
        })
        .collect()
}

fn check(lines: &[Value]) {
    let of_type = |kind: &'static str| lines.iter().filter(move |line| line["type"] == kind);
    assert_eq!(of_type("run").count(), 1, "one run line: {lines:?}");

    let results: Vec<&Value> = of_type("result").collect();
    let reported: BTreeSet<&str> = results
        .iter()
        .map(|line| line["scenario"].as_str().expect("scenario name"))
        .collect();
    assert_eq!(reported, SCENARIOS.into_iter().collect(), "{results:?}");
    for result in &results {
        assert!(
            result["ops"].as_u64().unwrap_or(0) > 0,
            "no calls: {result}"
        );
        assert_eq!(result["errors"], 0, "errors: {result}");
        for field in ["p50_us", "p90_us", "p99_us", "max_us"] {
            assert!(
                result[field].as_f64().is_some_and(|us| us > 0.0),
                "{field}: {result}"
            );
        }
        assert!(
            result["p50_us"].as_f64() <= result["p99_us"].as_f64(),
            "{result}"
        );
        assert!(
            result["peak_rss_kib"].as_u64().unwrap_or(0) > 0,
            "the server's memory: {result}"
        );
    }
    let cases: BTreeSet<&str> = results
        .iter()
        .filter(|line| line["scenario"] == "history")
        .filter_map(|line| line["case"].as_str())
        .collect();
    assert_eq!(
        cases,
        BTreeSet::from(["summary-small", "summary-big", "list-first", "list-deep"])
    );

    let ratios: BTreeSet<&str> = of_type("ratio")
        .map(|line| line["name"].as_str().expect("ratio name"))
        .collect();
    assert_eq!(
        ratios,
        BTreeSet::from([
            "summary/noop",
            "summary/db-read",
            "apply/db-insert",
            "hot/db-update",
            "history-summary-p50-big/small",
            "history-list-p50-deep/first",
            "cbt-rest/cbt-grpc",
        ])
    );
    assert_eq!(of_type("memory").count(), 1, "{lines:?}");
    let audit: Vec<&Value> = of_type("audit").collect();
    assert_eq!(audit.len(), 1, "{lines:?}");
    assert_eq!(audit[0]["clean"], true, "{audit:?}");
}

#[test]
fn every_scenario_runs_on_sqlite() {
    check(&run_bench(&[]));
}

#[test]
fn every_scenario_runs_on_postgres() {
    let Some(url) = common::postgres_url() else {
        eprintln!(
            "skipped on PostgreSQL: {} is not set (SQLite only)",
            common::POSTGRES_URL_ENV
        );
        return;
    };
    check(&run_bench(&["--database-url", &url]));
}
