//! Leadership in one-way mode: which node is the manager, since when, and which changes
//! each manager made while it was the manager.
//!
//! A [`Leadership`] is the history of manager *terms*. Term 1 starts when the first
//! manager starts; `depfs promote` on another node starts the next term. A term records
//! the promoted node's progress at the moment of promotion (`start`): every change the
//! old manager had delivered to the promoted node is covered by it and stays, every
//! later change of the old manager was made *cut off* from the cluster. Cut-off changes
//! are kept as conflicts (see the store's merge rules), never shown in the tree and never
//! silently dropped.
//!
//! Which leadership a node follows is decided by [`Leadership::supersedes`]: the later
//! term wins, ties (two nodes promoted at once) are broken by node name, so every node
//! ends up following the same one.
//!
//! Each term is signed by the manager it names ([`Term::signature`], over
//! [`term_digest`]): a member can relay a term, never make one up for another node
//! (`docs/reliability.md`, "Threat model"). Checking signatures is the replicator's.

use serde::{Deserialize, Serialize};

use crate::codec::encode_after;
use crate::dot::Dot;
use crate::name::NodeName;
use crate::seal::{Digest, SignChanges};
use crate::vv::VersionVector;

/// Most terms a leadership history holds. A history is a few entries in practice (one
/// per promotion); the bound keeps a hostile `Hello` small.
pub const MAX_TERMS: usize = 1024;

/// One manager term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// Term number, starting at 1 and increasing by one per promotion.
    pub number: u64,
    /// The manager during this term.
    pub manager: NodeName,
    /// The manager's progress when the term started: its changes from this term are the
    /// ones beyond `start`, and the previous manager's changes covered by `start` are the
    /// ones the promoted node had received.
    pub start: VersionVector,
    /// The manager's signature of [`term_digest`] (empty: not signed yet).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The digest a term's manager signs: its number, manager and start, domain-separated
/// from every other use of blake3 in depfs.
pub fn term_digest(number: u64, manager: &NodeName, start: &VersionVector) -> Digest {
    let bytes = encode_after(Vec::new(), &(number, manager, start));
    Digest(blake3::derive_key("depfs 2026-12 manager term", &bytes))
}

impl Term {
    /// The digest its manager signs.
    pub fn digest(&self) -> Digest {
        term_digest(self.number, &self.manager, &self.start)
    }

    /// True if the term carries a signature.
    pub fn is_signed(&self) -> bool {
        !self.signature.is_empty()
    }

    /// True if both say the same, whether signed or not.
    pub fn same_as(&self, other: &Term) -> bool {
        self.number == other.number && self.manager == other.manager && self.start == other.start
    }
}

/// How a change relates to the leadership history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority {
    /// Made by the manager of the term it belongs to, and known to the next manager (or
    /// the term is the current one): part of the tree.
    Manager,
    /// Made by a manager after the next term had started without it: kept as a conflict.
    CutOff,
    /// Not made by any manager: refused.
    NotManager,
}

/// The history of manager terms, oldest first. Empty in multi-writer mode and on a
/// worker that has not heard from any manager yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    terms: Vec<Term>,
}

/// Why a received leadership history is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeadershipError {
    /// More terms than [`MAX_TERMS`].
    #[error("{0} terms, more than {MAX_TERMS}")]
    TooLong(usize),
    /// Term numbers must be 1, 2, 3, ...
    #[error("term {found} where term {expected} was expected")]
    Numbering {
        /// The number found.
        found: u64,
        /// The number expected at that place.
        expected: u64,
    },
}

impl Leadership {
    /// The first term: `manager` starts managing with progress `start`.
    pub fn first(manager: NodeName, start: VersionVector) -> Self {
        Leadership {
            terms: vec![Term {
                number: 1,
                manager,
                start,
                signature: Vec::new(),
            }],
        }
    }

    /// A history of these terms, as they are (see [`Leadership::validate`]).
    pub fn from_terms(terms: Vec<Term>) -> Self {
        Leadership { terms }
    }

