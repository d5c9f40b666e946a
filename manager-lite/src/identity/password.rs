//! argon2id password hashes (PHC strings).
//!
//! Parameters: OWASP's first argon2id recommendation, m = 19 MiB, t = 2, p = 1. Each hash or
//! verification holds 19 MiB while it runs, so the manager bounds how many run at once (one per
//! core, see `work::Pools`). Stored hashes carry their parameters: a later change keeps old
//! hashes valid, and [`Passwords::needs_rehash`] upgrades them at the next login.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest password accepted.
pub const MIN_LEN: usize = 12;
/// Longest password accepted (bytes): hashing is linear in it.
pub const MAX_LEN: usize = 1024;

/// Why a password cannot be set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordError {
    /// Fewer than [`MIN_LEN`] characters.
    TooShort,
    /// More than [`MAX_LEN`] bytes.
    TooLong,
    /// The OS random source failed (no salt).
    Random,
    /// The hash could not be computed.
    Hash(String),
}

impl std::fmt::Display for PasswordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordError::TooShort => write!(f, "at least {MIN_LEN} characters"),
            PasswordError::TooLong => write!(f, "at most {MAX_LEN} bytes"),
            PasswordError::Random => f.write_str("the OS random source failed"),
            PasswordError::Hash(e) => write!(f, "hashing failed: {e}"),
        }
    }
}

impl std::error::Error for PasswordError {}

/// Hashes and verifies passwords with one set of argon2id parameters.
#[derive(Debug)]
pub struct Passwords {
    params: Params,
    /// A hash of nothing anyone knows, verified against when the account does not exist.
    dummy: OnceLock<String>,
}

impl Default for Passwords {
    fn default() -> Self {
        // m = 19456 KiB, t = 2, p = 1 (OWASP); the values are valid, so this cannot fail.
        Passwords::new(Params::new(19456, 2, 1, None).expect("valid argon2 parameters"))
    }
}

impl Passwords {
    /// With `params`.
    pub fn new(params: Params) -> Self {
        Passwords {
            params,
            dummy: OnceLock::new(),
        }
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC string for `password`.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        if password.chars().count() < MIN_LEN {
            return Err(PasswordError::TooShort);
        }
        if password.len() > MAX_LEN {
            return Err(PasswordError::TooLong);
        }
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|_| PasswordError::Random)?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
        self.argon()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Whether `password` matches stored hash `phc` (false for a malformed hash).
    pub fn verify(&self, phc: &str, password: &str) -> bool {
        if password.len() > MAX_LEN {
            return false;
        }
        match PasswordHash::new(phc) {
            // the stored hash's own parameters apply, whatever ours are now
            Ok(h) => Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok(),
            Err(_) => false,
        }
    }

    /// The same work as [`Passwords::verify`], for an account that does not exist: an unknown
    /// e-mail then costs what a wrong password costs.
    pub fn verify_unknown_user(&self, password: &str) {
        let _ = self.verify(self.dummy(), password);
    }

    /// Makes the dummy hash now (one hash at start), so that not even the first unknown
    /// e-mail after a start costs more than a wrong password.
    pub fn prepare(&self) {
        self.dummy();
    }

    fn dummy(&self) -> &str {
        self.dummy.get_or_init(|| {
            self.hash("no account has this password, ever")
                .unwrap_or_default()
        })
    }

    /// Whether `phc` was made with other parameters than the current ones.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(h) = PasswordHash::new(phc) else {
            return true;
        };
        let Ok(stored) = Params::try_from(&h) else {
            return true;
        };
        h.algorithm.as_str() != "argon2id"
            || stored.m_cost() != self.params.m_cost()
            || stored.t_cost() != self.params.t_cost()
            || stored.p_cost() != self.params.p_cost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Passwords {
        Passwords::new(Params::new(64, 1, 1, None).unwrap())
    }

    #[test]
    fn round_trip_and_refusals() {
        let p = quick();
        let h = p.hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(p.verify(&h, "correct horse battery"));
        assert!(!p.verify(&h, "correct horse batterY"));
        assert!(!p.verify("not a phc string", "correct horse battery"));
        assert!(!p.verify("", ""));
        let emoji = "pässwörd 🔑 with emoji";
        assert!(p.verify(&p.hash(emoji).unwrap(), emoji));
        assert_eq!(p.hash("short"), Err(PasswordError::TooShort));
        assert_eq!(
            p.hash(&"x".repeat(MAX_LEN + 1)),
            Err(PasswordError::TooLong)
        );
        p.verify_unknown_user("whatever it is");
    }

    #[test]
    fn old_parameters_still_verify_and_ask_for_a_rehash() {
        let old = quick();
        let h = old.hash("correct horse battery").unwrap();
        let new = Passwords::new(Params::new(128, 1, 1, None).unwrap());
        assert!(new.verify(&h, "correct horse battery"));
        assert!(new.needs_rehash(&h));
        assert!(!old.needs_rehash(&h));
    }
}
