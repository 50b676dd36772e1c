//! The machine a benchmark ran on: CPU, cores, memory, load, toolchain; its memory
//! bandwidth (the decode floor); and a process's peak resident memory.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What BENCHMARKS.md says about the machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` of /proc/cpuinfo.
    pub cpu: String,
    /// Logical CPUs the process may use.
    pub cores: usize,
    /// SIMD extensions that matter for burn-flex's kernels.
    pub simd: String,
    /// MemTotal, bytes.
    pub memory_bytes: u64,
    /// `uname -sr`.
    pub os: String,
    /// `rustc -V`.
    pub rustc: String,
    /// 1-minute load average when the run started and when it ended.
    pub load: (f64, f64),
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(f64::NAN)
}

impl Machine {
    /// Reads /proc and asks rustc and uname.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_else(|| "unknown".into())
        };
        let flags = field("flags");
        let simd: Vec<&str> =
            ["avx2", "fma", "avx512f", "avx512_bf16"].into_iter().filter(|f| flags.split_whitespace().any(|x| x == *f)).collect();
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
            .map(|kib| kib * 1024)
            .unwrap_or(0);
        Machine {
            cpu: field("model name"),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            simd: if simd.is_empty() { "none of avx2/fma/avx512".into() } else { simd.join(", ") },
            memory_bytes,
            os: first_line("uname", &["-sr"]),
            rustc: first_line("rustc", &["-V"]),
            load: (load_average(), f64::NAN),
        }
    }

    /// "Machine: CPU, N logical CPUs (SIMD), X GiB RAM, OS, rustc." as every report opens.
    pub fn summary(&self) -> String {
        format!(
            "Machine: {}, {} logical CPUs ({}), {:.1} GiB RAM, {}, {}.",
            self.cpu,
            self.cores,
            self.simd,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.os,
            self.rustc
        )
    }
}

/// The time now, "YYYY-MM-DD HH:MM UTC" (empty if `date` fails), for report headers.
pub fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Peak resident set size of this process so far (VmHWM), bytes.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// A `kB` field of a /proc status or meminfo text, bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).map(|kib| kib * 1024)
}

/// Memory the kernel could give a new process without swapping (MemAvailable), bytes.
pub fn available_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| kib_field(&m, "MemAvailable:")).unwrap_or(0)
}

/// Resident memory of process `pid` now (VmRSS), bytes; 0 once it is gone.
pub fn rss_bytes_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| kib_field(&s, "VmRSS:")).unwrap_or(0)
}

/// Memory read bandwidth, bytes/s: the best of `reps` passes of `threads` threads summing
/// disjoint slices of one `bytes`-sized buffer (far larger than any cache), as u64 words
/// with four accumulators so the loop is load-bound, not add-bound.
pub fn read_bandwidth(bytes: usize, threads: usize, reps: usize) -> f64 {
    let words = bytes / 8;
    // Written once, so every page is backed before timing.
    let buf: Vec<u64> = (0..words as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
    let threads = threads.max(1);
    let chunk = words.div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..reps {
        let start = Instant::now();
        let total = std::thread::scope(|s| {
            let handles: Vec<_> = buf.chunks(chunk).map(|part| s.spawn(move || sum_words(part))).collect();
            handles.into_iter().map(|h| h.join().expect("bandwidth thread")).fold(0u64, u64::wrapping_add)
        });
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(total);
        best = best.max((words * 8) as f64 / secs);
    }
    best
}

fn sum_words(part: &[u64]) -> u64 {
    let mut acc = [0u64; 4];
    let mut quads = part.chunks_exact(4);
    for q in &mut quads {
        for (a, x) in acc.iter_mut().zip(q) {
            *a = a.wrapping_add(*x);
        }
    }
    let tail = quads.remainder().iter().fold(0u64, |a, x| a.wrapping_add(*x));
    acc.iter().fold(tail, |a, x| a.wrapping_add(*x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_word() {
        let v: Vec<u64> = (1..=11).collect();
        assert_eq!(sum_words(&v), 66);
    }

    #[test]
    fn reads_proc() {
        assert!(peak_rss_bytes() > 0);
        assert!(rss_bytes_of(std::process::id()) > 0);
        assert!(available_memory_bytes() > 0);
        assert!(read_bandwidth(1 << 20, 2, 1) > 0.0);
    }
}
