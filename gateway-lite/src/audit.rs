//! The audit outbox: every power action, boot change and event-log clear the gateway brokers
//! is appended to a file (one JSON record per line, fsynced) before the user gets the answer,
//! and delivered to the manager's `RecordAudit` by the sync loop. While the manager is away
//! records accumulate on disk; a restarted gateway delivers what an earlier run left. Records
//! leave the file only after the manager acknowledged them, so a crash between delivery and
//! truncation can send a batch twice, never lose one.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use conduit_api::manager::GatewayAuditRecord;

/// Records per RecordAudit call (the manager's limit).
const BATCH: usize = 1000;

/// The outbox file and its lock.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Outbox {
    /// The outbox in `dir` (created if needed).
    pub fn open(dir: &Path) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("audit-outbox.jsonl");
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        // A crash mid-append leaves a torn last line: end it, so that the next record starts
        // a line of its own instead of joining the fragment (and being skipped with it).
        let len = f.metadata()?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            f.seek(SeekFrom::Start(len - 1))?;
            f.read_exact(&mut last)?;
            if last[0] != b'\n' {
                f.write_all(b"\n")?;
                f.sync_data()?;
            }
        }
        Ok(Outbox {
            path,
            lock: Mutex::new(()),
        })
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends one record durably (blocking: call it off the I/O threads).
    pub fn append(&self, record: &GatewayAuditRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let _g = self.guard();
        let mut f = OpenOptions::new().append(true).open(&self.path)?;
        f.write_all(&line)?;
        f.sync_data()
    }

    /// Records waiting, oldest first (lines that do not parse are skipped and logged).
    pub fn pending(&self) -> std::io::Result<Vec<GatewayAuditRecord>> {
        let _g = self.guard();
        read_all(&self.path)
    }

    /// Delivers waiting records through `send` in batches; stops at the first failure, keeping
    /// the rest. Returns how many were delivered.
    pub fn deliver<E>(
        &self,
        mut send: impl FnMut(Vec<GatewayAuditRecord>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let pending = match self.pending() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("reading the audit outbox {}: {e}", self.path.display());
                return Ok(0);
            }
        };
        let mut sent = 0;
        for batch in pending.chunks(BATCH) {
            send(batch.to_vec())?;
            sent += batch.len();
            if let Err(e) = self.drop_first(batch.len()) {
                log::error!("trimming the audit outbox {}: {e}", self.path.display());
                break;
            }
        }
        Ok(sent)
    }

    /// Removes the first `n` records (those delivered), keeping any appended meanwhile.
    fn drop_first(&self, n: usize) -> std::io::Result<()> {
        let _g = self.guard();
        let rest: Vec<GatewayAuditRecord> = read_all(&self.path)?.into_iter().skip(n).collect();
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut f = File::create(&tmp)?;
            for r in &rest {
                let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
                line.push(b'\n');
                f.write_all(&line)?;
            }
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)
    }
}

fn read_all(path: &Path) -> std::io::Result<Vec<GatewayAuditRecord>> {
    let f = File::open(path)?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(r) => out.push(r),
            // A torn last line from a crash mid-append: that record never got its answer.
            Err(e) => log::warn!("audit outbox {} line {}: {e}", path.display(), n + 1),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i64) -> GatewayAuditRecord {
        GatewayAuditRecord {
            at: i,
            actor: "u".into(),
            action: "power.on".into(),
            server_id: "s1".into(),
            result: "ok".into(),
            detail: String::new(),
        }
    }

    #[test]
    fn records_survive_until_delivered_and_a_failure_keeps_them() {
        let dir = std::env::temp_dir().join(format!("conduit-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Outbox::open(&dir).unwrap();
        for i in 0..3 {
            out.append(&rec(i)).unwrap();
        }
        // a torn line from a crash is skipped, not fatal
        OpenOptions::new()
            .append(true)
            .open(dir.join("audit-outbox.jsonl"))
            .unwrap()
            .write_all(b"{\"at\":")
            .unwrap();
        assert!(out.deliver(|_| Err("manager down")).is_err());
        let reopened = Outbox::open(&dir).unwrap();
        assert_eq!(reopened.pending().unwrap().len(), 3);
        // the record after the torn line is kept
        reopened.append(&rec(3)).unwrap();
        assert_eq!(reopened.pending().unwrap().len(), 4);
        let mut got = Vec::new();
        assert_eq!(
            reopened.deliver(|b| {
                got.extend(b);
                Ok::<_, ()>(())
            }),
            Ok(4)
        );
        assert_eq!(got, vec![rec(0), rec(1), rec(2), rec(3)]);
        assert!(reopened.pending().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
