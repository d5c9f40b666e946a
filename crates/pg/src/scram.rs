//! SCRAM-SHA-256 (RFC 5802, RFC 7677), client side, without channel binding (there is no TLS
//! yet), on ring. A pure state machine: it takes and returns messages, the connection sends
//! them. The password is used as its UTF-8 bytes: SASLprep is the identity on ASCII (and on most
//! already-normalized text), and PostgreSQL itself falls back to the raw bytes when SASLprep
//! fails. The server's signature is checked, so a server that does not know the password
//! cannot pass for one that does.

use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2};

use crate::Error;

/// The mechanism name in AuthenticationSASL.
pub(crate) const MECHANISM: &str = "SCRAM-SHA-256";

/// Iteration counts past this are refused: a hostile server could make us spin for minutes.
const MAX_ITERATIONS: u32 = 1_000_000;

/// The exchange after the client-first message.
pub(crate) struct Scram {
    password: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    /// The ServerSignature key and the AuthMessage, once the server-first message is in.
    expect: Option<(hmac::Key, String)>,
}

impl std::fmt::Debug for Scram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scram").finish_non_exhaustive()
    }
}

fn auth(m: &str) -> Error {
    Error::Auth(format!("SCRAM-SHA-256: {m}"))
}

/// The value of attribute `key` if it is the `index`th of `msg` (RFC 5802 fixes the order).
fn attr(msg: &str, index: usize, key: char) -> Option<&str> {
    msg.split(',')
        .nth(index)?
        .strip_prefix(key)?
        .strip_prefix('=')
}

impl Scram {
    /// Starts an exchange with a fresh nonce from the OS random source.
    pub(crate) fn new(password: &str) -> Result<Scram, Error> {
        let mut raw = [0u8; 18];
        getrandom::fill(&mut raw).map_err(|e| auth(&format!("no random source: {e}")))?;
        // PostgreSQL ignores the SCRAM user name (the startup message names the role).
        Ok(Scram::with_nonce(
            "",
            password,
            &conduit_base64::encode(&raw),
        ))
    }

    /// Starts an exchange with a given nonce (printable, no ','): for the RFC test vectors.
    pub(crate) fn with_nonce(user: &str, password: &str, nonce: &str) -> Scram {
        Scram {
            password: password.as_bytes().to_vec(),
            client_first_bare: format!("n={user},r={nonce}"),
            nonce: nonce.to_string(),
            expect: None,
        }
    }

    /// The client-first message: no channel binding, no authzid.
    pub(crate) fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Given the server-first message, the client-final message with our proof.
    pub(crate) fn client_final(&mut self, server_first: &[u8]) -> Result<String, Error> {
        let sf = std::str::from_utf8(server_first).map_err(|_| auth("server-first not UTF-8"))?;
        if sf.starts_with("m=") {
            return Err(auth("the server requires an unknown extension"));
        }
        let nonce = attr(sf, 0, 'r').ok_or_else(|| auth("server-first has no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(auth("the server nonce does not extend ours"));
        }
        if !nonce
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b',')
        {
            return Err(auth("the server nonce is not printable"));
        }
        let salt = attr(sf, 1, 's').ok_or_else(|| auth("server-first has no salt"))?;
        let salt = conduit_base64::decode(salt).map_err(|_| auth("the salt is not base64"))?;
        let iterations = attr(sf, 2, 'i')
            .and_then(|i| i.parse::<u32>().ok())
            .and_then(NonZeroU32::new)
            .filter(|i| i.get() <= MAX_ITERATIONS)
            .ok_or_else(|| auth("bad iteration count"))?;

        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            &self.password,
            &mut salted,
        );
        let salted = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        // c=biws is base64("n,,"): the GS2 header without channel binding.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{sf},{without_proof}", self.client_first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        self.expect = Some((
            hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()),
            auth_message,
        ));
        Ok(format!(
            "{without_proof},p={}",
            conduit_base64::encode(&proof)
        ))
    }

    /// Checks the server-final message: the server proves it knew the password too.
    pub(crate) fn verify_server_final(&self, server_final: &[u8]) -> Result<(), Error> {
        let sf = std::str::from_utf8(server_final).map_err(|_| auth("server-final not UTF-8"))?;
        if let Some(e) = attr(sf, 0, 'e') {
            return Err(auth(&format!("the server refused: {e}")));
        }
        let v = attr(sf, 0, 'v').ok_or_else(|| auth("server-final has no signature"))?;
        let v = conduit_base64::decode(v).map_err(|_| auth("the signature is not base64"))?;
        let (key, auth_message) = self
            .expect
            .as_ref()
            .ok_or_else(|| auth("server-final before server-first"))?;
        // constant time
        hmac::verify(key, auth_message.as_bytes(), &v)
            .map_err(|_| auth("the server's signature is wrong (it does not know the password)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    fn rfc7677() -> Scram {
        Scram::with_nonce("user", "pencil", "rOprNGfwEbeRWgbNEkqO")
    }

    #[test]
    fn rfc7677_test_vector() {
        let mut s = rfc7677();
        assert_eq!(s.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        assert_eq!(
            s.client_final(SERVER_FIRST.as_bytes()).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn a_wrong_server_signature_is_refused() {
        let mut s = rfc7677();
        s.client_final(SERVER_FIRST.as_bytes()).unwrap();
        for bad in [
            &b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="[..],
            b"v=",
            b"v=!!!!",
            b"e=invalid-proof",
            b"",
            b"\xff",
        ] {
            let e = s.verify_server_final(bad).unwrap_err();
            assert!(matches!(e, Error::Auth(_)), "{e:?}");
        }
        // a server-final with no server-first
        let e = rfc7677().verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert!(e.is_err());
    }

    #[test]
    fn bad_server_first_messages_are_refused() {
        for bad in [
            "r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOx,s=***,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999",
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==",
            "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOx,i=4096",
            "m=ext,r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "",
        ] {
            let e = rfc7677().client_final(bad.as_bytes()).unwrap_err();
            assert!(matches!(e, Error::Auth(_)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn fresh_nonces_differ() {
        let a = Scram::new("pw").unwrap().client_first();
        let b = Scram::new("pw").unwrap().client_first();
        assert!(a.starts_with("n,,n=,r=") && a != b, "{a} {b}");
    }
}
