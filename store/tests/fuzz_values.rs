//! The store's own on-disk values (log records; the heads and entries values are proto
//! types, fuzzed in proto/tests/fuzz_decoders.rs): arbitrary and mutated bytes decode
//! to an error or a value, never a panic. Seeded: a failure prints its seed and case.

use depfs_proto::{decode_value, encode_value, Hlc, RelPath};
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
    })
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
        let result = std::panic::catch_unwind(|| decode_value::<LogRecord>(&bytes));
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
