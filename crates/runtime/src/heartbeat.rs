//! Heartbeats: each long-running loop proves it is making progress, and `/health` fails when
//! one has not for several times its expected period.
//!
//! A beat holds a deadline, not a timestamp: [`Heartbeat::tick`] (progress) moves it to
//! `now + STALE_AFTER × period`, [`Heartbeat::sleeping`] (a deliberate wait on a timer, between
//! rounds) to the end of that wait plus the same margin. So a loop that idles for five minutes
//! between discovery sweeps is healthy, and so is a sweep of a /16 that takes an hour as long
//! as its probes keep completing; a loop stuck on a future that never ends is not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How many expected periods may pass without progress before a beat is stale.
pub const STALE_AFTER: u32 = 3;

/// One loop's heartbeat.
#[derive(Debug)]
pub struct Heartbeat {
    name: &'static str,
    period: Duration,
    epoch: Instant,
    // Milliseconds since `epoch` by which the next tick must come.
    deadline_ms: AtomicU64,
}

impl Heartbeat {
    fn new(name: &'static str, period: Duration) -> Heartbeat {
        let b = Heartbeat {
            name,
            period,
            epoch: Instant::now(),
            deadline_ms: AtomicU64::new(0),
        };
        b.tick();
        b
    }

    /// The loop made progress (a probe, a poll, a timer tick of its executor).
    pub fn tick(&self) {
        self.set_deadline(Duration::ZERO);
    }

    /// The loop now waits on its own timer for `d`: no progress is due until that ends.
    pub fn sleeping(&self, d: Duration) {
        self.set_deadline(d);
    }

    fn set_deadline(&self, wait: Duration) {
        let due = self.epoch.elapsed() + wait + self.period * STALE_AFTER;
        self.deadline_ms
            .store(due.as_millis() as u64, Ordering::Relaxed);
    }

    /// How long past its deadline the beat is, if it is.
    fn overdue(&self) -> Option<Duration> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let due = self.deadline_ms.load(Ordering::Relaxed);
        (now > due).then(|| Duration::from_millis(now - due))
    }

    /// The loop's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The heartbeats of one component. A loop that ends drops its beat, which is then forgotten.
#[derive(Debug, Default)]
pub struct Heartbeats {
    beats: Mutex<Vec<Weak<Heartbeat>>>,
}

impl Heartbeats {
    /// A new beat for loop `name`, which ticks at least every `period` while it works.
    pub fn register(&self, name: &'static str, period: Duration) -> Arc<Heartbeat> {
        let beat = Arc::new(Heartbeat::new(name, period));
        let mut beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        beats.retain(|w| w.strong_count() > 0);
        beats.push(Arc::downgrade(&beat));
        beat
    }

    /// `Err` with one line per stalled loop, `Ok` when every live loop is progressing.
    pub fn check(&self) -> Result<(), String> {
        let beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        let stalled: Vec<String> = beats
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|b| {
                b.overdue().map(|late| {
                    format!(
                        "{}: no progress for {:.1} s (expected every {:.1} s)",
                        b.name,
                        (late + b.period * STALE_AFTER).as_secs_f64(),
                        b.period.as_secs_f64()
                    )
                })
            })
            .collect();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(stalled.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_after_missed_periods_not_while_sleeping() {
        let hb = Heartbeats::default();
        let b = hb.register("poller", Duration::from_millis(20));
        assert!(hb.check().is_ok());
        std::thread::sleep(Duration::from_millis(80));
        let e = hb.check().unwrap_err();
        assert!(e.starts_with("poller: no progress"), "{e}");
        b.tick();
        assert!(hb.check().is_ok());
        b.sleeping(Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(100));
        assert!(hb.check().is_ok(), "a deliberate sleep is not a stall");
        drop(b);
        std::thread::sleep(Duration::from_millis(400));
        assert!(hb.check().is_ok(), "a loop that ended is forgotten");
    }
}
