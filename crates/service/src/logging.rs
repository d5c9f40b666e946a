//! A small stderr logger: `2026-11-25T17:00:00Z INFO conduit-agent: message`.
//!
//! Level from `--log-level` or `CONDUIT_LOG` (error, warn, info, debug, trace); default info.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    name: &'static str,
}

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!(
            "{} {:5} {}: {}\n",
            utc_timestamp(SystemTime::now()),
            r.level(),
            self.name,
            r.args()
        );
        // One write per line keeps lines whole when several threads log.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger for binary `name` at `level` (once; later calls are ignored), and a
/// panic hook that logs the panic as one line before the process aborts.
///
/// Our panic strategy is `abort` (every profile of the shipped binaries): a panic is a bug, and
/// half a process (a poller thread gone, a lock poisoned) is worse than none. The supervisor
/// (systemd `Restart=`, the appliance's watchdog) starts a fresh one, which recovers its
/// consoles (a forced takeover of its own stale SOL payload). Nothing catches unwinds.
pub fn init(name: &'static str, level: LevelFilter) {
    if log::set_boxed_logger(Box::new(StderrLogger { name })).is_ok() {
        log::set_max_level(level);
        std::panic::set_hook(Box::new(|info| {
            let thread = std::thread::current();
            log::error!(
                "panic in thread {}: {info}; aborting",
                thread.name().unwrap_or("unnamed")
            );
        }));
    }
}

/// Parses a level name.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    s.parse().ok()
}

/// RFC 3339 UTC timestamp with second precision, without a date crate.
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_625_999);
        assert_eq!(utc_timestamp(t), "2026-11-25T16:59:59Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00Z");
    }
}
