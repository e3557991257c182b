//! The ledger audit's queries. Each recomputes materialized values from the immutable entries
//! in SQL (GROUP BY sums and counts, window functions for the balance chain), in one read
//! snapshot, and returns only the rows that disagree, so an audit costs a few scans however
//! large the ledger is. The SQL is portable between SQLite and PostgreSQL.
//!
//! Scope: `None` audits everything; `Some(tenant)` audits one account and mode, judged by the
//! row that owns the data: a customer's balances and balance transactions by the customer, a
//! grant's ledger entries by the grant, an application by its own row.

use sea_orm::{AccessMode, DbBackend, IsolationLevel, QueryResult, Statement, TransactionTrait};

use std::sync::LazyLock;

use super::{Connection, Db, Transaction, backend_of, db_error};
use crate::domain::Tenant;
use crate::domain::credit_balance_transaction::EntryType;
use crate::error::Result;

/// Opens a read-only transaction on the readers, so that every query of one audit sees the same
/// snapshot (REPEATABLE READ on PostgreSQL; on SQLite a read transaction in WAL mode) and the
/// audit never holds SQLite's single writer. End it with [`super::rollback`].
pub async fn snapshot(db: &Db) -> Result<Transaction> {
    let reader = db.reader();
    let tx = match db.backend() {
        DbBackend::Postgres => {
            reader
                .begin_with_config(
                    Some(IsolationLevel::RepeatableRead),
                    Some(AccessMode::ReadOnly),
                )
                .await
        }
        _ => reader.begin().await,
    };
    tx.map(Transaction::plain).map_err(db_error)
}

/// How many rows of each kind are in scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub customer_balances: i64,
    pub customer_balance_transactions: i64,
    pub credit_grants: i64,
    pub credit_balance_transactions: i64,
    pub credit_applications: i64,
}

/// A `customer_balances` row whose balance or count disagrees with its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceDifference {
    pub customer_id: String,
    pub currency: String,
    pub balance: i64,
    pub transaction_count: i64,
    /// The sum of the transactions' amounts.
    pub ledger_balance: i64,
    /// How many transactions there are.
    pub ledger_count: i64,
    /// The transaction with the highest sequence and its ending balance, if any.
    pub last_transaction: Option<(String, i64)>,
}

/// A customer balance transaction where the chain goes wrong: its sequence does not follow the
/// previous one, or its ending balance is neither the previous ending balance plus its amount
/// nor the running sum of amounts (the entry after a wrong ending balance is right again and
/// is not returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub id: String,
    pub customer_id: String,
    pub currency: String,
    pub sequence: i64,
    pub amount: i64,
    pub ending_balance: i64,
    /// The previous entry's sequence and ending balance; `None` for the first entry.
    pub previous: Option<(i64, i64)>,
    /// The sum of amounts up to and including this entry.
    pub running_balance: i64,
}

/// Customer balance transactions of a (customer, currency) that has no `customer_balances` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanTransactions {
    pub customer_id: String,
    pub currency: String,
    pub count: i64,
    pub total: i64,
    /// The lowest and highest transaction IDs of the group.
    pub first_id: String,
    pub last_id: String,
}

/// A grant whose remainder disagrees with its entries or breaks a rule of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantDifference {
    pub id: String,
    pub customer_id: String,
    pub amount: i64,
    pub remaining: i64,
    pub written_off: bool,
    /// The signed sum of the grant's entries.
    pub ledger_remaining: i64,
    /// How many `credits_granted` entries it has, and their total.
    pub granted_entries: i64,
    pub granted_amount: i64,
}

/// The first entry of a grant (in ledger order) whose stored running remainder is not the
/// prefix sum of the grant's entries up to and including it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningRemainderDifference {
    pub credit_grant_id: String,
    pub customer_id: String,
    /// The first entry that disagrees.
    pub id: String,
    /// What is stored (`None`: nothing).
    pub stored: Option<i64>,
    /// The prefix sum.
    pub expected: i64,
    /// How many of the grant's entries disagree.
    pub differing: i64,
}

