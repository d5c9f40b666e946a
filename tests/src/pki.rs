//! Certificate authorities for tests: a CA and a server certificate it issued (for
//! `localhost` and 127.0.0.1 unless told otherwise), written as PEM files.

use std::path::PathBuf;

use crate::TempDir;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA and one server certificate, on disk.
#[derive(Debug)]
pub struct Pki {
    _dir: TempDir,
    /// The CA certificate (what agents trust).
    pub ca: PathBuf,
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl Pki {
    /// A fresh CA named `name` and a server certificate from it for `localhost` and
    /// 127.0.0.1.
    pub fn new(name: &str) -> Pki {
        Pki::for_names(name, &["localhost", "127.0.0.1"])
    }

    /// A fresh CA and a server certificate for `names` (DNS names or IP addresses).
    pub fn for_names(name: &str, names: &[&str]) -> Pki {
        let dir = TempDir::new(&format!("pki-{name}"));
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = CertificateParams::new(names).expect("server params");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let write = |file: &str, text: String| {
            let p = dir.0.join(file);
            std::fs::write(&p, text).expect("write PEM");
            p
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", cert.pem()),
            key: write("server.key", key.serialize_pem()),
            _dir: dir,
        }
    }
}
