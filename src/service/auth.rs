//! API keys: creation, injection and verification. A key is `sk_test_…` or `sk_live_…`
//! followed by 32 random base62 characters (about 190 bits). No secret character is stored:
//! a row keeps the key's hash (found by that hash, unique), how it was hashed, and the last four
//! characters as a display hint. With a pepper configured the hash is HMAC-SHA256 keyed with
//! it, so a database dump alone cannot even check a guess; without one it is SHA-256, which the
//! keys' entropy alone makes infeasible to invert. Rows written before migration 7 (SHA-256 plus
//! 12 secret characters in clear) are rewritten at their next successful verification. Keys are
//! never logged.

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
/// Presented keys shorter than this are malformed. Older versions accepted injected keys of
/// this length, so they must keep working; new injected keys need `MIN_INJECTED_SECRET_CHARS`.
const MIN_PRESENTED_SECRET_CHARS: usize = 20;
/// An operator-supplied key needs as many characters as a generated one (~190 bits)...
pub const MIN_INJECTED_SECRET_CHARS: usize = SECRET_CHARS;
/// ...and that many distinct ones, which a random 32-character key has with overwhelming
/// probability (about 25 on average) and `aaaa…` or `abab…` does not.
const MIN_INJECTED_DISTINCT_CHARS: usize = 16;
/// Characters of the key kept in clear, for display only.
const HINT_CHARS: usize = 4;

/// How a stored `key_hash` was made.
pub const SCHEME_SHA256: &str = "sha256";
pub const SCHEME_HMAC_SHA256: &str = "hmac-sha256";

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
        if secret.len() < MIN_PRESENTED_SECRET_CHARS
            || !secret.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(invalid_key());
        }
        Ok(ApiKey(raw.to_string()))
    }

    /// Whether an operator may introduce this key: long and varied enough to be as hard to
    /// guess as a generated one.
    pub fn is_strong(&self) -> bool {
        let secret = self.secret();
        let distinct = secret
            .bytes()
            .collect::<std::collections::HashSet<_>>()
            .len();
        secret.len() >= MIN_INJECTED_SECRET_CHARS && distinct >= MIN_INJECTED_DISTINCT_CHARS
    }

    pub fn livemode(&self) -> bool {
        self.0.starts_with(LIVE_PREFIX)
    }

    /// Shows the key in full: only for printing a newly created key to its owner.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    fn secret(&self) -> &str {
        &self.0[TEST_PREFIX.len()..]
    }

    /// The last characters, stored for display (as Stripe shows `sk_live_…abcd`).
    fn hint(&self) -> &str {
        &self.0[self.0.len() - HINT_CHARS..]
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// The stored form under `scheme`; `None` when that needs a pepper and there is none.
    fn hash(&self, scheme: &str, pepper: Option<&[u8]>) -> Option<String> {
        match scheme {
            SCHEME_SHA256 => Some(hex::encode(self.digest())),
            SCHEME_HMAC_SHA256 => {
                pepper.map(|pepper| hex::encode(hmac_sha256(pepper, self.0.as_bytes())))
            }
            _ => None,
        }
    }
}

/// The scheme new rows get: keyed when a pepper is configured.
fn current_scheme(pepper: Option<&[u8]>) -> &'static str {
    if pepper.is_some() {
        SCHEME_HMAC_SHA256
    } else {
        SCHEME_SHA256
    }
}

