//! The health poller: refreshes every BMC's power state and sensors on an interval into the
//! fleet's [`HealthCache`](crate::health::HealthCache), which the API answers from, and
//! publishes the same values in the `agent_bmc_*` gauges. `/metrics` reads those gauges, so a
//! scrape never waits on a BMC and a dead BMC cannot slow or fail it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::future;

use std::collections::HashSet;

use prometheus_client::metrics::gauge::Gauge;

use crate::fleet::{Bmc, BmcIdentity, BmcStatus, Fleet};
use crate::health::Health;
use crate::metrics::{AgentMetrics, BmcInfo, HealthLabels, SensorLabels};
use conduit_metrics::labels::sanitize_value;
use conduit_metrics::labels::ServerId;
use conduit_runtime::heartbeat::{Heartbeat, Heartbeats};
use conduit_runtime::{every, Background};

/// Most BMCs polled at once.
const CONCURRENCY: usize = 64;

/// Starts polling `fleet` every `interval` (first round at once) on the `bmc-poller` thread,
/// beating `heartbeats` as BMCs are polled; a stop drops the round in progress.
pub fn start(
    fleet: Arc<Fleet>,
    metrics: Arc<AgentMetrics>,
    interval: Duration,
    heartbeats: &Heartbeats,
) -> std::io::Result<Background> {
    // One BMC's poll is power (one operation timeout), the SDR repository (its budget plus a
    // timeout), the readings (a timeout) and the status read (a timeout); with up to
    // CONCURRENCY in flight, a step of one
    // ends at least that often while a round runs. The beat goes stale after STALE_AFTER
    // periods: the period is that bound over STALE_AFTER, with a second to spare.
    let t = fleet.operation_timeout();
    let step = crate::fleet::SDR_BUDGET + t * 4;
    let period = step / conduit_runtime::heartbeat::STALE_AFTER + Duration::from_secs(1);
    let beat = heartbeats.register("bmc poller", period.max(t * 2));
    Background::spawn("bmc-poller", move |stopped| {
        let ex = smol::LocalExecutor::new();
        future::block_on(ex.run(async {
            every(interval, &stopped, &beat, || {
                poll_all(&ex, &fleet, &metrics, &beat)
            })
            .await;
            // The sessions are closed by the agent's stop, under its time bound.
        }));
    })
}

