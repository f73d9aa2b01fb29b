//! Runs the scripted LLM provider until killed, printing its base URL and each
//! request it records: a way to try an agent CLI against it by hand.
//!
//! `cargo run -p godel-test-utils --example scripted_llm -- [ROOT]`

use std::time::Duration;

use godel_test_utils::llm::{Script, ScriptedLlm};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = std::env::args().nth(1).map(Into::into);
    let fail = std::env::var("FAIL").ok().and_then(|s| s.parse().ok());
    let llm = ScriptedLlm::start(Script {
        root,
        ..Script::default()
    })
    .await?;
    llm.fail_with(fail);
    println!("{}", llm.base_url());
    let mut seen = 0;
    loop {
        let requests = llm.requests();
        for request in &requests[seen..] {
            println!(
                "{} {} {:?} credential={:?}\n{}",
                request.method,
                request.path,
                request.query,
                request.credential(),
                request.body
            );
        }
        seen = requests.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
