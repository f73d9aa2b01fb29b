//! Encrypted provider keys over SQLite and PostgreSQL: envelope encryption round
//! trips; a ciphertext (with its wrapped data key) copied into another team's or
//! another key's row, or back over a newer version, does not decrypt; a changed
//! key-encryption key is reported; and the Vault Transit backend, against a small
//! HTTP server started here that implements exactly Transit's `encrypt` and
//! `decrypt` endpoints with real AEAD inside (Vault itself cannot be installed in
//! this environment).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use godel_config::Secret;
use godel_error::ErrorCode;
use godel_orchestrator::keys::{Kek, LocalKek, ProviderKeys, VaultTransit};
use godel_orchestrator::{Migrator, VaultConfig};
use godel_store::sea_orm::{ConnectionTrait, Statement, Value};
use godel_store::{DatabaseConfig, Db};
use godel_test_utils::postgres::{DbKind, TestDb};
use godel_types::TeamId;

async fn database(kind: DbKind) -> (TestDb, Db) {
    let test_db = TestDb::of(kind).await;
    let db = godel_store::connect(&DatabaseConfig {
        url: test_db.url.clone().into(),
        schema: test_db.schema.clone(),
        max_connections: 4,
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    godel_store::migrate::<Migrator>(&db).await.unwrap();
    (test_db, db)
}

fn local_kek(dir: &tempfile::TempDir) -> Arc<dyn Kek> {
    Arc::new(LocalKek::new(dir.path().join("kek"), true))
}

/// Copies the sealed secret (ciphertext, wrapped data key, version) of key `from`
/// into the row of key `to`.
async fn copy_sealed(db: &Db, from: &str, to: &str) {
    let conn = db.conn();
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT ciphertext, wrapped_key, version FROM provider_keys WHERE id = $1",
            [Value::from(from.to_owned())],
        ))
        .await
        .unwrap()
        .unwrap();
    let ciphertext: String = row.try_get("", "ciphertext").unwrap();
    let wrapped: String = row.try_get("", "wrapped_key").unwrap();
    let version: i64 = row.try_get("", "version").unwrap();
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        "UPDATE provider_keys SET ciphertext = $1, wrapped_key = $2, version = $3 WHERE id = $4",
        [
            Value::from(ciphertext),
            wrapped.into(),
            version.into(),
            to.to_owned().into(),
        ],
    ))
    .await
    .unwrap();
}

/// The sealed columns of key `id`, as stored.
async fn sealed_of(db: &Db, id: &str) -> (String, String, i64) {
    let conn = db.conn();
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT ciphertext, wrapped_key, version FROM provider_keys WHERE id = $1",
            [Value::from(id.to_owned())],
        ))
        .await
        .unwrap()
        .unwrap();
    (
        row.try_get("", "ciphertext").unwrap(),
        row.try_get("", "wrapped_key").unwrap(),
        row.try_get("", "version").unwrap(),
    )
}