/// A credit balance transaction that disagrees with its grant about whose and which money it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignEntry {
    pub id: String,
    pub credit_grant_id: String,
    pub customer_id: String,
    pub currency: String,
    pub grant_customer_id: String,
    pub grant_currency: String,
    /// The entry's account or mode differs from the grant's.
    pub other_tenant: bool,
}

/// A `credit_applications` row whose `applied` disagrees with its `credits_applied` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationDifference {
    pub invoice: String,
    pub invoice_line_item: String,
    pub customer_id: String,
    pub applied: i64,
    pub ledger_applied: i64,
    pub entries: i64,
}

/// `credits_applied` entries of an invoice line that has no `credit_applications` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnrecordedApplication {
    pub invoice: String,
    pub invoice_line_item: String,
    pub customer_id: String,
    pub entries: i64,
    pub total: i64,
}

/// SQL text with its `$n` placeholders' values, and the tenant filter.
struct Query<'a> {
    scope: Option<&'a Tenant>,
    values: Vec<sea_orm::Value>,
}

impl<'a> Query<'a> {
    fn new(scope: Option<&'a Tenant>) -> Self {
        Query {
            scope,
            values: Vec::new(),
        }
    }

    /// A condition keeping the rows of `alias` (a table with `account_id` and `livemode`) in
    /// scope: always true when auditing everything.
    fn tenant(&mut self, alias: &str) -> String {
        match self.scope {
            None => "1 = 1".to_string(),
            Some(tenant) => {
                self.values.push(tenant.account_id.as_str().into());
                let account = self.values.len();
                self.values.push(tenant.livemode.into());
                let livemode = self.values.len();
                format!("{alias}.account_id = ${account} AND {alias}.livemode = ${livemode}")
            }
        }
    }

    fn statement(self, conn: &impl Connection, sql: String) -> Statement {
        Statement::from_sql_and_values(backend_of(conn), sql, self.values)
    }
}

async fn all(conn: &impl Connection, statement: Statement) -> Result<Vec<QueryResult>> {
    conn.query_all_raw(statement).await.map_err(db_error)
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, column: &str) -> Result<T> {
    row.try_get::<T>("", column).map_err(db_error)
}

/// The signed amount of a credit entry, as SQL over the alias `e`: one `WHEN` per
/// [`EntryType::ALL`], its sign taken from [`EntryType::is_credit`] as [`EntryType::signed`]
/// takes it, so the audit's sum cannot disagree with the rule the service writes by. A type
/// the code does not know counts 0.
static SIGNED_CREDIT_AMOUNT: LazyLock<String> = LazyLock::new(signed_credit_amount_sql);

fn signed_credit_amount_sql() -> String {
    let arms: String = EntryType::ALL
        .into_iter()
        .map(|kind| {
            let amount = if kind.is_credit() {
                "e.amount"
            } else {
                "-e.amount"
            };
            format!("WHEN '{}' THEN {amount} ", kind.as_str())
        })
        .collect();
    format!("CASE e.\"type\" {arms}ELSE 0 END")
}

pub async fn counts(conn: &impl Connection, scope: Option<&Tenant>) -> Result<Counts> {
    let mut query = Query::new(scope);
    let sql = format!(
        "SELECT \
           (SELECT COUNT(*) FROM customer_balances b \
              LEFT JOIN customers c ON c.id = b.customer_id WHERE {}) AS customer_balances, \
           (SELECT COUNT(*) FROM customer_balance_transactions t \
              LEFT JOIN customers c ON c.id = t.customer_id WHERE {}) AS customer_balance_transactions, \
           (SELECT COUNT(*) FROM credit_grants g WHERE {}) AS credit_grants, \
           (SELECT COUNT(*) FROM credit_balance_transactions e \
              JOIN credit_grants g ON g.id = e.credit_grant_id WHERE {}) AS credit_balance_transactions, \
           (SELECT COUNT(*) FROM credit_applications a WHERE {}) AS credit_applications",
        query.tenant("c"),
        query.tenant("c"),
        query.tenant("g"),
        query.tenant("g"),
        query.tenant("a"),
    );
    let rows = all(conn, query.statement(conn, sql)).await?;
    let Some(row) = rows.first() else {
        return Ok(Counts::default());
    };
    Ok(Counts {
        customer_balances: get(row, "customer_balances")?,
        customer_balance_transactions: get(row, "customer_balance_transactions")?,
        credit_grants: get(row, "credit_grants")?,
        credit_balance_transactions: get(row, "credit_balance_transactions")?,
        credit_applications: get(row, "credit_applications")?,
    })
}

