//! Failed-login throttling, per account and per client address, in bounded memory.
//!
//! Per account: after 5 failures within 15 minutes, each further attempt waits a delay that
//! doubles from 1 s up to 15 min — an online guesser gets a few dozen tries an hour while a
//! user who mistypes a few times is not locked out. Per client address (IPv6 per /64, as one
//! host owns a /64): the same after 20 failures, whatever the accounts, which slows a spray of
//! one password across many accounts. Unknown and known accounts are throttled alike, so the
//! throttle reveals nothing either. Each table holds at most `max_entries`; when full, the
//! entry whose last failure is oldest goes first.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// Failures older than this are forgotten.
    pub window: Duration,
    /// Entries per table at most.
    pub max_entries: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            account_free: 5,
            address_free: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            window: Duration::from_secs(15 * 60),
            max_entries: 100_000,
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
    /// Why.
    pub scope: Scope,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// One table: key → entry, plus an index by last failure for eviction.
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
    by_time: BTreeSet<(Instant, K)>,
}

impl<K: std::hash::Hash + Eq + Ord + Clone> Table<K> {
    fn new() -> Self {
        Table {
            entries: HashMap::new(),
            by_time: BTreeSet::new(),
        }
    }

    /// The entry, dropped when its last failure is outside the window.
    fn get(&mut self, key: &K, now: Instant, window: Duration) -> Option<Entry> {
        let e = *self.entries.get(key)?;
        if now.saturating_duration_since(e.last) >= window {
            self.remove(key);
            return None;
        }
        Some(e)
    }

    fn remove(&mut self, key: &K) {
        if let Some(e) = self.entries.remove(key) {
            self.by_time.remove(&(e.last, key.clone()));
        }
    }

    fn fail(&mut self, key: K, now: Instant, window: Duration, max: usize) {
        let failures = self.get(&key, now, window).map_or(0, |e| e.failures);
        self.remove(&key);
        while self.entries.len() >= max.max(1) {
            let Some((_, oldest)) = self.by_time.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.by_time.insert((now, key.clone()));
        self.entries.insert(
            key,
            Entry {
                failures: failures.saturating_add(1),
                last: now,
            },
        );
    }
}

/// The throttle.
#[derive(Debug)]
pub struct Throttle {
    policy: Policy,
    accounts: Mutex<Table<String>>,
    addresses: Mutex<Table<IpAddr>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(Policy::default())
    }
}

/// The account key: a normalized e-mail.
fn account_key(account: &str) -> String {
    account.trim().to_lowercase()
}

/// The address key: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6 as IPv4).
fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Throttle {
    /// With `policy`.
    pub fn new(policy: Policy) -> Self {
        Throttle {
            policy,
            accounts: Mutex::new(Table::new()),
            addresses: Mutex::new(Table::new()),
        }
    }

    /// The wait left before an attempt with `failures` failures, the last at `last`.
    fn wait(&self, failures: u32, free: u32, last: Instant, now: Instant) -> Option<Duration> {
        let over = failures.checked_sub(free)?;
        let delay = self
            .policy
            .base_delay
            .saturating_mul(1u32 << over.min(20))
            .min(self.policy.max_delay);
        let until = last + delay;
        (until > now).then(|| until - now)
    }

    /// Whether an attempt may go ahead now (call before verifying the password).
    pub fn check(&self, account: &str, addr: IpAddr, now: Instant) -> Result<(), Throttled> {
        let w = self.policy.window;
        if let Some(e) = lock(&self.accounts).get(&account_key(account), now, w) {
            if let Some(retry_after) = self.wait(e.failures, self.policy.account_free, e.last, now)
            {
                return Err(Throttled {
                    retry_after,
                    scope: Scope::Account,
                });
            }
        }
        if let Some(e) = lock(&self.addresses).get(&address_key(addr), now, w) {
            if let Some(retry_after) = self.wait(e.failures, self.policy.address_free, e.last, now)
            {
                return Err(Throttled {
                    retry_after,
                    scope: Scope::Address,
                });
            }
        }
        Ok(())
    }

    /// Records a failed attempt.
    pub fn failed(&self, account: &str, addr: IpAddr, now: Instant) {
        let (w, max) = (self.policy.window, self.policy.max_entries);
        lock(&self.accounts).fail(account_key(account), now, w, max);
        lock(&self.addresses).fail(address_key(addr), now, w, max);
    }

    /// Records a success: the account's count is cleared (the address's is not: a spray
    /// that guesses one account right is still a spray).
    pub fn succeeded(&self, account: &str, _addr: IpAddr) {
        lock(&self.accounts).remove(&account_key(account));
    }

    /// Entries held (accounts, addresses).
    pub fn len(&self) -> (usize, usize) {
        (
            lock(&self.accounts).entries.len(),
            lock(&self.addresses).entries.len(),
        )
    }

    /// Whether both tables are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_account_locks_after_its_free_failures_with_doubling_delays() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..5 {
            assert!(t.check("Ann@x.io", a, t0).is_ok(), "attempt {i}");
            t.failed("ann@x.io ", a, t0);
        }
        // the sixth failure: 1 s; a seventh: 2 s; the delay is capped at 15 min
        t.failed("ann@x.io", a, t0);
        let r = t.check("ANN@x.io", ip("198.51.100.7"), t0).unwrap_err();
        assert_eq!((r.retry_after, r.scope), (2 * S, Scope::Account));
        assert!(t.check("ann@x.io", a, t0 + 2 * S).is_ok());
        for _ in 0..30 {
            t.failed("ann@x.io", a, t0);
        }
        let r = t.check("ann@x.io", a, t0).unwrap_err();
        assert_eq!(r.retry_after, 15 * 60 * S);
        // forgotten after the window; a success clears the account
        assert!(t.check("ann@x.io", a, t0 + 15 * 60 * S).is_ok());
        t.succeeded("ann@x.io", a);
        assert!(t.check("ann@x.io", ip("203.0.113.9"), t0).is_ok());
    }

    #[test]
    fn one_address_spraying_many_accounts_is_slowed_and_ipv6_counts_per_64() {
        let t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..21 {
            // a different host in the same /64 each time
            let a = ip(&format!("2001:db8:1:2::{:x}", i + 1));
            t.failed(&format!("user{i}@x.io"), a, t0);
        }
        let r = t
            .check("fresh@x.io", ip("2001:db8:1:2:ffff::1"), t0)
            .unwrap_err();
        assert_eq!(r.scope, Scope::Address);
        assert!(t.check("fresh@x.io", ip("2001:db8:1:3::1"), t0).is_ok());
        // unknown and known accounts alike: nothing here knows which exist
        assert_eq!(t.len().1, 1);
    }

    #[test]
    fn memory_stays_bounded_and_stale_entries_go_first() {
        let t = Throttle::new(Policy {
            max_entries: 1000,
            ..Policy::default()
        });
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..6 {
            t.failed("victim@x.io", a, t0 + S);
        }
        for i in 0..100_000u32 {
            t.failed(&format!("spray{i}@x.io"), a, t0 + S);
        }
        assert!(t.len().0 <= 1000);
        let t = Throttle::new(Policy {
            max_entries: 2,
            ..Policy::default()
        });
        t.failed("old@x.io", a, t0);
        t.failed("new@x.io", a, t0 + S);
        t.failed("newer@x.io", a, t0 + 2 * S);
        let accounts = lock(&t.accounts);
        assert!(!accounts.entries.contains_key("old@x.io"));
        assert!(accounts.entries.contains_key("new@x.io"));
    }
}
