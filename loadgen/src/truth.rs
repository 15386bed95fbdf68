//! Ground truth of acknowledged writes, and the deterministic random numbers and request
//! targets that produce them. Shared with the end-to-end tests.

use std::collections::{BTreeMap, HashSet};

pub const HOUR: i64 = 3_600_000;

/// One analytics write.
#[derive(Debug, Clone)]
pub struct Post {
    pub ts: i64,
    pub user: String,
    pub click: bool,
    /// The event id: a retry of the post counts once.
    pub id: Option<String>,
}

impl Post {
    pub fn target(&self) -> String {
        let kind = if self.click { "click" } else { "impression" };
        let id = self
            .id
            .as_deref()
            .map(|id| format!("&id={}", percent_encode(id)))
            .unwrap_or_default();
        format!(
            "/analytics?timestamp={}&user={}&{kind}{id}",
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

    /// Over the hours `[from, to)` (hour starts): distinct users (not a sum over hours),
    /// clicks, impressions.
    pub fn span(&self, from: i64, to: i64) -> [u64; 3] {
        let mut users: HashSet<&str> = HashSet::new();
        let (mut clicks, mut impressions) = (0, 0);
        for (u, c, i) in self.hours.range(from..to).map(|(_, h)| h) {
            users.extend(u.iter().map(String::as_str));
            clicks += c;
            impressions += i;
        }
        [users.len() as u64, clicks, impressions]
    }

    pub fn body(&self, hour: i64) -> String {
        let [u, c, i] = self.totals(hour);
        format!("unique_users,{u}\nclicks,{c}\nimpressions,{i}\n")
    }
}

/// Deterministic pseudo-random numbers, seeded for replay: a PCG generator
/// (`rand_pcg::Pcg64Mcg`), so that a seed printed by a test or a chaos run replays the same
/// events and faults.
#[derive(Clone)]
pub struct Rng(rand_pcg::Pcg64Mcg);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Self(rand::SeedableRng::seed_from_u64(seed))
    }

    /// Uniform in `0..n` (`0` when `n` is 0 or 1).
    pub fn below(&mut self, n: u64) -> u64 {
        rand::RngExt::random_range(&mut self.0, 0..n.max(1))
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        rand::RngExt::random(&mut self.0)
    }

    /// A uniformly random 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        rand::Rng::next_u64(&mut self.0)
    }

    /// A sample of `dist`.
    pub fn sample<T, D: rand_distr::Distribution<T>>(&mut self, dist: &D) -> T {
        dist.sample(&mut self.0)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
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

/// The three numbers of a `GET /analytics` body.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truth_counts_users_once_per_hour() {
        let mut t = Truth::default();
        for (ts, user, click) in [(10, "a", true), (20, "a", false), (HOUR, "a", true)] {
            t.add(&Post {
                ts,
                user: user.into(),
                click,
                id: None,
            });
        }
        assert_eq!(t.totals(0), [1, 1, 1]);
        assert_eq!(t.totals(HOUR), [1, 1, 0]);
        assert_eq!(parse_body(&t.body(0)), [1, 1, 1]);
    }

    #[test]
    fn targets_are_percent_encoded() {
        let p = Post {
            ts: 5,
            user: "a b&c".into(),
            click: false,
            id: None,
        };
        assert_eq!(
            p.target(),
            "/analytics?timestamp=5&user=a%20b%26c&impression"
        );
    }
}
