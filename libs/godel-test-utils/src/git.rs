//! Git repositories for tests: git run with no system or global configuration and a
//! fixed author, so results do not depend on the machine.

use std::path::Path;
use std::process::Command;

/// Runs `git -C dir args…` and returns its trimmed stdout; panics with git's stderr
/// when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test User")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test User")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Creates a repository in `dir` on branch `main` with one commit (a README) and
/// returns that commit.
pub fn init_repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir).expect("create the repository directory");
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("README.md"), "hello\n").expect("write README.md");
    git(dir, &["add", "README.md"]);
    git(dir, &["commit", "--quiet", "-m", "initial"]);
    git(dir, &["rev-parse", "HEAD"])
}
