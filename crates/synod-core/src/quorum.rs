//! Quorum arithmetic shared by the engines.

use crate::ids::LogIndex;

/// The smallest number of votes that is a majority of `voters`.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The highest index held by a majority, given each voter's highest matching index.
///
/// This is the largest N such that at least a majority of the values are >= N: sort the
/// values descending and take the one at position `majority - 1`.
pub fn majority_index(matched: &mut [LogIndex]) -> LogIndex {
    assert!(!matched.is_empty(), "a cluster has at least one voter");
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched[majority(matched.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_small_clusters() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
        assert_eq!(majority(7), 4);
    }

    #[test]
    fn majority_index_is_what_a_majority_holds() {
        assert_eq!(majority_index(&mut [5]), 5);
        assert_eq!(majority_index(&mut [1, 9, 4]), 4);
        assert_eq!(majority_index(&mut [7, 7, 0, 0, 3]), 3);
        assert_eq!(majority_index(&mut [10, 2, 2, 2, 9, 9, 9]), 9);
        assert_eq!(majority_index(&mut [4, 8]), 4);
    }
}
