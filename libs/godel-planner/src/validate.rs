//! Every plan, whoever made it, is checked before anything runs: known task types and
//! profiles (and the profile handles the type), unique keys, dependencies that exist,
//! no cycles, bounded size and estimated cost.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::plan::{Catalog, Node, Plan, TaskType};

/// One thing wrong with a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Empty,
    TooLarge {
        nodes: usize,
        max: usize,
    },
    BadKey {
        key: String,
    },
    DuplicateKey {
        key: String,
    },
    EmptyPrompt {
        key: String,
    },
    UnknownTaskType {
        key: String,
        task_type: String,
    },
    UnknownProfile {
        key: String,
        profile: String,
    },
    ProfileCannot {
        key: String,
        profile: String,
        task_type: TaskType,
    },
    UnknownDependency {
        key: String,
        dependency: String,
    },
    /// The keys of one cycle, in order, the first repeated at the end.
    Cycle {
        keys: Vec<String>,
    },
    OverBudget {
        estimate_micro_usd: u64,
        max_micro_usd: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => write!(f, "the plan has no tasks"),
            Problem::TooLarge { nodes, max } => {
                write!(f, "the plan has {nodes} tasks; at most {max} are allowed")
            }
            Problem::BadKey { key } => write!(
                f,
                "task key `{key}` must be 1-64 characters of a-z, 0-9, `-` or `_`"
            ),
            Problem::DuplicateKey { key } => write!(f, "two tasks are called `{key}`"),
            Problem::EmptyPrompt { key } => write!(f, "task `{key}` has no prompt"),
            Problem::UnknownTaskType { key, task_type } => write!(
                f,
                "task `{key}` has the unknown type `{task_type}` (known: {})",
                TaskType::ALL
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Problem::UnknownProfile { key, profile } => {
                write!(f, "task `{key}` names the unknown profile `{profile}`")
            }
            Problem::ProfileCannot {
                key,
                profile,
                task_type,
            } => write!(
                f,
                "task `{key}`: profile `{profile}` does not handle {task_type} tasks"
            ),
            Problem::UnknownDependency { key, dependency } => {
                write!(
                    f,
                    "task `{key}` depends on `{dependency}`, which is not in the plan"
                )
            }
            Problem::Cycle { keys } => write!(f, "the tasks form a cycle: {}", keys.join(" → ")),
            Problem::OverBudget {
                estimate_micro_usd,
                max_micro_usd,
            } => write!(
                f,
                "the plan is estimated to cost {} but at most {} is allowed",
                usd(*estimate_micro_usd),
                usd(*max_micro_usd)
            ),
        }
    }
}

/// Micro-USD as dollars (`$0.42`).
pub fn usd(micro: u64) -> String {
    format!("${}.{:02}", micro / 1_000_000, (micro % 1_000_000) / 10_000)
}

/// Why a plan was refused: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the plan is invalid: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidPlan {
    pub problems: Vec<Problem>,
}

/// A checked task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidNode {
    pub key: String,
    pub task_type: TaskType,
    pub profile: String,
    pub prompt: String,
    pub depends_on: Vec<String>,
}

/// A plan that passed every check: its tasks in a dependency order (each after
/// everything it depends on) and its estimated cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPlan {
    pub summary: String,
    pub nodes: Vec<ValidNode>,
    pub estimated_cost_micro_usd: u64,
}

impl ValidPlan {
    /// The tasks' keys grouped by depth: the first group depends on nothing, each
    /// later one only on earlier groups. Tasks in one group can run in parallel.
    pub fn layers(&self) -> Vec<Vec<&str>> {
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        for node in &self.nodes {
            let d = node
                .depends_on
                .iter()
                .map(|dep| depth[dep.as_str()] + 1)
                .max()
                .unwrap_or(0);
            depth.insert(&node.key, d);
        }
        let mut layers: Vec<Vec<&str>> = Vec::new();
        for node in &self.nodes {
            let d = depth[node.key.as_str()];
            if layers.len() <= d {
                layers.resize_with(d + 1, Vec::new);
            }
            layers[d].push(&node.key);
        }
        layers
    }
}

