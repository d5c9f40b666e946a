//! The manager's token authority: signing keys, access tokens, revocations.
//!
//! - Access tokens are Ed25519 JWTs (`conduit_auth`), valid [`ACCESS_TTL`] by default. The signing keys
//!   live in the store, so every replica signs with and publishes the same keys (JWKS at
//!   `/.well-known/jwks.json`); a new key is added when none exists.
//! - A revocation names a token (`jti`) or a whole login session (`sid`: a refresh family or
//!   an API key) and is kept until what it names would have expired anyway. Gateways pull the
//!   list; this manager re-reads it from the store at most [`REVOCATION_REFRESH`] old, so a
//!   revocation made on another replica holds here within that bound too.
//! - `manager_active_tokens` counts access tokens issued here, unexpired and unrevoked.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use conduit_auth::{Claims, KeySet, SigningKey, TokenError};

use crate::store::{Revocation, RevocationKind, Role, Store, StoreError, StoredKey};

/// How long an access token is valid by default: short, since it is verified offline; refresh
/// tokens renew it.
pub const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// The longest access TTL the manager can be configured with (`--access-ttl`).
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(86_400);
/// How long a refresh token is valid (each use rotates it).
pub const REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How old this manager's copy of the revocation list may get.
pub const REVOCATION_REFRESH: Duration = Duration::from_secs(2);

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id.
    pub user_id: String,
    /// Customer (None for admins).
    pub customer_id: Option<String>,
    /// Role.
    pub role: Role,
}

/// Revocations as last read from the store.
#[derive(Debug, Default)]
struct RevocationCache {
    ids: HashSet<(&'static str, String)>,
    read_at: Option<Instant>,
}

/// Tokens issued here: jti → (sid, expiry), pruned of the expired at most once a second (so
/// that a burst of logins does not rescan the table on every one).
#[derive(Debug, Default)]
struct ActiveTokens {
    by_jti: HashMap<String, (String, u64)>,
    pruned_at: u64,
}

impl ActiveTokens {
    fn prune(&mut self, now: u64) {
        if self.pruned_at != now {
            self.by_jti.retain(|_, (_, exp)| *exp > now);
            self.pruned_at = now;
        }
    }
}

/// Signs, verifies and revokes tokens.
#[derive(Debug)]
pub struct Tokens {
    access_ttl: Duration,
    signing: SigningKey,
    keys: KeySet,
    revoked: RwLock<RevocationCache>,
    /// jti → (sid, expiry) of the tokens issued here.
    active: Mutex<ActiveTokens>,
}

impl Tokens {
    /// Loads the signing keys from `store`, creating the first one if there is none; access
    /// tokens will be valid `access_ttl`.
    pub fn load(store: &dyn Store, now: i64, access_ttl: Duration) -> anyhow::Result<Tokens> {
        use anyhow::Context;
        let mut stored = store.signing_keys().context("read the signing keys")?;
        if !stored.iter().any(|k| k.retired_at.is_none()) {
            let kid = conduit_auth::secret::random_id(9).context("a key id")?;
            let key = SigningKey::generate(&kid).context("generate a signing key")?;
            let row = StoredKey {
                kid: kid.clone(),
                pkcs8: key.pkcs8().to_vec(),
                created_at: now,
                retired_at: None,
            };
            match store.insert_signing_key(&row) {
                // another replica may have won the race: use whatever is stored now
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e).context("store the signing key"),
            }
            log::info!("created signing key {kid}");
            stored = store.signing_keys().context("read the signing keys")?;
        }
        let mut keys = KeySet::new();
        let mut current = None;
        for k in &stored {
            let key = SigningKey::from_pkcs8(&k.kid, &k.pkcs8)
                .with_context(|| format!("signing key {} is unreadable", k.kid))?;
            keys.insert(key.public());
            if k.retired_at.is_none() {
                current = Some(key); // the newest unretired key signs
            }
        }
        let signing = current.context("no signing key")?;
        Ok(Tokens {
            access_ttl,
            signing,
            keys,
            revoked: RwLock::default(),
            active: Mutex::default(),
        })
    }

    /// How long access tokens are valid.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// The public keys, JWKS-style.
    pub fn jwks(&self) -> String {
        self.keys.to_jwks()
    }

    /// Issues an access token for `who` in session `sid`.
    pub fn issue(&self, who: &Principal, sid: &str, now: u64) -> anyhow::Result<(String, Claims)> {
        let claims = Claims {
            sub: who.user_id.clone(),
            cus: who.customer_id.clone(),
            role: who.role,
            iat: now,
            exp: now + self.access_ttl.as_secs(),
            jti: conduit_auth::secret::random_id(12)?,
            sid: sid.to_owned(),
        };
        let token = conduit_auth::sign(&self.signing, &claims);
        let mut active = lock(&self.active);
        active.prune(now);
        active
            .by_jti
            .insert(claims.jti.clone(), (claims.sid.clone(), claims.exp));
        Ok((token, claims))
    }

    /// Verifies an access token: signature, expiry, then the revocation list.
    pub fn verify(&self, store: &dyn Store, token: &str, now: u64) -> Result<Claims, TokenError> {
        let claims = conduit_auth::verify(&self.keys, token, now)?;
        if self.is_revoked(store, &claims, now) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    fn is_revoked(&self, store: &dyn Store, claims: &Claims, now: u64) -> bool {
        let stale = read(&self.revoked)
            .read_at
            .is_none_or(|t| t.elapsed() >= REVOCATION_REFRESH);
        if stale {
            match store.revocations(now as i64) {
                Ok(list) => {
                    let mut cache = write(&self.revoked);
                    cache.ids = list.into_iter().map(|r| (r.kind.as_str(), r.id)).collect();
                    cache.read_at = Some(Instant::now());
                }
                // Fail closed: without a fresh list nothing is known to be unrevoked.
                Err(e) => {
                    log::warn!("reading the revocation list: {e}");
                    return true;
                }
            }
        }
        let cache = read(&self.revoked);
        cache.ids.contains(&("token", claims.jti.clone()))
            || cache.ids.contains(&("session", claims.sid.clone()))
    }

    /// Revokes every access token of session `sid` (issued until `now`), here and, through the
    /// store, on every replica and gateway.
    pub fn revoke_session(&self, store: &dyn Store, sid: &str, now: u64) -> Result<(), StoreError> {
        store.revoke(&Revocation {
            id: sid.to_owned(),
            kind: RevocationKind::Session,
            revoked_at: now as i64,
            // Kept as long as any token of the session could live, whatever the access TTL was
            // when it was issued (plus the verifiers' leeway).
            expires_at: (now + MAX_ACCESS_TTL.as_secs() + conduit_auth::token::LEEWAY_SECS) as i64,
        })?;
        write(&self.revoked).ids.insert(("session", sid.to_owned()));
        lock(&self.active)
            .by_jti
            .retain(|_, (s, exp)| s != sid && *exp > now);
        Ok(())
    }

    /// Access tokens issued here that are neither expired nor revoked.
    pub fn active_count(&self, now: u64) -> i64 {
        let mut active = lock(&self.active);
        active.prune(now);
        active.by_jti.len() as i64
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
