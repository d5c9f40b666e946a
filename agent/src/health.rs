//! The health cache: what the poller last learnt of each BMC. The poller writes it; the API
//! answers from it (ListServers, GetServer) and the `agent_bmc_*` gauges are published from the
//! same values. The API never reads the metrics: a family at its series cap drops series from
//! the exposition, never from the API's answers.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::fleet::{BmcStatus, SensorReading};

/// One BMC's last polled state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// Whether the last poll succeeded.
    pub up: bool,
    /// Power state at the last successful poll.
    pub power_on: Option<bool>,
    /// Unix time of the last successful poll.
    pub last_success: Option<f64>,
    /// Sensor readings of the last successful sensor poll.
    pub sensors: Vec<SensorReading>,
    /// Identity, power draw, event log size and health of the last successful status read.
    pub status: Option<BmcStatus>,
}

/// Every polled BMC's [`Health`], by server id.
#[derive(Debug, Default)]
pub struct HealthCache {
    servers: RwLock<HashMap<String, Health>>,
}

impl HealthCache {
    /// The state of `server`; `None` before its first poll.
    pub fn get(&self, server: &str) -> Option<Health> {
        self.read().get(server).cloned()
    }

    /// Records a successful power poll; returns the previous state (`None` on the first poll).
    pub fn record_up(&self, server: &str, power_on: bool, now: f64) -> Option<Health> {
        let mut all = self.write();
        let previous = all.get(server).cloned();
        let h = all.entry(server.to_owned()).or_default();
        h.up = true;
        h.power_on = Some(power_on);
        h.last_success = Some(now);
        previous
    }

    /// Records a failed poll (its readings are no longer current: dropped); returns the
    /// previous state.
    pub fn record_down(&self, server: &str) -> Option<Health> {
        let mut all = self.write();
        let previous = all.get(server).cloned();
        let h = all.entry(server.to_owned()).or_default();
        h.up = false;
        h.sensors.clear();
        h.status = None;
        previous
    }

    /// Records the sensor readings of a sensor poll (none when it failed); returns the
    /// readings they replace.
    pub fn record_sensors(&self, server: &str, sensors: Vec<SensorReading>) -> Vec<SensorReading> {
        std::mem::replace(
            &mut self.write().entry(server.to_owned()).or_default().sensors,
            sensors,
        )
    }

    /// Records the status read of a poll (none when it failed); returns the one it replaces.
    pub fn record_status(&self, server: &str, status: Option<BmcStatus>) -> Option<BmcStatus> {
        std::mem::replace(
            &mut self.write().entry(server.to_owned()).or_default().status,
            status,
        )
    }

    /// Forgets `server` (removed from the inventory); returns what was known of it.
    pub fn forget(&self, server: &str) -> Option<Health> {
        self.write().remove(server)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Health>> {
        self.servers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Health>> {
        self.servers.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_transitions() {
        let c = HealthCache::default();
        assert_eq!(c.get("n1"), None);
        assert_eq!(c.record_up("n1", true, 10.0), None);
        assert_eq!(c.record_down("n1").map(|h| h.up), Some(true));
        let h = c.get("n1").unwrap();
        assert!(!h.up);
        // The last good values stay known; `up` says they are not current.
        assert_eq!((h.power_on, h.last_success), (Some(true), Some(10.0)));
    }
}
