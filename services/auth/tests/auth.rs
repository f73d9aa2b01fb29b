//! The auth service's identity core through its public API, and its gRPC service
//! (`grpc`, started for real): every case runs on
//! SQLite and on PostgreSQL (a fresh schema on the test server), with the outbox
//! relayed to an in-process bus so the IAM events are checked where consumers see
//! them.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use godel_auth::api_keys::{API_KEY_PREFIX, NewApiKey};
use godel_auth::directory::UserIdentity;
use godel_auth::permission::{BuiltinRole, Permission};
use godel_auth::quotas::Quotas;
use godel_auth::{Auth, AuthConfig, Migrator, Principal, TokenConfig};
use godel_bus::memory::MemoryBus;
use godel_bus::{Bus, ConsumerConfig, Subject};
use godel_error::ErrorCode;
use godel_proto::events::v1::{IamChange, IamEvent};
use godel_store::sea_orm::ConnectionTrait;
use godel_store::sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use godel_store::{DatabaseConfig, Db, OutboxRelay, RelayConfig};
use godel_test_utils::eventually;
use godel_test_utils::postgres::{DbKind as Kind, TestDb};
use godel_types::{TeamId, UserId};
use tokio_util::sync::CancellationToken;

#[path = "auth/grpc.rs"]
mod grpc;

use grpc::{
    grpc_a_member_of_team_b_is_denied_on_team_a, grpc_api_key_to_verified_caller,
    grpc_bad_tokens_are_rejected_by_the_verifier,
    grpc_key_rotation_keeps_old_tokens_and_refetches_for_new_kids, grpc_org_roles_reach_tokens,
    grpc_quotas_read_as_the_scheduler_would, grpc_sessions_refresh_and_revoke,
};

const WAIT: Duration = Duration::from_secs(20);

/// What the consumer received: (subject, event).
type Received = Arc<Mutex<Vec<(String, IamEvent)>>>;

/// A migrated auth database, its `Auth`, and the relay + consumer of its events.
struct Harness {
    auth: Auth,
    db: Db,
    config: DatabaseConfig,
    events: Received,
    stop: CancellationToken,
    test_db: TestDb,
}

impl Harness {
    async fn new(kind: Kind) -> Self {
        Self::with_tokens(kind, TokenConfig::default()).await
    }

    async fn with_tokens(kind: Kind, tokens: TokenConfig) -> Self {
        let test_db = TestDb::of(kind).await;
        let config = DatabaseConfig {
            url: test_db.url.clone().into(),
            schema: test_db.schema.clone(),
            ..DatabaseConfig::default()
        };
        let db = godel_store::connect(&config).await.unwrap();
        godel_store::migrate::<Migrator>(&db).await.unwrap();

        let bus = Arc::new(MemoryBus::default());
        let mut consumer = bus
            .consumer(ConsumerConfig::new(
                "test",
                vec![Subject::all_team_events()],
            ))
            .await
            .unwrap();
        let events: Received = Arc::default();
        let sink = events.clone();
        tokio::spawn(async move {
            while let Ok(Some(d)) = consumer.next().await {
                let event = godel_proto::cloudevent::decode::<IamEvent>(&d.payload).unwrap();
                sink.lock()
                    .unwrap()
                    .push((d.subject.to_string(), event.data));
                d.ack().await.unwrap();
            }
        });
        let relay = OutboxRelay::new(
            db.clone(),
            bus as Arc<dyn Bus>,
            RelayConfig {
                poll_interval: Duration::from_millis(50),
                ..RelayConfig::new("auth")
            },
        );
        let auth = Auth::new(db.clone(), Some(relay.notifier()), tokens);
        let stop = CancellationToken::new();
        tokio::spawn(relay.run(stop.clone()));
        Self {
            auth,
            db,
            config,
            events,
            stop,
            test_db,
        }
    }

    async fn finish(self) {
        self.stop.cancel();
        self.db.close().await.unwrap();
        self.test_db.cleanup().await;
    }

    async fn user(&self, name: &str) -> UserId {
        let (user, created) = self.auth.provision_user(&identity(name)).await.unwrap();
        assert!(created);
        user.id
    }

    async fn team(&self, name: &str) -> TeamId {
        let admin = self.org_admin().await;
        self.auth
            .create_team(Principal::User(admin), name, name)
            .await
            .unwrap()
            .id
    }

