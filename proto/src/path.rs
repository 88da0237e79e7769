//! Relative paths inside a mount, and the key encoding that keeps a directory's children
//! together in the store.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::MAX_PATH_LEN;
use crate::name::{check_file_name, NameError};

/// A validated path relative to the mount root: components joined by `/`, each a valid
/// Linux file name. The root is the empty path.
///
/// Paths are the identity of entries in depfs: two nodes that create the same path create
/// the same entry, which is what lets concurrent `mkdir -p` merge.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "serde_bytes::ByteBuf", into = "serde_bytes::ByteBuf")]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// The mount root.
    pub fn root() -> Self {
        RelPath(Vec::new())
    }

    /// Parses `a/b/c` (no leading or trailing slash, no empty, `.` or `..` component).
    pub fn parse(bytes: &[u8]) -> Result<Self, NameError> {
        if bytes.is_empty() {
            return Ok(Self::root());
        }
        if bytes.len() > MAX_PATH_LEN {
            return Err(NameError::TooLong {
                len: bytes.len(),
                max: MAX_PATH_LEN,
            });
        }
        for component in bytes.split(|&b| b == b'/') {
            check_file_name(component)?;
        }
        Ok(RelPath(bytes.to_vec()))
    }

    /// This path with `name` appended.
    pub fn join(&self, name: &[u8]) -> Result<Self, NameError> {
        check_file_name(name)?;
        let mut bytes = Vec::with_capacity(self.0.len() + 1 + name.len());
        bytes.extend_from_slice(&self.0);
        if !bytes.is_empty() {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(name);
        if bytes.len() > MAX_PATH_LEN {
            return Err(NameError::TooLong {
                len: bytes.len(),
                max: MAX_PATH_LEN,
            });
        }
        Ok(RelPath(bytes))
    }

    /// True for the mount root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw bytes, `a/b/c`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The last component; empty for the root.
    pub fn name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The parent directory; `None` for the root.
    pub fn parent(&self) -> Option<RelPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => RelPath(self.0[..i].to_vec()),
            None => RelPath::root(),
        })
    }

    /// Every proper ancestor, nearest first, ending with the root.
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> {
        std::iter::successors(self.parent(), |p| p.parent())
    }

    /// Number of components (0 for the root).
    pub fn depth(&self) -> usize {
        if self.is_root() {
            0
        } else {
            1 + self.0.iter().filter(|&&b| b == b'/').count()
        }
    }

    /// True if `self` is a proper ancestor of `other`.
    pub fn is_ancestor_of(&self, other: &RelPath) -> bool {
        if self.is_root() {
            return !other.is_root();
        }
        other.0.len() > self.0.len()
            && other.0.starts_with(&self.0)
            && other.0[self.0.len()] == b'/'
    }

    /// `other` with the prefix `self` replaced by `to`. `self` must be `other` or an
    /// ancestor of it (used to move the descendants of a renamed directory).
    pub fn rebase(&self, other: &RelPath, to: &RelPath) -> Option<RelPath> {
        if self == other {
            return Some(to.clone());
        }
        if !self.is_ancestor_of(other) {
            return None;
        }
        let rest = if self.is_root() {
            &other.0[..]
        } else {
            &other.0[self.0.len() + 1..]
        };
        let mut bytes = to.0.clone();
        if !bytes.is_empty() {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(rest);
        if bytes.len() > MAX_PATH_LEN {
            return None;
        }
        Some(RelPath(bytes))
    }

    /// The store key: `parent NUL name`, so that the children of one directory are one
    /// contiguous key range ([`RelPath::children_prefix`]) and grandchildren are not in it.
    /// The root's key is empty.
    pub fn key(&self) -> Vec<u8> {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => {
                let mut key = Vec::with_capacity(self.0.len() + 1);
                key.extend_from_slice(&self.0[..i]);
                key.push(0);
                key.extend_from_slice(&self.0[i + 1..]);
                key
            }
            None if self.is_root() => Vec::new(),
            None => {
                let mut key = Vec::with_capacity(self.0.len() + 1);
                key.push(0);
                key.extend_from_slice(&self.0);
                key
            }
        }
    }

    /// The key prefix shared by exactly the children of this directory.
    pub fn children_prefix(&self) -> Vec<u8> {
        let mut prefix = self.0.clone();
        prefix.push(0);
        prefix
    }

    /// Inverse of [`RelPath::key`]; validates, since keys are read from disk.
    pub fn from_key(key: &[u8]) -> Result<Self, NameError> {
        if key.is_empty() {
            return Ok(Self::root());
        }
        let Some(i) = key.iter().rposition(|&b| b == 0) else {
            return Err(NameError::ForbiddenByte { byte: b'/' });
        };
        let (parent, name) = (&key[..i], &key[i + 1..]);
        RelPath::parse(parent)?.join(name)
    }
}