    /// True if no manager is known.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The current term, if any.
    pub fn current(&self) -> Option<&Term> {
        self.terms.last()
    }

    /// The current manager, if any.
    pub fn manager(&self) -> Option<&NodeName> {
        self.current().map(|t| &t.manager)
    }

    /// The current term number (0 when no manager is known).
    pub fn term(&self) -> u64 {
        self.current().map_or(0, |t| t.number)
    }

    /// Every term, oldest first.
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// The history after `node` is promoted with progress `start`.
    pub fn promote(&self, node: NodeName, start: VersionVector) -> Self {
        let mut terms = self.terms.clone();
        terms.push(Term {
            number: self.term() + 1,
            manager: node,
            start,
            signature: Vec::new(),
        });
        Leadership { terms }
    }

    /// Signs every term of `node` that is not signed yet; returns how many.
    pub fn sign_terms_of(&mut self, node: &NodeName, signer: &dyn SignChanges) -> usize {
        let mut signed = 0;
        for term in &mut self.terms {
            if &term.manager == node && !term.is_signed() {
                term.signature = signer.sign(&term.digest());
                signed += 1;
            }
        }
        signed
    }

    /// The terms of `self` that `known` does not hold as they are (same place, same
    /// content, same signature): the ones a receiver must check before following `self`.
    pub fn unknown_terms<'a>(&'a self, known: &'a Leadership) -> impl Iterator<Item = &'a Term> {
        self.terms
            .iter()
            .enumerate()
            .filter(move |(i, t)| known.terms.get(*i) != Some(*t))
            .map(|(_, t)| t)
    }

    /// True if `self` says what `other` says, term by term, and carries signatures
    /// where `other` has none: a history from before terms were signed, signed since.
    pub fn signs_more_of(&self, other: &Leadership) -> bool {
        let signed = |l: &Leadership| l.terms.iter().filter(|t| t.is_signed()).count();
        self.terms.len() == other.terms.len()
            && self
                .terms
                .iter()
                .zip(&other.terms)
                .all(|(a, b)| a.same_as(b))
            && signed(self) > signed(other)
    }

    /// Every node the history names as a manager, once each.
    pub fn managers(&self) -> std::collections::BTreeSet<&NodeName> {
        self.terms.iter().map(|t| &t.manager).collect()
    }

    /// Checks a history received from a peer.
    pub fn validate(&self) -> Result<(), LeadershipError> {
        if self.terms.len() > MAX_TERMS {
            return Err(LeadershipError::TooLong(self.terms.len()));
        }
        for (i, term) in self.terms.iter().enumerate() {
            let expected = i as u64 + 1;
            if term.number != expected {
                return Err(LeadershipError::Numbering {
                    found: term.number,
                    expected,
                });
            }
        }
        Ok(())
    }

    /// True if a node following `other` should follow `self` instead: a later term, or
    /// the same term with a greater manager name (two promotions at once).
    pub fn supersedes(&self, other: &Leadership) -> bool {
        let key = |l: &Leadership| l.current().map(|t| (t.number, t.manager.clone()));
        key(self) > key(other)
    }

    /// How the change `dot` relates to the history: a change of node `X` with sequence
    /// `s` belongs to a term `i` of `X` if `start_i[X] < s`; it is the manager's if also
    /// `s <= start_{i+1}[X]` (the next manager had it) or `i` is the last term.
    pub fn authority(&self, dot: &Dot) -> Authority {
        let mut made_as_manager = false;
        for (i, term) in self.terms.iter().enumerate() {
            if term.manager != dot.node || dot.seq <= term.start.get(&dot.node) {
                continue;
            }
            made_as_manager = true;
            match self.terms.get(i + 1) {
                None => return Authority::Manager,
                Some(next) if dot.seq <= next.start.get(&dot.node) => return Authority::Manager,
                Some(_) => {}
            }
        }
        if made_as_manager {
            Authority::CutOff
        } else {
            Authority::NotManager
        }
    }

