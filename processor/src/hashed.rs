//! Sets of 128-bit hashes (user ids, event-id pairs), keyed by their own low 64 bits.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// The user ids are already hashed with xxh3-128: use the low 64 bits as the table hash.
#[derive(Default)]
pub struct PrehashedU128(u64);

impl Hasher for PrehashedU128 {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

pub type UserSet = HashSet<u128, BuildHasherDefault<PrehashedU128>>;

/// 128-bit hash of a user id.
pub fn user_hash(user: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(user.as_bytes())
}
