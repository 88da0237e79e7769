//! The encoding of every stored value and every message: one format-version byte, then
//! `postcard`. Decoding never panics and refuses oversized or trailing input.

use serde::{de::DeserializeOwned, Serialize};

use crate::limits::MAX_VALUE_LEN;

/// The current format version of stored values and messages.
pub const FORMAT_VERSION: u8 = 1;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The input is empty (no version byte).
    #[error("empty value")]
    Empty,
    /// Written by a format this build does not know.
    #[error("unknown format version {0} (this build reads version {FORMAT_VERSION})")]
    UnknownVersion(u8),
    /// Longer than any valid value.
    #[error("value of {0} bytes exceeds the {MAX_VALUE_LEN}-byte limit")]
    TooLong(usize),
    /// The postcard payload is malformed.
    #[error("malformed value: {0}")]
    Malformed(#[from] postcard::Error),
    /// Bytes left over after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Encodes `value` with the format-version byte.
pub fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    encode_after(vec![FORMAT_VERSION], value)
}

/// Decodes a stored value of type `T`, or, failing that, one written in an older layout
/// `Old` (before a field was added), brought up to date by `upgrade`. The error is the
/// one decoding as `T` gave.
pub fn decode_value_or_older<T, Old>(
    bytes: &[u8],
    upgrade: impl FnOnce(Old) -> T,
) -> Result<T, DecodeError>
where
    T: DeserializeOwned,
    Old: DeserializeOwned,
{
    decode_value::<T>(bytes)
        .or_else(|current| decode_value::<Old>(bytes).map(upgrade).map_err(|_| current))
}

/// Appends `value`'s postcard encoding to `out`. Equal values always encode to equal
/// bytes, which is what lets a signature cover a value (see [`crate::seal`]).
pub(crate) fn encode_after<T: Serialize>(out: Vec<u8>, value: &T) -> Vec<u8> {
    // Serializing our own types into a Vec cannot fail: postcard only errors on
    // unsupported serde features, which these types do not use.
    match postcard::to_extend(value, out) {
        Ok(out) => out,
        Err(e) => panic!("postcard cannot encode a depfs type: {e}"),
    }
}

/// Decodes a value written by [`encode_value`].
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, payload) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    if bytes.len() > MAX_VALUE_LEN {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    let (value, rest) = postcard::take_from_bytes(payload)?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::entry::{ChunkHash, ChunkRef, Content, Kind, Meta, Node, Timespec};
    use crate::hlc::Hlc;
    use crate::name::NodeName;
    use crate::version::{Dot, State, Version};
    use crate::vv::VersionVector;

    fn sample() -> Version {
        let node = NodeName::new("gw1").unwrap();
        let mut ctx = VersionVector::new();
        ctx.raise(&node, 7);
        Version {
            dot: Dot::new(node, 7),
            hlc: Hlc::new(1_700_000_000_000, 3),
            ctx,
            state: State::Live(Node {
                meta: Meta {
                    kind: Kind::File,
                    perm: 0o644,
                    uid: 1000,
                    gid: 1000,
                    mtime: Timespec::new(1_700_000_000, 5),
                    ctime: Timespec::new(1_700_000_000, 6),
                },
                content: Content::Chunked(vec![ChunkRef {
                    hash: ChunkHash::of(b"x"),
                    len: 1,
                }]),
            }),
        }
    }

    #[test]
    fn round_trip() {
        let v = sample();
        let bytes = encode_value(&v);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode_value::<Version>(&bytes).unwrap(), v);
    }

    #[test]
    fn refuses_unknown_versions_and_trailing_bytes() {
        let mut bytes = encode_value(&sample());
        bytes[0] = 9;
        assert!(matches!(
            decode_value::<Version>(&bytes),
            Err(DecodeError::UnknownVersion(9))
        ));
        let mut bytes = encode_value(&sample());
        bytes.push(0);
        assert!(matches!(
            decode_value::<Version>(&bytes),
            Err(DecodeError::Trailing(1))
        ));
        assert!(matches!(
            decode_value::<Version>(&[]),
            Err(DecodeError::Empty)
        ));
    }

    /// Random and mutated input never panics the decoder (a cheap, always-on fuzz).
    #[test]
    fn garbage_never_panics() {
        let seed = 0x5eed_u64;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let good = encode_value(&sample());
        for _ in 0..20_000 {
            let mut bytes = if rng.gen_bool(0.5) {
                good.clone()
            } else {
                (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()
            };
            for _ in 0..rng.gen_range(0..4) {
                if !bytes.is_empty() {
                    let i = rng.gen_range(0..bytes.len());
                    bytes[i] = rng.gen();
                }
            }
            if !bytes.is_empty() && rng.gen_bool(0.2) {
                let cut = rng.gen_range(0..bytes.len());
                bytes.truncate(cut);
            }
            let _ = decode_value::<Version>(&bytes);
        }
    }
}
