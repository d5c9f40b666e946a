//! Conduit's credentials. The manager signs short-lived access tokens and gateways verify them
//! offline, with nothing but the manager's public keys; long-lived credentials are opaque
//! random strings the manager looks up.
//!
//! - [`key`]: the manager's Ed25519 [`SigningKey`], [`PublicKey`]s and the [`KeySet`] gateways
//!   verify with, published as a JWKS (RFC 7517, RFC 8037) so keys can rotate: a new key joins
//!   the set before it signs, an old one leaves once its last tokens have expired.
//! - [`token`]: [`Claims`], [`sign`] and [`verify`]: JWS compact serialization (RFC 7515) of a
//!   JWT (RFC 7519) with `alg` `EdDSA` only. Verification refuses everything else before any
//!   cryptography, so algorithm confusion (`none`, HMAC keyed with the public key) cannot occur.
//! - [`verifier`]: a [`Verifier`], a key set that checks each token's signature once and
//!   its times on every use.
//! - [`secret`]: refresh tokens, API keys and gateway credentials (`<prefix>_<id>_<secret>`),
//!   stored as SHA-256 hashes, plus random ids for `jti` and `sid`.
//!
//! Randomness comes from the OS through ring's `SystemRandom`; when it fails, so does the
//! operation ([`KeyError::Random`]). Time is passed in (`now_unix`), never read here.

#![forbid(unsafe_code)]

pub mod key;
pub mod revocation;
pub mod secret;
pub mod token;
pub mod verifier;

pub use key::{KeySet, PublicKey, SigningKey};
pub use revocation::Revocations;
pub use secret::{random_id, Secret};
pub use token::{sign, verify, Claims, Role, TokenError};
pub use verifier::Verifier;

/// Why a key, a key set or a credential could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The OS random source failed; nothing falls back to a weaker one.
    Random,
    /// ring refused the PKCS#8 document (the reason is ring's, e.g. a v1 document without
    /// the public key, which is what `openssl genpkey` writes).
    Rejected(String),
    /// A key id that is empty, longer than 64 characters or not of `A-Z a-z 0-9 . _ -`.
    BadKid,
    /// A credential prefix that is empty, longer than 16 characters or not of `a-z 0-9`.
    BadPrefix,
    /// A JWKS that is not well formed.
    Jwks(&'static str),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Random => f.write_str("system random source failed"),
            KeyError::Rejected(why) => write!(f, "pkcs8 key rejected: {why}"),
            KeyError::BadKid => f.write_str("invalid key id"),
            KeyError::BadPrefix => f.write_str("invalid credential prefix"),
            KeyError::Jwks(why) => write!(f, "jwks: {why}"),
        }
    }
}

impl std::error::Error for KeyError {}
