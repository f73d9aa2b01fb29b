//! Godel access tokens: short-lived JWTs signed with Ed25519 (`EdDSA`), each naming
//! its signing key in `kid`; the signing keys, their rotation and the JWKS document.
//! The token format itself (claims, signing, verification) is `godel_identity::token`,
//! shared with every service that verifies.
//!
//! A token carries what services need to re-check permissions without asking auth
//! (DESIGN.md §3 invariant 7): the principal and its kind, the team it acts in, the
//! permissions held there and organisation roles — read from the database when the
//! token is issued, so a change reaches services within one token lifetime.
//!
//! Signing keys live in the `signing_keys` table. The private key (the 32-byte
//! Ed25519 seed) is never returned, logged or published (the row's `Debug` leaves it
//! out), and is stored encrypted when `tokens.signing_key_encryption_key` is set
//! ([`seal`]; plain otherwise, as under `godel up`). Rotation adds a
//! new key that signs from then on; older keys keep verifying until the last token
//! they signed has expired (`retired_at` + access-token lifetime + leeway) and are
//! deleted at the next rotation after that.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use ed25519_dalek::SigningKey;
use godel_error::Error;
use godel_identity::token::{self, ALGORITHM, AccessClaims, TokenRules};
use godel_identity::{Caller, Jwk, Jwks, OrgRole, PermissionSet, Principal, PublicKey};
use godel_store::sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};
use godel_types::{TeamId, UserId};
use rand::RngCore;

use crate::api_keys::KeyCaller;
use crate::authz::Grants;
use crate::entity::signing_key;
use crate::store::{Auth, db_error, now};

pub mod seal;

/// A freshly signed access token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a token grants: permissions in its team and organisation roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TokenGrants {
    pub permissions: PermissionSet,
    pub org_roles: Vec<OrgRole>,
}

impl From<&Grants> for TokenGrants {
    fn from(grants: &Grants) -> Self {
        match grants {
            Grants::Everything { .. } => Self {
                permissions: PermissionSet::EMPTY,
                org_roles: vec![OrgRole::Admin],
            },
            Grants::Sources(sources) => Self {
                permissions: sources.iter().flat_map(|(_, p)| p.iter()).collect(),
                org_roles: Vec::new(),
            },
            Grants::Nothing { .. } => Self::default(),
        }
    }
}

