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
        // Server ids come from the configuration; only safe characters reach a file name.
        let name: String = server
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
                _ => '_',
            })
            .collect();
        Some(self.dir.as_ref()?.join(format!("{name}.held")))
    }

    /// Whether a previous run of this agent died holding `server`'s payload (or this run
    /// holds it).
    pub fn is_held(&self, server: &str) -> bool {
        self.path(server).is_some_and(|p| p.exists())
    }

    /// `server`'s payload is ours now.
    pub fn hold(&self, server: &str) {
        if let Some(p) = self.path(server) {
            if let Err(e) = std::fs::write(&p, b"") {
                log::warn!(
                    "sol {server}: record the active payload in {}: {e}",
                    p.display()
                );
            }
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
        assert!(dir.join("sol/.._n1.held").exists());
        let b = Held::new(Some(&dir));
        assert!(b.is_held("../n1"), "a new run sees what the last one held");
        b.release("../n1");
        assert!(!a.is_held("../n1"));
        assert!(!Held::new(None).is_held("x"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