async fn poll_all(
    ex: &smol::LocalExecutor<'_>,
    fleet: &Arc<Fleet>,
    metrics: &Arc<AgentMetrics>,
    beat: &Arc<Heartbeat>,
) {
    let permits = Arc::new(async_lock::Semaphore::new(CONCURRENCY));
    let tasks: Vec<_> = fleet
        .bmcs()
        .iter()
        .map(|bmc| {
            let (fleet, metrics, bmc, permits, beat) = (
                fleet.clone(),
                metrics.clone(),
                bmc.clone(),
                permits.clone(),
                beat.clone(),
            );
            ex.spawn(async move {
                let _permit = permits.acquire().await;
                poll_one(&fleet, &metrics, &bmc).await;
                beat.tick();
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
}

fn sensor_labels(server_id: &str, r: &crate::fleet::SensorReading) -> SensorLabels {
    SensorLabels {
        server_id: server_id.to_owned(),
        sensor: sanitize_value(&r.name),
        unit: r.unit,
    }
}

/// Publishes `readings` (values, and states where known) and removes the series of
/// `previous` readings that are not among them: a sensor that is unavailable now, or gone from
/// the repository, has no series rather than a stale one.
fn publish_sensors(
    metrics: &AgentMetrics,
    server_id: &str,
    readings: &[crate::fleet::SensorReading],
    previous: &[crate::fleet::SensorReading],
) {
    let (mut values, mut states) = (HashSet::new(), HashSet::new());
    for r in readings {
        let labels = sensor_labels(server_id, r);
        if let Some(v) = r.value {
            metrics.bmc_sensor_value.with(&labels, |g| g.set(v));
            values.insert(labels.clone());
        }
        if let Some(level) = r.level() {
            metrics
                .bmc_sensor_state
                .with(&labels, |g| g.set(i64::from(level)));
            states.insert(labels);
        }
    }
    for r in previous {
        let labels = sensor_labels(server_id, r);
        if !values.contains(&labels) {
            metrics.bmc_sensor_value.remove(&labels);
        }
        if !states.contains(&labels) {
            metrics.bmc_sensor_state.remove(&labels);
        }
    }
}

fn info_labels(server_id: &str, i: &BmcIdentity) -> BmcInfo {
    BmcInfo {
        server_id: server_id.to_owned(),
        manufacturer: sanitize_value(&i.manufacturer),
        product: sanitize_value(&i.product),
        firmware: sanitize_value(&i.firmware),
        ipmi_version: sanitize_value(&i.ipmi_version),
        serial: sanitize_value(&i.serial),
    }
}

/// Publishes a status read (`None`: it failed, or the BMC is gone) and removes what
/// `previous` had that it has not: a firmware update replaces the info series, a log the BMC
/// stopped reporting loses its series.
fn publish_status(
    metrics: &AgentMetrics,
    server_id: &str,
    status: Option<&BmcStatus>,
    previous: Option<&BmcStatus>,
) {
    let server = ServerId {
        server_id: server_id.to_owned(),
    };
    let info = status
        .and_then(|s| s.identity.as_ref())
        .map(|i| info_labels(server_id, i));
    if let Some(old) = previous
        .and_then(|s| s.identity.as_ref())
        .map(|i| info_labels(server_id, i))
    {
        if info.as_ref() != Some(&old) {
            metrics.bmc_info.remove(&old);
        }
    }
    if let Some(labels) = &info {
        metrics.bmc_info.with(labels, |g| g.set(1));
    }
    let gauge = |family: &conduit_metrics::catalog::CappedFamily<ServerId, Gauge>,
                 v: Option<u64>| match v {
        Some(v) => {
            family.with(&server, |g| g.set(i64::try_from(v).unwrap_or(i64::MAX)));
        }
        None => {
            family.remove(&server);
        }
    };
    gauge(
        &metrics.bmc_event_log_entries,
        status.and_then(|s| s.event_log_entries),
    );
    gauge(
        &metrics.bmc_event_log_free_bytes,
        status.and_then(|s| s.event_log_free_bytes),
    );
    match status.and_then(|s| s.power_watts) {
        Some(w) => {
            metrics.bmc_power_consumption.with(&server, |g| g.set(w));
        }
        None => {
            metrics.bmc_power_consumption.remove(&server);
        }
    }
    let health = |s: Option<&BmcStatus>| s.map(|s| s.health.clone()).unwrap_or_default();
    let now = health(status);
    for (component, level) in &now {
        let labels = HealthLabels {
            server_id: server_id.to_owned(),
            component,
        };
        metrics
            .bmc_health
            .with(&labels, |g| g.set(i64::from(*level)));
    }
    for (component, _) in health(previous) {
        if !now.iter().any(|(c, _)| *c == component) {
            metrics.bmc_health.remove(&HealthLabels {
                server_id: server_id.to_owned(),
                component,
            });
        }
    }
}

/// Removes every series of `server_id` that is a reading (not `agent_bmc_up`, which says
/// why they are gone).
pub fn unpublish(metrics: &AgentMetrics, server_id: &str, previous: Option<&Health>) {
    publish_sensors(
        metrics,
        server_id,
        &[],
        previous.map_or(&[], |h| h.sensors.as_slice()),
    );
    publish_status(
        metrics,
        server_id,
        None,
        previous.and_then(|h| h.status.as_ref()),
    );
    metrics.bmc_power_on.remove(&ServerId {
        server_id: server_id.to_owned(),
    });
}

/// Removes every series of a server that left the inventory (or was replaced by a reload):
/// no ghost of it stays in the exposition.
pub fn unpublish_server(metrics: &AgentMetrics, server_id: &str, previous: Option<&Health>) {
    unpublish(metrics, server_id, previous);
    let server = ServerId {
        server_id: server_id.to_owned(),
    };
    metrics.bmc_up.remove(&server);
    metrics.bmc_last_poll_success.remove(&server);
}

/// Whether `bmc` is still the inventory's BMC of its id.
fn current(fleet: &Fleet, bmc: &Bmc) -> bool {
    fleet
        .get(&bmc.config.id)
        .is_some_and(|b| std::ptr::eq(&*b, bmc))
}

async fn poll_one(fleet: &Fleet, metrics: &AgentMetrics, bmc: &Bmc) {
    let id = &bmc.config.id;
    let server = ServerId {
        server_id: id.clone(),
    };
    let status = fleet.power_status(id).await;
    // A reload replaced or removed this BMC while it was polled: nothing to record.
    if !current(fleet, bmc) {
        return;
    }
    match status {
        Ok(on) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let previous = fleet.health().record_up(id, on, now);
            metrics.bmc_up.with(&server, |g| g.set(1));
            metrics.bmc_power_on.with(&server, |g| g.set(i64::from(on)));
            metrics.bmc_last_poll_success.with(&server, |g| g.set(now));
            if !previous.is_some_and(|h| h.up) {
                log::info!(
                    "bmc {id} ({}) is up; power {}",
                    bmc.config.addr,
                    if on { "on" } else { "off" }
                );
            }
            let sensors = fleet.sensors(id).await;
            // The sensor read takes a while: a reload may have retired this BMC meanwhile.
            if !current(fleet, bmc) {
                return;
            }
            match sensors {
                Ok(readings) => {
                    let previous = fleet.health().record_sensors(id, readings.clone());
                    publish_sensors(metrics, id, &readings, &previous);
                }
                Err(e) => {
                    // No current readings: no sensor series.
                    let previous = fleet.health().record_sensors(id, Vec::new());
                    publish_sensors(metrics, id, &[], &previous);
                    log::debug!("{e}");
                }
            }
            let status = fleet.status(id).await;
            if !current(fleet, bmc) {
                return;
            }
            let status = status.map_err(|e| log::debug!("{e}")).ok();
            let previous = fleet.health().record_status(id, status.clone());
            publish_status(metrics, id, status.as_ref(), previous.as_ref());
        }
        Err(e) => {
            let previous = fleet.health().record_down(id);
            // Down: its readings are not current any more. They go before `up` turns 0, so
            // that no scrape sees the BMC down with a reading still standing.
            if let Some(p) = &previous {
                unpublish(metrics, id, Some(p));
            }
            metrics.bmc_up.with(&server, |g| g.set(0));
            // Logged on the transition to down (and on a first failure), not every round.
            if previous.is_none_or(|h| h.up) {
                log::warn!("{e}");
            }
        }
    }
}
