//! The SDR repository and sensor readings.
//!
//! Records are read in small chunks under a reservation (Reserve SDR Repository, then Get SDR
//! with offsets): many BMCs, ipmi_sim among them, refuse to return a whole record at once
//! (completion code 0xCA), and a BMC that changes its repository mid-read cancels the
//! reservation (0xC5), after which the record is read again. Records are parsed by ipmi-rs-core;
//! threshold sensors are then read and converted with their record's linear formula.

use ipmi_rs_core::storage::sdr::record::{DataFormat, FullSensorRecord, WithSensorRecordCommon};
use ipmi_rs_core::storage::sdr::{Record, SdrRecordInfo as RecordInfo};

use super::client::IpmiError;
use super::IpmiBmc;

const NETFN_STORAGE: u8 = 0x0A;
const NETFN_SENSOR: u8 = 0x04;
/// Bytes per Get SDR: small enough for every BMC's message buffer.
const CHUNK: u8 = 16;
/// Most records read from one repository (a loop guard against a BMC whose "next record"
/// chain never ends).
const MAX_RECORDS: usize = 1024;

/// A threshold sensor from the repository.
#[derive(Debug, Clone)]
pub struct SensorRecord {
    /// Sensor name from the record (untrusted: sanitize before using it as a label).
    pub name: String,
    /// Sensor number.
    pub number: u8,
    /// Unit label, e.g. `celsius`, `rpm`.
    pub unit: &'static str,
    record: FullSensorRecord,
}

/// One sensor reading.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorReading {
    /// Sensor name.
    pub name: String,
    /// Unit label.
    pub unit: &'static str,
    /// Converted value; `None` when the BMC says the reading is unavailable.
    pub value: Option<f64>,
    /// `ok`, `non_critical`, `critical`, `non_recoverable` or `unavailable`.
    pub state: &'static str,
}

/// Unit label for an IPMI base unit code (IPMI 2.0 table 43-15); `other` beyond the common ones.
pub fn unit_label(code: u8, percentage: bool) -> &'static str {
    if percentage {
        return "percent";
    }
    match code {
        1 => "celsius",
        2 => "fahrenheit",
        3 => "kelvin",
        4 => "volts",
        5 => "amps",
        6 => "watts",
        7 => "joules",
        18 => "rpm",
        19 => "hertz",
        0 => "unspecified",
        _ => "other",
    }
}

async fn reserve(bmc: &IpmiBmc) -> Result<[u8; 2], IpmiError> {
    let r = bmc
        .request("reserve sdr repository", NETFN_STORAGE, 0x22, &[], true)
        .await?;
    r.get(..2)
        .map(|b| [b[0], b[1]])
        .ok_or(IpmiError::Malformed("reserve sdr repository"))
}

async fn get_sdr(
    bmc: &IpmiBmc,
    reservation: [u8; 2],
    id: u16,
    offset: u8,
    len: u8,
) -> Result<(u16, Vec<u8>), IpmiError> {
    let [lo, hi] = id.to_le_bytes();
    let r = bmc
        .request(
            "get sdr",
            NETFN_STORAGE,
            0x23,
            &[reservation[0], reservation[1], lo, hi, offset, len],
            true,
        )
        .await?;
    if r.len() < 2 {
        return Err(IpmiError::Malformed("get sdr"));
    }
    Ok((u16::from_le_bytes([r[0], r[1]]), r[2..].to_vec()))
}

/// Reads one whole record (header first, then the body in chunks). Returns the next id.
async fn read_record(
    bmc: &IpmiBmc,
    reservation: [u8; 2],
    id: u16,
) -> Result<(u16, Vec<u8>), IpmiError> {
    let (next, header) = get_sdr(bmc, reservation, id, 0, 5).await?;
    if header.len() < 5 {
        return Err(IpmiError::Malformed("get sdr"));
    }
    let total = 5 + header[4] as usize;
    let mut record = header;
    while record.len() < total {
        let want = (total - record.len()).min(CHUNK as usize) as u8;
        let (_, chunk) = get_sdr(bmc, reservation, id, record.len() as u8, want).await?;
        if chunk.is_empty() {
            return Err(IpmiError::Malformed("get sdr"));
        }
        record.extend_from_slice(&chunk);
    }
    record.truncate(total);
    Ok((next, record))
}

