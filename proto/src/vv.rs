//! Version vectors: for each node, the highest sequence number of its changes that is
//! covered.
//!
//! depfs uses them twice: a node's *progress* (which changes it has, answering "what does
//! peer P still need"), and each version's *causal context* (which earlier versions of the
//! same path it replaced, answering "is this a conflict or just an old change arriving
//! late").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dot::Dot;
use crate::limits::MAX_MEMBERS;
use crate::name::NodeName;

/// A map from node to the highest covered sequence number; absent means 0. At most
/// [`MAX_MEMBERS`] nodes: a decoded one with more is refused (one naming a million
/// invented nodes multiplied a node's memory and made its own `Hello` too large for
/// any peer to read; docs/measurements.md has the figure).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VersionVector(BTreeMap<NodeName, u64>);

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = VersionVector;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a version vector of at most {MAX_MEMBERS} nodes")
            }

            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<VersionVector, D::Error> {
                d.deserialize_map(self)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<VersionVector, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((node, seq)) = map.next_entry::<NodeName, u64>()? {
                    out.insert(node, seq);
                    if out.len() > MAX_MEMBERS {
                        return Err(serde::de::Error::custom(format!(
                            "a version vector names more than {MAX_MEMBERS} nodes"
                        )));
                    }
                }
                Ok(VersionVector(out))
            }
        }
        d.deserialize_newtype_struct("VersionVector", Entries)
    }
}

impl VersionVector {
    /// The empty vector (covers nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// The covered sequence number of `node`.
    pub fn get(&self, node: &NodeName) -> u64 {
        self.0.get(node).copied().unwrap_or(0)
    }

    /// Raises the entry of `node` to at least `seq`.
    pub fn raise(&mut self, node: &NodeName, seq: u64) {
        if seq > self.get(node) {
            self.0.insert(node.clone(), seq);
        }
    }

    /// True if the change identified by `dot` is covered.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.node) >= dot.seq
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VersionVector) {
        for (node, &seq) in &other.0 {
            self.raise(node, seq);
        }
    }

    /// True if every entry of `other` is covered by `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(node, &seq)| self.get(node) >= seq)
    }

    /// The entries, in node order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeName, u64)> {
        self.0.iter().map(|(n, &s)| (n, s))
    }

    /// True if nothing is covered.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(|&s| s == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    #[test]
    fn a_version_vector_naming_more_nodes_than_a_cluster_has_is_refused() {
        let mut vv = VersionVector::new();
        for i in 0..MAX_MEMBERS {
            vv.raise(&n(&format!("n{i}")), 1);
        }
        let bytes = crate::codec::encode_value(&vv);
        assert_eq!(
            crate::codec::decode_value::<VersionVector>(&bytes).unwrap(),
            vv
        );
        vv.raise(&n("one-more"), 1);
        let bytes = crate::codec::encode_value(&vv);
        assert!(crate::codec::decode_value::<VersionVector>(&bytes).is_err());
    }

    #[test]
    fn merge_is_pointwise_max_and_dominates_is_pointwise_ge() {
        let mut a = VersionVector::new();
        a.raise(&n("a"), 3);
        a.raise(&n("b"), 1);
        let mut b = VersionVector::new();
        b.raise(&n("b"), 4);
        assert!(!a.dominates(&b) && !b.dominates(&a));
        let mut m = a.clone();
        m.merge(&b);
        assert!(m.dominates(&a) && m.dominates(&b));
        assert_eq!(m.get(&n("a")), 3);
        assert_eq!(m.get(&n("b")), 4);
        assert!(m.covers(&Dot::new(n("b"), 4)));
        assert!(!m.covers(&Dot::new(n("b"), 5)));
        assert!(!m.covers(&Dot::new(n("c"), 1)));
    }

    #[test]
    fn raise_never_lowers() {
        let mut a = VersionVector::new();
        a.raise(&n("a"), 5);
        a.raise(&n("a"), 2);
        assert_eq!(a.get(&n("a")), 5);
    }
}
