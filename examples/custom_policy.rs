//! A poll policy of one's own: poll on the next whole second of the job's age (so a
//! dashboard's numbers line up), never more than 10 times, give up after a minute.
//!
//! A policy decides *when to poll*; push mechanisms replace polling. While an event stream
//! or a held long-poll is at work the policy is not consulted — so this example turns both
//! off, and prints `policy_pauses` to show the policy set the pace.
//!
//! ```sh
//! cargo run --example custom_policy -- http://127.0.0.1:8080/status
//! ```

use std::time::Duration;

use translation_status::poll::{PollDecision, PollPolicy, PollPolicyExt, PollState};
use translation_status::{Client, WaitOptions};

/// Pure and synchronous: the state in, the decision out.
#[derive(Debug)]
struct OnTheSecond;

impl PollPolicy for OnTheSecond {
    fn next(&self, state: &PollState) -> PollDecision {
        let into_second = state.age.subsec_nanos();
        PollDecision::poll_after(Duration::from_secs(1) - Duration::from_nanos(into_second.into()))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(job) = std::env::args().nth(1) else {
        anyhow::bail!("usage: custom_policy <status-url>");
    };
    let client = Client::builder().build()?;
    // Limits decorate any policy; WaitOptions adds its own deadline on top. Without
    // `.sse(false).long_poll(false)` a server that streams or holds would carry the wait,
    // and the policy would choose nothing.
    let policy = OnTheSecond.with_max_polls(10);
    let options = WaitOptions::new()
        .policy(policy)
        .deadline(Duration::from_secs(60))
        .sse(false)
        .long_poll(false);
    let done = client.wait_with(job.as_str(), &options).await?;
    println!(
        "{} after {} polls, {} of the pauses chosen by the policy",
        done.status.state, done.report.requests, done.report.policy_pauses
    );
    Ok(())
}
