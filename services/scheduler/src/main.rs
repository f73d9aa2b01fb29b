//! `godel-scheduler`: runs the scheduler service.

fn main() -> std::process::ExitCode {
    godel_runtime::entry::main("godel-scheduler", godel_scheduler::serve)
}
