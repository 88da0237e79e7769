//! Bounded, seeded fuzzing of every decoder of network and on-disk data in `depfs-proto`.
//!
//! # What it covers
//!
//! * **Arbitrary bytes** (`arbitrary_bytes_never_panic`): empty input, every first
//!   (format-version) byte, random payloads up to 64 KiB and payloads whose length
//!   prefixes claim gigabytes are fed to `decode_value::<T>` for every stored or sent type
//!   (`Message`, `Change`, `ChangeOp`, `ChunkData`, `Version`, `Vec<Version>`, `State`,
//!   `Node`, `Meta`, `Content`, `ChunkRef`, `ChunkHash`, `Timespec`, `Kind`, `Dot`,
//!   `VersionVector`, `Leadership`, `Term`, `Hlc`, `RelPath`, `NodeName`), and to
//!   `RelPath::parse`, `RelPath::from_key`, `FileName::new`, `check_file_name` and
//!   `NodeName::new`. No decoder may panic, and each one's peak heap use (measured by a
//!   counting global allocator, per thread) must stay within [`alloc_bound`] of the input
//!   size. A value that decodes must re-encode to at most as many bytes and decode again
//!   to itself.
//! * **Round trips** (`round_trip_*`): generated valid names, paths, clocks, version
//!   vectors, entries (inline content up to `INLINE_MAX`, chunk lists), versions, changes,
//!   leadership histories and every `Message` variant satisfy
//!   `decode_value(&encode_value(&v)) == v`; every strict prefix and every extension by one
//!   byte of a valid encoding is refused.
//! * **Mutation** (`mutated_encodings_never_panic`): valid encodings with flipped, set,
//!   inserted, deleted, duplicated or truncated bytes, and inserted huge or overlong
//!   varints, go through the same checks as arbitrary bytes.
//! * **Name validation** (`invalid_*_are_refused_by_the_decoder`): a path or node name that
//!   Linux or depfs refuses (`/` or NUL inside, `.`/`..`, empty component, a component over
//!   255 bytes, a path over 4095 bytes, a bad node name) inside a `Change` or `Message` makes
//!   the *decoder itself* refuse the whole value. `checks_left_to_later_stages_pass_decoding`
//!   pins down what the decoder does *not* check (left to `Leadership::validate` and the
//!   store's change validation).
//!
//! Message framing (a 4-byte length, checked against `MAX_FRAME_LEN`, then the body) lives
//! in `depfs-replicator` (`frame.rs`); the body is decoded by `decode_value::<Message>`,
//! which is covered here.
//!
//! # Running
//!
//! The default run (as in CI) is 256 cases per property with the fixed seed [`SEED`]
//! (proptest's own default is a new random seed per run), so it is the same on every push
//! and takes a few seconds:
//!
//! ```text
//! cargo test -p depfs-proto --test fuzz_decoders
//! ```
//!
//! A longer fuzz run, and one with another seed (proptest's own environment variables
//! override the configuration below):
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test -p depfs-proto --test fuzz_decoders --release
//! PROPTEST_RNG_SEED=12345 PROPTEST_CASES=100000 \
//!     cargo test -p depfs-proto --test fuzz_decoders --release
//! ```
//!
//! # Reproducing a failure
//!
//! A failing property panics with `Test failed: <reason>` and the shrunk `minimal failing
//! input`. The run is deterministic: the same command (same `PROPTEST_CASES` and
//! `PROPTEST_RNG_SEED`, if they were set) fails the same way again. Raw inputs are printed as
//! `Bytes(len N, hex "...")`; to replay one alone, pass the hex string to the `replay`
//! test:
//!
//! ```text
//! DEPFS_FUZZ_HEX=01ff00 \
//!     cargo test -p depfs-proto --test fuzz_decoders replay -- --nocapture
//! ```

#![cfg(test)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use depfs_proto::codec::FORMAT_VERSION;
use depfs_proto::lead::{Term, MAX_TERMS};
use depfs_proto::limits::{
    INLINE_MAX, MAX_NAME_LEN, MAX_NODE_NAME_LEN, MAX_PATH_LEN, MAX_SYMLINK_LEN, MAX_VALUE_LEN,
};
use depfs_proto::name::check_file_name;
use depfs_proto::node_codec::decode_node;
use depfs_proto::{
    decode_value, encode_value, Certificate, Change, ChangeOp, ChunkData, ChunkHash, ChunkRef,
    Content, DecodeError, Digest, Dot, FileName, Hlc, Kind, Leadership, Message, Meta, Node,
    NodeName, RelPath, Seal, State, Timespec, Version, VersionVector,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::RngSeed;
use serde::de::DeserializeOwned;
use serde::Serialize;

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// The fixed RNG seed of the default run (`PROPTEST_RNG_SEED` overrides it).
const SEED: u64 = 0xdeb5_f5f0_22ed_0001;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 256;

/// Largest raw input the fuzzers generate.
const MAX_INPUT: usize = 64 * 1024;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        rng_seed: RngSeed::Fixed(SEED),
        // No regression files: the fixed seed already makes every failure reproducible.
        failure_persistence: None,
        // A failure on a 64 KiB input must not shrink for minutes in CI.
        max_shrink_time: 30_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Allocation accounting: a global allocator that counts the live bytes of each thread, so
// the peak heap use of one decode can be measured while other tests run in parallel.
// ---------------------------------------------------------------------------------------

struct CountingAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Count the moment both blocks may exist, as a copying realloc does.
            track(new_size as isize);
            track(-(layout.size() as isize));
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result and the peak number of heap bytes it had live at once
/// on this thread (including the result itself).
fn peak_heap<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, (peak - start).max(0) as usize)
}

/// serde preallocates at most 1 MiB for a sequence whose announced length it cannot trust
/// (`serde::__private::size_hint::cautious`), and the deepest nesting of sequences in a
/// depfs value is three (`Message::Changes` → `Change::ops` → `Content::Chunked`).
const PREALLOC_SLACK: usize = 4 << 20;

/// Heap bytes per input byte a decode may use beyond [`PREALLOC_SLACK`]. The worst case
/// measured (`memory_amplification_is_bounded`, about 71x) is a list of values that each
/// hold a one-entry version vector: 4 encoded bytes become a `BTreeMap` leaf node of
/// several hundred bytes.
const MAX_AMPLIFICATION: usize = 128;

/// The most heap a decode of `len` bytes may use.
fn alloc_bound(len: usize) -> usize {
    PREALLOC_SLACK + MAX_AMPLIFICATION * len
}

// ---------------------------------------------------------------------------------------
// Checking decoders
// ---------------------------------------------------------------------------------------

/// Raw input, printed as hex so a failure can be replayed with `DEPFS_FUZZ_HEX`.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes(len {}, hex \"{}\")", self.0.len(), hex(&self.0))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    s.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("0"), 16).unwrap_or(0))
        .collect()
}

