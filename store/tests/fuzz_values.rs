//! The store's own on-disk values (log records; the heads and entries values are proto
//! types, fuzzed in proto/tests/fuzz_decoders.rs): arbitrary and mutated bytes decode
//! to an error or a value, never a panic. Seeded: a failure prints its seed and case.

#![cfg(test)]

use depfs_proto::{decode_value, encode_value, Digest, Hlc, RelPath, Seal};
use depfs_store::log::LogRecord;
use rand::{Rng, SeedableRng};

const CASES: usize = 20_000;

fn valid() -> Vec<u8> {
    encode_value(&LogRecord {
        hlc: Hlc::new(1_764_000_000_000, 3),
        paths: vec![
            RelPath::parse(b"synapse-configs/default/api/a.xml").unwrap(),
            RelPath::parse(b"webapps").unwrap(),
        ],
        live: 2,
        seal: Seal {
            ops: vec![Digest([1; 32]), Digest([2; 32])],
            signature: vec![7; 72],
        },
    })
}

/// A record as stores written before changes were signed hold it: it still reads, as
/// unsigned (its node signs it again when it gets its key).
#[test]
fn a_record_written_before_seals_reads_as_unsigned() {
    #[derive(serde::Serialize)]
    struct Unsealed {
        hlc: Hlc,
        paths: Vec<RelPath>,
        live: u32,
    }
    let old = encode_value(&Unsealed {
        hlc: Hlc::new(5, 0),
        paths: vec![RelPath::parse(b"a.xml").unwrap()],
        live: 1,
    });
    let record = LogRecord::decode(&old).unwrap();
    assert_eq!(record.live, 1);
    assert!(!record.seal.is_signed());
    let new = LogRecord::decode(&valid()).unwrap();
    assert!(new.seal.is_signed());
}

#[test]
fn log_records_never_panic_on_arbitrary_or_mutated_bytes() {
    let seed = 0x10c_0001;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let good = valid();
    assert!(decode_value::<LogRecord>(&good).is_ok());
    for case in 0..CASES {
        let bytes: Vec<u8> = if case % 2 == 0 {
            let len = rng.gen_range(0..256);
            (0..len).map(|_| rng.gen()).collect()
        } else {
            let mut b = good.clone();
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..b.len());
                match rng.gen_range(0..4) {
                    0 => b[at] = rng.gen(),
                    1 => b.insert(at, rng.gen()),
                    2 => {
                        b.remove(at);
                        if b.is_empty() {
                            b.push(0);
                        }
                    }
                    _ => b.truncate(at.max(1)),
                }
            }
            b
        };
        let result = std::panic::catch_unwind(|| LogRecord::decode(&bytes));
        match result {
            Ok(Ok(record)) => {
                // Whatever decodes re-encodes.
                let _ = encode_value(&record);
            }
            Ok(Err(_)) => {}
            Err(_) => panic!("panic decoding case {case} (seed {seed:#x}): {bytes:02x?}"),
        }
    }
}

/// The content reader against chunk references that lie about their lengths (as a
/// hostile peer's change could carry): random lists of stored chunks, each reference
/// honest or claiming another length, read at random ranges. A range that touches a
/// lying reference is an error; any other range returns exactly the bytes the honest
/// references place there — never a panic, never short or shifted data.
#[test]
fn the_content_reader_never_returns_what_a_lying_chunk_reference_implies() {
    use depfs_proto::{Content, Kind, Meta, NodeName, Timespec};
    use depfs_store::{ContentReader, Store, StoreError, StoreOptions};
    let seed: u64 = std::env::var("DEPFS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xc0_7e27);
    println!("seed {seed} (DEPFS_FUZZ_SEED)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let root = Meta {
        kind: Kind::Dir,
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: Timespec::new(1, 0),
        ctime: Timespec::new(1, 0),
    };
    let store = Store::open(
        dir.path(),
        &NodeName::new("gw1").unwrap(),
        &StoreOptions::new(root),
    )
    .unwrap();
    let bytes: Vec<u8> = (0..400_000).map(|_| rng.gen()).collect();
    let (content, _pin) = store.write_content(&bytes).unwrap();
    let Content::Chunked(stored) = content else {
        panic!("not chunked")
    };
    assert!(stored.len() >= 4, "{} chunks", stored.len());
    let real: Vec<Vec<u8>> = stored
        .iter()
        .map(|c| store.read_chunk(&c.hash).unwrap())
        .collect();
    for case in 0..2_000 {
        let n = rng.gen_range(1..=6);
        let mut refs = Vec::new();
        let mut model = Vec::new();
        let mut lying_spans = Vec::new();
        for _ in 0..n {
            let i = rng.gen_range(0..stored.len());
            let mut r = stored[i];
            if rng.gen_range(0..4) == 0 {
                let claimed = rng.gen_range(1..=65_536u32);
                if claimed != r.len {
                    r.len = claimed;
                    lying_spans.push((model.len() as u64, model.len() as u64 + u64::from(claimed)));
                }
            }
            if u64::from(r.len) == real[i].len() as u64 {
                model.extend_from_slice(&real[i]);
            } else {
                model.extend(std::iter::repeat_n(0xEE, r.len as usize));
            }
            refs.push(r);
        }
        let reader = ContentReader::new(Content::Chunked(refs));
        let size = model.len() as u64;
        let offset = rng.gen_range(0..=size + 10);
        let len = rng.gen_range(0..=100_000usize);
        let end = size.min(offset.saturating_add(len as u64));
        let touches_lie = offset < end
            && lying_spans
                .iter()
                .any(|&(from, to)| from < end && offset < to);
        let got = reader.read(&store, offset, len);
        match got {
            Err(StoreError::ChunkLength { .. }) if touches_lie => {}
            Ok(data) if !touches_lie => {
                let want = model
                    .get(offset.min(size) as usize..end.max(offset.min(size)) as usize)
                    .unwrap_or_default();
                assert!(data == want, "case {case} (seed {seed}): wrong bytes at {offset}+{len}");
            }
            other => panic!(
                "case {case} (seed {seed}): range {offset}+{len} touching a lie: {touches_lie}, got {:?}",
                other.map(|d| d.len())
            ),
        }
    }
}
