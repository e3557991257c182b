//! `ApplyCreditsBatch`: up to `MAX_BATCH_LINES` invoice lines of any customers applied in one
//! transaction and one commit, each line exactly as `ApplyCredits` would apply it alone.
//!
//! The batch costs a handful of statements whatever its size: one looks up the lines' earlier
//! applications, one locks every customer (in ID order, so two batches can never deadlock, on
//! PostgreSQL or against single applications that lock one customer), one reads all their
//! grants (and which have an active hold) and one the holds of those that have; each customer's lines are then applied in memory, in request
//! order, over the grants as the previous line left them, and everything they write goes in
//! one round trip. A line answers for itself: its application, or the precise error `ApplyCredits`
//! would have given (no such customer, other terms than an earlier application of that line).
//! A line applied before, by an earlier batch or `ApplyCredits`, or earlier in the same batch,
//! answers its first result: so a batch retried after a timeout or an UNAVAILABLE applies
//! nothing twice. A database failure fails the whole batch, which then wrote nothing.

use std::collections::{BTreeMap, HashMap};

use super::events::EventBatch;
use super::{RequestContext, Services, ledger, write_with_events};
use crate::domain::credit_application::{
    AppliedLine, ApplyCredits, CreditApplication, check_batch_size,
};
use crate::domain::credit_hold::held_by_grant;
use crate::domain::ledger::apply_to_line;
use crate::error::{Error, ErrorKind, Result};
use crate::store::credit_balance_transactions::ApplicationWrites;
use crate::store::{self, Transaction};

/// One line's answer.
pub type LineResult = Result<CreditApplication>;

/// Batches this process works on at once; the others wait their turn holding only their
/// request. Batches share the database's writer (SQLite) or its locks and CPU (PostgreSQL), so
/// more at once would not go faster, only keep more lines' results and events in memory (64
/// batches of 100 lines in flight took the server past 64 MiB).
pub const BATCHES_AT_ONCE: usize = 16;

impl Services {
    /// Applies every line of `lines` (at most `MAX_BATCH_LINES`) in one transaction; the
    /// answers come back in the order of the lines.
    pub async fn apply_credits_batch(
        &self,
        ctx: &RequestContext,
        lines: &[ApplyCredits],
    ) -> Result<Vec<LineResult>> {
        check_batch_size(lines.len())?;
        let _turn = self
            .batch_turns
            .acquire()
            .await
            .map_err(|closed| Error::unavailable("the server is shutting down", closed))?;
        write_with_events!(
            self,
            |now| EventBatch::for_request(ctx, now),
            |tx, events| apply_lines(tx, ctx, lines, now, events).await
        )
    }
}

/// The lines' indexes by customer, customers in ID order (the lock order), lines in request
/// order.
fn by_customer(lines: &[ApplyCredits]) -> BTreeMap<&str, Vec<usize>> {
    let mut customers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, line) in lines.iter().enumerate() {
        customers.entry(line.customer_id()).or_default().push(index);
    }
    customers
}