/// Decodes `bytes` as `T` with the heap bound checked; a value that decodes is checked with
/// `check`, must re-encode to no more bytes than it came from, and must decode again to
/// itself.
fn check_decoder<T>(bytes: &[u8], check: impl Fn(&T))
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let name = std::any::type_name::<T>();
    let (result, peak) = peak_heap(|| decode_value::<T>(bytes));
    assert!(
        peak <= alloc_bound(bytes.len()),
        "decoding {} input bytes as {name} used {peak} heap bytes (bound {})",
        bytes.len(),
        alloc_bound(bytes.len())
    );
    match result {
        Err(e) => check_error(bytes, &e),
        Ok(value) => {
            check(&value);
            let again = encode_value(&value);
            assert!(
                again.len() <= bytes.len(),
                "{name} re-encodes to {} bytes from {}",
                again.len(),
                bytes.len()
            );
            match decode_value::<T>(&again) {
                Ok(v) => assert_eq!(v, value, "{name} changes when re-encoded"),
                Err(e) => panic!(
                    "{name} decoded from {bytes:02x?} does not decode after re-encoding: {e}"
                ),
            }
        }
    }
}

/// The error is the one the first bytes call for.
fn check_error(bytes: &[u8], e: &DecodeError) {
    match bytes.first() {
        None => assert!(matches!(e, DecodeError::Empty), "{e}"),
        Some(&v) if v != FORMAT_VERSION => {
            assert!(
                matches!(e, DecodeError::UnknownVersion(x) if *x == v),
                "{e}"
            )
        }
        Some(_) if bytes.len() > MAX_VALUE_LEN => {
            assert!(
                matches!(e, DecodeError::TooLong(n) if *n == bytes.len()),
                "{e}"
            )
        }
        Some(_) => assert!(
            matches!(e, DecodeError::Malformed(_) | DecodeError::Trailing(_)),
            "{e}"
        ),
    }
}

/// `node_codec::decode_node`, the store's fast reader of entries, accepts exactly what
/// `decode_value::<Node>` accepts, and yields the same node.
fn check_node_codec(bytes: &[u8]) {
    match (decode_value::<Node>(bytes), decode_node(bytes)) {
        (Ok(serde), Ok(fast)) => assert_eq!(serde, fast, "input {}", hex(bytes)),
        (Err(_), Err(_)) => {}
        (serde, fast) => panic!(
            "serde {serde:?} but node_codec {fast:?} for input {}",
            hex(bytes)
        ),
    }
}

/// Every decoder of the crate on the same input.
fn decode_all(bytes: &[u8]) {
    check_decoder::<Message>(bytes, check_message);
    check_decoder::<Change>(bytes, check_change);
    check_decoder::<ChangeOp>(bytes, check_op);
    check_decoder::<ChunkData>(bytes, |c| {
        let _ = c.hash.verifies(&c.data);
    });
    check_decoder::<Version>(bytes, check_version);
    check_decoder::<Vec<Version>>(bytes, |vs| vs.iter().for_each(check_version));
    check_decoder::<State>(bytes, check_state);
    check_decoder::<Node>(bytes, check_node);
    check_node_codec(bytes);
    check_decoder::<Meta>(bytes, |_| {});
    check_decoder::<Content>(bytes, |c| {
        let _ = (c.size(), c.chunks().len(), c.is_inline());
    });
    check_decoder::<ChunkRef>(bytes, |_| {});
    check_decoder::<ChunkHash>(bytes, |_| {});
    check_decoder::<Timespec>(bytes, |_| {});
    check_decoder::<Kind>(bytes, |_| {});
    check_decoder::<Dot>(bytes, check_dot);
    check_decoder::<VersionVector>(bytes, check_vv);
    check_decoder::<Leadership>(bytes, check_leadership);
    check_decoder::<Term>(bytes, |t| {
        check_node_name(&t.manager);
        check_vv(&t.start);
    });
    check_decoder::<Hlc>(bytes, |_| {});
    check_decoder::<RelPath>(bytes, check_path);
    check_decoder::<NodeName>(bytes, check_node_name);
    check_raw_parsers(bytes);
}

/// The validating constructors on raw bytes, against a plain statement of the rules.
fn check_raw_parsers(bytes: &[u8]) {
    match RelPath::parse(bytes) {
        Ok(p) => {
            assert!(
                is_valid_path(bytes),
                "parse accepted {:?}",
                Bytes(bytes.to_vec())
            );
            assert_eq!(p.as_bytes(), bytes);
            check_path(&p);
        }
        Err(_) => assert!(
            !is_valid_path(bytes),
            "parse refused {:?}",
            Bytes(bytes.to_vec())
        ),
    }
    if let Ok(p) = RelPath::from_key(bytes) {
        assert_eq!(
            p.key(),
            bytes,
            "from_key accepts a key that is not canonical"
        );
        check_path(&p);
    }
    assert_eq!(FileName::new(bytes).is_ok(), is_valid_file_name(bytes));
    assert_eq!(check_file_name(bytes).is_ok(), is_valid_file_name(bytes));
    if let Ok(s) = std::str::from_utf8(bytes) {
        assert_eq!(NodeName::new(s).is_ok(), is_valid_node_name(s.as_bytes()));
    }
}

fn is_valid_file_name(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b != b"."
        && b != b".."
        && !b.contains(&b'/')
        && !b.contains(&0)
}

fn is_valid_path(b: &[u8]) -> bool {
    b.is_empty() || (b.len() <= MAX_PATH_LEN && b.split(|&c| c == b'/').all(is_valid_file_name))
}

