use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_applications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub account_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub livemode: bool,
    #[sea_orm(primary_key, auto_increment = false)]
    pub invoice: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub invoice_line_item: String,
    pub customer_id: String,
    pub currency: String,
    pub amount_due: i64,
    pub applied: i64,
    /// JSON of the line's price reference.
    pub price: String,
    pub created: i64,
    pub reinstated_at: Option<i64>,
    /// JSON of why each credit was spent (migration 11); null for lines applied before it.
    pub explanation: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
