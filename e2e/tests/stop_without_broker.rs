//! A service asked to stop finishes within `--shutdown-timeout` even when the broker is
//! already gone (a Kafka client's close can otherwise wait for it far longer). The services
//! run with a 2 s timeout; after the broker is killed each gets SIGTERM and must exit by
//! itself (status 0, or 1 when the deadline cut its stop short), not be killed by the test
//! after a generous margin.

use anyhow::{anyhow, ensure, Result};
use e2e::http::Client;
use e2e::{Stack, MATERIALIZER_ARGS, PROCESSOR_ARGS};
use std::time::{Duration, Instant};

const TIMEOUT: &str = "2s";
/// Far more than any scheduling delay: a service still running then ignored its deadline.
const MARGIN: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_stop_within_their_timeout_without_a_broker() -> Result<()> {
    let mut stack = Stack::start()?;
    let with_timeout = |args: &[&'static str]| {
        let mut v = args.to_vec();
        v.extend(["--shutdown-timeout", TIMEOUT]);
        v
    };
    let mut services = vec![
        ("command", stack.service("command", &with_timeout(&[]))?),
        (
            "processor",
            stack.service("processor", &with_timeout(PROCESSOR_ARGS))?,
        ),
        (
            "materializer",
            stack.service("materializer", &with_timeout(MATERIALIZER_ARGS))?,
        ),
    ];
    e2e::all_ready(&services.iter().map(|(_, s)| s).collect::<Vec<_>>()).await?;
    stack.stop_broker(true);
    // The broker is gone for the services' clients once the command's readiness check (a
    // metadata request to the broker) fails.
    let command = &services[0].1;
    e2e::wait_for(
        "the command's /readyz reports the broker unreachable",
        Duration::from_secs(30),
        || async move {
            let r = Client::connect(&command.addr())
                .await?
                .request("GET", "/readyz", &[])
                .await?;
            if r.status == 503 {
                Ok(Some(()))
            } else {
                Err(anyhow!("/readyz answered {} {}", r.status, r.body))
            }
        },
    )
    .await?;
    for (name, s) in &mut services {
        let t0 = Instant::now();
        let code = s.proc.terminate(Duration::from_secs(2) + MARGIN);
        eprintln!("{name}: exit {code:?} after {:?}", t0.elapsed());
        ensure!(
            code.is_some(),
            "{name} did not stop by itself after SIGTERM without a broker\n{}",
            s.proc.tail(20)
        );
    }
    Ok(())
}
