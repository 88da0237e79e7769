//! One-way mode in the store: following a new manager term, and the current manager's
//! re-assertion of paths an old manager changed while cut off.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::Arc;

use depfs_proto::codec::decode_value_or_older;
use depfs_proto::lead::Term;
use depfs_proto::{
    encode_value, DecodeError, Leadership, NodeName, RelPath, SignChanges, VersionVector,
};
use serde::Deserialize;

use crate::db::cf;
use crate::error::Result;
use crate::keys::*;
use crate::log::read_record;
use crate::merge::{visible, without_cut_off, Batch};
use crate::store::Store;
use crate::tx::{Committed, Durability};

impl Store {
    /// Signs every change committed here from now on with this node's key, and this
    /// node's changes the log keeps unsigned (see [`Store::seal_own_changes`]). Peers
    /// refuse unsigned changes: a daemon sets it before anything can commit.
    /// Setting the signer already set does nothing (the daemon sets it before its
    /// import, the replicator again when it starts).
    pub fn set_signer(&self, signer: Arc<dyn SignChanges>) -> Result<usize> {
        {
            let mut current = self.inner.signer.write();
            if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, &signer)) {
                return Ok(0);
            }
            *current = Some(signer.clone());
        }
        let mut lead = self.leadership();
        if lead.sign_terms_of(self.node(), signer.as_ref()) > 0 {
            // Terms this node made before it had a key (an older store).
            self.set_leadership(lead)?;
        }
        self.seal_own_changes()
    }

    /// The manager terms this store follows (empty in multi-writer mode).
    pub fn leadership(&self) -> Leadership {
        self.inner.lead.read().clone()
    }

    /// Follows `lead` from now on (it is persisted, synced). Changes whose standing moves
    /// (made cut off, or no longer) are re-judged: returns the paths whose visible entry
    /// changed.
    ///
    /// This node's own terms are signed here (once a signer is set): whoever made the
    /// history, only the node a term names can sign it.
    pub fn set_leadership(&self, mut lead: Leadership) -> Result<Vec<RelPath>> {
        if let Some(signer) = self.inner.signer.read().as_deref() {
            lead.sign_terms_of(self.node(), signer);
        }
        let writer = self.inner.writer.lock();
        let old = std::mem::replace(&mut *self.inner.lead.write(), lead.clone());
        let mut batch = Batch::new(self);
        let db = &self.inner.db;
        for item in db.iterator_cf(cf(db, CF_LOG), rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            let Some(dot) = parse_log_key(&key) else {
                continue;
            };
            if old.is_cut_off(&dot) == lead.is_cut_off(&dot) {
                continue;
            }
            let record = read_record(&dot, &value)?;
            for path in &record.paths {
                batch.mark(path);
            }
        }
        batch.settle()?;
        batch
            .overlay
            .put(CF_META, META_LEADERSHIP.to_vec(), encode_value(&lead));
        let changed = batch.changed.iter().cloned().collect();
        self.write_batch(batch, Durability::Machine)?;
        drop(writer);
        Ok(changed)
    }

    /// On the current manager: commits, for each of `paths`, what the path shows when
    /// cut-off versions are left out, as a new change of this node that does not descend
    /// from them. Everywhere it arrives, it replaces the version the cut-off one
    /// overwrote (an old manager lost it when it wrote while cut off), and the cut-off
    /// version stays as a conflict.
    pub fn reassert(&self, paths: &[RelPath], wall_ms: u64) -> Result<Option<Committed>> {
        let lead = self.leadership();
        // Deepest first, so a directory sees its children's re-assertions.
        let paths: BTreeSet<(Reverse<usize>, &RelPath)> =
            paths.iter().map(|p| (Reverse(p.depth()), p)).collect();
        let mut tx = self.transaction();
        for (_, path) in paths {
            let Some(base) = without_cut_off(&self.heads(path)?, &lead) else {
                // Nothing cut off here (any more).
                continue;
            };
            let has_children = tx.has_children(path)?;
            // No head of `base` is cut off: they all contend.
            let (truth, _) = visible(&base, has_children, path.is_root());
            let dots = base.iter().map(|h| h.dot.clone()).collect();
            match truth {
                Some(node) => tx.put_based(path.clone(), node, dots),
                None => tx.delete_based(path.clone(), dots),
            }
        }
        tx.commit(wall_ms, Durability::Process)
    }
}

/// A stored term as stores written before terms were signed hold it.
#[derive(Deserialize)]
struct UnsignedTerm {
    number: u64,
    manager: NodeName,
    start: VersionVector,
}

/// Decodes the stored leadership; one written before terms were signed reads as
/// unsigned (this node signs its own terms again when its signer is set).
pub(crate) fn decode_leadership(bytes: &[u8]) -> std::result::Result<Leadership, DecodeError> {
    decode_value_or_older(bytes, |old: Vec<UnsignedTerm>| {
        Leadership::from_terms(
            old.into_iter()
                .map(|t| Term {
                    number: t.number,
                    manager: t.manager,
                    start: t.start,
                    signature: Vec::new(),
                })
                .collect(),
        )
    })
}
