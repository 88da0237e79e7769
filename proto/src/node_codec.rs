//! A decoder of stored [`Node`]s that reads chunk lists in bulk.
//!
//! Every `stat`, `lookup` and `open` of a file reads its entry, and a large file's entry is
//! mostly its chunk list: 256 MiB in 16 KiB chunks is 16,384 chunk references, 590 KB.
//! Through serde, postcard reads each 32-byte hash one byte at a time (a hash is a tuple
//! of 32 `u8`s), which is slow (docs/measurements.md). This decoder reads exactly
//! the same bytes — the format is unchanged, [`encode_value`](crate::codec::encode_value)
//! still writes them — copying each hash at once. It accepts exactly what
//! [`decode_value::<Node>`](crate::codec::decode_value) accepts and yields the same
//! value (checked against it on random, mutated and arbitrary input by
//! tests/fuzz_decoders.rs).

use postcard::Error as PostcardError;

use crate::codec::{DecodeError, FORMAT_VERSION};
use crate::entry::{ChunkHash, ChunkRef, Content, Kind, Meta, Node, Timespec};
use crate::limits::MAX_VALUE_LEN;

/// Bytes of one encoded chunk reference at least: the hash and a one-byte length.
const MIN_CHUNK_REF_LEN: usize = 33;

/// Decodes a [`Node`] written by [`encode_value`](crate::codec::encode_value), as
/// [`decode_value`](crate::codec::decode_value) does, faster for chunk lists.
pub fn decode_node(bytes: &[u8]) -> Result<Node, DecodeError> {
    let (&version, payload) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    if bytes.len() > MAX_VALUE_LEN {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    let mut input = Input(payload);
    let node = Node {
        meta: input.meta()?,
        content: input.content()?,
    };
    match input.0.len() {
        0 => Ok(node),
        rest => Err(DecodeError::Trailing(rest)),
    }
}

/// The bytes not read yet.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PostcardError> {
        if self.0.len() < n {
            return Err(PostcardError::DeserializeUnexpectedEnd);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// A postcard varint of at most `max_bytes` bytes whose last byte carries at most
    /// `last_max` (the bits left in the type), as postcard reads them.
    fn varint(&mut self, max_bytes: usize, last_max: u8) -> Result<u64, PostcardError> {
        let mut out = 0u64;
        for i in 0..max_bytes {
            let byte = self.take(1)?[0];
            out |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == max_bytes - 1 && byte > last_max {
                    return Err(PostcardError::DeserializeBadVarint);
                }
                return Ok(out);
            }
        }
        Err(PostcardError::DeserializeBadVarint)
    }

    fn u32(&mut self) -> Result<u32, PostcardError> {
        // 5 bytes: 4 × 7 bits, then 4 bits.
        Ok(self.varint(5, 0x0f)? as u32)
    }

    fn u64(&mut self) -> Result<u64, PostcardError> {
        // 10 bytes: 9 × 7 bits, then 1 bit.
        self.varint(10, 0x01)
    }

    fn i64(&mut self) -> Result<i64, PostcardError> {
        let zigzag = self.u64()?;
        Ok((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
    }

    fn usize(&mut self) -> Result<usize, PostcardError> {
        usize::try_from(self.u64()?).map_err(|_| PostcardError::DeserializeBadVarint)
    }

    fn timespec(&mut self) -> Result<Timespec, PostcardError> {
        Ok(Timespec {
            secs: self.i64()?,
            nanos: self.u32()?,
        })
    }

    fn meta(&mut self) -> Result<Meta, PostcardError> {
        let kind = match self.u32()? {
            0 => Kind::File,
            1 => Kind::Dir,
            2 => Kind::Symlink,
            _ => return Err(PostcardError::DeserializeBadEnum),
        };
        Ok(Meta {
            kind,
            perm: self.u32()?,
            uid: self.u32()?,
            gid: self.u32()?,
            mtime: self.timespec()?,
            ctime: self.timespec()?,
        })
    }

    fn content(&mut self) -> Result<Content, PostcardError> {
        match self.u32()? {
            0 => {
                let len = self.usize()?;
                Ok(Content::Inline(self.take(len)?.to_vec()))
            }
            1 => {
                let count = self.usize()?;
                // Never trust the count for the allocation: at most what the input holds.
                let mut chunks = Vec::with_capacity(count.min(self.0.len() / MIN_CHUNK_REF_LEN));
                for _ in 0..count {
                    let mut hash = [0u8; 32];
                    hash.copy_from_slice(self.take(32)?);
                    chunks.push(ChunkRef {
                        hash: ChunkHash(hash),
                        len: self.u32()?,
                    });
                }
                Ok(Content::Chunked(chunks))
            }
            _ => Err(PostcardError::DeserializeBadEnum),
        }
    }
}

#[cfg(test)]
mod tests {
    // The differential tests against `decode_value` (valid, mutated and arbitrary input)
    // are in tests/fuzz_decoders.rs, with the crate's other decoders.
    use super::*;
    use crate::codec::decode_value;

    #[test]
    fn overlong_varints_are_refused_like_postcard() {
        // perm as a 5-byte varint whose last byte carries more than u32's 4 bits.
        let mut bytes = vec![FORMAT_VERSION, 0x00, 0xff, 0xff, 0xff, 0xff, 0x1f];
        bytes.extend_from_slice(&[0; 16]);
        assert!(decode_value::<Node>(&bytes).is_err());
        assert!(decode_node(&bytes).is_err());
    }
}
