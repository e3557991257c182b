//! The scenarios: what each seeds and what one call of each does.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use creditd::domain::Tenant;
use creditd::grpc::proto;
use creditd::grpc::proto::credit_balance_service_client::CreditBalanceServiceClient;
use creditd::grpc::proto::credit_grant_service_client::CreditGrantServiceClient;
use creditd::grpc::proto::credit_hold_service_client::CreditHoldServiceClient;
use creditd::grpc::proto::customer_balance_transaction_service_client::CustomerBalanceTransactionServiceClient;
use creditd::grpc::proto::customer_service_client::CustomerServiceClient;
use creditd::store::Db;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use rand::Rng;
use tonic_health::pb::health_client::HealthClient;

use crate::clients::{Grpc, Rest};
use crate::runner::Op;
use crate::seed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Scenario {
    /// grpc.health.v1.Health/Check: the ceiling the others are divided by.
    Noop,
    /// GetCreditBalanceSummary (scope price_type=metered) of a random seeded customer.
    Summary,
    /// ApplyCredits to a new invoice line of a random seeded customer.
    Apply,
    /// ApplyCreditsBatch of `--batch-lines` new invoice lines, each of a random seeded customer
    /// (like `apply`'s lines): one operation is one batch call; lines/s = ops/s × lines.
    ApplyBatch,
    /// ApplyCredits to a new invoice line, always of one customer.
    Hot,
    /// CreateCreditHold then CaptureCreditHold of it against a new invoice line, for a random
    /// seeded customer: one operation is the two calls.
    HoldCapture,
    /// The same, always for one customer (not the `hot` one).
    HoldHot,
    /// CreateCustomerBalanceTransaction over gRPC for a random seeded customer.
    CbtGrpc,
    /// POST /v1/customers/{id}/balance_transactions (form, Basic auth) for a random customer.
    CbtRest,
    /// Summary (now and `as_of`) and list pages of a customer with a short and one with a long
    /// credit ledger.
    History,
    /// One-row insert transactions into a scratch table, through creditd's database pool.
    DbInsert,
    /// `UPDATE scratch SET v = v - 1 WHERE id = 1` transactions, through the same pool.
    DbUpdate,
    /// Point reads of one scratch row by primary key through creditd's read pool.
    DbRead,
}

impl Scenario {
    pub const ALL: [Scenario; 13] = [
        Scenario::Noop,
        Scenario::Summary,
        Scenario::Apply,
        Scenario::ApplyBatch,
        Scenario::Hot,
        Scenario::HoldCapture,
        Scenario::HoldHot,
        Scenario::CbtGrpc,
        Scenario::CbtRest,
        Scenario::History,
        Scenario::DbInsert,
        Scenario::DbUpdate,
        Scenario::DbRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Noop => "noop",
            Scenario::Summary => "summary",
            Scenario::Apply => "apply",
            Scenario::ApplyBatch => "apply-batch",
            Scenario::Hot => "hot",
            Scenario::HoldCapture => "hold-capture",
            Scenario::HoldHot => "hold-hot",
            Scenario::CbtGrpc => "cbt-grpc",
            Scenario::CbtRest => "cbt-rest",
            Scenario::History => "history",
            Scenario::DbInsert => "db-insert",
            Scenario::DbUpdate => "db-update",
            Scenario::DbRead => "db-read",
        }
    }

    /// Needs the seeded customers with their five grants.
    pub fn needs_customers(self) -> bool {
        matches!(
            self,
            Scenario::Summary
                | Scenario::Apply
                | Scenario::ApplyBatch
                | Scenario::HoldCapture
                | Scenario::CbtGrpc
                | Scenario::CbtRest
        )
    }

    /// RPCs in one operation (what throughput, latency and CPU per op are counted in).
    pub fn calls_per_op(self) -> u32 {
        match self {
            Scenario::HoldCapture | Scenario::HoldHot => 2,
            _ => 1,
        }
    }

    /// Needs direct access to the database.
    pub fn needs_database(self) -> bool {
        matches!(
            self,
            Scenario::History | Scenario::DbInsert | Scenario::DbUpdate | Scenario::DbRead
        )
    }
}

