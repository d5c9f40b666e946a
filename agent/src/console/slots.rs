//! Console caps: console sessions at most on the agent (`console.max_sessions`) and on one
//! server (`console.max_sessions_per_server`). SOL viewers, VNC WebSocket sessions and raw
//! VNC listeners (from the moment they wait for their viewer) all take a slot. The caps sit
//! well below the HTTP connection cap (see `config::MAX_CONSOLES`), so consoles can never
//! take the connections a scrape or the watchdog's health probe needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The agent's console slots.
#[derive(Debug)]
pub struct ConsoleSlots {
    max: usize,
    max_per_server: usize,
    taken: Mutex<Taken>,
}

#[derive(Debug, Default)]
struct Taken {
    all: usize,
    // Only servers with a session open: bounded by the inventory.
    by_server: HashMap<String, usize>,
}

/// One console's slot; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<ConsoleSlots>,
    server: String,
}

/// Why a console was refused: the text tells the viewer which cap it met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full(pub String);

impl Full {
    /// The refusal as an HTTP answer (before any upgrade).
    pub fn response(&self) -> conduit_http::Response {
        conduit_http::Response::text(429, format!("{}\n", self.0)).with_header("Retry-After", "5")
    }
}

impl ConsoleSlots {
    /// Slots for `max` consoles, `max_per_server` on one server.
    pub fn new(max: usize, max_per_server: usize) -> Arc<ConsoleSlots> {
        Arc::new(ConsoleSlots {
            max,
            max_per_server,
            taken: Mutex::default(),
        })
    }

    /// A slot for a console on `server` (a configured server id), or why not.
    pub fn take(self: &Arc<Self>, server: &str) -> Result<Slot, Full> {
        let mut t = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if t.all >= self.max {
            return Err(Full(format!(
                "{} consoles are open on this agent (console.max_sessions); try again later",
                self.max
            )));
        }
        let mine = t.by_server.get(server).copied().unwrap_or(0);
        if mine >= self.max_per_server {
            return Err(Full(format!(
                "{mine} consoles are open on server {server} (console.max_sessions_per_server); try again later"
            )));
        }
        t.all += 1;
        *t.by_server.entry(server.to_owned()).or_default() += 1;
        Ok(Slot {
            slots: self.clone(),
            server: server.to_owned(),
        })
    }

    /// Consoles open now.
    pub fn open(&self) -> usize {
        self.taken.lock().unwrap_or_else(|e| e.into_inner()).all
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.taken.lock().unwrap_or_else(|e| e.into_inner());
        t.all = t.all.saturating_sub(1);
        if let Some(n) = t.by_server.get_mut(&self.server) {
            *n -= 1;
            if *n == 0 {
                t.by_server.remove(&self.server);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_overall_and_per_server() {
        let s = ConsoleSlots::new(3, 2);
        let a1 = s.take("a").unwrap();
        let _a2 = s.take("a").unwrap();
        assert!(s.take("a").unwrap_err().0.contains("on server a"));
        let _b = s.take("b").unwrap();
        assert!(s
            .take("c")
            .unwrap_err()
            .0
            .contains("(console.max_sessions)"));
        drop(a1);
        assert_eq!(s.open(), 2);
        let _c = s.take("c").unwrap();
    }
}
