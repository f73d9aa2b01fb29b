//! `godel-sim-agent`: the simulated coding agent (see
//! `godel_orchestrator::runtime::sim_agent` for its flags and event shape).

use clap::Parser;

fn main() -> std::process::ExitCode {
    godel_orchestrator::runtime::sim_agent::main(
        godel_orchestrator::runtime::sim_agent::SimArgs::parse(),
    )
}
