//! Where "now" comes from, so tests (and later test clocks) can control it.

use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Unix seconds.
    fn now(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to: for tests that need time to pass (expiry) without
/// waiting.
pub struct ManualClock {
    now: std::sync::atomic::AtomicI64,
}

impl ManualClock {
    pub fn new(start: i64) -> Self {
        ManualClock {
            now: std::sync::atomic::AtomicI64::new(start),
        }
    }

    /// Moves time forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.now
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set(&self, at: i64) {
        self.now.store(at, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }
}
