//! Sessions end to end: the service started with `start`, driven by a real tonic
//! client over SQLite and PostgreSQL, running the real `godel-sim-agent` in git
//! worktrees of temporary repositories; published events read from the in-process
//! bus.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use godel_bus::{Bus, ConsumerConfig, MemoryBus, Subject};
use godel_error::{Error, ErrorCode};
use godel_orchestrator::runtime::confine::landlock_support;
use godel_orchestrator::session::{Repository, SessionLimits, SessionState, Sessions, StartSpec};
use godel_orchestrator::{Dependencies, Migrator, OrchestratorConfig, SessionsConfig};
use godel_proto::events::v1::{SessionActivityEvent, SessionStateEvent};
use godel_proto::orchestrator::v1 as pb;
use godel_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use godel_proto::orchestrator::v1::session_event::Body;
use godel_store::sea_orm::{ConnectionTrait, Statement};
use godel_store::{DatabaseConfig, OutboxRelay, RelayConfig};
use godel_test_utils::eventually;
use godel_test_utils::git::{git, init_repo};
use godel_test_utils::identity::{Authed, TestIssuer, authed};
use godel_test_utils::postgres::{DbKind, TestDb};
use godel_types::{OrchestratorId, TaskId, TeamId};
use tokio_util::sync::CancellationToken;

const SIM_AGENT: &str = env!("CARGO_BIN_EXE_godel-sim-agent");
const WAIT: Duration = Duration::from_secs(60);

type Client = OrchestratorServiceClient<Authed>;

fn database(test_db: &TestDb) -> DatabaseConfig {
    DatabaseConfig {
        url: test_db.url.clone().into(),
        schema: test_db.schema.clone(),
        max_connections: 4,
        ..DatabaseConfig::default()
    }
}

fn sessions_config(root: &Path) -> SessionsConfig {
    SessionsConfig {
        worktrees_dir: root.join("worktrees"),
        homes_dir: root.join("homes"),
        cache_dir: root.join("cache"),
        allow_local_repositories: true,
        sim_agent_path: PathBuf::from(SIM_AGENT),
        interrupt_wait: Duration::from_secs(5),
        term_wait: Duration::from_secs(2),
        ..SessionsConfig::default()
    }
}

/// Published events: `(subject, CloudEvent id, payload)`.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

struct Harness {
    /// Kept so the bus stays open (and its consumer delivers) after the service
    /// stopped and dropped its handle.
    _bus: Arc<MemoryBus>,
    client: Client,
    shutdown: CancellationToken,
    running: Option<godel_runtime::RunningService>,
    received: Received,
    root: tempfile::TempDir,
    repo: PathBuf,
    base: String,
    team: TeamId,
    /// Signs the callers' access tokens; the service trusts it.
    issuer: TestIssuer,
    test_db: TestDb,
}

impl Harness {
    /// A client acting as a new user holding every permission in `team`.
    async fn client_of(&self, team: TeamId) -> Client {
        let url = format!("http://{}", self.running.as_ref().unwrap().grpc_addr());
        Client::new(authed(&url, &self.issuer.team_admin(team)).await)
    }

    async fn new(kind: DbKind) -> Self {
        Self::with(kind, |_| {}).await
    }

    async fn with(kind: DbKind, configure: impl FnOnce(&mut SessionsConfig)) -> Self {
        Self::with_config(kind, |config| configure(&mut config.sessions)).await
    }

