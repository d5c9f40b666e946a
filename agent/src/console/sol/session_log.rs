//! Session logs of serial consoles: what a server's console showed, appended to
//! `<dir>/<server_id>.log` and rotated by size.
//!
//! Rotation: before a write would take the file past `max_bytes`, the part that fits is
//! written, then `<id>.log.<keep>` is deleted, `<id>.log.<n>` becomes `<id>.log.<n+1>` (from
//! the oldest down), `<id>.log` becomes `<id>.log.1`, and the rest goes to a new `<id>.log`.
//! So no file grows past `max_bytes`, and at most `keep` rotated files are kept (`.1` the
//! newest). The bytes are the console's as they came from the BMC (no timestamps, no
//! framing), so the file replays in a terminal (`cat`, `less -R`).
//!
//! Plain blocking file I/O: appends of at most a few hundred bytes to a local file, on the
//! console thread. Errors are returned to the caller, which counts them and carries on; the
//! file is reopened on the next write.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The log of one server's console.
#[derive(Debug)]
pub struct SessionLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    // Open file and its size; `None` before the first write and after an error.
    file: Option<(File, u64)>,
}

impl SessionLog {
    /// The log of `server_id` in `dir` (created on the first write). A `max_bytes` of 0 is
    /// taken as 1.
    pub fn new(dir: &Path, server_id: &str, max_bytes: u64, keep: usize) -> SessionLog {
        SessionLog {
            path: dir.join(format!("{server_id}.log")),
            max_bytes: max_bytes.max(1),
            keep,
            file: None,
        }
    }

    /// The current file, `<dir>/<server_id>.log`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rotated file number `n` (1 is the newest).
    pub fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Appends `data`, rotating as needed (see the module doc).
    pub fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.file.is_none() {
                self.file = Some(self.open()?);
            }
            let Some((file, size)) = self.file.as_mut() else {
                continue;
            };
            let room = self.max_bytes.saturating_sub(*size);
            if room == 0 {
                self.rotate()?;
                continue;
            }
            let n = room.min(data.len() as u64) as usize;
            if let Err(e) = file.write_all(&data[..n]) {
                self.file = None;
                return Err(e);
            }
            *size += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn open(&self) -> io::Result<(File, u64)> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    /// Shifts the rotated files up by one and moves the current file to `.1` (or deletes it
    /// when no rotated file is kept); the next write starts a new file.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let gone_ok = |r: io::Result<()>| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        if self.keep == 0 {
            return gone_ok(std::fs::remove_file(&self.path));
        }
        gone_ok(std::fs::remove_file(self.rotated(self.keep)))?;
        for n in (1..self.keep).rev() {
            gone_ok(std::fs::rename(self.rotated(n), self.rotated(n + 1)))?;
        }
        gone_ok(std::fs::rename(&self.path, self.rotated(1)))?;
        // The file may not have gone (another writer keeps re-creating it): start the new one
        // empty rather than rotating forever.
        let (file, _) = self.open()?;
        file.set_len(0)?;
        self.file = Some((file, 0));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("conduit-sol-log-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn appends_then_rotates_keeping_the_newest_files() {
        let dir = TempDir::new("rotate");
        // The directory is created on the first write.
        let mut log = SessionLog::new(&dir.0.join("logs"), "sim1", 10, 2);
        assert_eq!(log.path(), dir.0.join("logs/sim1.log"));
        log.append(b"0123").unwrap();
        log.append(b"456").unwrap();
        assert_eq!(read(log.path()), "0123456");
        assert!(!log.rotated(1).exists());

        // 7 + 5 > 10: the first 3 bytes fill the file, the rest starts a new one.
        log.append(b"789ab").unwrap();
        assert_eq!(read(log.path()), "ab");
        assert_eq!(read(&log.rotated(1)), "0123456789");

        // One write spanning several files.
        log.append(b"cdefghijklmnopqrstuv").unwrap();
        assert_eq!(read(log.path()), "uv");
        assert_eq!(read(&log.rotated(1)), "klmnopqrst");
        assert_eq!(read(&log.rotated(2)), "abcdefghij");
        // Only `keep` rotated files.
        assert!(!log.rotated(3).exists());
    }

    #[test]
    fn continues_an_existing_file_and_counts_its_size() {
        let dir = TempDir::new("reopen");
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.0.join("b.log"), b"12345678").unwrap();
        let mut log = SessionLog::new(&dir.0, "b", 10, 1);
        log.append(b"9012").unwrap();
        assert_eq!(read(&log.rotated(1)), "1234567890");
        assert_eq!(read(log.path()), "12");
    }

    #[test]
    fn keep_zero_truncates_and_size_zero_is_one() {
        let dir = TempDir::new("keep0");
        let mut log = SessionLog::new(&dir.0, "c", 4, 0);
        log.append(b"abcdefghij").unwrap();
        assert_eq!(read(log.path()), "ij");
        assert!(!log.rotated(1).exists());
        let mut tiny = SessionLog::new(&dir.0, "d", 0, 1);
        tiny.append(b"xy").unwrap();
        assert_eq!(read(tiny.path()), "y");
        assert_eq!(read(&tiny.rotated(1)), "x");
    }

    #[test]
    fn write_errors_are_returned_and_the_log_recovers() {
        let dir = TempDir::new("error");
        std::fs::create_dir_all(&dir.0).unwrap();
        // A directory where the log's directory should be: every write fails.
        let blocked = dir.0.join("blocked");
        std::fs::write(&blocked, b"not a directory").unwrap();
        let mut log = SessionLog::new(&blocked, "e", 100, 1);
        assert!(log.append(b"lost").is_err());
        std::fs::remove_file(&blocked).unwrap();
        log.append(b"kept").unwrap();
        assert_eq!(read(log.path()), "kept");
    }
}