fn is_valid_node_name(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= MAX_NODE_NAME_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

// The checks below re-validate every name and path in a decoded value (so an invalid one
// can never come out of the decoder) and call the methods the replicator and the store use
// on received values, which must not panic on hostile contents either.

fn check_node_name(n: &NodeName) {
    assert!(
        is_valid_node_name(n.as_str().as_bytes()),
        "decoded node name {n:?}"
    );
    assert_eq!(NodeName::new(n.as_str()).as_ref(), Ok(n));
}

fn check_path(p: &RelPath) {
    assert!(is_valid_path(p.as_bytes()), "decoded path {p:?}");
    assert_eq!(RelPath::parse(p.as_bytes()).as_ref(), Ok(p));
    assert_eq!(RelPath::from_key(&p.key()).as_ref(), Ok(p));
    let _ = (p.name(), p.depth(), p.children_prefix(), p.to_string());
    assert_eq!(p.ancestors().count(), p.depth());
}

fn check_dot(d: &Dot) {
    check_node_name(&d.node);
    let _ = d.to_string();
}

fn check_vv(vv: &VersionVector) {
    for (node, _) in vv.iter() {
        check_node_name(node);
    }
    let mut merged = vv.clone();
    merged.merge(vv);
    assert!(merged.dominates(vv) && vv.dominates(&merged));
    let _ = vv.is_empty();
}

fn check_node(n: &Node) {
    let _ = (n.size(), n.same_as(n), n.content.is_inline());
}

fn check_state(s: &State) {
    if let State::Live(n) = s {
        check_node(n);
    }
}

fn check_version(v: &Version) {
    check_dot(&v.dot);
    check_vv(&v.ctx);
    check_state(&v.state);
    let _ = (v.stamp(), v.descends_from(v), v.node());
}

fn check_op(op: &ChangeOp) {
    check_path(&op.path);
    check_vv(&op.ctx);
    check_state(&op.state);
}

fn check_change(c: &Change) {
    check_dot(&c.dot);
    for op in &c.ops {
        check_op(op);
        check_version(&c.version(op));
    }
    // Whatever a peer sent, checking its seal answers (it is refused later if it lies).
    let _ = c.sealed_digest();
}

fn check_leadership(l: &Leadership) {
    for t in l.terms() {
        check_node_name(&t.manager);
        check_vv(&t.start);
    }
    let _ = (l.is_empty(), l.term(), l.manager(), l.supersedes(l));
    if l.validate().is_ok() {
        for t in l.terms() {
            for seq in [0, 1, t.start.get(&t.manager), u64::MAX] {
                let _ = l.authority(&Dot::new(t.manager.clone(), seq));
            }
            let _ = l.cut_off_ranges(&t.manager);
        }
    }
}

fn check_message(m: &Message) {
    match m {
        Message::Hello {
            node,
            vv,
            lead,
            certificates: _,
        } => {
            check_node_name(node);
            check_vv(vv);
            check_leadership(lead);
        }
        Message::Changes {
            base,
            changes,
            upto,
            ..
        } => {
            check_vv(base);
            changes.iter().for_each(check_change);
            if let Some(upto) = upto {
                check_vv(upto);
            }
        }
        Message::Ack { vv } | Message::Progress { vv } => check_vv(vv),
        Message::GetChunks { .. } => {}
        Message::Chunks { chunks, .. } => {
            for c in chunks {
                let _ = c.hash.verifies(&c.data);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Strategies for valid values
// ---------------------------------------------------------------------------------------

/// Cheap pseudo-random bytes (SplitMix64): large contents without generating and shrinking
/// thousands of separate bytes.
fn filled(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Bytes of up to `max` in length; small ones byte by byte (they shrink well), large ones
/// from a seed.
fn bytes_upto(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..=max.min(32)),
        1 => (any::<u64>(), 0..=max).prop_map(|(seed, len)| filled(seed, len)),
    ]
}

fn node_name() -> impl Strategy<Value = NodeName> {
    prop_oneof![
        // A small alphabet, so that vectors and leaderships share nodes.
        3 => "[a-c][0-2]?",
        1 => "[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}",
    ]
    .prop_map(|s| NodeName::new(&s).expect("generated node names are valid"))
}

/// Valid file names: mostly short, sometimes any bytes up to the limit.
fn file_name_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z0-9._ -]{1,12}".prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 1..=MAX_NAME_LEN).prop_map(|mut name| {
            for b in &mut name {
                if *b == 0 || *b == b'/' {
                    *b = b'_';
                }
            }
            name
        }),
    ]
    .prop_map(|name| {
        if name == b"." || name == b".." {
            b"dot".to_vec()
        } else {
            name
        }
    })
}

fn file_name() -> impl Strategy<Value = FileName> {
    file_name_bytes().prop_map(|n| FileName::new(&n).expect("generated file names are valid"))
}

/// Valid paths, from the root to near `MAX_PATH_LEN`.
fn rel_path() -> impl Strategy<Value = RelPath> {
    vec(file_name_bytes(), 0..24).prop_map(|names| {
        let mut path = RelPath::root();
        for name in names {
            match path.join(&name) {
                Ok(longer) => path = longer,
                Err(_) => break,
            }
        }
        path
    })
}

fn hlc() -> impl Strategy<Value = Hlc> {
    (any::<u64>(), any::<u32>()).prop_map(|(ms, l)| Hlc::new(ms, l))
}

fn vv() -> impl Strategy<Value = VersionVector> {
    vec((node_name(), any::<u64>()), 0..6).prop_map(|entries| {
        let mut vv = VersionVector::new();
        for (node, seq) in entries {
            vv.raise(&node, seq);
        }
        vv
    })
}

fn dot() -> impl Strategy<Value = Dot> {
    (node_name(), any::<u64>()).prop_map(|(n, s)| Dot::new(n, s))
}

fn chunk_hash() -> impl Strategy<Value = ChunkHash> {
    any::<[u8; 32]>().prop_map(ChunkHash)
}

fn chunk_ref() -> impl Strategy<Value = ChunkRef> {
    (chunk_hash(), any::<u32>()).prop_map(|(hash, len)| ChunkRef { hash, len })
}

fn timespec() -> impl Strategy<Value = Timespec> {
    (any::<i64>(), any::<u32>()).prop_map(|(secs, nanos)| Timespec::new(secs, nanos))
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::File), Just(Kind::Dir), Just(Kind::Symlink)]
}

fn meta() -> impl Strategy<Value = Meta> {
    (
        kind(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        timespec(),
        timespec(),
    )
        .prop_map(|(kind, perm, uid, gid, mtime, ctime)| Meta {
            kind,
            perm,
            uid,
            gid,
            mtime,
            ctime,
        })
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        bytes_upto(INLINE_MAX).prop_map(Content::Inline),
        vec(chunk_ref(), 0..5).prop_map(Content::Chunked),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    (meta(), content()).prop_map(|(meta, content)| Node { meta, content })
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        3 => node().prop_map(State::Live),
        1 => Just(State::Deleted),
    ]
}

fn version() -> impl Strategy<Value = Version> {
    (dot(), hlc(), vv(), state()).prop_map(|(dot, hlc, ctx, state)| Version {
        dot,
        hlc,
        ctx,
        state,
    })
}

fn change_op() -> impl Strategy<Value = ChangeOp> {
    (rel_path(), vv(), state()).prop_map(|(path, ctx, state)| ChangeOp { path, ctx, state })
}

fn change() -> impl Strategy<Value = Change> {
    (dot(), hlc(), vec(change_op(), 0..4), seal()).prop_map(|(dot, hlc, ops, seal)| Change {
        dot,
        hlc,
        ops,
        seal,
    })
}

fn seal() -> impl Strategy<Value = Seal> {
    (vec(any::<[u8; 32]>(), 0..3), bytes_upto(80)).prop_map(|(ops, signature)| Seal {
        ops: ops.into_iter().map(Digest).collect(),
        signature,
    })
}

fn certificates() -> impl Strategy<Value = Vec<Certificate>> {
    vec(bytes_upto(64).prop_map(Certificate), 0..2)
}

/// Valid histories: a first term and a few promotions.
fn leadership() -> impl Strategy<Value = Leadership> {
    vec((node_name(), vv()), 0..5).prop_map(|terms| {
        let mut lead = Leadership::default();
        for (node, start) in terms {
            lead = if lead.is_empty() {
                Leadership::first(node, start)
            } else {
                lead.promote(node, start)
            };
        }
        lead
    })
}