    /// An org-admin (created once per harness).
    async fn org_admin(&self) -> UserId {
        let (user, _) = self.auth.provision_user(&identity("root")).await.unwrap();
        if !user.org_admin {
            self.auth.set_org_admin(user.id, true).await.unwrap();
        }
        user.id
    }

    /// Waits for an event with `change` about `subject_id` and returns it.
    async fn event(&self, change: IamChange, subject_id: String) -> (String, IamEvent) {
        eventually(&format!("{change:?} of {subject_id}"), WAIT, || {
            let found = self
                .events
                .lock()
                .unwrap()
                .iter()
                .find(|(_, e)| e.change == change as i32 && e.subject_id == subject_id)
                .cloned();
            async move { found }
        })
        .await
    }
}

fn identity(name: &str) -> UserIdentity {
    UserIdentity {
        issuer: "https://idp.example".into(),
        subject: name.into(),
        email: format!("{name}@example.com"),
        display_name: name.into(),
    }
}

// ---------------------------------------------------------------------------------
// Teams, users, memberships, roles

async fn teams_users_and_members(kind: Kind) {
    let h = Harness::new(kind).await;
    let alice = h.user("alice").await;
    let team = h
        .auth
        .create_team(Principal::User(alice), "core-infra", "Core infrastructure")
        .await
        .unwrap();
    assert_eq!(h.auth.get_team(team.id).await.unwrap(), team);
    let err = h
        .auth
        .create_team(Principal::User(alice), "core-infra", "again")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists);
    let err = h
        .auth
        .create_team(Principal::User(alice), "Bad Name", "x")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(
        h.auth.get_team(TeamId::new()).await.unwrap_err().code,
        ErrorCode::NotFound
    );

    // The creator is the first team-admin.
    let members = h.auth.list_members(team.id).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].user, alice);
    assert_eq!(members[0].roles, ["team-admin"]);
    assert_eq!(members[0].email, "alice@example.com");

    // Provisioning is idempotent by (issuer, subject) and refreshes the profile.
    let (again, created) = h
        .auth
        .provision_user(&UserIdentity {
            email: "alice@new.example".into(),
            ..identity("alice")
        })
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, alice);
    assert_eq!(again.email, "alice@new.example");
    let (other_idp, created) = h
        .auth
        .provision_user(&UserIdentity {
            issuer: "https://other-idp.example".into(),
            ..identity("alice")
        })
        .await
        .unwrap();
    assert!(created);
    assert_ne!(other_idp.id, alice);

    let bob = h.user("bob").await;
    let member = h
        .auth
        .add_member(Principal::User(alice), team.id, bob, &["developer".into()])
        .await
        .unwrap();
    assert_eq!(member.roles, ["developer"]);
    let member = h
        .auth
        .add_member(
            Principal::User(alice),
            team.id,
            bob,
            &["viewer".into(), "auditor".into()],
        )
        .await
        .unwrap();
    assert_eq!(member.roles, ["auditor", "viewer"]);
    assert_eq!(h.auth.list_members(team.id).await.unwrap().len(), 2);
    assert_eq!(h.auth.list_teams_of(bob).await.unwrap(), vec![team.clone()]);
    for bad in [
        vec![],
        vec!["org-admin".to_owned()],
        vec!["wizard".to_owned()],
    ] {
        let err = h
            .auth
            .add_member(Principal::User(alice), team.id, bob, &bad)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad:?}");
    }
    h.auth
        .remove_member(Principal::User(alice), team.id, bob)
        .await
        .unwrap();
    assert_eq!(
        h.auth
            .remove_member(Principal::User(alice), team.id, bob)
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    assert!(h.auth.list_teams_of(bob).await.unwrap().is_empty());

    // Every change reached the bus as an IAM event on the team's subject.
    let (subject, created) = h.event(IamChange::TeamCreated, team.id.to_string()).await;
    assert_eq!(
        subject,
        Subject::iam(team.id, "team_created").as_str().to_owned()
    );
    assert_eq!(created.team_id, team.id.to_string());
    assert_eq!(created.actor.unwrap().subject_id, alice.to_string());
    let (_, added) = h.event(IamChange::MemberAdded, bob.to_string()).await;
    assert_eq!(added.roles, ["developer"]);
    let (_, updated) = h.event(IamChange::MemberUpdated, bob.to_string()).await;
    assert_eq!(updated.roles, ["auditor", "viewer"]);
    let (subject, _) = h.event(IamChange::MemberRemoved, bob.to_string()).await;
    assert!(subject.ends_with(".iam.member_removed"), "{subject}");
    h.finish().await;
}

