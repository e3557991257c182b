//! Accounts, API keys, customers, the customer balance ledger and idempotency records.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    Created,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    AccountId,
    Livemode,
    LookupPrefix,
    KeyHash,
    Created,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    Id,
    AccountId,
    Livemode,
    Created,
    Name,
    Email,
    Description,
    Phone,
    Currency,
    Metadata,
    TestClock,
}

#[derive(DeriveIden)]
enum CustomerBalances {
    Table,
    CustomerId,
    Currency,
    Balance,
    TransactionCount,
}

#[derive(DeriveIden)]
enum CustomerBalanceTransactions {
    Table,
    Id,
    AccountId,
    Livemode,
    CustomerId,
    Created,
    Amount,
    Currency,
    EndingBalance,
    Sequence,
    Type,
    Description,
    Metadata,
    Invoice,
    CreditNote,
    CheckoutSession,
}

#[derive(DeriveIden)]
enum IdempotencyRecords {
    Table,
    AccountId,
    Livemode,
    Key,
    Operation,
    RequestHash,
    Response,
    Created,
}

fn currency_check(column: &str) -> Expr {
    Expr::cust(format!(
        "length({column}) = 3 AND lower({column}) = {column}"
    ))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .col(text(Accounts::Id).primary_key())
                    .col(big_integer(Accounts::Created))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(text(ApiKeys::Id).primary_key())
                    .col(text(ApiKeys::AccountId))
                    .col(boolean(ApiKeys::Livemode))
                    .col(text_uniq(ApiKeys::LookupPrefix))
                    .col(text(ApiKeys::KeyHash).check(Expr::cust("length(key_hash) = 64")))
                    .col(big_integer(ApiKeys::Created))
                    .col(big_integer_null(ApiKeys::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::AccountId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Customers::Table)
                    .col(text(Customers::Id).primary_key())
                    .col(text(Customers::AccountId))
                    .col(boolean(Customers::Livemode))
                    .col(big_integer(Customers::Created))
                    .col(text_null(Customers::Name))
                    .col(text_null(Customers::Email))
                    .col(text_null(Customers::Description))
                    .col(text_null(Customers::Phone))
                    .col(text_null(Customers::Currency).check(Expr::cust(
                        "currency IS NULL OR (length(currency) = 3 AND lower(currency) = currency)",
                    )))
                    .col(text(Customers::Metadata).default("{}"))
                    .col(text_null(Customers::TestClock))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Customers::Table, Customers::AccountId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("customers_by_tenant")
                    .table(Customers::Table)
                    .col(Customers::AccountId)
                    .col(Customers::Livemode)
                    .col(Customers::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CustomerBalances::Table)
                    .col(text(CustomerBalances::CustomerId))
                    .col(text(CustomerBalances::Currency).check(currency_check("currency")))
                    .col(big_integer(CustomerBalances::Balance))
                    .col(
                        big_integer(CustomerBalances::TransactionCount)
                            .check(Expr::cust("transaction_count >= 0")),
                    )
                    .primary_key(
                        Index::create()
                            .col(CustomerBalances::CustomerId)
                            .col(CustomerBalances::Currency),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(CustomerBalances::Table, CustomerBalances::CustomerId)
                            .to(Customers::Table, Customers::Id),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CustomerBalanceTransactions::Table)
                    .col(text(CustomerBalanceTransactions::Id).primary_key())
                    .col(text(CustomerBalanceTransactions::AccountId))
                    .col(boolean(CustomerBalanceTransactions::Livemode))
                    .col(text(CustomerBalanceTransactions::CustomerId))
                    .col(big_integer(CustomerBalanceTransactions::Created))
                    .col(
                        big_integer(CustomerBalanceTransactions::Amount)
                            .check(Expr::cust("amount <> 0")),
                    )
                    .col(
                        text(CustomerBalanceTransactions::Currency)
                            .check(currency_check("currency")),
                    )
                    .col(big_integer(CustomerBalanceTransactions::EndingBalance))
                    .col(
                        big_integer(CustomerBalanceTransactions::Sequence)
                            .check(Expr::cust("sequence >= 1")),
                    )
                    .col(text(CustomerBalanceTransactions::Type))
                    .col(text_null(CustomerBalanceTransactions::Description))
                    .col(text(CustomerBalanceTransactions::Metadata).default("{}"))
                    .col(text_null(CustomerBalanceTransactions::Invoice))
                    .col(text_null(CustomerBalanceTransactions::CreditNote))
                    .col(text_null(CustomerBalanceTransactions::CheckoutSession))
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                CustomerBalanceTransactions::Table,
                                CustomerBalanceTransactions::CustomerId,
                            )
                            .to(Customers::Table, Customers::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                CustomerBalanceTransactions::Table,
                                (
                                    CustomerBalanceTransactions::CustomerId,
                                    CustomerBalanceTransactions::Currency,
                                ),
                            )
                            .to(
                                CustomerBalances::Table,
                                (CustomerBalances::CustomerId, CustomerBalances::Currency),
                            ),
                    )
                    .to_owned(),
            )
            .await?;
        // The running balance is a chain per customer and currency: one entry per step.
        manager
            .create_index(
                Index::create()
                    .name("customer_balance_transactions_chain")
                    .table(CustomerBalanceTransactions::Table)
                    .col(CustomerBalanceTransactions::CustomerId)
                    .col(CustomerBalanceTransactions::Currency)
                    .col(CustomerBalanceTransactions::Sequence)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("customer_balance_transactions_by_customer")
                    .table(CustomerBalanceTransactions::Table)
                    .col(CustomerBalanceTransactions::CustomerId)
                    .col(CustomerBalanceTransactions::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyRecords::Table)
                    .col(text(IdempotencyRecords::AccountId))
                    .col(boolean(IdempotencyRecords::Livemode))
                    .col(
                        text(IdempotencyRecords::Key)
                            .check(Expr::cust("length(key) BETWEEN 1 AND 255")),
                    )
                    .col(text(IdempotencyRecords::Operation))
                    .col(text(IdempotencyRecords::RequestHash))
                    .col(text(IdempotencyRecords::Response))
                    .col(big_integer(IdempotencyRecords::Created))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyRecords::AccountId)
                            .col(IdempotencyRecords::Livemode)
                            .col(IdempotencyRecords::Key),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(IdempotencyRecords::Table, IdempotencyRecords::AccountId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idempotency_records_by_age")
                    .table(IdempotencyRecords::Table)
                    .col(IdempotencyRecords::Created)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyRecords::Table.into_iden(),
            CustomerBalanceTransactions::Table.into_iden(),
            CustomerBalances::Table.into_iden(),
            Customers::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Accounts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
