//! Worktrees nothing accounts for any more: what a crashed orchestrator left behind
//! (its sessions' worktrees, no kept marker) or a session whose record is gone.
//! The session store decides what is stray (see `session::recovery`); this module
//! lists the session directories and removes one together with git's record of it.

use std::path::{Path, PathBuf};

use godel_types::SessionId;

use super::{Worktree, WorktreeError, WorktreeManager, git, remove_worktree};

impl WorktreeManager {
    /// The session ids that have a directory under `dir` (worktrees or agent homes);
    /// entries not named by a session id (the kept markers' `.kept`, anything an
    /// operator put there) are not listed.
    pub async fn session_dirs(dir: &Path) -> Result<Vec<SessionId>, WorktreeError> {
        let mut entries = match tokio::fs::read_dir(dir).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(WorktreeError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        let mut ids = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|source| WorktreeError::Io {
                path: dir.to_path_buf(),
                source,
            })?
        {
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<SessionId>().ok())
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// The path of session `id`'s worktree (whether or not it exists).
    pub fn worktree_path(&self, id: SessionId) -> PathBuf {
        self.config.worktrees_dir.join(id.to_string())
    }

    /// The worktree of a session whose supervisor is gone (the orchestrator died),
    /// rebuilt from its directory: `None` when it has none. `branch` and
    /// `base_commit` are what the session recorded (empty when it never ran).
    pub async fn orphaned(
        &self,
        id: SessionId,
        task: godel_types::TaskId,
        branch: Option<String>,
        base_commit: Option<String>,
    ) -> Option<Worktree> {
        let path = self.worktree_path(id);
        if !path.exists() {
            return None;
        }
        let repo = repository_of(&path).await.unwrap_or_default();
        Some(Worktree {
            path,
            branch: branch.unwrap_or_default(),
            base_commit: base_commit.unwrap_or_default(),
            repo,
            task_id: task,
            session_id: id,
        })
    }

    /// Removes session `id`'s worktree and git's record of it (`git worktree
    /// prune` in its repository), and its kept marker; nothing when it has none.
    pub async fn remove_stray(&self, id: SessionId) -> Result<(), WorktreeError> {
        let path = self.worktree_path(id);
        if path.exists() {
            match repository_of(&path).await {
                Some(repo) => {
                    let lock = self.repo_lock(&repo);
                    let _guard = lock.lock().await;
                    remove_worktree(&repo, &path).await?;
                }
                None => {
                    tokio::fs::remove_dir_all(&path)
                        .await
                        .map_err(|source| WorktreeError::Io {
                            path: path.clone(),
                            source,
                        })?;
                }
            }
        }
        let marker = self.kept_dir().join(id.to_string());
        match tokio::fs::remove_file(&marker).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(WorktreeError::Io {
                path: marker,
                source,
            }),
        }
    }
}

/// The repository a worktree belongs to (see [`super::GitDirs::repository`]);
/// `None` when its `.git` file is missing or names no existing repository.
async fn repository_of(worktree: &Path) -> Option<PathBuf> {
    let repo = super::git_dirs(worktree)?.repository();
    // A directory that is no repository any more (deleted) has nothing to prune.
    git(&repo, ["rev-parse", "--git-dir"]).await.ok()?;
    Some(repo)
}
