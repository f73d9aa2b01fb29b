//! `CallerVerifier` against key sets handed over in-process: what a token must be to
//! pass, how the key set is cached and refetched, and what happens when it cannot
//! be had. (The same verifier against the real auth service over gRPC is tested in
//! `services/auth/tests/auth/grpc.rs`.)

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use godel_identity::token::{self, AccessClaims};
use godel_identity::{
    CallerVerifier, Jwk, Jwks, KeySource, KeySourceError, OrgRole, Permission, Principal,
    PrincipalKind, VerifierConfig, VerifyError,
};
use godel_types::{ApiKeyId, TeamId, UserId};

/// A key set that can change, fail, and counts its fetches.
#[derive(Default)]
struct Source {
    jwks: Mutex<Jwks>,
    down: AtomicBool,
    fetches: AtomicUsize,
}

#[async_trait::async_trait]
impl KeySource for Source {
    async fn fetch(&self) -> Result<Jwks, KeySourceError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(KeySourceError::Other("auth is down".into()));
        }
        Ok(self.jwks.lock().unwrap().clone())
    }
}

impl Source {
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

struct Key {
    kid: String,
    seed: [u8; 32],
}

impl Key {
    fn new(kid: &str) -> Self {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
        Self {
            kid: kid.into(),
            seed,
        }
    }

    fn jwk(&self) -> Jwk {
        let public = ed25519_dalek::SigningKey::from_bytes(&self.seed)
            .verifying_key()
            .to_bytes();
        Jwk::ed25519(self.kid.clone(), &public)
    }