async fn a_key_round_trips_and_is_stored_encrypted(kind: DbKind) {
    let (test_db, db) = database(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = ProviderKeys::new(db.clone(), local_kek(&dir));
    let team = TeamId::new();
    let secret = "sk-live-roundtrip-0123456789abcd";
    let key = keys
        .set(team, "openai", "default", Secret::new(secret.to_owned()))
        .await
        .unwrap();
    assert_eq!((key.version, key.hint.as_str()), (1, "abcd"));
    assert!(key.kek_id.starts_with("local:"), "{}", key.kek_id);
    let (stored, revealed) = keys.reveal(team, "openai", "default").await.unwrap();
    assert_eq!(stored.id, key.id);
    assert_eq!(revealed.expose(), secret);
    // Neither the secret nor its base64 is in the row.
    let (ciphertext, wrapped, _) = sealed_of(&db, &key.id.to_string()).await;
    assert!(!ciphertext.contains(secret) && !wrapped.contains(secret));
    assert!(!ciphertext.contains(&B64.encode(secret)));
    assert_eq!(keys.list(team).await.unwrap(), vec![key.clone()]);
    assert!(keys.list(TeamId::new()).await.unwrap().is_empty());
    // Another team cannot read it by name.
    let other = keys.reveal(TeamId::new(), "openai", "default").await;
    assert_eq!(other.unwrap_err().code, ErrorCode::FailedPrecondition);
    // Names are unique per team and provider.
    let again = keys
        .set(
            team,
            "openai",
            "default",
            Secret::new("sk-other-key-0000".into()),
        )
        .await;
    assert_eq!(again.unwrap_err().code, ErrorCode::AlreadyExists);
    keys.set(
        team,
        "anthropic",
        "default",
        Secret::new("sk-ant-1234567890".into()),
    )
    .await
    .unwrap();
    test_db.cleanup().await;
}

async fn a_ciphertext_copied_to_another_row_does_not_decrypt(kind: DbKind) {
    let (test_db, db) = database(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = ProviderKeys::new(db.clone(), local_kek(&dir));
    let (alice, bob) = (TeamId::new(), TeamId::new());
    let a = keys
        .set(
            alice,
            "openai",
            "default",
            Secret::new("sk-alice-secret-0001".into()),
        )
        .await
        .unwrap();
    let b = keys
        .set(
            bob,
            "openai",
            "default",
            Secret::new("sk-bob-secret-00002".into()),
        )
        .await
        .unwrap();
    let b2 = keys
        .set(
            bob,
            "openai",
            "spare",
            Secret::new("sk-bob-spare-000003".into()),
        )
        .await
        .unwrap();
    // Alice's sealed key in Bob's row: refused, not Alice's secret.
    copy_sealed(&db, &a.id.to_string(), &b.id.to_string()).await;
    let stolen = keys.reveal(bob, "openai", "default").await;
    assert_eq!(stolen.unwrap_err().code, ErrorCode::FailedPrecondition);
    // Bob's own other key copied over his first: also refused (the key id is bound).
    copy_sealed(&db, &b2.id.to_string(), &b.id.to_string()).await;
    let swapped = keys.reveal(bob, "openai", "default").await;
    assert_eq!(swapped.unwrap_err().code, ErrorCode::FailedPrecondition);
    // The originals still open.
    assert_eq!(
        keys.reveal(alice, "openai", "default")
            .await
            .unwrap()
            .1
            .expose(),
        "sk-alice-secret-0001"
    );
    assert_eq!(
        keys.reveal(bob, "openai", "spare")
            .await
            .unwrap()
            .1
            .expose(),
        "sk-bob-spare-000003"
    );
    test_db.cleanup().await;
}

async fn rotation_seals_a_new_version(kind: DbKind) {
    let (test_db, db) = database(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = ProviderKeys::new(db.clone(), local_kek(&dir));
    let team = TeamId::new();
    let key = keys
        .set(
            team,
            "anthropic",
            "default",
            Secret::new("sk-ant-first-00001".into()),
        )
        .await
        .unwrap();
    let v1 = sealed_of(&db, &key.id.to_string()).await;
    let rotated = keys
        .rotate(team, key.id, Secret::new("sk-ant-second-9999".into()))
        .await
        .unwrap();
    assert_eq!((rotated.version, rotated.hint.as_str()), (2, "9999"));
    assert!(rotated.rotated_at.is_some());
    assert_eq!(
        keys.reveal(team, "anthropic", "default")
            .await
            .unwrap()
            .1
            .expose(),
        "sk-ant-second-9999"
    );
    // Another team cannot rotate it.
    let foreign = keys
        .rotate(
            TeamId::new(),
            key.id,
            Secret::new("sk-foreign-000000".into()),
        )
        .await;
    assert_eq!(foreign.unwrap_err().code, ErrorCode::NotFound);
    // Putting version 1's sealed secret back under version 2 does not decrypt.
    let conn = db.conn();
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        "UPDATE provider_keys SET ciphertext = $1, wrapped_key = $2 WHERE id = $3",
        [Value::from(v1.0), v1.1.into(), key.id.to_string().into()],
    ))
    .await
    .unwrap();
    let replayed = keys.reveal(team, "anthropic", "default").await;
    assert_eq!(replayed.unwrap_err().code, ErrorCode::FailedPrecondition);
    test_db.cleanup().await;
}

async fn another_kek_is_reported(kind: DbKind) {
    let (test_db, db) = database(kind).await;
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let team = TeamId::new();
    ProviderKeys::new(db.clone(), local_kek(&one))
        .set(
            team,
            "openai",
            "default",
            Secret::new("sk-kek-one-000001".into()),
        )
        .await
        .unwrap();
    let error = ProviderKeys::new(db.clone(), local_kek(&two))
        .reveal(team, "openai", "default")
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::FailedPrecondition);
    assert!(
        error.message.contains("key-encryption key"),
        "{}",
        error.message
    );
    // A missing key file without create_if_missing fails the operation clearly.
    let missing = ProviderKeys::new(
        db.clone(),
        Arc::new(LocalKek::new(one.path().join("absent"), false)),
    )
    .set(
        team,
        "openai",
        "other",
        Secret::new("sk-never-stored-01".into()),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code, ErrorCode::Unavailable);
    assert!(missing.message.contains("absent"), "{}", missing.message);
    test_db.cleanup().await;
}

/// The Transit engine's two endpoints, with one XChaCha20-Poly1305 key per Transit
/// key name, `associated_data` authenticated, and the token checked.
#[derive(Clone)]
struct Transit {
    key: [u8; 32],
    token: String,
    namespace: Option<String>,
}

fn vault_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({"errors": [message]}))).into_response()
}

