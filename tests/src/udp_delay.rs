//! A UDP relay on loopback that holds every datagram for a fixed time each way: a BMC at a
//! real network's and firmware's pace (5-20 ms a request) made of a simulator that answers in
//! microseconds. netem needs privileges and a network namespace; this needs neither.
//!
//! Each client (source address) gets an upstream socket of its own, so the target's replies
//! find their way back; datagrams keep their order (one delay for all).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the relay's threads look at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// Datagrams waiting for their time: (due, socket to send from, destination, bytes).
type Queue = Sender<(Instant, Arc<UdpSocket>, SocketAddr, Vec<u8>)>;

/// A running relay; stops on drop.
#[derive(Debug)]
pub struct UdpDelay {
    /// Where clients send (a loopback address).
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl UdpDelay {
    /// Relays from a new loopback port to `target` (a loopback address: test traffic stays on
    /// this machine), each datagram held `delay` in either direction.
    pub fn start(target: SocketAddr, delay: Duration) -> UdpDelay {
        assert!(target.ip().is_loopback(), "relay targets are loopback only");
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("relay socket"));
        front.set_read_timeout(Some(TICK)).expect("timeout");
        let addr = front.local_addr().expect("relay address");
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (queue, due) = channel();
        let sender = {
            let stop = stop.clone();
            let forwarded = forwarded.clone();
            std::thread::spawn(move || send_when_due(due, stop, forwarded))
        };
        let receiver = {
            let stop = stop.clone();
            let threads = threads.clone();
            std::thread::spawn(move || {
                relay_front(front, target, delay, queue, stop, threads);
            })
        };
        if let Ok(mut t) = threads.lock() {
            t.push(sender);
            t.push(receiver);
        }
        UdpDelay {
            addr,
            stop,
            forwarded,
            threads,
        }
    }

    /// Datagrams delivered so far, both ways.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for UdpDelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn send_when_due(
    due: Receiver<(Instant, Arc<UdpSocket>, SocketAddr, Vec<u8>)>,
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let (at, sock, to, bytes) = match due.recv_timeout(TICK) {
            Ok(d) => d,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // A peer gone (port unreachable) is the test's business, not the relay's.
        if sock.send_to(&bytes, to).is_ok() {
            forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn relay_front(
    front: Arc<UdpSocket>,
    target: SocketAddr,
    delay: Duration,
    queue: Queue,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, client)) = front.recv_from(&mut buf) else {
            continue;
        };
        let up = match upstream.get(&client) {
            Some(up) => up.clone(),
            None => {
                let Ok(up) = UdpSocket::bind("127.0.0.1:0") else {
                    continue;
                };
                let _ = up.set_read_timeout(Some(TICK));
                let up = Arc::new(up);
                upstream.insert(client, up.clone());
                // The target's replies to this client, back through the front socket.
                let (up2, front2, queue2, stop2) =
                    (up.clone(), front.clone(), queue.clone(), stop.clone());
                let t = std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop2.load(Ordering::Relaxed) {
                        if let Ok((n, _)) = up2.recv_from(&mut buf) {
                            let at = Instant::now() + delay;
                            let _ = queue2.send((at, front2.clone(), client, buf[..n].to_vec()));
                        }
                    }
                });
                if let Ok(mut ts) = threads.lock() {
                    ts.push(t);
                }
                up
            }
        };
        let at = Instant::now() + delay;
        let _ = queue.send((at, up, target, buf[..n].to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_arrive_late_both_ways_and_in_order() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            for _ in 0..3 {
                let (n, from) = echo.recv_from(&mut buf).unwrap();
                echo.send_to(&buf[..n], from).unwrap();
            }
        });
        let relay = UdpDelay::start(target, Duration::from_millis(30));
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let start = Instant::now();
        for m in [b"one", b"two", b"six"] {
            client.send_to(m, relay.addr).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let n = client.recv(&mut buf).unwrap();
            got.push(buf[..n].to_vec());
        }
        let took = start.elapsed();
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"six".to_vec()]);
        assert!(took >= Duration::from_millis(60), "{took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(relay.forwarded(), 6);
    }
}
