//! Realistic traffic: Zipf-distributed users, a share of requests for the current hour and
//! the rest for earlier hours, a click/impression mix; deterministic for a seed.

use crate::truth::{Lcg, Post, HOUR};

/// Shape of the generated traffic.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Distinct users.
    pub users: usize,
    /// Zipf exponent of user popularity (0: uniform).
    pub zipf: f64,
    /// Share of events that are clicks (the rest are impressions).
    pub click_share: f64,
    /// Share of requests for the current hour; the rest go to 1..=`hours_back` hours back.
    pub current_hour_share: f64,
    pub hours_back: i64,
    /// Prefix of user ids, so that runs do not share users.
    pub user_prefix: String,
}

/// Zipf sampler over `1..=n` by inversion of the cumulative distribution.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n.max(1));
        let mut sum = 0.0;
        for k in 1..=n.max(1) {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    /// A rank in `0..n` (0 is the most popular).
    pub fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Uniform float in `[0, 1)` from the LCG's 31-bit output.
pub fn unit(rng: &mut Lcg) -> f64 {
    rng.next_u64() as f64 / (1u64 << 31) as f64
}

pub struct Traffic {
    shape: Shape,
    zipf: Zipf,
    rng: Lcg,
}

impl Traffic {
    pub fn new(shape: Shape, seed: u64) -> Self {
        let zipf = Zipf::new(shape.users, shape.zipf);
        Self {
            shape,
            zipf,
            rng: Lcg(seed),
        }
    }

    /// How many hours before the current one the next request is for.
    fn hours_back(&mut self) -> i64 {
        if self.shape.hours_back == 0 || unit(&mut self.rng) < self.shape.current_hour_share {
            0
        } else {
            1 + self.rng.below(self.shape.hours_back as u64) as i64
        }
    }

    /// A timestamp in the chosen hour, never in the future.
    fn timestamp(&mut self, now_ms: i64) -> i64 {
        let back = self.hours_back();
        let h0 = now_ms.div_euclid(HOUR) * HOUR;
        let start = h0 - back * HOUR;
        let span = if back == 0 {
            (now_ms - h0).max(1)
        } else {
            HOUR
        };
        start + (self.rng.next_u64() as i64 % span)
    }

    pub fn post(&mut self, now_ms: i64) -> Post {
        let ts = self.timestamp(now_ms);
        let rank = self.zipf.sample(unit(&mut self.rng));
        Post {
            ts,
            user: format!("{}{rank}", self.shape.user_prefix),
            click: unit(&mut self.rng) < self.shape.click_share,
            id: None,
        }
    }

    /// Target of a `GET /analytics` for an hour chosen like the writes'.
    pub fn get_target(&mut self, now_ms: i64) -> String {
        format!("/analytics?timestamp={}", self.timestamp(now_ms))
    }

    pub fn unit(&mut self) -> f64 {
        unit(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            users: 1000,
            zipf: 1.1,
            click_share: 0.25,
            current_hour_share: 0.95,
            hours_back: 5,
            user_prefix: "u".into(),
        }
    }

    #[test]
    fn zipf_favours_low_ranks_and_stays_in_range() {
        let z = Zipf::new(1000, 1.1);
        let mut rng = Lcg(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.sample(unit(&mut rng))] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
        assert_eq!(z.sample(0.0), 0);
        assert_eq!(z.sample(0.999_999_999), 999);
        let uniform = Zipf::new(4, 0.0);
        assert_eq!(uniform.sample(0.3), 1);
    }

    #[test]
    fn mix_follows_the_shape_and_is_deterministic() {
        let now = 1_700_000_000_000;
        let h0 = now / HOUR * HOUR;
        let mut t = Traffic::new(shape(), 42);
        let posts: Vec<Post> = (0..20_000).map(|_| t.post(now)).collect();
        let current = posts.iter().filter(|p| p.ts >= h0).count() as f64 / 20_000.0;
        let clicks = posts.iter().filter(|p| p.click).count() as f64 / 20_000.0;
        assert!((0.93..0.97).contains(&current), "{current}");
        assert!((0.23..0.27).contains(&clicks), "{clicks}");
        assert!(posts.iter().all(|p| p.ts <= now && p.ts >= h0 - 5 * HOUR));
        let mut again = Traffic::new(shape(), 42);
        assert_eq!(again.post(now).target(), posts[0].target());
    }
}
