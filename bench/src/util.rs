//! Small shared helpers: progress output, Ctrl-C, child processes, statistics, seeded
//! random bytes and polling.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

static START: OnceLock<Instant> = OnceLock::new();
static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Prints a progress line on stderr, prefixed with the time since the run started.
pub fn progress(msg: impl AsRef<str>) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:7.1}s] {}", msg.as_ref());
}

/// Installs SIGINT/SIGTERM handlers that only set a flag; long loops call
/// [`check_interrupted`] so that the guards' `Drop` runs on the way out.
pub fn install_interrupt_handler() -> Result<()> {
    START.get_or_init(Instant::now);
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(flag)).context("install signal handler")?;
    }
    Ok(())
}

/// Fails once SIGINT or SIGTERM has been received.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.get().is_some_and(|f| f.load(Ordering::Relaxed)) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs `cmd` in its own process group (so a terminal Ctrl-C reaches only us; we stop
/// the child ourselves), with stdin from /dev/null, stderr passed through, and returns
/// its stdout. Fails if it exits non-zero. `interruptible`: kill it on Ctrl-C
/// (workloads); otherwise let it finish (setup and teardown scripts).
pub fn run_captured(cmd: &mut Command, interruptible: bool) -> Result<String> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {desc}"))?;
    let mut stdout = child.stdout.take().context("child stdout missing")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .with_context(|| format!("wait for {desc}"))?
        {
            break st;
        }
        if interruptible && check_interrupted().is_err() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("interrupted while running {desc}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{desc} exited with {status}");
    }
    Ok(out)
}

/// Runs a short command and returns its trimmed stdout, or `None` if it cannot run or
/// fails (for version and machine queries).
pub fn query(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The median (upper median for an even count) of `v`; NaN if empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Nearest-rank percentile `p` (0..=1) of `v`; NaN if empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Operations per second.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// A small seeded PRNG (xorshift64*): reproducible trees and offsets, no dependency.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// One element of a non-empty slice.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.range(0, items.len() - 1)]
    }

    /// `len` incompressible bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// A number derived from `tag` (FNV-1a), to make content unique per repetition.
pub fn tag_seed(tag: &str) -> usize {
    tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    }) as usize
        >> 16
}

/// 4 KiB (or `size`) of content unique to (`tag`, `i`): an 8-byte index, a tag byte and
/// seeded random bytes, so it neither compresses nor deduplicates across files.
pub fn unique_content(tag: u8, i: usize, size: usize) -> Vec<u8> {
    let mut v = Rng::new(((tag as u64) << 40) ^ i as u64 ^ 0xD5).bytes(size);
    let n = size.min(8);
    v[..n].copy_from_slice(&(i as u64).to_le_bytes()[..n]);
    if size > 8 {
        v[8] = tag;
    }
    v
}

/// Whether `path` holds exactly `want` (a missing or short file is simply not yet).
pub fn has_content(path: &Path, want: &[u8]) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == want.len() as u64 => std::fs::read(path).is_ok_and(|c| c == want),
        _ => false,
    }
}

/// Polls `check` every `interval` until it holds and returns the time from `start`; fails
/// after `deadline` (measured from `start`) or on Ctrl-C.
pub fn poll_until(
    start: Instant,
    interval: Duration,
    deadline: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<Duration> {
    loop {
        if check() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > deadline {
            bail!("not visible within {:.1} s", deadline.as_secs_f64());
        }
        check_interrupted()?;
        std::thread::sleep(interval);
    }
}

/// A figure for a table: "–" for NaN, thousands separators for large numbers.
pub fn num(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    match unit {
        "GB/s" => format!("{v:.2}"),
        "µs" | "s" => {
            if v < 10.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.1}")
            }
        }
        "ms" | "kB" | "MB" => {
            if v < 10.0 {
                format!("{v:.2}")
            } else if v < 100.0 {
                format!("{v:.1}")
            } else {
                thousands(v)
            }
        }
        _ => thousands(v),
    }
}

/// An integer with thousands separators: 21,506.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
    }

    #[test]
    fn rng_is_reproducible_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            let x = a.range(3, 9);
            assert_eq!(x, b.range(3, 9));
            assert!((3..=9).contains(&x));
        }
        assert_eq!(unique_content(b'c', 5, 4096), unique_content(b'c', 5, 4096));
        assert_ne!(unique_content(b'c', 5, 4096), unique_content(b'm', 5, 4096));
    }
}
