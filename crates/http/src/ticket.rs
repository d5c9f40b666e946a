//! One-time tickets: short-lived, single-use credentials for a connection a browser opens
//! itself (a console WebSocket), which cannot carry an `Authorization` header. A caller that
//! holds the real credential mints a ticket for one scope (`sol/<server>`), then opens the URL
//! with `?ticket=…`; the first connection that presents it uses it up, whatever the outcome, so
//! a ticket seen in a log or a browser history is worth nothing. The long-lived token never
//! appears in a URL. A ticket may carry a value for whoever redeems it (the gateway binds the
//! caller it authorized to the ticket, so the connection acts as that caller and no other).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Random bytes per ticket: 256 bits, unguessable.
const TICKET_BYTES: usize = 32;

/// The live tickets of one component, each carrying a `T`.
#[derive(Debug)]
pub struct Tickets<T = ()> {
    ttl: Duration,
    max_live: usize,
    live: Mutex<HashMap<String, Live<T>>>,
}

#[derive(Debug)]
struct Live<T> {
    scope: String,
    expires: Instant,
    value: T,
}

/// Why no ticket was minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintError {
    /// The OS random source failed: no ticket rather than a guessable one.
    Random,
    /// Too many unredeemed tickets.
    Full(usize),
}

impl std::fmt::Display for MintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MintError::Random => f.write_str("the OS random source failed"),
            MintError::Full(n) => write!(f, "{n} tickets are waiting to be used"),
        }
    }
}

impl std::error::Error for MintError {}

impl MintError {
    /// The Connect error a minting endpoint answers: `resource_exhausted`, to retry once
    /// tickets expire (`ttl`), or `internal`.
    pub fn to_rpc(&self, ttl: Duration) -> crate::rpc::RpcError {
        let why = format!("no console ticket: {self}");
        match self {
            MintError::Full(_) => crate::rpc::RpcError::exhausted(why, ttl),
            MintError::Random => crate::rpc::RpcError::new(crate::rpc::Code::Internal, why),
        }
    }
}

impl Tickets {
    /// A new ticket for `scope`.
    pub fn mint(&self, scope: &str) -> Result<String, MintError> {
        self.mint_with(scope, ())
    }

    /// Uses `ticket` up; true when it was live and minted for `scope`.
    pub fn redeem(&self, ticket: &str, scope: &str) -> bool {
        self.redeem_value(ticket, scope).is_some()
    }
}

impl<T> Tickets<T> {
    /// Tickets valid for `ttl`, at most `max_live` unredeemed at once.
    pub fn new(ttl: Duration, max_live: usize) -> Self {
        Tickets {
            ttl,
            max_live,
            live: Mutex::default(),
        }
    }

    /// How long a ticket stays valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new ticket for `scope`, carrying `value`.
    pub fn mint_with(&self, scope: &str, value: T) -> Result<String, MintError> {
        let mut raw = [0u8; TICKET_BYTES];
        getrandom::fill(&mut raw).map_err(|_| MintError::Random)?;
        let ticket: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, t| t.expires > now);
        if live.len() >= self.max_live {
            return Err(MintError::Full(live.len()));
        }
        live.insert(
            ticket.clone(),
            Live {
                scope: scope.to_owned(),
                expires: now + self.ttl,
                value,
            },
        );
        Ok(ticket)
    }

    /// Uses `ticket` up; its value when it was live and minted for `scope`.
    pub fn redeem_value(&self, ticket: &str, scope: &str) -> Option<T> {
        let t = self.lock().remove(ticket)?;
        (t.scope == scope && t.expires > Instant::now()).then_some(t.value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live<T>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_use_one_scope_short_life() {
        let t = Tickets::new(Duration::from_millis(100), 2);
        let a = t.mint("sol/n1").unwrap();
        assert_eq!(a.len(), 64);
        assert!(!t.redeem(&a, "vnc/n1"), "another scope");
        assert!(
            !t.redeem(&a, "sol/n1"),
            "used up by the wrong-scope attempt"
        );
        let b = t.mint("sol/n1").unwrap();
        assert!(t.redeem(&b, "sol/n1"));
        assert!(!t.redeem(&b, "sol/n1"), "one use");
        let c = t.mint("sol/n1").unwrap();
        std::thread::sleep(Duration::from_millis(150));
        assert!(!t.redeem(&c, "sol/n1"), "expired");
        let _d = t.mint("x").unwrap();
        let _e = t.mint("x").unwrap();
        assert_eq!(t.mint("x"), Err(MintError::Full(2)));
        assert!(!t.redeem("", "x") && !t.redeem("00", "x"));
    }

    #[test]
    fn a_ticket_hands_its_value_to_its_redeemer_once() {
        let t = Tickets::new(Duration::from_secs(30), 4);
        let a = t.mint_with("sol/n1", "alice").unwrap();
        assert_eq!(t.redeem_value(&a, "sol/n1"), Some("alice"));
        assert_eq!(t.redeem_value(&a, "sol/n1"), None);
        let b = t.mint_with("sol/n1", "bob").unwrap();
        assert_eq!(t.redeem_value(&b, "vnc/n1"), None, "another scope");
        assert_eq!(t.redeem_value(&b, "sol/n1"), None, "used up");
    }
}
