//! Plans as text: a DAG drawn as an indented tree (each task under the deepest
//! task it waits for, naming every task it waits for), states in colour on a
//! terminal.

use std::collections::HashMap;
use std::fmt::Write;

use serde_json::Value;

/// Colours on, or off (not a terminal, or JSON output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// Micro-USD as dollars (`$0.42`).
pub fn usd(micro: u64) -> String {
    format!("${}.{:02}", micro / 1_000_000, (micro % 1_000_000) / 10_000)
}

/// One task of a tree.
struct Line {
    key: String,
    what: String,
    detail: String,
    depends_on: Vec<String>,
}

/// `lines` (each after everything it waits for) as a tree.
fn tree(lines: &[Line], style: Style) -> String {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    for line in lines {
        let d = line
            .depends_on
            .iter()
            .filter_map(|dep| depth.get(dep.as_str()))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        depth.insert(&line.key, d);
    }
    let width = lines
        .iter()
        .map(|l| l.key.len() + 3 * depth.get(l.key.as_str()).copied().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let what_width = lines
        .iter()
        .map(|l| l.what.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for line in lines {
        let d = depth.get(line.key.as_str()).copied().unwrap_or(0);
        let lead = if d == 0 {
            String::new()
        } else {
            format!("{}└─ ", "   ".repeat(d - 1))
        };
        let pad = width.saturating_sub(lead.chars().count() + line.key.len());
        let after = if line.depends_on.is_empty() {
            String::new()
        } else {
            style.dim(&format!("  after {}", line.depends_on.join(", ")))
        };
        let what_pad = what_width.saturating_sub(line.what.chars().count());
        let _ = writeln!(
            out,
            "{lead}{}{}  {}{}  {}{after}",
            style.bold(&line.key),
            " ".repeat(pad),
            line.what,
            " ".repeat(what_pad),
            line.detail
        );
    }
    out
}

/// A planned intent (`godel.scheduler.v1.IntentPlan` in proto3 JSON): summary,
/// planner, estimated cost and the tree of tasks with their profiles and prompts.
pub fn intent(plan: &Value, style: Style) -> String {
    let nodes = plan["nodes"].as_array().cloned().unwrap_or_default();
    let lines: Vec<Line> = nodes
        .iter()
        .map(|n| Line {
            key: text(&n["key"]),
            what: format!("[{} · {}]", text(&n["taskType"]), text(&n["profile"])),
            detail: usd(number(&n["estimatedCostMicroUsd"])),
            depends_on: strings(&n["dependsOn"]),
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "{} {}", style.bold("Plan:"), text(&plan["summary"]));
    let reason = text(&plan["fallbackReason"]);
    let planner = text(&plan["planner"]);
    if reason.is_empty() {
        let _ = writeln!(out, "{} {planner}", style.bold("Planner:"));
    } else {
        let _ = writeln!(out, "{} {planner} ({reason})", style.bold("Planner:"));
    }
    let _ = writeln!(
        out,
        "{} {} for {} tasks\n",
        style.bold("Estimated cost:"),
        usd(number(&plan["estimatedCostMicroUsd"])),
        nodes.len()
    );
    out.push_str(&tree(&lines, style));
    out.push('\n');
    for n in &nodes {
        let _ = writeln!(
            out,
            "{} {}",
            style.bold(&format!("{}:", text(&n["key"]))),
            first_line(&text(&n["prompt"]))
        );
    }
    out
}

/// The state name of a proto3 JSON enum value (`TASK_STATE_RUNNING` → `running`).
pub fn state_name(value: &Value, prefix: &str) -> String {
    text(value)
        .strip_prefix(prefix)
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn task_state(state: &str, style: Style) -> String {
    let (mark, code) = match state {
        "succeeded" => ("✓", "32"),
        "failed" | "dead_lettered" => ("✗", "31"),
        "cancelled" => ("⊘", "33"),
        "running" | "leased" => ("▶", "36"),
        _ => ("·", "2"),
    };
    style.paint(code, &format!("{mark} {state}"))
}

/// What the tasks of a plan view (`GET …/plans/{id}`) reported spending.
pub fn cost_so_far(view: &Value) -> Option<u64> {
    let costs: Vec<u64> = view["tasks"]
        .as_array()?
        .iter()
        .filter_map(|t| t["task"]["resultJson"].as_str())
        .filter_map(|r| serde_json::from_str::<Value>(r).ok())
        .filter_map(|r| r["usage"]["cost_micro_usd"].as_u64())
        .collect();
    (!costs.is_empty()).then(|| costs.iter().sum())
}

/// A plan view (`GET …/plans/{id}`): its state, the tree of its tasks with their
/// states, the cost so far and the integration branch.
pub fn plan_view(view: &Value, style: Style) -> String {
    let plan = &view["plan"];
    let tasks = view["tasks"].as_array().cloned().unwrap_or_default();
    let keys: HashMap<String, String> = tasks
        .iter()
        .map(|t| (text(&t["task"]["id"]), text(&t["task"]["planKey"])))
        .collect();
    let lines: Vec<Line> = tasks
        .iter()
        .map(|t| {
            let task = &t["task"];
            let state = state_name(&task["state"], "TASK_STATE_");
            let error = text(&task["lastError"]);
            let mut detail = task_state(&state, style);
            if !error.is_empty() && state != "succeeded" {
                detail.push_str(&style.dim(&format!(" — {}", first_line(&error))));
            }
            Line {
                key: text(&task["planKey"]),
                what: format!("[{}]", text(&task["taskType"])),
                detail,
                depends_on: strings(&t["dependsOn"])
                    .iter()
                    .map(|id| keys.get(id).cloned().unwrap_or_else(|| id.clone()))
                    .collect(),
            }
        })
        .collect();
    let mut out = String::new();
    let state = state_name(&plan["state"], "PLAN_STATE_");
    let _ = writeln!(
        out,
        "{} {}  {}  {}",
        style.bold("Plan"),
        text(&plan["id"]),
        task_state(&state, style),
        text(&plan["name"])
    );
    let _ = write!(
        out,
        "{}/{} tasks succeeded",
        number(&plan["succeededCount"]),
        number(&plan["taskCount"])
    );
    if let Some(cost) = cost_so_far(view) {
        let _ = write!(out, ", {} spent", usd(cost));
    }
    out.push_str("\n\n");
    out.push_str(&tree(&lines, style));
    let integration = &view["integration"];
    if integration.is_object() {
        let _ = writeln!(
            out,
            "\n{} {} (base {}, head {}, {})",
            style.bold("Integration branch:"),
            text(&integration["branch"]),
            short(&text(&integration["baseCommit"])),
            short(&text(&integration["headCommit"])),
            text(&integration["state"])
        );
    }
    out
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

pub fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// A proto3 JSON integer: a number, or a string for 64-bit ones.
pub fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PLAIN: Style = Style { color: false };

    #[test]
    fn an_intent_is_drawn_as_a_tree_with_costs_and_the_planner() {
        let plan = json!({
            "summary": "Add X",
            "planner": "deterministic",
            "fallbackReason": "no LLM planner is configured",
            "estimatedCostMicroUsd": "250000",
            "nodes": [
                {"key": "implement-1", "taskType": "implement", "profile": "coder", "prompt": "Add X", "estimatedCostMicroUsd": "250000"},
                {"key": "implement-2", "taskType": "implement", "profile": "coder", "prompt": "Add Y"},
                {"key": "test", "taskType": "test", "profile": "simulated", "prompt": "Test", "dependsOn": ["implement-1", "implement-2"]},
                {"key": "review", "taskType": "review", "profile": "simulated", "prompt": "Review", "dependsOn": ["test"]},
            ],
        });
        let text = intent(&plan, PLAIN);
        assert!(
            text.contains("Planner: deterministic (no LLM planner is configured)"),
            "{text}"
        );
        assert!(text.contains("Estimated cost: $0.25 for 4 tasks"), "{text}");
        assert!(text.contains("[implement · coder]   $0.25"), "{text}");
        assert!(text.contains("└─ test"), "{text}");
        assert!(text.contains("after implement-1, implement-2"), "{text}");
        assert!(text.contains("   └─ review"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(intent(&plan, Style { color: true }).contains('\x1b'));
    }

    #[test]
    fn a_plan_view_shows_states_cost_and_integration() {
        let view = json!({
            "plan": {"id": "pln_1", "name": "Add X", "state": "PLAN_STATE_FAILED", "taskCount": 2, "succeededCount": 1},
            "tasks": [
                {"task": {"id": "tsk_a", "planKey": "implement-1", "taskType": "implement", "state": "TASK_STATE_SUCCEEDED",
                          "resultJson": "{\"usage\": {\"cost_micro_usd\": 120000}}"}},
                {"task": {"id": "tsk_b", "planKey": "test", "taskType": "test", "state": "TASK_STATE_DEAD_LETTERED",
                          "lastError": "tests failed\nmore"}, "dependsOn": ["tsk_a"]},
            ],
            "integration": {"branch": "godel/plan-pln_1", "baseCommit": "a".repeat(40), "headCommit": "b".repeat(40), "state": "open"},
        });
        let text = plan_view(&view, PLAIN);
        assert!(text.contains("✗ failed"), "{text}");
        assert!(text.contains("1/2 tasks succeeded, $0.12 spent"), "{text}");
        assert!(text.contains("└─ test"), "{text}");
        assert!(
            text.contains("[test]       ✗ dead_lettered — tests failed  after implement-1"),
            "{text}"
        );
        assert!(
            text.contains("godel/plan-pln_1 (base aaaaaaaaaaaa, head bbbbbbbbbbbb, open)"),
            "{text}"
        );
        assert_eq!(cost_so_far(&json!({"tasks": []})), None);
    }
}
