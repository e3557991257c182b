//! API key storage (defect 6): no secret character is stored beyond the four-character hint,
//! keys are hashed with the server's pepper when one is configured, keys stored by earlier
//! versions keep working and are rewritten on use, and operator keys must be strong.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use common::{Backend, TestApp, TestDatabase};
use creditd::config::ServeConfig;
use creditd::domain::ids::random_base62;
use creditd::service::Services;
use creditd::store::accounts::ApiKeyRecord;
use creditd::store::{self, Db};
use sea_orm::{ConnectionTrait, Statement};
use sha2::{Digest, Sha256};

const PEPPER: &[u8] = b"a-server-side-pepper-of-32-bytes-or-more";

fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Every text value of every stored key row, read with plain SQL (a database dump).
async fn dump_api_keys(db: &Db) -> Vec<Vec<(String, String)>> {
    let conn = db.reader();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT * FROM api_keys",
        ))
        .await
        .expect("dump");
    rows.iter()
        .map(|row| {
            row.column_names()
                .into_iter()
                .filter_map(|column| {
                    let value = row.try_get::<Option<String>>("", &column).ok().flatten()?;
                    Some((column, value))
                })
                .collect()
        })
        .collect()
}

/// Fails if any stored text holds 5 consecutive characters of the key's secret (the hint is 4).
async fn assert_no_secret_stored(db: &Db, key: &str) {
    let secret = &key["sk_test_".len()..];
    for row in dump_api_keys(db).await {
        for (column, value) in &row {
            for window in secret.as_bytes().windows(5) {
                let window = std::str::from_utf8(window).unwrap();
                assert!(
                    !value.contains(window),
                    "column {column} = {value:?} holds secret characters {window:?}"
                );
            }
        }
    }
}

/// A row exactly as versions before migration 7 wrote it: 12 secret characters in clear.
fn legacy_row(id: &str, account_id: &str, key: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_string(),
        account_id: account_id.to_string(),
        livemode: key.starts_with("sk_live_"),
        legacy_lookup_prefix: Some(key[.."sk_test_".len() + 12].to_string()),
        key_hash: sha256_hex(key),
        hash_scheme: "sha256".to_string(),
        key_hint: None,
        created: 1,
        revoked_at: None,
    }
}

async fn stored(db: &Db, id: &str) -> ApiKeyRecord {
    store::accounts::list_api_keys(db.reader())
        .await
        .unwrap()
        .into_iter()
        .find(|key| key.id == id)
        .expect("stored key")
}

fn peppered(app: &TestApp, pepper: &[u8]) -> Services {
    Services::new(app.services.db.clone()).with_api_key_pepper(Some(pepper.to_vec()))
}

