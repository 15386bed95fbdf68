//! Reading the services' `/metrics` in tests, parsed with `prometheus-parse`.

use crate::http;
use crate::service::Service;
use anyhow::{ensure, Context, Result};
use prometheus_parse::{Scrape, Value};

/// Sum of the samples at `addr`'s `/metrics` that `selector` picks: `name` (every series of
/// that family) or `name{label="value",...}` (the series whose labels include those).
/// Counters, gauges and untyped samples only.
pub async fn metric(addr: &str, selector: &str) -> Result<f64> {
    let mut c = http::Client::connect(addr).await?;
    let r = c.request("GET", "/metrics", &[]).await?;
    ensure!(r.status == 200, "GET /metrics answered {}", r.status);
    let scrape =
        Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned()))).context("parsing /metrics")?;
    sum(&scrape, selector)
}

/// The cumulative buckets `(upper bound, count)` of the histogram at `addr` that `selector`
/// picks (`name{label="value"}` without the `_bucket` suffix), summed over its series; empty
/// when there is none.
pub async fn histogram(addr: &str, selector: &str) -> Result<Vec<(f64, f64)>> {
    let mut c = http::Client::connect(addr).await?;
    let r = c.request("GET", "/metrics", &[]).await?;
    ensure!(r.status == 200, "GET /metrics answered {}", r.status);
    let scrape =
        Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned()))).context("parsing /metrics")?;
    let (name, labels) = parse_selector(selector)?;
    let mut out: Vec<(f64, f64)> = Vec::new();
    for s in scrape.samples.iter().filter(|s| s.metric == name) {
        if !labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)) {
            continue;
        }
        if let Value::Histogram(buckets) = &s.value {
            for (i, b) in buckets.iter().enumerate() {
                match out.get_mut(i) {
                    Some(slot) => slot.1 += b.count,
                    None => out.push((b.less_than, b.count)),
                }
            }
        }
    }
    Ok(out)
}

fn sum(scrape: &Scrape, selector: &str) -> Result<f64> {
    let (name, labels) = parse_selector(selector)?;
    Ok(scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .filter_map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            Value::Histogram(_) | Value::Summary(_) => None,
        })
        .sum())
}

/// `name{a="x",b="y"}` as the name and its label pairs.
fn parse_selector(selector: &str) -> Result<(&str, Vec<(&str, &str)>)> {
    let Some((name, rest)) = selector.split_once('{') else {
        return Ok((selector, Vec::new()));
    };
    let inner = rest
        .strip_suffix('}')
        .with_context(|| format!("selector {selector:?} lacks its closing brace"))?;
    let labels = inner
        .split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("selector {selector:?}: {kv:?} is not label=\"value\""))?;
            Ok((k, v.trim_matches('"')))
        })
        .collect::<Result<_>>()?;
    Ok((name, labels))
}

/// Prints how often the gap guard of a processor and a materializer stepped back for a record
/// the broker skipped (`refetched`) or stepped over a real gap (`skipped`): how the broker
/// behaves, for the docs (docs/operations.md, "Local broker").
pub async fn report_gaps(processor: &Service, materializer: &Service) -> Result<()> {
    for (svc, name) in [(processor, "processor"), (materializer, "materializer")] {
        let mut counts = Vec::new();
        for outcome in ["refetched", "skipped"] {
            let selector = format!("analytics_{name}_offset_gaps_total{{outcome=\"{outcome}\"}}");
            counts.push(format!(
                "{outcome} {}",
                metric(&svc.addr(), &selector).await?
            ));
        }
        eprintln!("{name} offset gaps: {}", counts.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP analytics_requests_total Requests.
# TYPE analytics_requests_total counter
analytics_requests_total{route=\"/analytics\",method=\"GET\"} 3
analytics_requests_total{method=\"POST\",route=\"/analytics\"} 4
analytics_requests_total_other 100
# TYPE analytics_depth gauge
analytics_depth 7
";

    fn scrape() -> Scrape {
        Scrape::parse(TEXT.lines().map(|l| Ok(l.to_owned()))).unwrap()
    }

    #[test]
    fn a_name_sums_its_family_and_nothing_that_merely_starts_like_it() {
        assert_eq!(sum(&scrape(), "analytics_requests_total").unwrap(), 7.0);
        assert_eq!(sum(&scrape(), "analytics_depth").unwrap(), 7.0);
    }

    #[test]
    fn labels_match_in_any_order() {
        let s = scrape();
        assert_eq!(
            sum(&s, r#"analytics_requests_total{method="POST"}"#).unwrap(),
            4.0
        );
        let both = r#"analytics_requests_total{method="GET",route="/analytics"}"#;
        assert_eq!(sum(&s, both).unwrap(), 3.0);
        assert_eq!(
            sum(&s, r#"analytics_requests_total{method="PUT"}"#).unwrap(),
            0.0
        );
    }

    #[test]
    fn a_broken_selector_is_an_error() {
        assert!(sum(&scrape(), r#"analytics_requests_total{method="GET""#).is_err());
        assert!(sum(&scrape(), "analytics_requests_total{method}").is_err());
    }
}
