//! API keys: creation, injection and verification. A key is `sk_test_…` or `sk_live_…`
//! followed by 32 random base62 characters. Only its SHA-256 is stored, with a short lookup
//! prefix to find the row; the hash is compared in constant time. Keys are never logged.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Services;
use crate::domain::Tenant;
use crate::domain::ids::{IdKind, new_id, random_base62};
use crate::error::{Error, Result};
use crate::store;
use crate::store::accounts::ApiKeyRecord;

const TEST_PREFIX: &str = "sk_test_";
const LIVE_PREFIX: &str = "sk_live_";
const SECRET_CHARS: usize = 32;
/// Characters of the secret part kept in clear to find the row.
const LOOKUP_CHARS: usize = 12;

/// A plaintext API key. Its `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn generate(livemode: bool) -> ApiKey {
        let prefix = if livemode { LIVE_PREFIX } else { TEST_PREFIX };
        ApiKey(format!("{prefix}{}", random_base62(SECRET_CHARS)))
    }

    /// Checks the shape of a presented key (not whether it exists).
    pub fn parse(raw: &str) -> Result<ApiKey> {
        let secret = raw
            .strip_prefix(TEST_PREFIX)
            .or_else(|| raw.strip_prefix(LIVE_PREFIX))
            .ok_or_else(invalid_key)?;
        if secret.len() < LOOKUP_CHARS + 8 || !secret.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid_key());
        }
        Ok(ApiKey(raw.to_string()))
    }

    pub fn livemode(&self) -> bool {
        self.0.starts_with(LIVE_PREFIX)
    }

    /// Shows the key in full: only for printing a newly created key to its owner.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    fn lookup_prefix(&self) -> &str {
        &self.0[..TEST_PREFIX.len() + LOOKUP_CHARS]
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    fn hash(&self) -> String {
        hex::encode(self.digest())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", &self.0[..TEST_PREFIX.len()])
    }
}

fn invalid_key() -> Error {
    Error::unauthenticated(
        "Invalid API Key provided. An API key looks like sk_test_… or sk_live_….",
    )
}

/// What a verified key may act as.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Tenant,
    pub key_id: String,
}

