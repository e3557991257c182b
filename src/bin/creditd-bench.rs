//! `creditd-bench`: a load generator for creditd.
//!
//! It starts a server of its own on a fresh database (by default a child `creditd serve`
//! process found next to this executable, on a SQLite file in a temporary directory; or in this
//! process; or on a new PostgreSQL database) or targets a running one, seeds data, runs each
//! scenario for a fixed time at a fixed concurrency over a fixed number of HTTP/2 connections,
//! and prints throughput, p50/p90/p99 latency and the server's peak resident memory as a table
//! and, with `--json`, as JSON lines; then the ratios the targets are stated in.
//!
//! ```sh
//! cargo build --release --bin creditd --bin creditd-bench
//! target/release/creditd-bench --duration 10s --concurrency 64 --connections 2
//! target/release/creditd-bench --database-url postgres://postgres@127.0.0.1/postgres --json
//! target/release/creditd-bench --grpc-url http://127.0.0.1:50051 --http-url http://127.0.0.1:8080 \
//!     --key sk_test_… --scenario noop --scenario summary
//! ```

#[path = "creditd-bench/clients.rs"]
mod clients;
#[path = "creditd-bench/events.rs"]
mod events;
#[path = "creditd-bench/instructions.rs"]
mod instructions;
#[path = "creditd-bench/runner.rs"]
mod runner;
#[path = "creditd-bench/scenarios.rs"]
mod scenarios;
#[path = "creditd-bench/seed.rs"]
mod seed;
#[path = "creditd-bench/target.rs"]
mod target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use creditd::domain::Tenant;
use creditd::store::{Db, DbOptions};
use serde_json::json;

use clients::{Grpc, Rest, RestProtocol};
use runner::{Op, Sample};
use scenarios::{Context, History, Scenario};
use target::{Database, MemoryProbe, PeakWatch, RunningServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServerMode {
    /// A child `creditd serve` process (the executable next to this one, or --creditd-bin):
    /// its memory is the server's alone.
    Process,
    /// In this process: memory figures include the load generator.
    InProcess,
}

#[derive(Debug, Parser)]
#[command(
    name = "creditd-bench",
    version,
    about = "Load generator for creditd: throughput, latency percentiles and memory per scenario"
)]
struct Cli {
    /// Scenario to run (repeatable; default: all, in the order listed).
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<Scenario>,
    /// How long each measurement runs (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = runner::parse_duration)]
    duration: Duration,
    /// Unmeasured calls before each measurement.
    #[arg(long, default_value = "1s", value_parser = runner::parse_duration)]
    warmup: Duration,
    /// Calls in flight at once (closed loop: each task calls again as soon as it has an answer;
    /// open loop: the most calls in flight, beyond which calls fall behind schedule).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open loop: this many calls per second on a fixed schedule, latency measured from each
    /// call's scheduled send time (instead of the closed loop).
    #[arg(long, conflicts_with_all = ["rate_fraction", "requests"])]
    rate: Option<f64>,
    /// Measure each scenario's closed-loop peak first, then run it open loop at this fraction
    /// of the peak (e.g. 0.5); both measurements are reported.
    #[arg(long, conflicts_with = "requests")]
    rate_fraction: Option<f64>,
    /// Closed loop over a fixed number of measured calls instead of --duration (after the
    /// warm-up), e.g. for instructions per call.
    #[arg(long)]
    requests: Option<u64>,
    /// With --requests: count the server's instructions over the measured calls with
    /// `perf stat -e instructions -p <server pid>` (needs perf and a CPU counter; needs the
    /// server's process ID: --server process or --server-pid).
    #[arg(long, requires = "requests")]
    count_instructions: bool,
    /// HTTP/2 connections the gRPC calls are spread over (and REST calls with --rest-protocol http2).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Customers seeded (five grants each) for summary, apply, apply-batch, hold-capture,
    /// cbt-grpc and cbt-rest.
    #[arg(long, default_value_t = 10_000)]
    customers: usize,
    /// Invoice lines per ApplyCreditsBatch call of apply-batch (1 to 1,000), each for a random
    /// seeded customer.
    #[arg(long, default_value_t = 100)]
    batch_lines: usize,
    /// Credit ledger entries of the long history (history scenario).
    #[arg(long, default_value_t = 1_000_000)]
    history_entries: u64,
    /// Credit ledger entries of the short history (history scenario).
    #[arg(long, default_value_t = 10)]
    history_small_entries: u64,
    /// Cursor depth of the deep list page (history scenario); at most the long history's
    /// length less one page.
    #[arg(long, default_value_t = 10_000)]
    list_depth: u64,
    /// Print JSON lines on stdout (the table then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Own server: `sqlite:<file>` (used as is) or `postgres://…` (a new database is created on
    /// that server and dropped afterwards). Default: a SQLite file in a new temporary directory.
    /// With --grpc-url: the running server's own database, used as is, needed by history,
    /// db-insert and db-update.
    #[arg(long)]
    database_url: Option<String>,
    /// Pool size (PostgreSQL) or read connections (SQLite, at most 8), for the server and for
    /// the database baselines.
    #[arg(long, default_value_t = 16)]
    db_max_connections: u32,
    /// Where our own server runs.
    #[arg(long, value_enum, default_value_t = ServerMode::Process)]
    server: ServerMode,
    /// The `creditd` executable for --server process (default: the one next to this one).
    #[arg(long)]
    creditd_bin: Option<PathBuf>,
    /// Target a running server's gRPC listener (http://host:port) instead of starting one.
    #[arg(long, requires_all = ["http_url", "key"])]
    grpc_url: Option<String>,
    /// The running server's REST listener (http://host:port).
    #[arg(long, requires = "grpc_url")]
    http_url: Option<String>,
    /// An API key of the running server (ignored without --grpc-url).
    #[arg(long, hide_env_values = true, env = "CREDITD_BENCH_KEY")]
    key: Option<String>,
    /// The running server's process ID, to report its memory.
    #[arg(long, requires = "grpc_url")]
    server_pid: Option<u32>,
    /// HTTP version of the REST client.
    #[arg(long, value_enum, default_value_t = RestProtocol::Http1)]
    rest_protocol: RestProtocol,
    /// Send an idempotency key with every write (apply, apply-batch, hot, hold-capture,
    /// hold-hot, cbt-grpc, cbt-rest).
    #[arg(long)]
    idempotency_keys: bool,
    /// Keep the temporary SQLite file or PostgreSQL database (its location is printed).
    #[arg(long)]
    keep_database: bool,
    /// Audit the whole ledger afterwards (`creditd audit`) and fail when it has findings.
    #[arg(long)]
    audit: bool,
    /// Run with one webhook endpoint (subscribed to everything, delivering to a sink here) and
    /// one WatchEvents watcher, and report commit-to-watcher latency for apply, hot,
    /// apply-batch, hold-capture and hold-hot (the capture's ledger entries).
    #[arg(long)]
    observe_events: bool,
}

