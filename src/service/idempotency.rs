//! Idempotency keys, shared by both transports.
//!
//! A write with a key first claims it in this process (a second request with the same key
//! while the first runs gets 409 `idempotency_key_in_use`). Inside the write's transaction it
//! takes a PostgreSQL advisory lock on the key (so replicas see each other too), replays a
//! stored result if there is one, and otherwise stores its own result in the same transaction
//! as the write. The same key with other parameters is an `idempotency_error`. Records older
//! than 24 hours are treated as absent and pruned. Failed requests store nothing, so their
//! retries run again.
//!
//! Whether an answer was replayed is reported back through the request's [`ReplayFlag`], so
//! each transport can say so (`Idempotent-Replayed: true`) in one place.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::RequestContext;
use crate::domain::Tenant;
use crate::error::{Error, ErrorKind, Result};
use crate::store::idempotency::StoredResponse;
use crate::store::{self, Connection};

pub const MAX_KEY_CHARS: usize = 255;
/// How long a stored result is replayed.
pub const RETENTION_SECONDS: i64 = 24 * 60 * 60;

type Slot = (String, bool, String);

/// Set by the service when a request's answer is the stored result of an earlier one; read by
/// the transport once the call has returned. Clones share one flag, so the transport keeps a
/// clone and hands another to the service in the [`RequestContext`].
#[derive(Debug, Clone, Default)]
pub struct ReplayFlag(Arc<AtomicBool>);

impl ReplayFlag {
    /// Whether the answer was replayed.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Keys currently being executed by this process.
#[derive(Clone, Default)]
pub struct IdempotencyKeys {
    in_flight: Arc<Mutex<HashSet<Slot>>>,
}

impl IdempotencyKeys {
    /// Claims the caller's key (if any) for `operation` with `params`. Refuses a key that is
    /// already running here.
    pub fn claim(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        params: &impl Serialize,
    ) -> Result<Claim> {
        let Some(key) = ctx.idempotency_key.clone() else {
            return Ok(Claim { held: None });
        };
        if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
            return Err(Error::invalid_param(
                "Idempotency-Key",
                format!("Idempotency keys must be between 1 and {MAX_KEY_CHARS} characters long."),
            ));
        }
        let slot = (
            ctx.tenant.account_id.clone(),
            ctx.tenant.livemode,
            key.clone(),
        );
        {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !in_flight.insert(slot.clone()) {
                return Err(in_use(&key));
            }
        }
        Ok(Claim {
            held: Some(HeldKey {
                registry: self.in_flight.clone(),
                slot,
                tenant: ctx.tenant.clone(),
                key,
                operation,
                request_hash: request_hash(operation, params),
                replayed: ctx.replayed.clone(),
            }),
        })
    }
}

/// A key that is not printable ASCII (header and metadata values must be).
pub fn not_ascii() -> Error {
    Error::invalid_param(
        "Idempotency-Key",
        "Idempotency keys must contain only printable ASCII characters.",
    )
}

fn in_use(key: &str) -> Error {
    Error::new(
        ErrorKind::IdempotencyInUse,
        format!("There is currently another in-progress request using this Stripe-Idempotency-Key (that probably means you submitted twice, and the other request is still going through): {key}. Please try again later."),
    )
    .with_code("idempotency_key_in_use")
}

fn request_hash(operation: &str, params: &impl Serialize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(operation.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(params).unwrap_or_default());
    hex::encode(hasher.finalize())
}

/// A claimed key (or no key). Dropping it releases the in-process claim.
pub struct Claim {
    held: Option<HeldKey>,
}

struct HeldKey {
    registry: Arc<Mutex<HashSet<Slot>>>,
    slot: Slot,
    tenant: Tenant,
    key: String,
    operation: &'static str,
    request_hash: String,
    replayed: ReplayFlag,
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        let mut in_flight = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        in_flight.remove(&self.slot);
    }
}

impl Claim {
    /// Whether the request carried an idempotency key.
    pub(crate) fn is_keyed(&self) -> bool {
        self.held.is_some()
    }

