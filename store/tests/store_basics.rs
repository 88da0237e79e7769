//! The store on its own: commits, the change log, chunking and reference counting,
//! persistence and the data-directory lock.

#![cfg(test)]

use depfs_proto::{Content, Kind, Node, NodeName, RelPath};
use depfs_store::{ContentReader, Durability, Store, StoreError, StoreOptions};
use depfs_testkit::meta_at;

fn node_name() -> NodeName {
    NodeName::new("gw1").unwrap()
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        &node_name(),
        &StoreOptions::new(meta_at(Kind::Dir, 1_700_000_000)),
    )
    .unwrap()
}

fn p(s: &str) -> RelPath {
    RelPath::parse(s.as_bytes()).unwrap()
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn put_file(store: &Store, path: &str, bytes: &[u8], wall: u64) {
    let (content, _pin) = store.write_content(bytes).unwrap();
    let mut tx = store.transaction();
    tx.put(
        p(path),
        Node {
            meta: meta_at(Kind::File, 1_700_000_000),
            content,
        },
    );
    tx.commit(wall, Durability::Process).unwrap().unwrap();
}

fn read_all(store: &Store, path: &str) -> Vec<u8> {
    let node = store.get(&p(path)).unwrap().unwrap();
    let reader = ContentReader::new(node.content);
    reader.read(store, 0, reader.size() as usize).unwrap()
}

#[test]
fn every_commit_is_logged_with_origin_sequence_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put_file(&store, "a.xml", b"<a/>", 1000);
    put_file(&store, "b.xml", b"<b/>", 1000);
    assert_eq!(store.last_seq(), 2);
    let recent = store.recent_changes(10).unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].0.seq, 2);
    assert_eq!(recent[0].0.node, node_name());
    assert_eq!(recent[0].1.paths, vec![p("b.xml")]);
    assert!(recent[0].1.hlc > recent[1].1.hlc, "HLC times grow");
    let version = store.heads(&p("a.xml")).unwrap().pop().unwrap();
    assert_eq!(version.dot.seq, 1);
    assert_eq!(version.ctx.get(&node_name()), 1);
}

#[test]
fn overwrites_supersede_log_records_so_the_log_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..200 {
        put_file(&store, "same.xml", format!("<v{i}/>").as_bytes(), 1000 + i);
    }
    let stats = store.stats().unwrap();
    assert_eq!(
        stats.log_records, 1,
        "only the current version's change is kept"
    );
    assert_eq!(read_all(&store, "same.xml"), b"<v199/>");
}

#[test]
fn large_content_is_chunked_deduplicated_and_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let big = data(3 << 20, 1);
    put_file(&store, "a.war", &big, 1);
    let chunks_one = store.stats().unwrap().chunks;
    assert!(chunks_one > 20, "3 MiB is many chunks: {chunks_one}");
    // The same content elsewhere adds no chunks.
    put_file(&store, "copy.war", &big, 2);
    assert_eq!(store.stats().unwrap().chunks, chunks_one);
    // A 1 MiB change in the middle adds about 1 MiB of chunks.
    let mut changed = big.clone();
    changed[1 << 20..2 << 20].copy_from_slice(&data(1 << 20, 2));
    put_file(&store, "a.war", &changed, 3);
    let added = store.stats().unwrap().chunks - chunks_one;
    assert!((40..100).contains(&added), "changed chunks: {added}");
    assert_eq!(read_all(&store, "a.war"), changed);
    assert_eq!(read_all(&store, "copy.war"), big);
    // Deleting everything frees every chunk.
    let mut tx = store.transaction();
    tx.delete(p("a.war"));
    tx.delete(p("copy.war"));
    tx.commit(4, Durability::Process).unwrap();
    assert_eq!(store.stats().unwrap().chunks, 0);
}

#[test]
fn pinned_content_stays_readable_after_it_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let old = data(200_000, 3);
    put_file(&store, "f", &old, 1);
    let (node, pin) = store.get_pinned(&p("f")).unwrap().unwrap();
    put_file(&store, "f", &data(200_000, 4), 2);
    let reader = ContentReader::new(node.content);
    assert_eq!(reader.read(&store, 0, old.len()).unwrap(), old);
    drop(pin);
    // The next commit collects the chunks nobody references any more.
    put_file(&store, "other", b"x", 3);
    let live: u64 = store.stats().unwrap().chunks;
    assert!(
        live <= (200_000 / 4096) as u64 + 1,
        "old chunks were collected: {live}"
    );
    assert!(matches!(
        reader.read(&store, 0, 10),
        Err(StoreError::MissingChunk(_))
    ));
}

#[test]
fn a_corrupt_chunk_is_an_error_never_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let node_content = store.write_content(&data(100_000, 5)).unwrap().0;
    let Content::Chunked(chunks) = &node_content else {
        panic!("not chunked")
    };
    // Asking for a chunk under the wrong hash is what corruption looks like to a reader.
    let mut wrong = chunks[0];
    wrong.hash.0[0] ^= 1;
    assert!(matches!(
        store.read_chunk(&wrong.hash),
        Err(StoreError::MissingChunk(_))
    ));
    assert!(store.read_chunk(&chunks[0].hash).is_ok());
}

