//! A fixed-size pool: at most `size` connections, dialed when needed, checked before being lent
//! (so a server restart costs no failed call), returned by a guard, dropped when broken.

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::{Config, Conn, Error};

/// Connections to one database, shared by threads.
pub struct Pool {
    config: Config,
    size: usize,
    state: Mutex<State>,
    returned: Condvar,
}

#[derive(Default)]
struct State {
    idle: Vec<Conn>,
    /// Idle, lent, or being dialed.
    open: usize,
    in_use: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Pool")
            .field("config", &self.config)
            .field("size", &self.size)
            .field("open", &st.open)
            .field("in_use", &st.in_use)
            .finish()
    }
}

impl Pool {
    /// A pool of at most `size` (at least 1) connections to `config`; nothing is dialed yet.
    pub fn new(config: Config, size: usize) -> Pool {
        Pool {
            config,
            size: size.max(1),
            state: Mutex::new(State::default()),
            returned: Condvar::new(),
        }
    }

    /// Lends a connection: an idle one that is still open, else a new one if fewer than
    /// `size` are open, else the first returned within `wait` ([`Error::PoolExhausted`] if
    /// none is). A failed dial is the dial's error (I/O, timeout, the server's refusal).
    pub fn get(&self, wait: Duration) -> Result<Pooled<'_>, Error> {
        let deadline = Instant::now() + wait;
        let mut st = self.lock();
        loop {
            while let Some(mut conn) = st.idle.pop() {
                if conn.is_idle_alive() {
                    st.in_use += 1;
                    return Ok(Pooled {
                        pool: self,
                        conn: Some(conn),
                    });
                }
                // the server closed it or sent a fatal error while it sat idle
                st.open -= 1;
                drop(conn);
                log::debug!("dropped a dead idle connection to {}", self.config);
            }
            if st.open < self.size {
                st.open += 1;
                st.in_use += 1;
                drop(st);
                return match Conn::connect(&self.config) {
                    Ok(conn) => Ok(Pooled {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.release_slot();
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::PoolExhausted {
                    size: self.size,
                    waited: wait,
                });
            }
            st = self
                .returned
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Connections open now (idle or lent), for a gauge.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    /// Connections lent out now.
    pub fn in_use(&self) -> usize {
        self.lock().in_use
    }

    /// The most connections the pool opens.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The configuration connections are dialed with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A lent connection is gone (broken, or its dial failed): its slot is free.
    fn release_slot(&self) {
        let mut st = self.lock();
        st.open -= 1;
        st.in_use -= 1;
        drop(st);
        self.returned.notify_one();
    }

    fn put_back(&self, mut conn: Conn) {
        // a transaction left open (a caller that bailed out between BEGIN and COMMIT)
        conn.rollback_quietly();
        if conn.is_broken() {
            drop(conn);
            self.release_slot();
            return;
        }
        let mut st = self.lock();
        st.in_use -= 1;
        st.idle.push(conn);
        drop(st);
        self.returned.notify_one();
    }
}

/// A connection lent by a [`Pool`]: returned on drop, or dropped if it is broken.
pub struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl std::fmt::Debug for Pooled<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pooled").field(&self.conn).finish()
    }
}

impl Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
            .as_ref()
            .expect("a Pooled holds its connection until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a Pooled holds its connection until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn pool_is_send_and_sync() {
        assert_send_sync::<Pool>();
    }

    #[test]
    fn a_dial_failure_frees_its_slot() {
        // a port nobody listens on
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = Config::parse(&format!(
            "postgres://u:p@127.0.0.1:{port}/d?connect_timeout=2"
        ))
        .unwrap();
        let pool = Pool::new(cfg, 1);
        for _ in 0..3 {
            let e = pool.get(Duration::from_millis(10)).unwrap_err();
            assert!(e.is_unavailable(), "{e:?}");
            assert!(!e.to_string().contains(":p@"), "{e}");
        }
        assert_eq!((pool.open(), pool.in_use()), (0, 0));
    }
}
