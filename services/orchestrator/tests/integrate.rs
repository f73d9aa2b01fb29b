//! Plan integration on a real repository: task branches merged in dependency order
//! onto `godel/plan-<id>` (fast-forward, merge commits, repeats), a conflict named by
//! its files with nothing changed, concurrent merges that lose nothing, and rollback
//! to the plan's start — with the user's own branch never touched.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use godel_orchestrator::runtime::worktree::integrate::{
    Merge, integration_branch, merge, rollback, start,
};
use godel_test_utils::git::{git, init_repo};
use godel_types::PlanId;

/// A branch `name` from `base` with one commit writing `file`.
fn task_branch(repo: &Path, name: &str, base: &str, file: &str, content: &str) -> String {
    git(repo, &["checkout", "--quiet", "-b", name, base]);
    std::fs::write(repo.join(file), content).unwrap();
    git(repo, &["add", file]);
    git(repo, &["commit", "--quiet", "-m", name]);
    let head = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["checkout", "--quiet", "main"]);
    head
}

fn files_at(repo: &Path, rev: &str) -> Vec<String> {
    let mut files: Vec<String> = git(repo, &["ls-tree", "--name-only", rev])
        .lines()
        .map(str::to_owned)
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn task_branches_merge_in_order_and_a_conflict_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let base = init_repo(&repo);
    let main_before = git(&repo, &["rev-parse", "main"]);
    let plan = PlanId::new();
    let branch = integration_branch(plan);
    assert_eq!(start(&repo, plan, "main").await.unwrap(), base);
    // Starting again keeps the branch where it is.
    assert_eq!(start(&repo, plan, "main").await.unwrap(), base);

    let a = task_branch(&repo, "godel/a", &base, "a.txt", "a\n");
    let b = task_branch(&repo, "godel/b", &base, "b.txt", "b\n");
    let clash = task_branch(&repo, "godel/clash", &base, "a.txt", "not a\n");

    // The first finished task fast-forwards; the second needs a merge commit.
    assert_eq!(
        merge(&repo, plan, "godel/a", "merge a").await.unwrap(),
        Merge::Merged { commit: a.clone() }
    );
    let Merge::Merged { commit: ab } = merge(&repo, plan, "godel/b", "merge b").await.unwrap()
    else {
        panic!("b merges")
    };
    assert_eq!(git(&repo, &["rev-parse", &branch]), ab);
    assert_eq!(
        git(&repo, &["rev-list", "--parents", "-n", "1", &ab]),
        format!("{ab} {a} {b}")
    );
    assert_eq!(files_at(&repo, &branch), ["README.md", "a.txt", "b.txt"]);
    // Merging a task again changes nothing.
    assert_eq!(
        merge(&repo, plan, "godel/a", "again").await.unwrap(),
        Merge::AlreadyMerged { head: ab.clone() }
    );

    // A conflicting task names the file and leaves the branch alone.
    assert_eq!(
        merge(&repo, plan, "godel/clash", "merge clash")
            .await
            .unwrap(),
        Merge::Conflict {
            files: vec!["a.txt".to_owned()]
        }
    );
    assert_eq!(git(&repo, &["rev-parse", &branch]), ab);
    assert_eq!(git(&repo, &["rev-parse", "godel/clash"]), clash);

    // Rollback: back to the start; the user's branch and the task branches stay.
    rollback(&repo, plan, &base).await.unwrap();
    assert_eq!(git(&repo, &["rev-parse", &branch]), base);
    assert_eq!(git(&repo, &["rev-parse", "main"]), main_before);
    assert_eq!(git(&repo, &["rev-parse", "godel/a"]), a);
    // The working tree the user has checked out was not touched either.
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_merges_into_one_plan_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let base = init_repo(&repo);
    let plan = PlanId::new();
    start(&repo, plan, &base).await.unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("godel/t{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        task_branch(&repo, name, &base, &format!("f{i}.txt"), "x\n");
    }
    let merges = names.iter().map(|name| {
        let repo = repo.clone();
        let name = name.clone();
        tokio::spawn(async move { merge(&repo, plan, &name, "merge").await.unwrap() })
    });
    for handle in merges.collect::<Vec<_>>() {
        assert!(matches!(handle.await.unwrap(), Merge::Merged { .. }));
    }
    let mut expected: Vec<String> = (0..6).map(|i| format!("f{i}.txt")).collect();
    expected.push("README.md".to_owned());
    expected.sort();
    assert_eq!(files_at(&repo, &integration_branch(plan)), expected);
}
