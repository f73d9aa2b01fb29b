//! The worktree runtime end to end: real git repositories in temp dirs, the real
//! `godel-sim-agent` binary and real shell processes under limits and Landlock.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use godel_orchestrator::runtime::confine::{ConfinementLevel, landlock_support};
use godel_orchestrator::runtime::event::{EventBody, INTERRUPTED, Verdict};
use godel_orchestrator::runtime::process::{
    self, AgentProcess, AgentSpec, ENV_ALLOW_LIST, Interrupt, RunEnd, StdinMode, StopPolicy,
    StopStep, live_group_members,
};
use godel_orchestrator::runtime::worktree::{
    Finished, RepoSource, WorktreeConfig, WorktreeManager,
};
use godel_test_utils::eventually;
use godel_test_utils::git::{git, init_repo};
use godel_types::{SessionId, TaskId};
use tokio_util::sync::CancellationToken;

const SIM_AGENT: &str = env!("CARGO_BIN_EXE_godel-sim-agent");

struct Fixture {
    root: tempfile::TempDir,
    manager: WorktreeManager,
}

impl Fixture {
    fn new(keep_failed_for: Duration) -> Self {
        let root = tempfile::tempdir().unwrap();
        let manager = WorktreeManager::new(WorktreeConfig {
            worktrees_dir: root.path().join("worktrees"),
            cache_dir: root.path().join("cache"),
            keep_failed_for,
        });
        Self { root, manager }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn home(&self, session: SessionId) -> PathBuf {
        self.path("homes").join(session.to_string())
    }

    /// A plain working directory (no git) with its home beside it.
    fn workdir(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        (dir, self.path(&format!("{name}-home")))
    }
}

fn sh(script: &str, workdir: &Path, home: &Path) -> AgentSpec {
    AgentSpec::new("/bin/sh", ["-c", script], workdir, home)
}

fn quick_stop() -> StopPolicy {
    StopPolicy {
        interrupt_wait: Duration::from_secs(2),
        term_wait: Duration::from_secs(2),
        kill_wait: Duration::from_secs(2),
        ..StopPolicy::default()
    }
}

fn messages(report: &process::RunReport) -> Vec<String> {
    report
        .events
        .iter()
        .filter_map(|event| match &event.body {
            EventBody::AssistantMessage { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_session_commits_its_work_on_its_branch() {
    let fx = Fixture::new(Duration::from_secs(3600));
    let repo = fx.path("repo");
    let user_head = init_repo(&repo);
    let (session, task) = (SessionId::new(), TaskId::new());
    let worktree = fx
        .manager
        .create(session, task, &RepoSource::Local(repo.clone()), None)
        .await
        .unwrap();
    assert_eq!(worktree.branch, format!("godel/{task}"));
    assert_eq!(worktree.base_commit, user_head);
    assert!(worktree.path.join("README.md").exists());

    let spec = AgentSpec::new(
        SIM_AGENT,
        [
            "--edits",
            "3",
            "--duration-ms",
            "150",
            "--tokens-in",
            "1200",
            "--tokens-out",
            "300",
            "--cost-micro-usd",
            "4500",
        ],
        &worktree.path,
        fx.home(session),
    );
    let mut seen = 0;
    let report = process::run(&spec, &CancellationToken::new(), |_| seen += 1)
        .await
        .unwrap();
    assert_eq!(report.verdict, Verdict::Succeeded, "{:?}", report.events);
    assert_eq!(report.end, RunEnd::Exited);
    assert_eq!(seen, report.events.len());
    let changed: Vec<&str> = report
        .events
        .iter()
        .filter_map(|event| match &event.body {
            EventBody::FileChange { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        changed,
        ["sim/file-0.txt", "sim/file-1.txt", "sim/file-2.txt"]
    );
    let usage = report
        .events
        .iter()
        .fold((0, 0, 0), |acc, event| match event.body {
            EventBody::Usage {
                input_tokens,
                output_tokens,
                cost_micro_usd,
            } => (
                acc.0 + input_tokens,
                acc.1 + output_tokens,
                acc.2 + cost_micro_usd,
            ),
            _ => acc,
        });
    assert_eq!(usage, (1200, 300, 4500));
    assert!(report.events.iter().any(
        |event| matches!(event.body, EventBody::ToolCall { ref name, .. } if name == "write_file")
    ));
    assert!(report.events.iter().all(|event| !event.raw.is_empty()));

    let finished = fx.manager.finish(&worktree, true).await.unwrap();
    let Finished::Committed {
        commit: Some(commit),
        diff,
    } = finished
    else {
        panic!("expected a commit, got {finished:?}");
    };
    assert_eq!(diff.files_changed, 3);
    assert_eq!(diff.insertions, 9);
    assert_eq!(diff.deletions, 0);
    let files: Vec<&str> = diff.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, changed);

    // The commit is on the session's branch, by Godel, naming the task.
    assert_eq!(git(&repo, &["rev-parse", &worktree.branch]), commit);
    assert_eq!(git(&repo, &["rev-parse", &format!("{commit}^")]), user_head);
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%an <%ae>", &commit]),
        "Godel <godel@localhost>"
    );
    assert!(git(&repo, &["log", "-1", "--format=%B", &commit]).contains(&task.to_string()));
    // The user's checkout is untouched; the worktree is gone and pruned.
    assert_eq!(git(&repo, &["symbolic-ref", "--short", "HEAD"]), "main");
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), user_head);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    assert!(!repo.join("sim").exists());
    assert!(!worktree.path.exists());
    assert_eq!(
        git(&repo, &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_failure_in_the_stream_fails_the_session_even_with_exit_zero() {
    let fx = Fixture::new(Duration::ZERO);
    let repo = fx.path("repo");
    init_repo(&repo);
    let (session, task) = (SessionId::new(), TaskId::new());
    let worktree = fx
        .manager
        .create(session, task, &RepoSource::Local(repo.clone()), None)
        .await
        .unwrap();
    let spec = AgentSpec::new(
        SIM_AGENT,
        [
            "--edits",
            "1",
            "--duration-ms",
            "0",
            "--failure-rate",
            "1.0",
            "--failure-exit-code",
            "0",
        ],
        &worktree.path,
        fx.home(session),
    );
    let report = process::run(&spec, &CancellationToken::new(), |_| {})
        .await
        .unwrap();
    assert!(report.exit.unwrap().success(), "the agent exits 0");
    let Verdict::Failed { reason } = &report.verdict else {
        panic!("expected a failure, got {:?}", report.verdict);
    };
    assert!(reason.contains("simulated_failure"), "{reason}");

    // Kept on failure, then swept once its time (zero here) is up.
    let finished = fx.manager.finish(&worktree, false).await.unwrap();
    assert!(matches!(finished, Finished::Kept { .. }));
    assert!(worktree.path.join("sim/file-0.txt").exists());
    let swept = fx.manager.sweep().await.unwrap();
    assert_eq!(swept, std::slice::from_ref(&worktree.path));
    assert!(!worktree.path.exists());
    assert_eq!(
        git(&repo, &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
}

#[tokio::test]
async fn kept_worktrees_stay_until_their_time_is_up() {
    let fx = Fixture::new(Duration::from_secs(3600));
    let repo = fx.path("repo");
    init_repo(&repo);
    let worktree = fx
        .manager
        .create(
            SessionId::new(),
            TaskId::new(),
            &RepoSource::Local(repo),
            None,
        )
        .await
        .unwrap();
    fx.manager.finish(&worktree, false).await.unwrap();
    assert!(fx.manager.sweep().await.unwrap().is_empty());
    assert!(worktree.path.exists());
}

#[tokio::test]
async fn a_url_repository_is_cloned_once_and_fetched_before_use() {
    let fx = Fixture::new(Duration::ZERO);
    let origin = fx.path("origin");
    let first = init_repo(&origin);
    let url = format!("file://{}", origin.display());
    let source = RepoSource::Url(url);
    let one = fx
        .manager
        .create(SessionId::new(), TaskId::new(), &source, None)
        .await
        .unwrap();
    assert_eq!(one.base_commit, first);
    assert!(one.repo.starts_with(fx.path("cache")));

    std::fs::write(origin.join("NEW.md"), "new\n").unwrap();
    git(&origin, &["add", "NEW.md"]);
    git(&origin, &["commit", "--quiet", "-m", "second"]);
    let second = git(&origin, &["rev-parse", "HEAD"]);
    let two = fx
        .manager
        .create(SessionId::new(), TaskId::new(), &source, Some("main"))
        .await
        .unwrap();
    assert_eq!(two.repo, one.repo, "one clone per URL");
    assert_eq!(two.base_commit, second, "fetched before use");
    assert!(two.path.join("NEW.md").exists());
}

#[tokio::test]
async fn cancel_interrupts_the_agent_first() {
    let fx = Fixture::new(Duration::ZERO);
    let (dir, home) = fx.workdir("work");
    let spec = AgentSpec {
        stop: quick_stop(),
        ..AgentSpec::new(
            SIM_AGENT,
            ["--edits", "1", "--duration-ms", "600000"],
            &dir,
            &home,
        )
    };
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let report = process::run(&spec, &cancel, move |event| {
        if matches!(event.body, EventBody::FileChange { .. }) {
            trigger.cancel();
        }
    })
    .await
    .unwrap();
    assert_eq!(report.end, RunEnd::Cancelled);
    let stop = report.stop.unwrap();
    assert_eq!(stop.step, StopStep::Interrupt, "SIGINT was enough");
    assert!(stop.survivors.is_empty());
    assert!(
        report.events.iter().any(
            |event| matches!(&event.body, EventBody::Error { code, .. } if code == INTERRUPTED)
        ),
        "{:?}",
        report.events
    );
}

#[tokio::test]
async fn stop_ends_the_whole_process_group() {
    let fx = Fixture::new(Duration::ZERO);
    let (dir, home) = fx.workdir("work");
    let spec = sh("sleep 1000 & sleep 1000 & wait", &dir, &home);
    let mut agent = AgentProcess::spawn(&spec).unwrap();
    let pgid = agent.pgid();
    eventually(
        "the shell and both sleeps run",
        Duration::from_secs(10),
        || async { (live_group_members(pgid).len() >= 3).then_some(()) },
    )
    .await;
    let report = agent.stop(&quick_stop()).await.unwrap();
    assert!(report.survivors.is_empty(), "{report:?}");
    assert_ne!(report.step, StopStep::None);
    assert!(live_group_members(pgid).is_empty());
    assert!(agent.exit_status().is_some());
}

#[tokio::test]
async fn the_cpu_limit_stops_a_runaway() {
    let fx = Fixture::new(Duration::ZERO);
    let (dir, home) = fx.workdir("work");
    let mut spec = sh("while :; do :; done", &dir, &home);
    spec.limits.cpu_seconds = Some(1);
    spec.limits.wall_clock = Some(Duration::from_secs(60));
    let report = process::run(&spec, &CancellationToken::new(), |_| {})
        .await
        .unwrap();
    assert_eq!(
        report.end,
        RunEnd::Exited,
        "stopped by the CPU limit, not the clock"
    );
    let Verdict::Failed { reason } = &report.verdict else {
        panic!("expected a failure, got {:?}", report.verdict);
    };
    assert!(
        reason.contains("SIGXCPU") || reason.contains("SIGKILL"),
        "{reason}"
    );
}

#[tokio::test]
async fn the_wall_clock_limit_stops_a_sleeper_and_its_children() {
    let fx = Fixture::new(Duration::ZERO);
    let (dir, home) = fx.workdir("work");
    let mut spec = sh("sleep 1000 & sleep 1000", &dir, &home);
    spec.limits.wall_clock = Some(Duration::from_millis(300));
    spec.stop = quick_stop();
    let report = process::run(&spec, &CancellationToken::new(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.end, RunEnd::WallClock);
    assert!(matches!(report.verdict, Verdict::Failed { .. }));
    assert!(report.stop.unwrap().survivors.is_empty());
}

#[tokio::test]
async fn the_file_size_limit_stops_a_large_write() {
    let fx = Fixture::new(Duration::ZERO);
    let (dir, home) = fx.workdir("work");
    let mut spec = sh(
        "head -c 10000000 /dev/zero > big.bin; echo status=$?",
        &dir,
        &home,
    );
    spec.limits.file_size_bytes = Some(1 << 20);
    let report = process::run(&spec, &CancellationToken::new(), |_| {})
        .await
        .unwrap();
    let size = std::fs::metadata(dir.join("big.bin")).unwrap().len();
    assert!(size <= 1 << 20, "the file grew to {size} bytes");
    // 128 + SIGXFSZ (25): head was killed by the limit.
    assert_eq!(messages(&report), ["status=153"]);
}

#[tokio::test]
async fn stdin_is_dev_null() {
    let fx = Fixture::new(Duration::ZERO);
    let (dir, home) = fx.workdir("work");
    let mut spec = sh("cat; echo eof", &dir, &home);
    spec.limits.wall_clock = Some(Duration::from_secs(30));
    let report = process::run(&spec, &CancellationToken::new(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.end, RunEnd::Exited);
    assert_eq!(messages(&report), ["eof"]);
}

#[tokio::test]
async fn an_rpc_agent_is_interrupted_through_its_stdin_pipe() {
    let fx = Fixture::new(Duration::ZERO);
    let (dir, home) = fx.workdir("work");
    let mut spec = sh("echo ready; read line; echo got=$line", &dir, &home);
    spec.stdin = StdinMode::Pipe;
    spec.stop = StopPolicy {
        interrupt: Interrupt::Stdin(b"abort\n".to_vec()),
        ..quick_stop()
    };
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let report = process::run(&spec, &cancel, move |event| {
        if event.raw == "ready" {
            trigger.cancel();
        }
    })
    .await
    .unwrap();
    assert_eq!(report.end, RunEnd::Cancelled);
    assert_eq!(messages(&report), ["ready", "got=abort"]);
    assert_eq!(report.stop.unwrap().step, StopStep::Interrupt);
}

#[tokio::test]
async fn landlock_confines_a_session_to_its_worktree() {
    let fx = Fixture::new(Duration::ZERO);
    let repo = fx.path("repo");
    init_repo(&repo);
    let other = fx
        .manager
        .create(
            SessionId::new(),
            TaskId::new(),
            &RepoSource::Local(repo.clone()),
            None,
        )
        .await
        .unwrap();
    std::fs::write(other.path.join("secret.txt"), "other-session-secret\n").unwrap();
    let key_file = fx.path("orchestrator-kek.key");
    std::fs::write(&key_file, "orchestrator-key-material\n").unwrap();

    let session = SessionId::new();
    let mine = fx
        .manager
        .create(session, TaskId::new(), &RepoSource::Local(repo), None)
        .await
        .unwrap();
    let script = format!(
        "cat README.md; echo own=$?; cat '{}'; echo other=$?; cat '{}'; echo key=$?; echo x > '{}/planted'; echo write=$?",
        other.path.join("secret.txt").display(),
        key_file.display(),
        fx.root.path().display(),
    );
    let spec = sh(&script, &mine.path, &fx.home(session));
    let report = process::run(&spec, &CancellationToken::new(), |_| {})
        .await
        .unwrap();
    let out = messages(&report);
    let support = landlock_support();
    eprintln!("Landlock on this kernel: {}", support.as_str());
    assert_eq!(report.confinement, support);
    assert!(out.contains(&"own=0".to_owned()), "{out:?}");
    if support == ConfinementLevel::None {
        // This kernel has no Landlock: nothing confines the filesystem, and the
        // session says so.
        assert_eq!(report.confinement.as_str(), "none");
        return;
    }
    assert!(out.contains(&"other=1".to_owned()), "{out:?}");
    assert!(out.contains(&"key=1".to_owned()), "{out:?}");
    assert!(
        out.contains(&"write=2".to_owned()) || out.contains(&"write=1".to_owned()),
        "{out:?}"
    );
    let all: String = report.events.iter().map(|e| e.raw.as_str()).collect();
    assert!(!all.contains("other-session-secret"), "{all}");
    assert!(!all.contains("orchestrator-key-material"), "{all}");
    assert!(all.contains("Permission denied"), "{all}");
    assert!(!fx.root.path().join("planted").exists());
}

#[test]
fn the_child_sees_only_allow_listed_variables() {
    // SAFETY: `set_var` is unsound only when another thread reads the environment
    // through libc at the same time; this runs before any runtime or child process of
    // this test exists, and std's own environment accesses are locked.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("GODEL_CANARY_SECRET", "canary-3f1e");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fx = Fixture::new(Duration::ZERO);
        let (dir, home) = fx.workdir("work");
        let mut spec = AgentSpec::new("/usr/bin/env", Vec::<String>::new(), &dir, &home);
        spec.env
            .push(("GODEL_SESSION_TOKEN".into(), "session-token".into()));
        let report = process::run(&spec, &CancellationToken::new(), |_| {})
            .await
            .unwrap();
        let raw: Vec<&str> = report.events.iter().map(|e| e.raw.as_str()).collect();
        assert!(
            !raw.iter().any(|line| line.contains("canary-3f1e")),
            "{raw:?}"
        );
        let names: BTreeSet<&str> = raw
            .iter()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        let mut allowed: BTreeSet<&str> = ENV_ALLOW_LIST.iter().copied().collect();
        allowed.extend([
            "HOME",
            "XDG_CONFIG_HOME",
            "XDG_CACHE_HOME",
            "XDG_DATA_HOME",
            "TMPDIR",
            "GODEL_SESSION_TOKEN",
        ]);
        assert!(names.is_subset(&allowed), "unexpected variables: {names:?}");
        assert!(names.contains("GODEL_SESSION_TOKEN") && names.contains("PATH"));
        let home_line = format!("HOME={}", home.display());
        assert!(raw.contains(&home_line.as_str()), "{raw:?}");
        assert!(!home.starts_with(&dir));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worktrees_of_one_repository_come_and_go_concurrently() {
    let fx = Fixture::new(Duration::ZERO);
    let repo = fx.path("repo");
    init_repo(&repo);
    let manager = std::sync::Arc::new(WorktreeManager::new(fx.manager.config().clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..8 {
        let (manager, repo) = (manager.clone(), repo.clone());
        tasks.spawn(async move {
            let worktree = manager
                .create(
                    SessionId::new(),
                    TaskId::new(),
                    &RepoSource::Local(repo),
                    None,
                )
                .await
                .unwrap();
            std::fs::write(worktree.path.join(format!("f{n}.txt")), "x\n").unwrap();
            manager.finish(&worktree, n % 2 == 0).await.unwrap()
        });
    }
    let mut committed = 0;
    while let Some(finished) = tasks.join_next().await {
        if matches!(
            finished.unwrap(),
            Finished::Committed {
                commit: Some(_),
                ..
            }
        ) {
            committed += 1;
        }
    }
    assert_eq!(committed, 4);
    assert_eq!(manager.sweep().await.unwrap().len(), 4);
    assert_eq!(
        git(&repo, &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
}

/// Under Landlock git works in the session's own worktree (its admin directory
/// read-write, the repository's git directory read-only), while another session's
/// files, the repository's own checkout and writes into the git directory stay
/// refused.
#[tokio::test]
async fn git_works_in_a_confined_worktree() {
    let fx = Fixture::new(Duration::ZERO);
    let repo = fx.path("repo");
    init_repo(&repo);
    let other = fx
        .manager
        .create(
            SessionId::new(),
            TaskId::new(),
            &RepoSource::Local(repo.clone()),
            None,
        )
        .await
        .unwrap();
    std::fs::write(other.path.join("secret.txt"), "other-session-secret\n").unwrap();

    let session = SessionId::new();
    let mine = fx
        .manager
        .create(
            session,
            TaskId::new(),
            &RepoSource::Local(repo.clone()),
            None,
        )
        .await
        .unwrap();
    std::fs::write(mine.path.join("README.md"), "changed by the agent\n").unwrap();
    let script = format!(
        "git status --porcelain; echo status=$?; \
         git diff --stat; echo diff=$?; \
         git log -1 --format=log=%H; \
         cat '{other}/secret.txt'; echo other=$?; \
         git -C '{other}' status --porcelain; echo other_git=$?; \
         cat '{repo}/README.md' >/dev/null; echo checkout=$?; \
         echo x > '{repo}/.git/planted'; echo gitwrite=$?",
        other = other.path.display(),
        repo = repo.display(),
    );
    let mut spec = sh(&script, &mine.path, &fx.home(session));
    assert!(
        spec.allow_worktree_git(),
        "the workdir is a linked worktree"
    );
    let report = process::run(&spec, &CancellationToken::new(), |_| {})
        .await
        .unwrap();
    let out = messages(&report);
    let all: String = report
        .events
        .iter()
        .map(|e| format!("{}\n", e.raw))
        .collect();
    assert!(out.contains(&"status=0".to_owned()), "{all}");
    assert!(out.contains(&"diff=0".to_owned()), "{all}");
    assert!(out.contains(&" M README.md".to_owned()), "{all}");
    assert!(
        all.contains("README.md | "),
        "git diff sees the change: {all}"
    );
    assert!(
        out.contains(&format!("log={}", mine.base_commit)),
        "git log reads the repository's objects: {all}"
    );
    let support = landlock_support();
    eprintln!("Landlock on this kernel: {}", support.as_str());
    assert_eq!(report.confinement, support);
    if support == ConfinementLevel::None {
        // No Landlock here: nothing is confined, which the session reports.
        return;
    }
    assert!(out.contains(&"other=1".to_owned()), "{all}");
    assert!(!out.contains(&"other_git=0".to_owned()), "{all}");
    assert!(!all.contains("other-session-secret"), "{all}");
    assert!(out.contains(&"checkout=1".to_owned()), "{all}");
    assert!(
        out.contains(&"gitwrite=2".to_owned()) || out.contains(&"gitwrite=1".to_owned()),
        "{all}"
    );
    assert!(!repo.join(".git/planted").exists());
}
