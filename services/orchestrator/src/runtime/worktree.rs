//! The worktree runtime's workspaces: one `git worktree` per session on the branch
//! `godel/<task-id>`, the work committed there when the session succeeds, and a
//! cleanup policy (removed on success, kept for a while on failure, swept later).
//!
//! A repository is a local path, or a URL cloned once (bare) into a cache directory
//! and fetched before each use. Every git command runs through the `git` CLI with a
//! cleared environment: no system or global configuration, no prompts, no hooks.

mod gitdir;
pub mod integrate;
mod strays;

pub use gitdir::{GitDirs, git_dirs};

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use godel_types::{SessionId, TaskId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// The author and committer of session commits.
pub const AUTHOR_NAME: &str = "Godel";
pub const AUTHOR_EMAIL: &str = "godel@localhost";

/// Where worktrees and repository clones live, and how long failed ones are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeConfig {
    /// Worktrees are created as `<worktrees_dir>/<session-id>`.
    pub worktrees_dir: PathBuf,
    /// Bare clones of URL repositories.
    pub cache_dir: PathBuf,
    /// How long the worktree of a failed session is kept for inspection.
    pub keep_failed_for: Duration,
}

/// The repository a session works in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoSource {
    /// A repository on this machine, used in place (worktrees are added to it).
    Local(PathBuf),
    /// A clone URL (anything `git clone` accepts), cloned into the cache.
    Url(String),
}

/// A session's worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worktree {
    pub path: PathBuf,
    /// `godel/<task-id>`.
    pub branch: String,
    /// The commit the branch started from.
    pub base_commit: String,
    /// The repository the worktree belongs to (a local repository or a cached clone).
    pub repo: PathBuf,
    pub task_id: TaskId,
    pub session_id: SessionId,
}

/// Lines added and removed in one file; `None` for a binary file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    pub path: String,
    pub insertions: Option<u64>,
    pub deletions: Option<u64>,
}

/// What a session changed against its base commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffSummary {
    pub files_changed: usize,
    pub insertions: u64,
    pub deletions: u64,
    pub files: Vec<FileStat>,
}

/// What [`WorktreeManager::finish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The work was committed (`None` when there was nothing to commit) and the
    /// worktree removed.
    Committed {
        commit: Option<String>,
        diff: DiffSummary,
    },
    /// The worktree is kept until `until`, then [`WorktreeManager::sweep`] removes it.
    Kept { until: SystemTime },
}

/// Why a worktree operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    #[error("cannot run git {args} in {dir}")]
    Spawn {
        args: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("git {args} failed in {dir}: {stderr}")]
    Git {
        args: String,
        dir: PathBuf,
        stderr: String,
    },
    #[error("cannot find the commit {git_ref} in {repo}")]
    UnknownRef { git_ref: String, repo: PathBuf },
    #[error("cannot use the directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the numstat output of git diff: {line}")]
    Numstat { line: String },
}

/// The record of a kept worktree, stored outside it.
#[derive(Debug, Serialize, Deserialize)]
struct KeptMarker {
    path: PathBuf,
    repo: PathBuf,
    expires_at_unix: u64,
}

