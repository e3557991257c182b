//! The customer balance ledger. Each new entry is written while the customer's row is locked
//! (PostgreSQL) or on the single writer connection (SQLite), so the running balance moves one
//! step at a time: `ending_balance` never skips or repeats.

use super::customers::find_customer;
use super::{RequestContext, Services, idempotent_write, page_after_cursor};
use crate::domain::customer_balance_transaction::{
    CreateBalanceTransaction, CustomerBalanceTransaction, CustomerBalanceTransactionFilter,
    TYPE_ADJUSTMENT, UpdateBalanceTransaction, next_balance,
};
use crate::domain::event::EventType;
use crate::domain::ids::{IdKind, new_id};
use crate::domain::pagination::{ListRequest, Page};
use crate::domain::{Currency, Metadata, Tenant};
use crate::error::{Error, Result};
use crate::render::CustomerJson;
use crate::store::{self, Connection};

/// What one new customer balance entry says.
pub(crate) struct NewEntry<'a> {
    pub currency: &'a Currency,
    pub amount: i64,
    pub description: Option<String>,
    pub metadata: Metadata,
}

impl Services {
    pub async fn create_customer_balance_transaction(
        &self,
        ctx: &RequestContext,
        command: CreateBalanceTransaction,
    ) -> Result<CustomerBalanceTransaction> {
        let claim = self
            .idempotency
            .claim(ctx, "customer_balance_transaction.create", &command)?;
        let customer_id = command.customer_id.as_str();
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            let locked = store::customers::lock(&tx, &ctx.tenant, customer_id)
                .await?
                .ok_or_else(|| Error::resource_missing("customer", customer_id, "customer"))?;
            let before = find_customer(&tx, &ctx.tenant, customer_id, "customer").await?;
            let entry = NewEntry {
                currency: &command.currency,
                amount: command.amount,
                description: command.description.clone(),
                metadata: command.metadata.clone(),
            };
            let written = self
                .append_balance_entry(&tx, &ctx.tenant, customer_id, &locked, entry, now)
                .await?;
            // The customer's `balance` moved: Stripe reports that as `customer.updated`.
            let mut after = before.clone();
            after
                .balances
                .insert(written.currency.clone(), written.ending_balance);
            if after.currency.is_none() {
                after.currency = Some(written.currency.clone());
            }
            events.emit_update(
                EventType::CustomerUpdated,
                Some(customer_id),
                &CustomerJson::from(before),
                &CustomerJson::from(after),
            )?;
            Ok(written)
        })
    }

    /// Appends one `adjustment` entry to a customer's balance ledger; the caller holds the
    /// customer's lock (`locked`) inside its write transaction.
    pub(crate) async fn append_balance_entry(
        &self,
        tx: &impl Connection,
        tenant: &Tenant,
        customer_id: &str,
        locked: &store::customers::LockedCustomer,
        entry: NewEntry<'_>,
        real_now: i64,
    ) -> Result<CustomerBalanceTransaction> {
        let now = self
            .customer_now(tx, locked.test_clock.as_deref(), real_now)
            .await?;
        let (balance, count) = store::customers::balance(tx, customer_id, entry.currency)
            .await?
            .unwrap_or((0, 0));
        let transaction = CustomerBalanceTransaction {
            id: new_id(IdKind::CustomerBalanceTransaction, tenant.livemode),
            livemode: tenant.livemode,
            created: now,
            customer_id: customer_id.to_string(),
            amount: entry.amount,
            currency: entry.currency.clone(),
            ending_balance: next_balance(balance, entry.amount)?,
            sequence: count + 1,
            kind: TYPE_ADJUSTMENT.to_string(),
            description: entry.description,
            metadata: entry.metadata,
            invoice: None,
            credit_note: None,
            checkout_session: None,
        };
        store::customers::save_balance(
            tx,
            customer_id,
            entry.currency,
            transaction.ending_balance,
            transaction.sequence,
        )
        .await?;
        store::customer_balance_transactions::insert(tx, tenant, &transaction).await?;
        if locked.currency.is_none() {
            store::customers::set_currency_if_unset(tx, customer_id, entry.currency).await?;
        }
        Ok(transaction)
    }

    pub async fn get_customer_balance_transaction(
        &self,
        ctx: &RequestContext,
        customer_id: &str,
        id: &str,
    ) -> Result<CustomerBalanceTransaction> {
        find_transaction(self.db.reader(), &ctx.tenant, customer_id, id).await
    }

    pub async fn list_customer_balance_transactions(
        &self,
        ctx: &RequestContext,
        customer_id: &str,
        filter: &CustomerBalanceTransactionFilter,
        request: &ListRequest,
    ) -> Result<Page<CustomerBalanceTransaction>> {
        let conn = self.db.reader();
        if !store::customers::exists(conn, &ctx.tenant, customer_id).await? {
            return Err(Error::resource_missing("customer", customer_id, "customer"));
        }
        let tenant = &ctx.tenant;
        let listed =
            store::customer_balance_transactions::list(conn, tenant, customer_id, filter, request)
                .await?;
        page_after_cursor(
            listed,
            request,
            "customer balance transaction",
            |id| async move {
                Ok(
                    store::customer_balance_transactions::find(conn, tenant, customer_id, &id)
                        .await?
                        .is_some(),
                )
            },
        )
        .await
    }

    pub async fn update_customer_balance_transaction(
        &self,
        ctx: &RequestContext,
        customer_id: &str,
        id: &str,
        command: UpdateBalanceTransaction,
    ) -> Result<CustomerBalanceTransaction> {
        let claim = self.idempotency.claim(
            ctx,
            "customer_balance_transaction.update",
            &(customer_id, id, &command),
        )?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            if store::customers::lock(&tx, &ctx.tenant, customer_id)
                .await?
                .is_none()
            {
                return Err(Error::resource_missing("customer", customer_id, "customer"));
            }
            let current = find_transaction(&tx, &ctx.tenant, customer_id, id).await?;
            let updated = command.apply_to(&current)?;
            store::customer_balance_transactions::update_details(&tx, &ctx.tenant, &updated)
                .await?;
            Ok(updated)
        })
    }
}

async fn find_transaction(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    id: &str,
) -> Result<CustomerBalanceTransaction> {
    if let Some(transaction) =
        store::customer_balance_transactions::find(conn, tenant, customer_id, id).await?
    {
        return Ok(transaction);
    }
    if !store::customers::exists(conn, tenant, customer_id).await? {
        return Err(Error::resource_missing("customer", customer_id, "customer"));
    }
    Err(Error::resource_missing(
        "customer balance transaction",
        id,
        "transaction",
    ))
}
