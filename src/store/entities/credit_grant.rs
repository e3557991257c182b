use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_grants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub account_id: String,
    pub livemode: bool,
    pub customer_id: String,
    pub created: i64,
    pub updated: i64,
    pub name: Option<String>,
    pub category: String,
    pub priority: i64,
    pub currency: String,
    pub amount: i64,
    /// Materialized: the signed sum of the grant's ledger entries.
    pub remaining: i64,
    /// "metered", or null when the scope lists prices.
    pub scope_price_type: Option<String>,
    /// JSON array of price IDs, or null when the scope is a price type.
    pub scope_prices: Option<String>,
    pub effective_at: i64,
    pub expires_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub expiry_recorded_at: Option<i64>,
    pub metadata: String,
    pub test_clock: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
