use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    /// Insert order (an autoincrement); orders the sequencer's work.
    #[sea_orm(primary_key)]
    pub position: i64,
    #[sea_orm(unique)]
    pub id: String,
    pub account_id: String,
    pub livemode: bool,
    #[sea_orm(column_name = "type")]
    pub kind: String,
    pub created: i64,
    pub customer_id: Option<String>,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub api_version: String,
    pub pending_webhooks: i64,
    pub data: String,
    /// The stream position, given after commit by the sequencer.
    pub sequence: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
