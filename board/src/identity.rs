//! Board identity: model and serial number, and the machine id.
//!
//! ARM boards describe themselves in the device tree (`/proc/device-tree/model`,
//! `/proc/device-tree/serial-number`, NUL-terminated strings); x86 boxes in DMI
//! (`/sys/class/dmi/id/*`). `/etc/machine-id` identifies the installed system.

use std::path::Path;

/// What the board says it is. Every field is optional: a box may lack any of these files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Vendor (DMI `sys_vendor`); ARM device trees fold it into the model.
    pub vendor: Option<String>,
    /// Model: device-tree `model`, or DMI `product_name`.
    pub model: Option<String>,
    /// Board: device-tree `compatible` (first entry), or DMI `board_name`.
    pub board: Option<String>,
    /// Serial number: device-tree `serial-number`, or DMI `product_serial` (root-only).
    pub serial: Option<String>,
    /// `/etc/machine-id`.
    pub machine_id: Option<String>,
}

/// Reads a sysfs/procfs string: NULs and surrounding whitespace dropped, empty means absent.
/// Firmware fills unset DMI fields with placeholders; those count as absent too.
fn read_string(root: &Path, rel: &str) -> Option<String> {
    let bytes = std::fs::read(root.join(rel)).ok()?;
    let first = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
    let s = String::from_utf8_lossy(first).trim().to_owned();
    let placeholder = [
        "",
        "To be filled by O.E.M.",
        "Default string",
        "Not Specified",
        "None",
    ];
    (!placeholder.contains(&s.as_str())).then_some(s)
}

impl Identity {
    /// Reads the identity of the board under `root` (`/` on the box).
    pub fn read(root: &Path) -> Identity {
        let dt_model = read_string(root, "proc/device-tree/model");
        let is_dt = dt_model.is_some();
        Identity {
            vendor: read_string(root, "sys/class/dmi/id/sys_vendor"),
            model: dt_model.or_else(|| read_string(root, "sys/class/dmi/id/product_name")),
            board: if is_dt {
                read_string(root, "proc/device-tree/compatible")
            } else {
                read_string(root, "sys/class/dmi/id/board_name")
            },
            serial: read_string(root, "proc/device-tree/serial-number")
                .or_else(|| read_string(root, "sys/class/dmi/id/product_serial")),
            machine_id: read_string(root, "etc/machine-id"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_root::FakeRoot;

    #[test]
    fn arm_device_tree() {
        let r = FakeRoot::new("dt");
        r.write(
            "proc/device-tree/model",
            b"Raspberry Pi 4 Model B Rev 1.4\0",
        );
        r.write(
            "proc/device-tree/compatible",
            b"raspberrypi,4-model-b\0brcm,bcm2711\0",
        );
        r.write("proc/device-tree/serial-number", b"10000000abcdef01\0");
        r.write("etc/machine-id", b"0123456789abcdef0123456789abcdef\n");
        let id = Identity::read(r.path());
        assert_eq!(id.model.as_deref(), Some("Raspberry Pi 4 Model B Rev 1.4"));
        assert_eq!(id.board.as_deref(), Some("raspberrypi,4-model-b"));
        assert_eq!(id.serial.as_deref(), Some("10000000abcdef01"));
        assert_eq!(
            id.machine_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(id.vendor, None);
    }

    #[test]
    fn x86_dmi_with_placeholders() {
        let r = FakeRoot::new("dmi");
        r.write("sys/class/dmi/id/sys_vendor", b"Supermicro\n");
        r.write("sys/class/dmi/id/product_name", b"SYS-E300-9D\n");
        r.write("sys/class/dmi/id/board_name", b"X11SDV-4C-TLN2F\n");
        r.write(
            "sys/class/dmi/id/product_serial",
            b"To be filled by O.E.M.\n",
        );
        let id = Identity::read(r.path());
        assert_eq!(id.vendor.as_deref(), Some("Supermicro"));
        assert_eq!(id.model.as_deref(), Some("SYS-E300-9D"));
        assert_eq!(id.board.as_deref(), Some("X11SDV-4C-TLN2F"));
        assert_eq!(id.serial, None);
    }

    #[test]
    fn nothing_there() {
        let r = FakeRoot::new("empty");
        assert_eq!(Identity::read(r.path()), Identity::default());
    }
}