/// Reads every record of the repository, parsed; records ipmi-rs-core cannot parse are skipped.
pub async fn read_repository(bmc: &IpmiBmc) -> Result<Vec<Record>, IpmiError> {
    let mut reservation = reserve(bmc).await?;
    let mut records = Vec::new();
    let mut id = 0u16;
    let mut restarts = 0;
    while id != 0xFFFF && records.len() < MAX_RECORDS {
        match read_record(bmc, reservation, id).await {
            Ok((next, raw)) => {
                let mut with_next = next.to_le_bytes().to_vec();
                with_next.extend_from_slice(&raw);
                match RecordInfo::parse(&with_next) {
                    Ok(info) => records.push(info.record),
                    Err(e) => {
                        log::debug!("bmc {}: sdr record {id:#06x} skipped: {e:?}", bmc.addr())
                    }
                }
                if next == id {
                    break; // a BMC pointing a record at itself
                }
                id = next;
            }
            // The repository changed under us: reserve again and re-read this record.
            Err(IpmiError::Completion { code: 0xC5, .. }) if restarts < 3 => {
                restarts += 1;
                reservation = reserve(bmc).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(records)
}

/// The threshold sensors (full sensor records) of a repository.
pub fn threshold_sensors(records: &[Record]) -> Vec<SensorRecord> {
    records
        .iter()
        .filter_map(|r| r.full_sensor())
        .map(|f| {
            let units = f.common().sensor_units;
            SensorRecord {
                name: f.common().sensor_id.to_string(),
                number: f.sensor_number().get(),
                unit: unit_label(u8::from(units.base_unit), units.is_percentage),
                record: f.clone(),
            }
        })
        .collect()
}

/// Converts a raw reading with the record's linear formula, `y = (M x + B 10^Bexp) 10^Rexp`.
/// Non-linear sensors are not converted (`None`).
pub fn convert(record: &FullSensorRecord, raw: u8) -> Option<f64> {
    use ipmi_rs_core::storage::sdr::record::Linearization;
    if !matches!(record.linearization, Linearization::Linear) {
        return None;
    }
    let x = match record.analog_data_format? {
        DataFormat::Unsigned => f64::from(raw),
        // One's complement: a set sign bit means -(the inverted bits).
        DataFormat::OnesComplement if raw & 0x80 != 0 => -f64::from(!raw),
        DataFormat::OnesComplement => f64::from(raw),
        DataFormat::TwosComplement => f64::from(raw as i8),
    };
    let b = f64::from(record.b) * 10f64.powi(i32::from(record.b_exponent));
    Some((f64::from(record.m) * x + b) * 10f64.powi(i32::from(record.result_exponent)))
}

/// [`convert`] for a sensor record (tests outside this module).
#[cfg(test)]
pub(crate) fn convert_for_test(sensor: &SensorRecord, raw: u8) -> Option<f64> {
    convert(&sensor.record, raw)
}

/// The state bits of a Get Sensor Reading response (byte 3, threshold sensors).
pub fn threshold_state(status: u8) -> &'static str {
    if status & 0x24 != 0 {
        "non_recoverable"
    } else if status & 0x12 != 0 {
        "critical"
    } else if status & 0x09 != 0 {
        "non_critical"
    } else {
        "ok"
    }
}

/// Reads one sensor.
pub async fn read_sensor(bmc: &IpmiBmc, sensor: &SensorRecord) -> Result<SensorReading, IpmiError> {
    let unavailable = || SensorReading {
        name: sensor.name.clone(),
        unit: sensor.unit,
        value: None,
        state: "unavailable",
    };
    let r = match bmc
        .request(
            "get sensor reading",
            NETFN_SENSOR,
            0x2D,
            &[sensor.number],
            true,
        )
        .await
    {
        Ok(r) => r,
        // The BMC answered, but has no reading for this sensor now (0xCB "not present",
        // 0xD5 "not in present state", ...): that sensor is unavailable, not the BMC.
        Err(IpmiError::Completion { .. }) => return Ok(unavailable()),
        Err(e) => return Err(e),
    };
    if r.len() < 2 {
        return Err(IpmiError::Malformed("get sensor reading"));
    }
    if r[1] & 0x20 != 0 || r[1] & 0x40 == 0 {
        return Ok(unavailable());
    }
    Ok(SensorReading {
        name: sensor.name.clone(),
        unit: sensor.unit,
        value: convert(&sensor.record, r[0]),
        state: threshold_state(r.get(2).copied().unwrap_or(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_states() {
        assert_eq!(threshold_state(0x00), "ok");
        assert_eq!(threshold_state(0x08), "non_critical");
        assert_eq!(threshold_state(0x01), "non_critical");
        assert_eq!(threshold_state(0x10 | 0x08), "critical");
        assert_eq!(threshold_state(0x20), "non_recoverable");
    }

    #[test]
    fn units() {
        assert_eq!(unit_label(1, false), "celsius");
        assert_eq!(unit_label(18, false), "rpm");
        assert_eq!(unit_label(1, true), "percent");
        assert_eq!(unit_label(200, false), "other");
    }

    #[test]
    fn ipmi_sim_records_parse_and_convert() {
        // The two full sensor records of tests/peers/ipmi/bmc.emu, as Get SDR returns them.
        let cpu: Vec<u8> = [
            0x00, 0x00, 0x51, 0x01, 0x33, 0x20, 0x00, 0x01, 0x03, 0x01, 0x67, 0x68, 0x01, 0x01,
            0x00, 0x00, 0x00, 0x00, 0x38, 0x38, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x5a, 0x50, 0x46, 0x00, 0x00, 0x00,
            0x02, 0x02, 0x00, 0x00, 0x00, 0xc8, 0x43, 0x50, 0x55, 0x20, 0x54, 0x65, 0x6d, 0x70,
        ]
        .to_vec();
        let mut with_next = vec![0xFF, 0xFF];
        with_next.extend_from_slice(&cpu);
        let rec = RecordInfo::parse(&with_next).unwrap().record;
        let sensors = threshold_sensors(&[rec]);
        assert_eq!(sensors.len(), 1);
        assert_eq!(
            (sensors[0].name.as_str(), sensors[0].number, sensors[0].unit),
            ("CPU Temp", 1, "celsius")
        );
        assert_eq!(convert(&sensors[0].record, 0x28), Some(40.0));

        // The same record declaring one's-complement readings (sensor units 1, bits 7:6 = 01).
        let mut ones = vec![0xFF, 0xFF];
        ones.extend_from_slice(&cpu);
        ones[2 + 20] = 0x40;
        let rec = RecordInfo::parse(&ones).unwrap().record;
        let s = &threshold_sensors(&[rec])[0];
        assert_eq!(convert(&s.record, 0x05), Some(5.0));
        assert_eq!(convert(&s.record, 0xFA), Some(-5.0));
        assert_eq!(convert(&s.record, 0xFF), Some(-0.0));
    }
}
