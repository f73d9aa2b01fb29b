//! `godel-audit`: runs the audit service.

fn main() -> std::process::ExitCode {
    godel_runtime::entry::main("godel-audit", godel_audit::serve)
}
