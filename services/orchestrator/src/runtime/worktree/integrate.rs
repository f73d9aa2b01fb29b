//! Plan integration: each finished task's branch is merged, in dependency order, onto
//! the plan's integration branch `godel/plan-<plan-id>`, and a failed plan is rolled
//! back by resetting that branch to the commit the plan started from.
//!
//! No worktree is involved: a merge is `git merge-tree --write-tree` (the merged tree,
//! or the conflicted files), then `git commit-tree` with both parents, then
//! `git update-ref` of the integration branch from the head the merge was computed
//! on — a compare-and-swap, so two merges into one plan never lose each other (the
//! loser computes its merge again on the new head). Only `godel/plan-…` refs are ever
//! written: the user's own branches are never touched.

use std::path::Path;

use godel_types::PlanId;

use super::{WorktreeError, git, git_output, resolve};

/// How often a merge is computed again after another merge moved the branch.
const MAX_RACES: usize = 8;

/// The integration branch of `plan`.
pub fn integration_branch(plan: PlanId) -> String {
    format!("godel/plan-{plan}")
}

/// What merging a task's branch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// The integration branch now points at this merge commit (or at the task's
    /// commit, when the branch had not moved since the task started: fast-forward).
    Merged { commit: String },
    /// The task's commit was already on the integration branch.
    AlreadyMerged { head: String },
    /// The task's changes conflict with the branch in these files; nothing changed.
    Conflict { files: Vec<String> },
}

/// Creates `plan`'s integration branch at `base` unless it exists; returns its head.
pub async fn start(repo: &Path, plan: PlanId, base: &str) -> Result<String, WorktreeError> {
    let branch = integration_branch(plan);
    let base = resolve(repo, base).await?;
    // `update-ref <ref> <new> <zero>` creates it only if it does not exist.
    let zero = "0".repeat(base.len());
    if git(
        repo,
        ["update-ref", &format!("refs/heads/{branch}"), &base, &zero],
    )
    .await
    .is_ok()
    {
        return Ok(base);
    }
    resolve(repo, &branch).await
}

/// Merges `task_branch` onto `plan`'s integration branch (which [`start`] created).
pub async fn merge(
    repo: &Path,
    plan: PlanId,
    task_branch: &str,
    message: &str,
) -> Result<Merge, WorktreeError> {
    let branch = integration_branch(plan);
    let theirs = resolve(repo, task_branch).await?;
    for _ in 0..MAX_RACES {
        let head = resolve(repo, &branch).await?;
        if is_ancestor(repo, &theirs, &head).await? {
            return Ok(Merge::AlreadyMerged { head });
        }
        let commit = if is_ancestor(repo, &head, &theirs).await? {
            theirs.clone()
        } else {
            match merged_tree(repo, &head, &theirs).await? {
                Ok(tree) => git(
                    repo,
                    [
                        "commit-tree",
                        &tree,
                        "-p",
                        &head,
                        "-p",
                        &theirs,
                        "-m",
                        message,
                    ],
                )
                .await?
                .trim()
                .to_owned(),
                Err(files) => return Ok(Merge::Conflict { files }),
            }
        };
        // Compare-and-swap: fails when another merge moved the branch meanwhile.
        if git(
            repo,
            [
                "update-ref",
                &format!("refs/heads/{branch}"),
                &commit,
                &head,
            ],
        )
        .await
        .is_ok()
        {
            return Ok(Merge::Merged { commit });
        }
    }
    Err(WorktreeError::Git {
        args: format!("update-ref refs/heads/{branch}"),
        dir: repo.to_path_buf(),
        stderr: format!("the branch kept moving: gave up after {MAX_RACES} merges"),
    })
}

/// Resets `plan`'s integration branch to `base`, the commit the plan started from.
pub async fn rollback(repo: &Path, plan: PlanId, base: &str) -> Result<(), WorktreeError> {
    let base = resolve(repo, base).await?;
    git(
        repo,
        [
            "update-ref",
            &format!("refs/heads/{}", integration_branch(plan)),
            &base,
        ],
    )
    .await?;
    Ok(())
}

async fn is_ancestor(repo: &Path, ancestor: &str, of: &str) -> Result<bool, WorktreeError> {
    match git(repo, ["merge-base", "--is-ancestor", ancestor, of]).await {
        Ok(_) => Ok(true),
        // Exit 1: not an ancestor. Anything else (a bad object) fails the same way
        // here and is caught by the merge itself.
        Err(WorktreeError::Git { .. }) => Ok(false),
        Err(other) => Err(other),
    }
}

/// The tree of merging `theirs` into `ours`, or the conflicted files.
async fn merged_tree(
    repo: &Path,
    ours: &str,
    theirs: &str,
) -> Result<Result<String, Vec<String>>, WorktreeError> {
    let (shown, output) = git_output(
        repo,
        [
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            ours,
            theirs,
        ],
    )
    .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    let tree = lines.next().unwrap_or_default().trim().to_owned();
    match output.status.code() {
        Some(0) if !tree.is_empty() => Ok(Ok(tree)),
        // Exit 1: conflicts; the lines after the tree name the conflicted files.
        Some(1) => {
            let mut files: Vec<String> = lines
                .take_while(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            files.sort();
            files.dedup();
            Ok(Err(files))
        }
        _ => Err(WorktreeError::Git {
            args: shown,
            dir: repo.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }),
    }
}