async fn apply_lines(
    tx: &Transaction,
    ctx: &RequestContext,
    lines: &[ApplyCredits],
    now: i64,
    events: &mut EventBatch,
) -> Result<Vec<LineResult>> {
    let refs: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| (line.invoice(), line.invoice_line_item()))
        .collect();
    let recorded: HashMap<(String, String), AppliedLine> =
        store::credit_balance_transactions::find_applications(tx, &ctx.tenant, &refs)
            .await?
            .into_iter()
            .map(|line| ((line.invoice.clone(), line.invoice_line_item.clone()), line))
            .collect();
    let customers = by_customer(lines);
    let customer_ids: Vec<&str> = customers.keys().copied().collect();
    let mut found =
        store::credit_grants::lock_customers_grants(tx, &ctx.tenant, &customer_ids).await?;
    let found_ids: Vec<&str> = found
        .iter()
        .filter(|(_, customer)| customer.may_have_holds)
        .map(|(id, _)| id.as_str())
        .collect();
    let mut holds = store::credit_holds::active_for_customers(tx, &ctx.tenant, &found_ids).await?;
    let mut writes = ApplicationWrites::default();
    let mut results: Vec<Option<LineResult>> = (0..lines.len()).map(|_| None).collect();
    // Lines applied by this batch, by (invoice, line item): the index of their first answer.
    let mut applied_here: HashMap<(&str, &str), usize> = HashMap::new();
    for (customer_id, indexes) in customers {
        let Some(found) = found.remove(customer_id) else {
            for index in indexes {
                results[index] = Some(Err(Error::no_such("customer", customer_id, "customer")));
            }
            continue;
        };
        let customer_now = found.clock_time.unwrap_or(now);
        let holds = holds.remove(customer_id).unwrap_or_default();
        let mut grants = found.grants;
        // Nothing in a batch reserves or frees held credits: what is held stays the same.
        let held = held_by_grant(&holds, &grants, customer_now);
        for index in indexes {
            let command = &lines[index];
            let line = (command.invoice(), command.invoice_line_item());
            if let Some(first) = applied_here.get(&line) {
                results[index] = Some(match &results[*first] {
                    Some(Ok(application)) if application.has_terms_of(command) => {
                        Ok(application.clone())
                    }
                    _ => Err(super::credit_balance::other_terms(command)),
                });
                continue;
            }
            let key = (line.0.to_string(), line.1.to_string());
            if let Some(existing) = recorded.get(&key) {
                let earlier =
                    super::credit_balance::earlier_application(tx, ctx, command, existing.clone())
                        .await;
                results[index] = Some(match earlier {
                    Ok(application) => Ok(application),
                    Err(error) => line_error(error)?,
                });
                continue;
            }
            let application = match apply_to_line(&grants, &held, command, customer_now) {
                Ok(application) => application,
                Err(error) => {
                    results[index] = Some(line_error(error)?);
                    continue;
                }
            };
            // The next line of this customer draws from the grants as this one left them.
            for change in &application.changes {
                if let Some(slot) = grants.iter_mut().find(|g| g.id == change.grant.id) {
                    *slot = change.grant.clone();
                }
            }
            let outcome = ledger::stage_line(
                &ctx.tenant,
                command,
                application,
                customer_now,
                &mut writes,
                events,
            )?;
            results[index] = Some(Ok(outcome));
            applied_here.insert(line, index);
        }
    }
    writes.write(tx, &ctx.tenant).await?;
    results
        .into_iter()
        .map(|result| {
            result.ok_or_else(|| Error::internal(anyhow::anyhow!("a batch line got no answer")))
        })
        .collect()
}

/// A refusal that belongs to the line (its caller's mistake or the ledger's state) becomes the
/// line's answer; anything else (the database) fails the batch.
fn line_error(error: Error) -> Result<LineResult> {
    match error.kind {
        ErrorKind::Internal | ErrorKind::Unavailable => Err(error),
        _ => Ok(Err(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credit_application::ApplyFields;

    fn line(customer: &str, item: &str) -> ApplyCredits {
        ApplyCredits::parse(ApplyFields {
            customer: customer.into(),
            currency: "usd".into(),
            invoice: "in_1".into(),
            invoice_line_item: item.into(),
            price_type: Some("metered".into()),
            price: None,
            amount_due: 10,
        })
        .expect("a valid line")
    }

    #[test]
    fn customers_are_locked_in_id_order_and_their_lines_kept_in_request_order() {
        let lines = [
            line("cus_b", "il_1"),
            line("cus_a", "il_2"),
            line("cus_b", "il_3"),
            line("cus_a", "il_4"),
        ];
        let order: Vec<(&str, Vec<usize>)> = by_customer(&lines).into_iter().collect();
        assert_eq!(order, [("cus_a", vec![1, 3]), ("cus_b", vec![0, 2])]);
    }
}
