//! Node names and file names.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_NAME_LEN, MAX_NODE_NAME_LEN};

/// Why a name was refused. Each maps to the errno Linux gives for the same mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty (`ENOENT` for a path component).
    #[error("name is empty")]
    Empty,
    /// The name is longer than its limit (`ENAMETOOLONG`).
    #[error("name is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Length of the refused name.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },
    /// The name contains a byte that is not allowed (`/` or NUL in a file name).
    #[error("name contains the forbidden byte {byte:#04x}")]
    ForbiddenByte {
        /// The offending byte.
        byte: u8,
    },
    /// `.` and `..` are not names (`EINVAL`).
    #[error("'.' and '..' are not names")]
    Dot,
}

/// The name of a node: it is the node's identity in certificates, keys, logs and
/// conflict-resolution tie-breaks.
///
/// 1 to 63 bytes of ASCII letters, digits, `.`, `_` and `-`, starting with a letter or a
/// digit, so that it is a valid DNS-like certificate name and never contains the NUL that
/// separates key parts.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    /// Validates `name` as a node name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let bytes = name.as_bytes();
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes.len() > MAX_NODE_NAME_LEN {
            return Err(NameError::TooLong {
                len: bytes.len(),
                max: MAX_NODE_NAME_LEN,
            });
        }
        if !bytes[0].is_ascii_alphanumeric() {
            return Err(NameError::ForbiddenByte { byte: bytes[0] });
        }
        if let Some(&byte) = bytes
            .iter()
            .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
        {
            return Err(NameError::ForbiddenByte { byte });
        }
        Ok(NodeName(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeName::new(&s)
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One component of a path: what Linux accepts as a file name.
///
/// Not empty, at most 255 bytes, no `/`, no NUL, not `.` or `..`. Any other bytes are
/// allowed (Linux names need not be UTF-8).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileName(Vec<u8>);

impl FileName {
    /// Validates `name` as a file name.
    pub fn new(name: &[u8]) -> Result<Self, NameError> {
        check_file_name(name)?;
        Ok(FileName(name.to_vec()))
    }

    /// The raw bytes of the name.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// Checks `name` against the Linux rules for one path component.
pub fn check_file_name(name: &[u8]) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == b"." || name == b".." {
        return Err(NameError::Dot);
    }
    if let Some(&byte) = name.iter().find(|&&b| b == b'/' || b == 0) {
        return Err(NameError::ForbiddenByte { byte });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_follow_the_rules() {
        assert!(NodeName::new("gw1").is_ok());
        assert!(NodeName::new("gw-1.dc_2").is_ok());
        assert_eq!(NodeName::new(""), Err(NameError::Empty));
        assert!(NodeName::new("-gw").is_err());
        assert!(NodeName::new("gw 1").is_err());
        assert!(NodeName::new("gw\0").is_err());
        assert!(NodeName::new(&"a".repeat(63)).is_ok());
        assert!(matches!(
            NodeName::new(&"a".repeat(64)),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn file_names_follow_linux_rules() {
        assert!(FileName::new(b"api.xml").is_ok());
        assert!(FileName::new(&[0xff, 0xfe]).is_ok(), "non-UTF-8 is allowed");
        assert!(FileName::new(&[b'a'; 255]).is_ok());
        assert!(matches!(
            FileName::new(&[b'a'; 256]),
            Err(NameError::TooLong { len: 256, .. })
        ));
        assert_eq!(FileName::new(b""), Err(NameError::Empty));
        assert_eq!(FileName::new(b"."), Err(NameError::Dot));
        assert_eq!(FileName::new(b".."), Err(NameError::Dot));
        assert_eq!(
            FileName::new(b"a/b"),
            Err(NameError::ForbiddenByte { byte: b'/' })
        );
        assert_eq!(
            FileName::new(b"a\0b"),
            Err(NameError::ForbiddenByte { byte: 0 })
        );
    }

    #[test]
    fn node_name_deserialization_validates() {
        let bytes = postcard::to_allocvec(&"bad name".to_string()).unwrap();
        assert!(postcard::from_bytes::<NodeName>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&"gw2".to_string()).unwrap();
        assert_eq!(
            postcard::from_bytes::<NodeName>(&bytes).unwrap().as_str(),
            "gw2"
        );
    }
}
