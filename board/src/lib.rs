//! What is specific to the appliance's hardware, one typed handle per thing read:
//!
//! - [`identity`]: board model and serial (device tree on ARM, DMI on x86) and the machine id;
//! - [`thermal`]: the kernel's thermal zones and their temperatures;
//! - [`watchdog`]: the hardware watchdog device, petted while the agent is healthy.
//!
//! Every reader takes a root path (`/` on the box), so tests run against a fake sysfs/procfs
//! tree in a temporary directory, without hardware.

#![forbid(unsafe_code)]

pub mod identity;
pub mod thermal;
pub mod watchdog;

#[cfg(test)]
pub(crate) mod fake_root {
    use std::path::{Path, PathBuf};

    /// A throwaway root directory for a fake /sys and /proc tree.
    pub struct FakeRoot(pub PathBuf);

    impl FakeRoot {
        pub fn new(tag: &str) -> FakeRoot {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("conduit-board-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            FakeRoot(p)
        }

        pub fn write(&self, rel: &str, contents: &[u8]) {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, contents).unwrap();
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
