//! Planning: turning what an engineer asks for into a DAG of tasks.
//!
//! - [`plan`]: the plan model ([`Plan`], [`Node`]), task types and the [`Catalog`] of
//!   a team's profiles and bounds;
//! - [`validate()`]: the checks every plan passes before anything runs;
//! - [`deterministic`]: the offline planner (type recognition, enumerations split into
//!   parallel branches, standard shapes);
//! - [`llm`]: the planner that asks a model through Godel's LLM proxy;
//! - [`plan_intent`]: one entry point — the chosen planner, validation, and the
//!   fallback to the deterministic planner, saying why.

pub mod deterministic;
pub mod llm;
pub mod plan;
mod validate;

pub use llm::LlmPlanner;
pub use plan::{Catalog, Node, Plan, ProfileInfo, TaskType};
pub use validate::{InvalidPlan, Problem, ValidNode, ValidPlan, usd, validate};

/// Why a planner produced no plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The planner could not be asked (the model unreachable or refusing).
    #[error("{0}")]
    Unavailable(String),
    /// The planner's answer is not a plan.
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Invalid(#[from] InvalidPlan),
}

/// Something that proposes plans.
#[async_trait::async_trait]
pub trait Planner: Send + Sync {
    /// `deterministic`, `llm`, …: said with every plan.
    fn name(&self) -> &'static str;
    async fn propose(&self, request: &str, catalog: &Catalog) -> Result<Plan, PlanError>;
}

/// The deterministic planner as a [`Planner`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Deterministic;

#[async_trait::async_trait]
impl Planner for Deterministic {
    fn name(&self) -> &'static str {
        "deterministic"
    }

    async fn propose(&self, request: &str, catalog: &Catalog) -> Result<Plan, PlanError> {
        Ok(deterministic::plan(request, catalog))
    }
}

/// A validated plan and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub plan: ValidPlan,
    /// The planner whose plan this is.
    pub planner: &'static str,
    /// Why the chosen planner's plan was not used, when the deterministic planner
    /// stood in.
    pub fallback_reason: Option<String>,
}

/// Plans `request` with `planner` (the deterministic one when `None`) and validates
/// the plan. When another planner fails or proposes an invalid plan, the
/// deterministic planner's plan is used instead and the reason kept. Fails only
/// when the deterministic plan itself is invalid (no profile for a needed type, a
/// request too large for the bounds).
pub async fn plan_intent(
    planner: Option<&dyn Planner>,
    request: &str,
    catalog: &Catalog,
) -> Result<Planned, InvalidPlan> {
    if request.trim().is_empty() {
        return Err(InvalidPlan {
            problems: vec![Problem::Empty],
        });
    }
    let mut fallback_reason = None;
    if let Some(planner) = planner.filter(|p| p.name() != Deterministic.name()) {
        let proposed = planner.propose(request, catalog).await;
        match proposed.and_then(|plan| validate(&plan, catalog).map_err(PlanError::from)) {
            Ok(plan) => {
                return Ok(Planned {
                    plan,
                    planner: planner.name(),
                    fallback_reason: None,
                });
            }
            Err(error) => {
                tracing::warn!(planner = planner.name(), %error, "planner failed; using the deterministic planner");
                fallback_reason = Some(format!("the {} planner failed: {error}", planner.name()));
            }
        }
    }
    let plan = validate(&deterministic::plan(request, catalog), catalog)?;
    Ok(Planned {
        plan,
        planner: Deterministic.name(),
        fallback_reason,
    })
}
