//! The deterministic planner: works offline, same request → same plan.
//!
//! 1. **Task type** from the request's words: the first of investigate, refactor,
//!    docs, test, review, implement whose cue words appear (implement when none do).
//! 2. **Parallel branches** from an enumeration: a trailing list `A, B and C` (or
//!    `A, B, C`) of short items splits the main task into one branch per item, each
//!    asked for the request with only its own item.
//! 3. **Standard shapes** around the main task(s):
//!    implement → test → review; refactor → test → review; test → review;
//!    docs → review; review alone; investigate alone. A request that also asks for
//!    documentation (`… and document it`) gets a docs task after the main ones.
//!
//! Every task gets the catalog's first profile that handles its type; a type no
//! profile handles is left for validation to report.

use crate::plan::{Catalog, Node, Plan, TaskType};

/// Cue words per type, checked in this order (the first type with a cue wins).
const CUES: &[(TaskType, &[&str])] = &[
    (
        TaskType::Investigate,
        &[
            "investigate",
            "why",
            "diagnose",
            "find out",
            "root cause",
            "figure out",
            "explain",
        ],
    ),
    (
        TaskType::Refactor,
        &[
            "refactor",
            "clean up",
            "cleanup",
            "rename",
            "extract",
            "restructure",
            "simplify",
            "deduplicate",
        ],
    ),
    (
        TaskType::Docs,
        &["document", "documentation", "docs", "readme", "docstring"],
    ),
    (
        TaskType::Test,
        &["test", "tests", "coverage", "unit test", "regression test"],
    ),
    (TaskType::Review, &["review", "audit the code", "look over"]),
];

/// Cue words meaning "also write documentation" when the main type is another.
const DOCS_TOO: &[&str] = &[
    "and document",
    "and update the docs",
    "with docs",
    "and docs",
];

/// Longest item of an enumeration, in words, for it to count as a list of branches.
const MAX_ITEM_WORDS: usize = 6;

/// Most branches one enumeration makes.
const MAX_BRANCHES: usize = 12;

/// The type of work `request` asks for.
pub fn task_type(request: &str) -> TaskType {
    let text = format!(" {} ", normalize(request));
    for (task_type, cues) in CUES {
        if cues.iter().any(|cue| text.contains(&format!(" {cue} "))) {
            return *task_type;
        }
    }
    TaskType::Implement
}

