use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub account_id: String,
    pub livemode: bool,
    pub url: String,
    /// JSON array of event type names (or `*`).
    pub enabled_events: String,
    /// `enabled` or `disabled`.
    pub status: String,
    pub description: Option<String>,
    /// JSON object of string values.
    pub metadata: String,
    pub api_version: Option<String>,
    /// `whsec_…`: the HMAC key of the endpoint's signatures.
    pub secret: String,
    pub created: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