impl TryFrom<Vec<u8>> for RelPath {
    type Error = NameError;
    fn try_from(bytes: Vec<u8>) -> Result<Self, Self::Error> {
        RelPath::parse(&bytes)
    }
}

impl From<RelPath> for Vec<u8> {
    fn from(p: RelPath) -> Vec<u8> {
        p.0
    }
}

impl TryFrom<serde_bytes::ByteBuf> for RelPath {
    type Error = NameError;
    fn try_from(bytes: serde_bytes::ByteBuf) -> Result<Self, Self::Error> {
        RelPath::parse(&bytes)
    }
}

impl From<RelPath> for serde_bytes::ByteBuf {
    fn from(p: RelPath) -> serde_bytes::ByteBuf {
        serde_bytes::ByteBuf::from(p.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn parse_refuses_what_linux_refuses() {
        assert!(RelPath::parse(b"a/b/c").is_ok());
        assert!(RelPath::parse(b"/a").is_err());
        assert!(RelPath::parse(b"a/").is_err());
        assert!(RelPath::parse(b"a//b").is_err());
        assert!(RelPath::parse(b"a/../b").is_err());
        assert!(RelPath::parse(b"a/./b").is_err());
        assert!(RelPath::parse(b"a\0b").is_err());
        assert!(RelPath::parse(&[b'x'; 256]).is_err());
    }

    #[test]
    fn keys_round_trip_and_group_children() {
        for s in ["", "a", "a/b", "a/b/c", "x y/\u{e9}"] {
            let path = p(s);
            assert_eq!(RelPath::from_key(&path.key()).unwrap(), path);
        }
        let dir = p("a/b");
        assert!(p("a/b/c").key().starts_with(&dir.children_prefix()));
        assert!(!p("a/b/c/d").key().starts_with(&dir.children_prefix()));
        assert!(!p("a/bc").key().starts_with(&dir.children_prefix()));
        assert!(p("top")
            .key()
            .starts_with(&RelPath::root().children_prefix()));
        assert!(!p("a/b")
            .key()
            .starts_with(&RelPath::root().children_prefix()));
    }

    #[test]
    fn family_relations() {
        assert_eq!(p("a/b/c").parent(), Some(p("a/b")));
        assert_eq!(p("a").parent(), Some(RelPath::root()));
        assert_eq!(RelPath::root().parent(), None);
        assert_eq!(p("a/b/c").name(), b"c");
        assert!(p("a").is_ancestor_of(&p("a/b")));
        assert!(!p("a").is_ancestor_of(&p("ab")));
        assert!(!p("a").is_ancestor_of(&p("a")));
        assert!(RelPath::root().is_ancestor_of(&p("a")));
        assert_eq!(p("a").rebase(&p("a/b/c"), &p("x")), Some(p("x/b/c")));
        assert_eq!(p("a").rebase(&p("a"), &p("x/y")), Some(p("x/y")));
        assert_eq!(p("a").rebase(&p("b"), &p("x")), None);
        let ancestors: Vec<_> = p("a/b/c").ancestors().collect();
        assert_eq!(ancestors, vec![p("a/b"), p("a"), RelPath::root()]);
        assert_eq!(p("a/b/c").depth(), 3);
    }

    #[test]
    fn from_key_refuses_garbage() {
        assert!(RelPath::from_key(b"no-separator").is_err());
        assert!(RelPath::from_key(b"a\0").is_err());
        assert!(RelPath::from_key(b"a\0..").is_err());
        assert!(RelPath::from_key(b"/etc\0passwd").is_err());
    }
}
