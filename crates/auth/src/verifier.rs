//! A [`KeySet`] with a memory of the tokens it has verified.
//!
//! A client sends the same access token with every call for its whole lifetime, and an
//! Ed25519 verification costs ~60 µs on the appliances' cores, most of a small call's work.
//! The [`Verifier`] remembers the claims of tokens whose signature it has checked, keyed by
//! the SHA-256 of the whole token (so only the identical token, byte for byte, is taken from
//! memory), and re-checks their times on every use. A verifier is tied to one key set: who
//! changes keys makes a new verifier, so nothing a removed key signed is remembered.
//! Revocation is the caller's check, made on every use, remembered or not.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::key::KeySet;
use crate::token::{check_time, verify, Claims, TokenError, MAX_TOKEN_LEN};

/// How many verified tokens are remembered; past it the memory starts over (a burst of new
/// tokens costs their verification, never unbounded memory). ~150 bytes each.
pub const REMEMBERED: usize = 4096;

/// Verifies access tokens against one key set, remembering those that verified.
#[derive(Debug, Default)]
pub struct Verifier {
    keys: KeySet,
    seen: Mutex<HashMap<[u8; 32], Claims>>,
}

impl Verifier {
    /// A verifier for `keys`, remembering nothing yet.
    pub fn new(keys: KeySet) -> Verifier {
        Verifier {
            keys,
            seen: Mutex::default(),
        }
    }

    /// The key set tokens are verified against.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// [`verify`]'s answer for `token` at `now_unix`; the signature is checked once per token.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let digest = crate::secret::hash(token);
        let remembered = self.seen().get(&digest).cloned();
        if let Some(claims) = remembered {
            check_time(&claims, now_unix)?;
            return Ok(claims);
        }
        let claims = verify(&self.keys, token, now_unix)?;
        let mut seen = self.seen();
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(digest, claims.clone());
        Ok(claims)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Claims>> {
        // The map holds only verified claims: a panic elsewhere cannot leave it wrong.
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{sign, Role, LEEWAY_SECS};
    use crate::SigningKey;

    fn claims(now: u64) -> Claims {
        Claims {
            sub: "u1".into(),
            cus: Some("c1".into()),
            role: Role::Viewer,
            iat: now,
            exp: now + 60,
            jti: "t1".into(),
            sid: "s1".into(),
        }
    }

    fn verifier(key: &SigningKey) -> Verifier {
        let mut keys = KeySet::new();
        keys.insert(key.public());
        Verifier::new(keys)
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let key = SigningKey::generate("k1").unwrap();
        let v = verifier(&key);
        let c = claims(1000);
        let jwt = sign(&key, &c);
        assert_eq!(v.verify(&jwt, 1000), Ok(c.clone()));
        assert_eq!(v.verify(&jwt, 1010), Ok(c));
        assert_eq!(v.verify(&jwt, 1060 + LEEWAY_SECS), Err(TokenError::Expired));
    }

    #[test]
    fn only_the_identical_token_is_remembered() {
        let key = SigningKey::generate("k1").unwrap();
        let v = verifier(&key);
        let jwt = sign(&key, &claims(1000));
        v.verify(&jwt, 1000).unwrap();
        // The same signature over other claims, and the token with a byte changed anywhere.
        let (head, sig) = jwt.rsplit_once('.').unwrap();
        let other = sign(
            &key,
            &Claims {
                role: Role::Admin,
                ..claims(1000)
            },
        );
        let other_head = other.rsplit_once('.').unwrap().0;
        assert_eq!(
            v.verify(&format!("{other_head}.{sig}"), 1000),
            Err(TokenError::BadSignature)
        );
        for i in 0..jwt.len() {
            let mut bytes = jwt.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != jwt {
                assert!(v.verify(&tampered, 1000).is_err(), "byte {i} of {head}");
            }
        }
    }

    #[test]
    fn another_key_set_remembers_nothing() {
        let key = SigningKey::generate("k1").unwrap();
        let jwt = sign(&key, &claims(1000));
        verifier(&key).verify(&jwt, 1000).unwrap();
        let other = SigningKey::generate("k2").unwrap();
        assert_eq!(
            verifier(&other).verify(&jwt, 1000),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let key = SigningKey::generate("k1").unwrap();
        let v = verifier(&key);
        for i in 0..REMEMBERED + 10 {
            let jwt = sign(
                &key,
                &Claims {
                    jti: format!("t{i}"),
                    ..claims(1000)
                },
            );
            v.verify(&jwt, 1000).unwrap();
            assert!(v.seen().len() <= REMEMBERED);
        }
    }
}