async fn custom_roles(kind: Kind) {
    let h = Harness::new(kind).await;
    let alice = h.user("alice").await;
    let team = h
        .auth
        .create_team(Principal::User(alice), "web", "Web")
        .await
        .unwrap()
        .id;
    let err = h
        .auth
        .create_role(
            Principal::User(alice),
            team,
            "runner",
            &["tasks:create".into(), "tasks:teleport".into()],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains("tasks:teleport"), "{}", err.message);
    let err = h
        .auth
        .create_role(
            Principal::User(alice),
            team,
            "viewer",
            &["tasks:read".into()],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists);

    let role = h
        .auth
        .create_role(
            Principal::User(alice),
            team,
            "runner",
            &["tasks:create".into(), "tasks:read".into()],
        )
        .await
        .unwrap();
    assert_eq!(
        role.permissions,
        [Permission::TasksCreate, Permission::TasksRead]
    );
    let err = h
        .auth
        .create_role(
            Principal::User(alice),
            team,
            "runner",
            &["tasks:read".into()],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists);
    let roles = h.auth.list_roles(team).await.unwrap();
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "org-admin",
            "team-admin",
            "developer",
            "viewer",
            "auditor",
            "runner"
        ]
    );

    // A member holding the custom role gets exactly its permissions.
    let carol = h.user("carol").await;
    h.auth
        .add_member(Principal::User(alice), team, carol, &["runner".into()])
        .await
        .unwrap();
    let allowed = h
        .auth
        .authorize(Principal::User(carol), Permission::TasksCreate, team)
        .await
        .unwrap();
    assert!(allowed.allowed);
    assert_eq!(allowed.reason, "role runner grants tasks:create");
    let denied = h
        .auth
        .authorize(Principal::User(carol), Permission::TasksCancel, team)
        .await
        .unwrap();
    assert!(!denied.allowed, "{}", denied.reason);
    // The role is the team's own: another team does not know it.
    let other = h.team("other").await;
    let err = h
        .auth
        .add_member(Principal::User(alice), other, carol, &["runner".into()])
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    h.event(IamChange::RoleCreated, role.id.unwrap().to_string())
        .await;
    h.finish().await;
}

// ---------------------------------------------------------------------------------
// Authorization

async fn every_builtin_role_against_the_catalog(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = h.team("alpha").await;
    let other = h.team("beta").await;
    let admin = h.org_admin().await;

    for role in BuiltinRole::TEAM_ROLES {
        let user = h.user(role.name()).await;
        h.auth
            .add_member(
                Principal::User(admin),
                team,
                user,
                &[role.name().to_owned()],
            )
            .await
            .unwrap();
        for permission in Permission::ALL {
            let decision = h
                .auth
                .authorize(Principal::User(user), *permission, team)
                .await
                .unwrap();
            assert_eq!(
                decision.allowed,
                role.grants(*permission),
                "{role} × {permission}: {}",
                decision.reason
            );
            if decision.allowed {
                assert_eq!(decision.reason, format!("role {role} grants {permission}"));
            }
            // Cross-team: membership in `team` gives nothing in `other`.
            let elsewhere = h
                .auth
                .authorize(Principal::User(user), *permission, other)
                .await
                .unwrap();
            assert!(!elsewhere.allowed, "{role} × {permission} in another team");
            assert!(
                elsewhere.reason.contains("is not a member"),
                "{}",
                elsewhere.reason
            );
        }
    }

    // org-admin: everything, in every team, member or not.
    for t in [team, other, TeamId::new()] {
        for permission in Permission::ALL {
            let decision = h
                .auth
                .authorize(Principal::User(admin), *permission, t)
                .await
                .unwrap();
            assert!(decision.allowed, "org-admin × {permission}");
        }
    }
    assert!(BuiltinRole::OrgAdmin.permissions() == Permission::ALL);

    // Unknown principals are denied, not errors.
    let ghost = h
        .auth
        .authorize(Principal::User(UserId::new()), Permission::TasksRead, team)
        .await
        .unwrap();
    assert!(!ghost.allowed);
    let err = h
        .auth
        .require(Principal::User(UserId::new()), Permission::TasksRead, team)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    h.finish().await;
}

