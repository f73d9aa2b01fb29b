//! The gRPC `AuthService` as other services and the gateway use it: the real
//! service started on port 0 (`godel_auth::start`), called over gRPC, with the
//! tokens it issues checked by `godel_identity::CallerVerifier` fetching its JWKS
//! over gRPC. Users are provisioned and signed in through the library (sign-in with
//! an identity provider has no RPC yet).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use godel_auth::{Auth, AuthConfig, BootstrapAdmin, Dependencies, TokenConfig};
use godel_bus::memory::MemoryBus;
use godel_identity::token::{self, AccessClaims};
use godel_identity::{
    AuthKeySource, CallerVerifier, Jwks, KeySource, KeySourceError, OrgRole, Permission, Principal,
    PrincipalKind, VerifierConfig, VerifyError, attach_token, forward_token,
};
use godel_proto::auth::v1 as pb;
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_proto::common::v1 as common;
use godel_runtime::{RunningService, ServerConfig};
use godel_store::DatabaseConfig;
use godel_store::sea_orm::ConnectionTrait;
use godel_store::sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use godel_test_utils::postgres::{DbKind as Kind, TestDb};
use godel_types::{TeamId, UserId};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};

use super::identity;

/// A running auth service, its bootstrap admin, and a library handle on its
/// database for what has no RPC (provisioning users, signing in, rotating keys).
struct Server {
    running: Option<RunningService>,
    stop: CancellationToken,
    auth: Auth,
    db: godel_store::Db,
    admin: BootstrapAdmin,
    config: AuthConfig,
    test_db: TestDb,
}

impl Server {
    async fn spawn(kind: Kind) -> Self {
        let test_db = TestDb::of(kind).await;
        let config = AuthConfig {
            server: ServerConfig::local(),
            database: DatabaseConfig {
                url: test_db.url.clone().into(),
                schema: test_db.schema.clone(),
                max_connections: 3,
                ..DatabaseConfig::default()
            },
            tokens: TokenConfig::default(),
            ..AuthConfig::default()
        };
        let admin = godel_auth::bootstrap(&config).await.unwrap().unwrap();
        let stop = CancellationToken::new();
        let running = godel_auth::start(
            config.clone(),
            Dependencies {
                bus: Arc::new(MemoryBus::default()),
            },
            stop.clone(),
        )
        .await
        .unwrap();
        let db = godel_store::connect(&DatabaseConfig {
            max_connections: 2,
            ..config.database.clone()
        })
        .await
        .unwrap();
        let auth = Auth::new(db.clone(), None, config.tokens.clone());
        Self {
            running: Some(running),
            stop,
            auth,
            db,
            admin,
            config,
            test_db,
        }
    }

    fn url(&self) -> String {
        let addr = self.running.as_ref().unwrap().grpc_addr();
        format!("http://{addr}")
    }