/// One measurement: a scenario, or one case of the history scenario.
struct Measurement {
    scenario: Scenario,
    case: Option<String>,
    detail: Option<String>,
    sample: Sample,
    /// Instructions the server retired during the measured calls (--count-instructions).
    instructions: Option<u64>,
    peak_rss_kib: Option<u64>,
    /// `VmHWM` (reset before the measurement) or `sampled VmRSS`.
    peak_rss_source: Option<&'static str>,
}

impl Measurement {
    fn label(&self) -> String {
        let name = match &self.case {
            Some(case) => format!("{}:{case}", self.scenario.name()),
            None => self.scenario.name().to_string(),
        };
        match self.sample.load {
            runner::Load::Open { rate } => format!("{name} @{rate:.0}/s"),
            _ => name,
        }
    }

    fn instructions_per_op(&self) -> Option<f64> {
        match self.instructions {
            Some(count) if self.sample.ops > 0 => Some(count as f64 / self.sample.ops as f64),
            _ => None,
        }
    }
}

/// Output: JSON lines on stdout with --json (the table on stderr), else the table on stdout.
struct Out {
    json: bool,
}

impl Out {
    fn text(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    fn record(&self, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let clean = runtime.block_on(run(cli))?;
    // Do not wait for tasks still parked on closed connections.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if !clean {
        std::process::exit(1);
    }
    Ok(())
}

/// Everything the run set up, taken down by [`Setup::teardown`].
struct Setup {
    server: RunningServer,
    database: Option<Database>,
    db: Option<Db>,
    tenant: Option<Tenant>,
    grpc_url: String,
    http_url: String,
    key: String,
    memory: Option<MemoryProbe>,
    description: String,
    backend: &'static str,
}

impl Setup {
    async fn teardown(self, keep: bool) {
        if let Some(db) = &self.db {
            let _ = seed::drop_scratch_table(db).await;
        }
        self.server.stop().await;
        if let Some(db) = self.db {
            db.close().await;
        }
        if let Some(database) = self.database {
            database.remove(keep).await;
        }
    }
}

async fn set_up(cli: &Cli) -> anyhow::Result<Setup> {
    if let Some(grpc_url) = &cli.grpc_url {
        let key = cli.key.clone().context("--key")?;
        let (db, tenant, backend) = match &cli.database_url {
            None => (None, None, "unknown"),
            Some(url) => {
                let db = Db::connect(&DbOptions {
                    max_connections: cli.db_max_connections,
                    ..DbOptions::new(url.clone())
                })
                .await
                .map_err(|error| anyhow::anyhow!("connecting to {url}: {error}"))?;
                let caller = creditd::service::Services::new(db.clone())
                    .authenticate(Some(&key))
                    .await
                    .map_err(|error| anyhow::anyhow!("the key in that database: {error}"))?;
                let backend = if db.is_postgres() {
                    "postgres"
                } else {
                    "sqlite"
                };
                (Some(db), Some(caller.tenant), backend)
            }
        };
        return Ok(Setup {
            server: RunningServer::Remote,
            database: None,
            db,
            tenant,
            grpc_url: grpc_url.clone(),
            http_url: cli.http_url.clone().context("--http-url")?,
            key,
            memory: cli.server_pid.map(|pid| MemoryProbe {
                pid: Some(pid),
                shared: false,
            }),
            description: format!("running server at {grpc_url}"),
            backend,
        });
    }

    let database = Database::prepare(cli.database_url.as_deref()).await?;
    let backend = if database.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    let prepared = async {
        let (services, key, tenant) =
            target::open_with_key(&database.url, cli.db_max_connections).await?;
        let db = services.db.clone();
        let binary = match cli.server {
            ServerMode::InProcess => None,
            ServerMode::Process => match cli.creditd_bin.clone().or_else(target::sibling_creditd) {
                Some(binary) => Some(binary),
                None => {
                    eprintln!(
                        "no creditd executable next to this one (build it: cargo build --bin creditd); \
                         serving in this process instead"
                    );
                    None
                }
            },
        };
        let (server, grpc_url, http_url, memory, mode) = match binary {
            Some(binary) => {
                let (server, grpc, http) =
                    target::start_process(&binary, &database.url, cli.db_max_connections)?;
                let pid = match &server {
                    RunningServer::Process(child) => Some(child.pid()),
                    _ => None,
                };
                let memory = MemoryProbe { pid, shared: false };
                (server, grpc, http, memory, format!("child process {}", pid.unwrap_or(0)))
            }
            None => {
                let (server, grpc, http) =
                    target::start_in_process(&database.url, cli.db_max_connections, services)
                        .await?;
                let memory = MemoryProbe {
                    pid: None,
                    shared: true,
                };
                (server, grpc, http, memory, "in this process".to_string())
            }
        };
        Ok::<_, anyhow::Error>(Setup {
            server,
            database: None,
            db: Some(db),
            tenant: Some(tenant),
            grpc_url,
            http_url,
            key,
            memory: Some(memory),
            description: format!("creditd {mode} on {}", database.description),
            backend,
        })
    }
    .await;
    match prepared {
        Ok(mut setup) => {
            setup.database = Some(database);
            Ok(setup)
        }
        Err(error) => {
            database.remove(cli.keep_database).await;
            Err(error)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    if cli.concurrency == 0 || cli.connections == 0 {
        bail!("--concurrency and --connections must be at least 1");
    }
    if cli
        .rate
        .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
    {
        bail!("--rate must be a positive number of calls per second");
    }
    if cli
        .rate_fraction
        .is_some_and(|fraction| !(fraction.is_finite() && fraction > 0.0))
    {
        bail!("--rate-fraction must be positive");
    }
    if cli.requests == Some(0) {
        bail!("--requests must be at least 1");
    }
    if !(1..=1000).contains(&cli.batch_lines) {
        bail!("--batch-lines must be between 1 and 1,000");
    }
    let out = Out { json: cli.json };
    let mut scenarios = if cli.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        cli.scenarios.clone()
    };
    let mut seen = std::collections::HashSet::new();
    scenarios.retain(|scenario| seen.insert(*scenario));

    let setup = set_up(&cli).await?;
    let result = measure_all(&cli, &out, &setup, &scenarios).await;
    let audit_clean = match (&result, cli.audit, &setup.db) {
        (Ok(_), true, Some(db)) => Some(audit(&out, db).await?),
        (Ok(_), true, None) => {
            eprintln!("--audit needs the database (--database-url with --grpc-url)");
            None
        }
        _ => None,
    };
    setup.teardown(cli.keep_database).await;
    result?;
    Ok(audit_clean != Some(false))
}

async fn measure_all(
    cli: &Cli,
    out: &Out,
    setup: &Setup,
    scenarios: &[Scenario],
) -> anyhow::Result<()> {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    out.text(&format!(
        "creditd-bench: {} ({} build of the load generator)",
        setup.description, profile
    ));
    if cfg!(debug_assertions) {
        out.text("  a debug build: the numbers mean nothing; build with --release to measure");
    }
    let length = match cli.requests {
        Some(requests) => format!("{requests} calls"),
        None => humanize(cli.duration),
    };
    out.text(&format!(
        "  {} per measurement after {} warm-up, concurrency {}, {} gRPC connection(s), REST over {}",
        length,
        humanize(cli.warmup),
        cli.concurrency,
        cli.connections,
        cli.rest_protocol.as_str()
    ));
    if let Some(memory) = &setup.memory {
        out.text(&format!("  memory: peak RSS of the {}", memory.scope()));
    }
    out.record(json!({
        "type": "run",
        "target": setup.description,
        "backend": setup.backend,
        "build": profile,
        "duration_s": cli.duration.as_secs_f64(),
        "warmup_s": cli.warmup.as_secs_f64(),
        "concurrency": cli.concurrency,
        "connections": cli.connections,
        "rate_per_s": cli.rate,
        "rate_fraction": cli.rate_fraction,
        "requests": cli.requests,
        "server_pid": server_pid(setup),
        "clock_ticks_per_s": runner::clock_ticks_per_second(),
        "rest_protocol": cli.rest_protocol.as_str(),
        "idempotency_keys": cli.idempotency_keys,
        "batch_lines": cli.batch_lines,
        "memory_scope": setup.memory.as_ref().map(MemoryProbe::scope),
        "scenarios": scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
    }));

    let grpc = Grpc::connect(&setup.grpc_url, &setup.key, cli.connections).await?;
    let rest = if scenarios.contains(&Scenario::CbtRest) {
        Some(Arc::new(
            Rest::connect(
                &setup.http_url,
                &setup.key,
                cli.rest_protocol,
                cli.connections,
                cli.concurrency,
            )
            .await?,
        ))
    } else {
        None
    };
    let grpc_for_events = grpc.clone();
    let ctx = Arc::new(Context {
        grpc,
        rest,
        db: setup.db.clone(),
        run_tag: creditd::domain::ids::random_base62(8),
        idempotency_keys: cli.idempotency_keys,
        observer: if cli.observe_events {
            Some(events::start(&grpc_for_events, &setup.http_url, &setup.key).await?)
        } else {
            None
        },
    });

    // Seeding, for the scenarios that will run.
    let mut skipped = Vec::new();
    let runnable: Vec<Scenario> = scenarios
        .iter()
        .copied()
        .filter(|scenario| {
            let ok = !scenario.needs_database() || setup.db.is_some();
            if !ok {
                skipped.push(*scenario);
            }
            ok
        })
        .collect();
    for scenario in &skipped {
        eprintln!(
            "skipping {}: it needs the server's database (--database-url)",
            scenario.name()
        );
    }
    let customers = if runnable.iter().any(|s| s.needs_customers()) {
        let started = Instant::now();
        // Grants big enough that applying 1..=100 cents per call never exhausts them.
        let customers =
            scenarios::seed_customers(&ctx, cli.customers.max(1), 1_000_000, cli.concurrency)
                .await
                .context("seeding customers")?;
        eprintln!(
            "seeded {} customers with 5 grants each in {:.1}s (through the API)",
            customers.len(),
            started.elapsed().as_secs_f64()
        );
        Arc::new(customers)
    } else {
        Arc::new(Vec::new())
    };
    let hot = if runnable.contains(&Scenario::Hot) {
        Some(Arc::new(vec![
            scenarios::seed_hot_customer(&ctx, "bench hot customer")
                .await
                .context("seeding the hot customer")?,
        ]))
    } else {
        None
    };
    // A hot customer of its own, so that hold-hot does not start on hot's longer ledger.
    let hold_hot = if runnable.contains(&Scenario::HoldHot) {
        Some(Arc::new(vec![
            scenarios::seed_hot_customer(&ctx, "bench hold hot customer")
                .await
                .context("seeding the hold-hot customer")?,
        ]))
    } else {
        None
    };
    let history = if runnable.contains(&Scenario::History) {
        let db = setup.db.as_ref().context("history needs the database")?;
        let tenant = setup.tenant.as_ref().context("history needs the tenant")?;
        let big = cli.history_entries.max(11);
        let depth = cli.list_depth.min(big - 10).max(1);
        if depth != cli.list_depth {
            eprintln!(
                "list depth {} is past the long history of {big} entries: using {depth}",
                cli.list_depth
            );
        }
        let started = Instant::now();
        let history =
            scenarios::seed_history(&ctx, db, tenant, cli.history_small_entries, big, depth)
                .await?;
        eprintln!(
            "seeded credit histories of {} and {} entries in {:.1}s (bulk SQL)",
            history.small_entries,
            history.big_entries,
            started.elapsed().as_secs_f64()
        );
        Some(history)
    } else {
        None
    };
    if runnable.iter().any(|s| {
        matches!(
            s,
            Scenario::DbInsert | Scenario::DbUpdate | Scenario::DbRead
        )
    }) {
        let db = setup
            .db
            .as_ref()
            .context("the baselines need the database")?;
        seed::create_scratch_table(db)
            .await
            .map_err(|error| anyhow::anyhow!("creating the scratch table: {error}"))?;
    }

    let mut measurements = Vec::new();
    for &scenario in &runnable {
        let hot = match scenario {
            Scenario::HoldHot => hold_hot.as_ref(),
            _ => hot.as_ref(),
        };
        for (case, detail, op) in ops(
            scenario,
            &ctx,
            &customers,
            hot,
            history.as_ref(),
            cli.batch_lines,
        ) {
            eprintln!(
                "running {}{} …",
                scenario.name(),
                case.as_deref().map(|c| format!(":{c}")).unwrap_or_default()
            );
            let mut loads = match (cli.rate, cli.requests) {
                (Some(rate), _) => vec![runner::Load::Open { rate }],
                (None, Some(requests)) => vec![runner::Load::Count { requests }],
                (None, None) => vec![runner::Load::Closed],
            };
            if cli.rate_fraction.is_some() {
                loads = vec![runner::Load::Closed];
            }
            while let Some(load) = loads.pop() {
                let measurement =
                    measure(cli, setup, scenario, &case, &detail, op.clone(), load).await?;
                if let Some(error) = &measurement.sample.first_error {
                    eprintln!(
                        "  {} errors in {}; the first: {error}",
                        measurement.sample.errors,
                        measurement.label()
                    );
                }
                out.record(result_json(&measurement, cli));
                if let (
                    Some(observer),
                    Scenario::Apply
                    | Scenario::ApplyBatch
                    | Scenario::Hot
                    | Scenario::HoldCapture
                    | Scenario::HoldHot,
                ) = (&ctx.observer, scenario)
                {
                    let report = observer.take_report(Duration::from_secs(5)).await;
                    eprintln!(
                        "  events: {}/{} entries seen by the watcher; commit-to-watcher ms p50/p99/max between {:.1}/{:.1}/{:.1} (from response) and {:.1}/{:.1}/{:.1} (from send); {} webhooks delivered",
                        report.seen_by_watcher,
                        report.entries,
                        report.from_response_ms[0],
                        report.from_response_ms[1],
                        report.from_response_ms[2],
                        report.from_send_ms[0],
                        report.from_send_ms[1],
                        report.from_send_ms[2],
                        report.webhooks_delivered,
                    );
                    out.record(serde_json::json!({
                        "scenario": measurement.label(),
                        "events": report,
                    }));
                }
                if let (Some(fraction), runner::Load::Closed) =
                    (cli.rate_fraction, measurement.sample.load)
                {
                    let rate = measurement.sample.ops_per_second() * fraction;
                    if rate > 0.0 {
                        eprintln!(
                            "running {} open loop at {fraction} × {:.0} = {rate:.0} calls/s …",
                            measurement.label(),
                            measurement.sample.ops_per_second()
                        );
                        loads.push(runner::Load::Open { rate });
                    }
                }
                measurements.push(measurement);
            }
        }
    }
    report(out, cli, setup, &measurements, history.as_ref());
    Ok(())
}

type Case = (Option<String>, Option<String>, Arc<dyn Op>);

/// The server's process ID, when the bench knows it (a child process or --server-pid).
fn server_pid(setup: &Setup) -> Option<u32> {
    setup
        .memory
        .as_ref()
        .filter(|memory| !memory.shared)
        .and_then(|memory| memory.pid)
}

/// One measurement of `op` under `load`, with the server's peak memory, CPU and (with
/// --count-instructions) instructions.
async fn measure(
    cli: &Cli,
    setup: &Setup,
    scenario: Scenario,
    case: &Option<String>,
    detail: &Option<String>,
    op: Arc<dyn Op>,
    load: runner::Load,
) -> anyhow::Result<Measurement> {
    let cpu = runner::CpuProbe::new(server_pid(setup));
    let watch = setup.memory.map(PeakWatch::start);
    let (sample, instructions) = match (cli.count_instructions, server_pid(setup)) {
        (true, Some(pid)) => {
            // The warm-up on its own, so that perf counts the measured calls only.
            runner::run(
                op.clone(),
                runner::Load::Closed,
                cli.concurrency,
                Duration::ZERO,
                cli.warmup,
                cpu,
            )
            .await;
            let perf = instructions::Perf::attach(pid)?;
            let sample =
                runner::run(op, load, cli.concurrency, Duration::ZERO, cli.duration, cpu).await;
            (sample, perf.finish())
        }
        (true, None) => bail!("--count-instructions needs the server's process ID"),
        (false, _) => (
            runner::run(op, load, cli.concurrency, cli.warmup, cli.duration, cpu).await,
            None,
        ),
    };
    let (peak_rss_kib, peak_rss_source) = match watch {
        Some(watch) => watch.finish().await.unzip(),
        None => (None, None),
    };
    Ok(Measurement {
        scenario,
        case: case.clone(),
        detail: detail.clone(),
        sample,
        instructions,
        peak_rss_kib,
        peak_rss_source,
    })
}

/// The measurements of a scenario: one, or the history's six. `hot` is the one customer of
/// `hot` or `hold-hot`; `batch_lines` the lines of each apply-batch call.
fn ops(
    scenario: Scenario,
    ctx: &Arc<Context>,
    customers: &Arc<Vec<String>>,
    hot: Option<&Arc<Vec<String>>>,
    history: Option<&History>,
    batch_lines: usize,
) -> Vec<Case> {
    let ctx = ctx.clone();
    let one = |op: Arc<dyn Op>| vec![(None, None, op)];
    match scenario {
        Scenario::Noop => one(Arc::new(scenarios::Noop { ctx })),
        Scenario::Summary => one(Arc::new(scenarios::Summary {
            ctx,
            customers: customers.clone(),
        })),
        Scenario::Apply => one(Arc::new(scenarios::Apply {
            ctx,
            customers: customers.clone(),
            name: "apply",
        })),
        Scenario::ApplyBatch => vec![(
            None,
            Some(format!(
                "ApplyCreditsBatch of {batch_lines} lines: 1 call per op"
            )),
            Arc::new(scenarios::ApplyBatch {
                ctx,
                customers: customers.clone(),
                lines: batch_lines,
            }),
        )],
        Scenario::Hot => match hot {
            Some(hot) => one(Arc::new(scenarios::Apply {
                ctx,
                customers: hot.clone(),
                name: "hot",
            })),
            None => Vec::new(),
        },
        Scenario::HoldCapture => vec![(
            None,
            Some("CreateCreditHold + CaptureCreditHold: 2 calls per op".to_string()),
            Arc::new(scenarios::HoldCapture {
                ctx,
                customers: customers.clone(),
                name: "hold-capture",
            }),
        )],
        Scenario::HoldHot => match hot {
            Some(hot) => vec![(
                None,
                Some(
                    "CreateCreditHold + CaptureCreditHold on one customer: 2 calls per op"
                        .to_string(),
                ),
                Arc::new(scenarios::HoldCapture {
                    ctx,
                    customers: hot.clone(),
                    name: "hold-hot",
                }),
            )],
            None => Vec::new(),
        },
        Scenario::CbtGrpc => one(Arc::new(scenarios::CbtGrpc {
            ctx,
            customers: customers.clone(),
        })),
        Scenario::CbtRest => match ctx.rest.clone() {
            Some(rest) => one(Arc::new(scenarios::CbtRest {
                ctx,
                rest,
                customers: customers.clone(),
            })),
            None => Vec::new(),
        },
        Scenario::History => {
            let Some(history) = history else {
                return Vec::new();
            };
            let case = |name: &str, detail: String, op: Arc<dyn Op>| {
                (Some(name.to_string()), Some(detail), op)
            };
            vec![
                case(
                    "summary-small",
                    format!("summary, {} ledger entries", history.small_entries),
                    Arc::new(scenarios::HistorySummary {
                        ctx: ctx.clone(),
                        customer: history.small_customer.clone(),
                        as_of: false,
                    }),
                ),
                case(
                    "as-of-small",
                    format!("summary as_of, {} ledger entries", history.small_entries),
                    Arc::new(scenarios::HistorySummary {
                        ctx: ctx.clone(),
                        customer: history.small_customer.clone(),
                        as_of: true,
                    }),
                ),
                case(
                    "as-of-big",
                    format!("summary as_of, {} ledger entries", history.big_entries),
                    Arc::new(scenarios::HistorySummary {
                        ctx: ctx.clone(),
                        customer: history.big_customer.clone(),
                        as_of: true,
                    }),
                ),
                case(
                    "summary-big",
                    format!("summary, {} ledger entries", history.big_entries),
                    Arc::new(scenarios::HistorySummary {
                        ctx: ctx.clone(),
                        customer: history.big_customer.clone(),
                        as_of: false,
                    }),
                ),
                case(
                    "list-first",
                    format!("list limit 10, first page of {}", history.big_entries),
                    Arc::new(scenarios::HistoryList {
                        ctx: ctx.clone(),
                        customer: history.big_customer.clone(),
                        starting_after: None,
                    }),
                ),
                case(
                    "list-deep",
                    format!("list limit 10, after depth {}", history.depth),
                    Arc::new(scenarios::HistoryList {
                        ctx: ctx.clone(),
                        customer: history.big_customer.clone(),
                        starting_after: Some(history.cursor.clone()),
                    }),
                ),
            ]
        }
        Scenario::DbInsert | Scenario::DbUpdate | Scenario::DbRead => match ctx.db.clone() {
            Some(db) => one(Arc::new(scenarios::DbBaseline { db, scenario })),
            None => Vec::new(),
        },
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// Invoice lines applied by one operation: `--batch-lines` for apply-batch, one for apply and
/// hot; none for the rest.
fn lines_per_op(scenario: Scenario, cli: &Cli) -> Option<usize> {
    match scenario {
        Scenario::ApplyBatch => Some(cli.batch_lines),
        Scenario::Apply | Scenario::Hot => Some(1),
        _ => None,
    }
}

fn result_json(m: &Measurement, cli: &Cli) -> serde_json::Value {
    let us = |value: Option<f64>| value.map(|v| round(v, 1));
    json!({
        "type": "result",
        "scenario": m.scenario.name(),
        "case": m.case,
        "detail": m.detail,
        "calls_per_op": m.scenario.calls_per_op(),
        "lines_per_op": lines_per_op(m.scenario, cli),
        "lines_per_s": (m.scenario == Scenario::ApplyBatch)
            .then(|| round(m.sample.ops_per_second() * cli.batch_lines as f64, 1)),
        "server_cpu_us_per_line": (m.scenario == Scenario::ApplyBatch)
            .then(|| m.sample.server_cpu_us_per_op().map(|us| round(us / cli.batch_lines as f64, 2)))
            .flatten(),
        "ops": m.sample.ops,
        "errors": m.sample.errors,
        "first_error": m.sample.first_error,
        "duration_s": m.sample.duration.as_secs_f64(),
        "ops_per_s": round(m.sample.ops_per_second(), 1),
        "p50_us": us(m.sample.quantile_us(0.50)),
        "p90_us": us(m.sample.quantile_us(0.90)),
        "p99_us": us(m.sample.quantile_us(0.99)),
        "p999_us": us(m.sample.quantile_us(0.999)),
        "max_us": us(m.sample.max_us()),
        "mean_us": us(m.sample.mean_us()),
        "load": m.sample.load.name(),
        "rate_per_s": match m.sample.load {
            runner::Load::Open { rate } => Some(round(rate, 1)),
            _ => None,
        },
        "behind_schedule": matches!(m.sample.load, runner::Load::Open { .. }).then_some(m.sample.behind),
        "max_lag_us": matches!(m.sample.load, runner::Load::Open { .. })
            .then(|| round(m.sample.max_lag.as_secs_f64() * 1e6, 1)),
        "server_cpu_s": m.sample.server_cpu.map(|cpu| round(cpu.as_secs_f64(), 3)),
        "server_cpu_us_per_op": us(m.sample.server_cpu_us_per_op()),
        "bench_cpu_s": m.sample.bench_cpu.map(|cpu| round(cpu.as_secs_f64(), 3)),
        "bench_cpu_us_per_op": us(m.sample.bench_cpu_us_per_op()),
        "server_instructions": m.instructions,
        "server_instructions_per_op": m.instructions_per_op().map(|v| round(v, 0)),
        "concurrency": cli.concurrency,
        "connections": cli.connections,
        "peak_rss_kib": m.peak_rss_kib,
        "peak_rss_source": m.peak_rss_source,
    })
}

fn humanize(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |us| format!("{:.3}", us / 1000.0))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn report(
    out: &Out,
    cli: &Cli,
    setup: &Setup,
    measurements: &[Measurement],
    history: Option<&History>,
) {
    out.text("");
    out.text(&format!(
        "{:<28} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>11} {:>10} {:>10}",
        "scenario",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "peak RSS",
        "srv µs/op",
        "gen µs/op"
    ));
    let cpu = |value: Option<f64>| value.map_or_else(|| "-".to_string(), |us| format!("{us:.1}"));
    for m in measurements {
        out.text(&format!(
            "{:<28} {:>10.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>11} {:>10} {:>10}",
            m.label(),
            m.sample.ops_per_second(),
            ms(m.sample.quantile_us(0.50)),
            ms(m.sample.quantile_us(0.90)),
            ms(m.sample.quantile_us(0.99)),
            ms(m.sample.quantile_us(0.999)),
            ms(m.sample.max_us()),
            m.sample.errors,
            m.peak_rss_kib.map_or_else(|| "-".to_string(), mib),
            cpu(m.sample.server_cpu_us_per_op()),
            cpu(m.sample.bench_cpu_us_per_op()),
        ));
    }
    out.text("  srv / gen µs/op: CPU time (user + system) of the server / load generator process per successful call");
    // A scenario's measurements are consecutive (closed loop, then open loop).
    let mut multi: Vec<&str> = measurements
        .iter()
        .filter(|m| m.scenario.calls_per_op() > 1)
        .map(|m| m.scenario.name())
        .collect();
    multi.dedup();
    if !multi.is_empty() {
        out.text(&format!(
            "  {}: one op = CreateCreditHold + CaptureCreditHold (2 RPCs, 2 transactions, one after the other); ops/s, latency and µs/op are per pair",
            multi.join(", ")
        ));
    }
    for m in measurements
        .iter()
        .filter(|m| m.scenario == Scenario::ApplyBatch)
    {
        let lines = cli.batch_lines as f64;
        out.text(&format!(
            "  {}: one op = one ApplyCreditsBatch call of {} lines: {:.0} lines/s, server CPU {} µs/line",
            m.label(),
            cli.batch_lines,
            m.sample.ops_per_second() * lines,
            m.sample
                .server_cpu_us_per_op()
                .map_or_else(|| "-".to_string(), |us| format!("{:.1}", us / lines)),
        ));
    }
    for m in measurements {
        if let runner::Load::Open { rate } = m.sample.load {
            out.text(&format!(
                "  {}: open loop at {rate:.1}/s, latency from the scheduled send time; {} of {} calls fell behind schedule (largest lag {})",
                m.label(),
                m.sample.behind,
                m.sample.ops + m.sample.errors,
                ms(Some(m.sample.max_lag.as_secs_f64() * 1e6)),
            ));
        }
        if let Some(per_op) = m.instructions_per_op() {
            out.text(&format!(
                "  {}: {per_op:.0} server instructions per call (perf stat, {} calls)",
                m.label(),
                m.sample.ops
            ));
        }
    }

    let find = |scenario: Scenario, case: Option<&str>| {
        measurements
            .iter()
            .find(|m| {
                m.scenario == scenario
                    && m.case.as_deref() == case
                    && !matches!(m.sample.load, runner::Load::Open { .. })
            })
            .map(|m| &m.sample)
    };
    let throughput = |a: Option<&Sample>, b: Option<&Sample>| match (a, b) {
        (Some(a), Some(b)) if b.ops > 0 => Some(a.ops_per_second() / b.ops_per_second()),
        _ => None,
    };
    let p50 = |a: Option<&Sample>, b: Option<&Sample>| match (a, b) {
        (Some(a), Some(b)) => match (a.quantile_us(0.5), b.quantile_us(0.5)) {
            (Some(x), Some(y)) if y > 0.0 => Some(x / y),
            _ => None,
        },
        _ => None,
    };
    let depth = history.map_or(cli.list_depth, |h| h.depth);
    let entries = history.map_or(cli.history_entries, |h| h.big_entries);
    let small = history.map_or(cli.history_small_entries, |h| h.small_entries);
    let ratios = [
        (
            "summary/noop",
            "throughput: summary ÷ noop".to_string(),
            throughput(find(Scenario::Summary, None), find(Scenario::Noop, None)),
        ),
        (
            "summary/db-read",
            "throughput: summary ÷ one-row point reads (driver floor)".to_string(),
            throughput(find(Scenario::Summary, None), find(Scenario::DbRead, None)),
        ),
        (
            "apply/db-insert",
            "throughput: apply ÷ one-row insert transactions".to_string(),
            throughput(find(Scenario::Apply, None), find(Scenario::DbInsert, None)),
        ),
        (
            "apply-batch-lines/apply",
            format!(
                "lines/s: apply-batch ({} lines per call) ÷ apply",
                cli.batch_lines
            ),
            throughput(
                find(Scenario::ApplyBatch, None),
                find(Scenario::Apply, None),
            )
            .map(|ratio| ratio * cli.batch_lines as f64),
        ),
        (
            "hot/db-update",
            "throughput: hot ÷ one-row update transactions".to_string(),
            throughput(find(Scenario::Hot, None), find(Scenario::DbUpdate, None)),
        ),
        (
            "hold-capture/apply",
            "throughput: hold-capture (create+capture) ÷ apply".to_string(),
            throughput(
                find(Scenario::HoldCapture, None),
                find(Scenario::Apply, None),
            ),
        ),
        (
            "hold-hot/hot",
            "throughput: hold-hot (create+capture) ÷ hot".to_string(),
            throughput(find(Scenario::HoldHot, None), find(Scenario::Hot, None)),
        ),
        (
            "history-summary-p50-big/small",
            format!("summary p50: {entries} ÷ {small} ledger entries"),
            p50(
                find(Scenario::History, Some("summary-big")),
                find(Scenario::History, Some("summary-small")),
            ),
        ),
        (
            "history-as-of-p50-big/small",
            format!("summary as_of p50: {entries} ÷ {small} ledger entries"),
            p50(
                find(Scenario::History, Some("as-of-big")),
                find(Scenario::History, Some("as-of-small")),
            ),
        ),
        (
            "history-list-p50-deep/first",
            format!("list page p50: after depth {depth} ÷ first page"),
            p50(
                find(Scenario::History, Some("list-deep")),
                find(Scenario::History, Some("list-first")),
            ),
        ),
        (
            "cbt-rest/cbt-grpc",
            "throughput: cbt-rest ÷ cbt-grpc".to_string(),
            throughput(find(Scenario::CbtRest, None), find(Scenario::CbtGrpc, None)),
        ),
    ];
    let available: Vec<_> = ratios
        .iter()
        .filter_map(|(name, text, value)| value.map(|v| (name, text, v)))
        .collect();
    let peak = measurements.iter().filter_map(|m| m.peak_rss_kib).max();
    if available.is_empty() && peak.is_none() {
        return;
    }
    out.text("");
    out.text("ratios");
    for (name, text, value) in &available {
        out.text(&format!("  {text:<56} {value:>8.3}"));
        out.record(
            json!({"type": "ratio", "name": name, "description": text, "value": round(*value, 4)}),
        );
    }
    if let (Some(peak), Some(memory)) = (peak, &setup.memory) {
        let at = measurements
            .iter()
            .filter(|m| m.peak_rss_kib == Some(peak))
            .map(Measurement::label)
            .next()
            .unwrap_or_default();
        out.text(&format!(
            "  peak RSS {} ({}, during {at})",
            mib(peak),
            memory.scope()
        ));
        out.record(json!({
            "type": "memory",
            "peak_rss_kib": peak,
            "during": at,
            "scope": memory.scope(),
        }));
    }
}

async fn audit(out: &Out, db: &Db) -> anyhow::Result<bool> {
    let started = Instant::now();
    let report = creditd::service::Services::new(db.clone())
        .audit_everything()
        .await
        .map_err(|error| anyhow::anyhow!("audit: {error}"))?;
    let clean = report.is_clean();
    out.text("");
    out.text(&format!(
        "audit ({:.1}s): {}",
        started.elapsed().as_secs_f64(),
        if clean {
            "clean".to_string()
        } else {
            format!("{} findings", report.findings.len())
        }
    ));
    if !clean {
        out.text(&format!("{report}"));
    }
    out.record(json!({
        "type": "audit",
        "clean": clean,
        "findings": report.findings.len(),
    }));
    Ok(clean)
}
