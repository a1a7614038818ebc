//! Quorum arithmetic and the membership checks shared by the engines.

use thiserror::Error;

use crate::ids::{LogIndex, NodeId};

/// A member list no engine can run with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MembersError {
    /// A member is listed twice.
    #[error("member {0} is listed twice")]
    Duplicate(NodeId),
    /// This node is not in its own member list.
    #[error("node {0} is not one of the members")]
    NotAMember(NodeId),
    /// Ids start at 1, and some engines pack them into fewer bits.
    #[error("node id {0} is outside 1..={1}")]
    IdOutOfRange(NodeId, u64),
}

/// Checks that `voters` are distinct ids in `1..=id_max` and include `id`.
pub fn check_members(id: NodeId, voters: &[NodeId], id_max: u64) -> Result<(), MembersError> {
    let mut sorted = voters.to_vec();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(MembersError::Duplicate(pair[0]));
    }
    if let Some(&bad) = voters.iter().find(|n| n.0 == 0 || n.0 > id_max) {
        return Err(MembersError::IdOutOfRange(bad, id_max));
    }
    if !voters.contains(&id) {
        return Err(MembersError::NotAMember(id));
    }
    Ok(())
}

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
    fn members_are_distinct_ids_in_range_including_this_node() {
        let ids = |v: &[u64]| v.iter().copied().map(NodeId).collect::<Vec<_>>();
        assert_eq!(check_members(NodeId(2), &ids(&[1, 2, 3]), 9), Ok(()));
        assert_eq!(
            check_members(NodeId(2), &ids(&[1, 2, 1]), 9),
            Err(MembersError::Duplicate(NodeId(1)))
        );
        assert_eq!(
            check_members(NodeId(4), &ids(&[1, 2, 3]), 9),
            Err(MembersError::NotAMember(NodeId(4)))
        );
        assert_eq!(
            check_members(NodeId(1), &ids(&[1, 0]), 9),
            Err(MembersError::IdOutOfRange(NodeId(0), 9))
        );
        assert_eq!(
            check_members(NodeId(1), &ids(&[1, 10]), 9),
            Err(MembersError::IdOutOfRange(NodeId(10), 9))
        );
    }

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