fn good_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks `plan` against `catalog`.
pub fn validate(plan: &Plan, catalog: &Catalog) -> Result<ValidPlan, InvalidPlan> {
    let mut problems = Vec::new();
    if plan.nodes.is_empty() {
        problems.push(Problem::Empty);
    }
    if plan.nodes.len() > catalog.max_nodes {
        // Too large to be worth checking further.
        return Err(InvalidPlan {
            problems: vec![Problem::TooLarge {
                nodes: plan.nodes.len(),
                max: catalog.max_nodes,
            }],
        });
    }
    let mut keys = BTreeSet::new();
    let mut estimate: u64 = 0;
    let mut typed = Vec::with_capacity(plan.nodes.len());
    for node in &plan.nodes {
        if !good_key(&node.key) {
            problems.push(Problem::BadKey {
                key: node.key.clone(),
            });
        }
        if !keys.insert(node.key.as_str()) {
            problems.push(Problem::DuplicateKey {
                key: node.key.clone(),
            });
        }
        if node.prompt.trim().is_empty() {
            problems.push(Problem::EmptyPrompt {
                key: node.key.clone(),
            });
        }
        let task_type = TaskType::from_name(&node.task_type);
        if task_type.is_none() {
            problems.push(Problem::UnknownTaskType {
                key: node.key.clone(),
                task_type: node.task_type.clone(),
            });
        }
        match catalog.profile(&node.profile) {
            None => problems.push(Problem::UnknownProfile {
                key: node.key.clone(),
                profile: node.profile.clone(),
            }),
            Some(profile) => {
                estimate = estimate.saturating_add(profile.estimated_cost_micro_usd);
                if let Some(t) = task_type
                    && !profile.handles.contains(&t)
                {
                    problems.push(Problem::ProfileCannot {
                        key: node.key.clone(),
                        profile: node.profile.clone(),
                        task_type: t,
                    });
                }
            }
        }
        typed.push(task_type);
    }
    for node in &plan.nodes {
        for dependency in &node.depends_on {
            if !keys.contains(dependency.as_str()) {
                problems.push(Problem::UnknownDependency {
                    key: node.key.clone(),
                    dependency: dependency.clone(),
                });
            }
        }
    }
    let order = match topological_order(&plan.nodes) {
        Ok(order) => order,
        Err(cycle) => {
            problems.push(Problem::Cycle { keys: cycle });
            Vec::new()
        }
    };
    if catalog.max_cost_micro_usd > 0 && estimate > catalog.max_cost_micro_usd {
        problems.push(Problem::OverBudget {
            estimate_micro_usd: estimate,
            max_micro_usd: catalog.max_cost_micro_usd,
        });
    }
    if !problems.is_empty() {
        return Err(InvalidPlan { problems });
    }
    let nodes = order
        .into_iter()
        .map(|i| {
            let node = &plan.nodes[i];
            let mut depends_on = node.depends_on.clone();
            depends_on.sort();
            depends_on.dedup();
            ValidNode {
                key: node.key.clone(),
                task_type: typed[i].expect("checked above"),
                profile: node.profile.clone(),
                prompt: node.prompt.clone(),
                depends_on,
            }
        })
        .collect();
    Ok(ValidPlan {
        summary: plan.summary.clone(),
        nodes,
        estimated_cost_micro_usd: estimate,
    })
}

/// Indexes of `nodes` in a dependency order (stable: plan order among ready tasks),
/// or one cycle's keys. Unknown dependencies are ignored here (reported apart).
fn topological_order(nodes: &[Node]) -> Result<Vec<usize>, Vec<String>> {
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.key.as_str(), i))
        .collect();
    // 0 unvisited, 1 on the current path, 2 done.
    let mut mark = vec![0u8; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    let mut path: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        nodes: &[Node],
        index: &BTreeMap<&str, usize>,
        mark: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), Vec<String>> {
        match mark[i] {
            2 => return Ok(()),
            1 => {
                let start = path.iter().position(|&p| p == i).unwrap_or(0);
                let mut keys: Vec<String> = path[start..]
                    .iter()
                    .map(|&p| nodes[p].key.clone())
                    .collect();
                keys.push(nodes[i].key.clone());
                return Err(keys);
            }
            _ => {}
        }
        mark[i] = 1;
        path.push(i);
        for dependency in &nodes[i].depends_on {
            if let Some(&d) = index.get(dependency.as_str()) {
                visit(d, nodes, index, mark, order, path)?;
            }
        }
        path.pop();
        mark[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..nodes.len() {
        visit(i, nodes, &index, &mut mark, &mut order, &mut path)?;
    }
    Ok(order)
}
