//! sushy-emulator (PyPI sushy-tools, fake driver) as a Redfish test peer, over HTTPS with a
//! certificate from a CA the test makes (rustls refuses a CA certificate used as a server
//! certificate, so the peer gets a proper leaf for 127.0.0.1), and HTTP Basic auth
//! (admin/password, `tests/peers/redfish/htpasswd`).
//!
//! The same package's sushy-static serves a directory of mockup files
//! ([`SushyStatic`], `tests/peers/redfish/mockup`, after DMTF's published mockups, DSP2043):
//! what the emulator has not (a chassis Sensors collection, log services), over HTTPS with the
//! same kind of certificate, without authentication.
//!
//! Both live in a virtualenv that `scripts/test` creates (`target/peers/venv`, or
//! `CONDUIT_SUSHY_PYTHON` pointing at a python that has sushy-tools).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, spawn, tool, workspace_root, Running, TempDir};

/// The system the fake driver starts powered off.
pub const SYSTEM_OFF: &str = "27946b59-9e44-4fa7-8e91-f3527a1ef094";

/// A CA and a leaf certificate for 127.0.0.1 signed by it, made with openssl.
#[derive(Debug)]
pub struct Pki {
    /// CA certificate (PEM file).
    pub ca: PathBuf,
    /// Leaf certificate.
    pub cert: PathBuf,
    /// Leaf key.
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(tool("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// Makes a CA and a leaf (CA:FALSE, SAN IP:127.0.0.1) in `dir`, named with `tag`.
    pub fn new(dir: &Path, tag: &str) -> Pki {
        let f = |n: &str| format!("{tag}-{n}");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=conduit test CA {tag}"),
                "-keyout",
                &f("ca.key"),
                "-out",
                &f("ca.pem"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                &f("leaf.key"),
                "-out",
                &f("leaf.csr"),
            ],
        );
        std::fs::write(
            dir.join(f("leaf.ext")),
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
        )
        .expect("ext file");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &f("leaf.csr"),
                "-CA",
                &f("ca.pem"),
                "-CAkey",
                &f("ca.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &f("leaf.ext"),
                "-out",
                &f("leaf.pem"),
            ],
        );
        Pki {
            ca: dir.join(f("ca.pem")),
            cert: dir.join(f("leaf.pem")),
            key: dir.join(f("leaf.key")),
        }
    }
}

/// A running sushy-emulator.
#[derive(Debug)]
pub struct Sushy {
    /// The process (stopped on drop).
    pub proc: Running,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA that signed its certificate.
    pub pki: Pki,
    /// Working directory.
    pub dir: TempDir,
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CONDUIT_SUSHY_PYTHON") {
        return p.into();
    }
    crate::venv_bin("python")
}

impl Sushy {
    /// Starts the emulator with HTTPS and Basic auth on a free loopback port.
    pub fn start() -> Sushy {
        Sushy::start_at(SocketAddr::from(([127, 0, 0, 1], free_port())))
    }

    /// Starts the emulator on `addr` (any loopback address).
    pub fn start_at(addr: SocketAddr) -> Sushy {
        let dir = TempDir::new("sushy");
        let pki = Pki::new(&dir.0, "sushy");
        let port = addr.port();
        let ip = addr.ip();
        let conf = dir.0.join("emulator.conf");
        let peers = workspace_root().join("tests/peers/redfish");
        std::fs::write(
            &conf,
            format!(
                r#"SUSHY_EMULATOR_LISTEN_IP = '{ip}'
SUSHY_EMULATOR_LISTEN_PORT = {port}
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_FEATURE_SET = 'full'
SUSHY_EMULATOR_STATE_DIR = '{state}'
SUSHY_EMULATOR_FAKE_SYSTEMS = [
    {{'uuid': '{SYSTEM_OFF}', 'name': 'fake', 'power_state': 'Off',
     'external_notifier': False, 'nics': [{{'mac': '00:5c:52:31:3a:9c', 'ip': '172.22.0.100'}}]}},
]
SUSHY_EMULATOR_AUTH_FILE = '{htpasswd}'
SUSHY_EMULATOR_SSL_CERT = '{cert}'
SUSHY_EMULATOR_SSL_KEY = '{key}'
"#,
                state = dir.0.join("state").display(),
                htpasswd = peers.join("htpasswd").display(),
                cert = pki.cert.display(),
                key = pki.key.display(),
            ),
        )
        .expect("emulator.conf");
        let mut cmd = Command::new(python());
        cmd.arg(peers.join("run_sushy.py"))
            .arg("--config")
            .arg(&conf)
            .env("FAKE_POWER_DELAY", "0");
        let proc = spawn("sushy-emulator", cmd);
        let ready = crate::wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
        assert!(
            ready.is_some(),
            "sushy-emulator not listening on {addr}; log:\n{}",
            proc.log()
        );
        Sushy {
            proc,
            addr,
            pki,
            dir,
        }
    }
}