// ---------------------------------------------------------------------------------
// API keys

async fn api_keys(kind: Kind) {
    let h = Harness::new(kind).await;
    let alice = h.user("alice").await;
    let team = h
        .auth
        .create_team(Principal::User(alice), "ops", "Ops")
        .await
        .unwrap()
        .id;
    let other = h.team("other").await;

    let created = h
        .auth
        .create_api_key(
            Principal::User(alice),
            NewApiKey {
                team,
                name: "ci".into(),
                permissions: vec![Permission::TasksCreate, Permission::TasksRead],
                org_admin: false,
                org_roles: Vec::new(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let raw = created.secret.clone();
    assert!(raw.starts_with(&format!(
        "{API_KEY_PREFIX}{}_",
        created.key.id.as_uuid().simple()
    )));
    assert_eq!(created.key.created_by, Principal::User(alice));
    let secret_part = &raw[API_KEY_PREFIX.len() + 33..];
    assert_eq!(created.key.prefix, format!("gdl_{}", &secret_part[..6]));
    assert!(
        !format!("{created:?}").contains(&raw),
        "Debug leaks the secret"
    );

    // Stored hashed: the secret is in no column of the table.
    let rows =
        h.db.conn()
            .query_all(
                &Query::select()
                    .expr(Expr::col(Alias::new("secret_hash")))
                    .from(Alias::new("api_keys"))
                    .to_owned(),
            )
            .await
            .unwrap();
    let stored: String = rows[0].try_get("", "secret_hash").unwrap();
    assert_ne!(stored, secret_part);
    assert_eq!(stored.len(), 64);

    let caller = h.auth.authenticate_api_key(&raw).await.unwrap();
    assert_eq!(caller.key, created.key.id);
    assert_eq!(caller.team, team);
    assert_eq!(
        caller.permissions,
        [Permission::TasksCreate, Permission::TasksRead]
    );
    let key = Principal::ApiKey(created.key.id);
    assert!(
        h.auth
            .authorize(key, Permission::TasksCreate, team)
            .await
            .unwrap()
            .allowed
    );
    for (permission, t) in [
        (Permission::TasksCancel, team),
        (Permission::KeysManage, team),
        (Permission::TasksCreate, other),
        (Permission::TasksRead, other),
    ] {
        let d = h.auth.authorize(key, permission, t).await.unwrap();
        assert!(!d.allowed, "key × {permission} in {t}");
    }
    let listed = h.auth.list_api_keys(team, false).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_at.is_some());

    // Wrong secrets, other shapes and other prefixes are all the same rejection.
    let mut wrong = raw.clone();
    wrong.pop();
    wrong.push(if raw.ends_with('A') { 'B' } else { 'A' });
    for bad in [wrong.as_str(), "gdl_nope", "", &raw[4..]] {
        let err = h.auth.authenticate_api_key(bad).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthenticated, "{bad}");
    }

    // Only a subset of the creator's permissions, only with keys:manage.
    let dev = h.user("dev").await;
    h.auth
        .add_member(Principal::User(alice), team, dev, &["developer".into()])
        .await
        .unwrap();
    let err = h
        .auth
        .create_api_key(
            Principal::User(dev),
            NewApiKey {
                team,
                name: "mine".into(),
                permissions: vec![Permission::TasksRead],
                org_admin: false,
                org_roles: Vec::new(),
                expires_at: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    let err = h
        .auth
        .create_api_key(
            key,
            NewApiKey {
                team,
                name: "child".into(),
                permissions: vec![Permission::TasksRead],
                org_admin: false,
                org_roles: Vec::new(),
                expires_at: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::PermissionDenied,
        "a key without keys:manage"
    );
    let err = h
        .auth
        .create_api_key(
            Principal::User(alice),
            NewApiKey {
                team,
                name: "root".into(),
                permissions: vec![],
                org_admin: true,
                org_roles: Vec::new(),
                expires_at: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::PermissionDenied,
        "team-admin cannot mint org-admin keys"
    );
    let err = h
        .auth
        .create_api_key(
            Principal::User(alice),
            NewApiKey {
                team: other,
                name: "elsewhere".into(),
                permissions: vec![Permission::TasksRead],
                org_admin: false,
                org_roles: Vec::new(),
                expires_at: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);

    // Expiry: a key past its expiry authenticates no more and is denied everything.
    let expiring = h
        .auth
        .create_api_key(
            Principal::User(alice),
            NewApiKey {
                team,
                name: "short".into(),
                permissions: vec![Permission::TasksRead],
                org_admin: false,
                org_roles: Vec::new(),
                expires_at: Some(Utc::now() + chrono::Duration::hours(1)),
            },
        )
        .await
        .unwrap();
    h.auth.authenticate_api_key(&expiring.secret).await.unwrap();
    h.db.conn()
        .execute(
            &Query::update()
                .table(Alias::new("api_keys"))
                .value(
                    Alias::new("expires_at"),
                    Utc::now() - chrono::Duration::seconds(1),
                )
                .and_where(Expr::col(Alias::new("id")).eq(expiring.key.id.as_uuid()))
                .to_owned(),
        )
        .await
        .unwrap();
    assert_eq!(
        h.auth
            .authenticate_api_key(&expiring.secret)
            .await
            .unwrap_err()
            .code,
        ErrorCode::Unauthenticated
    );
    assert!(
        !h.auth
            .authorize(
                Principal::ApiKey(expiring.key.id),
                Permission::TasksRead,
                team
            )
            .await
            .unwrap()
            .allowed
    );

    // Revocation.
    let revoked = h
        .auth
        .revoke_api_key(Principal::User(alice), team, created.key.id)
        .await
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        h.auth.authenticate_api_key(&raw).await.unwrap_err().code,
        ErrorCode::Unauthenticated
    );
    assert!(
        !h.auth
            .authorize(key, Permission::TasksRead, team)
            .await
            .unwrap()
            .allowed
    );
    assert_eq!(h.auth.list_api_keys(team, false).await.unwrap().len(), 1);
    assert_eq!(h.auth.list_api_keys(team, true).await.unwrap().len(), 2);
    assert_eq!(
        h.auth
            .revoke_api_key(Principal::User(alice), other, expiring.key.id)
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    let (_, event) = h
        .event(IamChange::ApiKeyCreated, created.key.id.to_string())
        .await;
    assert_eq!(event.roles, ["tasks:create", "tasks:read"]);
    h.event(IamChange::ApiKeyRevoked, created.key.id.to_string())
        .await;
    h.finish().await;
}

// ---------------------------------------------------------------------------------
// Refresh tokens

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(kind: Kind) {
    let h = Harness::new(kind).await;
    let alice = h.user("alice").await;
    let team = h.team("t").await;
    let first = h.auth.start_session(alice, Some(team)).await.unwrap();
    assert!(first.refresh_token.starts_with("gdr_"));
    let verified = h
        .auth
        .verify_access_token(&first.access_token)
        .await
        .unwrap();
    assert_eq!(verified.principal, Principal::User(alice));
    assert_eq!(verified.team, Some(team));

    let second = h.auth.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(
        second.refresh_expires_at, first.refresh_expires_at,
        "absolute lifetime"
    );
    h.auth
        .verify_access_token(&second.access_token)
        .await
        .unwrap();
    let third = h.auth.refresh(&second.refresh_token).await.unwrap();

    // Replaying a rotated token fails and revokes the whole family…
    let err = h.auth.refresh(&first.refresh_token).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(err.message.contains("already used"), "{}", err.message);
    // …so the newest token, which was never used, is dead too.
    let err = h.auth.refresh(&third.refresh_token).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(err.message.contains("revoked"), "{}", err.message);

    // Another session of the same user is untouched; logout ends it.
    let other = h.auth.start_session(alice, None).await.unwrap();
    let other2 = h.auth.refresh(&other.refresh_token).await.unwrap();
    h.auth
        .revoke_refresh_token(&other2.refresh_token)
        .await
        .unwrap();
    assert_eq!(
        h.auth
            .refresh(&other2.refresh_token)
            .await
            .unwrap_err()
            .code,
        ErrorCode::Unauthenticated
    );
    for bad in ["gdr_unknown", "not-a-token", ""] {
        assert_eq!(
            h.auth.refresh(bad).await.unwrap_err().code,
            ErrorCode::Unauthenticated
        );
    }
    assert_eq!(
        h.auth
            .start_session(UserId::new(), None)
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    h.finish().await;
}

async fn refresh_tokens_expire_with_their_session(kind: Kind) {
    let h = Harness::with_tokens(
        kind,
        TokenConfig {
            session_lifetime: Duration::ZERO,
            ..TokenConfig::default()
        },
    )
    .await;
    let alice = h.user("alice").await;
    let pair = h.auth.start_session(alice, None).await.unwrap();
    // The access token never outlives its session.
    assert!(pair.access_expires_at <= pair.refresh_expires_at);
    let err = h.auth.refresh(&pair.refresh_token).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(err.message.contains("expired"), "{}", err.message);
    h.finish().await;
}

async fn signing_keys_rotate_and_old_tokens_still_verify(kind: Kind) {
    let h = Harness::new(kind).await;
    let alice = h.user("alice").await;
    assert!(h.auth.jwks().await.unwrap().keys.is_empty());
    let first_kid = h.auth.ensure_signing_key().await.unwrap();
    assert_eq!(h.auth.ensure_signing_key().await.unwrap(), first_kid);
    let old = h
        .auth
        .issue_access_token(alice, None, None, None)
        .await
        .unwrap();
    let second_kid = h.auth.rotate_signing_key().await.unwrap();
    let new = h
        .auth
        .issue_access_token(alice, None, None, None)
        .await
        .unwrap();
    assert_eq!(
        h.auth
            .verify_access_token(&old.token)
            .await
            .unwrap()
            .principal,
        Principal::User(alice)
    );
    assert_eq!(
        h.auth
            .verify_access_token(&new.token)
            .await
            .unwrap()
            .principal,
        Principal::User(alice)
    );
    let kids: Vec<String> = h
        .auth
        .jwks()
        .await
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, [second_kid, first_kid]);
    // Another issuer's or audience's `Auth` on the same keys does not accept them.
    let strict = Auth::new(
        h.db.clone(),
        None,
        TokenConfig {
            audience: "another-api".into(),
            ..TokenConfig::default()
        },
    );
    assert_eq!(
        strict
            .verify_access_token(&new.token)
            .await
            .unwrap_err()
            .code,
        ErrorCode::Unauthenticated
    );
    h.finish().await;
}

/// Several replicas, each with its own connection pool, find the key due at the
/// same moment: exactly one rotates.
async fn scheduled_rotation_happens_once_across_replicas(kind: Kind) {
    let h = Harness::new(kind).await;
    let alice = h.user("alice").await;
    let first = h.auth.ensure_signing_key().await.unwrap();
    let every = Duration::from_secs(3600);
    assert_eq!(
        h.auth.rotate_signing_key_if_due(every).await.unwrap(),
        None,
        "not due yet"
    );
    let old = h
        .auth
        .issue_access_token(alice, None, None, None)
        .await
        .unwrap();
    h.db.conn()
        .execute(
            &Query::update()
                .table(Alias::new("signing_keys"))
                .value(
                    Alias::new("created_at"),
                    Utc::now() - chrono::Duration::hours(2),
                )
                .to_owned(),
        )
        .await
        .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..4 {
        let db = godel_store::connect(&DatabaseConfig {
            max_connections: 1,
            ..h.config.clone()
        })
        .await
        .unwrap();
        replicas.push(Auth::new(db, None, TokenConfig::default()));
    }
    let outcomes =
        futures::future::join_all(replicas.iter().map(|r| r.rotate_signing_key_if_due(every)))
            .await;
    let rotated: Vec<String> = outcomes.into_iter().filter_map(|o| o.unwrap()).collect();
    assert_eq!(rotated.len(), 1, "exactly one replica rotates: {rotated:?}");
    let kids: Vec<String> = h
        .auth
        .jwks()
        .await
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(
        kids,
        [rotated[0].clone(), first],
        "the old key still verifies"
    );
    h.auth.verify_access_token(&old.token).await.unwrap();
    assert_eq!(h.auth.rotate_signing_key_if_due(every).await.unwrap(), None);
    for r in replicas {
        r.db().clone().close().await.unwrap();
    }
    h.finish().await;
}

/// The background schedule rotates by itself once the key is due.
async fn the_rotation_schedule_runs_in_the_background(kind: Kind) {
    let h = Harness::new(kind).await;
    let first = h.auth.ensure_signing_key().await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(godel_auth::rotation::run(
        h.auth.clone(),
        Duration::from_secs(1),
        stop.clone(),
    ));
    let auth = h.auth.clone();
    let kids = eventually("a scheduled rotation", WAIT, || {
        let auth = auth.clone();
        async move {
            let kids: Vec<String> = auth
                .jwks()
                .await
                .ok()?
                .keys
                .into_iter()
                .map(|k| k.kid)
                .collect();
            (kids.len() >= 2).then_some(kids)
        }
    })
    .await;
    assert_eq!(kids.last(), Some(&first));
    stop.cancel();
    task.await.unwrap();
    h.finish().await;
}

async fn concurrent_refreshes_of_one_token_let_at_most_one_win(kind: Kind) {
    let h = Harness::new(kind).await;
    let alice = h.user("alice").await;
    let pair = h.auth.start_session(alice, None).await.unwrap();
    let attempts: Vec<_> = (0..4)
        .map(|_| {
            let (auth, token) = (h.auth.clone(), pair.refresh_token.clone());
            tokio::spawn(async move { auth.refresh(&token).await })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in attempts {
        if let Ok(pair) = attempt.await.unwrap() {
            winners.push(pair);
        }
    }
    assert!(winners.len() <= 1, "{} refreshes won", winners.len());
    // The losers presented a used token: the family is revoked, the winner's too.
    if let Some(winner) = winners.first() {
        assert_eq!(
            h.auth
                .refresh(&winner.refresh_token)
                .await
                .unwrap_err()
                .code,
            ErrorCode::Unauthenticated
        );
    }
    h.finish().await;
}

async fn concurrent_first_logins_provision_one_user(kind: Kind) {
    let h = Harness::new(kind).await;
    let logins: Vec<_> = (0..4)
        .map(|_| {
            let auth = h.auth.clone();
            tokio::spawn(async move { auth.provision_user(&identity("dana")).await })
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for login in logins {
        let (user, new) = login.await.unwrap().unwrap();
        ids.push(user.id);
        created += usize::from(new);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one user for one identity");
    assert_eq!(created, 1);
    h.finish().await;
}

// ---------------------------------------------------------------------------------
// Quotas

async fn quotas(kind: Kind) {
    let h = Harness::new(kind).await;
    let admin = h.org_admin().await;
    let team = h.team("q").await;
    let defaults = h.auth.get_quotas(team).await.unwrap();
    assert_eq!(defaults.quotas, Quotas::default());
    assert_eq!(defaults.updated_at, None);

    let wanted = Quotas {
        max_concurrent_sessions: Some(4),
        max_queued_tasks: Some(1000),
        rate_limit_per_minute: Some(5000),
        monthly_budget_micro_usd: Some(250_000_000),
    };
    let set = h
        .auth
        .set_quotas(Principal::User(admin), team, wanted)
        .await
        .unwrap();
    assert_eq!(set.quotas, wanted);
    assert_eq!(h.auth.get_quotas(team).await.unwrap().quotas, wanted);

    // Replaced as a whole: unset values go back to the default.
    let partial = Quotas {
        max_queued_tasks: Some(10),
        ..Quotas::default()
    };
    h.auth
        .set_quotas(Principal::User(admin), team, partial)
        .await
        .unwrap();
    assert_eq!(h.auth.get_quotas(team).await.unwrap().quotas, partial);

    let err = h
        .auth
        .set_quotas(
            Principal::User(admin),
            team,
            Quotas {
                monthly_budget_micro_usd: Some(u64::MAX),
                ..Quotas::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(
        h.auth.get_quotas(TeamId::new()).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    h.event(IamChange::QuotasChanged, team.to_string()).await;
    h.finish().await;
}

// ---------------------------------------------------------------------------------
// Bootstrap

async fn bootstrap_creates_the_first_admin_once(kind: Kind) {
    let h = Harness::new(kind).await;
    let admin = h
        .auth
        .bootstrap()
        .await
        .unwrap()
        .expect("first start bootstraps");
    assert!(admin.user.org_admin);
    assert_eq!(admin.team.name, "default");
    assert!(admin.api_key.secret.starts_with(API_KEY_PREFIX));
    assert!(admin.api_key.key.org_admin);

    let caller = h
        .auth
        .authenticate_api_key(&admin.api_key.secret)
        .await
        .unwrap();
    assert!(caller.org_admin);
    // The key acts as an org-admin: in a team created later, too.
    let later = h
        .auth
        .create_team(Principal::User(admin.user.id), "later", "Later")
        .await
        .unwrap();
    let d = h
        .auth
        .authorize(
            Principal::ApiKey(caller.key),
            Permission::MembersManage,
            later.id,
        )
        .await
        .unwrap();
    assert!(d.allowed, "{}", d.reason);

    assert!(h.auth.bootstrap().await.unwrap().is_none(), "second start");
    let members = h.auth.list_members(admin.team.id).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].roles, ["team-admin"]);
    h.event(IamChange::ApiKeyCreated, caller.key.to_string())
        .await;

    // The library entry point opens the database itself and finds it bootstrapped.
    let config = AuthConfig {
        database: h.config.clone(),
        ..AuthConfig::default()
    };
    assert!(godel_auth::bootstrap(&config).await.unwrap().is_none());
    h.finish().await;
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
    teams_users_and_members,
    scheduled_rotation_happens_once_across_replicas,
    the_rotation_schedule_runs_in_the_background,
    signing_keys_rotate_and_old_tokens_still_verify,
    concurrent_first_logins_provision_one_user,
    concurrent_refreshes_of_one_token_let_at_most_one_win,
    custom_roles,
    every_builtin_role_against_the_catalog,
    api_keys,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    refresh_tokens_expire_with_their_session,
    quotas,
    bootstrap_creates_the_first_admin_once,
    grpc_api_key_to_verified_caller,
    grpc_a_member_of_team_b_is_denied_on_team_a,
    grpc_bad_tokens_are_rejected_by_the_verifier,
    grpc_key_rotation_keeps_old_tokens_and_refetches_for_new_kids,
    grpc_quotas_read_as_the_scheduler_would,
    grpc_sessions_refresh_and_revoke,
    grpc_org_roles_reach_tokens,
);

on_both!(postgres => Postgres:
    teams_users_and_members,
    scheduled_rotation_happens_once_across_replicas,
    the_rotation_schedule_runs_in_the_background,
    signing_keys_rotate_and_old_tokens_still_verify,
    concurrent_first_logins_provision_one_user,
    concurrent_refreshes_of_one_token_let_at_most_one_win,
    custom_roles,
    every_builtin_role_against_the_catalog,
    api_keys,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    refresh_tokens_expire_with_their_session,
    quotas,
    bootstrap_creates_the_first_admin_once,
    grpc_api_key_to_verified_caller,
    grpc_a_member_of_team_b_is_denied_on_team_a,
    grpc_bad_tokens_are_rejected_by_the_verifier,
    grpc_key_rotation_keeps_old_tokens_and_refetches_for_new_kids,
    grpc_quotas_read_as_the_scheduler_would,
    grpc_sessions_refresh_and_revoke,
    grpc_org_roles_reach_tokens,
);

#[tokio::test]
async fn bootstrap_on_a_fresh_sqlite_file_returns_a_working_key_once() {
    let db = TestDb::sqlite();
    let config = AuthConfig {
        database: DatabaseConfig {
            url: db.url.clone().into(),
            ..DatabaseConfig::default()
        },
        ..AuthConfig::default()
    };
    let admin = godel_auth::bootstrap(&config).await.unwrap().unwrap();
    assert!(godel_auth::bootstrap(&config).await.unwrap().is_none());
    let conn = godel_store::connect(&config.database).await.unwrap();
    let auth = Auth::new(conn, None, TokenConfig::default());
    let caller = auth
        .authenticate_api_key(&admin.api_key.secret)
        .await
        .unwrap();
    assert_eq!(caller.team, admin.team.id);
}

#[tokio::test]
async fn a_malformed_signing_key_encryption_key_fails_at_start() {
    let db = TestDb::sqlite();
    let config = AuthConfig {
        database: DatabaseConfig {
            url: db.url.clone().into(),
            ..DatabaseConfig::default()
        },
        tokens: TokenConfig {
            signing_key_encryption_key: Some("dG9vIHNob3J0".into()),
            ..TokenConfig::default()
        },
        ..AuthConfig::default()
    };
    let err = godel_auth::bootstrap(&config).await.unwrap_err();
    assert!(
        matches!(err, godel_auth::Error::SigningKeyEncryption(_)),
        "{err}"
    );
}
