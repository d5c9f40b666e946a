//! argon2id password hashes (PHC strings).
//!
//! Parameters: OWASP's first argon2id recommendation, m = 19 MiB, t = 2, p = 1. Each hash or
//! verification holds 19 MiB while it runs, so the manager bounds how many run at once (one per
//! core, see `work::Pools`). Stored hashes carry their parameters: a later change keeps old
//! hashes valid, and [`Passwords::needs_rehash`] upgrades them at the next login.
//!
//! At most one hash per core (at most 4) runs at once, whatever thread asks. The 19 MiB each
//! works in are reserved larger than glibc's largest dynamic mmap threshold (32 MiB; only the
//! touched 19 MiB become resident), so they always come from mmap and go back to the system
//! when the hash ends. Freed as ordinary 19 MiB blocks, they teach glibc to keep such blocks
//! in every thread's arena: measured, RSS grew from 5 MiB at start to 250 MiB after 50 logins.

use std::sync::{Condvar, Mutex, OnceLock};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Shortest password accepted.
pub const MIN_LEN: usize = 12;
/// Longest password accepted (bytes): hashing is linear in it.
pub const MAX_LEN: usize = 1024;
/// The costliest stored hash verified: 256 MiB, 16 passes, 8 lanes (far above our own
/// parameters, which a stored hash may predate).
pub const MAX_STORED_M_COST: u32 = 256 * 1024;
/// See [`MAX_STORED_M_COST`].
pub const MAX_STORED_T_COST: u32 = 16;
/// See [`MAX_STORED_M_COST`].
pub const MAX_STORED_P_COST: u32 = 8;

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
    memory: Memory,
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
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Passwords {
            params,
            memory: Memory::new(cores.min(4)),
            dummy: OnceLock::new(),
        }
    }

    /// argon2id of `password` and raw `salt` with `params` into `out`, in pooled memory.
    fn compute(
        &self,
        params: &Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let mut blocks = self.memory.take(params.block_count());
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let result = argon.hash_password_into_with_memory(
            password,
            salt,
            out,
            &mut blocks[..params.block_count()],
        );
        self.memory.give(blocks);
        result
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
        let hash_err = |e: &dyn std::fmt::Display| PasswordError::Hash(e.to_string());
        let salt_string = SaltString::encode_b64(&salt).map_err(|e| hash_err(&e))?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        self.compute(&self.params, password.as_bytes(), &salt, &mut out)
            .map_err(|e| hash_err(&e))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|e| hash_err(&e))?,
            salt: Some(salt_string.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| hash_err(&e))?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches stored hash `phc` (false for a malformed hash).
    pub fn verify(&self, phc: &str, password: &str) -> bool {
        if password.len() > MAX_LEN {
            return false;
        }
        let Ok(h) = PasswordHash::new(phc) else {
            return false;
        };
        // the stored hash's own parameters apply, whatever ours are now
        let (Ok(params), Some(salt), Some(expected)) = (Params::try_from(&h), h.salt, h.hash)
        else {
            return false;
        };
        if h.algorithm != Algorithm::Argon2id.ident() || h.version != Some(Version::V0x13.into()) {
            return false;
        }
        // A tampered or foreign row must not make one login take gigabytes or minutes.
        if params.m_cost() > MAX_STORED_M_COST
            || params.t_cost() > MAX_STORED_T_COST
            || params.p_cost() > MAX_STORED_P_COST
        {
            log::warn!(
                "a stored password hash asks for m={} KiB, t={}, p={}: beyond what this manager \
                 computes; treated as not matching",
                params.m_cost(),
                params.t_cost(),
                params.p_cost()
            );
            return false;
        }
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let mut out = [0u8; 64];
        let out = &mut out[..expected.len().min(64)];
        if out.len() != expected.len()
            || self
                .compute(&params, password.as_bytes(), salt, out)
                .is_err()
        {
            return false;
        }
        conduit_auth::secret::constant_time_eq(out, expected.as_bytes())
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

/// Work memory for argon2: at most `cap` buffers lent at once (a hash waits while all are),
/// each returned to the system when its hash ends.
#[derive(Debug)]
struct Memory {
    lent: Mutex<usize>,
    returned: Condvar,
    cap: usize,
}

/// Reserved size of a buffer, in 1 KiB blocks: above glibc's 32 MiB ceiling for its dynamic
/// mmap threshold, so every buffer is mmapped and unmapped.
const RESERVE_BLOCKS: usize = 33 * 1024;

impl Memory {
    fn new(cap: usize) -> Self {
        Memory {
            lent: Mutex::new(0),
            returned: Condvar::new(),
            cap: cap.max(1),
        }
    }

    /// A buffer of `blocks` blocks.
    fn take(&self, blocks: usize) -> Vec<Block> {
        let mut lent = self
            .lent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *lent >= self.cap {
            lent = self
                .returned
                .wait(lent)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *lent += 1;
        drop(lent);
        let mut b = Vec::with_capacity(blocks.max(RESERVE_BLOCKS));
        b.resize(blocks, Block::default());
        b
    }

    fn give(&self, b: Vec<Block>) {
        drop(b);
        *self
            .lent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
        self.returned.notify_one();
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
    fn hashes_agree_with_the_argon2_crates_own_phc_path() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let p = quick();
        let params = Params::new(64, 1, 1, None).unwrap();
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = argon
            .hash_password(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        assert!(p.verify(&theirs, "correct horse battery"));
        assert!(!p.verify(&theirs, "correct horse batter"));
        let ours = p.hash("correct horse battery").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon
            .verify_password(b"correct horse battery", &parsed)
            .is_ok());
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

    #[test]
    fn a_stored_hash_beyond_the_cost_bound_is_refused_without_computing() {
        let p = quick();
        let phc = p.hash("a long enough secret").unwrap();
        assert!(p.verify(&phc, "a long enough secret"));
        // The same hash claiming 4 GiB: refused at once, not allocated.
        let costly = phc.replace("m=64,", "m=4194304,");
        assert_ne!(costly, phc);
        let start = std::time::Instant::now();
        assert!(!p.verify(&costly, "a long enough secret"));
        assert!(start.elapsed() < std::time::Duration::from_millis(50));
    }
}
