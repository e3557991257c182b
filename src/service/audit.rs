//! The ledger audit: recomputes every materialized value (customer balances and their
//! transaction counts, each balance transaction's `ending_balance`, grant remainders, applied
//! amounts) from the immutable entries and reports every difference. The store does the
//! aggregation in SQL inside one read snapshot; this module turns the rows that disagree into
//! findings. `creditd audit` audits everything; `AdminService.Audit` the caller's account and
//! mode only.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{RequestContext, Services};
use crate::domain::Tenant;
use crate::domain::credit_hold::{CreditHold, HoldStatus, held_by_grant};
use crate::error::Result;
use crate::store::{self, audit as rows};

/// The finding kinds, as they appear in [`Finding::kind`].
pub mod kind {
    /// A `customer_balances.balance` is not the sum of its transactions' amounts.
    pub const CUSTOMER_BALANCE_MISMATCH: &str = "customer_balance_mismatch";
    /// A `customer_balances.transaction_count` is not the number of its transactions.
    pub const TRANSACTION_COUNT_MISMATCH: &str = "transaction_count_mismatch";
    /// The balance is the sum of the amounts, yet the last transaction ends elsewhere.
    pub const ENDING_BALANCE_MISMATCH: &str = "ending_balance_mismatch";
    /// A transaction's `sequence` does not follow the previous one (entries missing or moved).
    pub const CHAIN_GAP: &str = "chain_gap";
    /// A transaction's `ending_balance` is not the previous ending balance plus its amount.
    pub const CHAIN_BREAK: &str = "chain_break";
    /// Customer balance transactions of a customer and currency without a balance row.
    pub const ORPHAN_TRANSACTIONS: &str = "orphan_transactions";
    /// A grant's `remaining` is not the signed sum of its entries.
    pub const GRANT_REMAINING_MISMATCH: &str = "grant_remaining_mismatch";
    /// A grant does not have exactly one `credits_granted` entry of its amount.
    pub const GRANT_GRANTED_ENTRY: &str = "grant_granted_entry";
    /// A grant's `remaining` is negative or more than its amount.
    pub const GRANT_REMAINING_OUT_OF_RANGE: &str = "grant_remaining_out_of_range";
    /// A voided grant, or one whose expiry was recorded, still has credits left.
    pub const GRANT_WRITTEN_OFF_NOT_ZERO: &str = "grant_written_off_not_zero";
    /// A credit entry's `grant_remaining_after` is not the sum of its grant's entries up to it
    /// (reported once per grant, at the first entry that differs).
    pub const RUNNING_REMAINDER_MISMATCH: &str = "running_remainder_mismatch";
    /// A credit entry's customer, currency, account or mode differs from its grant's.
    pub const GRANT_ENTRY_MISMATCH: &str = "grant_entry_mismatch";
    /// A hold's still-reserved, captured and lapsed amounts do not add up to its amount (an
    /// active hold), or an ended hold still lists reservations.
    pub const HOLD_AMOUNT_MISMATCH: &str = "hold_amount_mismatch";
    /// A hold reserves a non-positive amount, or on a grant that is not its customer's in its
    /// currency.
    pub const HOLD_FOREIGN_RESERVATION: &str = "hold_foreign_reservation";
    /// Live holds reserve more on a grant than the grant has left (held credits could be spent
    /// twice).
    pub const HOLD_OVERCOMMITTED: &str = "hold_overcommitted";
    /// A credit application's `applied` is not the sum of the line's `credits_applied` entries.
    pub const APPLICATION_APPLIED_MISMATCH: &str = "application_applied_mismatch";
    /// `credits_applied` entries name an invoice line that has no credit application.
    pub const APPLICATION_MISSING: &str = "application_missing";
}

/// The result of an audit: what was looked at, and every difference found (empty when the
/// materialized values all agree with the ledger).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub checked: Checked,
    pub findings: Vec<Finding>,
}

