//! A scripted LLM provider: a real HTTP server on `127.0.0.1:0` speaking the three
//! wire APIs agent CLIs use — OpenAI Chat Completions (`POST /v1/chat/completions`),
//! OpenAI Responses (`POST /v1/responses`) and Anthropic Messages (`POST /v1/messages`,
//! also with `?beta=true`, and `POST /v1/messages/count_tokens`) — streaming (SSE in
//! each API's own event shapes) or not, as the request asks.
//!
//! The script is the one a coding agent needs to do one real edit: while the
//! conversation holds no tool result yet, the reply is one tool call built from the
//! tool schema the agent sent (its write-file tool writing [`Script::path`] with
//! [`Script::content`]; else an `apply_patch` tool adding the file; else a shell tool
//! running a command that writes it); once a tool result is present, the reply is
//! [`Script::final_text`]. Each reply reports [`Script::input_tokens`] and
//! [`Script::output_tokens`] in the API's own usage shape. Every request is recorded
//! (method, path, query, headers, JSON body) so a test can assert what the provider
//! saw, e.g. the credential an agent sent. [`ScriptedLlm::fail_with`] makes every
//! later request answer an error status in the API's error shape;
//! [`ScriptedLlm::hold`] holds replies until [`ScriptedLlm::release`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// What the scripted model does.
#[derive(Debug, Clone)]
pub struct Script {
    /// The file the tool call writes, relative to the agent's working directory.
    pub path: String,
    /// The file's content.
    pub content: String,
    /// The agent's working directory; used for tools that want an absolute path
    /// (their schema says so). `None`: the relative path is sent as is.
    pub root: Option<PathBuf>,
    /// The reply once a tool result is in the conversation.
    pub final_text: String,
    /// Usage reported with every reply.
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            path: "hello.txt".to_owned(),
            content: "hello from the scripted model\n".to_owned(),
            root: None,
            final_text: "Done: I wrote the file.".to_owned(),
            input_tokens: 120,
            output_tokens: 30,
        }
    }
}

/// One request the provider received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query (`/v1/messages`).
    pub path: String,
    /// The query string, when any (`beta=true`).
    pub query: Option<String>,
    /// Header names lowercased; values that are not UTF-8 are left out.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Value::Null` when it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// A header's value by its (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The credential the request carried: the `Authorization: Bearer` token, else
    /// the `x-api-key` header.
    pub fn credential(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|value| value.strip_prefix("Bearer "))
            .or_else(|| self.header("x-api-key"))
    }
}

/// Which wire API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    ChatCompletions,
    Responses,
    Messages,
}

#[derive(Debug, Default)]
struct Shared {
    requests: Vec<RecordedRequest>,
    fail_with: Option<StatusCode>,
    replies: u64,
}

#[derive(Debug, Clone)]
struct AppState {
    script: Arc<Script>,
    shared: Arc<Mutex<Shared>>,
    /// Open (true) unless [`ScriptedLlm::hold`] closed it: model replies wait for it.
    gate: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AppState {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panicking handler cannot leave the record half-written: keep going.
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running scripted provider; stops when dropped.
#[derive(Debug)]
pub struct ScriptedLlm {
    addr: SocketAddr,
    state: AppState,
    server: JoinHandle<()>,
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ScriptedLlm {
    /// Starts a provider following `script` on `127.0.0.1:0`.
    pub async fn start(script: Script) -> std::io::Result<Self> {
        let state = AppState {
            script: Arc::new(script),
            shared: Arc::default(),
            gate: Arc::new(tokio::sync::watch::Sender::new(true)),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/responses", post(responses))
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .fallback(not_found)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the scripted LLM provider stopped");
            }
        });
        Ok(Self {
            addr,
            state,
            server,
        })
    }

    /// `http://127.0.0.1:PORT` (no path).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().requests.clone()
    }

    /// How many model replies (not errors, not token counts) were sent.
    pub fn replies(&self) -> u64 {
        self.state.lock().replies
    }

