//! The login the CLI keeps between commands: `session.json` in the user's config directory
//! (`$CONDUIT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/conduit`, else `~/.config/conduit`), the
//! directory mode 0700 and the file 0600, written whole to a temporary file and renamed, so a
//! crash leaves the old login or the new one, never half of one. A refresh holds an exclusive
//! lock on `session.lock`: refresh tokens are single-use, and two commands refreshing the same
//! one at once would end the login for both.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use conduit_api::manager::UserInfo;
use serde::{Deserialize, Serialize};

/// A refresh is due this long before the access token expires, so that a call never goes out
/// with a token that lapses on the way.
pub const REFRESH_MARGIN_SECS: u64 = 30;

/// One login.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The manager's URL.
    pub manager: String,
    /// CA certificates (PEM) trusted for https managers and gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The access token.
    pub access_token: String,
    /// When it expires, unix seconds.
    pub expires_at: u64,
    /// The refresh token (password logins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The API key, for a key login: logs in again when the access token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Who is logged in.
    pub user: UserInfo,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("manager", &self.manager)
            .field("user", &self.user.email)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Whether the access token should be renewed before use at `now`.
    pub fn needs_refresh(&self, now: u64) -> bool {
        now + REFRESH_MARGIN_SECS >= self.expires_at
    }
}

/// Which directory holds the login: the first of `$CONDUIT_CONFIG_DIR`,
/// `$XDG_CONFIG_HOME/conduit`, `$HOME/.config/conduit` that is set and not empty.
pub fn config_dir(
    conduit_dir: Option<&str>,
    xdg: Option<&str>,
    home: Option<&str>,
) -> Option<PathBuf> {
    let set = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    set(conduit_dir)
        .or_else(|| set(xdg).map(|x| x.join("conduit")))
        .or_else(|| set(home).map(|h| h.join(".config").join("conduit")))
}

/// The login's files.
#[derive(Debug, Clone)]
pub struct SessionStore {
    dir: PathBuf,
}

impl SessionStore {
    /// The store in `dir` (created on the first save).
    pub fn new(dir: PathBuf) -> SessionStore {
        SessionStore { dir }
    }

    /// From the environment (see [`config_dir`]).
    pub fn from_env() -> anyhow::Result<SessionStore> {
        let var = |k: &str| std::env::var(k).ok();
        config_dir(
            var("CONDUIT_CONFIG_DIR").as_deref(),
            var("XDG_CONFIG_HOME").as_deref(),
            var("HOME").as_deref(),
        )
        .map(SessionStore::new)
        .context("no config directory: set HOME or CONDUIT_CONFIG_DIR")
    }

    /// The session file.
    pub fn path(&self) -> PathBuf {
        self.dir.join("session.json")
    }

    /// The login, if there is one.
    pub fn load(&self) -> anyhow::Result<Option<Session>> {
        let path = self.path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let meta = fs::metadata(&path)?;
        anyhow::ensure!(
            std::os::unix::fs::MetadataExt::uid(&meta) == rustix::process::getuid().as_raw(),
            "{} belongs to another user: not using it (remove it, then `conduit login`)",
            path.display()
        );
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            // Someone widened it: the tokens in it may have been read. Say so, and narrow it.
            eprintln!(
                "conduit: {} was readable by others (mode {:o}); set back to 0600 — \
                 run `conduit logout` and log in again if others could read it",
                path.display(),
                mode & 0o777
            );
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        }
        serde_json::from_slice(&text)
            .map(Some)
            .with_context(|| format!("{} is damaged: run `conduit login` again", path.display()))
    }

    /// Saves the login (mode 0600, replacing the old one at once).
    pub fn save(&self, s: &Session) -> anyhow::Result<()> {
        self.ensure_dir()?;
        let path = self.path();
        // A name of its own: two commands saving at once must not write into one file.
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("the OS random source: {e}"))?;
        let tmp = self.dir.join(format!(
            ".session.json.{}.{}",
            std::process::id(),
            u64::from_ne_bytes(nonce)
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(s)?)?;
        f.sync_all()?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
        // The rename itself durable: after a crash, the spent refresh token must not return.
        File::open(&self.dir).and_then(|d| d.sync_all())?;
        Ok(())
    }

    /// Forgets the login.
    pub fn remove(&self) -> anyhow::Result<()> {
        match fs::remove_file(self.path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.path().display()))
            }
            _ => Ok(()),
        }
    }

    /// An exclusive lock on the login, held while the value lives (refreshes).
    pub fn lock(&self) -> anyhow::Result<File> {
        self.ensure_dir()?;
        let path = self.dir.join("session.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(f)
    }

    fn ensure_dir(&self) -> anyhow::Result<()> {
        ensure_private_dir(&self.dir)
    }
}

fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        // Made private, not narrowed after: no moment in which others may look in.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires_at: u64) -> Session {
        Session {
            manager: "http://127.0.0.1:8080".into(),
            ca_file: None,
            access_token: "a.b.c".into(),
            expires_at,
            refresh_token: Some("r".into()),
            api_key: None,
            user: UserInfo {
                user_id: "u1".into(),
                email: "op@example".into(),
                name: "Op".into(),
                role: "operator".into(),
                customer_id: Some("c1".into()),
                disabled: false,
            },
        }
    }

    #[test]
    fn the_directory_follows_the_environment() {
        let d = config_dir(Some("/c"), Some("/x"), Some("/h"));
        assert_eq!(d, Some("/c".into()));
        let d = config_dir(Some(""), Some("/x"), Some("/h"));
        assert_eq!(d, Some("/x/conduit".into()));
        let d = config_dir(None, None, Some("/h"));
        assert_eq!(d, Some("/h/.config/conduit".into()));
        assert_eq!(config_dir(None, Some(""), None), None);
    }

    #[test]
    fn saved_private_loaded_back_and_narrowed_when_widened() {
        let dir = std::env::temp_dir().join(format!("conduit-cli-session-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = SessionStore::new(dir.join("conduit"));
        assert!(store.load().unwrap().is_none());
        store.save(&session(100)).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.path()), 0o600);
        assert_eq!(mode(&dir.join("conduit")), 0o700);
        assert_eq!(store.load().unwrap(), Some(session(100)));
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(store.load().unwrap().is_some());
        assert_eq!(mode(&store.path()), 0o600);
        store.remove().unwrap();
        store.remove().unwrap();
        assert!(store.load().unwrap().is_none());
        fs::write(store.path(), b"{").unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("conduit login"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn refresh_is_due_before_expiry() {
        let s = session(1000);
        assert!(!s.needs_refresh(1000 - REFRESH_MARGIN_SECS - 1));
        assert!(s.needs_refresh(1000 - REFRESH_MARGIN_SECS));
        assert!(s.needs_refresh(2000));
        assert!(
            !format!("{s:?}").contains("a.b.c"),
            "Debug hides the tokens"
        );
    }
}
