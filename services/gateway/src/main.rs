//! `godel-gateway`: runs the gateway.

fn main() -> std::process::ExitCode {
    godel_runtime::entry::main("godel-gateway", godel_gateway::serve)
}
