//! A dense set of 128-bit hashes, for the remembered (user, id) pairs of [`crate::seen`].
//!
//! A hash table of `u128`s is 17 bytes per slot (the hash and a control byte) and between
//! 44% and 87% full, since it doubles when it fills: 19 to 39 bytes per remembered pair
//! (35.7 in `make bench`). The pairs are uniform hashes, so their top bits split them evenly:
//! this set is a directory of `2^bits` **leaves**, leaf `i` holding, sorted, the hashes whose
//! top `bits` bits are `i`. A leaf grows by an eighth of its length when full, so it is at
//! least 8/9 full; when the leaves average [`SPLIT_AT`] hashes, every leaf is split in two
//! by the next bit (the directory doubles), which halves them again. So a pair costs 16 to
//! 18 bytes, plus a leaf header (24 bytes) per 64 to 128 pairs.
//!
//! A lookup is a shift to the leaf and a search of its hundred or so sorted hashes that starts
//! where the hash would be if they were evenly spaced (they are uniform), so it usually reads
//! one or two cache lines; an insert also moves the larger hashes of that leaf up by one.
//! Splitting all leaves is linear in the set's size and happens once per doubling, so an
//! insert costs amortised constant time; at no moment is more than one leaf copied twice.

/// Average hashes per leaf at which every leaf is split in two.
const SPLIT_AT: usize = 128;

/// Sorted leaves under a radix directory (see the module doc).
#[derive(Debug, Clone)]
pub struct PairSet {
    /// Top bits of a hash that pick its leaf (0: a single leaf).
    bits: u32,
    leaves: Vec<Vec<u128>>,
    len: usize,
}

impl Default for PairSet {
    fn default() -> Self {
        Self {
            bits: 0,
            leaves: vec![Vec::new()],
            len: 0,
        }
    }
}

impl PairSet {
    fn leaf_of(&self, h: u128) -> usize {
        if self.bits == 0 {
            0
        } else {
            (h >> (128 - self.bits)) as usize
        }
    }

    pub fn contains(&self, h: &u128) -> bool {
        search(&self.leaves[self.leaf_of(*h)], *h, self.bits).is_ok()
    }

    /// Adds `h`; false if it was already there.
    pub fn insert(&mut self, h: u128) -> bool {
        let i = self.leaf_of(h);
        let leaf = &mut self.leaves[i];
        let Err(at) = search(leaf, h, self.bits) else {
            return false;
        };
        if leaf.len() == leaf.capacity() {
            // Grow by an eighth (at least 4), not by doubling: the leaf stays nearly full.
            leaf.reserve_exact((leaf.len() / 8).max(4));
        }
        leaf.insert(at, h);
        self.len += 1;
        if self.len > SPLIT_AT << self.bits {
            self.split();
        }
        true
    }

    /// Splits every leaf in two by the bit below the directory's.
    fn split(&mut self) {
        let bit = 127 - self.bits;
        let mut leaves = Vec::with_capacity(self.leaves.len() * 2);
        for leaf in std::mem::take(&mut self.leaves) {
            let k = leaf.partition_point(|&h| (h >> bit) & 1 == 0);
            leaves.push(leaf[..k].to_vec());
            leaves.push(leaf[k..].to_vec());
        }
        self.leaves = leaves;
        self.bits += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every hash, in ascending order (for the tests).
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = u128> + '_ {
        self.leaves.iter().flatten().copied()
    }

    /// Bytes allocated: every leaf's capacity and the directory.
    pub fn allocated_bytes(&self) -> usize {
        self.leaves.capacity() * std::mem::size_of::<Vec<u128>>()
            + self
                .leaves
                .iter()
                .map(|l| l.capacity() * std::mem::size_of::<u128>())
                .sum::<usize>()
    }
}

