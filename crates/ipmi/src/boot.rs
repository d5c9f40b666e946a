//! The boot device override: Set and Get System Boot Options (chassis netFn, commands 0x08 and
//! 0x09), parameter 5, the boot flags (IPMI 2.0 §28.12, table 28-14).
//!
//! Setting follows the parameter's protocol where the BMC has it: "set in progress" (parameter
//! 0), the flags, then "set complete". A BMC without parameter 0 (ipmi_sim refuses it) gets the
//! flags alone, as ipmitool's `chassis bootdev` does.
//!
//! A next-boot-only override is cleared by the BMC once the host boots, and many BMCs also
//! clear it if the host does not restart within 60 s of the write (the "valid bit clearing"
//! of parameter 3): power-cycle soon after setting one.

use super::client::IpmiError;
use super::IpmiBmc;

const NETFN_CHASSIS: u8 = 0x00;
const CMD_SET_BOOT_OPTIONS: u8 = 0x08;
const CMD_GET_BOOT_OPTIONS: u8 = 0x09;
const PARAM_SET_IN_PROGRESS: u8 = 0x00;
const PARAM_BOOT_FLAGS: u8 = 0x05;

/// The device the host boots from (boot flags data 2, bits 5:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// No override: the BIOS's own order.
    NoOverride,
    /// Network (PXE).
    Pxe,
    /// The default hard drive.
    Disk,
    /// The default CD/DVD drive.
    Cdrom,
    /// Into the BIOS setup.
    BiosSetup,
    /// Another selector (safe mode, diagnostic partition, remote media, …), as read back.
    Other(u8),
}

impl BootDevice {
    fn code(self) -> u8 {
        match self {
            BootDevice::NoOverride => 0x0,
            BootDevice::Pxe => 0x1,
            BootDevice::Disk => 0x2,
            BootDevice::Cdrom => 0x5,
            BootDevice::BiosSetup => 0x6,
            BootDevice::Other(c) => c & 0x0F,
        }
    }

    fn from_code(c: u8) -> BootDevice {
        match c & 0x0F {
            0x0 => BootDevice::NoOverride,
            0x1 => BootDevice::Pxe,
            0x2 => BootDevice::Disk,
            0x5 => BootDevice::Cdrom,
            0x6 => BootDevice::BiosSetup,
            c => BootDevice::Other(c),
        }
    }
}

/// For how long an override holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// The next boot only.
    NextBoot,
    /// Every boot until changed.
    Persistent,
}

/// A boot override to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootOverride {
    /// The device.
    pub device: BootDevice,
    /// Next boot only, or persistent.
    pub persistence: Persistence,
    /// Boot the device in EFI mode rather than legacy (PC compatible).
    pub efi: bool,
}

impl BootOverride {
    /// The five data bytes of parameter 5 (valid bit set; the other options at their defaults:
    /// no CMOS clear, no lock-out, BIOS verbosity and console redirection as configured).
    pub fn emit(&self) -> [u8; 5] {
        let mut b1 = 0x80;
        if self.persistence == Persistence::Persistent {
            b1 |= 0x40;
        }
        if self.efi {
            b1 |= 0x20;
        }
        [b1, self.device.code() << 2, 0, 0, 0]
    }
}

/// The boot flags as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    /// The flags are valid: the override will be applied (a BMC clears it after use).
    pub valid: bool,
    /// The parameter is locked (another party is setting it, or it is marked invalid).
    pub locked: bool,
    /// The override (device, persistence, EFI) the flags hold.
    pub boot: BootOverride,
}

impl BootFlags {
    /// Parses Get System Boot Options response data for parameter 5 (parameter version,
    /// selector, five data bytes).
    pub fn parse(d: &[u8]) -> Result<BootFlags, IpmiError> {
        let malformed = IpmiError::Malformed("get system boot options");
        if d.len() < 7 || d[1] & 0x7F != PARAM_BOOT_FLAGS {
            return Err(malformed);
        }
        let (b1, b2) = (d[2], d[3]);
        Ok(BootFlags {
            valid: b1 & 0x80 != 0,
            locked: d[1] & 0x80 != 0,
            boot: BootOverride {
                device: BootDevice::from_code(b2 >> 2),
                persistence: if b1 & 0x40 != 0 {
                    Persistence::Persistent
                } else {
                    Persistence::NextBoot
                },
                efi: b1 & 0x20 != 0,
            },
        })
    }
}

