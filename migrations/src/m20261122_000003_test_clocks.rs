//! Test clocks: frozen time for test-mode customers, advanced on request.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum TestClocks {
    Table,
    Id,
    AccountId,
    Livemode,
    Created,
    Name,
    FrozenTime,
    Status,
    TargetFrozenTime,
    DeletesAfter,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    TestClock,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TestClocks::Table)
                    .col(text(TestClocks::Id).primary_key())
                    .col(text(TestClocks::AccountId))
                    // Test clocks exist in test mode only.
                    .col(boolean(TestClocks::Livemode).check(Expr::cust("livemode = false")))
                    .col(big_integer(TestClocks::Created))
                    .col(text_null(TestClocks::Name))
                    .col(big_integer(TestClocks::FrozenTime))
                    .col(text(TestClocks::Status).check(Expr::cust("status IN ('ready', 'advancing', 'internal_failure')")))
                    .col(big_integer_null(TestClocks::TargetFrozenTime))
                    .col(big_integer(TestClocks::DeletesAfter))
                    // Advancing always has a later target; ready never has one.
                    .check(Expr::cust(
                        "(status = 'advancing' AND target_frozen_time > frozen_time) OR (status <> 'advancing' AND target_frozen_time IS NULL)",
                    ))
                    .foreign_key(ForeignKey::create().from(TestClocks::Table, TestClocks::AccountId).to(Accounts::Table, Accounts::Id))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("test_clocks_by_tenant")
                    .table(TestClocks::Table)
                    .col(TestClocks::AccountId)
                    .col(TestClocks::Livemode)
                    .col(TestClocks::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("test_clocks_by_status")
                    .table(TestClocks::Table)
                    .col(TestClocks::Status)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("customers_by_test_clock")
                    .table(Customers::Table)
                    .col(Customers::TestClock)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("customers_by_test_clock")
                    .table(Customers::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(TestClocks::Table).to_owned())
            .await
    }
}