    async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::connect(self.url()).await.unwrap()
    }

    /// A verifier fetching the key set over gRPC, counting the fetches.
    fn verifier(&self, min_refetch: Duration) -> (CallerVerifier, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let source = Counting {
            inner: AuthKeySource::connect_lazy(&self.url()).unwrap(),
            fetches: fetches.clone(),
        };
        let config = VerifierConfig {
            jwks_min_refetch: min_refetch,
            ..VerifierConfig::default()
        };
        (CallerVerifier::new(config, Arc::new(source)), fetches)
    }

    /// A token for the bootstrap org-admin key.
    async fn admin_token(&self) -> String {
        self.key_token(&self.admin.api_key.secret).await
    }

    async fn key_token(&self, secret: &str) -> String {
        self.client()
            .await
            .authenticate(pb::AuthenticateRequest {
                credential: Some(pb::authenticate_request::Credential::ApiKey(
                    secret.to_owned(),
                )),
                team_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token
    }

    async fn create_team(&self, name: &str) -> TeamId {
        let team = self
            .client()
            .await
            .create_team(authed(
                pb::CreateTeamRequest {
                    name: name.into(),
                    display_name: name.into(),
                },
                &self.admin_token().await,
            ))
            .await
            .unwrap()
            .into_inner()
            .team
            .unwrap();
        team.id.parse().unwrap()
    }

    /// A user who is `role` in `team`, and an access token of theirs acting there.
    async fn member(&self, name: &str, team: TeamId, role: &str) -> (UserId, String) {
        let (user, _) = self.auth.provision_user(&identity(name)).await.unwrap();
        self.client()
            .await
            .add_member(authed(
                pb::AddMemberRequest {
                    team_id: team.to_string(),
                    user_id: user.id.to_string(),
                    roles: vec![role.into()],
                },
                &self.admin_token().await,
            ))
            .await
            .unwrap();
        let session = self.auth.start_session(user.id, Some(team)).await.unwrap();
        (user.id, session.access_token)
    }

    /// An API key of `team` holding `permissions`, created over gRPC by the admin.
    async fn api_key(&self, team: TeamId, permissions: &[Permission]) -> String {
        self.client()
            .await
            .create_api_key(authed(
                pb::CreateApiKeyRequest {
                    team_id: team.to_string(),
                    name: "machine".into(),
                    permissions: permissions.iter().map(|p| p.to_string()).collect(),
                    org_admin: false,
                    org_roles: Vec::new(),
                    expires_at: None,
                },
                &self.admin_token().await,
            ))
            .await
            .unwrap()
            .into_inner()
            .secret
    }

    /// The current signing key, read from the database (for forging tests).
    async fn signing_key(&self) -> (String, [u8; 32], [u8; 32]) {
        let rows = self
            .db
            .conn()
            .query_all(
                &Query::select()
                    .expr(Expr::col(Alias::new("kid")))
                    .expr(Expr::col(Alias::new("private_key")))
                    .expr(Expr::col(Alias::new("public_key")))
                    .from(Alias::new("signing_keys"))
                    .and_where(Expr::col(Alias::new("retired_at")).is_null())
                    .to_owned(),
            )
            .await
            .unwrap();
        let kid: String = rows[0].try_get("", "kid").unwrap();
        let seed: Vec<u8> = rows[0].try_get("", "private_key").unwrap();
        let public: Vec<u8> = rows[0].try_get("", "public_key").unwrap();
        (kid, seed.try_into().unwrap(), public.try_into().unwrap())
    }

    async fn finish(mut self) {
        self.stop.cancel();
        self.running.take().unwrap().wait().await.unwrap();
        self.db.close().await.unwrap();
        self.test_db.cleanup().await;
    }
}

struct Counting {
    inner: AuthKeySource,
    fetches: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl KeySource for Counting {
    async fn fetch(&self) -> Result<Jwks, KeySourceError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.inner.fetch().await
    }
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    attach_token(&mut request, token).unwrap();
    request
}

fn claims(sub: String, kind: PrincipalKind, team: Option<TeamId>) -> AccessClaims {
    let now = chrono::Utc::now().timestamp();
    AccessClaims {
        iss: "godel".into(),
        aud: "godel-api".into(),
        sub,
        kind,
        team: team.map(|t| t.to_string()),
        perms: vec!["tasks:read".into()],
        org: Vec::new(),
        sid: None,
        iat: now,
        nbf: now,
        exp: now + 300,
        jti: "test".into(),
    }
}

// ---------------------------------------------------------------------------------

pub(crate) async fn grpc_api_key_to_verified_caller(kind: Kind) {
    let s = Server::spawn(kind).await;
    let (verifier, fetches) = s.verifier(Duration::ZERO);

    // The bootstrap key: an org-admin token, verified against the JWKS from GetJwks.
    let admin = s
        .client()
        .await
        .authenticate(pb::AuthenticateRequest {
            credential: Some(pb::authenticate_request::Credential::ApiKey(
                s.admin.api_key.secret.clone(),
            )),
            team_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let caller = verifier.verify(&admin.access_token).await.unwrap();
    assert_eq!(caller.principal, Principal::ApiKey(s.admin.api_key.key.id));
    assert_eq!(caller.team, Some(s.admin.team.id));
    assert!(caller.is_org_admin());
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    let pb_caller = admin.caller.unwrap();
    assert_eq!(pb_caller.subject_kind, common::SubjectKind::ApiKey as i32);
    assert_eq!(pb_caller.roles, ["org-admin"]);
    assert_eq!(admin.permissions.len(), Permission::ALL.len());

    // A team key with two permissions: a token holding exactly those, in its team.
    let a = s.create_team("team-a").await;
    let b = s.create_team("team-b").await;
    let secret = s
        .api_key(a, &[Permission::TasksCreate, Permission::TasksRead])
        .await;
    let response = s
        .client()
        .await
        .authenticate(pb::AuthenticateRequest {
            credential: Some(pb::authenticate_request::Credential::ApiKey(secret.clone())),
            team_id: a.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.permissions, ["tasks:create", "tasks:read"]);
    let expires = response.expires_at.unwrap().seconds;
    let ttl = expires - chrono::Utc::now().timestamp();
    assert!(ttl > 0 && ttl <= 15 * 60, "short-lived: {ttl}s");

    let caller = verifier.verify(&response.access_token).await.unwrap();
    assert!(matches!(caller.principal, Principal::ApiKey(_)));
    assert_eq!(caller.team, Some(a));
    assert!(!caller.is_org_admin());
    caller.require(a, Permission::TasksCreate).unwrap();
    caller.require(a, Permission::TasksRead).unwrap();
    let denied = caller.require(a, Permission::TasksCancel).unwrap_err();
    assert_eq!(tonic::Status::from(denied).code(), Code::PermissionDenied);
    let denied = caller.require(b, Permission::TasksRead).unwrap_err();
    assert_eq!(tonic::Status::from(denied).code(), Code::PermissionDenied);
    // The key set was cached: no fetch per token.
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // A key acts only in its own team; wrong keys are unauthenticated.
    let status = s
        .client()
        .await
        .authenticate(pb::AuthenticateRequest {
            credential: Some(pb::authenticate_request::Credential::ApiKey(secret)),
            team_id: b.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = s
        .client()
        .await
        .authenticate(pb::AuthenticateRequest {
            credential: Some(pb::authenticate_request::Credential::ApiKey(format!(
                "{}x",
                s.admin.api_key.secret
            ))),
            team_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Authorize, asked about oneself with the key's token.
    let decision = s
        .client()
        .await
        .authorize(authed(
            pb::AuthorizeRequest {
                caller: Some(common::Caller {
                    subject_kind: common::SubjectKind::ApiKey as i32,
                    subject_id: caller.principal.to_string(),
                    team_id: a.to_string(),
                    roles: Vec::new(),
                }),
                permission: "tasks:create".into(),
                team_id: a.to_string(),
            },
            &response.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(decision.allowed, "{}", decision.reason);
    s.finish().await;
}

pub(crate) async fn grpc_a_member_of_team_b_is_denied_on_team_a(kind: Kind) {
    let s = Server::spawn(kind).await;
    let a = s.create_team("team-a").await;
    let b = s.create_team("team-b").await;
    let (alice, alice_token) = s.member("alice", a, "team-admin").await;
    let (bob, bob_token) = s.member("bob", b, "team-admin").await;
    let a_key = s.api_key(a, &[Permission::TasksRead]).await;
    let a_key_id = {
        let keys = s
            .client()
            .await
            .list_api_keys(authed(
                pb::ListApiKeysRequest {
                    team_id: a.to_string(),
                    page: None,
                    include_revoked: false,
                },
                &alice_token,
            ))
            .await
            .unwrap()
            .into_inner()
            .keys;
        keys.iter()
            .find(|k| k.name == "machine")
            .unwrap()
            .id
            .clone()
    };
    assert!(!a_key.is_empty());

    // Every team-scoped RPC, asked by bob (team-admin of B) about team A.
    let mut c = s.client().await;
    let t = &bob_token;
    let team = a.to_string();
    let results: Vec<(&str, tonic::Status)> = vec![
        (
            "GetTeam",
            c.get_team(authed(
                pb::GetTeamRequest {
                    team_id: team.clone(),
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "ListMembers",
            c.list_members(authed(
                pb::ListMembersRequest {
                    team_id: team.clone(),
                    page: None,
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "AddMember",
            c.add_member(authed(
                pb::AddMemberRequest {
                    team_id: team.clone(),
                    user_id: bob.to_string(),
                    roles: vec!["team-admin".into()],
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "RemoveMember",
            c.remove_member(authed(
                pb::RemoveMemberRequest {
                    team_id: team.clone(),
                    user_id: alice.to_string(),
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "CreateRole",
            c.create_role(authed(
                pb::CreateRoleRequest {
                    team_id: team.clone(),
                    name: "sneaky".into(),
                    permissions: vec!["tasks:read".into()],
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "ListRoles",
            c.list_roles(authed(
                pb::ListRolesRequest {
                    team_id: team.clone(),
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "CreateApiKey",
            c.create_api_key(authed(
                pb::CreateApiKeyRequest {
                    team_id: team.clone(),
                    name: "stolen".into(),
                    permissions: vec!["tasks:read".into()],
                    org_admin: false,
                    org_roles: Vec::new(),
                    expires_at: None,
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "ListApiKeys",
            c.list_api_keys(authed(
                pb::ListApiKeysRequest {
                    team_id: team.clone(),
                    page: None,
                    include_revoked: true,
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "RevokeApiKey",
            c.revoke_api_key(authed(
                pb::RevokeApiKeyRequest {
                    team_id: team.clone(),
                    key_id: a_key_id.clone(),
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "GetQuotas",
            c.get_quotas(authed(
                pb::GetQuotasRequest {
                    team_id: team.clone(),
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "SetQuotas",
            c.set_quotas(authed(
                pb::SetQuotasRequest {
                    quotas: Some(pb::Quotas {
                        team_id: team.clone(),
                        max_queued_tasks: Some(1),
                        ..Default::default()
                    }),
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "Authorize",
            c.authorize(authed(
                pb::AuthorizeRequest {
                    caller: Some(common::Caller {
                        subject_kind: common::SubjectKind::User as i32,
                        subject_id: alice.to_string(),
                        team_id: team.clone(),
                        roles: Vec::new(),
                    }),
                    permission: "tasks:read".into(),
                    team_id: team.clone(),
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "CreateTeam",
            c.create_team(authed(
                pb::CreateTeamRequest {
                    name: "bobs-own".into(),
                    display_name: String::new(),
                },
                t,
            ))
            .await
            .unwrap_err(),
        ),
        (
            "Authenticate(team A)",
            c.authenticate(pb::AuthenticateRequest {
                credential: Some(pb::authenticate_request::Credential::BearerToken(t.clone())),
                team_id: team.clone(),
            })
            .await
            .unwrap_err(),
        ),
    ];
    for (rpc, status) in results {
        assert_eq!(status.code(), Code::PermissionDenied, "{rpc}: {status:?}");
    }
    // Nothing changed in team A.
    let members = c
        .list_members(authed(
            pb::ListMembersRequest {
                team_id: team.clone(),
                page: None,
            },
            &alice_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .members;
    let ids: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(ids, [alice.to_string()]);
    let keys = c
        .list_api_keys(authed(
            pb::ListApiKeysRequest {
                team_id: team.clone(),
                page: None,
                include_revoked: true,
            },
            &alice_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(keys.iter().all(|k| k.revoked_at.is_none()));
    assert_eq!(keys.len(), 1);

    // Bob in his own team; his teams are his only.
    c.get_team(authed(
        pb::GetTeamRequest {
            team_id: b.to_string(),
        },
        &bob_token,
    ))
    .await
    .unwrap();
    let teams = c
        .list_teams(authed(pb::ListTeamsRequest { page: None }, &bob_token))
        .await
        .unwrap()
        .into_inner()
        .teams;
    let ids: Vec<&str> = teams.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [b.to_string()]);

    // No token, or garbage: unauthenticated.
    let status = c
        .get_team(Request::new(pb::GetTeamRequest {
            team_id: team.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = c
        .get_team(authed(
            pb::GetTeamRequest {
                team_id: team.clone(),
            },
            "x.y.z",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Bob, added to A, switches teams with Authenticate; removed again, his
    // still-unexpired token for A is refused: auth checks its own data afresh.
    c.add_member(authed(
        pb::AddMemberRequest {
            team_id: team.clone(),
            user_id: bob.to_string(),
            roles: vec!["viewer".into()],
        },
        &alice_token,
    ))
    .await
    .unwrap();
    let switched = c
        .authenticate(pb::AuthenticateRequest {
            credential: Some(pb::authenticate_request::Credential::BearerToken(
                bob_token.clone(),
            )),
            team_id: team.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(switched.permissions.contains(&"teams:read".to_owned()));
    assert!(!switched.permissions.contains(&"members:manage".to_owned()));
    assert_eq!(switched.caller.unwrap().roles, ["viewer"]);
    c.get_team(authed(
        pb::GetTeamRequest {
            team_id: team.clone(),
        },
        &switched.access_token,
    ))
    .await
    .unwrap();
    c.remove_member(authed(
        pb::RemoveMemberRequest {
            team_id: team.clone(),
            user_id: bob.to_string(),
        },
        &alice_token,
    ))
    .await
    .unwrap();
    let status = c
        .get_team(authed(
            pb::GetTeamRequest {
                team_id: team.clone(),
            },
            &switched.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    s.finish().await;
}

pub(crate) async fn grpc_bad_tokens_are_rejected_by_the_verifier(kind: Kind) {
    let s = Server::spawn(kind).await;
    let (verifier, _) = s.verifier(Duration::ZERO);
    let (kid, seed, public) = s.signing_key().await;
    let team = s.admin.team.id;
    let user = s.admin.user.id.to_string();
    let good = claims(user.clone(), PrincipalKind::User, Some(team));

    // Control: the real key signs a token the verifier and the service accept.
    let valid = token::sign(&kid, &seed, &good).unwrap();
    verifier.verify(&valid).await.unwrap();

    let now = chrono::Utc::now().timestamp();
    let mut other_seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut other_seed);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    let forged_header = |alg: &str| {
        URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": kid}))
                .unwrap(),
        )
    };
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(
            &header,
            &good,
            &jsonwebtoken::EncodingKey::from_secret(&public),
        )
        .unwrap()
    };
    let cases: Vec<(&str, String, VerifyError)> = vec![
        (
            "expired beyond the leeway",
            token::sign(
                &kid,
                &seed,
                &AccessClaims {
                    iat: now - 1000,
                    nbf: now - 1000,
                    exp: now - 120,
                    ..good.clone()
                },
            )
            .unwrap(),
            VerifyError::Expired,
        ),
        (
            "signed by another key under the real kid",
            token::sign(&kid, &other_seed, &good).unwrap(),
            VerifyError::BadSignature,
        ),
        (
            "unknown kid",
            token::sign("gdk_unknown", &other_seed, &good).unwrap(),
            VerifyError::UnknownKeyId("gdk_unknown".into()),
        ),
        (
            "alg none",
            format!("{}.{payload}.", forged_header("none")),
            VerifyError::MalformedHeader,
        ),
        (
            "alg NONE",
            format!("{}.{payload}.", forged_header("NONE")),
            VerifyError::MalformedHeader,
        ),
        (
            "HS256 keyed with the public key",
            hs256,
            VerifyError::AlgorithmNotAllowed,
        ),
        (
            "tampered payload",
            {
                let parts: Vec<&str> = valid.split('.').collect();
                let evil = AccessClaims {
                    perms: vec!["keys:manage".into()],
                    ..good.clone()
                };
                let evil = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).unwrap());
                format!("{}.{evil}.{}", parts[0], parts[2])
            },
            VerifyError::BadSignature,
        ),
        (
            "a key's id claimed as a user",
            token::sign(
                &kid,
                &seed,
                &claims(
                    s.admin.api_key.key.id.to_string(),
                    PrincipalKind::User,
                    Some(team),
                ),
            )
            .unwrap(),
            VerifyError::BadSubject(PrincipalKind::User),
        ),
        (
            "wrong audience",
            token::sign(
                &kid,
                &seed,
                &AccessClaims {
                    aud: "another-api".into(),
                    ..good.clone()
                },
            )
            .unwrap(),
            VerifyError::WrongAudience,
        ),
    ];
    let mut c = s.client().await;
    for (what, token, expected) in cases {
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            expected,
            "{what}"
        );
        let status = c
            .get_team(authed(
                pb::GetTeamRequest {
                    team_id: team.to_string(),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    s.finish().await;
}

pub(crate) async fn grpc_key_rotation_keeps_old_tokens_and_refetches_for_new_kids(kind: Kind) {
    let s = Server::spawn(kind).await;
    let (verifier, fetches) = s.verifier(Duration::ZERO);
    // A verifier that may refetch at most once an hour.
    let (patient, patient_fetches) = s.verifier(Duration::from_secs(3600));
    let (old_kid, _, _) = s.signing_key().await;
    let old = s.admin_token().await;
    verifier.verify(&old).await.unwrap();
    patient.verify(&old).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert_eq!(patient_fetches.load(Ordering::SeqCst), 1);

    let new_kid = s.auth.rotate_signing_key().await.unwrap();
    assert_ne!(new_kid, old_kid);
    let new = s.admin_token().await;
    assert_eq!(
        jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
        Some(new_kid.as_str())
    );
    // The new kid is not cached: the verifier fetches the key set again…
    let caller = verifier.verify(&new).await.unwrap();
    assert!(caller.has_org_role(OrgRole::Admin));
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // …and the old token, signed by the retired key, verifies until it expires.
    verifier.verify(&old).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // The rate limit: within its interval an unknown kid is refused, not fetched.
    assert_eq!(
        patient.verify(&new).await.unwrap_err(),
        VerifyError::UnknownKeyId(new_kid.clone())
    );
    assert_eq!(patient_fetches.load(Ordering::SeqCst), 1);
    patient.verify(&old).await.unwrap();

    // The service itself takes both tokens too.
    let mut c = s.client().await;
    for token in [&old, &new] {
        c.get_team(authed(
            pb::GetTeamRequest {
                team_id: s.admin.team.id.to_string(),
            },
            token,
        ))
        .await
        .unwrap();
    }
    let jwks = c
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);
    s.finish().await;
}

pub(crate) async fn grpc_quotas_read_as_the_scheduler_would(kind: Kind) {
    let s = Server::spawn(kind).await;
    let (verifier, _) = s.verifier(Duration::ZERO);
    let a = s.create_team("team-a").await;
    let b = s.create_team("team-b").await;
    let mut c = s.client().await;
    c.set_quotas(authed(
        pb::SetQuotasRequest {
            quotas: Some(pb::Quotas {
                team_id: a.to_string(),
                max_concurrent_sessions: Some(4),
                max_queued_tasks: Some(100),
                rate_limit_per_minute: None,
                monthly_budget_micro_usd: Some(5_000_000),
            }),
        },
        &s.admin_token().await,
    ))
    .await
    .unwrap();

    // A CI key that may only submit tasks to team A calls the scheduler's Submit;
    // the scheduler verifies the caller, checks tasks:create, then reads team A's
    // quotas from auth with the caller's own token.
    let submitter = s
        .key_token(&s.api_key(a, &[Permission::TasksCreate]).await)
        .await;
    let submit = authed((), &submitter);
    let caller = verifier.verify_request(&submit).await.unwrap();
    caller.require(a, Permission::TasksCreate).unwrap();
    let mut read = Request::new(pb::GetQuotasRequest {
        team_id: a.to_string(),
    });
    forward_token(&submit, &mut read);
    let quotas = c
        .get_quotas(read)
        .await
        .unwrap()
        .into_inner()
        .quotas
        .unwrap();
    assert_eq!(quotas.team_id, a.to_string());
    assert_eq!(quotas.max_concurrent_sessions, Some(4));
    assert_eq!(quotas.max_queued_tasks, Some(100));
    assert_eq!(quotas.rate_limit_per_minute, None);
    assert_eq!(quotas.monthly_budget_micro_usd, Some(5_000_000));

    // The same caller cannot read another team's, nor change its own.
    let status = c
        .get_quotas(authed(
            pb::GetQuotasRequest {
                team_id: b.to_string(),
            },
            &submitter,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = c
        .set_quotas(authed(
            pb::SetQuotasRequest {
                quotas: Some(pb::Quotas {
                    team_id: a.to_string(),
                    max_queued_tasks: Some(1_000_000),
                    ..Default::default()
                }),
            },
            &submitter,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // A key that can only read the audit log has no business with quotas.
    let auditor = s
        .key_token(&s.api_key(a, &[Permission::AuditRead]).await)
        .await;
    let status = c
        .get_quotas(authed(
            pb::GetQuotasRequest {
                team_id: a.to_string(),
            },
            &auditor,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    s.finish().await;
}

pub(crate) async fn grpc_sessions_refresh_and_revoke(kind: Kind) {
    let s = Server::spawn(kind).await;
    let a = s.create_team("team-a").await;
    let (alice, _) = s.member("alice", a, "developer").await;
    let session = s.auth.start_session(alice, Some(a)).await.unwrap();
    let mut c = s.client().await;
    let renewed = c
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert_ne!(renewed.refresh_token, session.refresh_token);
    let (verifier, _) = s.verifier(Duration::ZERO);
    let caller = verifier.verify(&renewed.access_token).await.unwrap();
    assert_eq!(caller.principal, Principal::User(alice));
    caller.require(a, Permission::TasksCreate).unwrap();
    assert!(caller.require(a, Permission::KeysManage).is_err());

    c.revoke_token(pb::RevokeTokenRequest {
        refresh_token: renewed.refresh_token.clone(),
    })
    .await
    .unwrap();
    let status = c
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: renewed.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // The org-admin user, signed in to no team, picks one: every permission there,
    // by organisation role, in a token no longer-lived than the one presented.
    let admin = s.auth.start_session(s.admin.user.id, None).await.unwrap();
    let picked = c
        .authenticate(pb::AuthenticateRequest {
            credential: Some(pb::authenticate_request::Credential::BearerToken(
                admin.access_token.clone(),
            )),
            team_id: a.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(picked.caller.as_ref().unwrap().roles, ["org-admin"]);
    assert_eq!(picked.caller.as_ref().unwrap().team_id, a.to_string());
    assert_eq!(picked.permissions.len(), Permission::ALL.len());
    assert!(picked.expires_at.unwrap().seconds <= admin.access_expires_at.timestamp());
    let caller = verifier.verify(&picked.access_token).await.unwrap();
    assert_eq!(caller.team, Some(a));
    assert!(caller.is_org_admin());
    // A user who is no member of a team cannot pick it.
    let (carol, _) = s.auth.provision_user(&identity("carol")).await.unwrap();
    let carol = s.auth.start_session(carol.id, None).await.unwrap();
    let status = c
        .authenticate(pb::AuthenticateRequest {
            credential: Some(pb::authenticate_request::Credential::BearerToken(
                carol.access_token,
            )),
            team_id: a.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // Configured lifetimes are those of the running service.
    assert_eq!(s.config.tokens.access_ttl, Duration::from_secs(15 * 60));
    s.finish().await;
}

/// Organisation roles besides `org-admin`: an org-admin makes a person an
/// `org-auditor` (audit:read in every team, members or not) and creates an
/// `audit-writer` service key (no team permission at all); both reach the tokens
/// other services verify, and nobody else can grant them.
pub(crate) async fn grpc_org_roles_reach_tokens(kind: Kind) {
    let s = Server::spawn(kind).await;
    let (verifier, _) = s.verifier(Duration::ZERO);
    let admin = s.admin_token().await;
    let a = s.create_team("team-a").await;
    let b = s.create_team("team-b").await;
    let (reviewer, _) = s.member("reviewer", a, "viewer").await;
    let (_, developer) = s.member("developer", a, "developer").await;

    let server = &s;
    let set = |user: UserId, roles: &[&str], token: &str| {
        let request = authed(
            pb::SetOrgRolesRequest {
                user_id: user.to_string(),
                org_roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            },
            token,
        );
        async move { server.client().await.set_org_roles(request).await }
    };
    // Only an org-admin sets them; unknown names and service roles are refused.
    let err = set(reviewer, &["org-auditor"], &developer)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = set(reviewer, &["org-overlord"], &admin).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("org-overlord"), "{err:?}");
    let err = set(reviewer, &["audit-writer"], &admin).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let user = set(reviewer, &["org-auditor"], &admin)
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.org_roles, ["org-auditor"]);
    assert!(!user.org_admin);

    // The reviewer's token, in team B where they are no member: audit:read there
    // through the organisation role, and nothing else.
    let session = s.auth.start_session(reviewer, None).await.unwrap();
    let in_b = s
        .client()
        .await
        .authenticate(pb::AuthenticateRequest {
            credential: Some(pb::authenticate_request::Credential::BearerToken(
                session.access_token.clone(),
            )),
            team_id: b.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let caller = verifier.verify(&in_b.access_token).await.unwrap();
    assert_eq!(caller.org_roles, [OrgRole::Auditor]);
    assert!(caller.holds(b, Permission::AuditRead));
    assert!(caller.holds(a, Permission::AuditRead));
    assert!(!caller.holds(b, Permission::TasksRead));
    assert!(
        in_b.caller
            .unwrap()
            .roles
            .contains(&"org-auditor".to_owned())
    );
    // A fresh sign-in carries the role too.
    let caller = verifier.verify(&session.access_token).await.unwrap();
    assert_eq!(caller.org_roles, [OrgRole::Auditor]);

    // Withdrawn: the next token no longer has it, and team B refuses them.
    set(reviewer, &[], &admin).await.unwrap();
    let err = s
        .client()
        .await
        .authenticate(pb::AuthenticateRequest {
            credential: Some(pb::authenticate_request::Credential::BearerToken(
                session.access_token.clone(),
            )),
            team_id: b.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // The gateway's audit credential: an API key with only `audit-writer`.
    let create = |roles: &[&str], token: &str| {
        let request = authed(
            pb::CreateApiKeyRequest {
                team_id: a.to_string(),
                name: "gateway audit".into(),
                org_roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                ..pb::CreateApiKeyRequest::default()
            },
            token,
        );
        async move { server.client().await.create_api_key(request).await }
    };
    let team_admin = s.member("lead", a, "team-admin").await.1;
    let err = create(&["audit-writer"], &team_admin).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let created = create(&["audit-writer"], &admin)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.key.unwrap().org_roles, ["audit-writer"]);
    let token = s.key_token(&created.secret).await;
    let caller = verifier.verify(&token).await.unwrap();
    assert_eq!(caller.org_roles, [OrgRole::AuditWriter]);
    assert!(caller.permissions.is_empty());
    assert!(!caller.holds(a, Permission::AuditRead));
    s.finish().await;
}
