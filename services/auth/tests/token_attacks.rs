//! Forged and misused tokens, all refused — by both verifiers the auth service
//! has: Godel access-token verification (`Auth::verify_access_token` and the
//! `CallerVerifier` every service uses, here reading the key set from the same
//! database) and the ID-token verifier of single sign-on
//! (`godel_auth::oidc::id_token`).
//!
//! Refresh-token reuse revoking the family is tested in `tests/auth.rs`
//! (`refresh_tokens_rotate_and_reuse_revokes_the_family`) and through SSO in
//! `tests/oidc.rs`.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use godel_auth::directory::UserIdentity;
use godel_auth::oidc::id_token::{self, IdTokenError, IdTokenRules, ProviderKeys};
use godel_auth::{Auth, Migrator, TokenConfig};
use godel_error::ErrorCode;
use godel_identity::PrincipalKind;
use godel_identity::token::{self, AccessClaims};
use godel_store::DatabaseConfig;
use godel_store::sea_orm::ConnectionTrait;
use godel_store::sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use godel_test_utils::postgres::{DbKind as Kind, TestDb};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.example.com";
const CLIENT_ID: &str = "godel";
const NONCE: &str = "the-nonce";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(value: &Value) -> String {
    b64(&serde_json::to_vec(value).unwrap())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs `claims` as JWT with an Ed25519 seed and the given header fields.
fn sign_ed(seed: &[u8; 32], kid: Option<&str>, typ: Option<&str>, claims: &Value) -> String {
    let der = SigningKey::from_bytes(seed).to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

/// `header.payload.signature` with a hand-made header (for `alg: none` and friends).
fn forged(header: Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64_json(&header), b64_json(claims))
}

/// The same token with another payload and the original signature.
fn tampered(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64_json(claims), parts[2])
}

/// HS256 keyed with `secret` (an attacker using a public key as an HMAC secret).
fn hs256(secret: &[u8], kid: &str, typ: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

// ---------------------------------------------------------------------------------
// ID tokens

struct IdP {
    seed: [u8; 32],
    kid: &'static str,
    keys: ProviderKeys,
    jwks: Value,
}

fn idp() -> IdP {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
    let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let jwks = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "x": b64(&public),
        "kid": "idp-1", "alg": "EdDSA", "use": "sig"
    }]});
    IdP {
        seed,
        kid: "idp-1",
        keys: ProviderKeys::from_jwks(&jwks).unwrap(),
        jwks,
    }
}

fn id_rules() -> IdTokenRules {
    IdTokenRules {
        issuer: ISSUER.into(),
        client_id: CLIENT_ID.into(),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        leeway: Duration::from_secs(30),
        nonce_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(NONCE)),
    }
}

