//! The credit ledger's entries, and the invoice lines credits were applied to.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, Set};

use super::entities::credit_application as application;
use super::entities::credit_balance_transaction as entry;
use super::{Connection, KeysetPage, db_error, insert_row, keyset_page};
use crate::domain::credit_balance_transaction::{
    CreditBalanceTransaction, CreditTransactionFilter, EntryType,
};
use crate::domain::pagination::ListRequest;
use crate::domain::{Currency, Tenant};
use crate::error::{Error, Result};

fn scoped(tenant: &Tenant) -> Condition {
    Condition::all()
        .add(entry::Column::AccountId.eq(tenant.account_id.as_str()))
        .add(entry::Column::Livemode.eq(tenant.livemode))
}

pub async fn insert(
    conn: &impl Connection,
    tenant: &Tenant,
    txn: &CreditBalanceTransaction,
) -> Result<()> {
    insert_row(
        conn,
        entry::ActiveModel {
            id: Set(txn.id.clone()),
            account_id: Set(tenant.account_id.clone()),
            livemode: Set(tenant.livemode),
            customer_id: Set(txn.customer_id.clone()),
            credit_grant_id: Set(txn.credit_grant_id.clone()),
            created: Set(txn.created),
            effective_at: Set(txn.effective_at),
            kind: Set(txn.kind.as_str().to_string()),
            amount: Set(txn.amount),
            currency: Set(txn.currency.to_string()),
            invoice: Set(txn.invoice.clone()),
            invoice_line_item: Set(txn.invoice_line_item.clone()),
            test_clock: Set(txn.test_clock.clone()),
        },
    )
    .await?;
    Ok(())
}

pub async fn find(
    conn: &impl Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<CreditBalanceTransaction>> {
    entry::Entity::find()
        .filter(scoped(tenant).add(entry::Column::Id.eq(id)))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

pub async fn list(
    conn: &impl Connection,
    tenant: &Tenant,
    filter: &CreditTransactionFilter,
    request: &ListRequest,
) -> Result<KeysetPage<CreditBalanceTransaction>> {
    let mut condition =
        scoped(tenant).add(entry::Column::CustomerId.eq(filter.customer_id.as_str()));
    if let Some(grant) = &filter.credit_grant_id {
        condition = condition.add(entry::Column::CreditGrantId.eq(grant.as_str()));
    }
    keyset_page::<entry::Entity>(conn, condition, entry::Column::Id, request)
        .await?
        .try_map(to_domain)
}

/// The `credits_applied` entries of one invoice line, in the order they were written.
pub async fn applied_to_line(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    invoice: &str,
    invoice_line_item: &str,
) -> Result<Vec<CreditBalanceTransaction>> {
    entry::Entity::find()
        .filter(
            scoped(tenant)
                .add(entry::Column::CustomerId.eq(customer_id))
                .add(entry::Column::Invoice.eq(invoice))
                .add(entry::Column::InvoiceLineItem.eq(invoice_line_item))
                .add(entry::Column::Kind.eq(EntryType::CreditsApplied.as_str())),
        )
        .order_by_asc(entry::Column::Id)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(to_domain)
        .collect()
}

fn to_domain(row: entry::Model) -> Result<CreditBalanceTransaction> {
    let kind = EntryType::parse(&row.kind)
        .ok_or_else(|| Error::internal(anyhow::anyhow!("stored credit entry type {}", row.kind)))?;
    Ok(CreditBalanceTransaction {
        currency: Currency::try_from(row.currency)
            .map_err(|error| Error::internal(anyhow::anyhow!("stored currency: {error}")))?,
        id: row.id,
        livemode: row.livemode,
        created: row.created,
        effective_at: row.effective_at,
        customer_id: row.customer_id,
        credit_grant_id: row.credit_grant_id,
        kind,
        amount: row.amount,
        invoice: row.invoice,
        invoice_line_item: row.invoice_line_item,
        test_clock: row.test_clock,
    })
}

/// One invoice line that credits were applied to.
pub type ApplicationRow = application::Model;

pub async fn find_application(
    conn: &impl Connection,
    tenant: &Tenant,
    invoice: &str,
    invoice_line_item: &str,
) -> Result<Option<ApplicationRow>> {
    application::Entity::find_by_id((
        tenant.account_id.clone(),
        tenant.livemode,
        invoice.to_string(),
        invoice_line_item.to_string(),
    ))
    .one(conn)
    .await
    .map_err(db_error)
}

pub async fn insert_application(conn: &impl Connection, row: ApplicationRow) -> Result<()> {
    insert_row(conn, application::ActiveModel::from(row)).await?;
    Ok(())
}

/// The lines of an invoice whose credits have not been given back yet.
pub async fn applications_to_reinstate(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    invoice: &str,
) -> Result<Vec<ApplicationRow>> {
    application::Entity::find()
        .filter(application::Column::AccountId.eq(tenant.account_id.as_str()))
        .filter(application::Column::Livemode.eq(tenant.livemode))
        .filter(application::Column::CustomerId.eq(customer_id))
        .filter(application::Column::Invoice.eq(invoice))
        .filter(application::Column::ReinstatedAt.is_null())
        .order_by_asc(application::Column::InvoiceLineItem)
        .all(conn)
        .await
        .map_err(db_error)
}

pub async fn mark_reinstated(
    conn: &impl Connection,
    tenant: &Tenant,
    invoice: &str,
    invoice_line_item: &str,
    at: i64,
) -> Result<()> {
    application::Entity::update_many()
        .col_expr(application::Column::ReinstatedAt, Expr::value(at))
        .filter(application::Column::AccountId.eq(tenant.account_id.as_str()))
        .filter(application::Column::Livemode.eq(tenant.livemode))
        .filter(application::Column::Invoice.eq(invoice))
        .filter(application::Column::InvoiceLineItem.eq(invoice_line_item))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}
