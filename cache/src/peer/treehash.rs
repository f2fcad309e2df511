//! The BLAKE3 hash of a record assembled from the hashes of its byte ranges.
//!
//! What: a fetched record arrives as aligned ranges on several streams. Each range is hashed
//! as its own BLAKE3 subtree (its "chaining value") by the task that received it, while the
//! other ranges are still in flight; once all have arrived, [`root`] merges the chaining values
//! up the tree into the record's ordinary BLAKE3 hash, the one its meta carries.
//!
//! Why: hashing 256 MiB after the last byte arrived took about a tenth of a remote get, with
//! nothing else to do meanwhile. Hashing each range as it lands overlaps that work with the
//! transfer, and the final merge costs one compression per range.
//!
//! Caveat: this is only correct for the tree shape BLAKE3 itself builds, so ranges must start at
//! multiples of a leaf size that is a power of two and at least [`blake3::CHUNK_LEN`];
//! [`leaf_len`] rounds a wanted size to one. The tests compare against `blake3::hash`.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// The leaf size to use for about `wanted` bytes per range: a power of two, at least one
/// BLAKE3 chunk.
pub fn leaf_len(wanted: u64) -> u64 {
    wanted
        .max(blake3::CHUNK_LEN as u64)
        .checked_next_power_of_two()
        .unwrap_or(1 << 63)
}

/// The chaining value of the range of `bytes` starting at `offset` (a multiple of the leaf
/// size); `bytes` is at most one leaf long. Only meaningful for records longer than one leaf.
pub fn range_value(offset: u64, bytes: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(offset)
        .update(bytes)
        .finalize_non_root()
}

/// The BLAKE3 hash of a record of `len` bytes, longer than `leaf`, from the chaining values of
/// its leaves in order (`values[i]` covers bytes `i * leaf ..`).
///
/// Returns `None` when the count of values does not match `len` and `leaf`.
pub fn root(len: u64, leaf: u64, values: &[ChainingValue]) -> Option<[u8; 32]> {
    if len <= leaf || values.len() as u64 != len.div_ceil(leaf) {
        return None;
    }
    let left = left_subtree_len(len);
    let hash = merge_subtrees_root(
        &subtree(values, leaf, 0, left),
        &subtree(values, leaf, left, len - left),
        Mode::Hash,
    );
    Some(*hash.as_bytes())
}

/// The chaining value of the subtree of `len` bytes starting at `start`; both are multiples of
/// `leaf` except that `len` may end with a short last leaf.
fn subtree(values: &[ChainingValue], leaf: u64, start: u64, len: u64) -> ChainingValue {
    if len <= leaf {
        return values[(start / leaf) as usize];
    }
    let left = left_subtree_len(len);
    merge_subtrees_non_root(
        &subtree(values, leaf, start, left),
        &subtree(values, leaf, start + left, len - left),
        Mode::Hash,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_ranges(bytes: &[u8], leaf: u64) -> Option<[u8; 32]> {
        let values: Vec<_> = bytes
            .chunks(leaf as usize)
            .enumerate()
            .map(|(i, range)| range_value(i as u64 * leaf, range))
            .collect();
        root(bytes.len() as u64, leaf, &values)
    }

    #[test]
    fn leaves_are_powers_of_two_of_at_least_one_chunk() {
        assert_eq!(leaf_len(0), 1024);
        assert_eq!(leaf_len(1000), 1024);
        assert_eq!(leaf_len(8 << 20), 8 << 20);
        assert_eq!(leaf_len((8 << 20) + 1), 16 << 20);
    }

    #[test]
    fn a_record_of_one_leaf_or_a_wrong_count_has_no_merged_root() {
        assert_eq!(root(1024, 1024, &[[0; 32]]), None);
        assert_eq!(root(4096, 1024, &[[0; 32]; 3]), None);
    }

    proptest! {
        #[test]
        fn merged_range_hashes_equal_the_plain_hash(
            len in 1025_usize..40_000,
            leaf_shift in 0_u32..4,
            seed in any::<u8>(),
        ) {
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let leaf = 1024_u64 << leaf_shift;
            let expected = *blake3::hash(&bytes).as_bytes();
            match by_ranges(&bytes, leaf) {
                Some(hash) => prop_assert_eq!(hash, expected),
                None => prop_assert!(len as u64 <= leaf),
            }
        }
    }
}