/// Balance rows whose balance is not the sum of their transactions, whose count is not the
/// number of transactions, or whose last transaction ends elsewhere.
pub async fn balance_differences(
    conn: &impl Connection,
    scope: Option<&Tenant>,
) -> Result<Vec<BalanceDifference>> {
    let mut query = Query::new(scope);
    let sql = format!(
        "SELECT b.customer_id, b.currency, b.balance, b.transaction_count, \
           CAST(COALESCE(s.total, 0) AS BIGINT) AS ledger_balance, \
           COALESCE(s.n, 0) AS ledger_count, \
           l.id AS last_id, l.ending_balance AS last_ending_balance \
         FROM customer_balances b \
         LEFT JOIN customers c ON c.id = b.customer_id \
         LEFT JOIN ( \
           SELECT t.customer_id, t.currency, SUM(t.amount) AS total, COUNT(*) AS n, \
             MAX(t.sequence) AS last_sequence \
           FROM customer_balance_transactions t \
           LEFT JOIN customers tc ON tc.id = t.customer_id \
           WHERE {} \
           GROUP BY t.customer_id, t.currency \
         ) s ON s.customer_id = b.customer_id AND s.currency = b.currency \
         LEFT JOIN customer_balance_transactions l ON l.customer_id = b.customer_id \
           AND l.currency = b.currency AND l.sequence = s.last_sequence \
         WHERE {} AND ( \
           b.balance <> COALESCE(s.total, 0) \
           OR b.transaction_count <> COALESCE(s.n, 0) \
           OR (l.id IS NOT NULL AND l.ending_balance <> b.balance)) \
         ORDER BY b.customer_id, b.currency",
        query.tenant("tc"),
        query.tenant("c"),
    );
    all(conn, query.statement(conn, sql))
        .await?
        .iter()
        .map(|row| {
            let last_id: Option<String> = get(row, "last_id")?;
            let last_ending: Option<i64> = get(row, "last_ending_balance")?;
            Ok(BalanceDifference {
                customer_id: get(row, "customer_id")?,
                currency: get(row, "currency")?,
                balance: get(row, "balance")?,
                transaction_count: get(row, "transaction_count")?,
                ledger_balance: get(row, "ledger_balance")?,
                ledger_count: get(row, "ledger_count")?,
                last_transaction: last_id.zip(last_ending),
            })
        })
        .collect()
}

/// Walks every chain in sequence order with window functions; see [`ChainBreak`].
pub async fn chain_breaks(
    conn: &impl Connection,
    scope: Option<&Tenant>,
) -> Result<Vec<ChainBreak>> {
    let mut query = Query::new(scope);
    let sql = format!(
        "SELECT id, customer_id, currency, sequence, amount, ending_balance, \
           previous_sequence, previous_ending_balance, running_balance \
         FROM ( \
           SELECT t.id, t.customer_id, t.currency, t.sequence, t.amount, t.ending_balance, \
             LAG(t.sequence) OVER (PARTITION BY t.customer_id, t.currency \
               ORDER BY t.sequence) AS previous_sequence, \
             LAG(t.ending_balance) OVER (PARTITION BY t.customer_id, t.currency \
               ORDER BY t.sequence) AS previous_ending_balance, \
             CAST(SUM(t.amount) OVER (PARTITION BY t.customer_id, t.currency \
               ORDER BY t.sequence ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) \
               AS BIGINT) AS running_balance \
           FROM customer_balance_transactions t \
           LEFT JOIN customers c ON c.id = t.customer_id \
           WHERE {} \
         ) chain \
         WHERE sequence <> COALESCE(previous_sequence, 0) + 1 \
           OR (ending_balance <> COALESCE(previous_ending_balance, 0) + amount \
               AND ending_balance <> running_balance) \
         ORDER BY customer_id, currency, sequence",
        query.tenant("c"),
    );
    all(conn, query.statement(conn, sql))
        .await?
        .iter()
        .map(|row| {
            let previous_sequence: Option<i64> = get(row, "previous_sequence")?;
            let previous_ending: Option<i64> = get(row, "previous_ending_balance")?;
            Ok(ChainBreak {
                id: get(row, "id")?,
                customer_id: get(row, "customer_id")?,
                currency: get(row, "currency")?,
                sequence: get(row, "sequence")?,
                amount: get(row, "amount")?,
                ending_balance: get(row, "ending_balance")?,
                previous: previous_sequence.zip(previous_ending),
                running_balance: get(row, "running_balance")?,
            })
        })
        .collect()
}

