//! The LLM planner: asks a model, through Godel's LLM proxy with the team's session
//! token (OpenAI Chat Completions), for a plan as JSON in [`Plan`]'s shape. Its
//! answer is parsed strictly (unknown fields refused) and validated like any plan;
//! [`crate::plan_intent`] falls back to the deterministic planner when it fails.

use std::time::Duration;

use godel_config::Secret;
use serde_json::{Value, json};

use crate::plan::{Catalog, Plan, TaskType};
use crate::{PlanError, Planner};

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct LlmPlanner {
    /// The proxy's base URL (`http://host:port`, no path).
    pub base_url: String,
    /// The credential the proxy accepts: a session token, or the access token of
    /// the person planning (with [`team`](Self::team)).
    pub token: Secret<String>,
    /// The team a caller's access token plans for, sent as `x-godel-team`.
    pub team: Option<String>,
    pub model: String,
    pub timeout: Duration,
    client: reqwest::Client,
}

impl LlmPlanner {
    pub fn new(
        base_url: impl Into<String>,
        token: Secret<String>,
        model: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            token,
            team: None,
            model: model.into(),
            timeout: Duration::from_secs(60),
            client: reqwest::Client::new(),
        }
    }

    /// The system prompt: the JSON shape, the task types and the team's profiles.
    fn instructions(catalog: &Catalog) -> String {
        let profiles: Vec<String> = catalog
            .profiles
            .iter()
            .map(|p| {
                let handles: Vec<&str> = p.handles.iter().map(|t| t.as_str()).collect();
                format!("- {} (handles: {})", p.name, handles.join(", "))
            })
            .collect();
        let types: Vec<&str> = TaskType::ALL.iter().map(|t| t.as_str()).collect();
        format!(
            "You plan software work for coding agents. Split the user's request into tasks \
             forming a directed acyclic graph: tasks that do not depend on each other run in \
             parallel, each in its own git worktree. Answer with one JSON object and nothing \
             else, of the form:\n\
             {{\"summary\": \"one line\", \"nodes\": [{{\"key\": \"implement-1\", \"task_type\": \
             \"implement\", \"profile\": \"<profile>\", \"prompt\": \"what the agent must do\", \
             \"depends_on\": []}}]}}\n\
             Keys use a-z, 0-9, `-`; task types are: {}. At most {} tasks. After code \
             changes add a test task and a review task depending on them. Profiles (use only \
             these, for the types they handle):\n{}",
            types.join(", "),
            catalog.max_nodes,
            profiles.join("\n")
        )
    }
}

/// The JSON object inside a model's text: the text itself, or the body of a fenced
/// code block.
fn json_text(content: &str) -> &str {
    let trimmed = content.trim();
    if let Some(rest) = trimmed.strip_prefix("```") {
        let body = rest.split_once('\n').map_or(rest, |(_, body)| body);
        return body.trim_end().trim_end_matches("```").trim();
    }
    trimmed
}

/// Parses a model's answer as a plan.
pub fn parse_answer(content: &str) -> Result<Plan, PlanError> {
    serde_json::from_str(json_text(content))
        .map_err(|e| PlanError::Malformed(format!("the model's plan is not valid plan JSON: {e}")))
}

#[async_trait::async_trait]
impl Planner for LlmPlanner {
    fn name(&self) -> &'static str {
        "llm"
    }

    async fn propose(&self, request: &str, catalog: &Catalog) -> Result<Plan, PlanError> {
        let url = format!(
            "{}/v1/chat/completions",
            self.base_url.trim_end_matches('/')
        );
        let body = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": Self::instructions(catalog)},
                {"role": "user", "content": request},
            ],
            "response_format": {"type": "json_object"},
            "temperature": 0,
        });
        let mut request = self.client.post(&url).bearer_auth(self.token.expose());
        if let Some(team) = &self.team {
            request = request.header("x-godel-team", team);
        }
        let response = request
            .timeout(self.timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| PlanError::Unavailable(format!("cannot reach the model at {url}: {e}")))?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|e| PlanError::Malformed(format!("the model's answer is not JSON: {e}")))?;
        if !status.is_success() {
            let message = answer
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            return Err(PlanError::Unavailable(format!(
                "the model answered {status}: {message}"
            )));
        }
        let content = answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                PlanError::Malformed("the model's answer has no message content".to_owned())
            })?;
        parse_answer(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_read_from_bare_or_fenced_json_and_strictly() {
        let plan = r#"{"summary":"s","nodes":[{"key":"a","task_type":"implement","profile":"p","prompt":"x"}]}"#;
        assert_eq!(parse_answer(plan).unwrap().nodes[0].key, "a");
        let fenced = format!("```json\n{plan}\n```");
        assert_eq!(parse_answer(&fenced).unwrap().nodes.len(), 1);
        for bad in [
            "Sure! Here is the plan.",
            r#"{"nodes": "all of them"}"#,
            r#"{"nodes":[{"key":"a","task_type":"implement","profile":"p","prompt":"x","priority":9}]}"#,
        ] {
            assert!(
                matches!(parse_answer(bad), Err(PlanError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