/// What every operation shares.
pub struct Context {
    pub grpc: Grpc,
    pub rest: Option<Arc<Rest>>,
    pub db: Option<Db>,
    /// Unique to this run, so invoice lines and idempotency keys never repeat across runs.
    pub run_tag: String,
    pub idempotency_keys: bool,
    /// With --observe-events: where apply calls report the entries they wrote.
    pub observer: Option<Arc<crate::events::EventObserver>>,
}

impl Context {
    /// With --observe-events: reports the ledger entries a call wrote, answered now.
    fn observe<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a proto::CreditBalanceTransaction>,
        sent: std::time::Instant,
    ) {
        if let Some(observer) = &self.observer {
            observer.record_call(entries.into_iter().map(|entry| entry.id.clone()), sent);
        }
    }

    fn idempotency_key(&self, scenario: &str, worker: usize, seq: u64) -> Option<String> {
        self.idempotency_keys
            .then(|| format!("bench-{}-{scenario}-{worker}-{seq}", self.run_tag))
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

fn status(error: tonic::Status) -> String {
    format!("{:?}: {}", error.code(), error.message())
}

fn metered() -> proto::CreditScope {
    proto::CreditScope {
        price_type: Some("metered".to_string()),
        prices: Vec::new(),
    }
}

fn usd(value: i64) -> proto::CreditAmount {
    proto::CreditAmount {
        r#type: "monetary".to_string(),
        monetary: Some(proto::MonetaryAmount {
            currency: "usd".to_string(),
            value,
        }),
    }
}

pub async fn create_customer(ctx: &Context, name: String) -> anyhow::Result<String> {
    let customer = CustomerServiceClient::new(ctx.grpc.channel(0))
        .create_customer(ctx.grpc.request(
            proto::CreateCustomerRequest {
                name: Some(name),
                ..Default::default()
            },
            None,
        ))
        .await
        .map_err(|error| anyhow::anyhow!("CreateCustomer: {}", status(error)))?;
    Ok(customer.into_inner().id)
}

/// The five grants of a seeded customer, in a realistic mix: promotional and paid, different
/// priorities, two expiring in a year, one scoped to a price (left out by the metered filter
/// and by metered applications, but still read by both).
async fn create_grants(
    ctx: &Context,
    worker: usize,
    customer: &str,
    value: i64,
) -> anyhow::Result<()> {
    let year_from_now = now() + 365 * 24 * 3600;
    let mut client = CreditGrantServiceClient::new(ctx.grpc.channel(worker));
    for index in 0..5_i64 {
        let scope = if index == 3 {
            proto::CreditScope {
                price_type: None,
                prices: vec![proto::ApplicablePrice {
                    id: "price_bench_storage".to_string(),
                }],
            }
        } else {
            metered()
        };
        let request = proto::CreateCreditGrantRequest {
            customer: customer.to_string(),
            amount: Some(usd(value)),
            applicability_config: Some(proto::ApplicabilityConfig { scope: Some(scope) }),
            category: Some(
                if index % 2 == 0 {
                    "promotional"
                } else {
                    "paid"
                }
                .to_string(),
            ),
            effective_at: None,
            expires_at: (index < 2).then_some(year_from_now),
            metadata: Default::default(),
            name: Some(format!("bench grant {index}")),
            priority: Some(10 * index),
        };
        client
            .create_credit_grant(ctx.grpc.request(request, None))
            .await
            .map_err(|error| anyhow::anyhow!("CreateCreditGrant: {}", status(error)))?;
    }
    Ok(())
}

/// Creates `count` customers with five grants of `grant_value` each, `concurrency` at a time,
/// through the gRPC API.
pub async fn seed_customers(
    ctx: &Context,
    count: usize,
    grant_value: i64,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    futures::stream::iter(0..count)
        .map(|index| async move {
            let customer = create_customer(ctx, format!("bench customer {index}")).await?;
            create_grants(ctx, index, &customer, grant_value).await?;
            Ok::<_, anyhow::Error>(customer)
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

pub async fn seed_hot_customer(ctx: &Context, name: &str) -> anyhow::Result<String> {
    let customer = create_customer(ctx, name.to_string()).await?;
    create_grants(ctx, 0, &customer, 99_999_999).await?;
    Ok(customer)
}

/// The two history customers.
#[derive(Debug, Clone)]
pub struct History {
    pub small_customer: String,
    pub small_entries: u64,
    pub big_customer: String,
    pub big_entries: u64,
    /// The list cursor at `depth` in the big history (`starting_after` it).
    pub cursor: String,
    pub depth: u64,
}

/// Creates two customers through the API and writes their credit ledgers with bulk SQL.
pub async fn seed_history(
    ctx: &Context,
    db: &Db,
    tenant: &Tenant,
    small_entries: u64,
    big_entries: u64,
    depth: u64,
) -> anyhow::Result<History> {
    let small_customer = create_customer(ctx, "bench short history".to_string()).await?;
    let big_customer = create_customer(ctx, "bench long history".to_string()).await?;
    seed::seed_credit_history(db, tenant, &small_customer, small_entries, 0, now())
        .await
        .map_err(|error| anyhow::anyhow!("seeding the short history: {error}"))?;
    let big = seed::seed_credit_history(db, tenant, &big_customer, big_entries, depth, now())
        .await
        .map_err(|error| anyhow::anyhow!("seeding the long history: {error}"))?;
    let cursor = big
        .cursor_id
        .context("the long history is shorter than the list depth")?;
    Ok(History {
        small_customer,
        small_entries: small_entries.max(1),
        big_customer,
        big_entries: big.entries,
        cursor,
        depth,
    })
}

fn random_customer(customers: &[String]) -> &str {
    &customers[rand::rng().random_range(0..customers.len())]
}

pub struct Noop {
    pub ctx: Arc<Context>,
}

impl Op for Noop {
    fn call(&self, worker: usize, _seq: u64) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let response = HealthClient::new(self.ctx.grpc.channel(worker))
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(status)?;
            let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
            if response.get_ref().status != serving {
                return Err(format!("health status {}", response.get_ref().status));
            }
            Ok(())
        }
        .boxed()
    }
}

/// GetCreditBalanceSummary with the metered scope filter, for one of `customers` at random.
pub struct Summary {
    pub ctx: Arc<Context>,
    pub customers: Arc<Vec<String>>,
}

impl Op for Summary {
    fn call(&self, worker: usize, _seq: u64) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let customer = random_customer(&self.customers).to_string();
            let summary = CreditBalanceServiceClient::new(self.ctx.grpc.channel(worker))
                .get_credit_balance_summary(self.ctx.grpc.request(
                    proto::GetCreditBalanceSummaryRequest {
                        customer,
                        filter: Some(proto::SummaryFilter {
                            r#type: "applicability_scope".to_string(),
                            credit_grant: None,
                            applicability_scope: Some(metered()),
                        }),
                        as_of: None,
                    },
                    None,
                ))
                .await
                .map_err(status)?;
            if summary.get_ref().balances.is_empty() {
                return Err("the summary has no balance".to_string());
            }
            Ok(())
        }
        .boxed()
    }
}

