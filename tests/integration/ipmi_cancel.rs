//! Operations cancelled while their IPMI session is being opened, against ipmi_sim behind a
//! relay that holds every datagram 5 ms each way, so that a cancel a few milliseconds in lands
//! mid-handshake. More cancels than ipmi_sim has session slots (63, kept for about 30 s when
//! abandoned): had any cancel left its session behind, the BMC would take no new one after.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use conduit_ipmi::client::{IpmiError, Timing};
use conduit_ipmi::crypto::CipherSuite;
use conduit_ipmi::rakp::Credentials;
use conduit_ipmi::IpmiBmc;
use conduit_tests::ipmi_sim::{IpmiSim, ADMIN};
use conduit_tests::udp_delay::UdpDelay;
use futures_lite::future::block_on;
use ipmi_rs_core::app::GetDeviceId;

/// Each way through the relay: an open (four round trips) takes at least 40 ms.
const DELAY: Duration = Duration::from_millis(5);

/// More than ipmi_sim's session slots.
const CANCELS: u64 = 72;

fn bmc(addr: std::net::SocketAddr) -> IpmiBmc {
    IpmiBmc::new(
        addr,
        CipherSuite::Suite3,
        Credentials {
            username: ADMIN.0.as_bytes().to_vec(),
            password: ADMIN.1.as_bytes().to_vec(),
            privilege: 4,
        },
        Timing {
            reply_timeout: Duration::from_millis(500),
            retries: 2,
        },
    )
}

/// `f`'s output, or `None` once `d` has passed: `f` is dropped then, as the agent's operation
/// deadlines drop it. The timer is a thread (this crate has no async runtime of its own).
async fn with_timeout<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    let at = Instant::now() + d;
    let waker: Arc<Mutex<Option<Waker>>> = Arc::default();
    let timer = {
        let waker = waker.clone();
        std::thread::spawn(move || {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if let Some(w) = waker.lock().unwrap().take() {
                w.wake();
            }
        })
    };
    let expired = futures_lite::future::poll_fn(|cx| {
        *waker.lock().unwrap() = Some(cx.waker().clone());
        if Instant::now() >= at {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    });
    let out = futures_lite::future::or(async { Some(f.await) }, expired).await;
    drop(timer); // detached: it ends by itself within `d`
    out
}

/// Get Session Info for our own session (App 0x3D, index 0): the BMC's session slots and how
/// many sessions are active on it, ours included.
async fn sessions(b: &IpmiBmc) -> Result<(u8, u8), IpmiError> {
    let d = b
        .request("get session info", 0x06, 0x3D, &[0x00], true)
        .await?;
    match d.get(1..3) {
        Some(&[slots, active]) => Ok((slots & 0x3F, active & 0x3F)),
        _ => Err(IpmiError::Malformed("get session info")),
    }
}

/// What `ipmitool session info active` says is active, where ipmitool is installed (its own
/// session included).
fn ipmitool_active(sim: &IpmiSim) -> Option<u32> {
    let tool = [
        "/usr/bin/ipmitool",
        "/usr/sbin/ipmitool",
        "/usr/local/bin/ipmitool",
    ]
    .into_iter()
    .map(std::path::Path::new)
    .find(|p| p.is_file())?;
    let out = std::process::Command::new(tool)
        .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
        .arg(sim.addr.port().to_string())
        .args(["-U", ADMIN.0, "-P", ADMIN.1, "session", "info", "active"])
        .output()
        .expect("ipmitool");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text.lines().find(|l| l.starts_with("active sessions"));
    line.and_then(|l| l.split(':').nth(1)?.trim().parse().ok())
}

#[test]
fn opens_cancelled_mid_handshake_leave_no_session_on_the_bmc() {
    let sim = IpmiSim::start();
    let direct = bmc(sim.addr);
    let (slots, before) = block_on(sessions(&direct)).expect("session info");
    block_on(direct.close());
    assert!(CANCELS > u64::from(slots), "{slots} slots");
    let by_ipmitool = ipmitool_active(&sim);

    let relay = UdpDelay::start(sim.addr, DELAY);
    let paced = bmc(relay.addr);
    let mut refused = Vec::new();
    block_on(async {
        for i in 0..CANCELS {
            // 1 to 36 ms in: waiting for the Open Session Response, RAKP 2, RAKP 4 or the
            // answer to Set Session Privilege.
            let cut = Duration::from_millis(1 + i * 7 % 36);
            match with_timeout(cut, paced.execute("get device id", GetDeviceId)).await {
                None => {}
                Some(Ok(_)) => panic!("cancel {i}: done before the cancel at {cut:?}"),
                // No slot left (a session left behind by an earlier cancel).
                Some(Err(e)) => refused.push(format!("cancel {i}: {e}")),
            }
        }
        // Waits for the sessions of the cancelled opens to be closed.
        paced.close().await;
    });
    assert!(
        refused.is_empty(),
        "opens refused between cancels: {refused:#?}"
    );

    let after = bmc(sim.addr);
    let (_, active) = block_on(sessions(&after))
        .unwrap_or_else(|e| panic!("ipmi_sim takes no new session after the cancels: {e}"));
    assert_eq!(
        active, before,
        "sessions active before the cancels and after"
    );
    block_on(after.close());
    if let Some(n) = by_ipmitool {
        assert_eq!(ipmitool_active(&sim), Some(n), "ipmitool's count");
    } else {
        eprintln!("ipmitool is not installed: sessions counted by Get Session Info only");
    }
}
