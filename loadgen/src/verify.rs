//! Reading hours back from the query service and waiting until each reads as expected: the
//! one verifier of `loadgen run --verify` and of the end-to-end tests (`e2e::workload`).

use crate::client::Client;
use crate::truth::parse_body;
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// `GET /analytics` for `hour` (any millisecond inside it); the three counts of a `200`
/// answered in the text form.
pub async fn get_hour(c: &mut Client, hour: i64) -> Result<[u64; 3]> {
    let r = c
        .request("GET", &format!("/analytics?timestamp={hour}"), &[])
        .await?;
    if r.status != 200 {
        bail!("GET for hour {hour} answered {} {}", r.status, r.body);
    }
    if r.header("content-type") != Some("text/plain; charset=utf-8") {
        bail!(
            "GET for hour {hour}: content-type {:?}",
            r.header("content-type")
        );
    }
    Ok(parse_body(&r.body))
}

/// Reads every hour, every 200 ms, until `check` accepts each or `within` has passed.
/// Returns the mismatches of the last round (empty: every hour as expected); an unreachable
/// query service or a failed read counts as a mismatch, not an error, so that a test can
/// ride out a restart.
pub async fn until(
    query: &str,
    hours: &[i64],
    within: Duration,
    check: impl Fn(i64, [u64; 3]) -> Result<(), String>,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let mut mismatches = Vec::new();
        match Client::connect(query).await {
            Ok(mut c) => {
                for &h in hours {
                    match get_hour(&mut c, h).await {
                        Ok(got) => {
                            if let Err(e) = check(h, got) {
                                mismatches.push(format!("hour {h}: {e}"));
                            }
                        }
                        Err(e) => mismatches.push(format!("hour {h}: {e}")),
                    }
                }
            }
            Err(e) => mismatches.push(format!("query service: {e}")),
        }
        if mismatches.is_empty() || Instant::now() > deadline {
            return mismatches;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
