//! Seals: what lets every node check that a change is what its origin made — also when
//! another node relays it, and when it is replayed during catch-up long after.
//!
//! The origin hashes each version the change made (its path, causal context and state)
//! and signs the change's digest: its dot, its time and the list of those hashes. The
//! seal carries the list and the signature, and every node keeps it with the change's log
//! record. A node sends only the versions of a change that are still current there (see
//! [`crate::wire::Change`]), always with the whole seal: the receiver hashes each version
//! it got, finds it in the list, recomputes the digest and checks the signature against
//! the origin's certificate. Nobody but the origin can make a seal that fits, so a member
//! can relay other members' changes but never alter or invent one (`docs/reliability.md`).
//!
//! This module is pure: signing and checking signatures are the caller's (the replicator
//! holds the keys and certificates), through [`SignChanges`] and the digest.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::encode_after;
use crate::dot::Dot;
use crate::hlc::Hlc;
use crate::limits::MAX_SIGNATURE_LEN;
use crate::path::RelPath;
use crate::version::State;
use crate::vv::VersionVector;

/// A blake3 digest of a version or of a change.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The origin's signature over a change, and the digests of every version it made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The digest of every version the change made, in the order it made them.
    pub ops: Vec<Digest>,
    /// The origin's signature of [`change_digest`] (empty: unsigned).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Signs change digests with a node's private key.
pub trait SignChanges: Send + Sync {
    /// The signature of `digest`.
    fn sign(&self, digest: &Digest) -> Vec<u8>;
}

/// Why a change's seal does not fit the change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The change carries no signature.
    #[error("change {0} is not signed")]
    Unsigned(Dot),
    /// The signature is longer than any signature a node key makes.
    #[error("change {dot}: a signature of {len} bytes (at most {MAX_SIGNATURE_LEN})")]
    SignatureTooLong {
        /// The change.
        dot: Dot,
        /// The signature's length.
        len: usize,
    },
    /// A version sent is not one the origin sealed.
    #[error("change {dot}: the version of {path} is not one its origin signed")]
    NotSealed {
        /// The change.
        dot: Dot,
        /// The version's path.
        path: RelPath,
    },
}

/// The digest of one version a change made: domain-separated from every other use of
/// blake3 in depfs, over the canonical encoding of path, context and state.
pub fn op_digest(path: &RelPath, ctx: &VersionVector, state: &State) -> Digest {
    let bytes = encode_after(Vec::new(), &(path, ctx, state));
    Digest(blake3::derive_key("depfs 2026-12 change version", &bytes))
}

/// The digest the origin signs: the change's dot, time and version digests.
pub fn change_digest(dot: &Dot, hlc: Hlc, ops: &[Digest]) -> Digest {
    let head = encode_after(Vec::new(), &(dot, hlc, ops.len() as u64));
    let mut hasher = blake3::Hasher::new_derive_key("depfs 2026-12 change");
    hasher.update(&head);
    for op in ops {
        hasher.update(&op.0);
    }
    Digest(*hasher.finalize().as_bytes())
}

impl Seal {
    /// Seals the change `dot` made at `hlc`, whose versions have the digests `ops`.
    pub fn new(dot: &Dot, hlc: Hlc, ops: Vec<Digest>, signer: &dyn SignChanges) -> Seal {
        let signature = signer.sign(&change_digest(dot, hlc, &ops));
        Seal { ops, signature }
    }

    /// True if the change was sealed by a signer (stores written before seals existed
    /// hold unsigned records).
    pub fn is_signed(&self) -> bool {
        !self.signature.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Content, Kind, Meta, Node, Timespec};
    use crate::name::NodeName;
    use crate::wire::{Change, ChangeOp};

    /// A stand-in signer: the "signature" is the digest itself.
    struct Echo;
    impl SignChanges for Echo {
        fn sign(&self, digest: &Digest) -> Vec<u8> {
            digest.0.to_vec()
        }
    }

    fn op(path: &str, byte: u8) -> ChangeOp {
        let node = NodeName::new("gw1").unwrap();
        let mut ctx = VersionVector::new();
        ctx.raise(&node, 3);
        ChangeOp {
            path: RelPath::parse(path.as_bytes()).unwrap(),
            ctx,
            state: State::Live(Node {
                meta: Meta {
                    kind: Kind::File,
                    perm: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime: Timespec::new(1, 0),
                    ctime: Timespec::new(1, 0),
                },
                content: Content::Inline(vec![byte]),
            }),
        }
    }

    fn sealed(ops: Vec<ChangeOp>) -> Change {
        let dot = Dot::new(NodeName::new("gw1").unwrap(), 3);
        let hlc = Hlc::new(1_000, 0);
        Change {
            seal: Seal::of_ops(&dot, hlc, &ops, &Echo),
            dot,
            hlc,
            ops,
        }
    }

    #[test]
    fn a_part_of_a_change_carries_the_digest_of_the_whole() {
        let whole = sealed(vec![op("a", 1), op("b", 2)]);
        let digest = whole.sealed_digest().unwrap();
        assert_eq!(digest.0.to_vec(), whole.seal.signature);
        let mut part = whole.clone();
        part.ops.remove(0);
        assert_eq!(part.sealed_digest(), Ok(digest));
    }

    #[test]
    fn an_altered_version_time_or_dot_no_longer_fits_its_seal() {
        let whole = sealed(vec![op("a", 1)]);
        let honest = whole.sealed_digest().unwrap();

        let mut content = whole.clone();
        content.ops[0] = op("a", 9);
        assert!(matches!(
            content.sealed_digest(),
            Err(SealError::NotSealed { .. })
        ));

        let mut added = whole.clone();
        added.ops.push(op("b", 1));
        assert!(matches!(
            added.sealed_digest(),
            Err(SealError::NotSealed { .. })
        ));

        let mut later = whole.clone();
        later.hlc = Hlc::new(2_000, 0);
        assert_ne!(later.sealed_digest().unwrap(), honest);

        let mut other = whole.clone();
        other.dot.seq = 4;
        assert_ne!(other.sealed_digest().unwrap(), honest);

        let mut unsigned = whole;
        unsigned.seal.signature.clear();
        assert!(matches!(
            unsigned.sealed_digest(),
            Err(SealError::Unsigned(_))
        ));
    }
}
