//! A thread with an async executor of its own that runs jobs sent from other threads: the
//! agent's BMC operations and its SOL consoles each run on one, away from the HTTP threads.
//!
//! Jobs are `Send` closures that build their future on the thread, so the futures themselves
//! need not be `Send` (IPMI sessions are not). A ticker on the executor beats the thread's
//! [`Heartbeat`], so a job that blocks the thread shows in `/health`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_io::Timer;
use futures_lite::future;

use crate::heartbeat::Heartbeat;
use crate::Background;

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// How often the executor's ticker beats.
pub const TICK: Duration = Duration::from_secs(1);
/// The period to register an executor's beat with: its jobs may do short blocking work (a
/// log write on a slow SD card), which must not read as a stall; a thread blocked for longer
/// than [`crate::heartbeat::STALE_AFTER`] times this is one.
pub const BEAT_PERIOD: Duration = Duration::from_secs(5);

/// A running job thread; dropped jobs and unfinished ones end when it stops.
#[derive(Debug)]
pub struct JobThread {
    jobs: async_channel::Sender<Job>,
    thread: Option<Background>,
}

impl JobThread {
    /// Starts thread `name`; `beat` (registered with period [`BEAT_PERIOD`]) is ticked by
    /// it every [`TICK`].
    pub fn start(name: &str, beat: Option<Arc<Heartbeat>>) -> std::io::Result<JobThread> {
        let (jobs, incoming) = async_channel::unbounded::<Job>();
        let thread = Background::spawn(name, move |stopped| {
            let ex = smol::LocalExecutor::new();
            if let Some(beat) = beat {
                ex.spawn(async move {
                    loop {
                        beat.tick();
                        Timer::after(TICK).await;
                    }
                })
                .detach();
            }
            let accept = async {
                while let Ok(job) = incoming.recv().await {
                    ex.spawn(job()).detach();
                }
            };
            future::block_on(ex.run(future::or(accept, async {
                let _ = stopped.recv().await;
            })));
        })?;
        Ok(JobThread {
            jobs,
            thread: Some(thread),
        })
    }

    /// Runs the future `make` builds on the thread; the returned future (`Send`, it only
    /// waits) yields its output, or `None` if the thread stopped first.
    pub fn run<T, F>(
        &self,
        make: impl FnOnce() -> F + Send + 'static,
    ) -> impl Future<Output = Option<T>> + Send + 'static
    where
        T: Send + 'static,
        F: Future<Output = T> + 'static,
    {
        let (tx, rx) = async_channel::bounded(1);
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _ = tx.try_send(make().await);
            })
        });
        let sent = self.jobs.try_send(job).is_ok();
        async move {
            if sent {
                rx.recv().await.ok()
            } else {
                None
            }
        }
    }

    /// Runs `make`'s future on the thread without waiting for it.
    pub fn detach<F: Future<Output = ()> + 'static>(
        &self,
        make: impl FnOnce() -> F + Send + 'static,
    ) -> bool {
        self.jobs
            .try_send(Box::new(move || Box::pin(make())))
            .is_ok()
    }

    /// Stops the thread without waiting for it: unfinished jobs are dropped (their waiters get
    /// `None`), new ones are refused.
    pub fn cancel(&self) {
        self.jobs.close();
        if let Some(t) = &self.thread {
            t.ask_stop();
        }
    }

    /// Stops the thread and waits for it: unfinished jobs are dropped (their waiters get
    /// `None`). Not from a job of this thread.
    pub fn stop(mut self) {
        self.jobs.close();
        if let Some(t) = self.thread.take() {
            t.stop();
        }
    }
}

impl Drop for JobThread {
    // Asks only: the last owner may be a job on the thread itself, which cannot join it.
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_non_send_futures_and_reports_a_stop() {
        let t = JobThread::start("test-jobs", None).unwrap();
        let rc = std::rc::Rc::new(41);
        drop(rc);
        let v = future::block_on(t.run(|| async {
            let local = std::rc::Rc::new(41); // not Send: built on the thread
            *local + 1
        }));
        assert_eq!(v, Some(42));
        let never = t.run(future::pending::<()>);
        t.stop();
        assert_eq!(future::block_on(never), None);
    }
}
