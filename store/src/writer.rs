//! The writer's state: this node's clock, sequence number and progress, changed only
//! under the store's writer lock and persisted with every change it makes.

use depfs_proto::{Dot, Hlc, HlcClock, VersionVector};
use serde::{Deserialize, Serialize};

/// The writer's in-memory state, persisted in every commit.
pub(crate) struct Writer {
    pub(crate) clock: HlcClock,
    pub(crate) seq: u64,
    pub(crate) vv: VersionVector,
}

impl Writer {
    /// Counts this node's commit `dot` as made (the commit's batch persists it).
    pub(crate) fn record_commit(&mut self, dot: &Dot) {
        debug_assert_eq!(dot.seq, self.seq + 1, "sequence numbers are consecutive");
        debug_assert!(
            !self.vv.covers(dot),
            "progress covers {dot} before it is made (see `Store::provable`)"
        );
        self.seq = dot.seq;
        self.vv.raise(&dot.node, dot.seq);
    }

    /// Adds `progress` to this node's progress.
    pub(crate) fn adopt(&mut self, progress: &VersionVector) {
        #[cfg(debug_assertions)]
        let before = self.vv.clone();
        self.vv.merge(progress);
        #[cfg(debug_assertions)]
        debug_assert!(
            self.vv.dominates(&before) && self.vv.dominates(progress),
            "progress went backwards"
        );
    }
}

/// What `meta/writer` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct WriterState {
    pub(crate) seq: u64,
    pub(crate) hlc: Hlc,
    pub(crate) vv: VersionVector,
}
