use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "test_clocks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub account_id: String,
    pub livemode: bool,
    pub created: i64,
    pub name: Option<String>,
    pub frozen_time: i64,
    /// "ready", "advancing" or "internal_failure".
    pub status: String,
    pub target_frozen_time: Option<i64>,
    pub deletes_after: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
