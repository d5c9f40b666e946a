//! The manager's signing key and the public keys gateways verify with.
//!
//! A key id (`kid`) is 1 to 64 characters of `A-Z a-z 0-9 . _ -`: it lands in token headers,
//! JWKS documents and logs, and with that alphabet it needs no escaping in any of them.

use crate::KeyError;
use conduit_base64::{decode_url, encode_url};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Deserialize;

const MAX_KID_LEN: usize = 64;

fn check_kid(kid: &str) -> Result<(), KeyError> {
    let ok = (1..=MAX_KID_LEN).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadKid)
    }
}

/// An Ed25519 key pair with its id. Its `Debug` shows the id and the public key only.
pub struct SigningKey {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl SigningKey {
    /// A new key from the OS random source.
    pub fn generate(kid: &str) -> Result<SigningKey, KeyError> {
        check_kid(kid)?;
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
        SigningKey::from_pkcs8(kid, doc.as_ref())
    }

    /// A key stored earlier from [`pkcs8`](Self::pkcs8): a PKCS#8 v2 document (RFC 5958) whose
    /// public key ring checks against the private one.
    pub fn from_pkcs8(kid: &str, pkcs8: &[u8]) -> Result<SigningKey, KeyError> {
        check_kid(kid)?;
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| KeyError::Rejected(e.to_string()))?;
        let x = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| KeyError::Rejected("public key is not 32 bytes".into()))?;
        let public = PublicKey {
            kid: kid.to_owned(),
            x,
        };
        Ok(SigningKey {
            pkcs8: pkcs8.to_vec(),
            pair,
            public,
        })
    }

    /// The secret key as a PKCS#8 document, for the manager to store (it signs every token: the manager keeps its database readable by its own user only).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    pub(crate) fn sign(&self, message: &[u8]) -> ring::signature::Signature {
        self.pair.sign(message)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key (`x` in RFC 8037's terms) and its id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    kid: String,
    x: [u8; 32],
}