#[test]
fn a_chunk_reference_that_lies_about_its_length_reads_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (content, _pin) = store.write_content(&data(100_000, 6)).unwrap();
    let Content::Chunked(chunks) = &content else {
        panic!("not chunked")
    };
    for claimed in [chunks[0].len + 20_000, chunks[0].len / 2] {
        let mut lying = chunks.clone();
        lying[0].len = claimed;
        let reader = ContentReader::new(Content::Chunked(lying));
        for offset in [0, 4096, u64::from(claimed) - 1] {
            assert!(
                matches!(
                    reader.read(&store, offset, 4096),
                    Err(StoreError::ChunkLength { .. })
                ),
                "claimed {claimed}, read at {offset}"
            );
        }
    }
    // The honest reference reads in full.
    let honest = ContentReader::new(content.clone());
    assert_eq!(honest.read(&store, 0, 200_000).unwrap(), data(100_000, 6));
}

#[test]
fn the_tree_survives_reopening_and_the_clock_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (digest, last_hlc) = {
        let store = open(dir.path());
        put_file(&store, "a", b"1", 5_000);
        put_file(&store, "b", &data(50_000, 6), 5_000);
        let mut tx = store.transaction();
        tx.put(
            p("d"),
            Node {
                meta: meta_at(Kind::Dir, 1_700_000_000),
                content: Content::empty(),
            },
        );
        tx.commit(5_000, Durability::Machine).unwrap();
        (
            store.tree_digest().unwrap(),
            store.recent_changes(1).unwrap()[0].1.hlc,
        )
    };
    let store = open(dir.path());
    assert_eq!(store.tree_digest().unwrap(), digest);
    assert_eq!(store.last_seq(), 3);
    put_file(&store, "c", b"3", 1_000); // wall clock went backwards
    let hlc = store.recent_changes(1).unwrap()[0].1.hlc;
    assert!(hlc > last_hlc);
}

#[test]
fn one_process_per_data_dir_and_one_node_per_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    match Store::open(
        dir.path(),
        &node_name(),
        &StoreOptions::new(meta_at(Kind::Dir, 1_700_000_000)),
    ) {
        Err(StoreError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("expected InUse, got {other:?}"),
    }
    drop(store);
    let other = NodeName::new("gw2").unwrap();
    match Store::open(
        dir.path(),
        &other,
        &StoreOptions::new(meta_at(Kind::Dir, 1_700_000_000)),
    ) {
        Err(StoreError::WrongNode { stored, .. }) => assert_eq!(stored, "gw1"),
        other => panic!("expected WrongNode, got {other:?}"),
    }
}

#[test]
fn deleting_nothing_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tx = store.transaction();
    tx.delete(p("missing"));
    assert_eq!(tx.commit(1, Durability::Process).unwrap(), None);
    assert_eq!(store.last_seq(), 0);
}

#[test]
fn large_content_is_chunked_by_segment_the_same_way_from_memory_and_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let segment = depfs_store::SEGMENT as usize;
    let bytes = data(2 * segment + 777_777, 9);
    let (from_memory, _pin) = store.write_content(&bytes).unwrap();
    let file_path = dir.path().join("staged");
    std::fs::write(&file_path, &bytes).unwrap();
    let file = std::fs::File::open(&file_path).unwrap();
    let (from_file, _pin2) = store.write_content_from(&file, bytes.len() as u64).unwrap();
    assert_eq!(
        from_memory, from_file,
        "the same bytes give the same chunks"
    );
    // A cut at every segment boundary, whichever thread chunked the segment.
    let mut at = 0u64;
    let mut cuts = std::collections::HashSet::new();
    for chunk in from_memory.chunks() {
        at += u64::from(chunk.len);
        cuts.insert(at);
    }
    assert!(cuts.contains(&(segment as u64)) && cuts.contains(&(2 * segment as u64)));
    assert_eq!(at, bytes.len() as u64);
    let reader = ContentReader::new(from_file);
    assert!(reader.read(&store, 0, bytes.len()).unwrap() == bytes);

    // An overwrite in place changes only the chunks around it.
    let mut changed = bytes.clone();
    changed[segment + 1000..segment + 5000].fill(0xAB);
    let (after, _pin3) = store.write_content(&changed).unwrap();
    let before: std::collections::HashSet<_> = from_memory.chunks().iter().collect();
    let new = after
        .chunks()
        .iter()
        .filter(|c| !before.contains(c))
        .count();
    assert!(new <= 3, "{new} chunks changed for a 4 KiB overwrite");

    // A file shorter on disk than the length asked (extended by set_len) reads zeros.
    let (padded, _pin4) = store
        .write_content_from(&file, bytes.len() as u64 + 100_000)
        .unwrap();
    let all = ContentReader::new(padded)
        .read(&store, 0, bytes.len() + 100_000)
        .unwrap();
    assert!(all[..bytes.len()] == bytes[..] && all[bytes.len()..].iter().all(|&b| b == 0));
}
