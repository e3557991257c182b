//! On a database only this process writes (SQLite under `creditd serve`'s lock), what every
//! write would otherwise read again: whether the tenant has any enabled webhook endpoint and
//! any active alert. A tenant with neither then pays no lookup for them per write.
//!
//! Every read and every change of these facts happens inside a write transaction, and write
//! transactions run one at a time on the single writer: a lookup that found none records it,
//! and creating, enabling or activating one forgets it (before its transaction commits; a
//! rollback only costs a lookup). So no write can miss an endpoint or alert that an earlier
//! write created. Never used on PostgreSQL, where another replica may create one at any time.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::Tenant;

/// What is known of one tenant's hooks.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    /// `Some(false)`: no enabled webhook endpoint.
    endpoints: Option<bool>,
    /// `Some(false)`: no active alert; `Some(true)`: at least one.
    alerts: Option<bool>,
}

#[derive(Debug, Default)]
pub struct TenantHooks {
    known: Mutex<HashMap<Tenant, Known>>,
}

/// The most tenants remembered (beyond it, everything is forgotten: it is only a shortcut).
const MAX_TENANTS: usize = 10_000;

impl TenantHooks {
    fn read(&self, tenant: &Tenant) -> Known {
        self.known
            .lock()
            .map(|known| known.get(tenant).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    fn update(&self, tenant: &Tenant, change: impl FnOnce(&mut Known)) {
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= MAX_TENANTS && !known.contains_key(tenant) {
                known.clear();
            }
            change(known.entry(tenant.clone()).or_default());
        }
    }

    /// Known to have no enabled webhook endpoint.
    pub fn no_endpoints(&self, tenant: &Tenant) -> bool {
        self.read(tenant).endpoints == Some(false)
    }

    /// Whether the tenant has an active alert, when known.
    pub fn has_alerts(&self, tenant: &Tenant) -> Option<bool> {
        self.read(tenant).alerts
    }

    /// A lookup found the tenant's enabled endpoints (none, or some).
    pub fn saw_endpoints(&self, tenant: &Tenant, any: bool) {
        self.update(tenant, |known| known.endpoints = Some(any));
    }

    /// A lookup found whether the tenant has any active alert.
    pub fn saw_alerts(&self, tenant: &Tenant, any: bool) {
        self.update(tenant, |known| known.alerts = Some(any));
    }

    /// An endpoint was created or changed: look again.
    pub fn forget_endpoints(&self, tenant: &Tenant) {
        self.update(tenant, |known| known.endpoints = None);
    }

    /// An alert was created or changed: look again.
    pub fn forget_alerts(&self, tenant: &Tenant) {
        self.update(tenant, |known| known.alerts = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_seen_is_known_until_forgotten() {
        let hooks = TenantHooks::default();
        let tenant = Tenant {
            account_id: "acct_1".into(),
            livemode: false,
        };
        assert!(!hooks.no_endpoints(&tenant));
        assert_eq!(hooks.has_alerts(&tenant), None);
        hooks.saw_endpoints(&tenant, false);
        hooks.saw_alerts(&tenant, false);
        assert!(hooks.no_endpoints(&tenant));
        assert_eq!(hooks.has_alerts(&tenant), Some(false));
        hooks.forget_endpoints(&tenant);
        hooks.forget_alerts(&tenant);
        assert!(!hooks.no_endpoints(&tenant));
        assert_eq!(hooks.has_alerts(&tenant), None);
        hooks.saw_endpoints(&tenant, true);
        assert!(!hooks.no_endpoints(&tenant));
    }
}
