//! stunnel (Debian's 5.68) terminating TLS in front of a plaintext service: how an operator
//! serves the manager, which speaks plain HTTP, as `https://`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::pki::Pki;
use crate::{free_port, start_until, tool, Running, TempDir};

/// A running stunnel: TLS with `pki`'s server certificate on `addr`, plaintext to its
/// upstream.
#[derive(Debug)]
pub struct Stunnel {
    /// The process (its log names each TLS failure).
    pub proc: Running,
    /// Where it accepts TLS.
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Stunnel {
    /// Starts stunnel forwarding TLS on a free loopback port to `upstream`.
    pub fn start(upstream: SocketAddr, pki: &Pki) -> Stunnel {
        let dir = TempDir::new("stunnel");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // foreground: logs to stderr and dies with the test; `pid =` writes no pid file.
        let config = format!(
            "foreground = yes\npid =\n[tls]\naccept = {addr}\nconnect = {upstream}\n\
             cert = {}\nkey = {}\n",
            pki.cert.display(),
            pki.key.display()
        );
        let path = dir.0.join("stunnel.conf");
        std::fs::write(&path, config).expect("stunnel.conf");
        let mut cmd = Command::new(tool("stunnel4"));
        cmd.arg(&path);
        let (proc, ()) = start_until("stunnel", cmd, Duration::from_secs(15), |line| {
            line.contains("Configuration successful").then_some(())
        });
        Stunnel {
            proc,
            addr,
            _dir: dir,
        }
    }
}
