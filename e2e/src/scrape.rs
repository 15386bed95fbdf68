//! Reading the services' `/metrics` in tests.

use crate::http;
use crate::service::Service;
use anyhow::Result;

/// Sum of the samples of every series of `/metrics` whose line starts with `prefix`.
pub async fn metric(addr: &str, prefix: &str) -> Result<f64> {
    let mut c = http::Client::connect(addr).await?;
    let r = c.request("GET", "/metrics", &[]).await?;
    Ok(r.body
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Prints how often the gap guard of a processor and a materializer stepped back for a record
/// the broker skipped (`refetched`) or stepped over a real gap (`skipped`): how the broker
/// behaves, for the docs (docs/operations.md, "Local broker").
pub async fn report_gaps(processor: &Service, materializer: &Service) -> Result<()> {
    for (svc, name) in [(processor, "processor"), (materializer, "materializer")] {
        let mut counts = Vec::new();
        for outcome in ["refetched", "skipped"] {
            let prefix = format!("analytics_{name}_offset_gaps_total{{outcome=\"{outcome}\"}}");
            counts.push(format!("{outcome} {}", metric(&svc.addr(), &prefix).await?));
        }
        eprintln!("{name} offset gaps: {}", counts.join(", "));
    }
    Ok(())
}
