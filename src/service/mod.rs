//! The application's one API. Both transports call these functions and nothing else; they
//! own every transaction boundary, the per-customer serialization of writes, tenant scoping
//! and idempotency.

pub mod auth;
pub mod clock;
pub mod customer_balance_transactions;
pub mod customers;
pub mod idempotency;

use std::sync::Arc;

use crate::domain::Tenant;
use crate::store::Db;

pub use clock::{Clock, SystemClock};
pub use idempotency::IdempotencyKeys;

/// Who is calling and how: produced by authentication, passed to every service call.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub tenant: Tenant,
    /// The caller's idempotency key for this write, if any.
    pub idempotency_key: Option<String>,
}

impl RequestContext {
    pub fn new(tenant: Tenant) -> Self {
        RequestContext {
            tenant,
            idempotency_key: None,
        }
    }

    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }
}

/// Shared state behind every request.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub idempotency: IdempotencyKeys,
}

impl Services {
    pub fn new(db: Db) -> Self {
        Services {
            db,
            clock: Arc::new(SystemClock),
            idempotency: IdempotencyKeys::default(),
        }
    }
}
