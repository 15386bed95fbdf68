//! Ground truth and traffic for end-to-end tests: deterministic events, posting with
//! acknowledgement tracking, and exact comparison of every hour.

use crate::http::Client;
use anyhow::{ensure, Result};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

pub const HOUR: i64 = 3_600_000;

#[derive(Debug, Clone)]
pub struct Post {
    pub ts: i64,
    pub user: String,
    pub click: bool,
}

impl Post {
    pub fn target(&self) -> String {
        let kind = if self.click { "click" } else { "impression" };
        format!(
            "/analytics?timestamp={}&user={}&{kind}",
            self.ts,
            percent_encode(&self.user)
        )
    }
}

/// Expected totals per hour, computed independently of the services.
#[derive(Default, Clone, Debug)]
pub struct Truth {
    pub hours: BTreeMap<i64, (HashSet<String>, u64, u64)>,
}

impl Truth {
    pub fn add(&mut self, p: &Post) {
        let h = self.hours.entry(p.ts.div_euclid(HOUR) * HOUR).or_default();
        h.0.insert(p.user.clone());
        if p.click {
            h.1 += 1;
        } else {
            h.2 += 1;
        }
    }

    pub fn merge(&mut self, other: &Truth) {
        for (hour, (users, c, i)) in &other.hours {
            let h = self.hours.entry(*hour).or_default();
            h.0.extend(users.iter().cloned());
            h.1 += c;
            h.2 += i;
        }
    }

    pub fn totals(&self, hour: i64) -> [u64; 3] {
        self.hours
            .get(&hour)
            .map(|(u, c, i)| [u.len() as u64, *c, *i])
            .unwrap_or([0; 3])
    }

    pub fn body(&self, hour: i64) -> String {
        let [u, c, i] = self.totals(hour);
        format!("unique_users,{u}\nclicks,{c}\nimpressions,{i}\n")
    }
}

/// Deterministic pseudo-random numbers (64-bit LCG), seeded for replay.
#[derive(Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

pub const SPECIAL_USERS: &[&str] = &["007", "ü-ser ✓", "a b", "x+y&z=1", "UPPER", "upper", "🙂"];

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One event for an hour `back` hours before the current one, never in the future.
pub fn event(rng: &mut Lcg, back: i64, now: i64) -> Post {
    let h0 = now.div_euclid(HOUR) * HOUR;
    let start = h0 - back * HOUR;
    let span = if back == 0 { (now - h0).max(1) } else { HOUR };
    // The first and last millisecond of an hour are part of every data set.
    let ts = match rng.below(50) {
        0 => start,
        1 => start + span - 1,
        _ => start + (rng.next_u64() as i64 % span),
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
    }
}

/// `n` events spread over the given hours (offsets from the current hour).
pub fn dataset(rng: &mut Lcg, n: usize, hours_back: &[i64], now: i64) -> Vec<Post> {
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

pub async fn get_hour(client: &mut Client, hour: i64) -> Result<String> {
    let r = client
        .request("GET", &format!("/analytics?timestamp={}", hour + 1234), &[])
        .await?;
    ensure!(r.status == 200, "GET answered {} {}", r.status, r.body);
    ensure!(r.header("content-type") == Some("text/plain; charset=utf-8"));
    Ok(r.body)
}

pub fn parse_body(b: &str) -> [u64; 3] {
    let mut out = [0; 3];
    for (i, line) in b.lines().enumerate().take(3) {
        out[i] = line
            .rsplit(',')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    out
}

/// Polls every hour until each matches `check` or the deadline passes.
pub async fn wait_until(
    query_addr: &str,
    hours: &[i64],
    within: Duration,
    what: &str,
    check: impl Fn(i64, [u64; 3]) -> Result<(), String>,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut mismatches = Vec::new();
        match Client::connect(query_addr).await {
            Ok(mut client) => {
                for &h in hours {
                    match get_hour(&mut client, h).await {
                        Ok(body) => {
                            if let Err(e) = check(h, parse_body(&body)) {
                                mismatches.push(format!("hour {h}: {e}"));
                            }
                        }
                        Err(e) => mismatches.push(format!("hour {h}: {e}")),
                    }
                }
            }
            Err(e) => mismatches.push(e.to_string()),
        }
        if mismatches.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{what}: not as expected after {within:?}:\n{}",
                mismatches.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
