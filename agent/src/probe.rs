//! Probes that tell what answers at an address, without credentials: discovery sweeps with
//! them and `protocol = "auto"` BMCs detect their protocol with them.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use async_io::Async;
#[cfg(feature = "redfish")]
use conduit_metrics::labels::sanitize_value;
use conduit_runtime::with_timeout;

#[cfg(feature = "ipmi")]
pub use conduit_ipmi::client::presence as ipmi;

/// Probes one `ip:port` for a Redfish service; returns its vendor (sanitized: it
/// becomes a label value) if it is one.
pub async fn redfish(addr: SocketAddr, timeout: Duration) -> Result<Option<String>, &'static str> {
    // Connect first, asynchronously: silent addresses cost a timer, not a thread.
    let connected = with_timeout(timeout, Async::<TcpStream>::connect(addr)).await;
    match connected {
        // Closed before asking: some servers (Python's ssl socketserver among them) do the TLS
        // handshake in their accept loop and would wait on an idle connection.
        Some(Ok(stream)) => drop(stream),
        _ => return Ok(None),
    }
    // Only hosts that accepted the connection get this far, so the HTTPS exchange can have
    // longer: BMC web servers are often slow (seconds) to answer a first request.
    #[cfg(feature = "redfish")]
    {
        smol::unblock(move || conduit_redfish::probe(addr, timeout * 3))
            .await
            .map(|vendor| vendor.as_deref().map(sanitize_value))
    }
    #[cfg(not(feature = "redfish"))]
    {
        Ok(None)
    }
}