    fn sign(&self, claims: &AccessClaims) -> String {
        token::sign(&self.kid, &self.seed, claims).unwrap()
    }
}

fn claims(team: TeamId) -> AccessClaims {
    let now = chrono::Utc::now().timestamp();
    AccessClaims {
        iss: "godel".into(),
        aud: "godel-api".into(),
        sub: UserId::new().to_string(),
        kind: PrincipalKind::User,
        team: Some(team.to_string()),
        perms: Vec::new(),
        org: Vec::new(),
        sid: Some("s1".into()),
        iat: now,
        nbf: now,
        exp: now + 300,
        jti: "j1".into(),
    }
    .with_grants(
        [Permission::TasksCreate, Permission::TasksRead]
            .iter()
            .collect(),
        &[],
    )
}

fn verifier(source: &Arc<Source>, config: VerifierConfig) -> CallerVerifier {
    CallerVerifier::new(config, source.clone())
}

fn eager() -> VerifierConfig {
    VerifierConfig {
        jwks_min_refetch: Duration::ZERO,
        ..VerifierConfig::default()
    }
}

fn source_with(keys: &[&Key]) -> Arc<Source> {
    let source = Source::default();
    *source.jwks.lock().unwrap() = Jwks {
        keys: keys.iter().map(|k| k.jwk()).collect(),
    };
    Arc::new(source)
}

#[tokio::test]
async fn a_valid_token_yields_the_caller_it_names() {
    let key = Key::new("gdk_1");
    let source = source_with(&[&key]);
    let v = verifier(&source, eager());
    let team = TeamId::new();
    let c = claims(team);
    let caller = v.verify(&key.sign(&c)).await.unwrap();
    assert_eq!(caller.principal.to_string(), c.sub);
    assert_eq!(caller.team, Some(team));
    assert_eq!(caller.permissions.names(), ["tasks:create", "tasks:read"]);
    assert_eq!(caller.session.as_deref(), Some("s1"));
    assert_eq!(caller.expires_at.timestamp(), c.exp);
    caller.require(team, Permission::TasksCreate).unwrap();
    caller.require(team, Permission::TasksCancel).unwrap_err();

    // An API key's token, with an org role and names this build does not know.
    let key_id = ApiKeyId::new();
    let c = AccessClaims {
        sub: key_id.to_string(),
        kind: PrincipalKind::ApiKey,
        perms: vec!["tasks:read".into(), "warp:engage".into()],
        org: vec!["org-admin".into(), "org-jester".into()],
        ..claims(team)
    };
    let caller = v.verify(&key.sign(&c)).await.unwrap();
    assert_eq!(caller.principal, Principal::ApiKey(key_id));
    assert_eq!(caller.permissions.names(), ["tasks:read"]);
    assert_eq!(caller.org_roles, [OrgRole::Admin]);
    caller
        .require(TeamId::new(), Permission::KeysManage)
        .unwrap();
    assert_eq!(source.fetches(), 1);
}

#[tokio::test]
async fn tokens_outside_their_time_or_for_someone_else_are_rejected() {
    let key = Key::new("gdk_1");
    let source = source_with(&[&key]);
    let v = verifier(&source, eager());
    let team = TeamId::new();
    let now = chrono::Utc::now().timestamp();
    let cases = [
        (
            AccessClaims {
                exp: now - 120,
                ..claims(team)
            },
            VerifyError::Expired,
        ),
        (
            AccessClaims {
                nbf: now + 300,
                ..claims(team)
            },
            VerifyError::NotValidYet,
        ),
        (
            AccessClaims {
                iss: "https://evil.example".into(),
                ..claims(team)
            },
            VerifyError::WrongIssuer,
        ),
        (
            AccessClaims {
                aud: "another-api".into(),
                ..claims(team)
            },
            VerifyError::WrongAudience,
        ),
        (
            AccessClaims {
                kind: PrincipalKind::ApiKey,
                ..claims(team)
            },
            VerifyError::BadSubject(PrincipalKind::ApiKey),
        ),
        (
            AccessClaims {
                team: Some("team_nope".into()),
                ..claims(team)
            },
            VerifyError::BadClaim("team"),
        ),
    ];
    for (c, expected) in cases {
        assert_eq!(v.verify(&key.sign(&c)).await.unwrap_err(), expected);
    }
    // Expired by less than the leeway (30 s): still accepted.
    v.verify(&key.sign(&AccessClaims {
        exp: now - 5,
        ..claims(team)
    }))
    .await
    .unwrap();
}

#[tokio::test]
async fn only_eddsa_access_tokens_with_a_kid_are_looked_at() {
    let key = Key::new("gdk_1");
    let source = source_with(&[&key]);
    let v = verifier(&source, eager());
    let c = claims(TeamId::new());
    let der = {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        ed25519_dalek::SigningKey::from_bytes(&key.seed)
            .to_pkcs8_der()
            .unwrap()
    };
    let encoding = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
    let mut id_token = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    id_token.kid = Some("gdk_1".into());
    let mut no_kid = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    no_kid.typ = Some("at+jwt".into());
    let cases = [
        (
            jsonwebtoken::encode(&id_token, &c, &encoding).unwrap(),
            VerifyError::NotAccessToken,
        ),
        (
            jsonwebtoken::encode(&no_kid, &c, &encoding).unwrap(),
            VerifyError::NoKeyId,
        ),
        ("not.a.jwt".to_owned(), VerifyError::MalformedHeader),
    ];
    for (token, expected) in cases {
        assert_eq!(v.verify(&token).await.unwrap_err(), expected);
    }
    // None of these needed the key set.
    assert_eq!(source.fetches(), 0);
}

#[tokio::test]
async fn concurrent_misses_fetch_the_key_set_once() {
    let key = Key::new("gdk_1");
    let source = source_with(&[&key]);
    let v = verifier(&source, eager());
    let token = key.sign(&claims(TeamId::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (v, token) = (v.clone(), token.clone());
        tasks.spawn(async move { v.verify(&token).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(source.fetches(), 1);
}

#[tokio::test]
async fn a_new_kid_is_fetched_but_made_up_kids_are_rate_limited() {
    let old = Key::new("gdk_old");
    let source = source_with(&[&old]);
    let limited = verifier(
        &source,
        VerifierConfig {
            jwks_min_refetch: Duration::from_secs(3600),
            ..VerifierConfig::default()
        },
    );
    let eager = verifier(&source, eager());
    let team = TeamId::new();
    limited.verify(&old.sign(&claims(team))).await.unwrap();
    eager.verify(&old.sign(&claims(team))).await.unwrap();
    assert_eq!(source.fetches(), 2);

    // Rotation: auth publishes a new key beside the old one.
    let new = Key::new("gdk_new");
    source.jwks.lock().unwrap().keys.insert(0, new.jwk());
    eager.verify(&new.sign(&claims(team))).await.unwrap();
    eager.verify(&old.sign(&claims(team))).await.unwrap();
    assert_eq!(source.fetches(), 3);
    // Within its interval, the limited verifier does not fetch for a kid it does not
    // know, however many arrive.
    for _ in 0..5 {
        assert_eq!(
            limited.verify(&new.sign(&claims(team))).await.unwrap_err(),
            VerifyError::UnknownKeyId("gdk_new".into())
        );
    }
    assert_eq!(source.fetches(), 3);
}

#[tokio::test]
async fn cached_keys_keep_verifying_while_auth_is_down() {
    let key = Key::new("gdk_1");
    let source = source_with(&[&key]);
    // Every use finds the cache stale and tries to refetch.
    let v = verifier(
        &source,
        VerifierConfig {
            jwks_min_refetch: Duration::ZERO,
            jwks_max_age: Duration::ZERO,
            ..VerifierConfig::default()
        },
    );
    let token = key.sign(&claims(TeamId::new()));
    v.verify(&token).await.unwrap();
    source.down.store(true, Ordering::SeqCst);
    v.verify(&token).await.unwrap();
    assert_eq!(source.fetches(), 2);

    // A verifier that never had the keys cannot verify: unavailable, not the
    // caller's fault.
    let fresh = verifier(&source, eager());
    let err = fresh.verify(&token).await.unwrap_err();
    assert_eq!(err, VerifyError::KeysUnavailable);
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
    assert_eq!(
        tonic::Status::from(VerifyError::Expired).code(),
        tonic::Code::Unauthenticated
    );
}

#[tokio::test]
async fn the_request_extractor_reads_the_bearer_token() {
    let key = Key::new("gdk_1");
    let source = source_with(&[&key]);
    let v = verifier(&source, eager());
    let mut request = tonic::Request::new(());
    let status = v.verify_request(&request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("no access token"), "{status:?}");
    godel_identity::attach_token(&mut request, &key.sign(&claims(TeamId::new()))).unwrap();
    v.verify_request(&request).await.unwrap();
}
