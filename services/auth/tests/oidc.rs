//! Single sign-on against a real OpenID provider: npm `oidc-provider` (installed by
//! `scripts/oidc-provider.sh`, found through `OIDC_PROVIDER_DIR`) started by each
//! test through `godel_test_utils::oidc`, and the real auth service on port 0, called
//! over gRPC. The browser is played by an HTTP client with a cookie jar going through
//! the provider's development login and consent forms.
//!
//! Without node or the package the tests skip with the reason, except under
//! `CI=true`, where they fail.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use godel_auth::{
    AuthConfig, BootstrapAdmin, Dependencies, GroupMapping, OidcConfig, ProviderConfig,
};
use godel_bus::memory::MemoryBus;
use godel_proto::auth::v1 as pb;
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_proto::common::v1 as common;
use godel_runtime::{RunningService, ServerConfig};
use godel_store::DatabaseConfig;
use godel_store::sea_orm::ConnectionTrait;
use godel_store::sea_orm::sea_query::{Alias, Query};
use godel_test_utils::oidc::{Browser, ClientSetup, Provider, provider_dir};
use godel_test_utils::postgres::{DbKind as Kind, TestDb};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};

const CLIENT_ID: &str = "godel-test";
const CLIENT_SECRET: &str = "a client secret with spaces & symbols";
const REDIRECT_URI: &str = "http://127.0.0.1:9/auth/callback";

/// Starts the test provider with the one client `variant` describes.
fn start_idp(package: &Path, variant: Variant) -> Provider {
    Provider::start(
        package,
        &ClientSetup {
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
            redirect_uris: vec![
                REDIRECT_URI.to_owned(),
                "http://127.0.0.1:10/auth/callback".to_owned(),
            ],
            token_endpoint_auth_method: match variant.client_auth {
                godel_auth::ClientAuth::ClientSecretPost => "client_secret_post",
                _ => "client_secret_basic",
            }
            .to_owned(),
            claims_in_id_token: variant.claims_in_id_token,
            id_token_alg: variant.id_token_alg.to_owned(),
        },
    )
}

/// The real auth service configured with the test provider.
struct Server {
    running: Option<RunningService>,
    stop: CancellationToken,
    admin: BootstrapAdmin,
    db: godel_store::Db,
    idp: Provider,
    test_db: TestDb,
}

impl Server {
    /// Starts the provider and the service; the mappings name teams `core` (by
    /// name) and `ops` (by id), created here first.
    async fn spawn(kind: Kind, package: &Path) -> (Self, TeamIds) {
        let variant = Variant::of(kind);
        let idp = start_idp(package, variant);
        let test_db = TestDb::of(kind).await;
        let mut config = AuthConfig {
            server: ServerConfig::local(),
            database: DatabaseConfig {
                url: test_db.url.clone().into(),
                schema: test_db.schema.clone(),
                max_connections: 3,
                ..DatabaseConfig::default()
            },
            ..AuthConfig::default()
        };
        let admin = godel_auth::bootstrap(&config).await.unwrap().unwrap();
        let db = godel_store::connect(&DatabaseConfig {
            max_connections: 2,
            ..config.database.clone()
        })
        .await
        .unwrap();
        let auth = godel_auth::Auth::new(db.clone(), None, config.tokens.clone());
        let actor = godel_auth::Principal::User(admin.user.id);
        let core = auth.create_team(actor, "core", "Core").await.unwrap().id;
        let ops = auth.create_team(actor, "ops", "Ops").await.unwrap().id;
        let mapping = |group: &str, team: Option<String>, role: Option<&str>, org: Option<&str>| {
            GroupMapping {
                group: group.to_owned(),
                team,
                role: role.map(str::to_owned),
                org_role: org.map(str::to_owned),
            }
        };
        config.oidc = OidcConfig {
            providers: vec![ProviderConfig {
                name: "test".to_owned(),
                display_name: "Test IdP".to_owned(),
                issuer: idp.issuer.clone(),
                client_id: CLIENT_ID.to_owned(),
                client_secret: Some(CLIENT_SECRET.to_owned().into()),
                client_auth: variant.client_auth,
                scopes: vec!["email".into(), "profile".into(), "groups".into()],
                algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
                groups_claim: "groups".to_owned(),
                leeway: std::time::Duration::from_secs(30),
                redirect_uris: vec![
                    REDIRECT_URI.to_owned(),
                    "http://127.0.0.1/auth/callback".into(),
                ],
                group_mappings: vec![
                    mapping("eng", Some("core".into()), Some("developer"), None),
                    mapping("ops", Some(ops.to_string()), Some("viewer"), None),
                    mapping("eng", Some("ghost".into()), Some("developer"), None),
                    mapping("admins", None, None, Some("org-admin")),
                    mapping("auditors", None, None, Some("org-auditor")),
                ],
            }],
            ..OidcConfig::default()
        };
        let stop = CancellationToken::new();
        let running = godel_auth::start(
            config,
            Dependencies {
                bus: Arc::new(MemoryBus::default()),
            },
            stop.clone(),
        )
        .await
        .unwrap();
        let server = Self {
            running: Some(running),
            stop,
            admin,
            db,
            idp,
            test_db,
        };
        (server, TeamIds { core, ops })
    }

