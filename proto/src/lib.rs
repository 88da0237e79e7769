//! The vocabulary of depfs: everything that is stored on disk or sent between nodes.
//!
//! This crate is pure — no I/O, no clock reads, no threads — so that the same types and
//! rules run unchanged in the store, the replicator and the deterministic simulation.
//!
//! * [`name`]: node names and file names, validated by Linux rules.
//! * [`path`]: relative paths inside a mount and their ordered key encoding.
//! * [`hlc`]: the hybrid logical clock that orders concurrent changes.
//! * [`lead`]: manager terms in one-way mode, and which changes each manager made.
//! * [`vv`]: version vectors (per-path causal contexts and per-node progress).
//! * [`entry`]: what a path holds: kind, attributes and content reference.
//! * [`version`]: one version of one path, as the change log and the merge rules see it.
//! * [`wire`]: changes and the messages of the synchronisation protocol.
//! * [`seal`]: the origin's signature over a change, checkable on any part of it.
//! * [`codec`]: the versioned `postcard` encoding of stored values and bounded frames.
//! * [`limits`]: every size bound in one place.

pub mod codec;
pub mod dot;
pub mod entry;
pub mod hlc;
pub mod lead;
pub mod limits;
pub mod name;
pub mod node_codec;
pub mod path;
pub mod seal;
pub mod version;
pub mod vv;
pub mod wire;

pub use codec::{decode_value, encode_value, DecodeError};
pub use dot::Dot;
pub use entry::{
    ChunkHash, ChunkHashState, ChunkMap, ChunkRef, ChunkSet, Content, Kind, Meta, Node, Timespec,
};
pub use hlc::{ClockDrift, Hlc, HlcClock};
pub use lead::{Authority, Leadership, Term};
pub use name::{FileName, NameError, NodeName};
pub use path::RelPath;
pub use seal::{Digest, Seal, SealError, SignChanges};
pub use version::{Stamp, State, Version};
pub use vv::VersionVector;
pub use wire::{Certificate, Change, ChangeOp, ChunkData, Message};
