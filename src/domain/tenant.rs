//! Who a request acts for. Every read and write is scoped by both fields, so a key can never
//! see another account's objects nor cross between test and live mode.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tenant {
    pub account_id: String,
    pub livemode: bool,
}
