//! A short-lived in-process cache of verified API keys, so a request does not read its key's
//! row from the database every time. Only keys that verified (known, matching, not revoked)
//! are cached, under the SHA-256 of the presented key (never the key itself), for `ttl`.
//! A key revoked through this process is dropped at once; a key revoked by another process
//! (the `creditd keys revoke` command, another replica) stops working within `ttl`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::auth::Caller;

/// Entries kept at most; past this, expired entries are dropped, then (if still full) all.
const MAX_ENTRIES: usize = 10_000;

pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

struct Entry {
    caller: Caller,
    verified_at: Instant,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        KeyCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The caller a key digest verified as within the last `ttl`, if any.
    pub fn get(&self, digest: &[u8; 32]) -> Option<Caller> {
        self.get_at(digest, Instant::now())
    }

    fn get_at(&self, digest: &[u8; 32], now: Instant) -> Option<Caller> {
        let entries = self.lock();
        let entry = entries.get(digest)?;
        (now.duration_since(entry.verified_at) < self.ttl).then(|| entry.caller.clone())
    }

    /// Remembers a key that just verified.
    pub fn insert(&self, digest: [u8; 32], caller: Caller) {
        self.insert_at(digest, caller, Instant::now());
    }

    fn insert_at(&self, digest: [u8; 32], caller: Caller, now: Instant) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, entry| now.duration_since(entry.verified_at) < self.ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            Entry {
                caller,
                verified_at: now,
            },
        );
    }

    /// Forgets every entry of a key (called when this process revokes it).
    pub fn forget_key(&self, key_id: &str) {
        self.lock().retain(|_, entry| entry.caller.key_id != key_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Tenant;

    fn caller(key_id: &str) -> Caller {
        Caller {
            tenant: Tenant {
                account_id: "acct_1".into(),
                livemode: false,
            },
            key_id: key_id.into(),
        }
    }

    #[test]
    fn entries_live_for_the_ttl_only() {
        let cache = KeyCache::new(Duration::from_secs(5));
        let start = Instant::now();
        cache.insert_at([1; 32], caller("key_a"), start);
        assert_eq!(
            cache
                .get_at(&[1; 32], start + Duration::from_secs(4))
                .map(|c| c.key_id),
            Some("key_a".to_string())
        );
        assert!(
            cache
                .get_at(&[1; 32], start + Duration::from_secs(5))
                .is_none()
        );
        assert!(cache.get_at(&[2; 32], start).is_none());
    }

    #[test]
    fn forgetting_a_key_drops_its_entries() {
        let cache = KeyCache::new(Duration::from_secs(5));
        cache.insert([1; 32], caller("key_a"));
        cache.insert([2; 32], caller("key_b"));
        cache.forget_key("key_a");
        assert!(cache.get(&[1; 32]).is_none());
        assert!(cache.get(&[2; 32]).is_some());
    }

    #[test]
    fn a_full_cache_never_grows_past_its_bound() {
        let cache = KeyCache::new(Duration::from_secs(60));
        for n in 0..(MAX_ENTRIES as u32 + 10) {
            let mut digest = [0; 32];
            digest[..4].copy_from_slice(&n.to_le_bytes());
            cache.insert(digest, caller("key"));
        }
        assert!(cache.lock().len() <= MAX_ENTRIES);
    }
}
