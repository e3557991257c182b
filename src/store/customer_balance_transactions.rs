//! The customer balance ledger's entries.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, Set};

use super::entities::customer_balance_transaction as entry;
use super::{
    Connection, KeysetPage, db_error, insert_row, keyset_page, metadata_from_json,
    metadata_to_json, time_condition,
};
use crate::domain::customer_balance_transaction::{
    CustomerBalanceTransaction, CustomerBalanceTransactionFilter,
};
use crate::domain::pagination::ListRequest;
use crate::domain::{Currency, Tenant};
use crate::error::{Error, Result};

pub async fn insert(
    conn: &impl Connection,
    tenant: &Tenant,
    txn: &CustomerBalanceTransaction,
) -> Result<()> {
    insert_row(
        conn,
        entry::ActiveModel {
            id: Set(txn.id.clone()),
            account_id: Set(tenant.account_id.clone()),
            livemode: Set(tenant.livemode),
            customer_id: Set(txn.customer_id.clone()),
            created: Set(txn.created),
            amount: Set(txn.amount),
            currency: Set(txn.currency.to_string()),
            ending_balance: Set(txn.ending_balance),
            sequence: Set(txn.sequence),
            kind: Set(txn.kind.clone()),
            description: Set(txn.description.clone()),
            metadata: Set(metadata_to_json(&txn.metadata)),
            invoice: Set(txn.invoice.clone()),
            credit_note: Set(txn.credit_note.clone()),
            checkout_session: Set(txn.checkout_session.clone()),
        },
    )
    .await?;
    Ok(())
}

fn scoped(tenant: &Tenant, customer_id: &str) -> Condition {
    Condition::all()
        .add(entry::Column::AccountId.eq(tenant.account_id.as_str()))
        .add(entry::Column::Livemode.eq(tenant.livemode))
        .add(entry::Column::CustomerId.eq(customer_id))
}

pub async fn find(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    id: &str,
) -> Result<Option<CustomerBalanceTransaction>> {
    entry::Entity::find()
        .filter(scoped(tenant, customer_id).add(entry::Column::Id.eq(id)))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

/// Writes the two mutable fields.
pub async fn update_details(
    conn: &impl Connection,
    tenant: &Tenant,
    txn: &CustomerBalanceTransaction,
) -> Result<()> {
    entry::Entity::update_many()
        .col_expr(
            entry::Column::Description,
            Expr::value(txn.description.clone()),
        )
        .col_expr(
            entry::Column::Metadata,
            Expr::value(metadata_to_json(&txn.metadata)),
        )
        .filter(scoped(tenant, &txn.customer_id).add(entry::Column::Id.eq(txn.id.as_str())))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

pub async fn list(
    conn: &impl Connection,
    tenant: &Tenant,
    customer_id: &str,
    filter: &CustomerBalanceTransactionFilter,
    request: &ListRequest,
) -> Result<KeysetPage<CustomerBalanceTransaction>> {
    // The filter narrows the rows; the keyset on the ID pages within them, and a cursor
    // outside the filter is still a valid position (the service checks that it exists).
    let mut condition =
        scoped(tenant, customer_id).add(time_condition(entry::Column::Created, filter.created()));
    if let Some(invoice) = filter.invoice() {
        condition = condition.add(entry::Column::Invoice.eq(invoice));
    }
    keyset_page::<entry::Entity>(conn, condition, entry::Column::Id, request)
        .await?
        .try_map(to_domain)
}

fn to_domain(row: entry::Model) -> Result<CustomerBalanceTransaction> {
    Ok(CustomerBalanceTransaction {
        currency: Currency::try_from(row.currency)
            .map_err(|error| Error::internal(anyhow::anyhow!("stored currency: {error}")))?,
        metadata: metadata_from_json(&row.metadata)?,
        id: row.id,
        livemode: row.livemode,
        created: row.created,
        customer_id: row.customer_id,
        amount: row.amount,
        ending_balance: row.ending_balance,
        sequence: row.sequence,
        kind: row.kind,
        description: row.description,
        invoice: row.invoice,
        credit_note: row.credit_note,
        checkout_session: row.checkout_session,
    })
}
