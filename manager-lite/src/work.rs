//! Fixed pools of threads for the manager's blocking work (SQLite, argon2id), so that the HTTP
//! workers, which also serve `/metrics` and `/health`, never wait on a disk or a hash.
//!
//! A call hands its work to a pool and answers with a deferred response; a pool whose queue is
//! full refuses at once with `resource_exhausted` (429, `Retry-After`) rather than queueing
//! without bound.

use std::sync::Arc;
use std::time::Duration;

use conduit_http::rpc::{refused, Code, RpcError, RpcFuture};

type Job = Box<dyn FnOnce() + Send>;

/// A named pool of threads with a bounded queue.
#[derive(Debug, Clone)]
pub struct WorkPool {
    name: &'static str,
    jobs: async_channel::Sender<Job>,
}

impl WorkPool {
    /// Starts `threads` threads named `name` taking jobs from a queue of `queue`.
    pub fn new(name: &'static str, threads: usize, queue: usize) -> std::io::Result<WorkPool> {
        let (tx, rx) = async_channel::bounded::<Job>(queue.max(1));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv_blocking() {
                        job();
                    }
                })?;
        }
        Ok(WorkPool { name, jobs: tx })
    }

    /// Runs `work` on the pool; the future resolves with its result.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, RpcError> + Send + 'static,
    ) -> RpcFuture<T> {
        let (tx, rx) = async_channel::bounded(1);
        let job: Job = Box::new(move || {
            let _ = tx.send_blocking(work());
        });
        match self.jobs.try_send(job) {
            Ok(()) => Box::pin(async move {
                rx.recv()
                    .await
                    .unwrap_or_else(|_| Err(RpcError::new(Code::Internal, "the work was lost")))
            }),
            Err(_) => refused(RpcError::exhausted(
                format!(
                    "the manager is busy ({} queue full); retry shortly",
                    self.name
                ),
                Duration::from_secs(1),
            )),
        }
    }

    /// Stops taking jobs; the threads end once the queue is drained.
    pub fn close(&self) {
        self.jobs.close();
    }
}

/// The manager's pools.
#[derive(Debug, Clone)]
pub struct Pools {
    /// Store reads and writes.
    pub db: Arc<WorkPool>,
    /// Password hashing and verification (argon2id costs ~19 MiB and tens of ms each: as many
    /// at once as there are cores, no more).
    pub hash: Arc<WorkPool>,
}

impl Pools {
    /// The default sizes: 4 store threads (queue 512), one hash thread per core (queue 64).
    pub fn start() -> std::io::Result<Pools> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Pools {
            db: Arc::new(WorkPool::new("store", 4, 512)?),
            hash: Arc::new(WorkPool::new("hash", cores.min(4), 64)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_work_and_refuses_past_its_queue() {
        let pool = WorkPool::new("t", 1, 1).unwrap();
        assert_eq!(
            futures_lite::future::block_on(pool.run(|| Ok(7))).unwrap(),
            7
        );
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let busy = pool.run(move || {
            let _ = hold_rx.recv();
            Ok(0)
        });
        // wait until the thread took the blocking job, then fill the one-slot queue
        std::thread::sleep(Duration::from_millis(50));
        let queued = pool.run(|| Ok(1));
        let over = futures_lite::future::block_on(pool.run(|| Ok(2))).unwrap_err();
        assert_eq!(over.code, Code::ResourceExhausted);
        hold_tx.send(()).unwrap();
        assert_eq!(futures_lite::future::block_on(busy).unwrap(), 0);
        assert_eq!(futures_lite::future::block_on(queued).unwrap(), 1);
    }
}