async fn transit(
    State(transit): State<Arc<Transit>>,
    Path((operation, name)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    if headers.get("x-vault-token").and_then(|v| v.to_str().ok()) != Some(&transit.token) {
        return vault_error(StatusCode::FORBIDDEN, "permission denied");
    }
    if headers
        .get("x-vault-namespace")
        .and_then(|v| v.to_str().ok())
        != transit.namespace.as_deref()
    {
        return vault_error(StatusCode::NOT_FOUND, "no handler for route");
    }
    if name != "godel" {
        return vault_error(StatusCode::BAD_REQUEST, "encryption key not found");
    }
    let field = |f: &str| {
        body.get(f)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let aad = B64.decode(field("associated_data")).unwrap_or_default();
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&transit.key));
    match operation.as_str() {
        "encrypt" => {
            let plaintext = B64.decode(field("plaintext")).unwrap();
            let mut nonce = [0u8; 24];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
            let sealed = cipher
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &plaintext,
                        aad: &aad,
                    },
                )
                .unwrap();
            let ciphertext = format!("vault:v1:{}", B64.encode([&nonce[..], &sealed].concat()));
            Json(serde_json::json!({"data": {"ciphertext": ciphertext, "key_version": 1}}))
                .into_response()
        }
        "decrypt" => {
            let text = field("ciphertext");
            let Some(raw) = text
                .strip_prefix("vault:v1:")
                .and_then(|b| B64.decode(b).ok())
                .filter(|raw| raw.len() > 24)
            else {
                return vault_error(StatusCode::BAD_REQUEST, "invalid ciphertext");
            };
            let (nonce, sealed) = raw.split_at(24);
            match cipher.decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            ) {
                Ok(plain) => Json(serde_json::json!({"data": {"plaintext": B64.encode(plain)}}))
                    .into_response(),
                Err(_) => vault_error(
                    StatusCode::BAD_REQUEST,
                    "cipher: message authentication failed",
                ),
            }
        }
        _ => vault_error(StatusCode::NOT_FOUND, "unsupported path"),
    }
}

/// Starts the Transit stand-in; returns its address.
async fn start_transit(token: &str, namespace: Option<&str>) -> String {
    let state = Arc::new(Transit {
        key: [42u8; 32],
        token: token.to_owned(),
        namespace: namespace.map(str::to_owned),
    });
    let app = axum::Router::new()
        .route("/v1/transit/{operation}/{name}", post(transit))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn vault(address: &str, token: &str, namespace: Option<&str>) -> Arc<dyn Kek> {
    Arc::new(
        VaultTransit::new(VaultConfig {
            address: address.to_owned(),
            token: Secret::new(token.to_owned()),
            mount: "transit".into(),
            key_name: "godel".into(),
            namespace: namespace.map(str::to_owned),
            ..VaultConfig::default()
        })
        .unwrap(),
    )
}

async fn the_vault_transit_backend_wraps_data_keys(kind: DbKind) {
    let (test_db, db) = database(kind).await;
    let address = start_transit("s.root-token", Some("godel-ns")).await;
    let keys = ProviderKeys::new(
        db.clone(),
        vault(&address, "s.root-token", Some("godel-ns")),
    );
    let (alice, bob) = (TeamId::new(), TeamId::new());
    let a = keys
        .set(
            alice,
            "openai",
            "default",
            Secret::new("sk-vault-alice-0001".into()),
        )
        .await
        .unwrap();
    assert_eq!(a.kek_id, "vault:transit/godel");
    let (_, wrapped, _) = sealed_of(&db, &a.id.to_string()).await;
    let wrapped = String::from_utf8(B64.decode(wrapped).unwrap()).unwrap();
    assert!(wrapped.starts_with("vault:v1:"), "{wrapped}");
    assert_eq!(
        keys.reveal(alice, "openai", "default")
            .await
            .unwrap()
            .1
            .expose(),
        "sk-vault-alice-0001"
    );
    // Vault's AEAD binds the associated data too: Alice's wrapped key in Bob's row
    // is refused by Vault itself.
    let b = keys
        .set(
            bob,
            "openai",
            "default",
            Secret::new("sk-vault-bob-00002".into()),
        )
        .await
        .unwrap();
    copy_sealed(&db, &a.id.to_string(), &b.id.to_string()).await;
    let stolen = keys.reveal(bob, "openai", "default").await.unwrap_err();
    assert_eq!(stolen.code, ErrorCode::FailedPrecondition);
    // A wrong token is Vault refusing, reported as unavailable.
    let refused = ProviderKeys::new(db.clone(), vault(&address, "s.wrong", Some("godel-ns")))
        .reveal(alice, "openai", "default")
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unavailable);
    assert!(refused.message.contains("403"), "{}", refused.message);
    assert!(!refused.message.contains("s.wrong"), "{}", refused.message);
    test_db.cleanup().await;
}

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::DbKind::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::DbKind::Postgres).await;
            })*
        }
    };
}

on_both_databases!(
    a_key_round_trips_and_is_stored_encrypted,
    a_ciphertext_copied_to_another_row_does_not_decrypt,
    rotation_seals_a_new_version,
    another_kek_is_reported,
    the_vault_transit_backend_wraps_data_keys,
);
