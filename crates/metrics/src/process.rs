//! Process metrics, read from procfs at scrape time (the Go client's `process_*` set, plus
//! `process_threads` for Go's `go_threads` and `process_heap_bytes` for its heap gauges).
//!
//! Parsing is pure ([`ProcStat::parse`], [`parse_status`], [`parse_max_fds`], [`parse_btime`]);
//! only [`ProcessCollector`] touches the file system, under a root path so tests can point it at
//! a fake tree.

use std::path::PathBuf;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports times in /proc in USER_HZ ticks, which is 100 on every architecture we ship.
const USER_HZ: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` we expose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Number of threads.
    pub threads: u64,
    /// Start time after boot, in seconds.
    pub start_after_boot_seconds: f64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: u64,
}

impl ProcStat {
    /// Parses the one line of `/proc/<pid>/stat`. The command name may hold spaces and
    /// parentheses, so fields are counted from the last `)`.
    pub fn parse(line: &str) -> Option<ProcStat> {
        let rest = &line[line.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state); field N is f[N - 3].
        let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        Some(ProcStat {
            cpu_seconds: (num(14)? + num(15)?) as f64 / USER_HZ,
            threads: num(20)?,
            start_after_boot_seconds: num(22)? as f64 / USER_HZ,
            virtual_bytes: num(23)?,
        })
    }
}

/// `VmRSS` from `/proc/<pid>/status`, in bytes (page-size independent, unlike stat's rss).
pub fn parse_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft "Max open files" limit from `/proc/<pid>/limits`.
pub fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Boot time (`btime`) from `/proc/stat`, in seconds since the epoch.
pub fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Collects the process metrics of one process on every scrape.
#[derive(Debug, Clone)]
pub struct ProcessCollector {
    proc_root: PathBuf,
    pid_dir: PathBuf,
}

impl ProcessCollector {
    /// The current process, from the real `/proc`.
    pub fn current() -> Self {
        Self::with_root("/proc", "self")
    }

    /// Process `pid` (or `self`) under a procfs mounted at `proc_root`.
    pub fn with_root(proc_root: impl Into<PathBuf>, pid: &str) -> Self {
        let proc_root = proc_root.into();
        let pid_dir = proc_root.join(pid);
        ProcessCollector { proc_root, pid_dir }
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.pid_dir.join(name)).ok()
    }

    fn open_fds(&self) -> Option<u64> {
        Some(std::fs::read_dir(self.pid_dir.join("fd")).ok()?.count() as u64)
    }
}

fn put<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(e)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A file that cannot be read leaves its metric out of this scrape instead of failing it.
        let stat = self.read("stat").as_deref().and_then(ProcStat::parse);
        if let Some(s) = stat {
            put(
                &mut encoder,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                ConstCounter::new(s.cpu_seconds),
            )?;
        }
        if let Some(rss) = self.read("status").as_deref().and_then(parse_status) {
            put(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                ConstGauge::new(rss as i64),
            )?;
        }
        if let Some(s) = stat {
            put(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                ConstGauge::new(s.virtual_bytes as i64),
            )?;
        }
        if let Some(n) = self.open_fds() {
            put(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                ConstGauge::new(n as i64),
            )?;
        }
        if let Some(n) = self.read("limits").as_deref().and_then(parse_max_fds) {
            put(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                ConstGauge::new(n as i64),
            )?;
        }
        let btime = std::fs::read_to_string(self.proc_root.join("stat"))
            .ok()
            .as_deref()
            .and_then(parse_btime);
        if let (Some(s), Some(btime)) = (stat, btime) {
            put(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                ConstGauge::new(btime as f64 + s.start_after_boot_seconds),
            )?;
        }
        if let Some(s) = stat {
            put(
                &mut encoder,
                "process_threads",
                "Number of OS threads in the process.",
                ConstGauge::new(s.threads as i64),
            )?;
        }
        if let Some(bytes) = crate::heap::heap_bytes() {
            put(
                &mut encoder,
                "process_heap_bytes",
                "Heap bytes in use, counted by the global allocator.",
                ConstGauge::new(bytes as i64),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    const STAT: &str = "4242 (conduit (agent) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                        250 150 0 0 20 0 7 0 123456 104857600 900 18446744073709551615 1 1 0 0 \
                        0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_after_the_last_paren() {
        let s = ProcStat::parse(STAT).unwrap();
        assert_eq!(s.cpu_seconds, 4.0);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_after_boot_seconds, 1234.56);
        assert_eq!(s.virtual_bytes, 104857600);
        assert_eq!(ProcStat::parse("12 (x) S 1 2"), None);
        assert_eq!(ProcStat::parse(""), None);
    }

    #[test]
    fn status_limits_and_btime() {
        assert_eq!(
            parse_status("Name:\tx\nVmRSS:\t    2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1700000000)
        );
    }

    #[test]
    fn collector_reads_a_fake_proc_tree() {
        let root = std::env::temp_dir().join(format!("conduit-proc-{}", std::process::id()));
        let pid = root.join("77");
        std::fs::create_dir_all(pid.join("fd")).unwrap();
        for i in 0..3 {
            std::fs::write(pid.join("fd").join(i.to_string()), "").unwrap();
        }
        std::fs::write(pid.join("stat"), STAT).unwrap();
        std::fs::write(pid.join("status"), "VmRSS:\t 100 kB\n").unwrap();
        std::fs::write(pid.join("limits"), "Max open files 4096 8192 files\n").unwrap();
        std::fs::write(root.join("stat"), "btime 1000\n").unwrap();

        let mut r = Registry::default();
        r.register_collector(Box::new(ProcessCollector::with_root(&root, "77")));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &r).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        for want in [
            "process_cpu_seconds_total 4.0",
            "process_resident_memory_bytes 102400",
            "process_virtual_memory_bytes 104857600",
            "process_open_fds 3",
            "process_max_fds 4096",
            "process_start_time_seconds 2234.56",
            "process_threads 7",
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
    }
}
