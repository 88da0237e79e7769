//! The pin table: which chunks open files and unfinished commits keep alive, and which
//! chunks wait for their last pin to go before they are deleted (see `chunks`).

use depfs_proto::{ChunkHash, ChunkMap, ChunkSet};

/// Pins by hash, and the zero-reference chunks whose deletion waits for an unpin.
#[derive(Default)]
pub(crate) struct PinTable {
    counts: ChunkMap<u32>,
    /// Chunks whose count reached zero while pinned.
    deferred: ChunkSet,
    /// Deferred chunks whose last pin has gone: to be checked by the next commit.
    releasable: Vec<ChunkHash>,
}

impl PinTable {
    pub(crate) fn pin(&mut self, hash: ChunkHash) {
        *self.counts.entry(hash).or_insert(0) += 1;
    }

    pub(crate) fn unpin(&mut self, hash: &ChunkHash) {
        if let Some(count) = self.counts.get_mut(hash) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(hash);
                if self.deferred.remove(hash) {
                    self.releasable.push(*hash);
                }
            }
        }
    }

    pub(crate) fn is_pinned(&self, hash: &ChunkHash) -> bool {
        self.counts.contains_key(hash)
    }

    pub(crate) fn defer(&mut self, hash: ChunkHash) {
        self.deferred.insert(hash);
    }

    /// `hash` has references again: its deletion is no longer pending on its pins.
    pub(crate) fn undefer(&mut self, hash: &ChunkHash) {
        self.deferred.remove(hash);
    }

    pub(crate) fn take_releasable(&mut self) -> Vec<ChunkHash> {
        std::mem::take(&mut self.releasable)
    }
}
