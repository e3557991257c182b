use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "billing_alerts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub account_id: String,
    pub livemode: bool,
    pub title: String,
    /// Always `credit_balance_threshold`.
    pub alert_type: String,
    /// `active`, `inactive` or `archived`.
    pub status: String,
    pub customer_id: String,
    pub currency: String,
    pub lte_value: i64,
    /// `metered`, or null.
    pub scope_price_type: Option<String>,
    /// JSON array of price IDs, or null.
    pub scope_prices: Option<String>,
    /// Whether the balance was at or below the threshold when last evaluated.
    pub below: bool,
    pub created: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
