//! Failed-login throttling, per account and per client address, with its counts in the store.
//!
//! Per account: after 5 failures within 15 minutes, each further attempt waits a delay that
//! doubles from 1 s up to 15 min — an online guesser gets a few dozen tries an hour while a
//! user who mistypes a few times is not locked out. Per client address (IPv6 per /64, as one
//! host owns a /64): the same after 20 failures, whatever the accounts, which slows a spray of
//! one password across many accounts. Unknown and known accounts are throttled alike, so the
//! throttle reveals nothing either.
//!
//! The counts live in the store (`login_failures`), so that a guesser spreading attempts over
//! several manager replicas meets one throttle. Each costs the failed attempt a write, next to
//! the argon2 hash it already cost; counts are purged an hour after their last failure, so the
//! table holds at most what an hour of hashing can fail.

use std::net::IpAddr;
use std::time::Duration;

use crate::store::{Store, StoreError, LOGIN_FAILURES_KEPT_SECS};

/// The numbers.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Failures of one account tolerated before delays start.
    pub account_free: u32,
    /// Failures from one address tolerated before delays start.
    pub address_free: u32,
    /// First delay.
    pub base_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// Failures older than this are forgotten (at most the store's hour).
    pub window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            account_free: 5,
            address_free: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// Which count refused the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The account's.
    Account,
    /// The client address's.
    Address,
}

/// A refused attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// When to try again.
    pub retry_after: Duration,
    /// Why: a count's scope, or `None` when the counts could not be read (the store is down or
    /// busy): then nothing is known to allow the attempt, so it waits too.
    pub scope: Option<Scope>,
}

/// How long to wait when the counts cannot be read.
const UNREADABLE_RETRY: Duration = Duration::from_secs(1);

/// The throttle: the policy; the counts are the store's.
#[derive(Debug, Default)]
pub struct Throttle {
    policy: Policy,
}

/// The account key: a normalized e-mail.
fn account_key(account: &str) -> String {
    format!("account:{}", account.trim().to_lowercase())
}

/// The address key: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6 as IPv4).
fn address_key(addr: IpAddr) -> String {
    let net = match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    };
    format!("address:{net}")
}

impl Throttle {
    /// With `policy` (its window capped at the hour the store keeps counts).
    pub fn new(mut policy: Policy) -> Self {
        policy.window = policy
            .window
            .min(Duration::from_secs(LOGIN_FAILURES_KEPT_SECS as u64));
        Throttle { policy }
    }

    /// The wait left at `now_ms` before an attempt with `failures` failures, the last at
    /// `last_ms`.
    fn wait(&self, failures: u32, free: u32, last_ms: i64, now_ms: i64) -> Option<Duration> {
        let over = failures.checked_sub(free)?;
        let delay = self
            .policy
            .base_delay
            .saturating_mul(1u32 << over.min(20))
            .min(self.policy.max_delay);
        let until = last_ms.saturating_add(delay.as_millis() as i64);
        (until > now_ms).then(|| Duration::from_millis((until - now_ms) as u64))
    }

    fn since(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.policy.window.as_millis() as i64)
    }

    /// Whether an attempt may go ahead at `now_ms` (unix ms; call before verifying the
    /// password). A store that cannot answer refuses it: a guesser who keeps the database
    /// busy must not get unthrottled guesses.
    pub fn check(
        &self,
        store: &dyn Store,
        account: &str,
        addr: IpAddr,
        now_ms: i64,
    ) -> Result<(), Throttled> {
        let (account, address) = (account_key(account), address_key(addr));
        let counts = match store.login_failures(&[&account, &address], self.since(now_ms)) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("reading the failed-login counts: {e}");
                return Err(Throttled {
                    retry_after: UNREADABLE_RETRY,
                    scope: None,
                });
            }
        };
        for c in counts {
            let (free, scope) = if c.key == account {
                (self.policy.account_free, Some(Scope::Account))
            } else {
                (self.policy.address_free, Some(Scope::Address))
            };
            if let Some(retry_after) = self.wait(c.failures, free, c.last_at_ms, now_ms) {
                return Err(Throttled { retry_after, scope });
            }
        }
        Ok(())
    }

    /// Records a failed attempt at `now_ms`; an error means it was not counted (the caller
    /// answers `unavailable` rather than let an uncounted guess pass as a plain failure).
    pub fn failed(
        &self,
        store: &dyn Store,
        account: &str,
        addr: IpAddr,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let keys = [account_key(account), address_key(addr)];
        let keys = [keys[0].as_str(), keys[1].as_str()];
        store.login_failed(&keys, now_ms, self.since(now_ms))
    }

    /// Records a success: the account's count is cleared (the address's is not: a spray
    /// that guesses one account right is still a spray).
    pub fn succeeded(&self, store: &dyn Store, account: &str) {
        if let Err(e) = store.clear_login_failures(&account_key(account)) {
            log::warn!("clearing a failed-login count: {e}");
        }
    }
}