    /// Reports that the request is answered with the stored result (once that is certain).
    pub(crate) fn mark_replayed(&self) {
        if let Some(held) = &self.held {
            held.replayed.set();
        }
    }

    /// Inside the write transaction, before writing: the stored result to replay, if any.
    pub async fn replay<T: DeserializeOwned>(
        &self,
        tx: &impl Connection,
        now: i64,
    ) -> Result<Option<T>> {
        let Some(held) = &self.held else {
            return Ok(None);
        };
        if !store::idempotency::try_lock_key(tx, &held.tenant, &held.key).await? {
            return Err(in_use(&held.key));
        }
        let Some(record) = store::idempotency::find(tx, &held.tenant, &held.key).await? else {
            return Ok(None);
        };
        if record.created < now - RETENTION_SECONDS {
            store::idempotency::delete(tx, &held.tenant, &held.key).await?;
            return Ok(None);
        }
        if record.operation != held.operation || record.request_hash != held.request_hash {
            return Err(Error::new(
                ErrorKind::IdempotencyMismatch,
                format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{}' if you meant to execute a different request.",
                    held.key
                ),
            ));
        }
        serde_json::from_str(&record.response)
            .map(Some)
            .map_err(|error| {
                Error::internal(anyhow::Error::new(error).context("stored idempotent response"))
            })
    }

    /// Inside the write transaction, after writing: stores the result for replays.
    pub async fn record<T: Serialize>(
        &self,
        tx: &impl Connection,
        now: i64,
        result: &T,
    ) -> Result<()> {
        let Some(held) = &self.held else {
            return Ok(());
        };
        let stored = StoredResponse {
            operation: held.operation.to_string(),
            request_hash: held.request_hash.clone(),
            response: serde_json::to_string(result).map_err(Error::internal)?,
            created: now,
        };
        if store::idempotency::insert(tx, &held.tenant, &held.key, &stored).await? {
            Ok(())
        } else {
            Err(in_use(&held.key))
        }
    }
}

/// Deletes records past retention; run periodically.
pub async fn prune(db: &store::Db, now: i64) -> Result<u64> {
    store::idempotency::delete_older_than(db.writer(), now - RETENTION_SECONDS).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(key: &str) -> RequestContext {
        RequestContext::new(Tenant {
            account_id: "acct_1".into(),
            livemode: false,
        })
        .with_idempotency_key(Some(key.into()))
    }

    #[test]
    fn a_key_cannot_be_claimed_twice_until_released() {
        let keys = IdempotencyKeys::default();
        let first = keys.claim(&ctx("k"), "op", &1).unwrap();
        let second = keys.claim(&ctx("k"), "op", &1).err().unwrap();
        assert_eq!(second.code, Some("idempotency_key_in_use"));
        drop(first);
        assert!(keys.claim(&ctx("k"), "op", &1).is_ok());
    }

    #[test]
    fn a_replay_is_reported_through_the_requests_flag() {
        let keys = IdempotencyKeys::default();
        let ctx = ctx("k");
        let claim = keys.claim(&ctx, "op", &1).unwrap();
        assert!(!ctx.replayed.is_set());
        claim.mark_replayed();
        assert!(ctx.replayed.is_set(), "the context's clone sees the mark");
        let unkeyed = RequestContext::new(ctx.tenant.clone());
        keys.claim(&unkeyed, "op", &1).unwrap().mark_replayed();
        assert!(
            !unkeyed.replayed.is_set(),
            "without a key nothing is replayed"
        );
    }

    #[test]
    fn overlong_keys_are_refused() {
        let keys = IdempotencyKeys::default();
        assert!(keys.claim(&ctx(&"k".repeat(256)), "op", &1).is_err());
        assert!(keys.claim(&ctx(&"k".repeat(255)), "op", &1).is_ok());
    }

    #[test]
    fn the_hash_depends_on_operation_and_parameters() {
        assert_eq!(request_hash("a", &1), request_hash("a", &1));
        assert_ne!(request_hash("a", &1), request_hash("a", &2));
        assert_ne!(request_hash("a", &1), request_hash("b", &1));
    }
}
