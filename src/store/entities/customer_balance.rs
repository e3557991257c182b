use sea_orm::entity::prelude::*;

/// The materialized running balance of one customer in one currency, and how many ledger
/// entries produced it (the position of the newest entry in the chain).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customer_balances")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub customer_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub currency: String,
    pub balance: i64,
    pub transaction_count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
