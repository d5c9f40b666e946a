//! Where the API's BMC operations run: the `bmc-operations` thread, never the HTTP workers
//! that also answer `/metrics` and `/health`. A handler submits its operation and returns at
//! once with a deferred response; the connection waits, the worker does not.
//!
//! Operations are bounded overall (`agent.max_operations`) and per server
//! (`agent.max_operations_per_server`). Past either bound the call is refused at once with
//! `resource_exhausted` (HTTP 429, `Retry-After`) rather than queued: a queue in front of a
//! dead BMC only grows, and the caller knows better whether to retry.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_lock::Semaphore;
use conduit_http::rpc::{refused, Code, RpcError, RpcFuture};
use conduit_runtime::heartbeat::Heartbeats;
use conduit_runtime::job_thread::{self, JobThread};

/// When a refused caller should try again: operations end within the operation timeout, most
/// much sooner.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The operations executor and its bounds.
#[derive(Debug)]
pub struct Operations {
    thread: JobThread,
    global: Arc<Semaphore>,
    max: usize,
    // One per configured server; ids not in the inventory are not operated on at all.
    per_server: std::sync::RwLock<HashMap<String, Arc<Semaphore>>>,
    max_per_server: usize,
}

impl Operations {
    /// Starts the `bmc-operations` thread for the servers `ids`, beating `heartbeats`.
    pub fn start<'a>(
        ids: impl IntoIterator<Item = &'a str>,
        max: usize,
        max_per_server: usize,
        heartbeats: &Heartbeats,
    ) -> std::io::Result<Operations> {
        let beat = heartbeats.register("bmc-operations executor", job_thread::BEAT_PERIOD);
        Ok(Operations {
            thread: JobThread::start("bmc-operations", Some(beat))?,
            global: Arc::new(Semaphore::new(max)),
            max,
            per_server: std::sync::RwLock::new(
                ids.into_iter()
                    .map(|id| (id.to_owned(), Arc::new(Semaphore::new(max_per_server))))
                    .collect(),
            ),
            max_per_server,
        })
    }

    /// Runs the operation `make` builds for `server` on the operations thread, or refuses it
    /// when a bound is reached (or the server is unknown).
    pub fn submit<T, F>(
        &self,
        server: &str,
        make: impl FnOnce() -> F + Send + 'static,
    ) -> RpcFuture<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, RpcError>> + 'static,
    {
        let mine = self
            .per_server
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(server)
            .cloned();
        let Some(mine) = mine else {
            return refused(RpcError::new(
                Code::NotFound,
                format!("no server {server:?} in the inventory"),
            ));
        };
        let Some(one) = mine.try_acquire_arc() else {
            return refused(RpcError::exhausted(
                format!(
                    "bmc {server}: {} operations are already in flight on this server (agent.max_operations_per_server); retry later",
                    self.max_per_server
                ),
                RETRY_AFTER,
            ));
        };
        let Some(all) = self.global.try_acquire_arc() else {
            return refused(RpcError::exhausted(
                format!(
                    "{} BMC operations are already in flight (agent.max_operations); retry later",
                    self.max
                ),
                RETRY_AFTER,
            ));
        };
        let done = self.thread.run(move || async move {
            // Held until the operation ends, even when its caller has gone away; given back
            // before the answer goes out, so a caller that saw it may go again at once.
            let out = make().await;
            drop((one, all));
            out
        });
        Box::pin(async move {
            done.await.unwrap_or_else(|| {
                Err(RpcError::new(
                    Code::Unavailable,
                    "the agent is stopping; the operation was not completed",
                ))
            })
        })
    }

    /// The inventory is now `ids` (a reload): servers that stay keep their bound and the
    /// operations they have in flight.
    pub fn set_servers<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut map = self.per_server.write().unwrap_or_else(|e| e.into_inner());
        let next = ids
            .into_iter()
            .map(|id| {
                let sem = map
                    .remove(id)
                    .unwrap_or_else(|| Arc::new(Semaphore::new(self.max_per_server)));
                (id.to_owned(), sem)
            })
            .collect();
        *map = next;
    }

    /// Cancels every operation in flight (each is dropped at an await point; its caller is
    /// answered `unavailable` at once) and refuses new ones: the agent is stopping.
    pub fn cancel(&self) {
        self.thread.cancel();
    }

    /// Stops the thread (after [`Operations::cancel`], at once).
    pub fn stop(self) {
        self.thread.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn bounds_per_server_and_overall() {
        let hb = Heartbeats::default();
        let ops = Operations::start(["a", "b", "c"], 3, 2, &hb).unwrap();
        let (release, wait) = async_channel::bounded::<()>(1);
        let hold = |ops: &Operations, id: &str| {
            let wait = wait.clone();
            ops.submit(id, move || async move {
                let _ = wait.recv().await;
                Ok(())
            })
        };
        let held = [hold(&ops, "a"), hold(&ops, "a"), hold(&ops, "b")];
        let e = block_on(hold(&ops, "a")).unwrap_err();
        assert_eq!(e.code, Code::ResourceExhausted, "{e:?}");
        assert!(e.message.contains("on this server"), "{e:?}");
        let e = block_on(hold(&ops, "c")).unwrap_err();
        assert!(e.message.contains("(agent.max_operations)"), "{e:?}");
        assert_eq!(e.retry_after, Some(RETRY_AFTER));
        let e = block_on(hold(&ops, "nope")).unwrap_err();
        assert_eq!(e.code, Code::NotFound);
        release.close();
        for h in held {
            block_on(h).unwrap();
        }
        // Permits come back when operations end.
        block_on(ops.submit("c", || async { Ok(()) })).unwrap();
        ops.stop();
    }
}