/// `binary_search` of `h` in `leaf`, starting where `h` would be if the leaf's hashes were
/// evenly spaced (they are uniform over the leaf's range, the values whose top `bits` bits are
/// the leaf's): the guess is typically within a few places, so a search reads one or two
/// cache lines instead of the seven a bisection of a hundred hashes would.
fn search(leaf: &[u128], h: u128, bits: u32) -> Result<usize, usize> {
    let n = leaf.len();
    if n == 0 {
        return Err(0);
    }
    // The 64 bits below the directory's, as a fraction of the leaf's range, times its length.
    let guess = ((((h << bits) >> 64) * n as u128) >> 64) as usize;
    // Gallop from the guess to a range [lo, hi) that holds the first hash >= h, if any.
    let (lo, hi) = if leaf[guess] < h {
        let (mut lo, mut step) = (guess + 1, 4);
        loop {
            let probe = lo + step;
            if probe >= n {
                break (lo, n);
            }
            if leaf[probe] < h {
                lo = probe + 1;
                step *= 2;
            } else {
                break (lo, probe + 1);
            }
        }
    } else {
        let (mut hi, mut step) = (guess + 1, 4);
        loop {
            if step >= hi {
                break (0, hi);
            }
            let probe = hi - step;
            if leaf[probe] >= h {
                hi = probe + 1;
                step *= 2;
            } else {
                break (probe + 1, hi);
            }
        }
    };
    match leaf[lo..hi].binary_search(&h) {
        Ok(i) => Ok(lo + i),
        Err(i) => Err(lo + i),
    }
}

impl Extend<u128> for PairSet {
    fn extend<I: IntoIterator<Item = u128>>(&mut self, hashes: I) {
        for h in hashes {
            self.insert(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Uniform 128-bit values (a splitmix-style mixer over a counter).
    fn hashes(n: u64, salt: u64) -> Vec<u128> {
        (0..n)
            .map(|i| {
                let mix = |mut z: u64| {
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    z ^ (z >> 31)
                };
                let a = mix(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt);
                let b = mix(a ^ 0x5851_f42d_4c95_7f2d);
                (u128::from(a) << 64) | u128::from(b)
            })
            .collect()
    }

    #[test]
    fn agrees_with_a_hash_set_through_many_splits() {
        let mut set = PairSet::default();
        let mut model = HashSet::new();
        let all = hashes(50_000, 1);
        // Each value twice (the second insert is a repeat), and extremes.
        for &h in all.iter().chain(&all[..10_000]).chain(&[0, u128::MAX, 0]) {
            assert_eq!(set.insert(h), model.insert(h), "insert {h:x}");
        }
        assert_eq!(set.len(), model.len());
        assert!(set.bits >= 7, "split {} times", set.bits);
        for &h in &all {
            assert!(set.contains(&h));
        }
        for h in hashes(10_000, 2) {
            assert_eq!(set.contains(&h), model.contains(&h));
        }
        let mut sorted: Vec<u128> = model.into_iter().collect();
        sorted.sort_unstable();
        assert!(set.iter().eq(sorted.iter().copied()), "iterates in order");
    }

    #[test]
    fn the_guided_search_agrees_with_bisection() {
        // Skewed leaves too (all values low, all high, clustered), where the guess is poor.
        let uniform = {
            let mut v = hashes(1_000, 4);
            v.sort_unstable();
            v
        };
        let low: Vec<u128> = (0..300).map(|i| i * 7).collect();
        let high: Vec<u128> = (0..300).map(|i| u128::MAX - 3000 + i * 7).collect();
        for leaf in [
            &uniform[..],
            &low[..],
            &high[..],
            &uniform[..1],
            &uniform[..2],
        ] {
            let probes = leaf
                .iter()
                .flat_map(|&h| [h, h.wrapping_add(1), h.wrapping_sub(1)])
                .chain([0, 1, u128::MAX, u128::MAX / 2])
                .chain(hashes(200, 5));
            for h in probes {
                assert_eq!(search(leaf, h, 0), leaf.binary_search(&h), "{h:x}");
            }
        }
        assert_eq!(search(&[], 5, 0), Err(0));
    }

    #[test]
    fn stays_dense() {
        let mut set = PairSet::default();
        for (n, h) in hashes(300_000, 3).into_iter().enumerate() {
            set.insert(h);
            let n = n + 1;
            if n >= 10_000 && n % 7_919 == 0 {
                let per = set.allocated_bytes() as f64 / n as f64;
                assert!(per <= 18.5, "{per:.1} bytes per hash at {n}");
            }
        }
    }

    #[test]
    fn an_empty_set_holds_nothing() {
        let set = PairSet::default();
        assert!(set.is_empty() && !set.contains(&0) && set.iter().next().is_none());
    }
}