/// Unix milliseconds now: the throttle's clock.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    const S: i64 = 1000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn store() -> (SqliteStore, std::path::PathBuf) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("throttle-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = SqliteStore::open(&dir.join("t.db"), std::sync::Arc::new(|_, _, _, _| {})).unwrap();
        (s, dir)
    }

    #[test]
    fn an_account_locks_after_its_free_failures_with_doubling_delays() {
        let (st, dir) = store();
        let t = Throttle::default();
        let t0 = 1_700_000_000_000;
        let a = ip("192.0.2.1");
        for i in 0..5 {
            assert!(t.check(&st, "Ann@x.io", a, t0).is_ok(), "attempt {i}");
            t.failed(&st, "ann@x.io ", a, t0).unwrap();
        }
        // the sixth failure: 1 s; a seventh: 2 s; the delay is capped at 15 min
        t.failed(&st, "ann@x.io", a, t0).unwrap();
        let r = t
            .check(&st, "ANN@x.io", ip("198.51.100.7"), t0)
            .unwrap_err();
        assert_eq!(
            (r.retry_after, r.scope),
            (Duration::from_secs(2), Some(Scope::Account))
        );
        assert!(t.check(&st, "ann@x.io", a, t0 + 2 * S).is_ok());
        for _ in 0..30 {
            t.failed(&st, "ann@x.io", a, t0).unwrap();
        }
        let r = t.check(&st, "ann@x.io", a, t0).unwrap_err();
        assert_eq!(r.retry_after, Duration::from_secs(15 * 60));
        // forgotten after the window; a success clears the account
        assert!(t.check(&st, "ann@x.io", a, t0 + 15 * 60 * S).is_ok());
        t.succeeded(&st, "ann@x.io");
        assert!(t.check(&st, "ann@x.io", ip("203.0.113.9"), t0).is_ok());
        // a count past the window starts again from one
        for _ in 0..5 {
            t.failed(&st, "bob@x.io", ip("203.0.113.10"), t0).unwrap();
        }
        t.failed(&st, "bob@x.io", ip("203.0.113.10"), t0 + 16 * 60 * S)
            .unwrap();
        assert!(t.check(&st, "bob@x.io", a, t0 + 16 * 60 * S).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn one_address_spraying_many_accounts_is_slowed_and_ipv6_counts_per_64() {
        let (st, dir) = store();
        let t = Throttle::default();
        let t0 = 1_700_000_000_000;
        for i in 0..21 {
            // a different host in the same /64 each time
            let a = ip(&format!("2001:db8:1:2::{:x}", i + 1));
            t.failed(&st, &format!("user{i}@x.io"), a, t0).unwrap();
        }
        let r = t
            .check(&st, "fresh@x.io", ip("2001:db8:1:2:ffff::1"), t0)
            .unwrap_err();
        assert_eq!(r.scope, Some(Scope::Address));
        assert!(t
            .check(&st, "fresh@x.io", ip("2001:db8:1:3::1"), t0)
            .is_ok());
        // IPv4-mapped IPv6 is the IPv4 address
        for i in 0..21 {
            t.failed(&st, &format!("v4user{i}@x.io"), ip("192.0.2.77"), t0)
                .unwrap();
        }
        assert!(t
            .check(&st, "fresh@x.io", ip("::ffff:192.0.2.77"), t0)
            .is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn counts_older_than_the_store_keeps_them_are_purged() {
        let (st, dir) = store();
        let t = Throttle::default();
        let t0 = 1_700_000_000_000;
        let a = ip("192.0.2.1");
        for i in 0..50 {
            t.failed(&st, &format!("spray{i}@x.io"), a, t0).unwrap();
        }
        let purged = st
            .purge_expired(t0 / 1000 + LOGIN_FAILURES_KEPT_SECS + 1, 0)
            .unwrap();
        assert_eq!(purged, 51, "50 accounts and the address");
        let _ = std::fs::remove_dir_all(dir);
    }
}
