//! `depfs-bench seal`: what signing costs per change — the origin's seal at commit and
//! every receiver's check — with a real node key from a fresh cluster CA, through the
//! same code the daemon runs (`depfs_proto::seal`, `depfs_replicator::members`).

use std::time::{Instant, SystemTime};

use anyhow::{anyhow, Result};
use depfs_proto::{
    Change, ChangeOp, Content, Dot, Hlc, Kind, Meta, Node, NodeName, RelPath, Seal, State,
    Timespec, VersionVector,
};
use depfs_replicator::members::Members;
use depfs_replicator::{pki, tls};

/// A change of `ops` 4 KiB files, as a deploy of a small API writes them.
fn change(node: &NodeName, seq: u64, ops: usize) -> Result<(Dot, Hlc, Vec<ChangeOp>)> {
    let dot = Dot::new(node.clone(), seq);
    let mut ctx = VersionVector::new();
    ctx.raise(node, seq);
    let ops = (0..ops)
        .map(|i| {
            let path = RelPath::parse(format!("api/{seq}/file{i}.xml").as_bytes())
                .map_err(|e| anyhow!("{e}"))?;
            Ok(ChangeOp {
                path,
                ctx: ctx.clone(),
                state: State::Live(Node {
                    meta: Meta {
                        kind: Kind::File,
                        perm: 0o644,
                        uid: 0,
                        gid: 0,
                        mtime: Timespec::new(1_765_000_000, 0),
                        ctime: Timespec::new(1_765_000_000, 0),
                    },
                    content: Content::Inline(vec![b'x'; 4096]),
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((dot, Hlc::new(1_765_000_000_000, 0), ops))
}

/// Prints a Markdown table: microseconds per change to seal and to verify, for changes
/// of 1 and of `multi` versions.
pub fn run(changes: usize, multi: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca");
    pki::init_ca(&ca)?;
    let node = NodeName::new("gw1").map_err(|e| anyhow!("{e}"))?;
    let (cert, key) = pki::issue_node(
        &ca,
        &node,
        &dir.path().join("certs"),
        SystemTime::now(),
        pki::NODE_VALID_DAYS,
        None,
    )?;
    let identity = tls::Identity::load(&ca.join("ca.pem"), &cert, &key, &node)?;
    let mut members = Members::new(identity.ca.clone(), identity.revoked.clone());
    members.learn(&identity.certificate)?;

    println!("| versions per change | seal (digests + sign), µs | verify, µs | seal bytes |");
    println!("|---|---|---|---|");
    for ops in [1, multi] {
        let inputs = (1..=changes as u64)
            .map(|seq| change(&node, seq, ops))
            .collect::<Result<Vec<_>>>()?;
        let start = Instant::now();
        let sealed: Vec<Change> = inputs
            .into_iter()
            .map(|(dot, hlc, ops)| {
                let seal = Seal::of_ops(&dot, hlc, &ops, identity.signer.as_ref());
                Change {
                    dot,
                    hlc,
                    ops,
                    seal,
                }
            })
            .collect();
        let seal_us = start.elapsed().as_secs_f64() * 1e6 / changes as f64;
        let start = Instant::now();
        for c in &sealed {
            members.verify(c)?;
        }
        let verify_us = start.elapsed().as_secs_f64() * 1e6 / changes as f64;
        let bytes = sealed
            .first()
            .map(|c| c.seal.signature.len() + 32 * c.seal.ops.len())
            .unwrap_or(0);
        println!("| {ops} | {seal_us:.1} | {verify_us:.1} | {bytes} |");
    }
    Ok(())
}
