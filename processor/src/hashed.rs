//! The users of an hour: 128-bit hashes of their ids, exact up to hash collisions (2^-128 per
//! pair), in a set that also remembers the order they were first seen in.
//!
//! [`UserSet`] keeps the hashes in that order in segments of [`SEGMENT`] (so a large set has
//! no more than one segment of slack, where a doubling `Vec` has up to as much again as it
//! holds), and an index of their positions (32-bit) in a hash table keyed by the hash's own
//! low 64 bits. So the users first seen since the last changelog delta are the tail of it
//! ([`UserSet::since`]) rather than a second list, and a user costs its 16 bytes plus about
//! 8 for its position: some 24 bytes, where a `HashSet<u128>` and a list of new users took
//! about 50 (`make bench` row 6, docs/benchmarks-notes.md).

use hashbrown::HashTable;

/// 128-bit hash of a user id.
pub fn user_hash(user: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(user.as_bytes())
}

/// The table's hash of a user hash: its low 64 bits (already uniform).
fn low(h: u128) -> u64 {
    h as u64
}

/// Hashes in one segment: 64 KB. The first segment grows like a `Vec` up to it, so a small
/// set stays small.
pub const SEGMENT: usize = 4096;

/// Distinct user hashes, in the order first seen.
#[derive(Default)]
pub struct UserSet {
    /// The hashes in order, [`SEGMENT`] a segment (the last one partly filled).
    segments: Vec<Vec<u128>>,
    len: usize,
    /// Positions of the hashes.
    index: HashTable<u32>,
}

impl std::fmt::Debug for UserSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserSet({} users)", self.len)
    }
}

/// The hash at `position`.
fn at(segments: &[Vec<u128>], position: u32) -> u128 {
    let p = position as usize;
    segments[p / SEGMENT][p % SEGMENT]
}

impl UserSet {
    /// Adds `h`; true when it was not there yet.
    pub fn insert(&mut self, h: u128) -> bool {
        let segments = &self.segments;
        match self
            .index
            .entry(low(h), |&i| at(segments, i) == h, |&i| low(at(segments, i)))
        {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(v) => {
                let position = u32::try_from(self.len)
                    .expect("fewer than 2^32 users in one hour of one partition");
                v.insert(position);
                match self.segments.last_mut() {
                    Some(last) if last.len() < SEGMENT => last.push(h),
                    _ => {
                        let mut segment =
                            Vec::with_capacity(if self.len == 0 { 4 } else { SEGMENT });
                        segment.push(h);
                        self.segments.push(segment);
                    }
                }
                self.len += 1;
                true
            }
        }
    }

    pub fn contains(&self, h: u128) -> bool {
        self.index
            .find(low(h), |&i| at(&self.segments, i) == h)
            .is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The users first seen after the first `seen` of them, in that order.
    pub fn since(&self, seen: usize) -> impl Iterator<Item = u128> + '_ {
        let seen = seen.min(self.len);
        self.segments
            .iter()
            .skip(seen / SEGMENT)
            .enumerate()
            .flat_map(move |(k, segment)| {
                let from = if k == 0 { seen % SEGMENT } else { 0 };
                segment[from..].iter().copied()
            })
    }

    /// Every user, in the order first seen.
    pub fn iter(&self) -> impl Iterator<Item = u128> + '_ {
        self.since(0)
    }

    /// Bytes allocated for the set (its segments and its index), for the measurements.
    pub fn allocated_bytes(&self) -> usize {
        let segments: usize = self.segments.iter().map(|s| s.capacity() * 16).sum();
        // hashbrown: a bucket of 4 bytes and a control byte per bucket.
        segments + self.index.capacity() * 8 / 7 * 5
    }
}

impl Extend<u128> for UserSet {
    fn extend<I: IntoIterator<Item = u128>>(&mut self, users: I) {
        let users = users.into_iter();
        let (more, _) = users.size_hint();
        let segments = &self.segments;
        self.index.reserve(more, |&i| low(at(segments, i)));
        for h in users {
            self.insert(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_distinct_users_in_the_order_first_seen() {
        let mut set = UserSet::default();
        for i in 0..10_000 {
            assert!(set.insert(user_hash(&i.to_string())));
            assert!(!set.insert(user_hash(&i.to_string())));
        }
        assert_eq!(set.len(), 10_000);
        assert!(set.contains(user_hash("9999")));
        assert!(!set.contains(user_hash("10000")));
        let tail: Vec<u128> = set.since(9_998).collect();
        assert_eq!(tail, [user_hash("9998"), user_hash("9999")]);
        assert_eq!(set.since(20_000).count(), 0);
        // Across segments, from anywhere.
        for seen in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT + 7] {
            let want: Vec<u128> = (seen..10_000).map(|i| user_hash(&i.to_string())).collect();
            assert_eq!(set.since(seen).collect::<Vec<_>>(), want, "since {seen}");
        }
        assert!(
            set.allocated_bytes() < 10_000 * 30,
            "{} bytes",
            set.allocated_bytes()
        );
        assert_ne!(user_hash("1"), user_hash("01"));
    }

    #[test]
    fn hashes_that_share_their_low_half_are_told_apart() {
        let mut set = UserSet::default();
        let (a, b) = (5u128, (7u128 << 64) | 5);
        assert!(set.insert(a));
        assert!(set.insert(b), "same table hash, another user");
        assert!(!set.insert(b));
        assert_eq!(set.iter().collect::<Vec<_>>(), [a, b]);
        let mut restored = UserSet::default();
        restored.extend([b, a, b]);
        assert_eq!(restored.len(), 2);
    }
}
