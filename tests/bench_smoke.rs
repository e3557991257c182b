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

const SCENARIOS: [&str; 13] = [
    "noop",
    "summary",
    "apply",
    "apply-batch",
    "hot",
    "hold-capture",
    "hold-hot",
    "cbt-grpc",
    "cbt-rest",
    "history",
    "db-insert",
    "db-update",
    "db-read",
];

/// The database baselines: they run in the load generator alone.
const BASELINES: [&str; 3] = ["db-insert", "db-update", "db-read"];

fn run_bench(extra: &[&str]) -> Vec<Value> {
    run_bench_with(&["--json", "--audit"], extra)
}

fn run_bench_with(base: &[&str], extra: &[&str]) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_creditd-bench"))
        .args(["--creditd-bin", env!("CARGO_BIN_EXE_creditd")])
        .args(["--customers", "20", "--history-entries", "2000"])
        .args(["--duration", "1s", "--warmup", "0s"])
        .args(["--concurrency", "4", "--connections", "1"])
        .args(base)
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
        if !BASELINES.contains(&result["scenario"].as_str().unwrap_or_default()) {
            assert_cpu(result);
        }
    }
    // One op of the hold scenarios is two calls (create, capture); the rest, one.
    for result in &results {
        let calls = match result["scenario"].as_str() {
            Some("hold-capture" | "hold-hot") => 2,
            _ => 1,
        };
        assert_eq!(result["calls_per_op"], calls, "{result}");
    }
    // apply-batch: one op is one call of --batch-lines (default 100) lines, every line applied.
    let batch = results
        .iter()
        .find(|line| line["scenario"] == "apply-batch")
        .expect("an apply-batch result");
    assert_eq!(batch["lines_per_op"], 100, "{batch}");
    let (ops_per_s, lines_per_s) = (
        batch["ops_per_s"].as_f64().unwrap_or(0.0),
        batch["lines_per_s"].as_f64().unwrap_or(0.0),
    );
    assert!(
        lines_per_s > 0.0 && (lines_per_s - 100.0 * ops_per_s).abs() < 1.0,
        "{batch}"
    );
    assert!(
        batch["server_cpu_us_per_line"]
            .as_f64()
            .is_some_and(|us| us > 0.0),
        "{batch}"
    );
    let cases: BTreeSet<&str> = results
        .iter()
        .filter(|line| line["scenario"] == "history")
        .filter_map(|line| line["case"].as_str())
        .collect();
    assert_eq!(
        cases,
        BTreeSet::from([
            "summary-small",
            "summary-big",
            "as-of-small",
            "as-of-big",
            "list-first",
            "list-deep"
        ])
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
            "apply-batch-lines/apply",
            "hot/db-update",
            "hold-capture/apply",
            "hold-hot/hot",
            "history-summary-p50-big/small",
            "history-as-of-p50-big/small",
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

/// The server's and the load generator's CPU per call: present and positive. (The database
/// baselines run in the load generator alone, so the server's CPU there may round to zero.)
fn assert_cpu(result: &Value) {
    for field in ["server_cpu_us_per_op", "bench_cpu_us_per_op"] {
        assert!(
            result[field].as_f64().is_some_and(|us| us > 0.0),
            "{field}: {result}"
        );
    }
}

/// The open loop at a low fixed rate, and --rate-fraction (a closed-loop peak, then an open
/// loop at half of it), with CPU per call and p99.9; and the fixed-count closed loop.
#[test]
fn open_loop_and_fixed_count() {
    let lines = run_bench_with(
        &["--json"],
        &[
            "--scenario",
            "summary",
            "--scenario",
            "noop",
            "--rate",
            "50",
        ],
    );
    let results: Vec<&Value> = lines.iter().filter(|l| l["type"] == "result").collect();
    assert_eq!(results.len(), 2, "{lines:?}");
    for result in results {
        assert_eq!(result["load"], "open", "{result}");
        assert_eq!(result["rate_per_s"], 50.0, "{result}");
        assert_eq!(result["errors"], 0, "{result}");
        // 50 calls scheduled in the second (± one at the edges).
        let ops = result["ops"].as_u64().unwrap_or(0);
        assert!((45..=51).contains(&ops), "{result}");
        assert!(result["behind_schedule"].as_u64().is_some(), "{result}");
        assert!(
            result["p999_us"].as_f64().is_some_and(|us| us > 0.0),
            "{result}"
        );
        assert_cpu(result);
    }

    let lines = run_bench_with(
        &["--json"],
        &["--scenario", "apply", "--rate-fraction", "0.5"],
    );
    let results: Vec<&Value> = lines.iter().filter(|l| l["type"] == "result").collect();
    assert_eq!(results.len(), 2, "{lines:?}");
    assert_eq!(results[0]["load"], "closed", "{lines:?}");
    assert_eq!(results[1]["load"], "open", "{lines:?}");
    let peak = results[0]["ops_per_s"].as_f64().unwrap_or(0.0);
    let rate = results[1]["rate_per_s"].as_f64().unwrap_or(0.0);
    assert!(peak > 0.0 && (rate - peak / 2.0).abs() < 1.0, "{lines:?}");
    for result in results {
        assert_eq!(result["errors"], 0, "{result}");
        assert!(result["ops"].as_u64().unwrap_or(0) > 0, "{result}");
        assert_cpu(result);
    }

    let lines = run_bench_with(&["--json"], &["--scenario", "noop", "--requests", "200"]);
    let results: Vec<&Value> = lines.iter().filter(|l| l["type"] == "result").collect();
    assert_eq!(results.len(), 1, "{lines:?}");
    assert_eq!(results[0]["load"], "count", "{lines:?}");
    assert_eq!(results[0]["ops"], 200, "{lines:?}");
}
