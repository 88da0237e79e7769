//! The identity of a change. Its own module because both a version (which names the
//! change that made it) and a version vector (which covers changes) need it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::NodeName;

/// The identity of a change: the node that made it and its sequence number there.
/// Sequence numbers start at 1 and grow by one per committed change.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The origin node.
    pub node: NodeName,
    /// Its sequence number on that node.
    pub seq: u64,
}

impl Dot {
    /// Builds a dot.
    pub fn new(node: NodeName, seq: u64) -> Self {
        Dot { node, seq }
    }
}

impl fmt::Debug for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.seq)
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
