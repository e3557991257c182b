//! The embedded deployment's in-memory view of customers' grants and holds, so a credit
//! balance summary is answered without a query.
//!
//! Only for SQLite served by one process (`creditd serve` takes the database's lock file, so no
//! other server writes it; PostgreSQL never has a view: another replica may write at any time).
//! There, every write goes through this process's single writer, and every committed write
//! transaction advances the store's write generation ([`store::write_generation`]) before its
//! caller answers. A cached customer is served only while the generation is the one it was read
//! at, and a read is kept only if no write committed while it ran: so after a write is
//! acknowledged, no summary can come from before it. The view holds what the database holds
//! (grants, live holds, the test clock's time); the summary is still computed at read time, so
//! time passing (an expiry, a hold running out) needs no invalidation. It is bounded: at most
//! `capacity` customers, and a customer with more than [`MAX_CACHED_GRANTS`] grants is not kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::Tenant;
use crate::domain::credit_grant::CreditGrant;
use crate::domain::credit_hold::CreditHold;
use crate::store;

/// A customer with more grants than this is read from the database every time.
pub const MAX_CACHED_GRANTS: usize = 256;

/// What a summary needs of one customer, as the database had it.
#[derive(Debug, Clone)]
pub struct CustomerState {
    /// Its test clock's frozen time, when it is on one.
    pub clock_time: Option<i64>,
    pub grants: Vec<CreditGrant>,
    /// Its active holds.
    pub holds: Vec<CreditHold>,
}

type Key = (String, bool, String);

#[derive(Debug)]
struct Entry {
    generation: u64,
    state: CustomerState,
}

/// See the module documentation.
#[derive(Debug)]
pub struct GrantView {
    capacity: usize,
    /// The write generation: [`store::write_generation`] (a test's own counter in unit tests).
    generation: fn() -> u64,
    entries: Mutex<HashMap<Key, Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A read that missed: what to hand back to [`GrantView::keep`] with its result.
#[derive(Debug)]
pub struct Miss {
    key: Key,
    generation: u64,
}

fn key(tenant: &Tenant, customer_id: &str) -> Key {
    (
        tenant.account_id.clone(),
        tenant.livemode,
        customer_id.to_string(),
    )
}

impl GrantView {
    pub fn new(capacity: usize) -> GrantView {
        Self::with_generation(capacity, store::write_generation)
    }

    fn with_generation(capacity: usize, generation: fn() -> u64) -> GrantView {
        GrantView {
            capacity: capacity.max(1),
            generation,
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The customer's state if it is current; otherwise what to [`keep`](Self::keep) once the
    /// caller has read it from the database (reading the generation first, so a write that
    /// commits during that read is noticed).
    pub fn lookup(&self, tenant: &Tenant, customer_id: &str) -> Result<CustomerState, Miss> {
        let generation = (self.generation)();
        let key = key(tenant, customer_id);
        if let Ok(entries) = self.entries.lock()
            && let Some(entry) = entries.get(&key)
            && entry.generation == generation
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(entry.state.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        Err(Miss { key, generation })
    }

    /// Keeps what a missed read found, unless a write committed since the miss (it may be
    /// older than that write) or the customer is too large to keep.
    pub fn keep(&self, miss: Miss, state: &CustomerState) {
        if state.grants.len() > MAX_CACHED_GRANTS {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if (self.generation)() != miss.generation {
            return;
        }
        // Entries of an older generation are dead weight: drop them first; then any one.
        if entries.len() >= self.capacity {
            entries.retain(|_, entry| entry.generation == miss.generation);
            if entries.len() >= self.capacity
                && let Some(evicted) = entries.keys().next().cloned()
            {
                entries.remove(&evicted);
            }
        }
        entries.insert(
            miss.key,
            Entry {
                generation: miss.generation,
                state: state.clone(),
            },
        );
    }

    /// (hits, misses) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static WRITES: AtomicU64 = AtomicU64::new(0);

    fn writes() -> u64 {
        WRITES.load(Ordering::SeqCst)
    }

    fn tenant() -> Tenant {
        Tenant {
            account_id: "acct_1".into(),
            livemode: false,
        }
    }

    fn state(clock_time: i64) -> CustomerState {
        CustomerState {
            clock_time: Some(clock_time),
            grants: Vec::new(),
            holds: Vec::new(),
        }
    }

    #[test]
    fn a_read_is_served_until_a_write_commits_and_is_not_kept_across_one() {
        let view = GrantView::with_generation(2, writes);
        let miss = view.lookup(&tenant(), "cus_1").expect_err("empty");
        view.keep(miss, &state(1));
        assert_eq!(
            view.lookup(&tenant(), "cus_1").expect("kept").clock_time,
            Some(1)
        );
        // A write commits: the entry is no longer served.
        WRITES.fetch_add(1, Ordering::SeqCst);
        let miss = view.lookup(&tenant(), "cus_1").expect_err("stale");
        // A write commits while the miss is being read: its result is not kept.
        WRITES.fetch_add(1, Ordering::SeqCst);
        view.keep(miss, &state(2));
        assert!(view.lookup(&tenant(), "cus_1").is_err());
        let (hits, misses) = view.counts();
        assert_eq!((hits, misses), (1, 3));
    }

    #[test]
    fn it_never_holds_more_than_its_capacity() {
        let view = GrantView::with_generation(2, writes);
        for customer in ["cus_1", "cus_2", "cus_3"] {
            if let Err(miss) = view.lookup(&tenant(), customer) {
                view.keep(miss, &state(0));
            }
        }
        assert!(view.entries.lock().expect("lock").len() <= 2);
    }
}
