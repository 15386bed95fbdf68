//! Ground truth and traffic for end-to-end tests: deterministic events, posting with
//! acknowledgement tracking, and exact comparison of every hour.

use crate::http::Client;
use anyhow::{ensure, Result};
pub use loadgen::truth::{parse_body, percent_encode, Post, Rng, Truth, HOUR};
pub use loadgen::verify::get_hour;
use std::time::Duration;

pub const SPECIAL_USERS: &[&str] = &["007", "ü-ser ✓", "a b", "x+y&z=1", "UPPER", "upper", "🙂"];

/// One event for an hour `back` hours before the current one, never in the future.
pub fn event(rng: &mut Rng, back: i64, now: i64) -> Post {
    let h0 = now.div_euclid(HOUR) * HOUR;
    let start = h0 - back * HOUR;
    let span = if back == 0 { (now - h0).max(1) } else { HOUR };
    // The first and last millisecond of an hour are part of every data set.
    let ts = match rng.below(50) {
        0 => start,
        1 => start + span - 1,
        _ => start + rng.below(span as u64) as i64,
    };
    let user = if rng.below(40) == 0 {
        SPECIAL_USERS[rng.below(SPECIAL_USERS.len() as u64) as usize].to_owned()
    } else {
        format!("user-{}", rng.below(600))
    };
    Post {
        ts,
        user,
        click: rng.below(3) == 0,
        id: None,
    }
}

/// `n` events spread over the given hours (offsets from the current hour).
pub fn dataset(rng: &mut Rng, n: usize, hours_back: &[i64], now: i64) -> Vec<Post> {
    (0..n)
        .map(|_| {
            let back = hours_back[rng.below(hours_back.len() as u64) as usize];
            event(rng, back, now)
        })
        .collect()
}

/// Posts every event from `clients` concurrent connections; every one must get 204.
pub async fn post_all(addr: &str, posts: &[Post], clients: usize) -> Result<()> {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let chunk: Vec<Post> = posts.iter().skip(c).step_by(clients).cloned().collect();
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&addr).await?;
            for p in chunk {
                let r = client.request("POST", &p.target(), &[]).await?;
                ensure!(
                    r.status == 204,
                    "POST {} answered {} {}",
                    p.target(),
                    r.status,
                    r.body
                );
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// [`post_all`], then records every event (all answered 204) in `truth`.
pub async fn post_recorded(
    addr: &str,
    posts: &[Post],
    clients: usize,
    truth: &mut Truth,
) -> Result<()> {
    post_all(addr, posts, clients).await?;
    posts.iter().for_each(|p| truth.add(p));
    Ok(())
}

/// Polls every hour until each matches `check` or the deadline passes
/// ([`loadgen::verify::until`]).
pub async fn wait_until(
    query_addr: &str,
    hours: &[i64],
    within: Duration,
    what: &str,
    check: impl Fn(i64, [u64; 3]) -> Result<(), String>,
) -> Result<()> {
    let mismatches = loadgen::verify::until(query_addr, hours, within, check).await;
    if !mismatches.is_empty() {
        anyhow::bail!(
            "{what}: not as expected after {within:?}:\n{}",
            mismatches.join("\n")
        );
    }
    Ok(())
}

/// Polls every hour until all equal the truth exactly.
pub async fn wait_exact(
    query_addr: &str,
    truth: &Truth,
    hours: &[i64],
    within: Duration,
    what: &str,
) -> Result<()> {
    wait_until(query_addr, hours, within, what, |h, got| {
        let want = truth.totals(h);
        if got == want {
            Ok(())
        } else {
            Err(format!("got {got:?} want {want:?}"))
        }
    })
    .await
}

/// The spans a run's totals are checked over: the whole run (from its first hour to the end
/// of its last), each UTC day it touches, and every hour alone.
pub fn total_spans(hours: &[i64]) -> Vec<(i64, i64)> {
    const DAY: i64 = 24 * HOUR;
    let (Some(first), Some(last)) = (hours.iter().min(), hours.iter().max()) else {
        return Vec::new();
    };
    let mut spans = vec![(*first, last + HOUR)];
    let days: std::collections::BTreeSet<i64> =
        hours.iter().map(|h| h.div_euclid(DAY) * DAY).collect();
    spans.extend(days.into_iter().map(|d| (d, d + DAY)));
    spans.extend(hours.iter().map(|h| (*h, h + HOUR)));
    spans
}

/// Polls `GET /analytics/total` over each span until `check` accepts them all (exact unique
/// users over ranges, issue 26), or fails naming the spans that are not.
pub async fn wait_totals(
    query_addr: &str,
    spans: &[(i64, i64)],
    within: Duration,
    what: &str,
    check: impl Fn((i64, i64), [u64; 3]) -> Result<(), String>,
) -> Result<()> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let mut wrong = Vec::new();
        let mut client = Client::connect(query_addr).await?;
        for &(from, to) in spans {
            let r = client
                .request("GET", &format!("/analytics/total?from={from}&to={to}"), &[])
                .await?;
            if r.status != 200 {
                wrong.push(format!("[{from}, {to}): {} {}", r.status, r.body.trim()));
            } else if let Err(e) = check((from, to), parse_body(&r.body)) {
                wrong.push(format!("[{from}, {to}): {e}"));
            }
        }
        if wrong.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "{what}: totals not as expected after {within:?}:\n{}",
                wrong.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
