//! [`IdMap`]: a hash map keyed by connection ids, which this process assigns (peers do
//! not choose them) and which are mostly consecutive. Such maps are looked up several
//! times per packet, where SipHash's rounds cost more than the lookup itself.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes an integer id with one multiplication.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, id: u64) {
        // An odd multiplier spreads consecutive ids over the buckets (low bits) and gives
        // the table's tags (high bits) mixed bits.
        self.0 = (self.0.rotate_left(5) ^ id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by ids that this process assigns.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_spread_over_buckets_and_tags() {
        let hash = |id: u64| {
            let mut hasher = IdHasher::default();
            hasher.write_u64(id);
            hasher.finish()
        };
        // The low bits choose the bucket, the top 7 bits the tag: both must vary.
        let buckets: std::collections::HashSet<u64> = (1..=64).map(|id| hash(id) & 63).collect();
        let tags: std::collections::HashSet<u64> = (1..=64).map(|id| hash(id) >> 57).collect();
        assert!(buckets.len() > 32, "{} buckets of 64", buckets.len());
        assert!(tags.len() > 32, "{} tags of 64", tags.len());
        let mut map: IdMap<u64, u64> = IdMap::default();
        for id in 1..=1000 {
            map.insert(id, id * 2);
        }
        assert!((1..=1000).all(|id| map[&id] == id * 2));
    }
}
