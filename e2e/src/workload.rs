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