pub async fn orphan_transactions(
    conn: &impl Connection,
    scope: Option<&Tenant>,
) -> Result<Vec<OrphanTransactions>> {
    let mut query = Query::new(scope);
    let sql = format!(
        "SELECT t.customer_id, t.currency, COUNT(*) AS n, \
           CAST(SUM(t.amount) AS BIGINT) AS total, MIN(t.id) AS first_id, MAX(t.id) AS last_id \
         FROM customer_balance_transactions t \
         LEFT JOIN customers c ON c.id = t.customer_id \
         LEFT JOIN customer_balances b ON b.customer_id = t.customer_id \
           AND b.currency = t.currency \
         WHERE {} AND b.customer_id IS NULL \
         GROUP BY t.customer_id, t.currency \
         ORDER BY t.customer_id, t.currency",
        query.tenant("c"),
    );
    all(conn, query.statement(conn, sql))
        .await?
        .iter()
        .map(|row| {
            Ok(OrphanTransactions {
                customer_id: get(row, "customer_id")?,
                currency: get(row, "currency")?,
                count: get(row, "n")?,
                total: get(row, "total")?,
                first_id: get(row, "first_id")?,
                last_id: get(row, "last_id")?,
            })
        })
        .collect()
}

/// Grants whose remainder is not the signed sum of their entries, that do not have exactly one
/// `credits_granted` entry of their amount, whose remainder is outside `0..=amount`, or that
/// are written off (voided or expiry recorded) with something left.
pub async fn grant_differences(
    conn: &impl Connection,
    scope: Option<&Tenant>,
) -> Result<Vec<GrantDifference>> {
    let mut query = Query::new(scope);
    let sql = format!(
        "SELECT id, customer_id, amount, remaining, written_off, ledger_remaining, \
           granted_entries, granted_amount \
         FROM ( \
           SELECT g.id, g.customer_id, g.amount, g.remaining, \
             CASE WHEN g.voided_at IS NOT NULL OR g.expiry_recorded_at IS NOT NULL \
               THEN 1 ELSE 0 END AS written_off, \
             CAST(COALESCE(SUM({signed_amount}), 0) AS BIGINT) AS ledger_remaining, \
             COUNT(CASE WHEN e.\"type\" = 'credits_granted' THEN 1 END) AS granted_entries, \
             CAST(COALESCE(SUM(CASE WHEN e.\"type\" = 'credits_granted' THEN e.amount \
               ELSE 0 END), 0) AS BIGINT) AS granted_amount \
           FROM credit_grants g \
           LEFT JOIN credit_balance_transactions e ON e.credit_grant_id = g.id \
           WHERE {} \
           GROUP BY g.id, g.customer_id, g.amount, g.remaining, g.voided_at, \
             g.expiry_recorded_at \
         ) grants \
         WHERE remaining <> ledger_remaining \
           OR granted_entries <> 1 OR granted_amount <> amount \
           OR remaining < 0 OR remaining > amount \
           OR (written_off = 1 AND remaining <> 0) \
         ORDER BY id",
        query.tenant("g"),
        signed_amount = SIGNED_CREDIT_AMOUNT.as_str(),
    );
    all(conn, query.statement(conn, sql))
        .await?
        .iter()
        .map(|row| {
            let written_off: i32 = get(row, "written_off")?;
            Ok(GrantDifference {
                id: get(row, "id")?,
                customer_id: get(row, "customer_id")?,
                amount: get(row, "amount")?,
                remaining: get(row, "remaining")?,
                written_off: written_off != 0,
                ledger_remaining: get(row, "ledger_remaining")?,
                granted_entries: get(row, "granted_entries")?,
                granted_amount: get(row, "granted_amount")?,
            })
        })
        .collect()
}

