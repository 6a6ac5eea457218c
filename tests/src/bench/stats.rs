//! Measuring: latency histograms (microseconds, HdrHistogram), a process's RSS and CPU time from
//! `/proc`, the machine's description, and number formatting.

use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A latency histogram in microseconds, 1 µs to 1 h, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Microseconds since the Unix epoch (the clock both ends of a loopback benchmark share).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// Microseconds as milliseconds.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Count, mean, p50, p99, p99.9 and max of a histogram, in milliseconds.
pub fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "mean_ms": (h.mean()).round() / 1000.0,
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

/// A process's resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A process's memory: `VmRSS` and `RssAnon` (its heap and stacks, without mapped files) of
/// `/proc/<pid>/status`, in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

/// A process's CPU time (user + system, all threads) in seconds, from `/proc/<pid>/stat`
/// (clock ticks of 1/100 s, Linux's USER_HZ).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The sum over processes of [`rss_kib`]; `None` when any of them cannot be read (or there are
/// none).
pub fn rss_kib_all(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_kib(p)).sum()
}

/// The sum over processes of [`memory_kib`]; `None` when any of them cannot be read (or there
/// are none).
pub fn memory_kib_all(pids: &[u32]) -> Option<(u64, u64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold((0, 0), |acc, &p| {
        let (rss, anon) = memory_kib(p)?;
        Some((acc.0 + rss, acc.1 + anon))
    })
}

/// The CPU time of several processes together, in seconds.
pub fn cpu_secs_all(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_secs(p)).sum()
}

/// CPU use between two samples, in percent of one core (200 % = both cores of a 2-core box),
/// of one process or of several together (the processes of a cell).
pub struct CpuMeter {
    pids: Vec<u32>,
    last: Option<(f64, std::time::Instant)>,
}

impl CpuMeter {
    /// Starts measuring `pids` (nothing when empty).
    pub fn new(pids: &[u32]) -> CpuMeter {
        let last = cpu_secs_all(pids).map(|c| (c, std::time::Instant::now()));
        CpuMeter {
            pids: pids.to_vec(),
            last,
        }
    }

    /// Percent of one core since the last call (or since `new`).
    pub fn tick(&mut self) -> Option<f64> {
        let now = (cpu_secs_all(&self.pids)?, std::time::Instant::now());
        let (c0, t0) = self.last.replace(now)?;
        let wall = now.1.duration_since(t0).as_secs_f64();
        (wall > 0.0).then(|| ((now.0 - c0) / wall * 1000.0).round() / 10.0)
    }
}

/// CPU use of the whole machine between two samples, in percent of one core (from the first line
/// of `/proc/stat`): with the server's and the client's, it shows what other processes took.
pub struct MachineCpu {
    last: Option<(u64, u64)>,
}

fn machine_jiffies() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3)? + f.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

impl MachineCpu {
    /// Starts measuring.
    pub fn new() -> MachineCpu {
        MachineCpu {
            last: machine_jiffies(),
        }
    }

    /// Percent of one core the whole machine was busy since the last call (or `new`).
    pub fn tick(&mut self) -> Option<f64> {
        let now = machine_jiffies()?;
        let (b0, t0) = self.last.replace(now)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let dt = now.1.saturating_sub(t0) as f64;
        (dt > 0.0).then(|| ((now.0 - b0) as f64 / dt * cores * 1000.0).round() / 10.0)
    }
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine: cores, CPU model, memory, kernel, open-file limit.
pub fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned());
    let mem_kib: Option<u64> = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu_model": model,
        "mem_total_kib": mem_kib,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "max_open_files": open_files_limit(),
    })
}

/// The soft limit on open files of this process (`Max open files` in `/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}
