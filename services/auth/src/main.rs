//! `godel-auth`: runs the auth service.

fn main() -> std::process::ExitCode {
    godel_runtime::entry::main("godel-auth", godel_auth::serve)
}
