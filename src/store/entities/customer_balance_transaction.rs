use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customer_balance_transactions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub account_id: String,
    pub livemode: bool,
    pub customer_id: String,
    pub created: i64,
    pub amount: i64,
    pub currency: String,
    pub ending_balance: i64,
    /// Position in the customer's chain for this currency, from 1, without gaps.
    pub sequence: i64,
    #[sea_orm(column_name = "type")]
    pub kind: String,
    pub description: Option<String>,
    pub metadata: String,
    pub invoice: Option<String>,
    pub credit_note: Option<String>,
    pub checkout_session: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