    /// Makes model replies wait (each request is recorded first) until
    /// [`ScriptedLlm::release`]: a test can act while the agent waits for its model.
    pub fn hold(&self) {
        self.state.gate.send_replace(false);
    }

    /// Lets held and later model replies go.
    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }

    /// Answers every later model request with `status` (e.g. 401, 500) in the API's
    /// error shape; `None` goes back to the script.
    pub fn fail_with(&self, status: Option<u16>) {
        self.state.lock().fail_with =
            status.map(|s| StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    }
}

async fn chat_completions(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply(Api::ChatCompletions, &state, &method, &uri, &headers, &body).await
}

async fn responses(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply(Api::Responses, &state, &method, &uri, &headers, &body).await
}

async fn messages(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply(Api::Messages, &state, &method, &uri, &headers, &body).await
}

async fn count_tokens(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, &method, &uri, &headers, &body);
    let input_tokens = state.script.input_tokens;
    axum::Json(json!({ "input_tokens": input_tokens })).into_response()
}

async fn not_found(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, &method, &uri, &headers, &body);
    (
        StatusCode::NOT_FOUND,
        "the scripted provider has no such endpoint",
    )
        .into_response()
}

fn record(
    state: &AppState,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Value {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let headers = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    state.lock().requests.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body: body.clone(),
    });
    body
}

async fn reply(
    api: Api,
    state: &AppState,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let body = record(state, method, uri, headers, body);
    let mut gate = state.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    let failure = state.lock().fail_with;
    if let Some(status) = failure {
        return error_response(api, status);
    }
    state.lock().replies += 1;
    let turn = decide(api, &state.script, &body);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("scripted")
        .to_owned();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let usage = (state.script.input_tokens, state.script.output_tokens);
    let n = state.lock().replies;
    match (api, stream) {
        (Api::ChatCompletions, false) => {
            axum::Json(chat::complete(&turn, &model, usage, n)).into_response()
        }
        (Api::ChatCompletions, true) => sse(chat::stream(&turn, &model, usage, n)),
        (Api::Responses, false) => {
            axum::Json(responses_api::complete(&turn, &model, usage, n)).into_response()
        }
        (Api::Responses, true) => sse(responses_api::stream(&turn, &model, usage, n)),
        (Api::Messages, false) => {
            axum::Json(anthropic::complete(&turn, &model, usage, n)).into_response()
        }
        (Api::Messages, true) => sse(anthropic::stream(&turn, &model, usage, n)),
    }
}

