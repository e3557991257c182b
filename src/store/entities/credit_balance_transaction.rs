use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_balance_transactions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub account_id: String,
    pub livemode: bool,
    pub customer_id: String,
    pub credit_grant_id: String,
    pub created: i64,
    pub effective_at: i64,
    #[sea_orm(column_name = "type")]
    pub kind: String,
    pub amount: i64,
    pub currency: String,
    pub invoice: Option<String>,
    pub invoice_line_item: Option<String>,
    pub test_clock: Option<String>,
    /// The grant's remainder after this entry (migration 11; every row has it).
    pub grant_remaining_after: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
