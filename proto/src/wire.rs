//! What nodes say to each other: changes and the messages of the synchronisation
//! protocol. Every message is encoded with [`crate::codec`] and bounded by
//! [`crate::limits::MAX_VALUE_LEN`].

use serde::{Deserialize, Serialize};

use crate::dot::Dot;
use crate::entry::ChunkHash;
use crate::hlc::Hlc;
use crate::lead::Leadership;
use crate::limits::MAX_SIGNATURE_LEN;
use crate::name::NodeName;
use crate::path::RelPath;
use crate::seal::{change_digest, op_digest, Digest, Seal, SealError, SignChanges};
use crate::version::{State, Version};
use crate::vv::VersionVector;

/// One path's part of a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeOp {
    /// The path written.
    pub path: RelPath,
    /// The new version's causal context at this path.
    pub ctx: VersionVector,
    /// Live entry or tombstone.
    pub state: State,
}

/// A committed change as it travels: its identity, time, and the versions it made that
/// are still current at the sender (superseded ones are not sent: the versions that
/// superseded them are).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Origin node and sequence number.
    pub dot: Dot,
    /// HLC time of the change.
    pub hlc: Hlc,
    /// The versions, one per path.
    pub ops: Vec<ChangeOp>,
    /// The origin's signature, which fits any subset of the versions it made.
    pub seal: Seal,
}

impl Change {
    /// The version this change made at `op`'s path.
    pub fn version(&self, op: &ChangeOp) -> Version {
        Version {
            dot: self.dot.clone(),
            hlc: self.hlc,
            ctx: op.ctx.clone(),
            state: op.state.clone(),
        }
    }
}

/// A chunk in transit: its hash and its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkData {
    /// The blake3 hash the receiver checks the bytes against.
    pub hash: ChunkHash,
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A member's X.509 certificate (DER), signed by the cluster CA: the key its changes are
/// signed with, under the name its changes carry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certificate({} bytes)", self.0.len())
    }
}

/// The synchronisation protocol between two nodes (see `docs/design.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// "This is what I have": sent on connect and periodically (anti-entropy). The
    /// receiver answers with every change the sender lacks.
    Hello {
        /// The sender's node name.
        node: NodeName,
        /// The sender's progress.
        vv: VersionVector,
        /// One-way mode: the manager terms the sender follows (empty in multi-writer
        /// mode and before a worker has heard of a manager).
        lead: Leadership,
        /// One-way mode: the certificates of the current term's manager, which a node
        /// must know before it follows the term.
        certificates: Vec<Certificate>,
    },
    /// One part of a batch of changes the receiver lacks. `base` is the progress the
    /// sender assumed the receiver had; `upto`, on the last part, is the sender's
    /// progress: once the receiver has applied every part of the batch, and its own
    /// progress covered `base`, it covers `upto` too.
    Changes {
        /// The batch, numbered by the sender within the session.
        batch: u64,
        /// This part's number, from 0.
        part: u32,
        /// True on the batch's last part.
        last: bool,
        /// What the sender assumed the receiver had.
        base: VersionVector,
        /// The certificates of the changes' origins that the sender has not yet sent in
        /// this session: the receiver checks every change's seal against its origin's.
        certificates: Vec<Certificate>,
        /// The changes, oldest first per origin.
        changes: Vec<Change>,
        /// The sender's progress, on the last part.
        upto: Option<VersionVector>,
    },
    /// The receiver's progress after applying changes.
    Ack {
        /// Its progress.
        vv: VersionVector,
    },
    /// Content chunks the sender needs to apply changes.
    GetChunks {
        /// Their hashes.
        hashes: Vec<ChunkHash>,
    },
    /// Chunks asked for, and those the sender no longer has.
    Chunks {
        /// Hash and bytes; the receiver checks every hash.
        chunks: Vec<ChunkData>,
        /// Chunks no longer stored (their versions were superseded meanwhile).
        missing: Vec<ChunkHash>,
    },
    /// The sender's progress, told to a peer it did not get the changes from. A node
    /// relays what it applies to its other peers a little later; by then those peers
    /// have usually said they got the changes directly, and the relay leaves them out
    /// (in a full mesh every change would otherwise travel to every node from every
    /// other).
    Progress {
        /// Its progress.
        vv: VersionVector,
    },
}

// What of a seal reads a change lives here, next to the change, so that the seal's
// module depends only on the parts it digests.
impl Seal {
    /// Seals the change `dot` made at `hlc` whose versions are `ops`.
    pub fn of_ops(dot: &Dot, hlc: Hlc, ops: &[ChangeOp], signer: &dyn SignChanges) -> Seal {
        let digests = ops
            .iter()
            .map(|op| op_digest(&op.path, &op.ctx, &op.state))
            .collect();
        Seal::new(dot, hlc, digests, signer)
    }
}

impl Change {
    /// The digest the origin's signature must verify for this change, once every version
    /// sent has been found among those the origin sealed.
    pub fn sealed_digest(&self) -> Result<Digest, SealError> {
        let seal = &self.seal;
        if !seal.is_signed() {
            return Err(SealError::Unsigned(self.dot.clone()));
        }
        if seal.signature.len() > MAX_SIGNATURE_LEN {
            return Err(SealError::SignatureTooLong {
                dot: self.dot.clone(),
                len: seal.signature.len(),
            });
        }
        let sealed: std::collections::HashSet<&Digest> = seal.ops.iter().collect();
        for op in &self.ops {
            if !sealed.contains(&op_digest(&op.path, &op.ctx, &op.state)) {
                return Err(SealError::NotSealed {
                    dot: self.dot.clone(),
                    path: op.path.clone(),
                });
            }
        }
        Ok(change_digest(&self.dot, self.hlc, &seal.ops))
    }
}