on_every_backend! {
    async fn no_stored_column_contains_secret_characters_beyond_the_hint(app) {
        assert_no_secret_stored(&app.services.db, &app.key).await;
        let live = app.new_key(true, true).await;
        assert_no_secret_stored(&app.services.db, &live).await;
        let keyed = peppered(&app, PEPPER).create_api_key(&app.account_id, false).await.unwrap();
        assert_no_secret_stored(&app.services.db, keyed.reveal()).await;
        let caller = app.services.authenticate(Some(&app.key)).await.unwrap();
        let row = stored(&app.services.db, &caller.key_id).await;
        assert_eq!(row.key_hint.as_deref(), Some(&app.key[app.key.len() - 4..]));
        assert_eq!(row.legacy_lookup_prefix, None);
    }

    async fn a_key_stored_before_the_change_still_authenticates_and_is_upgraded(app) {
        // The weakest key older versions accepted: 20 characters, 12 of them stored in clear.
        let key = format!("sk_test_{}", random_base62(20));
        let db = &app.services.db;
        store::accounts::insert_api_key(db.writer(), &legacy_row("key_legacy", &app.account_id, &key)).await.unwrap();
        let keyed = peppered(&app, PEPPER);
        let caller = keyed.authenticate(Some(&key)).await.expect("a legacy key still works");
        assert_eq!(caller.key_id, "key_legacy");
        let row = stored(db, "key_legacy").await;
        assert_eq!(row.legacy_lookup_prefix, None, "the plaintext prefix is gone");
        assert_eq!(row.hash_scheme, "hmac-sha256");
        assert_ne!(row.key_hash, sha256_hex(&key));
        assert_eq!(row.key_hint.as_deref(), Some(&key[key.len() - 4..]));
        assert_no_secret_stored(db, &key).await;
        // Still verifies in its new form, over the wire too once the server has the pepper.
        assert_eq!(keyed.authenticate(Some(&key)).await.unwrap().key_id, "key_legacy");
        let wrong = format!("{}{}", &key[..key.len() - 1], if key.ends_with('a') { 'b' } else { 'a' });
        assert!(keyed.authenticate(Some(&wrong)).await.is_err());
    }

    async fn a_legacy_key_used_without_a_pepper_loses_its_prefix_too(app) {
        let key = format!("sk_test_{}", random_base62(32));
        store::accounts::insert_api_key(app.services.db.writer(), &legacy_row("key_old", &app.account_id, &key)).await.unwrap();
        assert_eq!(app.get_as(Some(&key), "/v1/customers").await.status, 200);
        let row = stored(&app.services.db, "key_old").await;
        assert_eq!(row.legacy_lookup_prefix, None);
        assert_eq!((row.hash_scheme.as_str(), row.key_hash.as_str()), ("sha256", sha256_hex(&key).as_str()));
        assert_no_secret_stored(&app.services.db, &key).await;
    }

    async fn a_short_or_low_entropy_operator_key_is_refused(app) {
        for weak in [
            format!("sk_live_{}", random_base62(20)),
            format!("sk_live_{}", random_base62(31)),
            format!("sk_live_{}", "Ab1".repeat(12)),
            format!("sk_test_{}", "a".repeat(40)),
        ] {
            let err = app.services.ensure_api_keys(std::slice::from_ref(&weak)).await.expect_err(&weak);
            assert!(err.to_string().contains("at least 32 random letters and digits"), "{err}");
            assert!(app.services.authenticate(Some(&weak)).await.is_err(), "{weak} was not stored");
        }
        let strong = format!("sk_live_{}", random_base62(32));
        app.services.ensure_api_keys(std::slice::from_ref(&strong)).await.unwrap();
        assert!(app.services.authenticate(Some(&strong)).await.unwrap().tenant.livemode);
        // A short key an older version already stored is not locked out.
        let old = format!("sk_test_{}", random_base62(20));
        store::accounts::insert_api_key(app.services.db.writer(), &legacy_row("key_short", &app.account_id, &old)).await.unwrap();
        app.services.ensure_api_keys(std::slice::from_ref(&old)).await.expect("already stored");
        assert_eq!(app.services.authenticate(Some(&old)).await.unwrap().key_id, "key_short");
    }

    async fn with_a_pepper_the_hash_is_not_sha256_and_a_dump_alone_cannot_verify(app) {
        let keyed = peppered(&app, PEPPER);
        let key = keyed.create_api_key(&app.account_id, true).await.unwrap();
        let caller = keyed.authenticate(Some(key.reveal())).await.unwrap();
        let row = stored(&app.services.db, &caller.key_id).await;
        assert_eq!(row.hash_scheme, "hmac-sha256");
        assert_ne!(row.key_hash, sha256_hex(key.reveal()));
        assert!(dump_api_keys(&app.services.db).await.iter().flatten().all(|(_, value)| value != &sha256_hex(key.reveal())));
        // Without the pepper, or with another one, the row cannot be matched, nor rewritten.
        let unpeppered = Services::new(app.services.db.clone());
        assert!(unpeppered.authenticate(Some(key.reveal())).await.is_err());
        assert!(peppered(&app, b"another-pepper-of-at-least-32-bytes!!").authenticate(Some(key.reveal())).await.is_err());
        assert_eq!(stored(&app.services.db, &caller.key_id).await, row);
    }

    async fn revocation_and_the_key_cache_still_work_with_a_pepper(app) {
        let keyed = peppered(&app, PEPPER).with_key_cache(std::time::Duration::from_secs(60));
        let key = keyed.create_api_key(&app.account_id, false).await.unwrap();
        let caller = keyed.authenticate(Some(key.reveal())).await.unwrap();
        // Served from the cache: the row's hash changing underneath is not read again...
        let mut row = stored(&app.services.db, &caller.key_id).await;
        store::accounts::revoke_api_key(app.services.db.writer(), &caller.key_id, 2).await.unwrap();
        assert_eq!(keyed.authenticate(Some(key.reveal())).await.unwrap().key_id, caller.key_id, "cached for the ttl");
        // ...a fresh process reads the row and sees the revocation.
        let fresh = peppered(&app, PEPPER);
        let err = fresh.authenticate(Some(key.reveal())).await.unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
        // Revoking through the caching process drops its cache entry at once.
        let second = keyed.create_api_key(&app.account_id, false).await.unwrap();
        let second_caller = keyed.authenticate(Some(second.reveal())).await.unwrap();
        keyed.revoke_api_key(&second_caller.key_id).await.unwrap();
        assert!(keyed.authenticate(Some(second.reveal())).await.is_err());
        row.revoked_at = Some(2);
        assert_eq!(stored(&app.services.db, &caller.key_id).await, row);
    }

    async fn migration_7_clears_the_plaintext_prefixes_of_existing_rows(app) {
        use migrations::MigratorTrait;
        let database = TestDatabase::create(app.backend).await;
        let db = Db::connect(&ServeConfig::ephemeral(database.url.clone()).database.options()).await.unwrap();
        migrations::Migrator::up(db.writer(), Some(6)).await.unwrap();
        let key = format!("sk_live_{}", random_base62(20));
        let backend = db.writer().get_database_backend();
        for sql in [
            "INSERT INTO accounts (id, created) VALUES ('acct_old', 1)".to_string(),
            format!(
                "INSERT INTO api_keys (id, account_id, livemode, lookup_prefix, key_hash, created) VALUES ('key_old', 'acct_old', true, '{}', '{}', 1)",
                &key[..20],
                sha256_hex(&key)
            ),
        ] {
            db.writer().execute_raw(Statement::from_string(backend, sql)).await.unwrap();
        }
        migrations::Migrator::up(db.writer(), None).await.unwrap();
        assert_no_secret_stored(&db, &key.replace("sk_live_", "sk_test_")).await;
        let services = Services::new(db.clone()).with_api_key_pepper(Some(PEPPER.to_vec()));
        assert_eq!(services.authenticate(Some(&key)).await.unwrap().key_id, "key_old");
        assert_eq!(stored(&db, "key_old").await.hash_scheme, "hmac-sha256");
        db.close().await;
    }
}

/// `creditd serve` with the given environment; returns (exit code, stderr).
fn serve_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_creditd"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env(
            "CREDITD_DATABASE_URL",
            format!("sqlite:{}", dir.path().join("db.sqlite").display()),
        )
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_key_at_startup_is_a_clean_error_without_a_backtrace() {
    let short = format!("sk_live_{}", random_base62(20));
    for keys in ["garbage", short.as_str()] {
        let (code, stderr) = serve_with(&[("CREDITD_API_KEYS", keys)]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.starts_with("creditd: error: An injected API key must be"),
            "{stderr}"
        );
        assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
        assert!(stderr.lines().count() <= 3, "{stderr}");
        assert!(
            !stderr.contains(&short[8..]),
            "the key is not echoed: {stderr}"
        );
    }
}

#[test]
fn a_short_pepper_is_refused_at_startup() {
    let (code, stderr) = serve_with(&[("CREDITD_API_KEY_PEPPER", "short")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("creditd: error: the API key pepper"),
        "{stderr}"
    );
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}

#[test]
fn the_backend_enum_is_shared_with_the_harness() {
    assert_ne!(Backend::Sqlite, Backend::Postgres);
}
