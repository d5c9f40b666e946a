//! The small async-runtime pieces every Conduit crate shares (on smol's `async-io`):
//! [`with_timeout`] bounds a future, [`Background`] and [`every`] run a round of work on an
//! interval on a thread of its own until stopped (the agent's poller and discovery),
//! [`heartbeat`] proves such loops progress, [`job_thread`] runs jobs on an executor thread,
//! [`yield_to_operations`] lowers a bulk-transfer thread's CPU priority.

#![forbid(unsafe_code)]

pub mod heartbeat;
pub mod job_thread;

use std::future::Future;
use std::thread::JoinHandle;
use std::time::Duration;

use async_io::Timer;
use futures_lite::future;

/// `f`'s output, or `None` when `d` passes first (`f` is dropped then).
pub async fn with_timeout<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(f.await) }, async {
        Timer::after(d).await;
        None
    })
    .await
}

/// Lowers the calling thread's scheduling priority (nice +5; Linux nice values are per thread):
/// for threads that move bulk bytes (console relays), so that on a busy machine the threads
/// that answer operations, heartbeats and scrapes are scheduled first. Best effort.
pub fn yield_to_operations() {
    let _ = rustix::process::setpriority_process(None, 5);
}

/// A background thread, stopped (and joined) by [`Background::stop`].
#[derive(Debug)]
pub struct Background {
    stop: async_channel::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Runs `body` on a thread named `name`; `body` gets the receiver that closes on stop.
    pub fn spawn(
        name: &str,
        body: impl FnOnce(async_channel::Receiver<()>) + Send + 'static,
    ) -> std::io::Result<Background> {
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(stopped))?;
        Ok(Background {
            stop,
            thread: Some(thread),
        })
    }

    /// Asks the thread to stop, without waiting for it.
    pub fn ask_stop(&self) {
        self.stop.close();
    }

    /// Asks the thread to stop and waits for it to end (an [`every`] loop drops its round).
    pub fn stop(mut self) {
        self.stop.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `round` now and then every `interval` until `stopped` closes (a round in progress is
/// dropped then). `beat` is ticked after
/// each round and told of each wait; the round ticks it itself as it progresses.
pub async fn every<F: Future<Output = ()>>(
    interval: Duration,
    stopped: &async_channel::Receiver<()>,
    beat: &heartbeat::Heartbeat,
    mut round: impl FnMut() -> F,
) {
    loop {
        beat.tick();
        // A stop does not wait for the round: it is dropped where it is (every await point of
        // a round must be a safe place to stop).
        let finished = future::or(
            async {
                round().await;
                true
            },
            async {
                let _ = stopped.recv().await;
                false
            },
        )
        .await;
        if !finished {
            break;
        }
        beat.sleeping(interval);
        let sleep = async {
            Timer::after(interval).await;
            true
        };
        let stop = async {
            let _ = stopped.recv().await;
            false
        };
        if !future::or(sleep, stop).await {
            break;
        }
    }
}