fn id_claims() -> Value {
    let now = now();
    json!({
        "iss": ISSUER, "sub": "alice", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
        "nonce": NONCE, "email": "alice@example.com", "groups": ["eng"]
    })
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

#[test]
fn id_token_attacks_are_refused() {
    let idp = idp();
    let rules = id_rules();
    let sign = |claims: &Value| sign_ed(&idp.seed, Some(idp.kid), None, claims);
    let good = id_claims();

    // Control: a proper ID token verifies, and its claims come through.
    let claims = id_token::verify(&sign(&good), &idp.keys, &rules).unwrap();
    assert_eq!(
        (claims.iss.as_str(), claims.sub.as_str()),
        (ISSUER, "alice")
    );
    assert_eq!(claims.strings("groups"), ["eng"]);
    // Expired within the leeway still passes; several audiences with our azp too.
    let now = now();
    id_token::verify(
        &sign(&with(good.clone(), json!({"exp": now - 10}))),
        &idp.keys,
        &rules,
    )
    .unwrap();
    id_token::verify(
        &sign(&with(
            good.clone(),
            json!({"aud": [CLIENT_ID, "other"], "azp": CLIENT_ID}),
        )),
        &idp.keys,
        &rules,
    )
    .unwrap();

    let mut other_seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut other_seed);
    let public_x = idp.jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let public_raw = URL_SAFE_NO_PAD.decode(&public_x).unwrap();
    let mut cases: Vec<(String, String, IdTokenError)> = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        for signature in ["", "AAAA"] {
            cases.push((
                format!("alg {alg} with signature {signature:?}"),
                forged(json!({"alg": alg, "kid": idp.kid}), &good, signature),
                IdTokenError::AlgorithmNotAllowed(alg.into()),
            ));
        }
    }
    for (what, secret) in [
        ("raw public key", public_raw.clone()),
        (
            "public key as base64url text",
            public_x.clone().into_bytes(),
        ),
        ("JWKS document", serde_json::to_vec(&idp.jwks).unwrap()),
    ] {
        cases.push((
            format!("HS256 keyed with the {what}"),
            hs256(&secret, idp.kid, None, &good),
            IdTokenError::AlgorithmNotAllowed("HS256".into()),
        ));
    }
    cases.extend([
        (
            "unknown kid".into(),
            sign_ed(&other_seed, Some("idp-2"), None, &good),
            IdTokenError::UnknownKeyId(Some("idp-2".into())),
        ),
        (
            "another key under the real kid".into(),
            sign_ed(&other_seed, Some(idp.kid), None, &good),
            IdTokenError::BadSignature,
        ),
        (
            "tampered payload".into(),
            tampered(&sign(&good), &with(good.clone(), json!({"sub": "mallory"}))),
            IdTokenError::BadSignature,
        ),
        (
            "wrong issuer".into(),
            sign(&with(good.clone(), json!({"iss": "https://evil.example"}))),
            IdTokenError::WrongIssuer,
        ),
        (
            "wrong audience".into(),
            sign(&with(good.clone(), json!({"aud": "another-client"}))),
            IdTokenError::WrongAudience,
        ),
        (
            "several audiences without azp".into(),
            sign(&with(good.clone(), json!({"aud": [CLIENT_ID, "other"]}))),
            IdTokenError::WrongAuthorizedParty,
        ),
        (
            "azp of another client".into(),
            sign(&with(good.clone(), json!({"azp": "other"}))),
            IdTokenError::WrongAuthorizedParty,
        ),
        (
            "expired beyond the leeway".into(),
            sign(&with(
                good.clone(),
                json!({"iat": now - 1000, "exp": now - 120}),
            )),
            IdTokenError::Expired,
        ),
        (
            "nbf in the future".into(),
            sign(&with(good.clone(), json!({"nbf": now + 300}))),
            IdTokenError::NotValidYet,
        ),
        (
            "iat in the future".into(),
            sign(&with(good.clone(), json!({"iat": now + 300}))),
            IdTokenError::IssuedInTheFuture,
        ),
        (
            "wrong nonce".into(),
            sign(&with(good.clone(), json!({"nonce": "replayed"}))),
            IdTokenError::WrongNonce,
        ),
        (
            "no nonce".into(),
            sign(&with(good.clone(), json!({"nonce": null}))),
            IdTokenError::MissingClaim("nonce"),
        ),
        (
            "no exp".into(),
            sign(&with(good.clone(), json!({"exp": null}))),
            IdTokenError::MissingClaim("exp"),
        ),
        (
            "an access token (typ at+jwt) of the same key".into(),
            sign_ed(&idp.seed, Some(idp.kid), Some("at+jwt"), &good),
            IdTokenError::NotIdToken,
        ),
        (
            "not a JWT".into(),
            "not.a.jwt".into(),
            IdTokenError::MalformedHeader,
        ),
    ]);
    for (what, token, expected) in cases {
        assert_eq!(
            id_token::verify(&token, &idp.keys, &rules).unwrap_err(),
            expected,
            "{what}"
        );
    }

    // An algorithm the provider settings leave out is refused even when signed right.
    let only_rs = IdTokenRules {
        algorithms: vec![Algorithm::RS256],
        ..rules
    };
    assert_eq!(
        id_token::verify(&sign(&good), &idp.keys, &only_rs).unwrap_err(),
        IdTokenError::AlgorithmNotAllowed("EdDSA".into())
    );
}

// ---------------------------------------------------------------------------------
// Godel access tokens

struct Fixture {
    auth: Auth,
    user: String,
    kid: String,
    seed: [u8; 32],
    public: [u8; 32],
    test_db: TestDb,
}