fn chunk_data() -> impl Strategy<Value = ChunkData> {
    (bytes_upto(4096), any::<bool>(), chunk_hash()).prop_map(|(data, honest, other)| ChunkData {
        hash: if honest { ChunkHash::of(&data) } else { other },
        data,
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (node_name(), vv(), leadership(), certificates()).prop_map(
            |(node, vv, lead, certificates)| Message::Hello {
                node,
                vv,
                lead,
                certificates,
            }
        ),
        (
            any::<u64>(),
            any::<u32>(),
            any::<bool>(),
            vv(),
            certificates(),
            vec(change(), 0..4),
            proptest::option::of(vv()),
        )
            .prop_map(|(batch, part, last, base, certificates, changes, upto)| {
                Message::Changes {
                    batch,
                    part,
                    last,
                    base,
                    certificates,
                    changes,
                    upto,
                }
            }),
        vv().prop_map(|vv| Message::Ack { vv }),
        vv().prop_map(|vv| Message::Progress { vv }),
        vec(chunk_hash(), 0..8).prop_map(|hashes| Message::GetChunks { hashes }),
        (vec(chunk_data(), 0..4), vec(chunk_hash(), 0..4))
            .prop_map(|(chunks, missing)| Message::Chunks { chunks, missing }),
    ]
}

/// The encoding of a valid value of any decodable type.
fn valid_encoding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => message().prop_map(|v| encode_value(&v)),
        2 => change().prop_map(|v| encode_value(&v)),
        2 => version().prop_map(|v| encode_value(&v)),
        1 => vec(version(), 0..4).prop_map(|v| encode_value(&v)),
        1 => node().prop_map(|v| encode_value(&v)),
        1 => leadership().prop_map(|v| encode_value(&v)),
        1 => vv().prop_map(|v| encode_value(&v)),
        1 => dot().prop_map(|v| encode_value(&v)),
        1 => hlc().prop_map(|v| encode_value(&v)),
        1 => rel_path().prop_map(|v| encode_value(&v)),
        1 => chunk_data().prop_map(|v| encode_value(&v)),
    ]
}

// ---------------------------------------------------------------------------------------
// Strategies for hostile input
// ---------------------------------------------------------------------------------------

/// postcard's varint.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Lengths no input of at most 64 KiB can back: they claim megabytes to exabytes.
fn huge_len() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(1 << 32),
        Just(u64::from(u32::MAX)),
        Just(1 << 31),
        Just(MAX_VALUE_LEN as u64),
        Just(MAX_VALUE_LEN as u64 + 1),
        (MAX_INPUT as u64)..u64::MAX,
    ]
}

fn fuzz_input() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        // Anything, with any first byte (mostly not the format version).
        3 => vec(any::<u8>(), 0..64),
        // The current version, then random payload.
        3 => vec(any::<u8>(), 0..256).prop_map(|tail| [&[FORMAT_VERSION][..], &tail].concat()),
        // The current version, a small tag or field, a huge length, and a little more.
        3 => (vec(0u8..8, 0..4), huge_len(), vec(any::<u8>(), 0..64)).prop_map(
            |(head, len, tail)| [&[FORMAT_VERSION][..], &head, &varint(len), &tail].concat()
        ),
        // Large random payloads, up to 64 KiB.
        1 => (any::<u64>(), 0..MAX_INPUT).prop_map(|(seed, len)| {
            let mut bytes = filled(seed, len);
            if let Some(first) = bytes.first_mut() {
                *first = FORMAT_VERSION;
            }
            bytes
        }),
        // Long runs of one byte: 0x01 is "one more element" at every level of nesting,
        // 0xff an endless varint.
        1 => (any::<u8>(), 0..MAX_INPUT).prop_map(|(b, len)| {
            let mut bytes = vec![b; len];
            if let Some(first) = bytes.first_mut() {
                *first = FORMAT_VERSION;
            }
            bytes
        }),
    ]
    .prop_map(Bytes)
}

