//! Replication benchmarks on loopback: two depfs nodes (a third listed but not needed)
//! with mutual TLS, measuring from the writer's `close` to complete content on the
//! reader.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

struct Node {
    mountpoint: PathBuf,
    config: PathBuf,
}

/// Bytes node `n` has sent to its peers (from `depfs status --json`).
fn bytes_sent(depfs: &Path, n: &Node) -> Result<u64> {
    let out = Command::new(depfs)
        .args(["status", "--json", "--config"])
        .arg(&n.config)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "bytes_sent": N, for each peer.
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"bytes_sent\": "))
        .filter_map(|v| v.trim_end_matches(',').parse::<u64>().ok())
        .sum())
}

fn free_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Two mounted nodes in `base`; unmounted when the returned guard drops.
fn cluster(depfs: &Path, base: &Path) -> Result<(Vec<Node>, super::Mounts)> {
    let mut configs = Vec::new();
    let ca = base.join("ca");
    let certs = base.join("certs");
    run_ok(Command::new(depfs).args(["ca", "init", "--out"]).arg(&ca))?;
    let ports = [free_port()?, free_port()?];
    let mut nodes = Vec::new();
    let mut mounts = super::Mounts(Vec::new());
    for i in 0..2 {
        let name = format!("gw{}", i + 1);
        run_ok(
            Command::new(depfs)
                .args(["ca", "issue", "--ca"])
                .arg(&ca)
                .args(["--node", &name, "--out"])
                .arg(&certs),
        )?;
        let mountpoint = base.join(format!("mnt{}", i + 1));
        fs::create_dir(&mountpoint)?;
        let config = base.join(format!("{name}.toml"));
        fs::write(
            &config,
            format!(
                "node = \"{name}\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\npeers = [\"127.0.0.1:{}\"]\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                base.join(format!("data{}", i + 1)).display(),
                ports[i],
                ports[1 - i],
                ca.join("ca.pem").display(),
                certs.join(format!("{name}.pem")).display(),
                certs.join(format!("{name}.key")).display(),
            ),
        )?;
        run_ok(
            Command::new(depfs)
                .arg("mount")
                .arg(&config)
                .arg(&mountpoint),
        )?;
        mounts.0.push(mountpoint.clone());
        nodes.push(Node {
            mountpoint,
            config: config.clone(),
        });
        configs.push(config);
    }
    Ok((nodes, mounts))
}

/// Polls `check` until it holds; returns the time it took, or fails after 10 s.
fn poll(start: Instant, mut check: impl FnMut() -> bool) -> Result<Duration> {
    loop {
        if check() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("not visible after 10 s");
        }
        std::hint::spin_loop();
    }
}

/// Incompressible, non-repeating bytes (xorshift), so chunks do not deduplicate.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn content(i: usize, kind: u8) -> Vec<u8> {
    let mut v = vec![kind; 4096];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

pub fn run(trials: usize, burst: usize, depfs: Option<PathBuf>) -> Result<()> {
    let depfs = match depfs {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("depfs"),
    };
    let tmp = tempfile::Builder::new()
        .prefix("depfs-bench-repl-")
        .tempdir_in("/var/tmp")?;
    let (nodes, _mounts) = cluster(&depfs, tmp.path())?;
    let (a, b) = (&nodes[0].mountpoint, &nodes[1].mountpoint);
    // Wait for the connection.
    fs::write(a.join("warmup"), b"w")?;
    poll(Instant::now(), || {
        fs::read(b.join("warmup")).is_ok_and(|c| c == b"w")
    })?;

    let mut create = Vec::new();
    let mut modify = Vec::new();
    let mut delete = Vec::new();
    for i in 0..trials {
        let name = format!("api{i}.xml");
        let (pa, pb) = (a.join(&name), b.join(&name));
        let data = content(i, b'c');
        fs::write(&pa, &data)?; // returns after close
        let t = Instant::now();
        create.push(poll(t, || fs::read(&pb).is_ok_and(|c| c == data))?);

        let data = content(i, b'm');
        fs::write(&pa, &data)?;
        let t = Instant::now();
        modify.push(poll(t, || fs::read(&pb).is_ok_and(|c| c == data))?);

        fs::remove_file(&pa)?;
        let t = Instant::now();
        delete.push(poll(t, || !pb.exists())?);
    }

    fs::create_dir(a.join("burst"))?;
    for d in 0..10 {
        fs::create_dir(a.join(format!("burst/d{d}")))?;
    }
    poll(Instant::now(), || {
        (0..10).all(|d| b.join(format!("burst/d{d}")).is_dir())
    })?;
    let mut last_close = Instant::now();
    for i in 0..burst {
        fs::write(
            a.join(format!("burst/d{}/f{i}.xml", i % 10)),
            content(i, b'b'),
        )?;
        last_close = Instant::now();
    }
    let burst_time = poll(last_close, || {
        (0..burst).all(|i| {
            fs::read(b.join(format!("burst/d{}/f{i}.xml", i % 10)))
                .is_ok_and(|c| c == content(i, b'b'))
        })
    })?;

    // A 1 MiB change in the middle of a 50 MiB file.
    let big = random_bytes(1, 50 << 20);
    fs::write(a.join("big.war"), &big)?;
    poll(Instant::now(), || {
        fs::metadata(b.join("big.war")).is_ok_and(|m| m.len() == big.len() as u64)
    })?;
    poll(Instant::now(), || {
        fs::read(b.join("big.war")).is_ok_and(|c| c == big)
    })?;
    let before = bytes_sent(&depfs, &nodes[0])?;
    let middle = random_bytes(2, 1 << 20);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(a.join("big.war"))?;
        f.write_all_at(&middle, 25 << 20)?;
    }
    let t = Instant::now();
    let big_visible = poll(t, || {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 1 << 20];
        fs::File::open(b.join("big.war"))
            .and_then(|f| f.read_exact_at(&mut buf, 25 << 20))
            .is_ok()
            && buf == middle
    })?;
    let big_bytes = bytes_sent(&depfs, &nodes[0])? - before;

    println!("Replication on loopback: 2 nodes, {trials} trials per row, 4 KiB files; from the writer's close returning to complete content read on the other node.\n");
    println!("| change | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|");
    for (label, mut v) in [("create", create), ("modify", modify), ("delete", delete)] {
        v.sort();
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} |",
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            percentile(&v, 1.0)
        );
    }
    println!(
        "\nA 1 MiB change in the middle of a 50 MiB file: visible on the other node {:.1} ms after close, {} bytes sent.",
        big_visible.as_secs_f64() * 1000.0,
        big_bytes
    );
    println!("\nBurst: {burst} files of 4 KiB in 10 directories, all correct on the other node {:.0} ms after the last close.", burst_time.as_secs_f64() * 1000.0);
    Ok(())
}