/// Creates, finishes and cleans up session worktrees.
#[derive(Debug)]
pub struct WorktreeManager {
    config: WorktreeConfig,
    /// Serializes cloning and fetching into the cache.
    cache_lock: Mutex<()>,
    /// One lock per repository: git's worktree bookkeeping (`add`, `remove`,
    /// `prune`) is not safe to run concurrently in one repository — an `add` reads
    /// another's half-written entry, a `prune` removes it.
    repo_locks: std::sync::Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

impl WorktreeManager {
    pub fn new(config: WorktreeConfig) -> Self {
        Self {
            config,
            cache_lock: Mutex::new(()),
            repo_locks: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The lock of `repo`'s worktree bookkeeping.
    fn repo_lock(&self, repo: &Path) -> Arc<Mutex<()>> {
        match self.repo_locks.lock() {
            Ok(mut locks) => locks.entry(repo.to_path_buf()).or_default().clone(),
            // A panic while holding the map only lost a lock entry; a fresh lock
            // still serializes every later caller.
            Err(poisoned) => poisoned
                .into_inner()
                .entry(repo.to_path_buf())
                .or_default()
                .clone(),
        }
    }

    pub fn config(&self) -> &WorktreeConfig {
        &self.config
    }

    /// Adds a worktree for `session` on the branch `godel/<task>` starting at
    /// `git_ref` (the repository's `HEAD`, or the remote's default branch, when
    /// `None`). A URL is cloned into the cache on first use and fetched every time.
    /// A branch left by an earlier attempt at the task is reset: a new attempt starts
    /// from the base again (the earlier commit stays reachable by its id).
    pub async fn create(
        &self,
        session: SessionId,
        task: TaskId,
        source: &RepoSource,
        git_ref: Option<&str>,
    ) -> Result<Worktree, WorktreeError> {
        let (repo, base_commit) = self.repository(source, git_ref).await?;
        create_dir(&self.config.worktrees_dir).await?;
        let path = self.config.worktrees_dir.join(session.to_string());
        let branch = format!("godel/{task}");
        let lock = self.repo_lock(&repo);
        let _guard = lock.lock().await;
        git(
            &repo,
            [
                OsString::from("worktree"),
                "add".into(),
                "--quiet".into(),
                "-B".into(),
                branch.clone().into(),
                path.clone().into(),
                base_commit.clone().into(),
            ],
        )
        .await?;
        Ok(Worktree {
            path,
            branch,
            base_commit,
            repo,
            task_id: task,
            session_id: session,
        })
    }

    /// The repository `source` names on this machine (a URL is cloned into the cache
    /// on first use and fetched) and the commit `git_ref` names in it (`HEAD`, or the
    /// remote's default branch, when `None`).
    pub async fn repository(
        &self,
        source: &RepoSource,
        git_ref: Option<&str>,
    ) -> Result<(PathBuf, String), WorktreeError> {
        match source {
            RepoSource::Local(path) => {
                let commit = resolve(path, git_ref.unwrap_or("HEAD")).await?;
                Ok((path.clone(), commit))
            }
            RepoSource::Url(url) => self.fetch(url, git_ref).await,
        }
    }

    /// Commits every change in the worktree on its branch (author
    /// [`AUTHOR_NAME`] <[`AUTHOR_EMAIL`]>, hooks off); `None` when nothing changed.
    pub async fn commit(&self, worktree: &Worktree) -> Result<Option<String>, WorktreeError> {
        let dir = &worktree.path;
        git(dir, ["add", "--all"]).await?;
        let status = git(dir, ["status", "--porcelain"]).await?;
        if status.trim().is_empty() {
            return Ok(None);
        }
        let message = format!(
            "godel: work on task {}\n\nSession {}.",
            worktree.task_id, worktree.session_id
        );
        git(
            dir,
            [
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "commit.gpgsign=false",
                "commit",
                "--quiet",
                "--no-verify",
                "-m",
                &message,
            ],
        )
        .await?;
        let commit = git(dir, ["rev-parse", "HEAD"]).await?;
        Ok(Some(commit.trim().to_owned()))
    }

    /// What the branch changed against the base commit (committed changes only).
    pub async fn diff_summary(&self, worktree: &Worktree) -> Result<DiffSummary, WorktreeError> {
        let out = git(
            &worktree.path,
            [
                "diff",
                "--numstat",
                "-z",
                "--no-renames",
                &worktree.base_commit,
                "HEAD",
            ],
        )
        .await?;
        parse_numstat(&out)
    }

    /// Ends a session's use of its worktree by the cleanup policy: on success the
    /// work is committed, summarized and the worktree removed (the branch stays); on
    /// failure the worktree is kept for `keep_failed_for`, detached from the branch.
    pub async fn finish(
        &self,
        worktree: &Worktree,
        succeeded: bool,
    ) -> Result<Finished, WorktreeError> {
        if succeeded {
            let commit = self.commit(worktree).await?;
            let diff = self.diff_summary(worktree).await?;
            self.remove(worktree).await?;
            return Ok(Finished::Committed { commit, diff });
        }
        // The kept worktree lets go of the task's branch (its files stay as they
        // are), so a later attempt at the task can check the branch out.
        git(&worktree.path, ["switch", "--detach", "--quiet"]).await?;
        let until = SystemTime::now() + self.config.keep_failed_for;
        let marker = KeptMarker {
            path: worktree.path.clone(),
            repo: worktree.repo.clone(),
            expires_at_unix: until
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        };
        let dir = self.kept_dir();
        create_dir(&dir).await?;
        let file = dir.join(worktree.session_id.to_string());
        let text = serde_json::to_vec(&marker).map_err(|source| WorktreeError::Io {
            path: file.clone(),
            source: source.into(),
        })?;
        tokio::fs::write(&file, text)
            .await
            .map_err(|source| WorktreeError::Io { path: file, source })?;
        Ok(Finished::Kept { until })
    }

    /// Removes the worktree (its branch stays) and prunes stale worktree records.
    pub async fn remove(&self, worktree: &Worktree) -> Result<(), WorktreeError> {
        let lock = self.repo_lock(&worktree.repo);
        let _guard = lock.lock().await;
        remove_worktree(&worktree.repo, &worktree.path).await
    }

    /// Removes kept worktrees whose time is up; returns their paths.
    pub async fn sweep(&self) -> Result<Vec<PathBuf>, WorktreeError> {
        let dir = self.kept_dir();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(WorktreeError::Io { path: dir, source }),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut removed = Vec::new();
        loop {
            let entry = entries
                .next_entry()
                .await
                .map_err(|source| WorktreeError::Io {
                    path: dir.clone(),
                    source,
                })?;
            let Some(entry) = entry else { break };
            let file = entry.path();
            let Ok(text) = tokio::fs::read(&file).await else {
                continue;
            };
            let Ok(marker) = serde_json::from_slice::<KeptMarker>(&text) else {
                continue;
            };
            if marker.expires_at_unix > now {
                continue;
            }
            {
                let lock = self.repo_lock(&marker.repo);
                let _guard = lock.lock().await;
                remove_worktree(&marker.repo, &marker.path).await?;
            }
            tokio::fs::remove_file(&file)
                .await
                .map_err(|source| WorktreeError::Io { path: file, source })?;
            removed.push(marker.path);
        }
        Ok(removed)
    }

    fn kept_dir(&self) -> PathBuf {
        self.config.worktrees_dir.join(".kept")
    }

    /// Clones `url` into the cache when missing, fetches it, and resolves the base
    /// commit: `git_ref` as a remote branch, else as a tag or commit; without one,
    /// the remote's default branch.
    async fn fetch(
        &self,
        url: &str,
        git_ref: Option<&str>,
    ) -> Result<(PathBuf, String), WorktreeError> {
        let _guard = self.cache_lock.lock().await;
        let digest = hex::encode(Sha256::digest(url.as_bytes()));
        let repo = self.config.cache_dir.join(format!("{}.git", &digest[..16]));
        create_dir(&self.config.cache_dir).await?;
        if !repo.exists() {
            git(
                &self.config.cache_dir,
                [
                    OsString::from("clone"),
                    "--bare".into(),
                    "--quiet".into(),
                    "--".into(),
                    url.into(),
                    repo.clone().into(),
                ],
            )
            .await?;
        }
        git(
            &repo,
            [
                "fetch",
                "--quiet",
                "--force",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
        )
        .await?;
        let commit = match git_ref {
            Some(git_ref) => {
                match resolve(&repo, &format!("refs/remotes/origin/{git_ref}")).await {
                    Ok(commit) => commit,
                    Err(_) => resolve(&repo, git_ref).await?,
                }
            }
            None => {
                let head = git(&repo, ["symbolic-ref", "--short", "HEAD"]).await?;
                resolve(&repo, &format!("refs/remotes/origin/{}", head.trim())).await?
            }
        };
        Ok((repo, commit))
    }
}

/// The commit `git_ref` names in `repo`.
async fn resolve(repo: &Path, git_ref: &str) -> Result<String, WorktreeError> {
    let spec = format!("{git_ref}^{{commit}}");
    match git(
        repo,
        [
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ],
    )
    .await
    {
        Ok(out) if !out.trim().is_empty() => Ok(out.trim().to_owned()),
        Ok(_) | Err(WorktreeError::Git { .. }) => Err(WorktreeError::UnknownRef {
            git_ref: git_ref.to_owned(),
            repo: repo.to_path_buf(),
        }),
        Err(error) => Err(error),
    }
}

async fn remove_worktree(repo: &Path, path: &Path) -> Result<(), WorktreeError> {
    if path.exists() {
        let removed = git(
            repo,
            [
                OsString::from("worktree"),
                "remove".into(),
                "--force".into(),
                "--force".into(),
                path.into(),
            ],
        )
        .await;
        if removed.is_err() && path.exists() {
            // Not a registered worktree (any more): remove the directory itself.
            tokio::fs::remove_dir_all(path)
                .await
                .map_err(|source| WorktreeError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
    }
    if repo.exists() {
        git(repo, ["worktree", "prune"]).await?;
    }
    Ok(())
}

async fn create_dir(path: &Path) -> Result<(), WorktreeError> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|source| WorktreeError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Runs `git -C dir args…` with a cleared environment; returns stdout.
async fn git<I, S>(dir: &Path, args: I) -> Result<String, WorktreeError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let (shown, output) = git_output(dir, args).await?;
    if !output.status.success() {
        return Err(WorktreeError::Git {
            args: shown,
            dir: dir.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `git -C dir args…` with a cleared environment, whatever its exit status;
/// returns the command as shown in errors (credentials redacted) and its output.
async fn git_output<I, S>(
    dir: &Path,
    args: I,
) -> Result<(String, std::process::Output), WorktreeError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let shown = args
        .iter()
        .map(|arg| redact_userinfo(&arg.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let output = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(&args)
        .env_clear()
        .env("PATH", path)
        .env("LANG", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| WorktreeError::Spawn {
            args: shown.clone(),
            dir: dir.to_path_buf(),
            source,
        })?;
    Ok((shown, output))
}

/// `scheme://user:token@host/…` without the `user:token@` part, so a credential in a
/// clone URL never reaches an error message or a log.
fn redact_userinfo(arg: &str) -> String {
    let Some((scheme, rest)) = arg.split_once("://") else {
        return arg.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => arg.to_owned(),
    }
}

/// Parses `git diff --numstat -z --no-renames`: `added\tdeleted\tpath\0` per file,
/// `-` for the counts of a binary file.
fn parse_numstat(out: &str) -> Result<DiffSummary, WorktreeError> {
    let mut summary = DiffSummary::default();
    for record in out.split('\0').filter(|record| !record.is_empty()) {
        let record = record.trim_start_matches('\n');
        let mut fields = record.splitn(3, '\t');
        let (Some(added), Some(deleted), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(WorktreeError::Numstat {
                line: record.to_owned(),
            });
        };
        let count = |field: &str| -> Result<Option<u64>, WorktreeError> {
            if field == "-" {
                return Ok(None);
            }
            field.parse().map(Some).map_err(|_| WorktreeError::Numstat {
                line: record.to_owned(),
            })
        };
        let (insertions, deletions) = (count(added)?, count(deleted)?);
        summary.insertions += insertions.unwrap_or(0);
        summary.deletions += deletions.unwrap_or(0);
        summary.files.push(FileStat {
            path: path.to_owned(),
            insertions,
            deletions,
        });
    }
    summary.files_changed = summary.files.len();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numstat_with_binary_files_and_tabs_in_names() {
        let summary = parse_numstat(concat!(
            "3\t1\ta.txt\0",
            "-\t-\timg.png\0",
            "2\t0\tdir/with\ttab\0"
        ))
        .unwrap();
        assert_eq!(summary.files_changed, 3);
        assert_eq!(summary.insertions, 5);
        assert_eq!(summary.deletions, 1);
        assert_eq!(summary.files[1].insertions, None);
        assert_eq!(summary.files[2].path, "dir/with\ttab");
        assert!(parse_numstat("x\ty\0").is_err());
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact_userinfo("https://user:s3cret@example.com/r.git"),
            "https://***@example.com/r.git"
        );
        assert_eq!(redact_userinfo("file:///tmp/a@b"), "file:///tmp/a@b");
        assert_eq!(redact_userinfo("--quiet"), "--quiet");
    }
}
