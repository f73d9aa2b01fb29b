//! A small client of the gateway's REST API for CLI commands: the server, the
//! credential (`--token`, else the stored login), the team (`--team`, else the one
//! the credential acts in, else the caller's only team), and problem documents
//! turned into errors that say what went wrong and how to fix it.

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cli::ApiArgs;

/// The gateway, the credential and the team a command works with.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// For event streams: no overall deadline, they last as long as what they follow.
    streaming: reqwest::Client,
    base: String,
    token: String,
    /// `team_…`
    pub team: String,
}

impl Api {
    /// Resolves the credential and the team named by `args`.
    pub async fn connect(args: &ApiArgs) -> anyhow::Result<Self> {
        let token = match args.token.as_deref().map(str::trim) {
            Some(token) if !token.is_empty() => token.to_owned(),
            _ => {
                let path = crate::credentials::stored::path()?;
                crate::credentials::stored::access_token(&path)
                    .await?
                    .context(
                        "no credential: pass --token (or set GODEL_TOKEN) with an access token \
                         or an API key, or sign in with `godel login`",
                    )?
            }
        };
        let mut api = Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .context("cannot build an HTTP client")?,
            streaming: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .context("cannot build an HTTP client")?,
            base: args.server.trim_end_matches('/').to_owned(),
            token,
            team: String::new(),
        };
        api.team = match args.team.as_deref().map(str::trim) {
            Some(team) if !team.is_empty() => team.to_owned(),
            _ => api.default_team().await?,
        };
        Ok(api)
    }

    /// The team the credential acts in, else the caller's only team.
    async fn default_team(&self) -> anyhow::Result<String> {
        let me = self.call(Method::GET, "/v1/me", None).await?;
        if let Some(team) = me["team_id"].as_str().filter(|t| !t.is_empty()) {
            return Ok(team.to_owned());
        }
        let teams = self.call(Method::GET, "/v1/teams", None).await?;
        let ids: Vec<&str> = teams["teams"]
            .as_array()
            .map(|teams| teams.iter().filter_map(|t| t["id"].as_str()).collect())
            .unwrap_or_default();
        match ids.as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => {
                anyhow::bail!("the credential belongs to no team: pass --team (or set GODEL_TEAM)")
            }
            many => anyhow::bail!(
                "the credential can act in several teams ({}): pass --team (or set GODEL_TEAM)",
                many.join(", ")
            ),
        }
    }

    /// `path` under the team: `/v1/teams/<team><path>`.
    pub fn team_path(&self, path: &str) -> String {
        format!("/v1/teams/{}{path}", self.team)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, path, None).await
    }

    /// Opens the server-sent event stream at `path`, resuming after `last_event_id`.
    pub async fn events(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .streaming
            .get(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the gateway at {}: is Godel running (`godel up`)? Pass --server \
                 or set GODEL_SERVER to its URL",
                self.base
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(anyhow::anyhow!(problem(status, &value, &self.team)))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the gateway at {}: is Godel running (`godel up`)? Pass --server \
                 or set GODEL_SERVER to its URL",
                self.base
            )
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| {
                format!("the gateway's answer to {method} {path} is not JSON ({status})")
            })?
        };
        if status.is_success() {
            return Ok(value);
        }
        Err(anyhow::anyhow!(problem(status, &value, &self.team)))
    }
}

/// A query string (`?a=1&b=x%20y`) of the pairs whose value is present, encoded.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut url = reqwest::Url::parse("http://query.invalid/").expect("a valid URL");
    {
        let mut out = url.query_pairs_mut();
        for (name, value) in pairs {
            if let Some(value) = value {
                out.append_pair(name, value);
            }
        }
    }
    match url.query() {
        Some(q) if !q.is_empty() => format!("?{q}"),
        _ => String::new(),
    }
}

/// What a problem document says, and the fix for its kind.
fn problem(status: StatusCode, body: &Value, team: &str) -> String {
    let detail = body["detail"]
        .as_str()
        .or_else(|| body["title"].as_str())
        .unwrap_or("no detail");
    let field = body["field"]
        .as_str()
        .map(|f| format!(" (field `{f}`)"))
        .unwrap_or_default();
    let fix = match status {
        StatusCode::UNAUTHORIZED => {
            "the credential was refused: check --token / GODEL_TOKEN, or sign in again with \
             `godel login`"
                .to_owned()
        }
        StatusCode::FORBIDDEN => format!(
            "the credential lacks the permission in team {team}: ask a team admin for it, or \
             pass --team for another team"
        ),
        StatusCode::NOT_FOUND => {
            format!("check the id, and that it belongs to team {team} (--team)")
        }
        StatusCode::TOO_MANY_REQUESTS => "rate limited: try again shortly".to_owned(),
        s if s.is_client_error() => "correct the request and try again".to_owned(),
        _ => "the server failed: try again, and check the services' logs if it persists".to_owned(),
    };
    format!("{detail}{field} [{status}]; {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_and_skip_absent_values() {
        let q = query(&[
            ("page_size", Some("5".to_owned())),
            ("state", None),
            ("action", Some("a b&c".to_owned())),
        ]);
        assert_eq!(q, "?page_size=5&action=a+b%26c");
        assert_eq!(query(&[("state", None)]), "");
    }

    #[test]
    fn problems_say_what_and_how_to_fix() {
        let body = serde_json::json!({"detail": "the plan is invalid: task `a` is on a cycle", "field": "plan"});
        let text = problem(StatusCode::BAD_REQUEST, &body, "team_x");
        assert!(text.contains("cycle") && text.contains("`plan`") && text.contains("400"));
        let text = problem(StatusCode::FORBIDDEN, &Value::Null, "team_x");
        assert!(
            text.contains("team_x") && text.contains("permission"),
            "{text}"
        );
    }
}