fn sse(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// An SSE event with an `event:` line (Responses, Messages).
fn named_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// An SSE event with only a `data:` line (Chat Completions).
fn data_event(data: &Value) -> String {
    format!("data: {data}\n\n")
}

fn error_response(api: Api, status: StatusCode) -> Response {
    let message = format!(
        "scripted provider error: {}",
        status.canonical_reason().unwrap_or("error")
    );
    let body = match api {
        Api::Messages => {
            let kind = match status.as_u16() {
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_error",
                400 => "invalid_request_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Api::ChatCompletions | Api::Responses => {
            let (kind, code) = match status.as_u16() {
                401 => ("invalid_request_error", "invalid_api_key"),
                429 => ("rate_limit_exceeded", "rate_limit_exceeded"),
                400 => ("invalid_request_error", "invalid_request"),
                _ => ("server_error", "server_error"),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
    };
    (status, axum::Json(body)).into_response()
}

/// The scripted model's reply for one request.
#[derive(Debug, Clone, PartialEq)]
enum Turn {
    /// Call `name` with `arguments` (JSON); `custom` marks a freeform tool (Responses
    /// `custom` tools, whose input is plain text in `arguments`'s `input`).
    Tool {
        name: String,
        arguments: Value,
        custom: bool,
    },
    Text(String),
}

/// A tool the agent offered: its name, its JSON schema (when a function tool) and
/// whether it is a freeform (`custom`) tool.
#[derive(Debug)]
struct OfferedTool {
    name: String,
    schema: Value,
    description: String,
    custom: bool,
}

fn decide(api: Api, script: &Script, body: &Value) -> Turn {
    if has_tool_result(api, body) {
        return Turn::Text(script.final_text.clone());
    }
    let tools = offered_tools(api, body);
    tool_call(script, &tools).unwrap_or_else(|| Turn::Text(script.final_text.clone()))
}

/// Whether the conversation already holds a tool's result.
fn has_tool_result(api: Api, body: &Value) -> bool {
    let items = |key: &str| {
        body.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match api {
        Api::ChatCompletions => items("messages")
            .iter()
            .any(|m| m.get("role").and_then(Value::as_str) == Some("tool")),
        Api::Responses => items("input").iter().any(|item| {
            item.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("_call_output"))
        }),
        Api::Messages => items("messages").iter().any(|m| {
            m.get("content")
                .and_then(Value::as_array)
                .is_some_and(|blocks| {
                    blocks
                        .iter()
                        .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                })
        }),
    }
}

fn offered_tools(api: Api, body: &Value) -> Vec<OfferedTool> {
    let Some(tools) = body.get("tools").and_then(Value::as_array) else {
        return Vec::new();
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    tools
        .iter()
        .filter_map(|tool| {
            let (name, schema, description, custom) = match api {
                Api::ChatCompletions => {
                    let function = tool.get("function")?;
                    (
                        text(function.get("name")),
                        function.get("parameters").cloned().unwrap_or(Value::Null),
                        text(function.get("description")),
                        false,
                    )
                }
                Api::Responses => (
                    text(tool.get("name")),
                    tool.get("parameters").cloned().unwrap_or(Value::Null),
                    text(tool.get("description")),
                    tool.get("type").and_then(Value::as_str) == Some("custom"),
                ),
                Api::Messages => (
                    text(tool.get("name")),
                    tool.get("input_schema").cloned().unwrap_or(Value::Null),
                    text(tool.get("description")),
                    false,
                ),
            };
            (!name.is_empty()).then_some(OfferedTool {
                name,
                schema,
                description,
                custom,
            })
        })
        .collect()
}

/// Property names a write tool uses for the file's path and its content.
const PATH_PROPS: &[&str] = &["path", "file_path", "filePath", "filename"];
const CONTENT_PROPS: &[&str] = &["content", "contents", "text"];

/// One tool call that writes the script's file, built from the offered tools: a
/// write tool (a path and a content property), else `apply_patch`, else a shell tool.
fn tool_call(script: &Script, tools: &[OfferedTool]) -> Option<Turn> {
    for tool in tools {
        let Some(props) = tool.schema.get("properties").and_then(Value::as_object) else {
            continue;
        };
        let path_prop = PATH_PROPS.iter().find(|p| props.contains_key(**p));
        let content_prop = CONTENT_PROPS.iter().find(|p| props.contains_key(**p));
        let (Some(path_prop), Some(content_prop)) = (path_prop, content_prop) else {
            continue;
        };
        let path_doc = props
            .get(*path_prop)
            .and_then(|p| p.get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let wants_absolute = path_doc.to_lowercase().contains("absolute")
            || tool.description.to_lowercase().contains("absolute path");
        let path = match (&script.root, wants_absolute) {
            (Some(root), true) => root.join(&script.path).display().to_string(),
            _ => script.path.clone(),
        };
        let mut arguments = serde_json::Map::new();
        arguments.insert((*path_prop).to_owned(), Value::String(path));
        arguments.insert(
            (*content_prop).to_owned(),
            Value::String(script.content.clone()),
        );
        return Some(Turn::Tool {
            name: tool.name.clone(),
            arguments: Value::Object(arguments),
            custom: false,
        });
    }
    if let Some(tool) = tools.iter().find(|t| t.name == "apply_patch") {
        let mut patch = format!("*** Begin Patch\n*** Add File: {}\n", script.path);
        for line in script.content.lines() {
            patch.push('+');
            patch.push_str(line);
            patch.push('\n');
        }
        patch.push_str("*** End Patch\n");
        let arguments = if tool.custom {
            json!({ "input": patch })
        } else {
            let prop = tool
                .schema
                .get("properties")
                .and_then(Value::as_object)
                .and_then(|p| p.keys().next().cloned())
                .unwrap_or_else(|| "input".to_owned());
            json!({ prop: patch })
        };
        return Some(Turn::Tool {
            name: tool.name.clone(),
            arguments,
            custom: tool.custom,
        });
    }
    let shell = tools.iter().find(|t| {
        let name = t.name.to_lowercase();
        name == "bash" || name.contains("shell") || name == "exec_command"
    })?;
    let command = format!(
        "printf '%s' '{}' > '{}'",
        script.content.replace('\'', r"'\''"),
        script.path.replace('\'', r"'\''")
    );
    let props = shell.schema.get("properties").and_then(Value::as_object);
    let arguments = match props {
        Some(props)
            if props.get("command").and_then(|c| c.get("type")) == Some(&json!("array")) =>
        {
            json!({ "command": ["bash", "-lc", command] })
        }
        Some(props) if props.contains_key("cmd") => json!({ "cmd": command }),
        _ => json!({ "command": command }),
    };
    Some(Turn::Tool {
        name: shell.name.clone(),
        arguments,
        custom: false,
    })
}

/// OpenAI Chat Completions replies.
mod chat {
    use serde_json::{Value, json};

    use super::{Turn, data_event};

    fn usage((input, output): (u64, u64)) -> Value {
        json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
    }

    pub(super) fn complete(turn: &Turn, model: &str, tokens: (u64, u64), n: u64) -> Value {
        let (message, finish) = match turn {
            Turn::Tool {
                name, arguments, ..
            } => (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": format!("call_{n}"), "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()}
                }]}),
                "tool_calls",
            ),
            Turn::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
        };
        json!({
            "id": format!("chatcmpl-{n}"), "object": "chat.completion", "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage(tokens),
        })
    }

    pub(super) fn stream(turn: &Turn, model: &str, tokens: (u64, u64), n: u64) -> String {
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut chunk = json!({
                "id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk",
                "created": 0, "model": model, "choices": choices,
            });
            if let Some(usage) = usage {
                chunk["usage"] = usage;
            }
            data_event(&chunk)
        };
        let mut out = chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            None,
        );
        let finish = match turn {
            Turn::Tool {
                name, arguments, ..
            } => {
                out.push_str(&chunk(
                    json!([{"index": 0, "delta": {"tool_calls": [{
                        "index": 0, "id": format!("call_{n}"), "type": "function",
                        "function": {"name": name, "arguments": ""}
                    }]}, "finish_reason": null}]),
                    None,
                ));
                out.push_str(&chunk(
                    json!([{"index": 0, "delta": {"tool_calls": [{
                        "index": 0, "function": {"arguments": arguments.to_string()}
                    }]}, "finish_reason": null}]),
                    None,
                ));
                "tool_calls"
            }
            Turn::Text(text) => {
                out.push_str(&chunk(
                    json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}]),
                    None,
                ));
                "stop"
            }
        };
        out.push_str(&chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
            None,
        ));
        out.push_str(&chunk(json!([]), Some(usage(tokens))));
        out.push_str("data: [DONE]\n\n");
        out
    }
}