/// How many rows of each kind the audit covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    pub customer_balances: u64,
    pub customer_balance_transactions: u64,
    pub credit_grants: u64,
    pub credit_balance_transactions: u64,
    pub credit_applications: u64,
    /// Holds that are active or (wrongly) still list reservations.
    #[serde(default)]
    pub credit_holds: u64,
}

/// One difference between a materialized value and the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// One of [`kind`].
    pub kind: String,
    /// The ID(s) of what is wrong: a transaction or grant ID, `cus_…/usd` for a customer
    /// balance, `in_…/il_…` for an invoice line.
    pub object: String,
    /// What the ledger says the value should be.
    pub expected: String,
    /// What is stored.
    pub actual: String,
    /// The difference in a sentence.
    pub message: String,
}

impl Finding {
    fn new(
        kind: &str,
        object: impl Into<String>,
        expected: impl ToString,
        actual: impl ToString,
        message: impl Into<String>,
    ) -> Finding {
        Finding {
            kind: kind.to_string(),
            object: object.into(),
            expected: expected.to_string(),
            actual: actual.to_string(),
            message: message.into(),
        }
    }
}

impl AuditReport {
    /// `true` when nothing disagrees with the ledger.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// The human summary `creditd audit` prints: what was checked, then one line per finding.
impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checked = &self.checked;
        writeln!(
            f,
            "checked {} customer balances, {} customer balance transactions, {} credit grants, \
             {} credit balance transactions, {} credit applications, {} active credit holds",
            checked.customer_balances,
            checked.customer_balance_transactions,
            checked.credit_grants,
            checked.credit_balance_transactions,
            checked.credit_applications,
            checked.credit_holds,
        )?;
        if self.findings.is_empty() {
            return writeln!(
                f,
                "no findings: every balance and remainder matches the ledger"
            );
        }
        let plural = if self.findings.len() == 1 { "" } else { "s" };
        writeln!(f, "{} finding{plural}:", self.findings.len())?;
        for finding in &self.findings {
            writeln!(
                f,
                "{} {}: expected {}, actual {}: {}",
                finding.kind, finding.object, finding.expected, finding.actual, finding.message
            )?;
        }
        Ok(())
    }
}

impl Services {
    /// Audits the caller's account and mode only.
    pub async fn audit(&self, ctx: &RequestContext) -> Result<AuditReport> {
        self.audit_scope(Some(&ctx.tenant)).await
    }

    /// Audits every account and mode (the `creditd audit` command; no tenant).
    pub async fn audit_everything(&self) -> Result<AuditReport> {
        self.audit_scope(None).await
    }

    async fn audit_scope(&self, scope: Option<&Tenant>) -> Result<AuditReport> {
        let tx = store::audit::snapshot(&self.db).await?;
        let outcome = audit_in(&tx, scope, self.clock.now()).await;
        store::rollback(tx).await?;
        outcome
    }
}

async fn audit_in(
    tx: &store::Transaction,
    scope: Option<&Tenant>,
    now: i64,
) -> Result<AuditReport> {
    let counts = rows::counts(tx, scope).await?;
    let chain = rows::chain_breaks(tx, scope).await?;
    let mut findings = Vec::new();
    let chain_findings = chain_findings(&chain);
    balance_findings(
        &rows::balance_differences(tx, scope).await?,
        &chain,
        &mut findings,
    );
    findings.extend(chain_findings);
    for orphan in rows::orphan_transactions(tx, scope).await? {
        findings.push(orphan_finding(&orphan));
    }
    for grant in rows::grant_differences(tx, scope).await? {
        grant_findings(&grant, &mut findings);
    }
    for entry in rows::running_remainder_differences(tx, scope).await? {
        findings.push(running_remainder_finding(&entry));
    }
    for entry in rows::foreign_entries(tx, scope).await? {
        findings.push(foreign_entry_finding(&entry));
    }
    for application in rows::application_differences(tx, scope).await? {
        findings.push(Finding::new(
            kind::APPLICATION_APPLIED_MISMATCH,
            format!("{}/{}", application.invoice, application.invoice_line_item),
            application.ledger_applied,
            application.applied,
            format!(
                "credits applied to this line for customer {} are {} in {} credits_applied \
                 entries, but the application records {}",
                application.customer_id,
                application.ledger_applied,
                application.entries,
                application.applied
            ),
        ));
    }
    for line in rows::unrecorded_applications(tx, scope).await? {
        findings.push(Finding::new(
            kind::APPLICATION_MISSING,
            format!("{}/{}", line.invoice, line.invoice_line_item),
            "a credit application",
            "none",
            format!(
                "{} credits_applied entries of customer {} (total {}) name this invoice line, \
                 which has no credit application",
                line.entries, line.customer_id, line.total
            ),
        ));
    }
    let credit_holds = hold_findings(tx, scope, now, &mut findings).await?;
    Ok(AuditReport {
        checked: Checked {
            credit_holds,
            customer_balances: unsigned(counts.customer_balances),
            customer_balance_transactions: unsigned(counts.customer_balance_transactions),
            credit_grants: unsigned(counts.credit_grants),
            credit_balance_transactions: unsigned(counts.credit_balance_transactions),
            credit_applications: unsigned(counts.credit_applications),
        },
        findings,
    })
}