/// One of `customers` at random, and 1..=100 cents.
fn customer_and_cents(customers: &[String]) -> (String, i64) {
    let mut rng = rand::rng();
    let customer = customers[rng.random_range(0..customers.len())].clone();
    (customer, rng.random_range(1..=100))
}

/// ApplyCredits of 1..=100 cents to a new invoice line (one invoice per worker, one line per
/// call) of one of `customers` at random.
pub struct Apply {
    pub ctx: Arc<Context>,
    pub customers: Arc<Vec<String>>,
    pub name: &'static str,
}

impl Op for Apply {
    fn call(&self, worker: usize, seq: u64) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let (customer, amount_due) = customer_and_cents(&self.customers);
            let request = proto::ApplyCreditsRequest {
                customer,
                currency: "usd".to_string(),
                invoice: format!("in_bench_{}_{}_{worker}", self.ctx.run_tag, self.name),
                invoice_line_item: format!("il_{seq}"),
                price_type: Some("metered".to_string()),
                price: None,
                amount_due,
            };
            let key = self.ctx.idempotency_key(self.name, worker, seq);
            let sent = std::time::Instant::now();
            let applied = CreditBalanceServiceClient::new(self.ctx.grpc.channel(worker))
                .apply_credits(self.ctx.grpc.request(request, key))
                .await
                .map_err(status)?;
            if applied.get_ref().applied != amount_due {
                return Err(format!(
                    "applied {} of {amount_due}: the grants ran out",
                    applied.get_ref().applied
                ));
            }
            self.ctx.observe(&applied.get_ref().entries, sent);
            Ok(())
        }
        .boxed()
    }
}

