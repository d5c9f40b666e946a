//! What a poll learns of a BMC beside power and sensors, in one round trip: Get Device ID
//! (identity), Get SEL Info (the event log's size), DCMI Get Power Reading (DCMI 1.5 §6.6.1:
//! the system's power draw) and Get Chassis Status (its fault bits), sent as one batch with
//! the four requests outstanding.
//!
//! A BMC refusing one of them (a completion code: no DCMI, no SEL) leaves that part `None`;
//! only a transport failure fails the whole read.

use ipmi_rs_core::app::DeviceId;
use ipmi_rs_core::connection::IpmiCommand;

use super::commands::{ChassisStatus, GetChassisStatus};

use super::client::{IpmiError, Request};
use super::sel::SelInfo;
use super::Queries;

const NETFN_CHASSIS: u8 = 0x00;
const NETFN_APP: u8 = 0x06;
const NETFN_STORAGE: u8 = 0x0A;
const NETFN_GROUP_EXTENSION: u8 = 0x2C;
const CMD_GET_CHASSIS_STATUS: u8 = 0x01;
const CMD_GET_DEVICE_ID: u8 = 0x01;
const CMD_GET_SEL_INFO: u8 = 0x40;
const CMD_DCMI_GET_POWER_READING: u8 = 0x02;
/// The DCMI group extension identification, first byte of every DCMI request and response.
const DCMI_GROUP: u8 = 0xDC;
/// Mode 1: system power statistics (current, minimum, maximum, average).
const DCMI_SYSTEM_POWER: u8 = 0x01;

/// DCMI Get Power Reading, mode 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerReading {
    /// Current power draw, watts.
    pub current_watts: u16,
    /// Least over the BMC's sampling period, watts.
    pub minimum_watts: u16,
    /// Most over the sampling period, watts.
    pub maximum_watts: u16,
    /// Average over the sampling period, watts.
    pub average_watts: u16,
    /// The sampling period, milliseconds.
    pub period_ms: u32,
    /// Power measurement is active (state bit 6); without it the figures mean nothing.
    pub active: bool,
}

impl PowerReading {
    /// Parses the response data (after the completion code).
    pub fn parse(d: &[u8]) -> Result<PowerReading, IpmiError> {
        const WHAT: &str = "dcmi get power reading";
        if d.len() < 18 || d[0] != DCMI_GROUP {
            return Err(IpmiError::Malformed(WHAT));
        }
        let word = |i: usize| u16::from_le_bytes([d[i], d[i + 1]]);
        Ok(PowerReading {
            current_watts: word(1),
            minimum_watts: word(3),
            maximum_watts: word(5),
            average_watts: word(7),
            period_ms: u32::from_le_bytes([d[13], d[14], d[15], d[16]]),
            active: d[17] & 0x40 != 0,
        })
    }
}

/// A BMC's identity, event log size and power draw.
#[derive(Debug, Clone, PartialEq)]
pub struct BmcStatus {
    /// Get Device ID.
    pub device: Option<DeviceId>,
    /// Get SEL Info.
    pub sel: Option<SelInfo>,
    /// DCMI power reading, when the BMC has DCMI and its power measurement is active.
    pub power: Option<PowerReading>,
    /// Get Chassis Status.
    pub chassis: Option<ChassisStatus>,
}

/// The four requests, in the order [`parse_status`] reads their answers.
pub fn status_requests() -> [Request; 4] {
    [
        Request {
            netfn: NETFN_APP,
            cmd: CMD_GET_DEVICE_ID,
            data: Vec::new(),
        },
        Request {
            netfn: NETFN_STORAGE,
            cmd: CMD_GET_SEL_INFO,
            data: Vec::new(),
        },
        Request {
            netfn: NETFN_GROUP_EXTENSION,
            cmd: CMD_DCMI_GET_POWER_READING,
            data: vec![DCMI_GROUP, DCMI_SYSTEM_POWER, 0x00, 0x00],
        },
        Request {
            netfn: NETFN_CHASSIS,
            cmd: CMD_GET_CHASSIS_STATUS,
            data: Vec::new(),
        },
    ]
}

/// Reads the answers to [`status_requests`]: a refused or malformed answer is that part
/// missing, logged at debug.
pub fn parse_status(replies: &[(u8, Vec<u8>)]) -> BmcStatus {
    let ok = |i: usize| match replies.get(i) {
        Some((0, data)) => Some(data.as_slice()),
        Some((code, _)) => {
            log::debug!("status request {i}: completion code {code:#04x}");
            None
        }
        None => None,
    };
    BmcStatus {
        device: ok(0).and_then(DeviceId::from_data),
        sel: ok(1).and_then(|d| SelInfo::parse(d).ok()),
        power: ok(2)
            .and_then(|d| PowerReading::parse(d).ok())
            .filter(|p| p.active),
        chassis: ok(3).and_then(|d| GetChassisStatus::parse_success_response(d).ok()),
    }
}

/// Reads a BMC's status in one batch.
pub async fn read_status(q: &impl Queries) -> Result<BmcStatus, IpmiError> {
    let replies = q.batch("bmc status", &status_requests()).await?;
    Ok(parse_status(&replies))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Get Device ID of tests/peers/ipmi/bmc.emu (ipmi_sim), after the completion code.
    const DEVICE_ID: [u8; 11] = [
        0x00, 0x23, 0x09, 0x08, 0x02, 0x9f, 0x91, 0x12, 0x00, 0x02, 0x0f,
    ];

    fn power(active: bool) -> Vec<u8> {
        let mut d = vec![0xDC, 0xF0, 0x00, 0x64, 0x00, 0x2C, 0x01, 0xE6, 0x00];
        d.extend([0; 4]); // timestamp
        d.extend(1000u32.to_le_bytes());
        d.push(if active { 0x40 } else { 0 });
        d
    }

    #[test]
    fn a_dcmi_reading_parses_and_an_inactive_one_is_none() {
        let p = PowerReading::parse(&power(true)).unwrap();
        assert_eq!(
            (
                p.current_watts,
                p.minimum_watts,
                p.maximum_watts,
                p.average_watts
            ),
            (240, 100, 300, 230)
        );
        assert_eq!(p.period_ms, 1000);
        let sel = [0x51, 3, 0, 0x40, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0x0A];
        let s = parse_status(&[
            (0, DEVICE_ID.to_vec()),
            (0, sel.to_vec()),
            (0, power(false)),
            (0, vec![0x01, 0x00, 0x08]),
        ]);
        assert!(s.chassis.unwrap().cooling_fault);
        let d = s.device.unwrap();
        assert_eq!((d.manufacturer_id, d.product_id), (0x1291, 0x0f02));
        assert_eq!((d.major_version, d.minor_version), (2, 0));
        let sel = s.sel.unwrap();
        assert_eq!((sel.entries, sel.free_bytes), (3, 0x1F40));
        assert_eq!(s.power, None, "measurement not active");
    }

    #[test]
    fn refused_or_short_answers_leave_their_part_out() {
        // ipmi_sim has no DCMI: 0xC1 (invalid command).
        let s = parse_status(&[(0, DEVICE_ID.to_vec()), (0xC1, vec![]), (0xC1, vec![])]);
        assert!(s.device.is_some() && s.sel.is_none() && s.power.is_none());
        let s = parse_status(&[(0, vec![0x20]), (0, vec![0x51]), (0, vec![0xDC, 1])]);
        assert_eq!(
            s,
            BmcStatus {
                device: None,
                sel: None,
                power: None,
                chassis: None
            }
        );
        assert_eq!(parse_status(&[]).device, None);
    }
}