/// Per grant, the first entry whose `grant_remaining_after` is missing or is not the signed sum
/// of the grant's entries up to and including it, in ledger order (the order the summary's
/// `as_of` reads them in).
pub async fn running_remainder_differences(
    conn: &impl Connection,
    scope: Option<&Tenant>,
) -> Result<Vec<RunningRemainderDifference>> {
    let mut query = Query::new(scope);
    let order = super::credit_balance_transactions::ledger_order("e");
    let sql = format!(
        "SELECT credit_grant_id, customer_id, id, stored, expected, differing \
         FROM ( \
           SELECT r.credit_grant_id, r.customer_id, r.id, r.stored, r.expected, \
             ROW_NUMBER() OVER (PARTITION BY r.credit_grant_id ORDER BY r.created, r.id) AS nth, \
             COUNT(*) OVER (PARTITION BY r.credit_grant_id) AS differing \
           FROM ( \
             SELECT e.id, e.credit_grant_id, e.customer_id, e.created, \
               e.grant_remaining_after AS stored, \
               CAST(SUM({signed_amount}) OVER (PARTITION BY e.credit_grant_id ORDER BY {order} \
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS expected \
             FROM credit_balance_transactions e \
             JOIN credit_grants g ON g.id = e.credit_grant_id \
             WHERE {} \
           ) r \
           WHERE r.stored IS NULL OR r.stored <> r.expected \
         ) d \
         WHERE nth = 1 \
         ORDER BY credit_grant_id",
        query.tenant("g"),
        signed_amount = SIGNED_CREDIT_AMOUNT.as_str(),
    );
    all(conn, query.statement(conn, sql))
        .await?
        .iter()
        .map(|row| {
            Ok(RunningRemainderDifference {
                credit_grant_id: get(row, "credit_grant_id")?,
                customer_id: get(row, "customer_id")?,
                id: get(row, "id")?,
                stored: get(row, "stored")?,
                expected: get(row, "expected")?,
                differing: get(row, "differing")?,
            })
        })
        .collect()
}

/// Entries whose customer, currency, account or mode differ from their grant's.
pub async fn foreign_entries(
    conn: &impl Connection,
    scope: Option<&Tenant>,
) -> Result<Vec<ForeignEntry>> {
    let mut query = Query::new(scope);
    let sql = format!(
        "SELECT e.id, e.credit_grant_id, e.customer_id, e.currency, \
           g.customer_id AS grant_customer_id, g.currency AS grant_currency, \
           CASE WHEN e.account_id <> g.account_id OR e.livemode <> g.livemode \
             THEN 1 ELSE 0 END AS other_tenant \
         FROM credit_balance_transactions e \
         JOIN credit_grants g ON g.id = e.credit_grant_id \
         WHERE {} AND (e.customer_id <> g.customer_id OR e.currency <> g.currency \
           OR e.account_id <> g.account_id OR e.livemode <> g.livemode) \
         ORDER BY e.credit_grant_id, e.id",
        query.tenant("g"),
    );
    all(conn, query.statement(conn, sql))
        .await?
        .iter()
        .map(|row| {
            let other_tenant: i32 = get(row, "other_tenant")?;
            Ok(ForeignEntry {
                id: get(row, "id")?,
                credit_grant_id: get(row, "credit_grant_id")?,
                customer_id: get(row, "customer_id")?,
                currency: get(row, "currency")?,
                grant_customer_id: get(row, "grant_customer_id")?,
                grant_currency: get(row, "grant_currency")?,
                other_tenant: other_tenant != 0,
            })
        })
        .collect()
}