impl PublicKey {
    pub fn new(kid: &str, x: [u8; 32]) -> Result<PublicKey, KeyError> {
        check_kid(kid)?;
        Ok(PublicKey {
            kid: kid.to_owned(),
            x,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn x(&self) -> &[u8; 32] {
        &self.x
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKey {{ kid: {:?}, x: {} }}",
            self.kid,
            encode_url(&self.x)
        )
    }
}

/// The public keys tokens may be signed with, at most one per key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

/// One JWK as read: only what tells an Ed25519 signing key apart and what it carries.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    kid: Option<String>,
    x: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

impl KeySet {
    pub fn new() -> KeySet {
        KeySet::default()
    }

    /// Adds a key; one already there with the same id is replaced and returned.
    pub fn insert(&mut self, key: PublicKey) -> Option<PublicKey> {
        let old = self.remove(&key.kid);
        self.keys.push(key);
        old
    }

    pub fn remove(&mut self, kid: &str) -> Option<PublicKey> {
        let i = self.keys.iter().position(|k| k.kid == kid)?;
        Some(self.keys.remove(i))
    }

    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The set as a JWKS document (RFC 7517 §5, keys as in RFC 8037 §2).
    pub fn to_jwks(&self) -> String {
        // Written by hand: a kid needs no escaping (see the module docs) and `x` is base64url.
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| {
                format!(
                    r#"{{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"{}","x":"{}"}}"#,
                    k.kid,
                    encode_url(&k.x)
                )
            })
            .collect();
        format!(r#"{{"keys":[{}]}}"#, keys.join(","))
    }

    /// Reads a JWKS document. Keys that are not Ed25519 signing keys (another `kty` or `crv`,
    /// an `alg` other than `EdDSA`, a `use` other than `sig`) are skipped, so a set may carry
    /// keys for other consumers; an Ed25519 key without a valid `kid` or `x`, a repeated
    /// `kid`, or a document that is not a JWKS is an error rather than a smaller set.
    pub fn from_jwks(json: &str) -> Result<KeySet, KeyError> {
        let jwks: Jwks = serde_json::from_str(json).map_err(|_| KeyError::Jwks("not a JWKS"))?;
        let mut set = KeySet::new();
        for jwk in jwks.keys {
            let ed25519 = jwk.kty == "OKP"
                && jwk.crv.as_deref() == Some("Ed25519")
                && jwk.alg.as_deref().is_none_or(|a| a == "EdDSA")
                && jwk.use_.as_deref().is_none_or(|u| u == "sig");
            if !ed25519 {
                continue;
            }
            let kid = jwk.kid.ok_or(KeyError::Jwks("Ed25519 key without kid"))?;
            let x = jwk
                .x
                .and_then(|x| decode_url(&x).ok())
                .and_then(|x| <[u8; 32]>::try_from(x).ok())
                .ok_or(KeyError::Jwks("x is not 32 bytes of base64url"))?;
            if set.insert(PublicKey::new(&kid, x)?).is_some() {
                return Err(KeyError::Jwks("duplicate kid"));
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_round_trip_and_debug_hides_it() {
        let key = SigningKey::generate("m-2024").unwrap();
        let again = SigningKey::from_pkcs8("m-2024", key.pkcs8()).unwrap();
        assert_eq!(again.public(), key.public());
        let debug = format!("{key:?}");
        assert!(debug.contains("m-2024") && !debug.contains(&encode_url(key.pkcs8())));
        assert!(matches!(
            SigningKey::from_pkcs8("m", b"not a key"),
            Err(KeyError::Rejected(_))
        ));
        for kid in ["", "a b", "k\"", "é", &"k".repeat(65)] {
            assert_eq!(SigningKey::generate(kid).unwrap_err(), KeyError::BadKid);
        }
    }

    #[test]
    fn jwks_round_trip() {
        let mut set = KeySet::new();
        set.insert(PublicKey::new("a", [0xfb; 32]).unwrap());
        set.insert(PublicKey::new("b.2", [1; 32]).unwrap());
        let json = set.to_jwks();
        assert_eq!(
            json,
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"a","x":"-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s"},{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"b.2","x":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"}]}"#
        );
        assert_eq!(KeySet::from_jwks(&json).unwrap(), set);
        assert_eq!(KeySet::from_jwks(r#"{"keys":[]}"#).unwrap(), KeySet::new());
    }

    #[test]
    fn jwks_skips_other_keys_and_refuses_malformed_ones() {
        let x = encode_url(&[7; 32]);
        let json = format!(
            r#"{{"keys":[
            {{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}},
            {{"kty":"OKP","crv":"X25519","kid":"x","x":"{x}"}},
            {{"kty":"OKP","crv":"Ed25519","kid":"enc","use":"enc","x":"{x}"}},
            {{"kty":"OKP","crv":"Ed25519","kid":"other","alg":"Ed448","x":"{x}"}},
            {{"kty":"OKP","crv":"Ed25519","kid":"k","x":"{x}","extra":[1]}}]}}"#
        );
        let set = KeySet::from_jwks(&json).unwrap();
        assert_eq!(set.keys(), [PublicKey::new("k", [7; 32]).unwrap()]);

        let ed = |fields: &str| format!(r#"{{"kty":"OKP","crv":"Ed25519"{fields}}}"#);
        let jwks = |keys: &[String]| format!(r#"{{"keys":[{}]}}"#, keys.join(","));
        let good = ed(&format!(r#","kid":"k","x":"{x}""#));
        for (json, e) in [
            ("".to_owned(), "not a JWKS"),
            ("[]".into(), "not a JWKS"),
            (r#"{"keys":{}}"#.into(), "not a JWKS"),
            (r#"{"keys":[{"crv":"Ed25519"}]}"#.into(), "not a JWKS"),
            (
                jwks(&[ed(&format!(r#","x":"{x}""#))]),
                "Ed25519 key without kid",
            ),
            (
                jwks(&[ed(r#","kid":"k""#)]),
                "x is not 32 bytes of base64url",
            ),
            (
                jwks(&[ed(r#","kid":"k","x":"AQAB""#)]),
                "x is not 32 bytes of base64url",
            ),
            (
                jwks(&[ed(&format!(r#","kid":"k","x":"{x}=""#))]),
                "x is not 32 bytes of base64url",
            ),
            (jwks(&[good.clone(), good]), "duplicate kid"),
        ] {
            assert_eq!(KeySet::from_jwks(&json), Err(KeyError::Jwks(e)), "{json}");
        }
        let bad_kid = jwks(&[ed(&format!(r#","kid":"a b","x":"{x}""#))]);
        assert_eq!(KeySet::from_jwks(&bad_kid), Err(KeyError::BadKid));
    }
}
