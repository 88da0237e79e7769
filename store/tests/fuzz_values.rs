//! The store's own on-disk values (log records; the heads and entries values are proto
//! types, fuzzed in proto/tests/fuzz_decoders.rs): arbitrary and mutated bytes decode
//! to an error or a value, never a panic. Seeded: a failure prints its seed and case.

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