    async fn client(&self) -> AuthServiceClient<Channel> {
        let addr = self.running.as_ref().unwrap().grpc_addr();
        AuthServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
    }

    async fn admin_token(&self) -> String {
        self.client()
            .await
            .authenticate(pb::AuthenticateRequest {
                credential: Some(pb::authenticate_request::Credential::ApiKey(
                    self.admin.api_key.secret.clone(),
                )),
                team_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token
    }

    async fn begin(&self, redirect_uri: &str) -> pb::BeginLoginResponse {
        self.client()
            .await
            .begin_login(pb::BeginLoginRequest {
                provider: "test".into(),
                redirect_uri: redirect_uri.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// A whole sign-in of `login`: BeginLogin, the browser, CompleteLogin.
    async fn sign_in(&self, login: &str) -> pb::CompleteLoginResponse {
        let begun = self.begin(REDIRECT_URI).await;
        let back = browser(&begun.authorization_url, login, REDIRECT_URI).await;
        assert_eq!(back["state"], begun.state);
        self.client()
            .await
            .complete_login(complete(&back, REDIRECT_URI))
            .await
            .unwrap()
            .into_inner()
    }

    async fn finish(mut self) {
        self.stop.cancel();
        self.running.take().unwrap().wait().await.unwrap();
        self.db.close().await.unwrap();
        self.test_db.cleanup().await;
    }
}

/// How the provider is set up. Each backend's run takes one of two shapes
/// providers come in, so both are covered: client authentication by HTTP Basic,
/// RS256 ID tokens and the profile and groups only at the userinfo endpoint
/// (SQLite), or client authentication in the form body, ES256 and everything in
/// the ID token (PostgreSQL).
#[derive(Debug, Clone, Copy)]
struct Variant {
    client_auth: godel_auth::ClientAuth,
    claims_in_id_token: bool,
    id_token_alg: &'static str,
}

impl Variant {
    fn of(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite => Self {
                client_auth: godel_auth::ClientAuth::ClientSecretBasic,
                claims_in_id_token: false,
                id_token_alg: "RS256",
            },
            _ => Self {
                client_auth: godel_auth::ClientAuth::ClientSecretPost,
                claims_in_id_token: true,
                id_token_alg: "ES256",
            },
        }
    }
}

struct TeamIds {
    core: godel_types::TeamId,
    ops: godel_types::TeamId,
}

fn complete(back: &BTreeMap<String, String>, redirect_uri: &str) -> pb::CompleteLoginRequest {
    pb::CompleteLoginRequest {
        state: back["state"].clone(),
        code: back["code"].clone(),
        redirect_uri: redirect_uri.into(),
        issuer: back.get("iss").cloned().unwrap_or_default(),
    }
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    godel_identity::attach_token(&mut request, token).unwrap();
    request
}

/// Plays the browser: follows redirects from `url` keeping the provider's
/// cookies, signs in as `login` on the development login form, consents, and
/// stops at the redirect to `redirect_uri`. Returns that redirect's query.
async fn browser(url: &str, login: &str, redirect_uri: &str) -> BTreeMap<String, String> {
    Browser::new()
        .sign_in(url, login, |target| {
            target.as_str().starts_with(redirect_uri)
        })
        .await
        .query
}

async fn authorize(
    s: &Server,
    token: &str,
    user: &str,
    team: godel_types::TeamId,
    permission: &str,
) -> bool {
    s.client()
        .await
        .authorize(authed(
            pb::AuthorizeRequest {
                caller: Some(common::Caller {
                    subject_kind: common::SubjectKind::User.into(),
                    subject_id: user.to_owned(),
                    team_id: String::new(),
                    roles: Vec::new(),
                }),
                permission: permission.into(),
                team_id: team.to_string(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .allowed
}

async fn roles_in(s: &Server, team: godel_types::TeamId, user: &str) -> Option<Vec<String>> {
    let token = s.admin_token().await;
    s.client()
        .await
        .list_members(authed(
            pb::ListMembersRequest {
                team_id: team.to_string(),
                page: None,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .members
        .into_iter()
        .find(|m| m.user_id == user)
        .map(|m| m.roles)
}

async fn sso_first_login_provisions_maps_groups_and_authenticates(kind: Kind) {
    let Some(package) = provider_dir() else {
        return;
    };
    let (s, teams) = Server::spawn(kind, &package).await;
    s.idp.accounts(serde_json::json!({
        "alice": {"email": "alice@example.com", "name": "Alice", "groups": ["eng", "ops", "unmapped"]},
        "bob": {"email": "bob@example.com", "name": "Bob", "groups": ["admins", "auditors"]},
    }));

    let listed = s
        .client()
        .await
        .list_identity_providers(pb::ListIdentityProvidersRequest {})
        .await
        .unwrap()
        .into_inner()
        .providers;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].display_name.as_str()),
        ("test", "Test IdP")
    );
    assert_eq!(listed[0].issuer, s.idp.issuer);

    // First sign-in: the user is created from the ID token's claims.
    let first = s.sign_in("alice").await;
    assert!(first.created);
    assert_eq!(first.provider, "test");
    let alice = first.user.clone().unwrap();
    assert_eq!(
        (alice.issuer.as_str(), alice.subject.as_str()),
        (s.idp.issuer.as_str(), "alice")
    );
    assert_eq!(
        (alice.email.as_str(), alice.display_name.as_str()),
        ("alice@example.com", "Alice")
    );
    assert!(!alice.org_admin);
    let mut team_names: Vec<&str> = first.teams.iter().map(|t| t.name.as_str()).collect();
    team_names.sort();
    assert_eq!(
        team_names,
        ["core", "ops"],
        "the `ghost` team mapping is skipped"
    );
    assert_eq!(
        roles_in(&s, teams.core, &alice.id).await.unwrap(),
        ["developer"]
    );
    assert_eq!(
        roles_in(&s, teams.ops, &alice.id).await.unwrap(),
        ["viewer"]
    );

    // The Godel tokens work: an authenticated call, a team-scoped token, a refresh.
    let tokens = first.tokens.clone().unwrap();
    assert!(
        authorize(
            &s,
            &tokens.access_token,
            &alice.id,
            teams.core,
            "tasks:create"
        )
        .await
    );
    assert!(
        !authorize(
            &s,
            &tokens.access_token,
            &alice.id,
            teams.ops,
            "tasks:create"
        )
        .await
    );
    assert!(authorize(&s, &tokens.access_token, &alice.id, teams.ops, "tasks:read").await);
    let scoped = s
        .client()
        .await
        .authenticate(pb::AuthenticateRequest {
            credential: Some(pb::authenticate_request::Credential::BearerToken(
                tokens.access_token.clone(),
            )),
            team_id: teams.core.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(scoped.permissions.contains(&"tasks:create".to_owned()));
    assert_eq!(scoped.caller.unwrap().roles, ["developer"]);
    let mut c = s.client().await;
    let refreshed = c
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    // Replaying the used refresh token revokes the whole sign-in session.
    for token in [&tokens.refresh_token, &refreshed.refresh_token] {
        let status = c
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }

    // Organisation groups grant org-admin and org-auditor, and a later sign-in
    // without them takes them away.
    let bob = s.sign_in("bob").await;
    assert!(bob.user.as_ref().unwrap().org_admin);
    assert_eq!(
        bob.user.as_ref().unwrap().org_roles,
        ["org-admin", "org-auditor"]
    );
    assert!(bob.teams.is_empty());
    s.idp.accounts(serde_json::json!({
        "alice": {"email": "alice@corp.example", "name": "Alice A.", "groups": ["ops"]},
        "bob": {"email": "bob@example.com", "name": "Bob", "groups": []},
    }));
    let bob_again = s.sign_in("bob").await;
    assert!(!bob_again.created);
    assert!(!bob_again.user.as_ref().unwrap().org_admin);
    assert!(bob_again.user.unwrap().org_roles.is_empty());

    // An admin adds a role by hand; the provider's mappings never touch it.
    let admin = s.admin_token().await;
    s.client()
        .await
        .add_member(authed(
            pb::AddMemberRequest {
                team_id: teams.ops.to_string(),
                user_id: alice.id.clone(),
                roles: vec!["viewer".into(), "auditor".into()],
            },
            &admin,
        ))
        .await
        .unwrap();

    // Second sign-in with other groups: `eng` is gone, so is the core membership
    // it granted; the profile follows the claims.
    let second = s.sign_in("alice").await;
    assert!(!second.created);
    let again = second.user.unwrap();
    assert_eq!(again.id, alice.id, "the same (iss, sub) is the same user");
    assert_eq!(
        (again.email.as_str(), again.display_name.as_str()),
        ("alice@corp.example", "Alice A.")
    );
    assert_eq!(roles_in(&s, teams.core, &alice.id).await, None);
    assert_eq!(
        roles_in(&s, teams.ops, &alice.id).await.unwrap(),
        ["auditor", "viewer"]
    );
    let token = second.tokens.unwrap().access_token;
    assert!(!authorize(&s, &token, &alice.id, teams.core, "tasks:read").await);

    // Without `ops`, the mapped viewer role goes and the hand-given auditor stays.
    s.idp.accounts(serde_json::json!({
        "alice": {"email": "alice@corp.example", "name": "Alice A.", "groups": []},
    }));
    let third = s.sign_in("alice").await;
    assert_eq!(third.teams.len(), 1);
    assert_eq!(
        roles_in(&s, teams.ops, &alice.id).await.unwrap(),
        ["auditor"]
    );
    s.finish().await;
}

async fn sso_refuses_bad_state_reuse_nonce_redirect_and_pkce(kind: Kind) {
    let Some(package) = provider_dir() else {
        return;
    };
    let (s, _) = Server::spawn(kind, &package).await;
    s.idp.accounts(serde_json::json!({
        "carol": {"email": "carol@example.com", "name": "Carol", "groups": []},
    }));
    let mut c = s.client().await;
    let refused = |status: tonic::Status, what: &str| {
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        status.message().to_owned()
    };

    // A redirect URI the provider settings do not allow, and an unknown provider.
    let status = c
        .begin_login(pb::BeginLoginRequest {
            provider: "test".into(),
            redirect_uri: "https://evil.example/callback".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = c
        .begin_login(pb::BeginLoginRequest {
            provider: "nope".into(),
            redirect_uri: REDIRECT_URI.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // A wrong state, then the right one, then the right one again.
    let begun = s.begin(REDIRECT_URI).await;
    let back = browser(&begun.authorization_url, "carol", REDIRECT_URI).await;
    let mut wrong = complete(&back, REDIRECT_URI);
    wrong.state = "not-the-state".into();
    refused(c.complete_login(wrong).await.unwrap_err(), "wrong state");
    c.complete_login(complete(&back, REDIRECT_URI))
        .await
        .unwrap();
    let message = refused(
        c.complete_login(complete(&back, REDIRECT_URI))
            .await
            .unwrap_err(),
        "reused state",
    );
    assert!(message.contains("already used"), "{message}");

    // CompleteLogin with another redirect URI than BeginLogin's; the state is
    // spent by the attempt.
    let other = "http://127.0.0.1:10/auth/callback";
    let begun = s.begin(other).await;
    let back = browser(&begun.authorization_url, "carol", other).await;
    let message = refused(
        c.complete_login(complete(&back, REDIRECT_URI))
            .await
            .unwrap_err(),
        "wrong redirect URI",
    );
    assert!(message.contains("redirect URI"), "{message}");
    refused(
        c.complete_login(complete(&back, other)).await.unwrap_err(),
        "state spent by a failed attempt",
    );

    // A code obtained with another nonce (an injected code) fails the nonce check.
    let begun = s.begin(REDIRECT_URI).await;
    let mut url = reqwest::Url::parse(&begun.authorization_url).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "nonce" {
                (k, "attacker-nonce".into())
            } else {
                (k, v)
            }
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let back = browser(url.as_str(), "carol", REDIRECT_URI).await;
    let message = refused(
        c.complete_login(complete(&back, REDIRECT_URI))
            .await
            .unwrap_err(),
        "wrong nonce",
    );
    assert!(message.contains("nonce"), "{message}");

    // A code bound to another PKCE challenge is refused by the provider.
    let begun = s.begin(REDIRECT_URI).await;
    let mut url = reqwest::Url::parse(&begun.authorization_url).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "code_challenge" {
                (k, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into())
            } else {
                (k, v)
            }
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let back = browser(url.as_str(), "carol", REDIRECT_URI).await;
    let message = refused(
        c.complete_login(complete(&back, REDIRECT_URI))
            .await
            .unwrap_err(),
        "wrong PKCE verifier",
    );
    assert!(message.contains("invalid_grant"), "{message}");

    // A callback naming another issuer (RFC 9207 mix-up defence).
    let begun = s.begin(REDIRECT_URI).await;
    let back = browser(&begun.authorization_url, "carol", REDIRECT_URI).await;
    let mut mixed = complete(&back, REDIRECT_URI);
    mixed.issuer = "https://other-idp.example".into();
    refused(c.complete_login(mixed).await.unwrap_err(), "wrong iss");

    // An expired sign-in.
    let begun = s.begin(REDIRECT_URI).await;
    let back = browser(&begun.authorization_url, "carol", REDIRECT_URI).await;
    let past = chrono::Utc::now() - chrono::Duration::minutes(1);
    s.db.conn()
        .execute(
            &Query::update()
                .table(Alias::new("oidc_logins"))
                .value(Alias::new("expires_at"), past)
                .to_owned(),
        )
        .await
        .unwrap();
    let message = refused(
        c.complete_login(complete(&back, REDIRECT_URI))
            .await
            .unwrap_err(),
        "expired sign-in",
    );
    assert!(message.contains("expired"), "{message}");
    s.finish().await;
}

/// One `#[tokio::test]` per case in a module named after the backend.
macro_rules! on_both {
    ($module:ident => $kind:ident: $($case:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::$kind).await;
                }
            )*
        }
    };
}

on_both!(sqlite => Sqlite:
    sso_first_login_provisions_maps_groups_and_authenticates,
    sso_refuses_bad_state_reuse_nonce_redirect_and_pkce,
);

on_both!(postgres => Postgres:
    sso_first_login_provisions_maps_groups_and_authenticates,
    sso_refuses_bad_state_reuse_nonce_redirect_and_pkce,
);
