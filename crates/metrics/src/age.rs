//! A gauge of the seconds since an event, computed when scraped.
//!
//! For `…_last_…_seconds` families whose value the RFD defines as an age: a value set by a
//! periodic sweep would lag the truth by up to one period and cost a pass over every series;
//! storing the event's instant and subtracting at encode time is exact and free between
//! scrapes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// The process's reference instant: ages are stored as nanoseconds since it.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// Seconds since the last [`Age::reset`], as a gauge.
#[derive(Debug)]
pub struct Age {
    at: AtomicU64,
}

impl Default for Age {
    /// An age of zero now.
    fn default() -> Self {
        Age {
            at: AtomicU64::new(nanos_since_epoch(Instant::now())),
        }
    }
}

impl Age {
    /// The event happened now.
    pub fn reset(&self) {
        self.set(Instant::now());
    }

    /// The event happened at `at`.
    pub fn set(&self, at: Instant) {
        self.at.store(nanos_since_epoch(at), Ordering::Relaxed);
    }

    /// Seconds from the event to `now`.
    pub fn seconds_at(&self, now: Instant) -> f64 {
        let age = nanos_since_epoch(now).saturating_sub(self.at.load(Ordering::Relaxed));
        age as f64 / 1e9
    }
}

impl TypedMetric for Age {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Age {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.seconds_at(Instant::now()))
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_age_grows_with_the_clock_and_resets() {
        let a = Age::default();
        let t0 = Instant::now();
        a.set(t0);
        assert_eq!(a.seconds_at(t0), 0.0);
        assert_eq!(a.seconds_at(t0 + Duration::from_millis(2500)), 2.5);
        // a clock read before the event never gives a negative age
        a.set(t0 + Duration::from_secs(5));
        assert_eq!(a.seconds_at(t0), 0.0);
    }
}
