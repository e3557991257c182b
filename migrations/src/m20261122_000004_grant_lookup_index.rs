//! A customer's grants are read on every summary and application. Their index now leads with
//! the tenant columns the query also filters on, so the planner picks it over the
//! tenant-wide index (which would scan every grant of the account in ID order).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CreditGrants {
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
                    .name("credit_grants_by_customer")
                    .table(CreditGrants::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credit_grants_by_tenant_customer")
                    .table(CreditGrants::Table)
                    .col(CreditGrants::AccountId)
                    .col(CreditGrants::Livemode)
                    .col(CreditGrants::CustomerId)
                    .col(CreditGrants::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("credit_grants_by_tenant_customer")
                    .table(CreditGrants::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credit_grants_by_customer")
                    .table(CreditGrants::Table)
                    .col(CreditGrants::CustomerId)
                    .col(CreditGrants::Id)
                    .to_owned(),
            )
            .await
    }
}
