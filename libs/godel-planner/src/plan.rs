//! A plan: the DAG of tasks an intent becomes, in the JSON shape every planner
//! produces (the LLM planner is asked for exactly this), and the catalog it is
//! checked against.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of work a task is. Profiles say which kinds they handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    Implement,
    Test,
    Review,
    Docs,
    Refactor,
    Investigate,
}

impl TaskType {
    pub const ALL: &'static [TaskType] = &[
        TaskType::Implement,
        TaskType::Test,
        TaskType::Review,
        TaskType::Docs,
        TaskType::Refactor,
        TaskType::Investigate,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            TaskType::Implement => "implement",
            TaskType::Test => "test",
            TaskType::Review => "review",
            TaskType::Docs => "docs",
            TaskType::Refactor => "refactor",
            TaskType::Investigate => "investigate",
        }
    }

    /// The type called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.as_str() == name)
    }

    /// Whether tasks of this type change the repository (a quality gate runs after
    /// them).
    pub fn changes_code(self) -> bool {
        matches!(
            self,
            TaskType::Implement | TaskType::Refactor | TaskType::Test
        )
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One task of a plan. `key` names it inside the plan (`implement-1`); `depends_on`
/// lists the keys that must succeed first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub key: String,
    /// A task type name (see [`TaskType`]); checked by validation, kept as text so a
    /// planner's unknown type is reported rather than lost in parsing.
    pub task_type: String,
    /// The agent profile that runs it.
    pub profile: String,
    /// What the agent is asked to do.
    pub prompt: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// A plan as a planner proposes it: not yet validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// One line for people: what the plan does.
    #[serde(default)]
    pub summary: String,
    pub nodes: Vec<Node>,
}

/// An agent profile as planning sees it: its name, the task types it handles and
/// what one task is expected to cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileInfo {
    pub name: String,
    pub handles: BTreeSet<TaskType>,
    /// Expected cost of one task, in millionths of a US dollar (0: free, e.g. the
    /// simulated agent).
    #[serde(default)]
    pub estimated_cost_micro_usd: u64,
}

/// What plans are checked against: the team's profiles (in preference order) and the
/// bounds on size and cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Catalog {
    pub profiles: Vec<ProfileInfo>,
    /// Most tasks in one plan.
    pub max_nodes: usize,
    /// Most estimated cost of one plan, in micro-USD (0: unbounded).
    pub max_cost_micro_usd: u64,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            profiles: Vec::new(),
            max_nodes: 50,
            max_cost_micro_usd: 0,
        }
    }
}

impl Catalog {
    /// The first profile handling `task_type`.
    pub fn profile_for(&self, task_type: TaskType) -> Option<&ProfileInfo> {
        self.profiles
            .iter()
            .find(|p| p.handles.contains(&task_type))
    }

    pub fn profile(&self, name: &str) -> Option<&ProfileInfo> {
        self.profiles.iter().find(|p| p.name == name)
    }
}
