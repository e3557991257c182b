use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub account_id: String,
    pub livemode: bool,
    /// The key's own ID (non-secret). Rows written before migration 7 held `sk_…` plus 12
    /// secret characters here; the migration and the lazy upgrade overwrite them.
    pub lookup_prefix: String,
    /// Hex digest of the whole key, made as `hash_scheme` says; unique, rows are found by it.
    pub key_hash: String,
    /// `sha256` or `hmac-sha256` (keyed with the server's pepper).
    pub hash_scheme: String,
    /// The last four characters of the key, for display; `None` on rows not yet upgraded.
    pub key_hint: Option<String>,
    pub created: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