impl Sushy {
    /// The `PowerState` of [`SYSTEM_OFF`] as the emulator itself reports it (`On`, `Off`):
    /// the BMC's truth, asked with curl rather than through the code under test.
    pub fn power_state(&self) -> String {
        let out = Command::new(tool("curl"))
            .args(["-sf", "-m", "5", "-u", "admin:password", "--cacert"])
            .arg(&self.pki.ca)
            .arg(format!(
                "https://{}/redfish/v1/Systems/{SYSTEM_OFF}",
                self.addr
            ))
            .output()
            .expect("run curl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["PowerState"].as_str().unwrap_or_default().to_owned()
    }
}

/// A second, unrelated CA (for a certificate that must not verify).
pub fn other_ca(dir: &Path) -> PathBuf {
    Pki::new(dir, "other").ca
}

/// The mockup sushy-static serves by default (see its README).
pub const MOCKUP: &str = "tests/peers/redfish/mockup";

/// A running sushy-static: GET answers the mockup's `<path>/index.json` (404 where there is
/// none; query strings are part of the path, so a `?$skiptoken=` page is a directory of that
/// name); every POST and PATCH gets 204 and no headers, whatever it asks; DELETE gets 501. No
/// authentication: credentials are accepted and ignored.
#[derive(Debug)]
pub struct SushyStatic {
    /// The process (stopped on drop).
    pub proc: Running,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA that signed its certificate.
    pub pki: Pki,
    /// Working directory (the certificates).
    pub dir: TempDir,
}

impl SushyStatic {
    /// Serves [`MOCKUP`] over HTTPS on a free loopback port.
    pub fn start() -> SushyStatic {
        SushyStatic::start_at(
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            &workspace_root().join(MOCKUP),
        )
    }

    /// Serves the mockup directory `mockup` on `addr` (any loopback address).
    pub fn start_at(addr: SocketAddr, mockup: &Path) -> SushyStatic {
        let dir = TempDir::new("sushy-static");
        let pki = Pki::new(&dir.0, "sushy-static");
        let mut cmd = Command::new(python());
        cmd.arg(workspace_root().join("tests/peers/redfish/run_sushy_static.py"))
            .arg("--interface")
            .arg(addr.ip().to_string())
            .arg("--port")
            .arg(addr.port().to_string())
            .arg("--mockup-files")
            .arg(mockup)
            .arg("--ssl-certificate")
            .arg(&pki.cert)
            .arg("--ssl-key")
            .arg(&pki.key);
        let proc = spawn("sushy-static", cmd);
        let ready = crate::wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
        assert!(
            ready.is_some(),
            "sushy-static not listening on {addr}; log:\n{}",
            proc.log()
        );
        SushyStatic {
            proc,
            addr,
            pki,
            dir,
        }
    }

    /// Its request log so far: an access line per request (`"POST /path HTTP/1.1" 204 -`),
    /// then the request's headers and, when there is one, its body (`Data: b'...'`).
    pub fn requests(&self) -> String {
        self.proc.log()
    }

    /// The request log once `done` holds of it, or as it stands after 5 s. sushy-static
    /// writes a request's lines after it has answered, so a client that has its answer may
    /// look before they are there.
    pub fn requests_once(&self, done: impl Fn(&str) -> bool) -> String {
        crate::wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            Some(self.requests()).filter(|log| done(log))
        })
        .unwrap_or_else(|| self.requests())
    }
}
