//! CPU time and memory of the measured server processes, read from `/proc` (Linux only).
//!
//! A server is a set of root PIDs (the proxy; nginx's master) plus their child processes (nginx's
//! workers), found again at every sample. CPU is `utime + stime` of `/proc/PID/stat` (all
//! threads); memory is the sum of `VmRSS` sampled during the run, and `VmHWM` (each process's
//! own peak) summed at the end. For a single process `VmHWM` is the exact peak; for several it
//! overstates (their peaks need not coincide), which is why the sampled sum is reported too.

use std::collections::BTreeSet;

/// Linux's `USER_HZ`, the unit of `utime`/`stime`: 100 on every architecture Linux ships
/// (the kernel converts to it whatever `HZ` is).
const TICKS_PER_SECOND: f64 = 100.0;

/// The measured processes.
#[derive(Debug, Clone, Default)]
pub struct ProcSet {
    roots: Vec<u32>,
}

/// One reading of a process set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// CPU seconds (user + system) consumed so far by every process of the set.
    pub cpu_seconds: f64,
    /// Sum of `VmRSS`, bytes.
    pub rss_bytes: u64,
    /// Sum of `VmHWM`, bytes.
    pub hwm_bytes: u64,
    /// How many processes were read.
    pub processes: usize,
}

impl ProcSet {
    /// The processes `roots` and their children.
    pub fn new(roots: Vec<u32>) -> Self {
        ProcSet { roots }
    }

    /// Whether there is nothing to measure.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The root PIDs.
    pub fn roots(&self) -> &[u32] {
        &self.roots
    }

    /// Every PID of the set now: the roots and their descendants.
    pub fn pids(&self) -> Vec<u32> {
        let mut set: BTreeSet<u32> = self.roots.iter().copied().collect();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return set.into_iter().collect();
        };
        let mut parents = Vec::new();
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = read_stat(pid).map(|s| s.ppid) {
                parents.push((pid, ppid));
            }
        }
        // Descendants: a few passes cover master -> worker -> helper chains.
        for _ in 0..4 {
            let before = set.len();
            for (pid, ppid) in &parents {
                if set.contains(ppid) {
                    set.insert(*pid);
                }
            }
            if set.len() == before {
                break;
            }
        }
        set.into_iter().collect()
    }

    /// Reads every process of the set.
    pub fn sample(&self) -> Sample {
        let mut s = Sample::default();
        for pid in self.pids() {
            let Some(stat) = read_stat(pid) else { continue };
            s.cpu_seconds += stat.cpu_ticks as f64 / TICKS_PER_SECOND;
            let (rss, hwm) = read_status_mem(pid);
            s.rss_bytes += rss;
            s.hwm_bytes += hwm;
            s.processes += 1;
        }
        s
    }
}

/// CPU seconds this process (the load generator) has used so far.
pub fn self_cpu_seconds() -> f64 {
    read_stat(std::process::id())
        .map(|s| s.cpu_ticks as f64 / TICKS_PER_SECOND)
        .unwrap_or(0.0)
}

struct Stat {
    ppid: u32,
    cpu_ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/PID/stat`: the command name (field 2) may hold spaces and parentheses, so the
/// fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Stat {
        ppid,
        cpu_ticks: utime + stime,
    })
}

fn read_status_mem(pid: u32) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (0, 0);
    };
    parse_status_mem(&text)
}

/// `VmRSS` and `VmHWM` of `/proc/PID/status`, in bytes.
fn parse_status_mem(text: &str) -> (u64, u64) {
    let kb = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |k| k * 1024)
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names() {
        let line =
            "4242 (we ird) (x)) S 17 4242 4242 0 -1 4194560 2143 0 0 0 250 75 0 0 20 0 3 0 1 0";
        let s = parse_stat(line).map(|s| (s.ppid, s.cpu_ticks));
        assert_eq!(s, Some((17, 325)));
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn status_memory() {
        let text = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(parse_status_mem(text), (1024 * 1024, 2048 * 1024));
        assert_eq!(parse_status_mem("Name: x\n"), (0, 0));
    }

    #[test]
    fn reads_this_process() {
        let set = ProcSet::new(vec![std::process::id()]);
        let s = set.sample();
        assert_eq!(s.processes, 1);
        assert!(s.rss_bytes > 0 && s.hwm_bytes >= s.rss_bytes);
    }
}
