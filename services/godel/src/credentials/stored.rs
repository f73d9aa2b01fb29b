//! The login `godel login` stores: the gateway it signed in at and the token pair,
//! in `$XDG_CONFIG_HOME/godel/credentials.json` (else `~/.config/godel/…`), the file
//! mode 0600 in a directory of mode 0700.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How long before its expiry an access token is renewed.
const RENEW_MARGIN: chrono::Duration = chrono::Duration::seconds(30);

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub display_name: String,
}

/// A token pair as the gateway hands it out (`/auth/cli/token`, `/auth/refresh`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
}

/// The stored login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogin {
    /// The gateway's base URL.
    pub server: String,
    #[serde(flatten)]
    pub tokens: Tokens,
    pub user: User,
}

/// Where the login is stored.
pub fn path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| PathBuf::from(home).join(".config"))
            .context("neither XDG_CONFIG_HOME nor HOME is set: cannot find the credentials file")?,
    };
    Ok(base.join("godel").join("credentials.json"))
}

/// The login stored at `path`, if any.
pub fn load(path: &Path) -> anyhow::Result<Option<StoredLogin>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let login = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a stored login: delete it and run `godel login`",
            path.display()
        )
    })?;
    Ok(Some(login))
}

/// Stores `login` at `path`: the directory made (or narrowed to) mode 0700, the file
/// written with mode 0600 beside it and renamed over the old one.
pub fn save(path: &Path, login: &StoredLogin) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    let dir = path
        .parent()
        .context("the credentials file has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))?;
    let temporary = dir.join(format!(".credentials.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    let json = serde_json::to_vec_pretty(login).context("cannot encode the login")?;
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// Deletes the stored login; false when there was none.
pub fn delete(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot delete {}", path.display())),
    }
}

/// The stored login's access token, renewed at its gateway (and stored again) when
/// it expires within half a minute; `None` when no one is signed in.
pub async fn access_token(path: &Path) -> anyhow::Result<Option<String>> {
    let Some(mut login) = load(path)? else {
        return Ok(None);
    };
    if login.tokens.access_expires_at - RENEW_MARGIN > Utc::now() {
        return Ok(Some(login.tokens.access_token));
    }
    if login.tokens.refresh_expires_at <= Utc::now() {
        anyhow::bail!("the stored login has expired: sign in again with `godel login`");
    }
    login.tokens = refresh(&login.server, &login.tokens.refresh_token).await?;
    save(path, &login)?;
    Ok(Some(login.tokens.access_token))
}

/// Trades `refresh_token` at `server` (`POST /auth/refresh`) for a new pair.
pub async fn refresh(server: &str, refresh_token: &str) -> anyhow::Result<Tokens> {
    let url = format!("{}/auth/refresh", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if !response.status().is_success() {
        anyhow::bail!(
            "{url} refused to renew the stored login ({}): sign in again with `godel login`",
            response.status()
        );
    }
    response
        .json()
        .await
        .with_context(|| format!("{url} answered something other than a token pair"))
}

/// Revokes `refresh_token`'s sign-in at `server` (`POST /auth/logout`).
pub async fn revoke(server: &str, refresh_token: &str) -> anyhow::Result<()> {
    let url = format!("{}/auth/logout", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if !response.status().is_success() {
        anyhow::bail!("{url} refused to sign out ({})", response.status());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_login_is_stored_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("godel").join("credentials.json");
        assert_eq!(load(&path).unwrap(), None);
        let now = Utc::now();
        let login = StoredLogin {
            server: "http://127.0.0.1:7700".into(),
            tokens: Tokens {
                access_token: "a".into(),
                access_expires_at: now,
                refresh_token: "gdr_r".into(),
                refresh_expires_at: now,
            },
            user: User {
                id: "usr_x".into(),
                email: String::new(),
                display_name: String::new(),
            },
        };
        save(&path, &login).unwrap();
        save(&path, &login).unwrap();
        assert_eq!(load(&path).unwrap(), Some(login));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(delete(&path).unwrap());
        assert!(!delete(&path).unwrap());
    }
}
