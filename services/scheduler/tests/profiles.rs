//! Agent profiles over gRPC, on SQLite and PostgreSQL: the built-ins a new team
//! has, a team's own profiles (preferred, replacing a built-in by name), refusals,
//! deletion, isolation between teams, and the planning catalog they make.

#![allow(clippy::unwrap_used)]

use godel_planner::{TaskType, plan_intent};
use godel_proto::scheduler::v1 as pb;
use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use godel_scheduler::profiles::{Profiles, catalog};
use godel_scheduler::{Dependencies, QueueConfig, SchedulerConfig};
use godel_store::DatabaseConfig;
use godel_test_utils::postgres::{DbKind, TestDb};
use godel_types::TeamId;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

type Client = SchedulerServiceClient<Channel>;

fn names(profiles: &[pb::Profile]) -> Vec<&str> {
    profiles.iter().map(|p| p.name.as_str()).collect()
}

async fn list(client: &mut Client, team: TeamId) -> Vec<pb::Profile> {
    client
        .list_profiles(pb::ListProfilesRequest {
            team_id: team.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .profiles
}

fn profile(name: &str, adapter: &str, types: &[&str], preference: i32) -> pb::Profile {
    pb::Profile {
        name: name.into(),
        adapter: adapter.into(),
        model: "gpt-5".into(),
        task_types: types.iter().map(|t| (*t).to_owned()).collect(),
        limits: Some(pb::ProfileLimits {
            max_duration: Some(std::time::Duration::from_secs(600).into()),
            max_tokens: 100_000,
            max_cost_micro_usd: 2_000_000,
        }),
        estimated_cost_micro_usd: 150_000,
        preference,
        ..pb::Profile::default()
    }
}

async fn put(
    client: &mut Client,
    team: TeamId,
    p: pb::Profile,
) -> Result<pb::Profile, tonic::Status> {
    client
        .put_profile(pb::PutProfileRequest {
            team_id: team.to_string(),
            profile: Some(p),
        })
        .await
        .map(|r| r.into_inner().profile.unwrap())
}

async fn profiles_round_trip(kind: DbKind) {
    let test_db = TestDb::of(kind).await;
    let database = DatabaseConfig {
        url: test_db.url.clone().into(),
        schema: test_db.schema.clone(),
        ..DatabaseConfig::default()
    };
    let config = SchedulerConfig {
        server: godel_runtime::ServerConfig::local(),
        database: database.clone(),
        queue: QueueConfig {
            dispatch: false,
            ..QueueConfig::default()
        },
        ..SchedulerConfig::default()
    };
    let deps = Dependencies {
        bus: godel_bus::connect(&Default::default()).await.unwrap(),
    };
    let shutdown = CancellationToken::new();
    let running = godel_scheduler::start(config, deps, shutdown.clone())
        .await
        .unwrap();
    let mut client = Client::connect(format!("http://{}", running.grpc_addr()))
        .await
        .unwrap();
    let (team, other) = (TeamId::new(), TeamId::new());

    // A new team has the built-ins, the simulated agent first.
    let builtins = list(&mut client, team).await;
    assert_eq!(
        names(&builtins),
        ["simulated", "pi", "claude-code", "codex"]
    );
    assert!(builtins.iter().all(|p| p.builtin && p.team_id.is_empty()));
    assert_eq!(builtins[0].adapter, "sim");
    assert_eq!(builtins[0].task_types.len(), TaskType::ALL.len());

    // Its own profile comes first; one named like a built-in replaces it.
    let coder = put(
        &mut client,
        team,
        profile("fast-coder", "claude-code", &["implement", "refactor"], 10),
    )
    .await
    .unwrap();
    assert!(coder.id.starts_with("prf_") && !coder.builtin);
    assert_eq!(coder.team_id, team.to_string());
    put(
        &mut client,
        team,
        profile("pi", "pi", &["test", "review"], 950),
    )
    .await
    .unwrap();
    let own = list(&mut client, team).await;
    assert_eq!(
        names(&own),
        ["fast-coder", "simulated", "claude-code", "codex", "pi"]
    );
    let pi = own.iter().find(|p| p.name == "pi").unwrap();
    assert!(!pi.builtin);
    assert_eq!(pi.task_types, ["test", "review"]);
    assert_eq!(pi.limits.as_ref().unwrap().max_tokens, 100_000);
    // Saving again replaces it in place (same id).
    let again = put(
        &mut client,
        team,
        profile("fast-coder", "codex", &["implement"], 10),
    )
    .await
    .unwrap();
    assert_eq!(
        (again.id.as_str(), again.adapter.as_str()),
        (coder.id.as_str(), "codex")
    );

    // Another team sees none of it.
    assert_eq!(
        names(&list(&mut client, other).await),
        ["simulated", "pi", "claude-code", "codex"]
    );

    // Refusals name the field.
    for (bad, field) in [
        (profile("Bad Name", "pi", &["test"], 1), "profile.name"),
        (profile("x", "pi", &["deploy"], 1), "profile.task_types"),
        (profile("x", "pi", &[], 1), "profile.task_types"),
        (
            pb::Profile {
                runtime: "kubernetes".into(),
                ..profile("x", "pi", &["test"], 1)
            },
            "profile.runtime",
        ),
    ] {
        let status = put(&mut client, team, bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(
            godel_error::Error::from_status(&status).field.as_deref(),
            Some(field),
            "{status:?}"
        );
    }

    // The planning catalog follows the team's preference.
    let store = Profiles::new(godel_store::connect(&database).await.unwrap());
    let catalog = catalog(&store.list(team).await.unwrap(), 20, 0);
    let planned = plan_intent(None, "Add an export endpoint", &catalog)
        .await
        .unwrap();
    let chosen: Vec<(&str, &str)> = planned
        .plan
        .nodes
        .iter()
        .map(|n| (n.key.as_str(), n.profile.as_str()))
        .collect();
    assert_eq!(
        chosen,
        [
            ("implement-1", "fast-coder"),
            ("test", "simulated"),
            ("review", "simulated")
        ]
    );

    // Deleting: its own goes (the built-in it replaced returns); built-ins stay.
    client
        .delete_profile(pb::DeleteProfileRequest {
            team_id: team.to_string(),
            name: "pi".into(),
        })
        .await
        .unwrap();
    let after = list(&mut client, team).await;
    assert!(after.iter().any(|p| p.name == "pi" && p.builtin));
    let status = client
        .delete_profile(pb::DeleteProfileRequest {
            team_id: team.to_string(),
            name: "simulated".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let status = client
        .delete_profile(pb::DeleteProfileRequest {
            team_id: other.to_string(),
            name: "fast-coder".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "another team's profile is not found"
    );

    shutdown.cancel();
    running.wait().await.unwrap();
    test_db.cleanup().await;
}

#[tokio::test]
async fn profiles_round_trip_sqlite() {
    profiles_round_trip(DbKind::Sqlite).await;
}

#[tokio::test]
async fn profiles_round_trip_postgres() {
    profiles_round_trip(DbKind::Postgres).await;
}
