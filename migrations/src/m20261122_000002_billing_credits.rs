//! Billing credits: grants with their materialized remainders, the immutable credit ledger,
//! and one row per invoice line credits were applied to (applying a line twice applies once).

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
enum Customers {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum CreditGrants {
    Table,
    Id,
    AccountId,
    Livemode,
    CustomerId,
    Created,
    Updated,
    Name,
    Category,
    Priority,
    Currency,
    Amount,
    Remaining,
    ScopePriceType,
    ScopePrices,
    EffectiveAt,
    ExpiresAt,
    VoidedAt,
    ExpiryRecordedAt,
    Metadata,
    TestClock,
}

#[derive(DeriveIden)]
enum CreditBalanceTransactions {
    Table,
    Id,
    AccountId,
    Livemode,
    CustomerId,
    CreditGrantId,
    Created,
    EffectiveAt,
    Type,
    Amount,
    Currency,
    Invoice,
    InvoiceLineItem,
    TestClock,
}

#[derive(DeriveIden)]
enum CreditApplications {
    Table,
    AccountId,
    Livemode,
    Invoice,
    InvoiceLineItem,
    CustomerId,
    Currency,
    AmountDue,
    Applied,
    Price,
    Created,
    ReinstatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CreditGrants::Table)
                    .col(text(CreditGrants::Id).primary_key())
                    .col(text(CreditGrants::AccountId))
                    .col(boolean(CreditGrants::Livemode))
                    .col(text(CreditGrants::CustomerId))
                    .col(big_integer(CreditGrants::Created))
                    .col(big_integer(CreditGrants::Updated))
                    .col(text_null(CreditGrants::Name))
                    .col(
                        text(CreditGrants::Category)
                            .check(Expr::cust("category IN ('paid', 'promotional')")),
                    )
                    .col(
                        big_integer(CreditGrants::Priority)
                            .check(Expr::cust("priority BETWEEN 0 AND 100")),
                    )
                    .col(text(CreditGrants::Currency).check(Expr::cust(
                        "length(currency) = 3 AND lower(currency) = currency",
                    )))
                    .col(big_integer(CreditGrants::Amount).check(Expr::cust("amount > 0")))
                    // The remainder is what the grant's entries sum to: never negative, never
                    // more than was granted.
                    .col(
                        big_integer(CreditGrants::Remaining)
                            .check(Expr::cust("remaining >= 0 AND remaining <= amount")),
                    )
                    .col(text_null(CreditGrants::ScopePriceType))
                    .col(text_null(CreditGrants::ScopePrices))
                    .col(big_integer(CreditGrants::EffectiveAt))
                    .col(big_integer_null(CreditGrants::ExpiresAt))
                    .col(big_integer_null(CreditGrants::VoidedAt))
                    .col(big_integer_null(CreditGrants::ExpiryRecordedAt))
                    .col(text(CreditGrants::Metadata).default("{}"))
                    .col(text_null(CreditGrants::TestClock))
                    // Exactly one scope form.
                    .check(Expr::cust(
                        "(scope_price_type IS NULL) <> (scope_prices IS NULL)",
                    ))
                    // A voided or expired grant has nothing left to use.
                    .check(Expr::cust(
                        "(voided_at IS NULL AND expiry_recorded_at IS NULL) OR remaining = 0",
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .from(CreditGrants::Table, CreditGrants::AccountId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(CreditGrants::Table, CreditGrants::CustomerId)
                            .to(Customers::Table, Customers::Id),
                    )
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
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credit_grants_by_tenant")
                    .table(CreditGrants::Table)
                    .col(CreditGrants::AccountId)
                    .col(CreditGrants::Livemode)
                    .col(CreditGrants::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credit_grants_due_for_expiry")
                    .table(CreditGrants::Table)
                    .col(CreditGrants::ExpiryRecordedAt)
                    .col(CreditGrants::ExpiresAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CreditBalanceTransactions::Table)
                    .col(text(CreditBalanceTransactions::Id).primary_key())
                    .col(text(CreditBalanceTransactions::AccountId))
                    .col(boolean(CreditBalanceTransactions::Livemode))
                    .col(text(CreditBalanceTransactions::CustomerId))
                    .col(text(CreditBalanceTransactions::CreditGrantId))
                    .col(big_integer(CreditBalanceTransactions::Created))
                    .col(big_integer(CreditBalanceTransactions::EffectiveAt))
                    .col(text(CreditBalanceTransactions::Type).check(Expr::cust(
                        "type IN ('credits_granted', 'credits_application_invoice_voided', 'credits_applied', 'credits_expired', 'credits_voided')",
                    )))
                    .col(big_integer(CreditBalanceTransactions::Amount).check(Expr::cust("amount > 0")))
                    .col(text(CreditBalanceTransactions::Currency).check(Expr::cust("length(currency) = 3 AND lower(currency) = currency")))
                    .col(text_null(CreditBalanceTransactions::Invoice))
                    .col(text_null(CreditBalanceTransactions::InvoiceLineItem))
                    .col(text_null(CreditBalanceTransactions::TestClock))
                    // Applications and their reversals name the invoice line; nothing else does.
                    .check(Expr::cust(
                        "(type IN ('credits_applied', 'credits_application_invoice_voided')) = (invoice IS NOT NULL AND invoice_line_item IS NOT NULL)",
                    ))
                    .foreign_key(ForeignKey::create().from(CreditBalanceTransactions::Table, CreditBalanceTransactions::CustomerId).to(Customers::Table, Customers::Id))
                    .foreign_key(ForeignKey::create().from(CreditBalanceTransactions::Table, CreditBalanceTransactions::CreditGrantId).to(CreditGrants::Table, CreditGrants::Id))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            (
                "credit_balance_transactions_by_customer",
                vec![
                    CreditBalanceTransactions::CustomerId,
                    CreditBalanceTransactions::Id,
                ],
            ),
            (
                "credit_balance_transactions_by_grant",
                vec![
                    CreditBalanceTransactions::CreditGrantId,
                    CreditBalanceTransactions::Id,
                ],
            ),
            (
                "credit_balance_transactions_by_invoice",
                vec![
                    CreditBalanceTransactions::CustomerId,
                    CreditBalanceTransactions::Invoice,
                ],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(CreditBalanceTransactions::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(CreditApplications::Table)
                    .col(text(CreditApplications::AccountId))
                    .col(boolean(CreditApplications::Livemode))
                    .col(text(CreditApplications::Invoice))
                    .col(text(CreditApplications::InvoiceLineItem))
                    .col(text(CreditApplications::CustomerId))
                    .col(text(CreditApplications::Currency))
                    .col(
                        big_integer(CreditApplications::AmountDue)
                            .check(Expr::cust("amount_due >= 0")),
                    )
                    .col(
                        big_integer(CreditApplications::Applied)
                            .check(Expr::cust("applied >= 0 AND applied <= amount_due")),
                    )
                    .col(text(CreditApplications::Price))
                    .col(big_integer(CreditApplications::Created))
                    .col(big_integer_null(CreditApplications::ReinstatedAt))
                    .primary_key(
                        Index::create()
                            .col(CreditApplications::AccountId)
                            .col(CreditApplications::Livemode)
                            .col(CreditApplications::Invoice)
                            .col(CreditApplications::InvoiceLineItem),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(CreditApplications::Table, CreditApplications::CustomerId)
                            .to(Customers::Table, Customers::Id),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            CreditApplications::Table.into_iden(),
            CreditBalanceTransactions::Table.into_iden(),
            CreditGrants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
