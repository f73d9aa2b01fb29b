//! `godel-orchestrator`: runs the orchestrator service.

fn main() -> std::process::ExitCode {
    godel_runtime::entry::main("godel-orchestrator", godel_orchestrator::serve)
}