/// Checks every hold that is active or still lists reservations: its amounts add up, it
/// reserves only on its customer's grants in its currency, and, per customer at the customer's
/// own time (its test clock's, if any), what live holds reserve on each grant (by the rule
/// burn-down uses, [`held_by_grant`]) is within that grant's remainder. Returns how many holds
/// it looked at.
async fn hold_findings(
    tx: &store::Transaction,
    scope: Option<&Tenant>,
    now: i64,
    findings: &mut Vec<Finding>,
) -> Result<u64> {
    let holds = store::credit_holds::reserving(tx, scope).await?;
    let count = u64::try_from(holds.len()).unwrap_or(u64::MAX);
    let mut by_customer: BTreeMap<(String, bool, String), Vec<CreditHold>> = BTreeMap::new();
    for (tenant, hold) in holds {
        let reserved = hold.reserved();
        let accounted = hold
            .captured_amount
            .saturating_add(hold.lapsed_amount)
            .saturating_add(reserved);
        if hold.status == HoldStatus::Active && accounted != hold.amount {
            findings.push(Finding::new(
                kind::HOLD_AMOUNT_MISMATCH,
                &hold.id,
                hold.amount,
                accounted,
                format!(
                    "the active hold reserves {reserved}, has lapsed {} and captured {}, which \
                     should add up to its amount {}",
                    hold.lapsed_amount, hold.captured_amount, hold.amount
                ),
            ));
        }
        if hold.status != HoldStatus::Active {
            findings.push(Finding::new(
                kind::HOLD_AMOUNT_MISMATCH,
                &hold.id,
                0,
                reserved,
                format!(
                    "the hold is {} yet still lists {} reservations",
                    hold.status.as_str(),
                    hold.reservations.len()
                ),
            ));
            continue;
        }
        by_customer
            .entry((tenant.account_id, tenant.livemode, hold.customer_id.clone()))
            .or_default()
            .push(hold);
    }
    for ((account_id, livemode, customer_id), holds) in by_customer {
        let tenant = Tenant {
            account_id,
            livemode,
        };
        let grants = store::credit_grants::for_customer(tx, &tenant, &customer_id).await?;
        let clock = holds.iter().find_map(|hold| hold.test_clock.as_deref());
        let customer_now = match clock {
            Some(clock) => store::test_clocks::frozen_time(tx, clock).await?,
            None => now,
        };
        for hold in &holds {
            for reservation in &hold.reservations {
                let grant = grants
                    .iter()
                    .find(|grant| grant.id == reservation.credit_grant);
                let fits = grant.is_some_and(|grant| grant.currency == hold.currency);
                if reservation.amount <= 0 || !fits {
                    findings.push(Finding::new(
                        kind::HOLD_FOREIGN_RESERVATION,
                        format!("{}/{}", hold.id, reservation.credit_grant),
                        format!(
                            "a positive amount on a {} grant of {customer_id}",
                            hold.currency
                        ),
                        reservation.amount,
                        "the hold reserves on a grant that cannot back it",
                    ));
                }
            }
        }
        for (grant_id, held) in held_by_grant(&holds, &grants, customer_now) {
            let Some(grant) = grants.iter().find(|grant| grant.id == grant_id) else {
                continue;
            };
            if held > grant.remaining {
                findings.push(Finding::new(
                    kind::HOLD_OVERCOMMITTED,
                    &grant.id,
                    format!("at most {}", grant.remaining),
                    held,
                    format!(
                        "live holds of customer {customer_id} reserve {held} on the grant, \
                         which has {} left",
                        grant.remaining
                    ),
                ));
            }
        }
    }
    Ok(count)
}

