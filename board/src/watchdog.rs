//! The hardware watchdog (`/dev/watchdog`): once opened, the board reboots unless the device is
//! written to ("petted") within its timeout. Closing after writing the magic character `V`
//! disarms it, so a clean shutdown does not reboot the box; a crash or hang does.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An open, armed watchdog device.
#[derive(Debug)]
pub struct Watchdog {
    file: Option<File>,
    path: PathBuf,
}

impl Watchdog {
    /// Opens (and so arms) the watchdog at `path`.
    pub fn open(path: &Path) -> io::Result<Watchdog> {
        let file = OpenOptions::new().write(true).open(path).map_err(|e| {
            io::Error::new(e.kind(), format!("open watchdog {}: {e}", path.display()))
        })?;
        Ok(Watchdog {
            file: Some(file),
            path: path.to_owned(),
        })
    }

    /// Pets the watchdog: the board will not reboot for another timeout period.
    pub fn pet(&mut self) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("watchdog closed"))?;
        file.write_all(b"\0")?;
        file.flush()
    }

    /// Disarms the watchdog with the magic close (`V`, then close) for a clean shutdown.
    pub fn disarm(mut self) -> io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.write_all(b"V")?;
            file.flush()?;
        }
        Ok(())
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_root::FakeRoot;

    #[test]
    fn pets_then_magic_close() {
        let r = FakeRoot::new("wd");
        r.write("dev/watchdog", b"");
        let dev = r.path().join("dev/watchdog");
        let mut wd = Watchdog::open(&dev).unwrap();
        wd.pet().unwrap();
        wd.pet().unwrap();
        wd.disarm().unwrap();
        assert_eq!(std::fs::read(&dev).unwrap(), b"\0\0V");
    }

    #[test]
    fn dropping_without_disarm_leaves_it_armed() {
        let r = FakeRoot::new("wd2");
        r.write("dev/watchdog", b"");
        let dev = r.path().join("dev/watchdog");
        let mut wd = Watchdog::open(&dev).unwrap();
        wd.pet().unwrap();
        drop(wd);
        assert_eq!(
            std::fs::read(&dev).unwrap(),
            b"\0",
            "no magic V on a crash-like drop"
        );
    }

    #[test]
    fn missing_device_names_the_path() {
        let err = Watchdog::open(Path::new("/nonexistent/watchdog")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/watchdog"), "{err}");
    }
}