async fn set_parameter(bmc: &IpmiBmc, param: u8, data: &[u8]) -> Result<(), IpmiError> {
    let mut req = vec![param];
    req.extend_from_slice(data);
    // Writing the same value twice leaves the same options: safe to resend.
    bmc.request(
        "set system boot options",
        NETFN_CHASSIS,
        CMD_SET_BOOT_OPTIONS,
        &req,
        true,
    )
    .await
    .map(drop)
}

/// Sets the boot device override; see the module docs.
pub async fn set_boot_override(bmc: &IpmiBmc, boot: BootOverride) -> Result<(), IpmiError> {
    // Set in progress (1); a BMC without parameter 0 answers with a completion code.
    let in_progress = match set_parameter(bmc, PARAM_SET_IN_PROGRESS, &[0x01]).await {
        Ok(()) => true,
        Err(IpmiError::Completion { .. }) => false,
        Err(e) => return Err(e),
    };
    let r = set_parameter(bmc, PARAM_BOOT_FLAGS, &boot.emit()).await;
    if in_progress {
        // Set complete (0), also after a failed write, so the parameters are not left locked.
        let done = set_parameter(bmc, PARAM_SET_IN_PROGRESS, &[0x00]).await;
        r?;
        return done;
    }
    r
}

/// Reads the boot flags back.
pub async fn boot_flags(bmc: &IpmiBmc) -> Result<BootFlags, IpmiError> {
    let d = bmc
        .request(
            "get system boot options",
            NETFN_CHASSIS,
            CMD_GET_BOOT_OPTIONS,
            &[PARAM_BOOT_FLAGS, 0x00, 0x00],
            true,
        )
        .await?;
    BootFlags::parse(&d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_flags_bytes() {
        let pxe_once = BootOverride {
            device: BootDevice::Pxe,
            persistence: Persistence::NextBoot,
            efi: false,
        };
        // ipmitool chassis bootdev pxe: 80 04 00 00 00.
        assert_eq!(pxe_once.emit(), [0x80, 0x04, 0x00, 0x00, 0x00]);
        let bios_always_efi = BootOverride {
            device: BootDevice::BiosSetup,
            persistence: Persistence::Persistent,
            efi: true,
        };
        assert_eq!(bios_always_efi.emit(), [0xE0, 0x18, 0, 0, 0]);
        let disk = BootOverride {
            device: BootDevice::Disk,
            ..pxe_once
        };
        assert_eq!(disk.emit()[1], 0x08);
        let cd = BootOverride {
            device: BootDevice::Cdrom,
            ..pxe_once
        };
        assert_eq!(cd.emit()[1], 0x14);
    }

    #[test]
    fn boot_flags_read_back() {
        let f = BootFlags::parse(&[0x01, 0x05, 0xE0, 0x18, 0, 0, 0]).unwrap();
        assert!(f.valid && !f.locked);
        assert_eq!(
            f.boot,
            BootOverride {
                device: BootDevice::BiosSetup,
                persistence: Persistence::Persistent,
                efi: true
            }
        );
        // ipmi_sim's answer: only the device is kept.
        let f = BootFlags::parse(&[0x01, 0x05, 0x00, 0x08, 0, 0, 0]).unwrap();
        assert!(!f.valid);
        assert_eq!(f.boot.device, BootDevice::Disk);
        // Remote CD/DVD (1000b): kept as a code.
        let f = BootFlags::parse(&[0x01, 0x85, 0x80, 0x20, 0, 0, 0]).unwrap();
        assert!(f.locked);
        assert_eq!(f.boot.device, BootDevice::Other(0x8));
        assert!(BootFlags::parse(&[0x01, 0x04, 0x80, 0x20, 0, 0, 0]).is_err());
        assert!(BootFlags::parse(&[0x01, 0x05, 0x80]).is_err());
    }
}
