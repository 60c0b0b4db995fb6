//! Binary Merkle trees over [`Digest`] leaves, with audit paths.
//!
//! Leaves and inner nodes are hashed under different one-byte prefixes (0x00 and 0x01,
//! as in RFC 6962) so that a node can never pass for a leaf. A level of odd width
//! promotes its last node unchanged to the next level. The empty list has a fixed root
//! of its own.
//!
//! Used for the receipts root of a block and for signing the replies of a whole batch
//! with one signature: each reply carries its [`path`] to the signed root.

use crate::Digest;

/// Longest audit path accepted by [`root_from_path`]: enough for 2^32 leaves.
pub const MAX_PATH: usize = 32;

fn leaf_hash(leaf: &Digest) -> Digest {
    Digest::of_parts(&[&[0u8], leaf.as_bytes()])
}

fn node_hash(left: &Digest, right: &Digest) -> Digest {
    Digest::of_parts(&[&[1u8], left.as_bytes(), right.as_bytes()])
}

fn next_level(level: &[Digest]) -> Vec<Digest> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [a, b] => node_hash(a, b),
            [a] => *a,
            _ => Digest::ZERO, // chunks(2) yields one or two items
        })
        .collect()
}

/// The root of `leaves`.
pub fn root(leaves: &[Digest]) -> Digest {
    if leaves.is_empty() {
        return Digest::of(b"pbft/merkle/empty");
    }
    let mut level: Vec<Digest> = leaves.iter().map(leaf_hash).collect();
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

/// The root of `leaves` and, for each leaf in order, its audit path: the sibling of
/// every node from the leaf up, skipping levels where the node is promoted. Costs one
/// pass over the tree (about 2 hashes per leaf), not one per path.
pub fn root_and_paths(leaves: &[Digest]) -> (Digest, Vec<Vec<Digest>>) {
    if leaves.is_empty() {
        return (root(leaves), Vec::new());
    }
    let mut paths = vec![Vec::new(); leaves.len()];
    // position of each leaf's ancestor in the current level
    let mut pos: Vec<usize> = (0..leaves.len()).collect();
    let mut level: Vec<Digest> = leaves.iter().map(leaf_hash).collect();
    while level.len() > 1 {
        for (path, p) in paths.iter_mut().zip(pos.iter_mut()) {
            let sibling = *p ^ 1;
            if let Some(s) = level.get(sibling) {
                path.push(*s);
            }
            *p /= 2;
        }
        level = next_level(&level);
    }
    (level[0], paths)
}

/// Recomputes the root from one leaf, its index among `count` leaves and its audit
/// path. `None` if the index or the path length does not fit the tree shape; the
/// caller compares the result with the root it trusts. Counts whose trees have the same
/// shape on the leaf's way up give the same root: a signer that means a given count must
/// sign it along with the root.
pub fn root_from_path(leaf: &Digest, index: u64, count: u64, path: &[Digest]) -> Option<Digest> {
    if index >= count || path.len() > MAX_PATH {
        return None;
    }
    let mut node = leaf_hash(leaf);
    let (mut i, mut width) = (index, count);
    let mut siblings = path.iter();
    while width > 1 {
        if i % 2 == 1 {
            node = node_hash(siblings.next()?, &node);
        } else if i + 1 < width {
            node = node_hash(&node, siblings.next()?);
        } // else: the last node of an odd level is promoted as is
        i /= 2;
        width = width.div_ceil(2);
    }
    if siblings.next().is_some() {
        return None; // a longer path than the shape needs
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| Digest::of(&(i as u64).to_le_bytes()))
            .collect()
    }

    #[test]
    fn every_path_leads_to_the_root_for_every_width() {
        for n in 1..=70 {
            let ls = leaves(n);
            let (r, paths) = root_and_paths(&ls);
            assert_eq!(r, root(&ls), "n={n}");
            assert_eq!(paths.len(), n);
            for (i, (l, p)) in ls.iter().zip(&paths).enumerate() {
                assert_eq!(
                    root_from_path(l, i as u64, n as u64, p),
                    Some(r),
                    "n={n} i={i}"
                );
            }
        }
    }

    #[test]
    fn a_wrong_leaf_index_count_or_path_gives_another_root_or_none() {
        let ls = leaves(13);
        let (r, paths) = root_and_paths(&ls);
        // another leaf at the same place
        assert_ne!(root_from_path(&ls[4], 3, 13, &paths[3]), Some(r));
        // another index
        assert_ne!(root_from_path(&ls[3], 2, 13, &paths[3]), Some(r));
        // another count of another shape; a count of the same shape (12 here) gives the
        // same root, which is why signers sign the count along with the root
        assert_eq!(root_from_path(&ls[3], 3, 4, &paths[3]), None);
        assert_eq!(root_from_path(&ls[3], 3, 12, &paths[3]), Some(r));
        // out of range index
        assert_eq!(root_from_path(&ls[3], 13, 13, &paths[3]), None);
        // a tampered sibling
        let mut p = paths[3].clone();
        p[1] = Digest::ZERO;
        assert_ne!(root_from_path(&ls[3], 3, 13, &p), Some(r));
        // too short and too long
        assert_eq!(
            root_from_path(&ls[3], 3, 13, &paths[3][..paths[3].len() - 1]),
            None
        );
        let mut long = paths[3].clone();
        long.push(Digest::ZERO);
        assert_eq!(root_from_path(&ls[3], 3, 13, &long), None);
    }

    #[test]
    fn a_single_leaf_is_its_own_path() {
        let ls = leaves(1);
        let (r, paths) = root_and_paths(&ls);
        assert!(paths[0].is_empty());
        assert_eq!(root_from_path(&ls[0], 0, 1, &[]), Some(r));
        assert_ne!(r, ls[0], "the leaf is hashed under its prefix");
    }

    #[test]
    fn the_empty_root_is_fixed() {
        assert_eq!(root(&[]), Digest::of(b"pbft/merkle/empty"));
        assert_ne!(root(&[]), root(&leaves(1)));
    }
}