/// Lowercase words separated by single spaces, punctuation other than `,` dropped
/// (so cue words match whole words).
fn normalize(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ',' || c == '-' || c == '_' || c == '/' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect();
    cleaned
        .replace(',', " , ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" , ", ", ")
        .trim_end_matches('.')
        .to_owned()
}

/// Words after which a list starts (`… for users, teams and projects`).
const CONNECTORS: &[&str] = &["for", "to", "in", "on", "of", "with", "across", "between"];

/// Words that start a clause rather than a list item (`add X and write tests` is two
/// steps, not a list).
const VERBS: &[&str] = &[
    "add",
    "write",
    "update",
    "fix",
    "document",
    "test",
    "run",
    "make",
    "remove",
    "create",
    "implement",
    "refactor",
    "review",
    "build",
    "support",
    "then",
    "also",
];

/// A trailing enumeration in `request`: the text before it and its items, or `None`
/// when the request has no list of at least two short items.
pub fn enumeration(request: &str) -> Option<(String, Vec<String>)> {
    let text = request.trim().trim_end_matches('.').trim();
    // Where the list is known to be under way: its first comma, else its last `and`.
    let anchor = text.find(',').or_else(|| text.rfind(" and "))?;
    let before: Vec<&str> = text[..anchor].split_whitespace().collect();
    // The list starts after the last connector (or `word:`) before the anchor, else
    // after the first word (the verb: `Add users, teams and projects`).
    let start = before
        .iter()
        .rposition(|w| w.ends_with(':') || CONNECTORS.contains(&w.to_ascii_lowercase().as_str()))
        .map_or(1, |i| i + 1);
    if start == 0 || start >= before.len() {
        return None;
    }
    let prefix = before[..start].join(" ");
    let list = format!("{}{}", before[start..].join(" "), &text[anchor..]);
    let items: Vec<String> = list
        .split(',')
        .flat_map(|part| {
            let part = part.trim();
            let part = part.strip_prefix("and ").unwrap_or(part);
            part.split(" and ").map(str::trim).collect::<Vec<_>>()
        })
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect();
    let short = items
        .iter()
        .all(|item| item.split_whitespace().count() <= MAX_ITEM_WORDS);
    let clauses = items.iter().skip(1).any(|item| {
        let first = item.split_whitespace().next().unwrap_or_default();
        VERBS.contains(&first.to_ascii_lowercase().as_str())
    });
    if items.len() < 2 || items.len() > MAX_BRANCHES || !short || clauses {
        return None;
    }
    Some((prefix, items))
}

/// Plans `request` deterministically.
pub fn plan(request: &str, catalog: &Catalog) -> Plan {
    let request = request.trim();
    let main = task_type(request);
    let profile = |t: TaskType| {
        catalog
            .profile_for(t)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| format!("(no profile handles {t})"))
    };
    let mut nodes = Vec::new();
    let mut mains = Vec::new();
    let branches = match main {
        TaskType::Implement | TaskType::Refactor | TaskType::Docs | TaskType::Test => {
            enumeration(request)
        }
        TaskType::Review | TaskType::Investigate => None,
    };
    match branches {
        Some((prefix, items)) => {
            for (i, item) in items.iter().enumerate() {
                let key = format!("{}-{}", main, i + 1);
                nodes.push(Node {
                    key: key.clone(),
                    task_type: main.as_str().to_owned(),
                    profile: profile(main),
                    prompt: format!(
                        "{prefix} {item}.\n\nThis is one part of the request: \"{request}\". Do only this part."
                    ),
                    depends_on: Vec::new(),
                });
                mains.push(key);
            }
        }
        None => {
            let key = format!("{main}-1");
            nodes.push(Node {
                key: key.clone(),
                task_type: main.as_str().to_owned(),
                profile: profile(main),
                prompt: request.to_owned(),
                depends_on: Vec::new(),
            });
            mains.push(key);
        }
    }
    let lower = normalize(request);
    let mut last = mains.clone();
    if main != TaskType::Docs && DOCS_TOO.iter().any(|cue| lower.contains(cue)) {
        nodes.push(Node {
            key: "docs".to_owned(),
            task_type: TaskType::Docs.as_str().to_owned(),
            profile: profile(TaskType::Docs),
            prompt: format!("Update the documentation for the change: \"{request}\"."),
            depends_on: mains.clone(),
        });
        last = vec!["docs".to_owned()];
    }
    let mut then = |task_type: TaskType, prompt: String| {
        let key = task_type.as_str().to_owned();
        nodes.push(Node {
            key: key.clone(),
            task_type: task_type.as_str().to_owned(),
            profile: profile(task_type),
            prompt,
            depends_on: std::mem::take(&mut last),
        });
        last = vec![key];
    };
    match main {
        TaskType::Implement | TaskType::Refactor => {
            then(
                TaskType::Test,
                format!(
                    "Add or update tests covering the change made for: \"{request}\". Run the test suite and fix what fails."
                ),
            );
            then(
                TaskType::Review,
                format!("Review the change made for: \"{request}\". Fix any defect you find."),
            );
        }
        TaskType::Test | TaskType::Docs => then(
            TaskType::Review,
            format!("Review the change made for: \"{request}\". Fix any defect you find."),
        ),
        TaskType::Review | TaskType::Investigate => {}
    }
    let summary = match mains.len() {
        1 => format!("{main}, then the standard checks"),
        n => format!("{main} in {n} parallel branches, then the standard checks"),
    };
    Plan { summary, nodes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_cue_words() {
        for (request, expected) in [
            ("Add a health endpoint", TaskType::Implement),
            ("Why does login fail on Safari?", TaskType::Investigate),
            ("Refactor the queue module", TaskType::Refactor),
            ("Write docs for the CLI", TaskType::Docs),
            ("Increase test coverage of the parser", TaskType::Test),
            ("Review the last change", TaskType::Review),
            ("Make the retries exponential", TaskType::Implement),
        ] {
            assert_eq!(task_type(request), expected, "{request}");
        }
    }

    #[test]
    fn enumerations_split_into_items() {
        assert_eq!(
            enumeration("Add endpoints for users, teams and projects"),
            Some((
                "Add endpoints for".to_owned(),
                vec![
                    "users".to_owned(),
                    "teams".to_owned(),
                    "projects".to_owned()
                ]
            ))
        );
        assert_eq!(
            enumeration("Support export to CSV and JSON."),
            Some((
                "Support export to".to_owned(),
                vec!["CSV".to_owned(), "JSON".to_owned()]
            ))
        );
        assert_eq!(
            enumeration("Add users, teams and projects"),
            Some((
                "Add".to_owned(),
                vec![
                    "users".to_owned(),
                    "teams".to_owned(),
                    "projects".to_owned()
                ]
            ))
        );
        assert_eq!(enumeration("Fix the login bug"), None);
        // Two steps, not a list.
        assert_eq!(enumeration("Add a health endpoint and write tests"), None);
        // An item too long to be a branch: one task.
        assert_eq!(
            enumeration(
                "Fix the bug, which makes the scheduler crash whenever a lease expires early"
            ),
            None
        );
    }
}