async fn fixture(kind: Kind) -> Fixture {
    let test_db = TestDb::of(kind).await;
    let db = godel_store::connect(&DatabaseConfig {
        url: test_db.url.clone().into(),
        schema: test_db.schema.clone(),
        max_connections: 2,
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    godel_store::migrate::<Migrator>(&db).await.unwrap();
    let auth = Auth::new(db.clone(), None, TokenConfig::default());
    let (user, _) = auth
        .provision_user(&UserIdentity {
            issuer: ISSUER.into(),
            subject: "alice".into(),
            email: "alice@example.com".into(),
            display_name: "Alice".into(),
        })
        .await
        .unwrap();
    let kid = auth.ensure_signing_key().await.unwrap();
    let rows = db
        .conn()
        .query_all(
            &Query::select()
                .expr(Expr::col(Alias::new("private_key")))
                .expr(Expr::col(Alias::new("public_key")))
                .from(Alias::new("signing_keys"))
                .and_where(Expr::col(Alias::new("kid")).eq(kid.clone()))
                .to_owned(),
        )
        .await
        .unwrap();
    let seed: Vec<u8> = rows[0].try_get("", "private_key").unwrap();
    let public: Vec<u8> = rows[0].try_get("", "public_key").unwrap();
    Fixture {
        auth,
        user: user.id.to_string(),
        kid,
        seed: seed.try_into().unwrap(),
        public: public.try_into().unwrap(),
        test_db,
    }
}

fn access_claims(user: &str) -> AccessClaims {
    let now = now();
    AccessClaims {
        iss: "godel".into(),
        aud: "godel-api".into(),
        sub: user.to_owned(),
        kind: PrincipalKind::User,
        team: None,
        perms: Vec::new(),
        org: Vec::new(),
        sid: None,
        iat: now,
        nbf: now,
        exp: now + 300,
        jti: "j".into(),
    }
}

async fn access_token_attacks_are_refused(kind: Kind) {
    let f = fixture(kind).await;
    let verifier = godel_auth::grpc::local_verifier(&f.auth);
    let good = access_claims(&f.user);
    let good_json = serde_json::to_value(&good).unwrap();
    let valid = token::sign(&f.kid, &f.seed, &good).unwrap();
    // Control: both verifiers accept the real thing.
    f.auth.verify_access_token(&valid).await.unwrap();
    verifier.verify(&valid).await.unwrap();

    let now = now();
    let mut other_seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut other_seed);
    let signed = |claims: AccessClaims| token::sign(&f.kid, &f.seed, &claims).unwrap();
    let mut cases: Vec<(String, String)> = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        for signature in ["", "AAAA"] {
            cases.push((
                format!("alg {alg} with signature {signature:?}"),
                forged(
                    json!({"alg": alg, "typ": "at+jwt", "kid": f.kid}),
                    &good_json,
                    signature,
                ),
            ));
        }
    }
    for (what, secret) in [
        ("raw public key", f.public.to_vec()),
        ("public key as base64url text", b64(&f.public).into_bytes()),
    ] {
        cases.push((
            format!("HS256 keyed with the {what}"),
            hs256(&secret, &f.kid, Some("at+jwt"), &good_json),
        ));
    }
    let id_token_claims = with(
        id_claims(),
        json!({"sub": f.user, "iss": "godel", "aud": "godel-api"}),
    );
    cases.extend([
        (
            "unknown kid".into(),
            token::sign("gdk_unknown", &other_seed, &good).unwrap(),
        ),
        (
            "another key under the real kid".into(),
            token::sign(&f.kid, &other_seed, &good).unwrap(),
        ),
        (
            "wrong issuer".into(),
            signed(AccessClaims {
                iss: "https://evil.example".into(),
                ..good.clone()
            }),
        ),
        (
            "wrong audience".into(),
            signed(AccessClaims {
                aud: "another-api".into(),
                ..good.clone()
            }),
        ),
        (
            "expired beyond the leeway".into(),
            signed(AccessClaims {
                iat: now - 1000,
                nbf: now - 1000,
                exp: now - 120,
                ..good.clone()
            }),
        ),
        (
            "nbf in the future".into(),
            signed(AccessClaims {
                nbf: now + 300,
                ..good.clone()
            }),
        ),
        (
            "tampered payload".into(),
            tampered(
                &valid,
                &serde_json::to_value(AccessClaims {
                    org: vec!["org-admin".into()],
                    ..good.clone()
                })
                .unwrap(),
            ),
        ),
        (
            "an ID token (typ JWT) signed by the Godel key".into(),
            sign_ed(&f.seed, Some(&f.kid), Some("JWT"), &id_token_claims),
        ),
        (
            "an ID token of an identity provider".into(),
            sign_ed(&idp().seed, Some("idp-1"), None, &id_claims()),
        ),
    ]);
    for (what, token) in cases {
        let err = f.auth.verify_access_token(&token).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthenticated, "{what}: {err:?}");
        verifier
            .verify(&token)
            .await
            .expect_err(&format!("the CallerVerifier accepted: {what}"));
    }
    f.auth.db().clone().close().await.unwrap();
    f.test_db.cleanup().await;
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn access_token_attacks_are_refused() {
        super::access_token_attacks_are_refused(super::Kind::Sqlite).await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn access_token_attacks_are_refused() {
        super::access_token_attacks_are_refused(super::Kind::Postgres).await;
    }
}
