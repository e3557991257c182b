//! Ledger pages are keyset queries on (tenant, customer) ordered by ID. Their indexes now lead
//! with every column the queries filter on, so a page is an index range scan however long the
//! customer's history is, whatever the planner's statistics say.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CreditBalanceTransactions {
    Table,
    AccountId,
    Livemode,
    CustomerId,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("credit_balance_transactions_by_customer")
                    .table(CreditBalanceTransactions::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credit_balance_transactions_by_tenant_customer")
                    .table(CreditBalanceTransactions::Table)
                    .col(CreditBalanceTransactions::AccountId)
                    .col(CreditBalanceTransactions::Livemode)
                    .col(CreditBalanceTransactions::CustomerId)
                    .col(CreditBalanceTransactions::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("credit_balance_transactions_by_tenant_customer")
                    .table(CreditBalanceTransactions::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credit_balance_transactions_by_customer")
                    .table(CreditBalanceTransactions::Table)
                    .col(CreditBalanceTransactions::CustomerId)
                    .col(CreditBalanceTransactions::Id)
                    .to_owned(),
            )
            .await
    }
}
