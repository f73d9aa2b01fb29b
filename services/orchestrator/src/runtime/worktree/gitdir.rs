//! Where a worktree's git data lives: its own administrative directory
//! (`<repo>/.git/worktrees/<name>`: `HEAD`, `index`, its reflog) and the
//! repository's common git directory (objects, refs, configuration). Both are
//! outside the worktree, so a confined agent needs them allowed to run `git status`
//! or `git diff` in its workspace.

use std::path::{Path, PathBuf};

/// The git directories of one worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitDirs {
    /// The worktree's own administrative directory.
    pub admin: PathBuf,
    /// The repository's common git directory (`<repo>/.git`, or a bare repository).
    pub common: PathBuf,
}

impl GitDirs {
    /// The repository the common directory belongs to: its parent for `<repo>/.git`,
    /// the directory itself for a bare repository.
    pub fn repository(&self) -> PathBuf {
        match (self.common.file_name(), self.common.parent()) {
            (Some(name), Some(parent)) if name == ".git" => parent.to_path_buf(),
            _ => self.common.clone(),
        }
    }
}

/// The git directories of the worktree at `worktree`, read from its `.git` file
/// (`gitdir: <admin>`) and the admin directory's `commondir`; `None` when it is no
/// linked worktree (a plain directory, a main checkout) or they cannot be read.
pub fn git_dirs(worktree: &Path) -> Option<GitDirs> {
    let text = std::fs::read_to_string(worktree.join(".git")).ok()?;
    let admin = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    let admin = if admin.is_absolute() {
        admin
    } else {
        worktree.join(admin)
    };
    let common = match std::fs::read_to_string(admin.join("commondir")) {
        Ok(common) => {
            let common = PathBuf::from(common.trim());
            if common.is_absolute() {
                common
            } else {
                admin.join(common)
            }
        }
        // Git's layout: `<common>/worktrees/<name>`.
        Err(_) => admin.parent()?.parent()?.to_path_buf(),
    };
    let common = normalize(&common);
    Some(GitDirs { admin, common })
}

/// `path` without `.` and `..` components (lexically: `commondir` is `../..`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_components_are_resolved() {
        assert_eq!(
            normalize(Path::new("/r/.git/worktrees/w/../..")),
            PathBuf::from("/r/.git")
        );
        let dirs = GitDirs {
            admin: PathBuf::from("/r/.git/worktrees/w"),
            common: PathBuf::from("/r/.git"),
        };
        assert_eq!(dirs.repository(), PathBuf::from("/r"));
        let bare = GitDirs {
            admin: PathBuf::from("/c/x.git/worktrees/w"),
            common: PathBuf::from("/c/x.git"),
        };
        assert_eq!(bare.repository(), PathBuf::from("/c/x.git"));
    }
}
