//! The IPMI half of a discovery cycle: one UDP socket pings a whole range (RMCP/ASF presence
//! ping, pongs matched by source), then asks the answering BMCs for their OEM IANA number
//! (Get Channel Authentication Capabilities, session-less).

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use conduit_ipmi::wire::{
    emit_request, emit_v15_packet, parse_v15_packet, presence_ping, IpmiResponse, PresencePong,
};
use conduit_runtime::heartbeat::Heartbeat;
use conduit_runtime::with_timeout;

/// A few IANA enterprise numbers of BMC vendors (IPMI OEM IDs).
fn iana_vendor(iana: u32) -> String {
    match iana {
        0 => "unknown".into(),
        2 => "IBM".into(),
        11 => "HPE".into(),
        343 => "Intel".into(),
        674 => "Dell".into(),
        4753 => "MontaVista".into(),
        10876 => "Supermicro".into(),
        19046 => "Lenovo".into(),
        n => format!("IANA {n}"),
    }
}

/// Pings every `ip:port` from one socket; returns who answered, with their IPMI OEM vendor.
pub(super) async fn sweep(
    targets: &[SocketAddr],
    timeout: Duration,
    errors: &mut Vec<&'static str>,
    beat: Option<&Heartbeat>,
) -> HashMap<SocketAddr, String> {
    let tick = || {
        if let Some(b) = beat {
            b.tick();
        }
    };
    let mut answered: HashMap<SocketAddr, String> = HashMap::new();
    if targets.is_empty() {
        return answered;
    }
    let sock = match Async::<UdpSocket>::bind(([0, 0, 0, 0], 0)) {
        Ok(s) => s,
        Err(e) => {
            log::error!("discovery: bind a UDP socket: {e}");
            errors.push("socket");
            return answered;
        }
    };
    let wanted: HashSet<SocketAddr> = targets.iter().copied().collect();
    let mut buf = [0u8; 512];
    let mut vendors_heard = 0;
    // Two rounds of pings (UDP may lose one), then one round of vendor queries.
    for round in 0..3 {
        let mut sent = 0;
        for (i, t) in targets.iter().enumerate() {
            let packet = match round {
                0 | 1 if !answered.contains_key(t) => presence_ping(i as u8).to_vec(),
                2 if answered.contains_key(t) => {
                    // Get Channel Authentication Capabilities, channel "this one", administrator.
                    emit_v15_packet(&emit_request(0x06, 0x38, 1, &[0x8E, 0x04]))
                }
                _ => continue,
            };
            match sock.send_to(&packet, *t).await {
                Ok(_) => sent += 1,
                // Loopback and LAN sends do not block for long; a route-less range is an error.
                Err(e) => {
                    log::debug!("discovery: send to {t}: {e}");
                    errors.push("send_failed");
                }
            }
            // Pace large ranges a little.
            if sent % 256 == 255 {
                tick();
                Timer::after(Duration::from_millis(1)).await;
            }
        }
        if sent == 0 {
            continue;
        }
        let deadline = Instant::now() + timeout;
        tick();
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let got = with_timeout(wait, sock.recv_from(&mut buf)).await;
            let Some(Ok((n, from))) = got else {
                if got.is_none() {
                    break;
                }
                continue; // ICMP errors surface on some kernels; the ping simply failed
            };
            if !wanted.contains(&from) {
                continue;
            }
            let d = &buf[..n];
            if round < 2 {
                match PresencePong::parse(d) {
                    Ok(p) if p.ipmi => {
                        answered.insert(from, "unknown".into());
                    }
                    Ok(_) => {}
                    Err(_) => errors.push("malformed_reply"),
                }
            } else if let Ok(msg) = parse_v15_packet(d) {
                if let Ok(r) = IpmiResponse::parse(msg) {
                    if r.completion == 0 && r.data.len() >= 7 {
                        let iana = u32::from_le_bytes([r.data[4], r.data[5], r.data[6], 0]);
                        answered.insert(from, iana_vendor(iana));
                    }
                    vendors_heard += 1;
                }
            }
            // Everyone answered: no need to wait out the timeout.
            if (round < 2 && answered.len() == targets.len())
                || (round == 2 && vendors_heard >= answered.len())
            {
                break;
            }
        }
    }
    answered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendors_by_iana_number() {
        assert_eq!(iana_vendor(674), "Dell");
        assert_eq!(iana_vendor(99999), "IANA 99999");
    }
}
