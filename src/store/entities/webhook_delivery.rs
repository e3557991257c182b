use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub event_id: String,
    pub endpoint_id: String,
    pub account_id: String,
    pub livemode: bool,
    /// `pending`, `succeeded` or `failed` (gave up, or the endpoint went away).
    pub state: String,
    pub attempts: i64,
    /// Unix milliseconds.
    pub next_attempt_at: i64,
    /// Unix milliseconds until which a worker holds the delivery.
    pub lease_until: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// The event's `created` (Unix seconds).
    pub created: i64,
    /// Unix milliseconds of the 2xx answer.
    pub delivered_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