/// OpenAI Responses replies.
mod responses_api {
    use serde_json::{Value, json};

    use super::{Turn, named_event};

    fn item(turn: &Turn, n: u64) -> Value {
        match turn {
            Turn::Tool {
                name,
                arguments,
                custom: true,
            } => json!({
                "type": "custom_tool_call", "id": format!("ctc_{n}"), "call_id": format!("call_{n}"),
                "name": name, "status": "completed",
                "input": arguments.get("input").and_then(Value::as_str).unwrap_or_default(),
            }),
            Turn::Tool {
                name, arguments, ..
            } => json!({
                "type": "function_call", "id": format!("fc_{n}"), "call_id": format!("call_{n}"),
                "name": name, "arguments": arguments.to_string(), "status": "completed",
            }),
            Turn::Text(text) => json!({
                "type": "message", "id": format!("msg_{n}"), "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }),
        }
    }

    fn response(model: &str, n: u64, status: &str, output: Value, usage: Value) -> Value {
        json!({
            "id": format!("resp_{n}"), "object": "response", "created_at": 0,
            "status": status, "model": model, "output": output, "usage": usage,
        })
    }

    fn usage((input, output): (u64, u64)) -> Value {
        json!({
            "input_tokens": input, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input + output,
        })
    }

    pub(super) fn complete(turn: &Turn, model: &str, tokens: (u64, u64), n: u64) -> Value {
        response(model, n, "completed", json!([item(turn, n)]), usage(tokens))
    }

    pub(super) fn stream(turn: &Turn, model: &str, tokens: (u64, u64), n: u64) -> String {
        let item = item(turn, n);
        let mut seq = 0u64;
        let mut event = |name: &str, mut data: Value| {
            data["type"] = json!(name);
            data["sequence_number"] = json!(seq);
            seq += 1;
            named_event(name, &data)
        };
        let mut out = event(
            "response.created",
            json!({"response": response(model, n, "in_progress", json!([]), Value::Null)}),
        );
        let mut added = item.clone();
        if let Turn::Text(_) = turn {
            added["content"] = json!([]);
            added["status"] = json!("in_progress");
        }
        out.push_str(&event(
            "response.output_item.added",
            json!({"output_index": 0, "item": added}),
        ));
        if let Turn::Text(text) = turn {
            out.push_str(&event(
                "response.content_part.added",
                json!({"item_id": item["id"], "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            ));
            out.push_str(&event(
                "response.output_text.delta",
                json!({"item_id": item["id"], "output_index": 0, "content_index": 0, "delta": text}),
            ));
            out.push_str(&event(
                "response.output_text.done",
                json!({"item_id": item["id"], "output_index": 0, "content_index": 0, "text": text}),
            ));
            out.push_str(&event(
                "response.content_part.done",
                json!({"item_id": item["id"], "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": text, "annotations": []}}),
            ));
        }
        out.push_str(&event(
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        ));
        out.push_str(&event(
            "response.completed",
            json!({"response": response(model, n, "completed", json!([item]), usage(tokens))}),
        ));
        out
    }
}

/// Anthropic Messages replies.
mod anthropic {
    use serde_json::{Value, json};

    use super::{Turn, named_event};

    fn block(turn: &Turn, n: u64) -> (Value, &'static str) {
        match turn {
            Turn::Tool {
                name, arguments, ..
            } => (
                json!({"type": "tool_use", "id": format!("toolu_{n}"), "name": name, "input": arguments}),
                "tool_use",
            ),
            Turn::Text(text) => (json!({"type": "text", "text": text}), "end_turn"),
        }
    }

    fn usage((input, output): (u64, u64)) -> Value {
        json!({
            "input_tokens": input, "output_tokens": output,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
        })
    }

    pub(super) fn complete(turn: &Turn, model: &str, tokens: (u64, u64), n: u64) -> Value {
        let (block, stop) = block(turn, n);
        json!({
            "id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop, "stop_sequence": null,
            "usage": usage(tokens),
        })
    }

    pub(super) fn stream(turn: &Turn, model: &str, tokens: (u64, u64), n: u64) -> String {
        let (block, stop) = block(turn, n);
        let event = |name: &str, mut data: Value| {
            data["type"] = json!(name);
            named_event(name, &data)
        };
        let mut start_usage = usage(tokens);
        start_usage["output_tokens"] = json!(1);
        let mut out = event(
            "message_start",
            json!({"message": {
                "id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage,
            }}),
        );
        let (start, delta) = match turn {
            Turn::Tool { arguments, .. } => {
                let mut start = block.clone();
                start["input"] = json!({});
                (
                    start,
                    json!({"type": "input_json_delta", "partial_json": arguments.to_string()}),
                )
            }
            Turn::Text(text) => (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": text}),
            ),
        };
        out.push_str(&event(
            "content_block_start",
            json!({"index": 0, "content_block": start}),
        ));
        out.push_str(&event(
            "content_block_delta",
            json!({"index": 0, "delta": delta}),
        ));
        out.push_str(&event("content_block_stop", json!({"index": 0})));
        out.push_str(&event(
            "message_delta",
            json!({"delta": {"stop_reason": stop, "stop_sequence": null},
                   "usage": {"output_tokens": tokens.1}}),
        ));
        out.push_str(&event("message_stop", json!({})));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script() -> Script {
        Script {
            root: Some(PathBuf::from("/work/tree")),
            ..Script::default()
        }
    }

    #[test]
    fn picks_a_write_tool_from_the_schema() {
        let body = json!({"tools": [
            {"type": "function", "function": {"name": "read", "parameters": {"properties": {"path": {}}}}},
            {"type": "function", "function": {"name": "write", "parameters": {"properties": {"path": {}, "content": {}}}}},
        ], "messages": [{"role": "user", "content": "go"}]});
        let turn = decide(Api::ChatCompletions, &script(), &body);
        assert_eq!(
            turn,
            Turn::Tool {
                name: "write".into(),
                arguments: json!({"path": "hello.txt", "content": "hello from the scripted model\n"}),
                custom: false
            }
        );
    }

    #[test]
    fn uses_an_absolute_path_when_the_schema_asks() {
        let body = json!({"tools": [{"name": "Write", "input_schema": {"properties": {
            "file_path": {"description": "The absolute path to the file to write"}, "content": {}}}}],
            "messages": [{"role": "user", "content": "go"}]});
        let Turn::Tool { arguments, .. } = decide(Api::Messages, &script(), &body) else {
            panic!("expected a tool call");
        };
        assert_eq!(arguments["file_path"], "/work/tree/hello.txt");
    }

    #[test]
    fn answers_text_after_a_tool_result() {
        let body = json!({"tools": [{"name": "Write", "input_schema": {"properties": {"file_path": {}, "content": {}}}}],
            "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]});
        assert!(matches!(
            decide(Api::Messages, &script(), &body),
            Turn::Text(_)
        ));
        let body = json!({"tools": [{"type": "custom", "name": "apply_patch"}],
            "input": [{"type": "custom_tool_call_output", "call_id": "c", "output": "ok"}]});
        assert!(matches!(
            decide(Api::Responses, &script(), &body),
            Turn::Text(_)
        ));
    }

    #[test]
    fn falls_back_to_apply_patch_then_shell() {
        let body = json!({"tools": [{"type": "custom", "name": "apply_patch"}], "input": []});
        let Turn::Tool {
            arguments, custom, ..
        } = decide(Api::Responses, &script(), &body)
        else {
            panic!("expected a tool call");
        };
        assert!(custom);
        assert!(
            arguments["input"]
                .as_str()
                .unwrap()
                .contains("*** Add File: hello.txt\n+hello")
        );
        let body = json!({"tools": [{"type": "function", "name": "shell",
            "parameters": {"properties": {"command": {"type": "array"}}}}], "input": []});
        let Turn::Tool { arguments, .. } = decide(Api::Responses, &script(), &body) else {
            panic!("expected a tool call");
        };
        assert_eq!(arguments["command"][0], "bash");
    }

    #[tokio::test]
    async fn serves_records_and_fails_on_demand() {
        let llm = ScriptedLlm::start(Script::default()).await.unwrap();
        let client = reqwest::Client::new();
        let response = client
            .post(format!("{}/v1/messages?beta=true", llm.base_url()))
            .header("x-api-key", "tok_1")
            .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.starts_with("event: message_start\n"));
        assert!(text.contains("\"text_delta\""));
        let requests = llm.requests();
        assert_eq!(requests[0].path, "/v1/messages");
        assert_eq!(requests[0].query.as_deref(), Some("beta=true"));
        assert_eq!(requests[0].credential(), Some("tok_1"));

        llm.fail_with(Some(401));
        let response = client
            .post(format!("{}/v1/chat/completions", llm.base_url()))
            .bearer_auth("tok_2")
            .json(&json!({"model": "m", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert_eq!(llm.requests()[1].credential(), Some("tok_2"));
        assert_eq!(llm.replies(), 1);
    }
}
