//! The SOL payloads this agent holds, on disk (`<state_dir>/sol/<server>.held`): a marker is
//! written when a console activates SOL and removed when it deactivates it. An agent killed
//! with `kill -9` (or rebooted by the watchdog) leaves its markers behind; the next run finds
//! them and takes its own stale payloads back by force, where another tool's payload would be
//! refused as `sol_in_use`. (If another tool took SOL after the crash, the first console of the
//! restarted agent takes it once: the marker cannot tell; the log says so.)

use std::path::PathBuf;

/// Markers under a state directory; without one (none configured, or not writable) nothing
/// is remembered and a stale payload needs `?force=1`.
#[derive(Debug, Clone)]
pub struct Held {
    dir: Option<PathBuf>,
}

impl Held {
    /// Markers in `<state_dir>/sol`, created if missing.
    pub fn new(state_dir: Option<&std::path::Path>) -> Held {
        let dir = state_dir.and_then(|d| {
            let dir = d.join("sol");
            match std::fs::create_dir_all(&dir) {
                Ok(()) => Some(dir),
                Err(e) => {
                    log::warn!(
                        "state directory {}: {e}; a SOL payload left by a crash will need force",
                        dir.display()
                    );
                    None
                }
            }
        });
        Held { dir }
    }

    fn path(&self, server: &str) -> Option<PathBuf> {
        // Server ids come from the configuration: safe characters as they are, every other
        // byte as %XX (`%` too), so two ids never share a file and none leaves the directory.
        let mut name = String::new();
        for b in server.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => name.push(char::from(b)),
                _ => name.push_str(&format!("%{b:02X}")),
            }
        }
        Some(self.dir.as_ref()?.join(format!("{name}.held")))
    }

    /// Whether a previous run of this agent died holding `server`'s payload (or this run
    /// holds it).
    pub fn is_held(&self, server: &str) -> bool {
        self.path(server).is_some_and(|p| p.exists())
    }

    /// `server`'s payload is ours now; durable before it returns (file and directory synced):
    /// it must survive the power cut of a watchdog reboot.
    pub fn hold(&self, server: &str) {
        let (Some(p), Some(dir)) = (self.path(server), self.dir.as_ref()) else {
            return;
        };
        let durable = || -> std::io::Result<()> {
            std::fs::File::create(&p)?.sync_all()?;
            std::fs::File::open(dir)?.sync_all()
        };
        if let Err(e) = durable() {
            log::warn!(
                "sol {server}: record the active payload in {}: {e}",
                p.display()
            );
        }
    }

    /// `server`'s payload is no longer ours.
    pub fn release(&self, server: &str) {
        if let Some(p) = self.path(server) {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_survive_a_new_instance_and_names_stay_in_the_dir() {
        let dir = std::env::temp_dir().join(format!("held-{}", std::process::id()));
        let a = Held::new(Some(&dir));
        a.hold("../n1");
        assert!(dir.join("sol/%2E%2E%2Fn1.held").exists());
        let b = Held::new(Some(&dir));
        assert!(b.is_held("../n1"), "a new run sees what the last one held");
        assert!(
            !b.is_held("a:b") && !b.is_held(".._n1"),
            "no two ids share a file"
        );
        a.hold("a:b");
        assert!(!b.is_held("a_b") && b.is_held("a:b"));
        b.release("../n1");
        assert!(!a.is_held("../n1"));
        assert!(!Held::new(None).is_held("x"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