fn unsigned(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

fn balance_object(customer_id: &str, currency: &str) -> String {
    format!("{customer_id}/{currency}")
}

/// The stored balance and count are judged against the amounts. The last ending balance is
/// reported separately only when nothing else explains it (the amounts agree with the balance
/// and no chain finding names that customer and currency): the chain checks already cover it.
fn balance_findings(
    differences: &[rows::BalanceDifference],
    chain: &[rows::ChainBreak],
    findings: &mut Vec<Finding>,
) {
    for row in differences {
        let object = balance_object(&row.customer_id, &row.currency);
        if row.balance != row.ledger_balance {
            findings.push(Finding::new(
                kind::CUSTOMER_BALANCE_MISMATCH,
                object.clone(),
                row.ledger_balance,
                row.balance,
                format!(
                    "the balance is {} but its {} transactions sum to {}",
                    row.balance, row.ledger_count, row.ledger_balance
                ),
            ));
        }
        if row.transaction_count != row.ledger_count {
            findings.push(Finding::new(
                kind::TRANSACTION_COUNT_MISMATCH,
                object.clone(),
                row.ledger_count,
                row.transaction_count,
                format!(
                    "transaction_count is {} but there are {} transactions",
                    row.transaction_count, row.ledger_count
                ),
            ));
        }
        let chain_explains = chain
            .iter()
            .any(|link| link.customer_id == row.customer_id && link.currency == row.currency);
        if let Some((last_id, last_ending)) = &row.last_transaction
            && *last_ending != row.balance
            && row.balance == row.ledger_balance
            && !chain_explains
        {
            findings.push(Finding::new(
                kind::ENDING_BALANCE_MISMATCH,
                object,
                row.balance,
                last_ending,
                format!(
                    "the last transaction {last_id} ends at {last_ending}, not at the balance {}",
                    row.balance
                ),
            ));
        }
    }
}

fn chain_findings(chain: &[rows::ChainBreak]) -> Vec<Finding> {
    chain
        .iter()
        .map(|link| {
            let where_ = format!(
                "customer {} {} at sequence {}",
                link.customer_id, link.currency, link.sequence
            );
            let previous_sequence = link.previous.map_or(0, |(sequence, _)| sequence);
            if link.sequence != previous_sequence + 1 {
                let message = match link.previous {
                    None => format!(
                        "{where_}: the chain starts at {} instead of 1",
                        link.sequence
                    ),
                    Some((previous, _)) => format!(
                        "{where_}: follows sequence {previous}, so {} entries are missing or moved",
                        (link.sequence - previous - 1).abs()
                    ),
                };
                Finding::new(
                    kind::CHAIN_GAP,
                    link.id.clone(),
                    previous_sequence + 1,
                    link.sequence,
                    message,
                )
            } else {
                let previous_ending = link.previous.map_or(0, |(_, ending)| ending);
                let expected = previous_ending + link.amount;
                let message = match link.previous {
                    None => format!(
                        "{where_}: the first ending_balance {} is not its amount {}",
                        link.ending_balance, link.amount
                    ),
                    Some(_) => format!(
                        "{where_}: ending_balance {} is not the previous ending_balance {} plus \
                         the amount {} (the amounts so far sum to {})",
                        link.ending_balance, previous_ending, link.amount, link.running_balance
                    ),
                };
                Finding::new(
                    kind::CHAIN_BREAK,
                    link.id.clone(),
                    expected,
                    link.ending_balance,
                    message,
                )
            }
        })
        .collect()
}

fn orphan_finding(orphan: &rows::OrphanTransactions) -> Finding {
    let ids = if orphan.first_id == orphan.last_id {
        orphan.first_id.clone()
    } else {
        format!("{} … {}", orphan.first_id, orphan.last_id)
    };
    Finding::new(
        kind::ORPHAN_TRANSACTIONS,
        balance_object(&orphan.customer_id, &orphan.currency),
        "a customer balance",
        "none",
        format!(
            "{} transactions ({ids}, total {}) have no customer balance row",
            orphan.count, orphan.total
        ),
    )
}

fn grant_findings(grant: &rows::GrantDifference, findings: &mut Vec<Finding>) {
    let id = grant.id.as_str();
    if grant.remaining != grant.ledger_remaining {
        findings.push(Finding::new(
            kind::GRANT_REMAINING_MISMATCH,
            id,
            grant.ledger_remaining,
            grant.remaining,
            format!(
                "remaining is {} but the grant's entries sum to {}",
                grant.remaining, grant.ledger_remaining
            ),
        ));
    }
    if grant.granted_entries != 1 || grant.granted_amount != grant.amount {
        let actual = match grant.granted_entries {
            0 => "no credits_granted entry".to_string(),
            1 => format!("one credits_granted entry of {}", grant.granted_amount),
            n => format!(
                "{n} credits_granted entries totalling {}",
                grant.granted_amount
            ),
        };
        findings.push(Finding::new(
            kind::GRANT_GRANTED_ENTRY,
            id,
            format!("one credits_granted entry of {}", grant.amount),
            actual.clone(),
            format!(
                "the grant of {} (customer {}) has {actual}",
                grant.amount, grant.customer_id
            ),
        ));
    }
    if grant.remaining < 0 || grant.remaining > grant.amount {
        findings.push(Finding::new(
            kind::GRANT_REMAINING_OUT_OF_RANGE,
            id,
            format!("0..={}", grant.amount),
            grant.remaining,
            format!(
                "remaining {} is outside 0..={}",
                grant.remaining, grant.amount
            ),
        ));
    }
    if grant.written_off && grant.remaining != 0 {
        findings.push(Finding::new(
            kind::GRANT_WRITTEN_OFF_NOT_ZERO,
            id,
            0,
            grant.remaining,
            format!(
                "the grant is voided or expired but still has {} remaining",
                grant.remaining
            ),
        ));
    }
}

fn running_remainder_finding(entry: &rows::RunningRemainderDifference) -> Finding {
    let stored = entry
        .stored
        .map_or_else(|| "none".to_string(), |stored| stored.to_string());
    let later = match entry.differing {
        1 => String::new(),
        n => format!(" ({} later entries differ too)", n - 1),
    };
    Finding::new(
        kind::RUNNING_REMAINDER_MISMATCH,
        entry.credit_grant_id.clone(),
        entry.expected,
        stored.clone(),
        format!(
            "entry {} of customer {} stores the grant's remainder after it as {stored}, but the \
             grant's entries up to it sum to {}{later}",
            entry.id, entry.customer_id, entry.expected
        ),
    )
}

fn foreign_entry_finding(entry: &rows::ForeignEntry) -> Finding {
    let (expected, actual) = if entry.other_tenant {
        (
            "the grant's account and mode".to_string(),
            "another account or mode".to_string(),
        )
    } else {
        (
            format!("{} {}", entry.grant_customer_id, entry.grant_currency),
            format!("{} {}", entry.customer_id, entry.currency),
        )
    };
    Finding::new(
        kind::GRANT_ENTRY_MISMATCH,
        entry.id.clone(),
        expected.clone(),
        actual.clone(),
        format!(
            "the entry of grant {} is for {actual}, not {expected}",
            entry.credit_grant_id
        ),
    )
}