/// One change to an encoding.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    InsertByte(Index, u8),
    DeleteByte(Index),
    Truncate(Index),
    /// A varint claiming a huge length, inserted before or over the byte at the index.
    HugeVarint(Index, u64, bool),
    /// Ten 0xff bytes: a varint longer than any valid one.
    OverlongVarint(Index),
    /// A copy of the bytes between two indices, inserted at the second.
    Duplicate(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = any::<Index>;
    prop_oneof![
        3 => (i(), 0u8..8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        3 => (i(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        2 => (i(), any::<u8>()).prop_map(|(i, b)| Mutation::InsertByte(i, b)),
        2 => i().prop_map(Mutation::DeleteByte),
        1 => i().prop_map(Mutation::Truncate),
        2 => (i(), huge_len(), any::<bool>())
            .prop_map(|(i, v, over)| Mutation::HugeVarint(i, v, over)),
        1 => i().prop_map(Mutation::OverlongVarint),
        1 => (i(), i()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

/// Inserts the varint `v` at `pos`, or writes it over the byte there if `over`.
fn splice_varint(bytes: &mut Vec<u8>, pos: usize, v: u64, over: bool) {
    let end = if over && pos < bytes.len() {
        pos + 1
    } else {
        pos
    };
    bytes.splice(pos..end, varint(v));
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    // An index into the bytes, or `len` itself (the end) where an insertion allows it.
    let at = |i: &Index| if len == 0 { 0 } else { i.index(len) };
    match m {
        Mutation::FlipBit(i, bit) if len > 0 => bytes[at(i)] ^= 1 << bit,
        Mutation::SetByte(i, b) if len > 0 => bytes[at(i)] = *b,
        Mutation::InsertByte(i, b) => bytes.insert(i.index(len + 1), *b),
        Mutation::DeleteByte(i) if len > 0 => {
            bytes.remove(at(i));
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
        Mutation::HugeVarint(i, v, over) => splice_varint(bytes, i.index(len + 1), *v, *over),
        Mutation::OverlongVarint(i) => {
            let pos = i.index(len + 1);
            bytes.splice(pos..pos, [0xff; 10]);
        }
        Mutation::Duplicate(a, b) if len > 0 => {
            let (a, b) = (at(a), at(b));
            let (from, to) = (a.min(b), a.max(b));
            let copy = bytes[from..to].to_vec();
            bytes.splice(to..to, copy);
        }
        _ => {}
    }
    bytes.truncate(MAX_INPUT);
}

// ---------------------------------------------------------------------------------------
// Mirror types: encode like the real ones (postcard is not self-describing: same field
// order and variant order give the same bytes) but take unvalidated names and paths, to
// build exactly the hostile input a peer could send.
// ---------------------------------------------------------------------------------------

mod raw {
    use serde::Serialize;
    use serde_bytes::ByteBuf;

    pub type Name = ByteBuf;

    #[derive(Serialize)]
    pub struct Dot {
        pub node: Name,
        pub seq: u64,
    }

    /// A map on the wire: length, then key-value pairs, in any order, duplicates allowed.
    #[derive(Serialize, Default)]
    pub struct Vv(pub Vec<(Name, u64)>);

    #[derive(Serialize)]
    pub struct ChangeOp {
        pub path: ByteBuf,
        pub ctx: Vv,
        pub state: depfs_proto::State,
    }

    #[derive(Serialize)]
    pub struct Change {
        pub dot: Dot,
        pub hlc: depfs_proto::Hlc,
        pub ops: Vec<ChangeOp>,
        pub seal: depfs_proto::Seal,
    }

    #[derive(Serialize)]
    pub struct Term {
        pub number: u64,
        pub manager: Name,
        pub start: Vv,
        pub signature: ByteBuf,
    }

    #[derive(Serialize, Default)]
    pub struct Leadership {
        pub terms: Vec<Term>,
    }

    /// The first two variants of `depfs_proto::Message`, in the same order.
    #[derive(Serialize)]
    pub enum Message {
        Hello {
            node: Name,
            vv: Vv,
            lead: Leadership,
            certificates: Vec<ByteBuf>,
        },
        Changes {
            batch: u64,
            part: u32,
            last: bool,
            base: Vv,
            certificates: Vec<ByteBuf>,
            changes: Vec<Change>,
            upto: Option<Vv>,
        },
    }

    pub fn name(s: &[u8]) -> Name {
        ByteBuf::from(s.to_vec())
    }
}

fn raw_name(n: &NodeName) -> raw::Name {
    raw::name(n.as_str().as_bytes())
}

fn raw_vv(vv: &VersionVector) -> raw::Vv {
    raw::Vv(vv.iter().map(|(n, s)| (raw_name(n), s)).collect())
}

fn raw_dot(d: &Dot) -> raw::Dot {
    raw::Dot {
        node: raw_name(&d.node),
        seq: d.seq,
    }
}

fn raw_op(op: &ChangeOp) -> raw::ChangeOp {
    raw::ChangeOp {
        path: serde_bytes::ByteBuf::from(op.path.as_bytes().to_vec()),
        ctx: raw_vv(&op.ctx),
        state: op.state.clone(),
    }
}

fn raw_change(c: &Change) -> raw::Change {
    raw::Change {
        dot: raw_dot(&c.dot),
        hlc: c.hlc,
        ops: c.ops.iter().map(raw_op).collect(),
        seal: c.seal.clone(),
    }
}

fn raw_leadership(l: &Leadership) -> raw::Leadership {
    raw::Leadership {
        terms: l
            .terms()
            .iter()
            .map(|t| raw::Term {
                number: t.number,
                manager: raw_name(&t.manager),
                start: raw_vv(&t.start),
                signature: serde_bytes::ByteBuf::from(t.signature.clone()),
            })
            .collect(),
    }
}

fn raw_changes_message(changes: Vec<raw::Change>) -> raw::Message {
    raw::Message::Changes {
        batch: 1,
        part: 0,
        last: true,
        base: raw::Vv::default(),
        certificates: Vec::new(),
        changes,
        upto: None,
    }
}

/// Path bytes that are not a valid `RelPath`, each with a valid path around the bad part.
fn invalid_path() -> impl Strategy<Value = Vec<u8>> {
    let join = |parts: &[&[u8]]| parts.join(&b'/');
    (rel_path(), file_name_bytes(), 0usize..9, any::<Index>()).prop_map(
        move |(base, name, how, at)| {
            let base = base.as_bytes().to_vec();
            let mut bad_name = name.clone();
            match how {
                0 => [b"/", &base[..]].concat(),   // leading slash
                1 => join(&[&base, &name, b""]),   // trailing slash
                2 => join(&[&base, b"", &name]),   // empty component
                3 => join(&[&base, b".", &name]),  // "."
                4 => join(&[&base, b"..", &name]), // ".."
                5 => {
                    // NUL inside a component
                    bad_name.insert(at.index(bad_name.len() + 1), 0);
                    join(&[&base, &bad_name])
                }
                6 => join(&[&base, &[b'x'; MAX_NAME_LEN + 1]]), // component too long
                7 => {
                    // valid components, path too long
                    let mut path = base;
                    while path.len() <= MAX_PATH_LEN {
                        path = join(&[&path, &[b'y'; 200]]);
                    }
                    path
                }
                _ => vec![b'/'], // just a slash
            }
        },
    )
}

/// Node names depfs refuses.
fn invalid_node_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        Just(b"gw/1".to_vec()),
        Just(b"gw\x001".to_vec()),
        Just(b"../etc".to_vec()),
        Just(vec![b'a'; MAX_NODE_NAME_LEN + 1]),
        Just(vec![0xff, 0xfe]), // not UTF-8
        Just("gw\u{e9}".as_bytes().to_vec()),
        "[-._][a-z0-9]{0,8}".prop_map(String::into_bytes), // bad first character
        "[a-z][a-z0-9]{0,4}[ /:@\\\\][a-z0-9]{0,4}".prop_map(String::into_bytes), // bad byte
    ]
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

/// Encodes, decodes, and checks that no strict prefix and no extension decodes.
fn assert_round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let bytes = encode_value(value);
    prop_assert_eq!(bytes[0], FORMAT_VERSION);
    let back: T = decode_value(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, value);
    // Every cut for short encodings, 64 cuts spread over long ones.
    let step = (bytes.len() / 64).max(1);
    for cut in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
        prop_assert!(
            decode_value::<T>(&bytes[..cut]).is_err(),
            "a {}-byte prefix of a {}-byte encoding decodes",
            cut,
            bytes.len()
        );
    }
    for extra in [0u8, 1, 0xff] {
        let longer = [&bytes[..], &[extra]].concat();
        prop_assert!(matches!(
            decode_value::<T>(&longer),
            Err(DecodeError::Trailing(1))
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(input in fuzz_input()) {
        decode_all(&input.0);
    }

    #[test]
    fn mutated_encodings_never_panic(
        bytes in valid_encoding(),
        mutations in vec(mutation(), 1..8),
    ) {
        let mut bytes = bytes;
        // Check after every step: the first mutations often leave a value that still
        // decodes, later ones rarely do.
        for m in &mutations {
            mutate(&mut bytes, m);
            decode_all(&bytes);
        }
    }

    #[test]
    fn name_and_path_parsers_follow_the_rules(
        s in prop_oneof![
            "[a-zA-Z0-9._ /-]{0,80}",
            "\\PC{0,80}",
            "[a-z./]{0,300}",
            // Around the name and path length limits.
            "[a-z]{250,260}",
            "([a-z]{240,255}/){15,16}[a-z]{1,255}",
        ],
        raw_bytes in vec(prop_oneof![Just(0u8), Just(b'/'), Just(b'.'), any::<u8>()], 0..300),
    ) {
        check_raw_parsers(s.as_bytes());
        check_raw_parsers(&raw_bytes);
        // A node name decodes exactly when the constructor accepts it.
        let encoded = encode_value(&s);
        prop_assert_eq!(
            decode_value::<NodeName>(&encoded).is_ok(),
            NodeName::new(&s).is_ok()
        );
        // A path decodes exactly when `parse` accepts it.
        let encoded = encode_value(&serde_bytes::ByteBuf::from(raw_bytes.clone()));
        prop_assert_eq!(
            decode_value::<RelPath>(&encoded).is_ok(),
            RelPath::parse(&raw_bytes).is_ok()
        );
    }

    #[test]
    fn round_trip_names_paths_and_keys(
        node in node_name(),
        name in file_name(),
        path in rel_path(),
    ) {
        assert_round_trip(&node)?;
        prop_assert_eq!(NodeName::new(node.as_str()), Ok(node.clone()));
        prop_assert_eq!(FileName::new(name.as_bytes()), Ok(name.clone()));
        assert_round_trip(&path)?;
        prop_assert_eq!(RelPath::parse(path.as_bytes()), Ok(path.clone()));
        prop_assert_eq!(RelPath::from_key(&path.key()), Ok(path.clone()));
        if let Ok(child) = path.join(name.as_bytes()) {
            prop_assert_eq!(child.parent(), Some(path.clone()));
            prop_assert_eq!(child.name(), name.as_bytes());
            prop_assert!(child.key().starts_with(&path.children_prefix()));
            prop_assert_eq!(RelPath::from_key(&child.key()), Ok(child.clone()));
        }
    }

    #[test]
    fn the_node_codec_reads_what_encode_value_writes(
        n in node(),
        chunks in vec(chunk_ref(), 0..200),
    ) {
        prop_assert_eq!(decode_node(&encode_value(&n)).ok(), Some(n.clone()));
        // Chunk lists longer than `node()` makes.
        let long = Node { content: Content::Chunked(chunks), ..n };
        prop_assert_eq!(decode_node(&encode_value(&long)).ok(), Some(long));
    }

    #[test]
    fn round_trip_clocks_dots_and_vectors(h in hlc(), d in dot(), v in vv(), t in timespec()) {
        assert_round_trip(&h)?;
        assert_round_trip(&d)?;
        assert_round_trip(&v)?;
        assert_round_trip(&t)?;
    }

    #[test]
    fn round_trip_nodes_and_versions(n in node(), v in version(), vs in vec(version(), 0..4)) {
        assert_round_trip(&n)?;
        assert_round_trip(&n.content)?;
        assert_round_trip(&n.meta)?;
        assert_round_trip(&v)?;
        assert_round_trip(&v.state)?;
        assert_round_trip(&vs)?;
    }

    #[test]
    fn round_trip_changes_and_leadership(c in change(), l in leadership()) {
        assert_round_trip(&c)?;
        for op in &c.ops {
            assert_round_trip(op)?;
        }
        assert_round_trip(&l)?;
        prop_assert!(l.validate().is_ok());
        for t in l.terms() {
            assert_round_trip(t)?;
        }
    }

    #[test]
    fn round_trip_messages(m in message()) {
        assert_round_trip(&m)?;
        if let Message::Chunks { chunks, .. } = &m {
            for c in chunks {
                assert_round_trip(c)?;
            }
        }
    }

    /// The mirror types encode exactly like the real ones, so the hostile inputs built
    /// with them below are what a peer could send.
    #[test]
    fn mirror_types_encode_like_the_real_ones(
        c in change(),
        l in leadership(),
        node in node_name(),
        v in vv(),
    ) {
        prop_assert_eq!(encode_value(&raw_change(&c)), encode_value(&c));
        prop_assert_eq!(encode_value(&raw_leadership(&l)), encode_value(&l));
        let hello = Message::Hello {
            node: node.clone(),
            vv: v.clone(),
            lead: l.clone(),
            certificates: Vec::new(),
        };
        let raw_hello = raw::Message::Hello {
            node: raw_name(&node),
            vv: raw_vv(&v),
            lead: raw_leadership(&l),
            certificates: Vec::new(),
        };
        prop_assert_eq!(encode_value(&raw_hello), encode_value(&hello));
        let changes = Message::Changes {
            batch: 1,
            part: 0,
            last: true,
            base: VersionVector::new(),
            certificates: Vec::new(),
            changes: vec![c.clone()],
            upto: None,
        };
        prop_assert_eq!(
            encode_value(&raw_changes_message(vec![raw_change(&c)])),
            encode_value(&changes)
        );
    }

    /// A change (alone or in a `Changes` message) with one invalid path anywhere is
    /// refused by `decode_value` itself: no invalid path reaches the store. The same
    /// change with a valid path there decodes.
    #[test]
    fn invalid_paths_are_refused_by_the_decoder(
        c in change(),
        op in change_op(),
        bad in invalid_path(),
        at in any::<Index>(),
    ) {
        prop_assert!(RelPath::parse(&bad).is_err(), "{:?}", Bytes(bad.clone()));
        let (change, message) = with_path(&c, &op, at, &bad);
        prop_assert!(matches!(change, Err(DecodeError::Malformed(_))), "{:?}", change);
        prop_assert!(matches!(message, Err(DecodeError::Malformed(_))), "{:?}", message);
        let (change, message) = with_path(&c, &op, at, op.path.as_bytes());
        prop_assert!(change.is_ok() && message.is_ok());
    }

    /// An invalid node name as a change's origin, in a version vector, as a `Hello`'s
    /// sender or as a term's manager is refused by `decode_value` itself. The same value
    /// with a valid name there decodes.
    #[test]
    fn invalid_node_names_are_refused_by_the_decoder(
        c in change(),
        l in leadership(),
        v in vv(),
        bad in invalid_node_name(),
        place in 0usize..6,
        at in any::<Index>(),
    ) {
        prop_assert!(
            std::str::from_utf8(&bad).map_or(true, |s| NodeName::new(s).is_err()),
            "{:?}",
            Bytes(bad.clone())
        );
        let (part, message) = with_node_name(&c, &l, &v, place, at, &bad);
        prop_assert!(
            part.as_ref().is_none_or(|r| matches!(r, Err(DecodeError::Malformed(_)))),
            "{:?}",
            part
        );
        prop_assert!(matches!(message, Err(DecodeError::Malformed(_))), "{:?}", message);
        let (part, message) = with_node_name(&c, &l, &v, place, at, b"gw-9.x_y");
        prop_assert!(part.is_none_or(|r| r.is_ok()) && message.is_ok());
    }
}

/// Decodes `c` with an op of path `path` inserted at `at`, alone and in a message.
fn with_path(
    c: &Change,
    op: &ChangeOp,
    at: Index,
    path: &[u8],
) -> (Result<Change, DecodeError>, Result<Message, DecodeError>) {
    let mut raw = raw_change(c);
    let mut op = raw_op(op);
    op.path = serde_bytes::ByteBuf::from(path.to_vec());
    raw.ops.insert(at.index(raw.ops.len() + 1), op);
    (
        decode_value::<Change>(&encode_value(&raw)),
        decode_value::<Message>(&encode_value(&raw_changes_message(vec![raw]))),
    )
}

/// Puts the node name `name` at one of six places: a change's origin (0), a change's
/// context (1), a `Hello`'s vector (2), a `Hello`'s sender (3), a term's manager (4) or a
/// term's start vector (5). Returns the decoding of the part that holds it (none for the
/// sender) and of the whole message.
fn with_node_name(
    c: &Change,
    l: &Leadership,
    v: &VersionVector,
    place: usize,
    at: Index,
    name: &[u8],
) -> (
    Option<Result<(), DecodeError>>,
    Result<Message, DecodeError>,
) {
    let name = raw::name(name);
    let mut change = raw_change(c);
    let mut lead = raw_leadership(l);
    let mut vv = raw_vv(v);
    let mut node = raw::name(b"gw1");
    let next_term = lead.terms.len() as u64 + 1;
    match place {
        0 => change.dot.node = name,
        1 => change.ops.push(raw::ChangeOp {
            path: serde_bytes::ByteBuf::new(),
            ctx: raw::Vv(vec![(name, 1)]),
            state: State::Deleted,
        }),
        2 => {
            // A new entry: the vector's other entries are distinct valid names.
            let i = at.index(vv.0.len() + 1);
            vv.0.retain(|(n, _)| n.as_slice() != name.as_slice());
            vv.0.insert(i.min(vv.0.len()), (name, 1));
        }
        3 => node = name,
        4 => lead.terms.push(raw::Term {
            number: next_term,
            manager: name,
            start: raw::Vv::default(),
            signature: serde_bytes::ByteBuf::new(),
        }),
        _ => lead.terms.push(raw::Term {
            number: next_term,
            manager: raw::name(b"m"),
            start: raw::Vv(vec![(name, 7)]),
            signature: serde_bytes::ByteBuf::new(),
        }),
    }
    match place {
        0 | 1 => (
            Some(decode_value::<Change>(&encode_value(&change)).map(drop)),
            decode_value(&encode_value(&raw_changes_message(vec![change]))),
        ),
        2 => (
            Some(decode_value::<VersionVector>(&encode_value(&vv)).map(drop)),
            decode_value(&encode_value(&raw::Message::Hello {
                node,
                vv,
                lead,
                certificates: Vec::new(),
            })),
        ),
        3 => (
            None,
            decode_value(&encode_value(&raw::Message::Hello {
                node,
                vv,
                lead,
                certificates: Vec::new(),
            })),
        ),
        _ => (
            Some(decode_value::<Leadership>(&encode_value(&lead)).map(drop)),
            decode_value(&encode_value(&raw::Message::Hello {
                node,
                vv,
                lead,
                certificates: Vec::new(),
            })),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic cases
// ---------------------------------------------------------------------------------------

fn n(s: &str) -> NodeName {
    NodeName::new(s).expect("valid test node name")
}

fn p(s: &str) -> RelPath {
    RelPath::parse(s.as_bytes()).expect("valid test path")
}

fn sample_change() -> Change {
    let mut ctx = VersionVector::new();
    ctx.raise(&n("gw1"), 3);
    Change {
        dot: Dot::new(n("gw1"), 3),
        hlc: Hlc::new(1_700_000_000_000, 1),
        ops: vec![ChangeOp {
            path: p("a/b"),
            ctx,
            state: State::Live(Node {
                meta: Meta {
                    kind: Kind::File,
                    perm: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime: Timespec::new(1, 2),
                    ctime: Timespec::new(3, 4),
                },
                content: Content::Inline(b"hello".to_vec()),
            }),
        }],
        seal: Seal::default(),
    }
}

/// Replays one raw input printed by a failing property (`DEPFS_FUZZ_HEX`); without it,
/// replays the empty input.
#[test]
fn replay() {
    let hex = std::env::var("DEPFS_FUZZ_HEX").unwrap_or_default();
    let bytes = unhex(&hex);
    println!("replaying {} bytes", bytes.len());
    decode_all(&bytes);
}

#[test]
fn empty_and_every_version_byte() {
    decode_all(&[]);
    let good = encode_value(&Message::Changes {
        batch: 1,
        part: 0,
        last: true,
        base: VersionVector::new(),
        certificates: Vec::new(),
        changes: vec![sample_change()],
        upto: None,
    });
    for version in 0..=u8::MAX {
        for payload in [&[][..], &good[1..], &[0xff; 16][..]] {
            let bytes = [&[version][..], payload].concat();
            decode_all(&bytes);
            if version != FORMAT_VERSION {
                assert!(matches!(
                    decode_value::<Message>(&bytes),
                    Err(DecodeError::UnknownVersion(v)) if v == version
                ));
            }
        }
    }
}

#[test]
fn values_over_the_size_limit_are_refused_before_parsing() {
    let mut bytes = vec![0u8; MAX_VALUE_LEN + 1];
    bytes[0] = FORMAT_VERSION;
    let (result, peak) = peak_heap(|| decode_value::<Message>(&bytes));
    assert!(matches!(result, Err(DecodeError::TooLong(n)) if n == MAX_VALUE_LEN + 1));
    assert!(
        peak < 4096,
        "refusing an oversized value allocated {peak} bytes"
    );
}

/// Every length field of a real message, replaced by or preceded by a length that claims
/// gigabytes, is refused without allocating more than the bound.
#[test]
fn huge_length_prefixes_at_every_offset() {
    let messages = [
        Message::Changes {
            batch: 7,
            part: 1,
            last: false,
            base: sample_change().ops[0].ctx.clone(),
            certificates: vec![Certificate(vec![1, 2, 3])],
            changes: vec![sample_change(), sample_change()],
            upto: Some(VersionVector::new()),
        },
        Message::Hello {
            node: n("gw1"),
            vv: sample_change().ops[0].ctx.clone(),
            lead: Leadership::first(n("m"), VersionVector::new())
                .promote(n("w"), VersionVector::new()),
            certificates: vec![Certificate(vec![4, 5])],
        },
        Message::Chunks {
            chunks: vec![ChunkData {
                hash: ChunkHash::of(b"abc"),
                data: b"abc".to_vec(),
            }],
            missing: vec![ChunkHash([7; 32])],
        },
    ];
    for msg in &messages {
        let good = encode_value(msg);
        for pos in 1..=good.len() {
            for len in [u64::MAX, 1 << 32, u64::from(u32::MAX), 1 << 31, 1 << 24] {
                for over in [false, true] {
                    let mut bytes = good.clone();
                    splice_varint(&mut bytes, pos, len, over);
                    decode_all(&bytes);
                }
            }
        }
    }
}

/// What is decoded, its encoding, and a decoder that says whether it decoded.
type AmplificationCase = (&'static str, Vec<u8>, fn(&[u8]) -> bool);

/// The heap use of the worst inputs found, per input byte: values whose encoding is tiny
/// but whose in-memory form is not. Prints the factors (`--nocapture`).
#[test]
fn memory_amplification_is_bounded() {
    let count = 4000;
    let one_entry = |i: usize| {
        let mut vv = VersionVector::new();
        vv.raise(&n(&format!("n{}", i % 10)), 1);
        vv
    };
    let cases: Vec<AmplificationCase> = vec![
        (
            "Changes of ops with one-entry contexts",
            encode_value(&Message::Changes {
                batch: 0,
                part: 0,
                last: false,
                base: VersionVector::new(),
                certificates: Vec::new(),
                changes: vec![Change {
                    seal: Seal::default(),
                    dot: Dot::new(n("a"), 1),
                    hlc: Hlc::ZERO,
                    ops: (0..count)
                        .map(|i| ChangeOp {
                            path: RelPath::root(),
                            ctx: one_entry(i),
                            state: State::Deleted,
                        })
                        .collect(),
                }],
                upto: None,
            }),
            |b| decode_value::<Message>(b).is_ok(),
        ),
        (
            "Changes of empty changes",
            encode_value(&Message::Changes {
                batch: 0,
                part: 0,
                last: false,
                base: VersionVector::new(),
                certificates: Vec::new(),
                changes: (0..count)
                    .map(|_| Change {
                        dot: Dot::new(n("a"), 1),
                        hlc: Hlc::ZERO,
                        ops: vec![],
                        seal: Seal::default(),
                    })
                    .collect(),
                upto: None,
            }),
            |b| decode_value::<Message>(b).is_ok(),
        ),
        (
            "Leadership of terms with one-entry starts",
            encode_value(&raw::Leadership {
                terms: (0..count)
                    .map(|i| raw::Term {
                        number: 1,
                        manager: raw::name(b"m"),
                        start: raw::Vv(vec![(raw::name(format!("n{}", i % 10).as_bytes()), 1)]),
                        signature: serde_bytes::ByteBuf::new(),
                    })
                    .collect(),
            }),
            |b| decode_value::<Leadership>(b).is_ok(),
        ),
        (
            "versions of deleted paths",
            encode_value(
                &(0..count)
                    .map(|_| Version {
                        dot: Dot::new(n("a"), 1),
                        hlc: Hlc::ZERO,
                        ctx: VersionVector::new(),
                        state: State::Deleted,
                    })
                    .collect::<Vec<_>>(),
            ),
            |b| decode_value::<Vec<Version>>(b).is_ok(),
        ),
    ];
    for (what, bytes, decode) in cases {
        let (ok, peak) = peak_heap(|| decode(&bytes));
        assert!(ok, "{what}");
        let factor = peak as f64 / bytes.len() as f64;
        println!(
            "{what}: {} bytes decode into a peak of {peak} heap bytes ({factor:.1}x)",
            bytes.len()
        );
        assert!(
            peak <= MAX_AMPLIFICATION * bytes.len(),
            "{what}: {factor:.1}x exceeds {MAX_AMPLIFICATION}x"
        );
    }
}

/// What `decode_value` does *not* check, pinned down so that a change is noticed: each of
/// these decodes, and it is up to a later stage to refuse it (named in each case).
#[test]
fn checks_left_to_later_stages_pass_decoding() {
    // Leadership histories: term count and numbering are checked by
    // `Leadership::validate`, which the replicator calls on every claimed history.
    let many_terms = raw::Leadership {
        terms: (1..=MAX_TERMS as u64 + 1)
            .map(|number| raw::Term {
                number,
                manager: raw::name(b"m"),
                start: raw::Vv::default(),
                signature: serde_bytes::ByteBuf::new(),
            })
            .collect(),
    };
    let l = decode_value::<Leadership>(&encode_value(&many_terms)).expect("decodes");
    assert!(l.validate().is_err());
    let misnumbered = raw::Leadership {
        terms: vec![raw::Term {
            number: u64::MAX,
            manager: raw::name(b"m"),
            start: raw::Vv::default(),
            signature: serde_bytes::ByteBuf::new(),
        }],
    };
    let l = decode_value::<Leadership>(&encode_value(&misnumbered)).expect("decodes");
    assert!(l.validate().is_err());
    assert_eq!(l.term(), u64::MAX);

    // Version vectors: entries out of order, repeated (the last one wins) or zero are
    // accepted, so the encoding is not canonical; a zero entry makes the vector unequal to
    // the empty one although it covers the same.
    let vv = |entries: Vec<(&[u8], u64)>| {
        decode_value::<VersionVector>(&encode_value(&raw::Vv(
            entries
                .into_iter()
                .map(|(k, v)| (raw::name(k), v))
                .collect(),
        )))
        .expect("decodes")
    };
    let mut ab = VersionVector::new();
    ab.raise(&n("a"), 1);
    ab.raise(&n("b"), 2);
    assert_eq!(vv(vec![(b"b", 2), (b"a", 1)]), ab);
    assert_eq!(vv(vec![(b"a", 9), (b"b", 2), (b"a", 1)]), ab);
    let zero = vv(vec![(b"a", 0)]);
    assert!(zero.is_empty() && zero != VersionVector::new());

    // Changes: sequence number 0, a context that does not cover the change's own dot, the
    // same path twice, a deleted root, a non-directory root, contents over their limits
    // and chunk lengths of 0 are refused by the store's validation of received changes
    // (`store/src/remote.rs`, `validate`), not by the decoder.
    let node = |kind, content| {
        State::Live(Node {
            meta: Meta {
                kind,
                perm: 0,
                uid: 0,
                gid: 0,
                mtime: Timespec::default(),
                ctime: Timespec::default(),
            },
            content,
        })
    };
    let odd_states = [
        (
            p("a"),
            node(Kind::File, Content::Inline(vec![0; INLINE_MAX + 1])),
        ),
        (
            p("a"),
            node(
                Kind::Symlink,
                Content::Inline(vec![b'x'; MAX_SYMLINK_LEN + 1]),
            ),
        ),
        (
            p("a"),
            node(Kind::Symlink, Content::Inline(b"a\0b".to_vec())),
        ),
        (p("a"), node(Kind::Symlink, Content::Inline(Vec::new()))),
        (p("a"), node(Kind::Dir, Content::Inline(b"x".to_vec()))),
        (
            p("a"),
            node(
                Kind::Dir,
                Content::Chunked(vec![ChunkRef {
                    hash: ChunkHash([0; 32]),
                    len: 0,
                }]),
            ),
        ),
        (RelPath::root(), State::Deleted),
        (RelPath::root(), node(Kind::File, Content::empty())),
    ];
    for (path, state) in odd_states {
        let change = Change {
            seal: Seal::default(),
            dot: Dot::new(n("gw1"), 0),
            hlc: Hlc::ZERO,
            ops: vec![
                ChangeOp {
                    path: path.clone(),
                    ctx: VersionVector::new(),
                    state: state.clone(),
                },
                ChangeOp {
                    path,
                    ctx: VersionVector::new(),
                    state,
                },
            ],
        };
        assert_eq!(
            decode_value::<Change>(&encode_value(&change)).ok(),
            Some(change)
        );
    }

    // Timestamps: `Timespec` documents nanoseconds in 0..1e9 and `Timespec::new` normalises
    // them, but a decoded one is taken as it is. Nothing downstream normalises it either
    // (see the report: `fs/src/ops.rs` `time()` panics for secs near i64::MAX).
    let raw_ts = postcard::to_allocvec(&(i64::MAX, u32::MAX)).expect("encodes");
    let ts = decode_value::<Timespec>(&[&[FORMAT_VERSION][..], &raw_ts].concat()).expect("decodes");
    assert_eq!((ts.secs, ts.nanos), (i64::MAX, u32::MAX));
    assert_ne!(ts, Timespec::new(ts.secs, ts.nanos));

    // Chunks: the hash of a sent chunk is checked by the receiver (`ChunkHash::verifies`).
    let lie = ChunkData {
        hash: ChunkHash([1; 32]),
        data: b"not that".to_vec(),
    };
    let back = decode_value::<ChunkData>(&encode_value(&lie)).expect("decodes");
    assert!(!back.hash.verifies(&back.data));

    // Paths and node names, in contrast, are validated by the decoder itself (see the
    // `invalid_*_are_refused_by_the_decoder` properties).
    assert!(matches!(
        decode_value::<RelPath>(&encode_value(&serde_bytes::ByteBuf::from(b"../x".to_vec()))),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode_value::<NodeName>(&encode_value(&"../x")),
        Err(DecodeError::Malformed(_))
    ));
}

/// postcard accepts overlong varints, so two byte strings can mean the same value. This is
/// harmless (the value re-encodes shorter, and nothing compares encodings), but it means
/// encodings must not be used as identities (hashes, dedup keys).
#[test]
fn overlong_varints_are_accepted() {
    assert_eq!(encode_value(&Hlc::new(1, 2)), vec![FORMAT_VERSION, 1, 2]);
    let overlong = vec![FORMAT_VERSION, 0x81, 0x80, 0x00, 2];
    assert_eq!(decode_value::<Hlc>(&overlong).ok(), Some(Hlc::new(1, 2)));
    decode_all(&overlong);
}

#[test]
fn node_name_map_keys_decode_in_any_order() {
    // Guards the mirror used above: a BTreeMap and a list of pairs share one encoding.
    let mut map = BTreeMap::new();
    map.insert("a".to_string(), 1u64);
    assert_eq!(
        postcard::to_allocvec(&map).expect("encodes"),
        postcard::to_allocvec(&vec![("a".to_string(), 1u64)]).expect("encodes")
    );
}
