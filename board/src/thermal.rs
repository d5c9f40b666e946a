//! Thermal zones: `/sys/class/thermal/thermal_zone*/{type,temp}` (millidegrees Celsius).

use std::io;
use std::path::{Path, PathBuf};

/// One thermal zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThermalZone {
    /// Directory name, e.g. `thermal_zone0`.
    pub name: String,
    /// What the zone measures (its `type`), e.g. `cpu-thermal`.
    pub kind: String,
    dir: PathBuf,
}

impl ThermalZone {
    /// Every zone under `root` (`/` on the box), sorted by number.
    pub fn discover(root: &Path) -> Vec<ThermalZone> {
        let base = root.join("sys/class/thermal");
        let Ok(entries) = std::fs::read_dir(&base) else {
            return Vec::new();
        };
        let mut zones: Vec<(u32, ThermalZone)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n: u32 = name.strip_prefix("thermal_zone")?.parse().ok()?;
                let dir = base.join(&name);
                let kind = std::fs::read_to_string(dir.join("type"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default();
                Some((n, ThermalZone { name, kind, dir }))
            })
            .collect();
        zones.sort_by_key(|(n, _)| *n);
        zones.into_iter().map(|(_, z)| z).collect()
    }

    /// The zone's current temperature in degrees Celsius.
    pub fn celsius(&self) -> io::Result<f64> {
        let raw = std::fs::read_to_string(self.dir.join("temp"))?;
        let milli: i64 = raw.trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: temp {raw:?}: {e}", self.name),
            )
        })?;
        Ok(milli as f64 / 1000.0)
    }

    /// The zone's label value: its type when it has one, else its directory name.
    pub fn label(&self) -> &str {
        if self.kind.is_empty() {
            &self.name
        } else {
            &self.kind
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_root::FakeRoot;

    #[test]
    fn zones_in_order_with_their_temperatures() {
        let r = FakeRoot::new("thermal");
        r.write("sys/class/thermal/thermal_zone10/type", b"gpu-thermal\n");
        r.write("sys/class/thermal/thermal_zone10/temp", b"51250\n");
        r.write("sys/class/thermal/thermal_zone2/type", b"cpu-thermal\n");
        r.write("sys/class/thermal/thermal_zone2/temp", b"-1500\n");
        r.write("sys/class/thermal/cooling_device0/type", b"fan\n");
        r.write("sys/class/thermal/thermal_zone3/temp", b"garbage\n");
        let zones = ThermalZone::discover(r.path());
        let names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
        assert_eq!(names, ["thermal_zone2", "thermal_zone3", "thermal_zone10"]);
        assert_eq!(zones[0].celsius().unwrap(), -1.5);
        assert_eq!(zones[0].label(), "cpu-thermal");
        assert!(zones[1].celsius().is_err());
        assert_eq!(zones[1].label(), "thermal_zone3");
        assert_eq!(zones[2].celsius().unwrap(), 51.25);
    }

    #[test]
    fn no_thermal_class() {
        assert!(ThermalZone::discover(FakeRoot::new("nothermal").path()).is_empty());
    }
}