    /// True if `dot` is a change its manager made cut off from the cluster.
    pub fn is_cut_off(&self, dot: &Dot) -> bool {
        self.authority(dot) == Authority::CutOff
    }

    /// The sequence numbers of `node`'s changes that are cut off, as ranges
    /// `(after, upto]` (`upto` is `u64::MAX` while the range is open).
    pub fn cut_off_ranges(&self, node: &NodeName) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for (i, term) in self.terms.iter().enumerate() {
            if &term.manager != node {
                continue;
            }
            let Some(next) = self.terms.get(i + 1) else {
                continue;
            };
            let after = next.start.get(node).max(term.start.get(node));
            // The range ends where this node's next term starts, if it has one.
            let upto = self.terms[i + 1..]
                .iter()
                .find(|t| &t.manager == node)
                .map_or(u64::MAX, |t| t.start.get(node));
            if upto > after {
                out.push((after, upto));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        let mut v = VersionVector::new();
        for (node, seq) in pairs {
            v.raise(&n(node), *seq);
        }
        v
    }

    fn dot(node: &str, seq: u64) -> Dot {
        Dot::new(n(node), seq)
    }

    #[test]
    fn only_the_managers_changes_count() {
        let l = Leadership::first(n("m"), VersionVector::new());
        assert_eq!(l.authority(&dot("m", 1)), Authority::Manager);
        assert_eq!(l.authority(&dot("w", 1)), Authority::NotManager);
        assert_eq!(
            Leadership::default().authority(&dot("m", 1)),
            Authority::NotManager
        );
    }

    #[test]
    fn a_promotion_cuts_off_what_the_promoted_node_had_not_received() {
        // m made 10 changes; w had received 7 when it was promoted.
        let l = Leadership::first(n("m"), VersionVector::new()).promote(n("w"), vv(&[("m", 7)]));
        assert_eq!(l.term(), 2);
        assert_eq!(l.manager(), Some(&n("w")));
        assert_eq!(l.authority(&dot("m", 7)), Authority::Manager);
        assert_eq!(l.authority(&dot("m", 8)), Authority::CutOff);
        assert_eq!(l.authority(&dot("w", 1)), Authority::Manager);
        assert_eq!(l.cut_off_ranges(&n("m")), vec![(7, u64::MAX)]);
        // m is promoted again later, having made 12 changes in all: 8..=12 stay cut
        // off, 13 onwards are its new term's.
        let l = l.promote(n("m"), vv(&[("m", 12), ("w", 3)]));
        assert_eq!(l.authority(&dot("m", 12)), Authority::CutOff);
        assert_eq!(l.authority(&dot("m", 13)), Authority::Manager);
        assert_eq!(l.authority(&dot("w", 3)), Authority::Manager);
        assert_eq!(l.authority(&dot("w", 4)), Authority::CutOff);
        assert_eq!(l.cut_off_ranges(&n("m")), vec![(7, 12)]);
        assert_eq!(l.cut_off_ranges(&n("w")), vec![(3, u64::MAX)]);
        assert!(l.validate().is_ok());
    }

    #[test]
    fn the_later_term_wins_and_ties_break_by_name() {
        let one = Leadership::first(n("m"), VersionVector::new());
        let two_a = one.promote(n("a"), VersionVector::new());
        let two_b = one.promote(n("b"), VersionVector::new());
        assert!(two_a.supersedes(&one) && !one.supersedes(&two_a));
        assert!(two_b.supersedes(&two_a) && !two_a.supersedes(&two_b));
        assert!(one.supersedes(&Leadership::default()));
        assert!(!one.supersedes(&one));
    }

    #[test]
    fn bad_histories_are_refused() {
        let mut l = Leadership::first(n("m"), VersionVector::new());
        l.terms[0].number = 2;
        assert!(l.validate().is_err());
        let mut l = Leadership::default();
        for _ in 0..=MAX_TERMS {
            l = l.promote(n("m"), VersionVector::new());
        }
        assert!(matches!(l.validate(), Err(LeadershipError::TooLong(_))));
    }
}