impl Services {
    /// Verifies a presented key. Unknown, malformed and revoked keys are all 401.
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Caller> {
        let presented = presented.filter(|key| !key.is_empty()).ok_or_else(|| {
            Error::unauthenticated(
                "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        })?;
        let key = ApiKey::parse(presented)?;
        let digest = key.digest();
        let cached = self.key_cache.as_ref().and_then(|cache| cache.get(&digest));
        let caller = match cached {
            Some(caller) => caller,
            None => {
                let caller = self.verify_stored_key(&key).await?;
                if let Some(cache) = &self.key_cache {
                    cache.insert(digest, caller.clone());
                }
                caller
            }
        };
        if let Some(limiter) = &self.rate_limiter
            && !limiter.allow(&caller.key_id)
        {
            return Err(Error::rate_limited(
                "Too many requests hit the API too quickly with this key. Please retry with exponential backoff.",
            ));
        }
        Ok(caller)
    }

    /// Checks a key against its stored row: known, same hash, same mode, not revoked.
    async fn verify_stored_key(&self, key: &ApiKey) -> Result<Caller> {
        let row = store::accounts::find_api_key_by_prefix(self.db.reader(), key.lookup_prefix())
            .await?
            .ok_or_else(invalid_key)?;
        let matches: bool = row.key_hash.as_bytes().ct_eq(key.hash().as_bytes()).into();
        if !matches || row.livemode != key.livemode() {
            return Err(invalid_key());
        }
        if row.revoked_at.is_some() {
            return Err(Error::unauthenticated("This API key has been revoked."));
        }
        Ok(Caller {
            tenant: Tenant {
                account_id: row.account_id,
                livemode: row.livemode,
            },
            key_id: row.id,
        })
    }

    pub async fn create_account(&self) -> Result<String> {
        let id = new_id(IdKind::Account, true);
        store::accounts::insert_account(self.db.writer(), &id, self.clock.now()).await?;
        Ok(id)
    }

    /// Creates a new key for an existing account and returns it (the only time it is shown).
    pub async fn create_api_key(&self, account_id: &str, livemode: bool) -> Result<ApiKey> {
        let key = ApiKey::generate(livemode);
        self.store_api_key(account_id, &key).await?;
        Ok(key)
    }

    async fn store_api_key(&self, account_id: &str, key: &ApiKey) -> Result<()> {
        if !store::accounts::account_exists(self.db.reader(), account_id).await? {
            return Err(Error::resource_missing("account", account_id, "account"));
        }
        let tx = self.db.begin().await?;
        store::accounts::insert_api_key(
            &tx,
            &ApiKeyRecord {
                id: new_id(IdKind::ApiKey, key.livemode()),
                account_id: account_id.to_string(),
                livemode: key.livemode(),
                lookup_prefix: key.lookup_prefix().to_string(),
                key_hash: key.hash(),
                created: self.clock.now(),
                revoked_at: None,
            },
        )
        .await?;
        store::commit(tx).await
    }

    /// On a database with no keys at all, creates an account and a test-mode key so that a
    /// new user can make a first call at once. Returns the key to print, or `None`.
    pub async fn bootstrap_test_key(&self) -> Result<Option<ApiKey>> {
        if store::accounts::count_api_keys(self.db.reader()).await? > 0 {
            return Ok(None);
        }
        let account_id = match store::accounts::first_account(self.db.reader()).await? {
            Some(id) => id,
            None => self.create_account().await?,
        };
        Ok(Some(self.create_api_key(&account_id, false).await?))
    }

    /// Makes sure each injected key exists. An entry is `sk_…` (for the first account, created
    /// if needed) or `acct_…:sk_…`. A key already stored is left alone.
    pub async fn ensure_api_keys(&self, entries: &[String]) -> Result<()> {
        for entry in entries
            .iter()
            .map(|entry| entry.trim())
            .filter(|entry| !entry.is_empty())
        {
            let (account, raw_key) = match entry.split_once(':') {
                Some((account, key)) => (Some(account.to_string()), key),
                None => (None, entry),
            };
            let key = ApiKey::parse(raw_key).map_err(|_| {
                Error::invalid_param("api_keys", "An injected API key must look like sk_test_… or sk_live_… followed by at least 20 letters or digits.")
            })?;
            if let Some(existing) =
                store::accounts::find_api_key_by_prefix(self.db.reader(), key.lookup_prefix())
                    .await?
            {
                let same: bool = existing
                    .key_hash
                    .as_bytes()
                    .ct_eq(key.hash().as_bytes())
                    .into();
                if !same {
                    return Err(Error::invalid_param(
                        "api_keys",
                        "An injected API key collides with a different stored key; generate another.",
                    ));
                }
                continue;
            }
            let account_id = match account {
                Some(id) => {
                    if !store::accounts::account_exists(self.db.reader(), &id).await? {
                        store::accounts::insert_account(self.db.writer(), &id, self.clock.now())
                            .await?;
                    }
                    id
                }
                None => match store::accounts::first_account(self.db.reader()).await? {
                    Some(id) => id,
                    None => self.create_account().await?,
                },
            };
            self.store_api_key(&account_id, &key).await?;
        }
        Ok(())
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        store::accounts::list_api_keys(self.db.reader()).await
    }

    pub async fn revoke_api_key(&self, key_id: &str) -> Result<()> {
        if store::accounts::revoke_api_key(self.db.writer(), key_id, self.clock.now()).await? {
            if let Some(cache) = &self.key_cache {
                cache.forget_key(key_id);
            }
            Ok(())
        } else {
            Err(Error::resource_missing("API key", key_id, "id"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_carry_their_mode() {
        let test = ApiKey::generate(false);
        let live = ApiKey::generate(true);
        assert!(!ApiKey::parse(test.reveal()).unwrap().livemode());
        assert!(ApiKey::parse(live.reveal()).unwrap().livemode());
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let key = ApiKey::generate(false);
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.reveal()[TEST_PREFIX.len()..]));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "sk_test_",
            "pk_test_abcdefghijklmnopqrstuvwxyz",
            "sk_test_short",
            "sk_test_abcdefghijklmnopqrstuv!",
        ] {
            assert!(ApiKey::parse(bad).is_err(), "{bad}");
        }
    }
}

/// Extracts the API key from an `Authorization` value: `Bearer <key>`, or HTTP Basic with the
/// key as the username and an empty password (what Stripe's SDKs and `curl -u key:` send).
pub fn key_from_authorization(value: &str) -> Option<String> {
    use base64::Engine;
    let value = value.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let username = decoded
            .split_once(':')
            .map_or(decoded.as_str(), |(user, _)| user);
        return Some(username.to_string());
    }
    None
}

#[cfg(test)]
mod authorization_tests {
    use super::key_from_authorization;

    #[test]
    fn bearer_and_basic_both_carry_the_key() {
        assert_eq!(
            key_from_authorization("Bearer sk_test_x").as_deref(),
            Some("sk_test_x")
        );
        // base64("sk_test_x:")
        assert_eq!(
            key_from_authorization("Basic c2tfdGVzdF94Og==").as_deref(),
            Some("sk_test_x")
        );
        assert_eq!(key_from_authorization("Digest abc"), None);
    }
}