/// HMAC-SHA256 (RFC 2104) over `sha2`, so no second digest-trait version enters the tree.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let inner_pad = block_key.map(|b| b ^ 0x36);
    let outer_pad = block_key.map(|b| b ^ 0x5c);
    let inner = Sha256::new()
        .chain_update(inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
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

fn weak_injected_key() -> Error {
    Error::invalid_param(
        "api_keys",
        format!(
            "An injected API key must be sk_test_ or sk_live_ followed by at least {MIN_INJECTED_SECRET_CHARS} random letters and digits (e.g. from `creditd keys create`, or `head -c 48 /dev/urandom | base64 | tr -dc A-Za-z0-9 | head -c 32`)."
        ),
    )
}

/// How a stored key is shown: mode prefix and the last characters, never more.
pub fn display_hint(record: &ApiKeyRecord) -> String {
    let prefix = if record.livemode {
        LIVE_PREFIX
    } else {
        TEST_PREFIX
    };
    match &record.key_hint {
        Some(hint) => format!("{prefix}…{hint}"),
        None => format!("{prefix}…"),
    }
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

    /// Checks a key against its stored row: known, same hash, same mode, not revoked. A row
    /// not in the current form (legacy plaintext prefix, or plain SHA-256 while a pepper is
    /// configured) is rewritten once the key has verified.
    async fn verify_stored_key(&self, key: &ApiKey) -> Result<Caller> {
        let row = self.find_stored_key(key).await?.ok_or_else(invalid_key)?;
        if row.livemode != key.livemode() {
            return Err(invalid_key());
        }
        self.upgrade_stored_key(key, &row).await?;
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

    /// The row of this exact key, looked up by each hash the server can make of it and then
    /// checked (in constant time) under the scheme the row says it uses.
    async fn find_stored_key(&self, key: &ApiKey) -> Result<Option<ApiKeyRecord>> {
        let pepper = self.api_key_pepper.as_deref();
        let candidates = [SCHEME_SHA256, SCHEME_HMAC_SHA256]
            .into_iter()
            .filter_map(|scheme| key.hash(scheme, pepper))
            .collect::<Vec<_>>();
        let Some(row) =
            store::accounts::find_api_key_by_hash(self.db.reader(), &candidates).await?
        else {
            return Ok(None);
        };
        let matches = key
            .hash(&row.hash_scheme, pepper)
            .is_some_and(|expected| bool::from(row.key_hash.as_bytes().ct_eq(expected.as_bytes())));
        Ok(matches.then_some(row))
    }

    async fn upgrade_stored_key(&self, key: &ApiKey, row: &ApiKeyRecord) -> Result<()> {
        let pepper = self.api_key_pepper.as_deref();
        let scheme = current_scheme(pepper);
        let current = row.legacy_lookup_prefix.is_none()
            && row.key_hint.is_some()
            && row.hash_scheme == scheme;
        // A keyed row is never downgraded when a process runs without the pepper.
        if current || (row.hash_scheme == SCHEME_HMAC_SHA256 && pepper.is_none()) {
            return Ok(());
        }
        let Some(new_hash) = key.hash(scheme, pepper) else {
            return Ok(());
        };
        // Best effort: the key has verified, so a failed rewrite (a busy writer) must not fail
        // the request; the next verification tries again.
        match store::accounts::upgrade_api_key(
            self.db.writer(),
            &row.id,
            &row.key_hash,
            &new_hash,
            scheme,
            key.hint(),
        )
        .await
        {
            Ok(()) => {
                tracing::info!(key_id = %row.id, hash_scheme = scheme, "api key storage upgraded")
            }
            Err(err) => {
                tracing::warn!(key_id = %row.id, error = %err, "api key storage upgrade failed; retried at next verification")
            }
        }
        Ok(())
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
        let pepper = self.api_key_pepper.as_deref();
        let scheme = current_scheme(pepper);
        let tx = self.db.begin().await?;
        store::accounts::insert_api_key(
            &tx,
            &ApiKeyRecord {
                id: new_id(IdKind::ApiKey, key.livemode()),
                account_id: account_id.to_string(),
                livemode: key.livemode(),
                legacy_lookup_prefix: None,
                key_hash: key.hash(scheme, pepper).ok_or_else(invalid_key)?,
                hash_scheme: scheme.to_string(),
                key_hint: Some(key.hint().to_string()),
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
            let key = ApiKey::parse(raw_key).map_err(|_| weak_injected_key())?;
            if let Some(existing) = self.find_stored_key(&key).await? {
                if !key.is_strong() {
                    // Stored by an older version, which accepted 20 characters: refusing it
                    // now would lock its users out. Its hash no longer sits beside a
                    // plaintext prefix, but it should still be replaced.
                    tracing::warn!(key_id = %existing.id, "an injected API key is shorter than {MIN_INJECTED_SECRET_CHARS} random characters; replace it and revoke this one");
                }
                continue;
            }
            if !key.is_strong() {
                return Err(weak_injected_key());
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
    fn hmac_matches_rfc_4231() {
        // Test cases 2 (short key) and 6 (key longer than a block).
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn injected_keys_need_generated_key_strength() {
        assert!(ApiKey::generate(true).is_strong());
        for weak in [
            format!("sk_live_{}", random_base62(20)),
            format!("sk_live_{}", random_base62(31)),
            format!("sk_live_{}", "ab".repeat(20)),
            format!("sk_live_{}", "a".repeat(40)),
        ] {
            assert!(!ApiKey::parse(&weak).unwrap().is_strong(), "{weak}");
        }
    }

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
            "sk_test_abcdefghijklmnopqrs",
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
