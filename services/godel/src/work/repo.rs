//! The repository an intent works in, and the commit its plan is based on: for a
//! local path `git rev-parse`, for a URL `git ls-remote`.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

/// A repository with its base commit resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// An absolute path, or the URL as given.
    pub url: String,
    /// The ref as given; empty for HEAD.
    pub git_ref: String,
    /// 40 hex digits.
    pub commit: String,
}

fn is_commit(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn git(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .args(args)
        .output()
        .context("cannot run git: install it, or put it on PATH")?;
    if !output.status.success() {
        anyhow::bail!(
            "`git {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Resolves `repo` (a local path or a git URL) at `git_ref` (HEAD when `None`).
pub fn resolve(repo: &str, git_ref: Option<&str>) -> anyhow::Result<Resolved> {
    let git_ref = git_ref.map(str::trim).unwrap_or_default();
    let wanted = if git_ref.is_empty() { "HEAD" } else { git_ref };
    let path = Path::new(repo);
    if path.exists() {
        let path = path
            .canonicalize()
            .with_context(|| format!("cannot resolve the path {repo}"))?;
        let dir = path.display().to_string();
        let commit = git(&[
            "-C",
            &dir,
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{wanted}^{{commit}}"),
        ])
        .with_context(|| {
            format!("{dir} has no commit `{wanted}`: is it a git repository with that ref?")
        })?;
        return Ok(Resolved {
            url: dir,
            git_ref: git_ref.to_owned(),
            commit,
        });
    }
    if !repo.contains("://") && !repo.contains('@') {
        anyhow::bail!("{repo} is neither an existing path nor a git URL: check --repo");
    }
    if is_commit(wanted) {
        return Ok(Resolved {
            url: repo.to_owned(),
            git_ref: git_ref.to_owned(),
            commit: wanted.to_ascii_lowercase(),
        });
    }
    let listing = git(&["ls-remote", repo, wanted])
        .with_context(|| format!("cannot list the refs of {repo}: check --repo and your access"))?;
    let commit = pick(&listing, wanted).with_context(|| {
        format!("{repo} has no ref `{wanted}`: check --ref (a branch, tag or full commit)")
    })?;
    Ok(Resolved {
        url: repo.to_owned(),
        git_ref: git_ref.to_owned(),
        commit,
    })
}

/// The commit `wanted` names in `git ls-remote` output: a peeled tag first, then an
/// exact name, a branch, a tag.
fn pick(listing: &str, wanted: &str) -> Option<String> {
    let refs: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(hash, _)| is_commit(hash))
        .collect();
    let candidates = [
        format!("refs/tags/{wanted}^{{}}"),
        wanted.to_owned(),
        format!("refs/heads/{wanted}"),
        format!("refs/tags/{wanted}"),
    ];
    candidates.iter().find_map(|name| {
        refs.iter()
            .find(|(_, r)| r == name)
            .map(|(hash, _)| (*hash).to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_remote_output_is_read_preferring_peeled_tags() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let c = "c".repeat(40);
        let listing =
            format!("{a}\tHEAD\n{b}\trefs/heads/main\n{a}\trefs/tags/v1\n{c}\trefs/tags/v1^{{}}\n");
        assert_eq!(pick(&listing, "HEAD"), Some(a.clone()));
        assert_eq!(pick(&listing, "main"), Some(b));
        assert_eq!(pick(&listing, "v1"), Some(c));
        assert_eq!(pick(&listing, "nope"), None);
    }

    #[test]
    fn a_local_repository_resolves_to_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        git(&["init", "-q", &path]).unwrap();
        for (k, v) in [("user.email", "t@example.com"), ("user.name", "T")] {
            git(&["-C", &path, "config", k, v]).unwrap();
        }
        git(&["-C", &path, "commit", "-q", "--allow-empty", "-m", "first"]).unwrap();
        let head = git(&["-C", &path, "rev-parse", "HEAD"]).unwrap();
        let resolved = resolve(&path, None).unwrap();
        assert_eq!(resolved.commit, head);
        assert!(resolved.git_ref.is_empty());
        let err = resolve(&path, Some("no-such-branch")).unwrap_err();
        assert!(format!("{err:#}").contains("no-such-branch"), "{err:#}");
        assert!(resolve("/no/such/dir", None).is_err());
    }
}
