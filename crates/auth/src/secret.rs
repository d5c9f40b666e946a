//! Opaque credentials: refresh tokens, API keys, gateway credentials.
//!
//! A credential reads `<prefix>_<id>_<secret>`: the prefix names its kind (1 to 16 of
//! `a-z 0-9`, so a leaked one is recognizable), the id is 12 base64url characters (9 random
//! bytes) the manager looks the credential up by, and the secret is 32 random bytes in
//! base64url (43 characters). The manager stores the id and [`hash`] of the secret, never the
//! secret. base64url has `_` in its alphabet, so the parts are found by their fixed lengths
//! from the end, not by splitting.

use crate::KeyError;
use conduit_base64::{decode_url, encode_url};
use ring::rand::{SecureRandom, SystemRandom};

const MAX_PREFIX_LEN: usize = 16;
const ID_BYTES: usize = 9;
const ID_LEN: usize = 12;
const SECRET_BYTES: usize = 32;
const SECRET_LEN: usize = 43;
const MAX_LEN: usize = MAX_PREFIX_LEN + 1 + ID_LEN + 1 + SECRET_LEN;

/// A credential. `Display` gives the whole string (to hand over once); `Debug` leaves the
/// secret out.
pub struct Secret {
    prefix: String,
    id: String,
    secret: String,
}

impl Secret {
    pub fn generate(prefix: &str) -> Result<Secret, KeyError> {
        check_prefix(prefix)?;
        Ok(Secret {
            prefix: prefix.to_owned(),
            id: random_id(ID_BYTES)?,
            secret: random_id(SECRET_BYTES)?,
        })
    }

    /// Reads a credential as presented, strictly: exact lengths, canonical base64url.
    pub fn parse(s: &str) -> Option<Secret> {
        if s.len() > MAX_LEN || !s.is_ascii() {
            return None;
        }
        // ASCII only, so every index is a character boundary.
        let (rest, secret) = s.split_at(s.len().checked_sub(SECRET_LEN)?);
        let rest = rest.strip_suffix('_')?;
        let (prefix, id) = rest.split_at(rest.len().checked_sub(ID_LEN)?);
        let prefix = prefix.strip_suffix('_')?;
        check_prefix(prefix).ok()?;
        decode_url(id).ok()?;
        decode_url(secret).ok()?;
        Some(Secret {
            prefix: prefix.to_owned(),
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The public lookup id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret part, as [`hash`] takes it.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether this credential's secret hashes to `stored`, compared in constant time.
    pub fn matches(&self, stored: &[u8; 32]) -> bool {
        constant_time_eq(&hash(&self.secret), stored)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}_{}", self.prefix, self.id, self.secret)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("prefix", &self.prefix)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn check_prefix(prefix: &str) -> Result<(), KeyError> {
    let ok = (1..=MAX_PREFIX_LEN).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadPrefix)
    }
}

/// SHA-256 of a credential's secret part, the value the manager stores.
///
/// A fast hash is enough here, unlike for passwords: the secret is 256 bits from the OS random
/// source, so there is nothing to guess from a leaked hash that a slow hash (argon2) would
/// slow down, and a fast one keeps every request's check cheap.
pub fn hash(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0; 32];
    // SHA-256 digests are 32 bytes; `zip` keeps this total without an index that could panic.
    for (o, d) in out.iter_mut().zip(digest.as_ref()) {
        *o = *d;
    }
    out
}

/// Compares without an early exit, so the time taken does not tell how many leading bytes
/// match. Lengths are not secret (hashes are all 32 bytes). ring's own `constant_time` module
/// is deprecated in 0.17.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && std::hint::black_box(diff) == 0
}

/// `n_bytes` from the OS random source in base64url: ids such as `jti` and `sid` (16 bytes
/// give 22 characters).
pub fn random_id(n_bytes: usize) -> Result<String, KeyError> {
    let mut bytes = vec![0; n_bytes];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    Ok(encode_url(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_parse_and_match() {
        let s = Secret::generate("cdrt").unwrap();
        let text = s.to_string();
        assert_eq!(text.len(), 4 + 1 + ID_LEN + 1 + SECRET_LEN);
        assert!(text.starts_with("cdrt_"));
        let parsed = Secret::parse(&text).unwrap();
        assert_eq!(
            (parsed.prefix(), parsed.id(), parsed.secret()),
            (s.prefix(), s.id(), s.secret())
        );
        assert!(parsed.matches(&hash(s.secret())));
        assert!(!parsed.matches(&hash(Secret::generate("cdrt").unwrap().secret())));
        assert!(!format!("{s:?}").contains(s.secret()));
        assert_ne!(s.id(), Secret::generate("cdrt").unwrap().id());
        assert_eq!(Secret::generate("Cd").unwrap_err(), KeyError::BadPrefix);
        assert_eq!(Secret::generate("").unwrap_err(), KeyError::BadPrefix);
    }

    #[test]
    fn parse_is_strict() {
        let id = "AAAAAAAAAAAA";
        let secret = format!("{}A", "_".repeat(42)); // '_' in the parts is fine
        assert!(Secret::parse(&format!("k_{id}_{secret}")).is_some());
        assert!(Secret::parse(&format!("k_{}_{secret}", "_".repeat(12))).is_some());
        for bad in [
            String::new(),
            format!("{id}_{secret}"),
            format!("_{id}_{secret}"),
            format!("K_{id}_{secret}"),
            format!("k-{id}_{secret}"),
            format!("k_{id}-{secret}"),
            format!("k_{id}_{secret}A"),
            format!("k_{id}A_{secret}"),
            format!("k_{id}_{}B", "_".repeat(42)), // non-canonical last character
            format!("k_{id}_{}=", "_".repeat(42)),
            format!("k_AAAAAAAAAAA+_{secret}"),
            format!("{}_{id}_{secret}", "k".repeat(17)),
            format!("k_{id}_{}\u{e9}", "_".repeat(41)),
        ] {
            assert!(Secret::parse(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn hashes_ids_and_comparison() {
        // FIPS 180-2's "abc".
        assert_eq!(
            encode_url(&hash("abc")),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
        assert_eq!(random_id(16).unwrap().len(), 22);
        assert_ne!(random_id(16).unwrap(), random_id(16).unwrap());
    }
}