/// Application rows whose `applied` is not the sum of the line's `credits_applied` entries
/// (for the same account, mode and customer).
pub async fn application_differences(
    conn: &impl Connection,
    scope: Option<&Tenant>,
) -> Result<Vec<ApplicationDifference>> {
    let mut query = Query::new(scope);
    let sql = format!(
        "SELECT invoice, invoice_line_item, customer_id, applied, ledger_applied, entries \
         FROM ( \
           SELECT a.invoice, a.invoice_line_item, a.customer_id, a.applied, \
             CAST(COALESCE(SUM(e.amount), 0) AS BIGINT) AS ledger_applied, \
             COUNT(e.id) AS entries \
           FROM credit_applications a \
           LEFT JOIN credit_balance_transactions e ON e.customer_id = a.customer_id \
             AND e.invoice = a.invoice AND e.invoice_line_item = a.invoice_line_item \
             AND e.account_id = a.account_id AND e.livemode = a.livemode \
             AND e.\"type\" = 'credits_applied' \
           WHERE {} \
           GROUP BY a.account_id, a.livemode, a.invoice, a.invoice_line_item, \
             a.customer_id, a.applied \
         ) applications \
         WHERE applied <> ledger_applied \
         ORDER BY invoice, invoice_line_item, customer_id",
        query.tenant("a"),
    );
    all(conn, query.statement(conn, sql))
        .await?
        .iter()
        .map(|row| {
            Ok(ApplicationDifference {
                invoice: get(row, "invoice")?,
                invoice_line_item: get(row, "invoice_line_item")?,
                customer_id: get(row, "customer_id")?,
                applied: get(row, "applied")?,
                ledger_applied: get(row, "ledger_applied")?,
                entries: get(row, "entries")?,
            })
        })
        .collect()
}

/// Invoice lines with `credits_applied` entries but no application row.
pub async fn unrecorded_applications(
    conn: &impl Connection,
    scope: Option<&Tenant>,
) -> Result<Vec<UnrecordedApplication>> {
    let mut query = Query::new(scope);
    let sql = format!(
        "SELECT e.invoice, e.invoice_line_item, e.customer_id, COUNT(*) AS entries, \
           CAST(SUM(e.amount) AS BIGINT) AS total \
         FROM credit_balance_transactions e \
         JOIN credit_grants g ON g.id = e.credit_grant_id \
         LEFT JOIN credit_applications a ON a.account_id = e.account_id \
           AND a.livemode = e.livemode AND a.invoice = e.invoice \
           AND a.invoice_line_item = e.invoice_line_item AND a.customer_id = e.customer_id \
         WHERE {} AND e.\"type\" = 'credits_applied' AND a.invoice IS NULL \
         GROUP BY e.account_id, e.livemode, e.invoice, e.invoice_line_item, e.customer_id \
         ORDER BY e.invoice, e.invoice_line_item, e.customer_id",
        query.tenant("g"),
    );
    all(conn, query.statement(conn, sql))
        .await?
        .iter()
        .map(|row| {
            Ok(UnrecordedApplication {
                invoice: get(row, "invoice")?,
                invoice_line_item: get(row, "invoice_line_item")?,
                customer_id: get(row, "customer_id")?,
                entries: get(row, "entries")?,
                total: get(row, "total")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DbOptions;

    /// The audit's SQL sign and the service's [`EntryType::signed`] agree for every type: the
    /// generated CASE is evaluated by SQLite for each type and compared with the Rust rule.
    #[tokio::test]
    async fn the_sql_sign_of_every_entry_type_is_the_rule_the_service_writes_by() {
        let db = Db::connect(&DbOptions::new("sqlite::memory:"))
            .await
            .expect("in-memory SQLite");
        let evaluate = |kind: &str, amount: i64| {
            let sql = format!(
                "SELECT {} AS signed FROM (SELECT $1 AS \"type\", $2 AS amount) e",
                SIGNED_CREDIT_AMOUNT.as_str()
            );
            let statement =
                Statement::from_sql_and_values(db.backend(), sql, [kind.into(), amount.into()]);
            let reader = db.reader().clone();
            async move {
                let row = reader
                    .query_one_raw(statement)
                    .await
                    .expect("evaluate the CASE")
                    .expect("one row");
                row.try_get::<i64>("", "signed").expect("signed amount")
            }
        };
        for kind in EntryType::ALL {
            for amount in [1, 250, i64::from(i32::MAX) + 7] {
                assert_eq!(
                    evaluate(kind.as_str(), amount).await,
                    kind.signed(amount),
                    "{kind:?} of {amount}"
                );
            }
        }
        assert_eq!(evaluate("credits_unknown", 99).await, 0);
        db.close().await;
    }
}
