//! Realistic traffic: Zipf-distributed users, a share of requests for the current hour and
//! the rest for earlier hours, a click/impression mix; deterministic for a seed.

use crate::truth::{Post, Rng, HOUR};
use rand_distr::Zipf;

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

pub struct Traffic {
    shape: Shape,
    /// User ranks, `1..=users` (rank 1 the most popular).
    zipf: Zipf<f64>,
    rng: Rng,
}

impl Traffic {
    pub fn new(shape: Shape, seed: u64) -> Self {
        let zipf = Zipf::new(shape.users.max(1) as f64, shape.zipf.max(0.0))
            .expect("at least one user and a non-negative exponent");
        Self {
            shape,
            zipf,
            rng: Rng::seeded(seed),
        }
    }

    /// How many hours before the current one the next request is for.
    fn hours_back(&mut self) -> i64 {
        if self.shape.hours_back == 0 || self.rng.unit() < self.shape.current_hour_share {
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
        start + self.rng.below(span as u64) as i64
    }

    pub fn post(&mut self, now_ms: i64) -> Post {
        let ts = self.timestamp(now_ms);
        // Ranks from 1 in the distribution, from 0 in user names.
        let rank = self.rng.sample(&self.zipf) as u64 - 1;
        Post {
            ts,
            user: format!("{}{rank}", self.shape.user_prefix),
            click: self.rng.unit() < self.shape.click_share,
            id: None,
        }
    }

    /// Target of a `GET /analytics` for an hour chosen like the writes'.
    pub fn get_target(&mut self, now_ms: i64) -> String {
        format!("/analytics?timestamp={}", self.timestamp(now_ms))
    }

    pub fn unit(&mut self) -> f64 {
        self.rng.unit()
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
    fn users_are_zipf_distributed_over_the_shape_s_users() {
        let now = 1_700_000_000_000;
        let mut t = Traffic::new(shape(), 1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            let p = t.post(now);
            counts[p.user[1..].parse::<usize>().unwrap()] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
        let uniform = Shape {
            users: 4,
            zipf: 0.0,
            ..shape()
        };
        let mut t = Traffic::new(uniform, 1);
        let mut counts = [0u32; 4];
        for _ in 0..4_000 {
            counts[t.post(now).user[1..].parse::<usize>().unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
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