fn chrono(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

impl Auth {
    /// The configured key-encryption key, if any.
    fn key_encryption_key(&self) -> Result<Option<[u8; 32]>, Error> {
        self.tokens
            .signing_key_encryption_key
            .as_ref()
            .map(|text| seal::parse_key(text.expose()))
            .transpose()
            .map_err(|e| {
                tracing::error!(error = %e, "tokens.signing_key_encryption_key is unusable");
                Error::internal("the signing key is unusable")
            })
    }

    /// What verification checks besides the signature.
    pub(crate) fn token_rules(&self) -> TokenRules {
        TokenRules {
            issuer: self.tokens.issuer.clone(),
            audience: self.tokens.audience.clone(),
            leeway: self.tokens.leeway,
        }
    }

    /// Until when a key retired at `retired_at` still verifies.
    fn verifies_until(&self, retired_at: DateTime<Utc>) -> DateTime<Utc> {
        retired_at + chrono(self.tokens.access_ttl) + chrono(self.tokens.leeway)
    }

    fn still_verifies(&self, key: &signing_key::Model, at: DateTime<Utc>) -> bool {
        key.retired_at.is_none_or(|r| self.verifies_until(r) > at)
    }

    /// The key that signs now, creating the first one when there is none. Returns
    /// its `kid`.
    pub async fn ensure_signing_key(&self) -> Result<String, Error> {
        match self.current_signing_key().await? {
            Some(key) => Ok(key.kid),
            None => self.rotate_signing_key().await,
        }
    }

    /// Makes a new key the signing key; the previous ones keep verifying until
    /// their tokens have expired. Keys past that are deleted. Returns the new `kid`.
    pub async fn rotate_signing_key(&self) -> Result<String, Error> {
        let (kid, row) = self.generate_signing_key()?;
        let at = now();
        let cutoff = at - self.key_overlap();
        self.write(move |txn| {
            Box::pin(async move {
                signing_key::Entity::update_many()
                    .col_expr(
                        signing_key::Column::RetiredAt,
                        godel_store::sea_orm::sea_query::Expr::value(at),
                    )
                    .filter(signing_key::Column::RetiredAt.is_null())
                    .exec(txn)
                    .await
                    .map_err(db_error("retiring signing keys"))?;
                install_signing_key(txn, row, cutoff).await
            })
        })
        .await?;
        Ok(kid)
    }

    /// How long a retired key keeps verifying: the last token it signed may live
    /// an access-token lifetime, plus leeway.
    pub(crate) fn key_overlap(&self) -> ChronoDuration {
        chrono(self.tokens.access_ttl) + chrono(self.tokens.leeway)
    }

    /// A fresh Ed25519 key, sealed as configured, as a row to insert; and its `kid`.
    pub(crate) fn generate_signing_key(&self) -> Result<(String, signing_key::ActiveModel), Error> {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let kid = format!("gdk_{}", uuid::Uuid::now_v7().simple());
        let stored = seal::seal(&seed, &kid, self.key_encryption_key()?.as_ref()).map_err(|e| {
            tracing::error!(error = %e, "sealing a new signing key failed");
            Error::internal("creating a signing key failed")
        })?;
        let row = signing_key::ActiveModel {
            kid: ActiveValue::Set(kid.clone()),
            algorithm: ActiveValue::Set(ALGORITHM.to_owned()),
            private_key: ActiveValue::Set(stored),
            public_key: ActiveValue::Set(public.to_vec()),
            created_at: ActiveValue::Set(now()),
            retired_at: ActiveValue::Set(None),
        };
        Ok((kid, row))
    }

    pub(crate) async fn current_signing_key(&self) -> Result<Option<signing_key::Model>, Error> {
        signing_key::Entity::find()
            .filter(signing_key::Column::RetiredAt.is_null())
            .order_by_desc(signing_key::Column::CreatedAt)
            .one(self.db.conn())
            .await
            .map_err(db_error("reading the signing key"))
    }

    /// The public keys that verify access tokens now, as a JWKS document.
    pub async fn jwks(&self) -> Result<Jwks, Error> {
        let at = now();
        let keys = signing_key::Entity::find()
            .order_by_desc(signing_key::Column::CreatedAt)
            .all(self.db.conn())
            .await
            .map_err(db_error("reading signing keys"))?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys.into_iter().filter(|k| self.still_verifies(k, at)) {
            out.push(Jwk::ed25519(key.kid.clone(), public_key(&key)?.as_bytes()));
        }
        Ok(Jwks { keys: out })
    }

    /// Signs an access token for `user` (acting in `team`, within sign-in session
    /// `session`), valid for the configured lifetime but never past `not_after`. The
    /// token carries what the user holds in `team` now.
    pub async fn issue_access_token(
        &self,
        user: UserId,
        team: Option<TeamId>,
        session: Option<String>,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<AccessToken, Error> {
        let principal = Principal::User(user);
        let (_, grants) = self.user_token_grants(user, team).await?;
        self.sign_token(principal, team, grants, session, not_after)
            .await
    }

    /// What `user` holds in `team` (see [`Self::user_grants`]) and what a token of
    /// theirs acting there carries: those permissions and every organisation role
    /// they hold.
    pub(crate) async fn user_token_grants(
        &self,
        user: UserId,
        team: Option<TeamId>,
    ) -> Result<(Grants, TokenGrants), Error> {
        let grants = self.user_grants(user, team).await?;
        let mut token = TokenGrants::from(&grants);
        token.org_roles = crate::directory::find_user(self.db.conn(), user)
            .await?
            .org_roles;
        Ok((grants, token))
    }

    /// What `user` holds in `team`; with no team, only what holds in every team
    /// (`org-admin`).
    pub(crate) async fn user_grants(
        &self,
        user: UserId,
        team: Option<TeamId>,
    ) -> Result<Grants, Error> {
        match team {
            Some(team) => self.grants(Principal::User(user), team).await,
            None => {
                let person = crate::directory::find_user(self.db.conn(), user).await?;
                Ok(if person.org_admin {
                    Grants::Everything {
                        via: "role org-admin".to_owned(),
                    }
                } else {
                    Grants::Sources(Vec::new())
                })
            }
        }
    }

    /// Signs a short-lived access token standing for an authenticated API key: its
    /// team and permissions, never past the key's own expiry.
    pub async fn issue_key_token(&self, key: &KeyCaller) -> Result<AccessToken, Error> {
        let grants = TokenGrants {
            permissions: key.permissions.iter().collect(),
            org_roles: key.org_roles.clone(),
        };
        self.sign_token(
            Principal::ApiKey(key.key),
            Some(key.team),
            grants,
            None,
            key.expires_at,
        )
        .await
    }

    pub(crate) async fn sign_token(
        &self,
        principal: Principal,
        team: Option<TeamId>,
        grants: TokenGrants,
        session: Option<String>,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<AccessToken, Error> {
        let key = match self.current_signing_key().await? {
            Some(key) => key,
            None => {
                self.rotate_signing_key().await?;
                self.current_signing_key()
                    .await?
                    .ok_or_else(|| Error::internal("no signing key"))?
            }
        };
        let issued = Utc::now();
        let mut expires = issued + chrono(self.tokens.access_ttl);
        if let Some(limit) = not_after {
            expires = expires.min(limit);
        }
        let claims = AccessClaims {
            iss: self.tokens.issuer.clone(),
            aud: self.tokens.audience.clone(),
            sub: principal.to_string(),
            kind: principal.kind(),
            team: team.map(|t| t.to_string()),
            perms: Vec::new(),
            org: Vec::new(),
            sid: session,
            iat: issued.timestamp(),
            nbf: issued.timestamp(),
            exp: expires.timestamp(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        }
        .with_grants(grants.permissions, &grants.org_roles);
        let token = sign(&key, &claims, self.key_encryption_key()?.as_ref())?;
        Ok(AccessToken {
            token,
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(expires),
        })
    }

    /// Verifies a Godel access token against the keys in the database: header (`alg`
    /// EdDSA exactly, `typ` at+jwt, a known `kid`), signature, `iss`, `aud`, `exp`
    /// and `nbf` (with leeway), and the subject. Any failure is `unauthenticated`.
    /// (Other services verify with `godel_identity::CallerVerifier`.)
    pub async fn verify_access_token(&self, token: &str) -> Result<Caller, Error> {
        let kid = token::key_id(token)?;
        let key = signing_key::Entity::find_by_id(kid.clone())
            .one(self.db.conn())
            .await
            .map_err(db_error("reading a signing key"))?
            .filter(|k| self.still_verifies(k, now()))
            .ok_or(token::VerifyError::UnknownKeyId(kid))?;
        Ok(token::verify_with_key(
            token,
            &public_key(&key)?,
            &self.token_rules(),
        )?)
    }
}

/// Deletes keys retired before `cutoff` (they verify nothing any more) and inserts
/// `row`, the new signing key, in `txn`.
pub(crate) async fn install_signing_key(
    txn: &godel_store::sea_orm::DatabaseTransaction,
    row: signing_key::ActiveModel,
    cutoff: DateTime<Utc>,
) -> Result<(), Error> {
    signing_key::Entity::delete_many()
        .filter(signing_key::Column::RetiredAt.lt(cutoff))
        .exec(txn)
        .await
        .map_err(db_error("deleting expired signing keys"))?;
    row.insert(txn)
        .await
        .map_err(db_error("inserting a signing key"))?;
    Ok(())
}

fn public_key(key: &signing_key::Model) -> Result<PublicKey, Error> {
    let bytes: [u8; 32] = key.public_key.clone().try_into().map_err(|_| {
        tracing::error!(kid = %key.kid, "stored public key is not 32 bytes");
        Error::internal("a signing key is unreadable")
    })?;
    Ok(PublicKey::from_bytes(bytes))
}

fn sign(
    key: &signing_key::Model,
    claims: &AccessClaims,
    kek: Option<&[u8; 32]>,
) -> Result<String, Error> {
    let seed = seal::open(&key.private_key, &key.kid, kek).map_err(|e| {
        tracing::error!(error = %e, "the signing key cannot be opened");
        Error::internal("the signing key is unreadable")
    })?;
    token::sign(&key.kid, &seed, claims).map_err(|e| {
        tracing::error!(error = %e, "signing an access token failed");
        Error::internal("signing the access token failed")
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use godel_identity::PrincipalKind;
    use godel_store::DatabaseConfig;
    use godel_test_utils::postgres::TestDb;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

    use super::*;
    use crate::config::TokenConfig;
    use crate::directory::UserIdentity;

    struct Fixture {
        auth: Auth,
        user: UserId,
        key: signing_key::Model,
        _db: TestDb,
    }

    async fn fixture() -> Fixture {
        let db = TestDb::sqlite();
        let config = DatabaseConfig {
            url: db.url.clone().into(),
            ..DatabaseConfig::default()
        };
        let conn = godel_store::connect(&config).await.unwrap();
        godel_store::migrate::<crate::Migrator>(&conn)
            .await
            .unwrap();
        let auth = Auth::new(conn, None, TokenConfig::default());
        let (user, _) = auth
            .provision_user(&UserIdentity {
                issuer: "https://idp.example".into(),
                subject: "alice".into(),
                email: "alice@example.com".into(),
                display_name: "Alice".into(),
            })
            .await
            .unwrap();
        let kid = auth.ensure_signing_key().await.unwrap();
        let key = signing_key::Entity::find_by_id(kid)
            .one(auth.db.conn())
            .await
            .unwrap()
            .unwrap();
        Fixture {
            auth,
            user: user.id,
            key,
            _db: db,
        }
    }

    impl Fixture {
        fn claims(&self) -> AccessClaims {
            let now = Utc::now().timestamp();
            AccessClaims {
                iss: "godel".into(),
                aud: "godel-api".into(),
                sub: self.user.to_string(),
                kind: PrincipalKind::User,
                team: None,
                perms: Vec::new(),
                org: Vec::new(),
                sid: None,
                iat: now,
                nbf: now,
                exp: now + 600,
                jti: "j".into(),
            }
        }

        async fn rejects(&self, token: &str, what: &str) {
            let err = self.auth.verify_access_token(token).await.unwrap_err();
            assert_eq!(err.code, godel_error::ErrorCode::Unauthenticated, "{what}");
            assert!(err.message.contains(what), "{what}: {}", err.message);
        }
    }

    fn b64(json: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
    }

    #[tokio::test]
    async fn a_signed_token_verifies_and_names_its_user_and_team() {
        let f = fixture().await;
        let team = TeamId::new();
        let token = f
            .auth
            .issue_access_token(f.user, Some(team), Some("s1".into()), None)
            .await
            .unwrap();
        let verified = f.auth.verify_access_token(&token.token).await.unwrap();
        assert_eq!(verified.principal, Principal::User(f.user));
        assert_eq!(verified.team, Some(team));
        assert_eq!(verified.session.as_deref(), Some("s1"));
        let header = jsonwebtoken::decode_header(&token.token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(f.key.kid.as_str()));
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    }

    #[tokio::test]
    async fn alg_none_in_any_case_is_rejected() {
        let f = fixture().await;
        let payload = b64(&serde_json::to_value(f.claims()).unwrap());
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = b64(&serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": f.key.kid}));
            for sig in ["", "AAAA"] {
                f.auth
                    .verify_access_token(&format!("{header}.{payload}.{sig}"))
                    .await
                    .unwrap_err();
            }
        }
        // A header claiming EdDSA over an empty signature fails on the signature.
        let header = b64(&serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": f.key.kid}));
        f.rejects(&format!("{header}.{payload}."), "invalid access token")
            .await;
    }

    #[tokio::test]
    async fn hs256_signed_with_the_public_key_is_rejected() {
        let f = fixture().await;
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(f.key.kid.clone());
        let x = URL_SAFE_NO_PAD.encode(&f.key.public_key);
        for secret in [f.key.public_key.clone(), x.into_bytes()] {
            let token =
                jsonwebtoken::encode(&header, &f.claims(), &EncodingKey::from_secret(&secret))
                    .unwrap();
            f.rejects(&token, "algorithm not allowed").await;
        }
    }

    #[tokio::test]
    async fn unknown_kid_and_missing_kid_are_rejected() {
        let f = fixture().await;
        let mut other = f.key.clone();
        other.kid = "gdk_unknown".into();
        f.rejects(&sign(&other, &f.claims(), None).unwrap(), "unknown key id")
            .await;
        // A key that is not ours, under our kid: the signature does not verify.
        let mut forged = f.key.clone();
        forged.private_key = vec![7u8; 32];
        f.rejects(&sign(&forged, &f.claims(), None).unwrap(), "bad signature")
            .await;
    }

    #[tokio::test]
    async fn wrong_issuer_audience_and_times_are_rejected() {
        let f = fixture().await;
        let now = Utc::now().timestamp();
        let cases: Vec<(AccessClaims, &str)> = vec![
            (
                AccessClaims {
                    iss: "https://evil.example".into(),
                    ..f.claims()
                },
                "wrong issuer",
            ),
            (
                AccessClaims {
                    aud: "another-api".into(),
                    ..f.claims()
                },
                "wrong audience",
            ),
            (
                AccessClaims {
                    exp: now - 120,
                    iat: now - 1000,
                    nbf: now - 1000,
                    ..f.claims()
                },
                "expired",
            ),
            (
                AccessClaims {
                    nbf: now + 300,
                    ..f.claims()
                },
                "not valid yet",
            ),
            (
                AccessClaims {
                    sub: TeamId::new().to_string(),
                    ..f.claims()
                },
                "subject is not a user",
            ),
        ];
        for (claims, what) in cases {
            f.rejects(&sign(&f.key, &claims, None).unwrap(), what).await;
        }
        // Within the leeway (30 s) an expired token still passes.
        let fresh_expired = AccessClaims {
            exp: now - 5,
            ..f.claims()
        };
        f.auth
            .verify_access_token(&sign(&f.key, &fresh_expired, None).unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_tampered_payload_or_a_token_of_another_type_is_rejected() {
        let f = fixture().await;
        let token = sign(&f.key, &f.claims(), None).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut evil = f.claims();
        evil.sub = UserId::new().to_string();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_value(&evil).unwrap()),
            parts[2]
        );
        f.rejects(&tampered, "bad signature").await;

        // An ID-token-shaped JWT (typ JWT) signed by the right key is no access token.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(f.key.kid.clone());
        let der = SigningKey::from_bytes(&f.key.private_key.clone().try_into().unwrap())
            .to_pkcs8_der()
            .unwrap();
        let id_token = jsonwebtoken::encode(
            &header,
            &f.claims(),
            &EncodingKey::from_ed_der(der.as_bytes()),
        )
        .unwrap();
        f.rejects(&id_token, "not an access token").await;
        f.rejects("not.a.jwt", "malformed").await;
    }

    #[tokio::test]
    async fn rotation_keeps_old_tokens_valid_and_publishes_both_keys() {
        let f = fixture().await;
        let old = f
            .auth
            .issue_access_token(f.user, None, None, None)
            .await
            .unwrap();
        let new_kid = f.auth.rotate_signing_key().await.unwrap();
        assert_ne!(new_kid, f.key.kid);
        let new = f
            .auth
            .issue_access_token(f.user, None, None, None)
            .await
            .unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new.token).unwrap().kid,
            Some(new_kid.clone())
        );
        f.auth.verify_access_token(&old.token).await.unwrap();
        f.auth.verify_access_token(&new.token).await.unwrap();

        let jwks = f.auth.jwks().await.unwrap();
        let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, [new_kid.as_str(), f.key.kid.as_str()]);
        let json = serde_json::to_value(&jwks).unwrap();
        assert_eq!(json["keys"][0]["kty"], "OKP");
        assert_eq!(json["keys"][0]["crv"], "Ed25519");
        assert_eq!(json["keys"][0]["use"], "sig");
        assert!(json["keys"][0].get("d").is_none(), "no private part");
        // The published key verifies the token with a generic JWT library.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(json["keys"][0].clone()).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["godel-api"]);
        jsonwebtoken::decode::<AccessClaims>(
            &new.token,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        )
        .unwrap();
    }

    #[tokio::test]
    async fn with_an_encryption_key_signing_keys_are_stored_sealed() {
        let f = fixture().await;
        let kek = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        let sealed = Auth::new(
            f.auth.db.clone(),
            None,
            TokenConfig {
                signing_key_encryption_key: Some(kek.into()),
                ..TokenConfig::default()
            },
        );
        let kid = sealed.rotate_signing_key().await.unwrap();
        let row = signing_key::Entity::find_by_id(kid)
            .one(f.auth.db.conn())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.private_key.len(), 1 + 24 + 32 + 16);
        assert!(!format!("{row:?}").contains("private_key"));
        let token = sealed
            .issue_access_token(f.user, None, None, None)
            .await
            .unwrap();
        // Verifying needs only the public key: any `Auth` on the database can.
        f.auth.verify_access_token(&token.token).await.unwrap();
        // Signing with the sealed key needs the encryption key.
        let err = f
            .auth
            .issue_access_token(f.user, None, None, None)
            .await
            .unwrap_err();
        assert_eq!(err.code, godel_error::ErrorCode::Internal);
        let wrong = Auth::new(
            f.auth.db.clone(),
            None,
            TokenConfig {
                signing_key_encryption_key: Some(
                    base64::engine::general_purpose::STANDARD
                        .encode([4u8; 32])
                        .into(),
                ),
                ..TokenConfig::default()
            },
        );
        wrong
            .issue_access_token(f.user, None, None, None)
            .await
            .unwrap_err();
    }

    #[tokio::test]
    async fn a_key_retired_longer_than_a_token_lifetime_stops_verifying() {
        let f = fixture().await;
        let old = sign(&f.key, &f.claims(), None).unwrap();
        f.auth.rotate_signing_key().await.unwrap();
        // Pretend the rotation happened an access-token lifetime (+ leeway) ago.
        let long_ago = now() - chrono(f.auth.tokens.access_ttl) - ChronoDuration::seconds(31);
        signing_key::Entity::update_many()
            .col_expr(
                signing_key::Column::RetiredAt,
                godel_store::sea_orm::sea_query::Expr::value(long_ago),
            )
            .filter(signing_key::Column::Kid.eq(f.key.kid.clone()))
            .exec(f.auth.db.conn())
            .await
            .unwrap();
        f.rejects(&old, "unknown key id").await;
        let kids: Vec<String> = f
            .auth
            .jwks()
            .await
            .unwrap()
            .keys
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert!(!kids.contains(&f.key.kid));
        // The next rotation deletes it.
        f.auth.rotate_signing_key().await.unwrap();
        assert!(
            signing_key::Entity::find_by_id(f.key.kid.clone())
                .one(f.auth.db.conn())
                .await
                .unwrap()
                .is_none()
        );
    }
}