/// ApplyCreditsBatch of `lines` invoice lines, each as `Apply` sends one: 1..=100 cents to a
/// new invoice line (one invoice per worker, one line per line of each call) of one of
/// `customers` at random. One operation is one batch call; a batch with any line answered by
/// an error, or applied short of its amount due, is an error of the whole operation.
pub struct ApplyBatch {
    pub ctx: Arc<Context>,
    pub customers: Arc<Vec<String>>,
    pub lines: usize,
}

impl Op for ApplyBatch {
    fn call(&self, worker: usize, seq: u64) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let invoice = format!("in_bench_{}_apply-batch_{worker}", self.ctx.run_tag);
            let lines: Vec<proto::ApplyCreditsRequest> = (0..self.lines)
                .map(|line| {
                    let (customer, amount_due) = customer_and_cents(&self.customers);
                    proto::ApplyCreditsRequest {
                        customer,
                        currency: "usd".to_string(),
                        invoice: invoice.clone(),
                        invoice_line_item: format!("il_{seq}_{line}"),
                        price_type: Some("metered".to_string()),
                        price: None,
                        amount_due,
                    }
                })
                .collect();
            let due: Vec<i64> = lines.iter().map(|line| line.amount_due).collect();
            let key = self.ctx.idempotency_key("apply-batch", worker, seq);
            let sent = std::time::Instant::now();
            let response = CreditBalanceServiceClient::new(self.ctx.grpc.channel(worker))
                .apply_credits_batch(
                    self.ctx
                        .grpc
                        .request(proto::ApplyCreditsBatchRequest { lines }, key),
                )
                .await
                .map_err(status)?
                .into_inner();
            if response.results.len() != due.len() {
                return Err(format!(
                    "{} results for {} lines",
                    response.results.len(),
                    due.len()
                ));
            }
            use proto::apply_credits_line_result::Result as Line;
            let mut refused = 0;
            let mut short = 0;
            let mut first: Option<String> = None;
            for (index, (result, amount_due)) in response.results.iter().zip(&due).enumerate() {
                match &result.result {
                    Some(Line::Applied(applied)) if applied.applied == *amount_due => {}
                    Some(Line::Applied(applied)) => {
                        short += 1;
                        first.get_or_insert_with(|| {
                            format!(
                                "line {index}: applied {} of {amount_due}: the grants ran out",
                                applied.applied
                            )
                        });
                    }
                    Some(Line::Error(error)) => {
                        refused += 1;
                        first.get_or_insert_with(|| {
                            format!(
                                "line {index}: code {} ({}): {}",
                                error.code, error.reason, error.message
                            )
                        });
                    }
                    None => {
                        refused += 1;
                        first.get_or_insert_with(|| format!("line {index}: an empty result"));
                    }
                }
            }
            if let Some(first) = first {
                return Err(format!(
                    "{refused} line errors and {short} short lines of {}; the first: {first}",
                    due.len()
                ));
            }
            self.ctx.observe(
                response
                    .results
                    .iter()
                    .flat_map(|result| match &result.result {
                        Some(Line::Applied(applied)) => applied.entries.as_slice(),
                        _ => &[],
                    }),
                sent,
            );
            Ok(())
        }
        .boxed()
    }
}

