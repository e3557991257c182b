use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_holds")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub account_id: String,
    pub livemode: bool,
    pub customer_id: String,
    pub currency: String,
    pub amount: i64,
    /// JSON of the price reference the hold is for.
    pub price: String,
    /// `active`, `captured`, `released` or `expired`.
    pub status: String,
    /// JSON array of `{credit_grant, amount}` still reserved, in burn-down order.
    pub reservations: String,
    pub captured_amount: i64,
    pub lapsed_amount: i64,
    pub invoice: Option<String>,
    pub invoice_line_item: Option<String>,
    pub created: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
    pub test_clock: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
