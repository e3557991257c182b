//! Customers.

use super::customer_balance_transactions::NewEntry;
use super::events::EventBatch;
use super::{RequestContext, Services, idempotent_write, page_after_cursor};
use crate::domain::Tenant;
use crate::domain::customer::{CreateCustomer, Customer, CustomerFilter, UpdateCustomer};
use crate::domain::event::EventType;
use crate::domain::ids::{IdKind, new_id};
use crate::domain::pagination::{ListRequest, Page};
use crate::domain::test_clock::check_test_mode;
use crate::error::{Error, Result};
use crate::render::CustomerJson;
use crate::store::{self, Connection};

impl Services {
    pub async fn create_customer(
        &self,
        ctx: &RequestContext,
        command: CreateCustomer,
    ) -> Result<Customer> {
        let claim = self.idempotency.claim(ctx, "customer.create", &command)?;

        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            // A customer made on a clock lives at the clock's time, and never leaves it.
            let created = match &command.test_clock {
                None => now,
                Some(clock_id) => {
                    check_test_mode(ctx.tenant.livemode)?;
                    let clock = store::test_clocks::lock(&tx, &ctx.tenant, clock_id)
                        .await?
                        .ok_or_else(|| Error::no_such("test_clock", clock_id, "test_clock"))?;
                    clock.frozen_time
                }
            };
            let customer = Customer {
                id: new_id(IdKind::Customer, ctx.tenant.livemode),
                livemode: ctx.tenant.livemode,
                created,
                name: command.name.clone(),
                email: command.email.clone(),
                description: command.description.clone(),
                phone: command.phone.clone(),
                currency: None,
                balances: Default::default(),
                metadata: command.metadata.clone(),
                test_clock: command.test_clock.clone(),
                deleted: false,
            };
            store::customers::insert(&tx, &ctx.tenant, &customer).await?;
            events.emit(
                EventType::CustomerCreated,
                Some(&customer.id),
                &CustomerJson::from(customer.clone()),
            )?;
            Ok(customer)
        })
    }

    /// Deletes a customer. Stripe ignores `Idempotency-Key` on DELETE, so there is no claim: a
    /// second delete finds nothing live and answers `resource_missing`. The row, grants and
    /// ledger stay (the ledger is never rewritten); the customer only leaves lists and takes no
    /// more writes. Returns the deleted customer's ID.
    pub async fn delete_customer(&self, ctx: &RequestContext, id: &str) -> Result<String> {
        self.db
            .retrying(|| async {
                let now = self.clock.now();
                let tx = self.db.begin().await?;
                let mut events = EventBatch::for_request(ctx, now);
                let outcome = async {
                    // Taken first so that no write for this customer is in flight meanwhile.
                    store::customers::lock(&tx, &ctx.tenant, id)
                        .await?
                        .ok_or_else(|| Error::resource_missing("customer", id, "id"))?;
                    let customer = find_customer(&tx, &ctx.tenant, id, "id").await?;
                    if !store::customers::mark_deleted(&tx, &ctx.tenant, id, now).await? {
                        return Err(Error::resource_missing("customer", id, "id"));
                    }
                    // The customer as it was just before, as Stripe sends it.
                    events.emit(
                        EventType::CustomerDeleted,
                        Some(id),
                        &CustomerJson::from(customer),
                    )?;
                    Ok(())
                }
                .await;
                self.settle_with_events(tx, outcome, events)
                    .await
                    .map(|()| id.to_string())
            })
            .await
    }

    /// The customer; a deleted one comes back with `deleted` set (Stripe retrieves it as a stub).
    pub async fn get_customer(&self, ctx: &RequestContext, id: &str) -> Result<Customer> {
        find_customer(self.db.reader(), &ctx.tenant, id, "id").await
    }

    pub async fn list_customers(
        &self,
        ctx: &RequestContext,
        filter: &CustomerFilter,
        request: &ListRequest,
    ) -> Result<Page<Customer>> {
        let (conn, tenant) = (self.db.reader(), &ctx.tenant);
        let listed = store::customers::list(conn, tenant, filter, request).await?;
        page_after_cursor(listed, request, "customer", |id| async move {
            store::customers::exists(conn, tenant, &id).await
        })
        .await
    }

    pub async fn update_customer(
        &self,
        ctx: &RequestContext,
        id: &str,
        command: UpdateCustomer,
    ) -> Result<Customer> {
        let claim = self
            .idempotency
            .claim(ctx, "customer.update", &(id, &command))?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            let locked = store::customers::lock(&tx, &ctx.tenant, id)
                .await?
                .ok_or_else(|| Error::resource_missing("customer", id, "id"))?;
            let current = find_customer(&tx, &ctx.tenant, id, "id").await?;
            let mut updated = command.apply_to(&current)?;
            // `balance` is absolute: the ledger gets one entry for the difference, or none.
            let adjustment = command.balance_adjustment(&current)?;
            store::customers::update_details(&tx, &ctx.tenant, &updated).await?;
            if let Some((currency, amount)) = adjustment {
                let entry = NewEntry {
                    currency: &currency,
                    amount,
                    description: None,
                    metadata: Default::default(),
                };
                let written = self
                    .append_balance_entry(&tx, &ctx.tenant, id, &locked, entry, now)
                    .await?;
                updated.balances.insert(currency, written.ending_balance);
                if updated.currency.is_none() {
                    updated.currency = Some(written.currency);
                }
            }
            events.emit_update(
                EventType::CustomerUpdated,
                Some(id),
                &CustomerJson::from(current),
                &CustomerJson::from(updated.clone()),
            )?;
            Ok(updated)
        })
    }
}

/// The customer, or `resource_missing` naming `param`.
pub(crate) async fn find_customer(
    conn: &impl Connection,
    tenant: &Tenant,
    id: &str,
    param: &str,
) -> Result<Customer> {
    store::customers::find(conn, tenant, id)
        .await?
        .ok_or_else(|| Error::resource_missing("customer", id, param))
}