    async fn with_config(kind: DbKind, configure: impl FnOnce(&mut OrchestratorConfig)) -> Self {
        let test_db = TestDb::of(kind).await;
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        let base = init_repo(&repo);
        let bus = Arc::new(MemoryBus::default());
        let mut consumer = bus
            .consumer(ConsumerConfig::new(
                "test",
                vec![Subject::all_team_events()],
            ))
            .await
            .unwrap();
        let received: Received = Arc::default();
        let sink = received.clone();
        tokio::spawn(async move {
            while let Ok(Some(d)) = consumer.next().await {
                sink.lock().unwrap().push((
                    d.subject.to_string(),
                    d.id.clone(),
                    d.payload.to_vec(),
                ));
                d.ack().await.unwrap();
            }
        });
        let mut config = OrchestratorConfig {
            server: godel_runtime::ServerConfig::local(),
            database: database(&test_db),
            sessions: sessions_config(root.path()),
            ..OrchestratorConfig::default()
        };
        configure(&mut config);
        let shutdown = CancellationToken::new();
        let issuer = TestIssuer::new();
        let running = godel_orchestrator::start_with_verifier(
            config,
            Dependencies {
                bus: bus.clone() as Arc<dyn Bus>,
            },
            issuer.verifier(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let team = TeamId::new();
        let client = Client::new(
            authed(
                &format!("http://{}", running.grpc_addr()),
                &issuer.team_admin(team),
            )
            .await,
        );
        Self {
            _bus: bus,
            client,
            shutdown,
            running: Some(running),
            received,
            root,
            repo,
            base,
            team,
            issuer,
            test_db,
        }
    }

    fn request(&self, task: TaskId, epoch: u64, sim: serde_json::Value) -> pb::StartSessionRequest {
        pb::StartSessionRequest {
            task_id: task.to_string(),
            epoch,
            team_id: self.team.to_string(),
            adapter: "sim".into(),
            repository: Some(pb::Repository {
                url: self.repo.display().to_string(),
                ..Default::default()
            }),
            prompt: "edit some files".into(),
            task_type: "code.edit".into(),
            payload_json: serde_json::json!({ "sim": sim }).to_string(),
            ..Default::default()
        }
    }

    async fn start(&mut self, request: pb::StartSessionRequest) -> pb::StartSessionResponse {
        self.client
            .start_session(request)
            .await
            .unwrap()
            .into_inner()
    }

    async fn get(&mut self, id: &str) -> pb::Session {
        self.client
            .get_session(pb::GetSessionRequest {
                team_id: self.team.to_string(),
                session_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap()
    }

    async fn wait_for_state(&mut self, id: &str, state: pb::SessionState) -> pb::Session {
        let mut client = self.client.clone();
        let team = self.team.to_string();
        let id = id.to_owned();
        eventually(&format!("session {id} is {state:?}"), WAIT, || {
            let mut client = client.clone();
            let (team, id) = (team.clone(), id.clone());
            async move {
                let s = client
                    .get_session(pb::GetSessionRequest {
                        team_id: team,
                        session_id: id,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .session
                    .unwrap();
                (s.state() == state).then_some(s)
            }
        })
        .await;
        self.get_with(&mut client, &id).await
    }

    async fn get_with(&self, client: &mut Client, id: &str) -> pb::Session {
        client
            .get_session(pb::GetSessionRequest {
                team_id: self.team.to_string(),
                session_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap()
    }

    /// Every event of the stream from `from` (following to the end with `follow`).
    async fn stream(&mut self, id: &str, from: u64, follow: bool) -> Vec<pb::SessionEvent> {
        let mut stream = self
            .client
            .stream_session_events(pb::StreamSessionEventsRequest {
                team_id: self.team.to_string(),
                session_id: id.into(),
                from_offset: from,
                follow,
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await.unwrap() {
            events.push(event);
        }
        events
    }

    /// Published events of `session` by subject event name, deduplicated by id.
    fn published(&self, session: &str) -> BTreeMap<String, Vec<Vec<u8>>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut by_event: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for (subject, id, payload) in self.received.lock().unwrap().iter() {
            let event: godel_proto::cloudevent::CloudEvent<serde_json::Value> =
                godel_proto::cloudevent::decode(payload).unwrap();
            if event.subject.as_deref() != Some(session) || !seen.insert(id.clone()) {
                continue;
            }
            let name = subject.rsplit('.').next().unwrap().to_owned();
            by_event.entry(name).or_default().push(payload.clone());
        }
        by_event
    }

    /// Shuts the service down and waits until it stopped.
    async fn stop_service(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.unwrap();
        }
    }

    async fn finish(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.unwrap();
        }
        self.test_db.cleanup().await;
        drop(self.root);
    }
}

fn offsets(events: &[pb::SessionEvent]) -> Vec<u64> {
    events.iter().map(|e| e.offset).collect()
}

fn state_changes(events: &[pb::SessionEvent]) -> Vec<pb::SessionState> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::State(change)) => Some(change.to()),
            _ => None,
        })
        .collect()
}

fn error_codes(events: &[pb::SessionEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::Error(error)) => Some(error.code.clone()),
            _ => None,
        })
        .collect()
}

/// Pids of live processes working in `dir` (their cwd is in it).
fn processes_in(dir: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|state| !matches!(state, "Z" | "X" | "x"))
            })
        })
        .collect()
}