/// CreateCreditHold of 1..=100 cents (metered, ten-minute lifetime) for one of `customers` at
/// random, then CaptureCreditHold of all of it against a new invoice line (one invoice per
/// worker, one line per operation): the reserve-then-settle path a metered caller takes, whose
/// ledger effect is one ApplyCredits of the same amount. One operation is both calls; its
/// latency is the pair's, sent one after the other.
pub struct HoldCapture {
    pub ctx: Arc<Context>,
    pub customers: Arc<Vec<String>>,
    pub name: &'static str,
}

impl Op for HoldCapture {
    fn call(&self, worker: usize, seq: u64) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let (customer, amount) = customer_and_cents(&self.customers);
            let mut client = CreditHoldServiceClient::new(self.ctx.grpc.channel(worker));
            let sent = std::time::Instant::now();
            let create = proto::CreateCreditHoldRequest {
                customer,
                currency: "usd".to_string(),
                amount,
                price_type: Some("metered".to_string()),
                price: None,
                ttl_seconds: Some(600),
                expires_at: None,
            };
            let key = self
                .ctx
                .idempotency_key(&format!("{}-create", self.name), worker, seq);
            let hold = client
                .create_credit_hold(self.ctx.grpc.request(create, key))
                .await
                .map_err(|error| format!("CreateCreditHold: {}", status(error)))?
                .into_inner();
            if hold.reserved != amount {
                return Err(format!("the hold reserved {} of {amount}", hold.reserved));
            }
            let capture = proto::CaptureCreditHoldRequest {
                id: hold.id,
                invoice: format!("in_bench_{}_{}_{worker}", self.ctx.run_tag, self.name),
                invoice_line_item: format!("il_{seq}"),
                amount: None,
            };
            let key = self
                .ctx
                .idempotency_key(&format!("{}-capture", self.name), worker, seq);
            let captured = client
                .capture_credit_hold(self.ctx.grpc.request(capture, key))
                .await
                .map_err(|error| format!("CaptureCreditHold: {}", status(error)))?;
            if captured.get_ref().applied != amount {
                return Err(format!(
                    "captured {} of the {amount} held",
                    captured.get_ref().applied
                ));
            }
            self.ctx.observe(&captured.get_ref().entries, sent);
            Ok(())
        }
        .boxed()
    }
}

fn balance_amount() -> i64 {
    let amount: i64 = rand::rng().random_range(1..=500);
    if rand::rng().random_bool(0.5) {
        amount
    } else {
        -amount
    }
}

/// CreateCustomerBalanceTransaction of ±1..500 cents for one of `customers` at random.
pub struct CbtGrpc {
    pub ctx: Arc<Context>,
    pub customers: Arc<Vec<String>>,
}

impl Op for CbtGrpc {
    fn call(&self, worker: usize, seq: u64) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let request = proto::CreateCustomerBalanceTransactionRequest {
                customer: random_customer(&self.customers).to_string(),
                amount: balance_amount(),
                currency: "usd".to_string(),
                description: Some("benchmark adjustment".to_string()),
                metadata: Default::default(),
            };
            let key = self.ctx.idempotency_key("cbt-grpc", worker, seq);
            CustomerBalanceTransactionServiceClient::new(self.ctx.grpc.channel(worker))
                .create_customer_balance_transaction(self.ctx.grpc.request(request, key))
                .await
                .map_err(status)?;
            Ok(())
        }
        .boxed()
    }
}

