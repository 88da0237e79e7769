//! One version of one path: who made it, when, what it replaced, and what it holds.

use serde::{Deserialize, Serialize};

pub use crate::dot::Dot;
use crate::entry::Node;
use crate::hlc::Hlc;
use crate::name::NodeName;
use crate::vv::VersionVector;

/// The total order used to pick a winner among concurrent versions: later HLC time wins,
/// ties broken by node name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// The change's HLC time.
    pub hlc: Hlc,
    /// The origin node, the tie-breaker.
    pub node: NodeName,
}

/// What a version says about its path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// The path holds this entry.
    Live(Node),
    /// The path was deleted (a tombstone).
    Deleted,
}

/// One version of one path, as stored in the tree and sent to peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The change that made this version.
    pub dot: Dot,
    /// The change's HLC time.
    pub hlc: Hlc,
    /// Causal context: every version of this path that this one replaced, including
    /// itself. A version whose dot is covered here is an ancestor, not a rival.
    pub ctx: VersionVector,
    /// Live entry or tombstone.
    pub state: State,
}

impl Version {
    /// The winner-picking order of this version.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            hlc: self.hlc,
            node: self.dot.node.clone(),
        }
    }

    /// True if this version was made by a node that had seen `other` (so `other` is
    /// superseded, not concurrent).
    pub fn descends_from(&self, other: &Version) -> bool {
        self.ctx.covers(&other.dot)
    }

    /// The live entry, if this version is not a tombstone.
    pub fn node(&self) -> Option<&Node> {
        match &self.state {
            State::Live(node) => Some(node),
            State::Deleted => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_order_by_time_then_node() {
        let a = NodeName::new("a").unwrap();
        let b = NodeName::new("b").unwrap();
        let s = |ms, node: &NodeName| Stamp {
            hlc: Hlc::new(ms, 0),
            node: node.clone(),
        };
        assert!(s(1, &b) < s(2, &a));
        assert!(s(2, &a) < s(2, &b));
    }
}