async fn a_session_runs_to_success_and_streams_its_events(kind: DbKind) {
    let mut h = Harness::new(kind).await;
    let task = TaskId::new();
    let request = h.request(
        task,
        3,
        serde_json::json!({"edits": 4, "duration_ms": 1200, "tokens_in": 1000,
                           "tokens_out": 200, "cost_micro_usd": 3000}),
    );
    let started = h.start(request.clone()).await;
    assert!(started.created);
    let session = started.session.unwrap();
    assert_eq!(session.epoch, 3);
    assert_eq!(session.adapter, "sim");
    // The same task and epoch again: the same session.
    let again = h.start(request).await;
    assert!(!again.created);
    assert_eq!(again.session.unwrap().id, session.id);

    // Follow from the beginning; once the agent runs, follow from a middle offset too.
    let mut from_start = h
        .client
        .stream_session_events(pb::StreamSessionEventsRequest {
            team_id: h.team.to_string(),
            session_id: session.id.clone(),
            from_offset: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut all = Vec::new();
    while all.len() < 6 {
        all.push(from_start.message().await.unwrap().unwrap());
    }
    let middle = all[5].offset;
    let mut h_client = h.client.clone();
    let team = h.team.to_string();
    let id = session.id.clone();
    let from_middle = tokio::spawn(async move {
        let mut stream = h_client
            .stream_session_events(pb::StreamSessionEventsRequest {
                team_id: team,
                session_id: id,
                from_offset: middle,
                follow: true,
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await.unwrap() {
            events.push(event);
        }
        events
    });
    while let Some(event) = from_start.message().await.unwrap() {
        all.push(event);
    }
    let tail = from_middle.await.unwrap();

    let done = h.get(&session.id).await;
    assert_eq!(done.state(), pb::SessionState::Succeeded, "{done:?}");
    let last = done.last_event_offset;
    assert_eq!(
        offsets(&all),
        (1..=last).collect::<Vec<_>>(),
        "no gaps, no repeats"
    );
    assert_eq!(offsets(&tail), (middle..=last).collect::<Vec<_>>());
    assert_eq!(tail, all[(middle - 1) as usize..].to_vec());
    assert_eq!(
        state_changes(&all),
        [
            pb::SessionState::Pending,
            pb::SessionState::Starting,
            pb::SessionState::Running,
            pb::SessionState::Succeeded,
        ]
    );
    // The replay of a finished session is the same log.
    assert_eq!(h.stream(&session.id, 0, false).await, all);
    assert_eq!(h.stream(&session.id, middle, true).await, tail);

    // The confinement applied is in the events and on the session.
    let support = landlock_support().as_str();
    let runtime_started: Vec<_> = all
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::RuntimeStarted(started)) => Some(started.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(runtime_started.len(), 1);
    assert_eq!(runtime_started[0].confinement, support);
    assert_eq!(runtime_started[0].runtime, "process");
    assert_eq!(runtime_started[0].base_commit, h.base);
    assert_eq!(done.confinement, support);
    assert_eq!(done.branch, format!("godel/{task}"));

    // The agent's own events, normalized.
    let files: Vec<&str> = all
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::FileChange(change)) => Some(change.path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        files,
        [
            "sim/file-0.txt",
            "sim/file-1.txt",
            "sim/file-2.txt",
            "sim/file-3.txt"
        ]
    );
    assert!(
        all.iter()
            .any(|e| matches!(&e.body, Some(Body::AgentState(s)) if s.state == "done"))
    );

    // Result: committed on the task's branch, with its diff summary and usage.
    let usage = done.usage.unwrap();
    assert_eq!(
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.cost_micro_usd
        ),
        (1000, 200, 3000)
    );
    let result = done.result.unwrap();
    assert_eq!(result.exit_code, 0);
    assert_eq!(result.outcome, "succeeded");
    assert!(!result.commit.is_empty());
    assert_eq!(git(&h.repo, &["rev-parse", &done.branch]), result.commit);
    assert_eq!(
        git(&h.repo, &["rev-parse", &format!("{}^", result.commit)]),
        h.base
    );
    let diff = result.diff.unwrap();
    assert_eq!(diff.files_changed, 4);
    assert_eq!(diff.insertions, 12);
    assert_eq!(diff.deletions, 0);
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert!(done.error.is_empty());
    // The worktree is gone (the branch stays) and so is the agent's private home.
    assert!(!h.root.path().join("worktrees").join(&session.id).exists());
    let home = h.root.path().join("homes").join(&session.id);
    eventually("the agent's home is removed", WAIT, || {
        std::future::ready((!home.exists()).then_some(()))
    })
    .await;

    // Listing, team-scoped.
    let list = h
        .client
        .list_sessions(pb::ListSessionsRequest {
            team_id: h.team.to_string(),
            states: vec![pb::SessionState::Succeeded.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.sessions.len(), 1);
    assert_eq!(list.sessions[0].id, session.id);
    // A member of another team sees none of this team's sessions; naming this
    // team with a token of the other is refused.
    let other = TeamId::new();
    let mut outsider = h.client_of(other).await;
    let other_team = outsider
        .list_sessions(pb::ListSessionsRequest {
            team_id: other.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other_team.sessions.is_empty());
    let status = outsider
        .get_session(pb::GetSessionRequest {
            team_id: other.to_string(),
            session_id: session.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = outsider
        .get_session(pb::GetSessionRequest {
            team_id: h.team.to_string(),
            session_id: session.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    // Without a token nothing is answered.
    let mut anonymous = OrchestratorServiceClient::connect(format!(
        "http://{}",
        h.running.as_ref().unwrap().grpc_addr()
    ))
    .await
    .unwrap();
    let status = anonymous
        .list_sessions(pb::ListSessionsRequest {
            team_id: h.team.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // Every state change and every log entry reached the bus through the outbox.
    let published = eventually("every event is published", WAIT, || {
        let published = h.published(&session.id);
        let activity = published.get("activity").map_or(0, Vec::len) as u64;
        std::future::ready(
            (activity == last && published.contains_key("succeeded")).then_some(published),
        )
    })
    .await;
    for state in ["pending", "starting", "running", "succeeded"] {
        assert_eq!(published.get(state).map(Vec::len), Some(1), "{state}");
    }
    // A state event follows the activity logged up to it: the terminal one comes last.
    let order: Vec<String> = h
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, payload)| {
            godel_proto::cloudevent::decode::<serde_json::Value>(payload)
                .unwrap()
                .subject
                .as_deref()
                == Some(session.id.as_str())
        })
        .map(|(subject, _, _)| subject.rsplit('.').next().unwrap().to_owned())
        .collect();
    assert_eq!(order.first().map(String::as_str), Some("activity"));
    assert_eq!(
        order.last().map(String::as_str),
        Some("succeeded"),
        "{order:?}"
    );
    let succeeded =
        godel_proto::cloudevent::decode::<SessionStateEvent>(&published["succeeded"][0]).unwrap();
    assert_eq!(succeeded.type_, "dev.godel.session.succeeded.v1");
    assert_eq!(succeeded.data.from_state(), pb::SessionState::Running);
    assert_eq!(succeeded.data.task_id, task.to_string());
    assert_eq!(succeeded.data.epoch, 3);
    assert_eq!(succeeded.data.usage.unwrap().input_tokens, 1000);
    let mut activity: Vec<u64> = published["activity"]
        .iter()
        .map(|p| {
            godel_proto::cloudevent::decode::<SessionActivityEvent>(p)
                .unwrap()
                .data
                .event
                .unwrap()
                .offset
        })
        .collect();
    activity.sort_unstable();
    assert_eq!(activity, (1..=last).collect::<Vec<_>>());
    h.finish().await;
}

async fn a_failing_agent_fails_the_session(kind: DbKind) {
    let mut h = Harness::new(kind).await;
    let request = h.request(
        TaskId::new(),
        1,
        serde_json::json!({"edits": 1, "duration_ms": 0, "failure_rate": 1.0,
                           "failure_exit_code": 0}),
    );
    let session = h.start(request).await.session.unwrap();
    let done = h
        .wait_for_state(&session.id, pb::SessionState::Failed)
        .await;
    assert!(done.error.contains("simulated_failure"), "{done:?}");
    let result = done.result.unwrap();
    assert_eq!(
        result.exit_code, 0,
        "the agent exited 0; the stream decides"
    );
    assert!(result.commit.is_empty());
    let events = h.stream(&session.id, 0, true).await;
    assert_eq!(error_codes(&events), ["simulated_failure"]);
    assert_eq!(
        state_changes(&events).last(),
        Some(&pb::SessionState::Failed)
    );
    // The worktree is kept for inspection.
    assert!(
        h.root
            .path()
            .join("worktrees")
            .join(&session.id)
            .join("sim/file-0.txt")
            .exists()
    );
    h.finish().await;
}

async fn stop_cancels_a_running_session_and_its_process_group(kind: DbKind) {
    let mut h = Harness::new(kind).await;
    let request = h.request(
        TaskId::new(),
        1,
        serde_json::json!({"edits": 1, "duration_ms": 600000}),
    );
    let session = h.start(request).await.session.unwrap();
    let worktree = h.root.path().join("worktrees").join(&session.id);
    let id = session.id.clone();
    let client = h.client.clone();
    let team = h.team.to_string();
    eventually("the agent reported its first edit", WAIT, || {
        let mut client = client.clone();
        let (team, id) = (team.clone(), id.clone());
        async move {
            let mut stream = client
                .stream_session_events(pb::StreamSessionEventsRequest {
                    team_id: team,
                    session_id: id,
                    from_offset: 0,
                    follow: false,
                })
                .await
                .unwrap()
                .into_inner();
            while let Some(event) = stream.message().await.unwrap() {
                if matches!(event.body, Some(Body::FileChange(_))) {
                    return Some(());
                }
            }
            None
        }
    })
    .await;
    assert!(
        !processes_in(&worktree).is_empty(),
        "the agent runs in its worktree"
    );

    let stopped = h
        .client
        .stop_session(pb::StopSessionRequest {
            team_id: h.team.to_string(),
            session_id: session.id.clone(),
            reason: "no longer needed".into(),
            force: false,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(stopped.state(), pb::SessionState::Cancelled);
    assert_eq!(stopped.error, "no longer needed");
    assert!(
        processes_in(&worktree).is_empty(),
        "the process group is gone"
    );
    let events = h.stream(&session.id, 0, true).await;
    assert!(
        error_codes(&events).contains(&"interrupted".to_owned()),
        "the agent was interrupted first: {events:?}"
    );
    assert_eq!(
        state_changes(&events).last(),
        Some(&pb::SessionState::Cancelled)
    );
    // Stopping again returns the ended session.
    let again = h
        .client
        .stop_session(pb::StopSessionRequest {
            team_id: h.team.to_string(),
            session_id: session.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(again.state(), pb::SessionState::Cancelled);
    let published = eventually("the cancellation is published", WAIT, || {
        let published = h.published(&session.id);
        std::future::ready(published.contains_key("cancelled").then_some(published))
    })
    .await;
    assert_eq!(published["cancelled"].len(), 1);
    h.finish().await;
}

async fn a_stale_epoch_is_refused(kind: DbKind) {
    let mut h = Harness::new(kind).await;
    let task = TaskId::new();
    let long = serde_json::json!({"edits": 1, "duration_ms": 600000});
    let second = h.start(h.request(task, 2, long.clone())).await;
    assert!(second.created);
    let second = second.session.unwrap();

    let status = h
        .client
        .start_session(h.request(task, 1, long.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("stale"), "{status:?}");

    // Another team cannot start a session for this task.
    let other = TeamId::new();
    let mut foreign = h.request(task, 5, long.clone());
    foreign.team_id = other.to_string();
    let status = h
        .client_of(other)
        .await
        .start_session(foreign)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // A newer epoch starts a new session and stops the one holding the old epoch.
    let third = h.start(h.request(task, 3, long)).await;
    assert!(third.created);
    let third = third.session.unwrap();
    let superseded = h
        .wait_for_state(&second.id, pb::SessionState::Cancelled)
        .await;
    assert!(
        superseded.error.contains("superseded by epoch 3"),
        "{superseded:?}"
    );
    // The new attempt takes over the task's branch from the stopped one.
    let running = h.wait_for_state(&third.id, pb::SessionState::Running).await;
    assert_eq!(running.branch, format!("godel/{task}"));
    let stopped = h
        .client
        .stop_session(pb::StopSessionRequest {
            team_id: h.team.to_string(),
            session_id: third.id.clone(),
            reason: "done testing".into(),
            force: true,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(stopped.state(), pb::SessionState::Cancelled, "{stopped:?}");

    // Bad requests name their field.
    let mut bad = h.request(task, 4, serde_json::json!({"dir": "/etc"}));
    bad.adapter = "sim".into();
    let status = h.client.start_session(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        Error::from_status(&status).field.as_deref(),
        Some("payload_json")
    );
    let mut unknown = h.request(task, 4, serde_json::json!({}));
    unknown.adapter = "nope".into();
    let status = h.client.start_session(unknown).await.unwrap_err();
    assert_eq!(
        Error::from_status(&status).field.as_deref(),
        Some("adapter")
    );
    h.finish().await;
}

async fn illegal_transitions_are_refused(kind: DbKind) {
    let test_db = TestDb::of(kind).await;
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    init_repo(&repo);
    let db = godel_store::connect(&database(&test_db)).await.unwrap();
    godel_store::migrate::<Migrator>(&db).await.unwrap();
    let relay = OutboxRelay::new(
        db.clone(),
        Arc::new(MemoryBus::default()) as Arc<dyn Bus>,
        RelayConfig::new("orchestrator"),
    );
    let sessions = Sessions::new(
        db.clone(),
        relay.notifier(),
        sessions_config(root.path()),
        OrchestratorId::new(),
    );
    let team = TeamId::new();
    let started = sessions
        .start(StartSpec {
            team_id: team,
            task_id: TaskId::new(),
            epoch: 1,
            profile_id: None,
            adapter: None,
            repository: Repository {
                url: repo.display().to_string(),
                git_ref: Some("main".into()),
            },
            prompt: String::new(),
            task_type: "code.edit".into(),
            payload: serde_json::json!({"sim": {"edits": 1, "duration_ms": 0}}),
            limits: SessionLimits::default(),
        })
        .await
        .unwrap();
    assert!(started.created);
    let id = started.session.id;
    let done = eventually("the session succeeds", WAIT, || {
        let sessions = sessions.clone();
        async move {
            let s = sessions.get(team, id).await.unwrap();
            (s.state == SessionState::Succeeded).then_some(s)
        }
    })
    .await;
    for to in [
        SessionState::Running,
        SessionState::Failed,
        SessionState::Lost,
        SessionState::Pending,
    ] {
        let error = sessions.set_state(id, to, "test").await.unwrap_err();
        assert_eq!(error.code, ErrorCode::FailedPrecondition, "{to:?}: {error}");
    }
    let after = sessions.get(team, id).await.unwrap();
    assert_eq!(after.state, SessionState::Succeeded);
    assert_eq!(
        after.last_event_offset, done.last_event_offset,
        "nothing logged"
    );
    sessions.shutdown().await;
    db.close().await.unwrap();
    test_db.cleanup().await;
}

async fn limits_end_a_session_as_failed(kind: DbKind) {
    let mut h = Harness::new(kind).await;
    let mut tokens = h.request(
        TaskId::new(),
        1,
        serde_json::json!({"edits": 3, "duration_ms": 600000, "tokens_in": 3000}),
    );
    tokens.limits = Some(pb::SessionLimits {
        max_tokens: 500,
        ..Default::default()
    });
    let tokens = h.start(tokens).await.session.unwrap();
    let mut clock = h.request(
        TaskId::new(),
        1,
        serde_json::json!({"edits": 1, "duration_ms": 600000}),
    );
    clock.limits = Some(pb::SessionLimits {
        max_duration: Some(godel_proto::convert::to_duration(Duration::from_millis(
            500,
        ))),
        ..Default::default()
    });
    let clock = h.start(clock).await.session.unwrap();

    let done = h.wait_for_state(&tokens.id, pb::SessionState::Failed).await;
    assert!(done.error.contains("usage limit"), "{done:?}");
    assert_eq!(
        done.usage.unwrap().input_tokens,
        1000,
        "stopped after one step"
    );
    let done = h.wait_for_state(&clock.id, pb::SessionState::Failed).await;
    assert!(done.error.contains("wall-clock"), "{done:?}");

    // Newest first, a page at a time.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .client
            .list_sessions(pb::ListSessionsRequest {
                team_id: h.team.to_string(),
                page: Some(godel_proto::common::v1::PageRequest {
                    page_size: 1,
                    page_token: token.clone(),
                }),
                states: vec![pb::SessionState::Failed.into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.sessions.len() <= 1);
        seen.extend(page.sessions.into_iter().map(|s| s.id));
        token = page.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, [clock.id.clone(), tokens.id.clone()]);
    h.finish().await;
}

async fn a_command_adapter_runs_any_program(kind: DbKind) {
    let script = r#"echo "prompt: $GODEL_PROMPT"; echo oops >&2; echo '{"type":"done","summary":"nothing to change"}'"#;
    let mut h = Harness::with(kind, |config| {
        config.commands.insert(
            "script".into(),
            godel_orchestrator::CommandAdapter {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), script.into()],
            },
        );
    })
    .await;
    let mut request = h.request(TaskId::new(), 1, serde_json::json!({}));
    request.adapter = "script".into();
    request.payload_json = "{}".into();
    let session = h.start(request).await.session.unwrap();
    let done = h
        .wait_for_state(&session.id, pb::SessionState::Succeeded)
        .await;
    let result = done.result.unwrap();
    assert!(
        result.commit.is_empty(),
        "nothing changed, nothing committed"
    );
    assert_eq!(result.diff.unwrap().files_changed, 0);
    let events = h.stream(&session.id, 0, false).await;
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::AssistantMessage(m)) => Some(m.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, ["prompt: edit some files"]);
    assert!(events.iter().any(|e| matches!(&e.body,
        Some(Body::Raw(raw)) if raw.stream == "stderr" && raw.text == "oops")));
    h.finish().await;
}

async fn an_agent_awaiting_approval_moves_the_session(kind: DbKind) {
    // Waits for approval until `approved` appears in its worktree, then finishes.
    let script = r#"echo '{"type":"state","state":"awaiting_approval","reason":"may I push?"}'
while [ ! -e approved ]; do sleep 0.05; done
rm approved
echo '{"type":"state","state":"tool_running"}'
echo changed > result.txt
echo '{"type":"done"}'"#;
    let mut h = Harness::with(kind, |config| {
        config.commands.insert(
            "asker".into(),
            godel_orchestrator::CommandAdapter {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), script.into()],
            },
        );
    })
    .await;
    let mut request = h.request(TaskId::new(), 1, serde_json::json!({}));
    request.adapter = "asker".into();
    request.payload_json = "{}".into();
    let session = h.start(request).await.session.unwrap();
    h.wait_for_state(&session.id, pb::SessionState::AwaitingApproval)
        .await;
    let worktree = h.root.path().join("worktrees").join(&session.id);
    std::fs::write(worktree.join("approved"), "yes\n").unwrap();
    let done = h
        .wait_for_state(&session.id, pb::SessionState::Succeeded)
        .await;
    assert_eq!(done.result.unwrap().diff.unwrap().files_changed, 1);
    let events = h.stream(&session.id, 0, false).await;
    assert_eq!(
        state_changes(&events),
        [
            pb::SessionState::Pending,
            pb::SessionState::Starting,
            pb::SessionState::Running,
            pb::SessionState::AwaitingApproval,
            pb::SessionState::Running,
            pb::SessionState::Succeeded,
        ]
    );
    let published = eventually("the approval wait is published", WAIT, || {
        let published = h.published(&session.id);
        std::future::ready(published.contains_key("succeeded").then_some(published))
    })
    .await;
    assert_eq!(published.get("awaiting_approval").map(Vec::len), Some(1));
    assert_eq!(published.get("running").map(Vec::len), Some(2));
    h.finish().await;
}

async fn shutdown_cancels_running_sessions(kind: DbKind) {
    let mut h = Harness::new(kind).await;
    let session = h
        .start(h.request(
            TaskId::new(),
            1,
            serde_json::json!({"edits": 1, "duration_ms": 600000}),
        ))
        .await
        .session
        .unwrap();
    h.wait_for_state(&session.id, pb::SessionState::Running)
        .await;
    let worktree = h.root.path().join("worktrees").join(&session.id);
    eventually("the agent runs", WAIT, || {
        std::future::ready((!processes_in(&worktree).is_empty()).then_some(()))
    })
    .await;
    let mut following = h
        .client
        .stream_session_events(pb::StreamSessionEventsRequest {
            team_id: h.team.to_string(),
            session_id: session.id.clone(),
            from_offset: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let first = following.message().await.unwrap().unwrap();
    assert_eq!(first.offset, 1);
    // An open stream does not hold up the shutdown; it ends saying where to resume.
    let ended = tokio::spawn(async move {
        loop {
            match following.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without saying why"),
                Err(status) => break status,
            }
        }
    });
    h.stop_service().await;
    assert!(
        processes_in(&worktree).is_empty(),
        "no agent outlives the service"
    );
    let status = ended.await.unwrap();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("resume from offset"),
        "{status:?}"
    );

    let db = godel_store::connect(&database(&h.test_db)).await.unwrap();
    let relay = OutboxRelay::new(
        db.clone(),
        Arc::new(MemoryBus::default()) as Arc<dyn Bus>,
        RelayConfig::new("orchestrator"),
    );
    let sessions = Sessions::new(
        db.clone(),
        relay.notifier(),
        sessions_config(h.root.path()),
        OrchestratorId::new(),
    );
    let id = session.id.parse().unwrap();
    let stored = sessions.get(h.team, id).await.unwrap();
    assert_eq!(stored.state, SessionState::Cancelled);
    assert_eq!(
        stored.error.as_deref(),
        Some("the orchestrator is shutting down")
    );
    // Its end was published before the relay stopped, or waits in the outbox for
    // the next start's relay.
    let cancelled = Subject::session(h.team, "cancelled").to_string();
    eventually(
        "the cancellation is published or waits in the outbox",
        WAIT,
        || {
            let published = h.published(&session.id).contains_key("cancelled");
            let (db, cancelled) = (db.clone(), cancelled.clone());
            async move {
                let conn = db.conn();
                let row = conn
                    .query_one_raw(Statement::from_sql_and_values(
                        conn.get_database_backend(),
                        "SELECT COUNT(*) AS n FROM outbox WHERE subject = $1",
                        [cancelled.into()],
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                let waiting: i64 = row.try_get("", "n").unwrap();
                (published || waiting == 1).then_some(())
            }
        },
    )
    .await;
    db.close().await.unwrap();
    h.finish().await;
}

/// Many sessions ending at the same moment queue for the store rather than time out
/// in its connection pool: with one pooled connection and a 250 ms acquire timeout,
/// an orchestrator shutting down with forty running sessions still records how every
/// one of them ended.
async fn many_sessions_ending_at_once_all_record_their_end(kind: DbKind) {
    const SESSIONS: usize = 40;
    let mut h = Harness::with_config(kind, |config| {
        config.database.max_connections = 1;
        config.database.connect_timeout = Duration::from_millis(250);
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..SESSIONS {
        let request = h.request(
            TaskId::new(),
            1,
            serde_json::json!({"edits": 1, "duration_ms": 600000}),
        );
        ids.push(h.start(request).await.session.unwrap().id);
    }
    for id in &ids {
        h.wait_for_state(id, pb::SessionState::Running).await;
    }

    h.stop_service().await;
    let db = godel_store::connect(&database(&h.test_db)).await.unwrap();
    let relay = OutboxRelay::new(
        db.clone(),
        Arc::new(MemoryBus::default()) as Arc<dyn Bus>,
        RelayConfig::new("orchestrator"),
    );
    let sessions = Sessions::new(
        db.clone(),
        relay.notifier(),
        sessions_config(h.root.path()),
        OrchestratorId::new(),
    );
    let mut unrecorded = Vec::new();
    for id in &ids {
        let stored = sessions.get(h.team, id.parse().unwrap()).await.unwrap();
        if stored.state != SessionState::Cancelled {
            unrecorded.push((id.clone(), stored.state, stored.error));
        }
    }
    assert!(
        unrecorded.is_empty(),
        "sessions that did not record their end: {unrecorded:?}"
    );
    db.close().await.unwrap();
    h.finish().await;
}

/// The in-process runtime: the simulated agent as a task of the orchestrator — same
/// states, events and usage, no process, no worktree, no branch; a stop interrupts
/// it; only `sim` can run there.
async fn an_in_process_session_runs_without_a_process_or_worktree(kind: DbKind) {
    let mut h = Harness::new(kind).await;
    let in_process = |h: &Harness, sim: serde_json::Value| {
        let mut request = h.request(TaskId::new(), 1, sim.clone());
        request.payload_json = serde_json::json!({"runtime": "inprocess", "sim": sim}).to_string();
        request
    };
    let task = TaskId::new();
    let mut request = in_process(
        &h,
        serde_json::json!({"edits": 2, "duration_ms": 100, "tokens_in": 10, "tokens_out": 4}),
    );
    request.task_id = task.to_string();
    let session = h.start(request).await.session.unwrap();
    assert_eq!(session.runtime, "inprocess");
    let done = h
        .wait_for_state(&session.id, pb::SessionState::Succeeded)
        .await;
    let usage = done.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (10, 4));
    assert!(done.branch.is_empty(), "{done:?}");
    let events = h.stream(&session.id, 0, false).await;
    let files = events
        .iter()
        .filter(|e| matches!(e.body, Some(Body::FileChange(_))))
        .count();
    assert_eq!(files, 2, "{events:?}");
    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::RuntimeStarted(started)) => Some(started.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 1);
    assert_eq!(
        (started[0].runtime.as_str(), started[0].confinement.as_str()),
        ("inprocess", "none")
    );
    // Nothing in the repository, nothing left in the worktrees directory.
    let branches = git(&h.repo, &["branch", "--list", &format!("godel/{task}")]);
    assert!(branches.is_empty(), "{branches}");
    assert!(!h.root.path().join("worktrees").join(&session.id).exists());

    // A stop interrupts it.
    let long = h
        .start(in_process(
            &h,
            serde_json::json!({"edits": 1, "duration_ms": 600000}),
        ))
        .await
        .session
        .unwrap();
    h.wait_for_state(&long.id, pb::SessionState::Running).await;
    let stopped = h
        .client
        .stop_session(pb::StopSessionRequest {
            team_id: h.team.to_string(),
            session_id: long.id.clone(),
            reason: "enough".into(),
            force: false,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(stopped.state(), pb::SessionState::Cancelled);
    let events = h.stream(&long.id, 0, true).await;
    assert!(
        error_codes(&events).contains(&"interrupted".to_owned()),
        "{events:?}"
    );

    // Only the simulated agent runs in process.
    let mut request = in_process(&h, serde_json::json!({}));
    request.adapter = "pi".into();
    let refused = h.client.start_session(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    h.finish().await;
}

macro_rules! on_both {
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

on_both!(
    a_session_runs_to_success_and_streams_its_events,
    a_failing_agent_fails_the_session,
    stop_cancels_a_running_session_and_its_process_group,
    a_stale_epoch_is_refused,
    illegal_transitions_are_refused,
    limits_end_a_session_as_failed,
    a_command_adapter_runs_any_program,
    an_agent_awaiting_approval_moves_the_session,
    shutdown_cancels_running_sessions,
    many_sessions_ending_at_once_all_record_their_end,
    an_in_process_session_runs_without_a_process_or_worktree,
);