/// The same over the REST shim: a form POST with Basic auth, as a Stripe SDK sends it.
pub struct CbtRest {
    pub ctx: Arc<Context>,
    pub rest: Arc<Rest>,
    pub customers: Arc<Vec<String>>,
}

impl Op for CbtRest {
    fn call(&self, worker: usize, seq: u64) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let customer = random_customer(&self.customers);
            let path = format!("/v1/customers/{customer}/balance_transactions");
            let form = format!(
                "amount={}&currency=usd&description=benchmark+adjustment",
                balance_amount()
            );
            let key = self.ctx.idempotency_key("cbt-rest", worker, seq);
            let body = self
                .rest
                .post_form(worker, &path, form, key.as_deref())
                .await?;
            if !body.starts_with(b"{") {
                return Err("the response is not a JSON object".to_string());
            }
            Ok(())
        }
        .boxed()
    }
}

/// GetCreditBalanceSummary of one customer, now or `as_of` a second ago (one index lookup per
/// grant for its running remainder, whatever the history's length).
pub struct HistorySummary {
    pub ctx: Arc<Context>,
    pub customer: String,
    pub as_of: bool,
}

impl Op for HistorySummary {
    fn call(&self, worker: usize, _seq: u64) -> BoxFuture<'_, Result<(), String>> {
        async move {
            CreditBalanceServiceClient::new(self.ctx.grpc.channel(worker))
                .get_credit_balance_summary(self.ctx.grpc.request(
                    proto::GetCreditBalanceSummaryRequest {
                        customer: self.customer.clone(),
                        filter: Some(proto::SummaryFilter {
                            r#type: "applicability_scope".to_string(),
                            credit_grant: None,
                            applicability_scope: Some(metered()),
                        }),
                        // A second back, so the server's clock is surely past it.
                        as_of: self.as_of.then(|| now() - 1),
                    },
                    None,
                ))
                .await
                .map_err(status)?;
            Ok(())
        }
        .boxed()
    }
}

/// ListCreditBalanceTransactions with limit 10, from the top or after a cursor.
pub struct HistoryList {
    pub ctx: Arc<Context>,
    pub customer: String,
    pub starting_after: Option<String>,
}

impl Op for HistoryList {
    fn call(&self, worker: usize, _seq: u64) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let page = CreditBalanceServiceClient::new(self.ctx.grpc.channel(worker))
                .list_credit_balance_transactions(self.ctx.grpc.request(
                    proto::ListCreditBalanceTransactionsRequest {
                        customer: self.customer.clone(),
                        credit_grant: None,
                        page: Some(proto::PageRequest {
                            limit: Some(10),
                            starting_after: self.starting_after.clone(),
                            ending_before: None,
                        }),
                    },
                    None,
                ))
                .await
                .map_err(status)?;
            if page.get_ref().data.len() != 10 {
                return Err(format!("a page of {} entries", page.get_ref().data.len()));
            }
            Ok(())
        }
        .boxed()
    }
}

/// One operation of a database baseline (db-insert, db-update or db-read), through the same
/// driver and pool sizes as the server.
pub struct DbBaseline {
    pub db: Db,
    pub scenario: Scenario,
}

impl Op for DbBaseline {
    fn call(&self, worker: usize, seq: u64) -> BoxFuture<'_, Result<(), String>> {
        async move {
            match self.scenario {
                Scenario::DbInsert => {
                    seed::scratch_insert(&self.db, seq as i64, &format!("worker {worker}")).await
                }
                Scenario::DbUpdate => seed::scratch_update(&self.db).await,
                _ => seed::scratch_read(&self.db).await,
            }
            .map_err(|error| error.to_string())
        }
        .boxed()
    }
}
