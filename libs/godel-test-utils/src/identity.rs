//! Access tokens for tests of services that verify their callers: a [`TestIssuer`]
//! holds an Ed25519 signing key, hands out a [`CallerVerifier`] that trusts it (the
//! same verifier a service builds against the auth service, with the key set given
//! instead of fetched) and signs tokens for whichever caller a test needs.

use std::sync::Arc;

use godel_identity::token::{self, AccessClaims};
use godel_identity::{
    BearerInterceptor, CallerVerifier, Jwk, Jwks, OrgRole, Permission, PermissionSet,
    PrincipalKind, VerifierConfig,
};
use godel_types::{TeamId, UserId};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A gRPC channel that sends one access token with every call: any generated
/// client takes it (`XServiceClient::new(authed(url, &token).await)`).
pub type Authed = InterceptedService<Channel, BearerInterceptor>;

/// Connects to `url` (`http://host:port`) sending `token`.
pub async fn authed(url: &str, token: &str) -> Authed {
    let channel = Channel::from_shared(url.to_owned())
        .expect("a valid URL")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    InterceptedService::new(
        channel,
        BearerInterceptor::new(token).expect("an ASCII token"),
    )
}

/// Signs access tokens the way the auth service does, with a key of its own.
pub struct TestIssuer {
    kid: String,
    seed: [u8; 32],
}

impl Default for TestIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TestIssuer {
    pub fn new() -> Self {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
        Self {
            kid: crate::unique_name("kid"),
            seed,
        }
    }

    /// The issuer's public key set.
    pub fn jwks(&self) -> Jwks {
        let public = ed25519_dalek::SigningKey::from_bytes(&self.seed)
            .verifying_key()
            .to_bytes();
        Jwks {
            keys: vec![Jwk::ed25519(self.kid.clone(), &public)],
        }
    }

    /// A verifier trusting this issuer, with the default token rules.
    pub fn verifier(&self) -> CallerVerifier {
        CallerVerifier::new(VerifierConfig::default(), Arc::new(self.jwks()))
    }

    /// A token for a new user acting in `team` with `permissions` there.
    pub fn member(&self, team: TeamId, permissions: &[Permission]) -> String {
        self.sign(
            UserId::new(),
            Some(team),
            permissions.iter().copied().collect(),
            &[],
        )
    }

    /// A token for a new user holding every permission in `team`.
    pub fn team_admin(&self, team: TeamId) -> String {
        self.member(team, Permission::ALL)
    }

    /// A token for a new user holding `roles` across the organisation, acting in no
    /// team.
    pub fn org(&self, roles: &[OrgRole]) -> String {
        self.sign(UserId::new(), None, PermissionSet::EMPTY, roles)
    }

    /// A token for `user` with exactly these grants.
    pub fn sign(
        &self,
        user: UserId,
        team: Option<TeamId>,
        permissions: PermissionSet,
        roles: &[OrgRole],
    ) -> String {
        let now = chrono::Utc::now().timestamp();
        let defaults = VerifierConfig::default();
        let claims = AccessClaims {
            iss: defaults.issuer,
            aud: defaults.audience,
            sub: user.to_string(),
            kind: PrincipalKind::User,
            team: team.map(|t| t.to_string()),
            perms: Vec::new(),
            org: Vec::new(),
            sid: None,
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: crate::unique_name("jti"),
        }
        .with_grants(permissions, roles);
        token::sign(&self.kid, &self.seed, &claims).expect("signing a test token")
    }
}
