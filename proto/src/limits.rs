//! Size bounds. Every length that comes from outside (a syscall, the network, the disk) is
//! checked against one of these before it is trusted.

/// Longest file name in bytes (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// Longest relative path in bytes (Linux `PATH_MAX`, including the terminating NUL there).
pub const MAX_PATH_LEN: usize = 4095;

/// Longest node name in bytes. Node names appear in keys, certificates and logs.
pub const MAX_NODE_NAME_LEN: usize = 63;

/// Files up to this size are stored inline in their entry instead of as chunks: small
/// files (most WSO2 artifacts) then cost one key and travel with their change.
pub const INLINE_MAX: usize = 16 * 1024;

/// Content-defined chunking parameters (FastCDC): minimum, average and maximum chunk size.
/// Small chunks keep the bytes re-sent for a local change close to the change itself.
pub const CHUNK_MIN: u32 = 4 * 1024;
/// Average chunk size, see [`CHUNK_MIN`].
pub const CHUNK_AVG: u32 = 16 * 1024;
/// Maximum chunk size, see [`CHUNK_MIN`].
pub const CHUNK_MAX: u32 = 64 * 1024;

/// Largest file depfs accepts (1 TiB): bounds the chunk list of one entry.
pub const MAX_FILE_SIZE: u64 = 1 << 40;

/// Largest encoded stored value or network frame. A chunk list of a 1 TiB file at the
/// minimum chunk size would exceed this, which is why [`MAX_FILE_SIZE`] is checked first
/// and average chunks are much larger than the minimum.
pub const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;

/// Longest symlink target in bytes (Linux `PATH_MAX` minus the NUL).
pub const MAX_SYMLINK_LEN: usize = 4095;

/// Largest message frame on the network. `Changes` and `Chunks` messages are built well
/// below it (a few MiB); anything larger is refused before it is read.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Most members a cluster may have: the most nodes a version vector names. Bounds every
/// progress claim a peer sends (a gateway cluster has a handful of nodes).
pub const MAX_MEMBERS: usize = 1024;

/// Longest change signature accepted (an ECDSA P-384 signature in DER is at most 104
/// bytes, Ed25519 64, RSA-4096 512).
pub const MAX_SIGNATURE_LEN: usize = 512;
