//! The manager's token authority: signing keys, access tokens, revocations.
//!
//! - Access tokens are Ed25519 JWTs (`conduit_auth`), valid [`ACCESS_TTL`] by default. The signing keys
//!   live in the store, so every replica signs with and publishes the same keys (JWKS at
//!   `/.well-known/jwks.json`); a new key is added when none exists. [`Tokens::rotate`]
//!   (`conduit-manager keys rotate`) adds one that signs from then on; the keys it retires
//!   keep verifying until their tokens have expired, so a rotation logs nobody out. Every
//!   process re-reads the keys every [`KEY_RELOAD`], and at once (rate-limited) on a token
//!   naming a key it does not know yet.
//! - A revocation names a token (`jti`) or a whole login session (`sid`: a refresh family or
//!   an API key) and is kept until what it names would have expired anyway. Gateways pull the
//!   list; this manager re-reads it from the store at most [`REVOCATION_REFRESH`] old, so a
//!   revocation made on another replica holds here within that bound too.
//! - `manager_active_tokens` counts access tokens unexpired and unrevoked, from the store's
//!   rows of the tokens issued, so every replica reports the same number.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use conduit_auth::{Claims, KeySet, SigningKey, TokenError, Verifier};

use crate::store::{AccessToken, Revocation, RevocationKind, Role, Store, StoreError, StoredKey};

/// How long an access token is valid by default: short, since it is verified offline; refresh
/// tokens renew it.
pub const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// The longest access TTL the manager can be configured with (`--access-ttl`).
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(86_400);
/// How long a login session lasts: its refresh tokens (each use rotates one) all expire this
/// long after the login, so a session ends then however often it was refreshed.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long what the manager issues stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Access tokens ([`ACCESS_TTL`] by default).
    pub access: Duration,
    /// Login sessions ([`SESSION_TTL`] by default).
    pub session: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            access: ACCESS_TTL,
            session: SESSION_TTL,
        }
    }
}
/// How old this manager's copy of the revocation list may get.
pub const REVOCATION_REFRESH: Duration = Duration::from_secs(2);
/// How often the maintenance thread re-reads the signing keys, so a rotation made by another
/// process signs here within this bound.
pub const KEY_RELOAD: Duration = Duration::from_secs(5);
/// A token naming an unknown key makes the keys be re-read at most this often.
pub const KEY_RELOAD_ON_MISS: Duration = Duration::from_secs(1);
/// The longest any access token verifies, whatever the access TTL was when it was issued
/// (plus the verifiers' leeway): how long a retired key keeps verifying and a revocation is
/// kept.
pub const LONGEST_TOKEN_LIFE: Duration =
    Duration::from_secs(MAX_ACCESS_TTL.as_secs() + conduit_auth::token::LEEWAY_SECS);

/// Why an access token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The token is bad: its signature, its times, or a revocation.
    Token(TokenError),
    /// The revocation list could not be read, so the token cannot be accepted now.
    Unavailable,
}

impl From<TokenError> for Refusal {
    fn from(e: TokenError) -> Self {
        Refusal::Token(e)
    }
}

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
    list: conduit_auth::Revocations,
    read_at: Option<Instant>,
}

/// The keys in use: the one that signs and a verifier of every published key.
#[derive(Debug)]
struct Keys {
    signing: SigningKey,
    verifier: Verifier,
    /// (kid, retired_at) of the rows these were made from: a reload that finds the same rows
    /// keeps them, and what the verifier remembers.
    rows: Vec<(String, Option<i64>)>,
}

impl Keys {
    /// The keys of `stored` still in use at `now`: the newest unretired one signs; retired ones
    /// verify until [`RETIRED_KEY_VERIFIES`] after their retirement.
    fn from_rows(stored: &[StoredKey], now: i64) -> anyhow::Result<Keys> {
        use anyhow::Context;
        let mut keys = KeySet::new();
        let mut signing = None;
        let mut rows = Vec::new();
        for k in stored.iter().filter(|k| in_use(k, now)) {
            let key = SigningKey::from_pkcs8(&k.kid, &k.pkcs8)
                .with_context(|| format!("signing key {} is unreadable", k.kid))?;
            keys.insert(key.public());
            rows.push((k.kid.clone(), k.retired_at));
            if k.retired_at.is_none() {
                signing = Some(key); // rows come oldest first: the newest unretired key signs
            }
        }
        Ok(Keys {
            signing: signing.context("no signing key that is not retired")?,
            verifier: Verifier::new(keys),
            rows,
        })
    }
}

/// How long after its retirement a key verifies: its last tokens' life, plus the reload
/// bound during which a manager that has not yet seen the rotation still signs with it.
pub const RETIRED_KEY_VERIFIES: Duration =
    Duration::from_secs(LONGEST_TOKEN_LIFE.as_secs() + KEY_RELOAD.as_secs());

fn in_use(k: &StoredKey, now: i64) -> bool {
    k.retired_at
        .is_none_or(|at| now < at.saturating_add(RETIRED_KEY_VERIFIES.as_secs() as i64))
}

/// Signs, verifies and revokes tokens.
#[derive(Debug)]
pub struct Tokens {
    lifetimes: Lifetimes,
    keys: RwLock<Arc<Keys>>,
    /// When the keys were last read from the store.
    keys_read_at: Mutex<Instant>,
    revoked: RwLock<RevocationCache>,
}

impl Tokens {
    /// Loads the signing keys from `store`, creating the first one if there is none; what is
    /// issued lives `lifetimes`.
    pub fn load(store: &dyn Store, now: i64, lifetimes: Lifetimes) -> anyhow::Result<Tokens> {
        use anyhow::Context;
        let mut stored = store.signing_keys().context("read the signing keys")?;
        if !stored.iter().any(|k| k.retired_at.is_none()) {
            let row = new_key(now)?;
            match store.insert_signing_key(&row) {
                // another replica may have won the race: use whatever is stored now
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e).context("store the signing key"),
            }
            log::info!("created signing key {}", row.kid);
            stored = store.signing_keys().context("read the signing keys")?;
        }
        Ok(Tokens {
            lifetimes,
            keys: RwLock::new(Arc::new(Keys::from_rows(&stored, now)?)),
            keys_read_at: Mutex::new(Instant::now()),
            revoked: RwLock::default(),
        })
    }

    /// Makes a new signing key, which signs from now on (here within [`KEY_RELOAD`], on every
    /// replica reading `store` too). The keys it replaces are retired: they keep verifying
    /// for [`RETIRED_KEY_VERIFIES`], so nobody is logged out — unless `drop_old`, for a key that
    /// may have leaked: then they are deleted, and every token they signed is refused once
    /// the verifiers have reloaded (callers renew theirs with their refresh tokens).
    pub fn rotate(store: &dyn Store, now: i64, drop_old: bool) -> anyhow::Result<String> {
        use anyhow::Context;
        let row = new_key(now)?;
        store
            .rotate_signing_key(&row, drop_old)
            .context("store the new signing key")?;
        Ok(row.kid)
    }

    /// Re-reads the keys from the store (another process may have rotated them) and drops
    /// those retired longer than [`RETIRED_KEY_VERIFIES`]; true when they changed.
    pub fn reload_keys(&self, store: &dyn Store, now: i64) -> anyhow::Result<bool> {
        use anyhow::Context;
        *lock(&self.keys_read_at) = Instant::now();
        let stored = store.signing_keys().context("read the signing keys")?;
        let current = self.keys();
        let same = stored
            .iter()
            .filter(|k| in_use(k, now))
            .map(|k| (&k.kid, k.retired_at))
            .eq(current.rows.iter().map(|(kid, at)| (kid, *at)));
        if same {
            return Ok(false);
        }
        let keys = Keys::from_rows(&stored, now)?;
        log::info!(
            "signing with key {}; verifying with {}",
            keys.signing.kid(),
            keys.rows
                .iter()
                .map(|(kid, _)| kid.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        *write(&self.keys) = Arc::new(keys);
        Ok(true)
    }

    fn keys(&self) -> Arc<Keys> {
        read(&self.keys).clone()
    }

    /// How long access tokens are valid.
    pub fn access_ttl(&self) -> Duration {
        self.lifetimes.access
    }

    /// How long a login session lasts.
    pub fn session_ttl(&self) -> Duration {
        self.lifetimes.session
    }

    /// The id of the key that signs now.
    pub fn signing_kid(&self) -> String {
        self.keys().signing.kid().to_owned()
    }

    /// The public keys, JWKS-style.
    pub fn jwks(&self) -> String {
        self.keys().verifier.keys().to_jwks()
    }

    /// Issues an access token for `who` in session `sid`, recorded in `store` (it counts in
    /// `manager_active_tokens` while it lives; a failed record only leaves it uncounted).
    pub fn issue(
        &self,
        store: &dyn Store,
        who: &Principal,
        sid: &str,
        now: u64,
    ) -> anyhow::Result<(String, Claims)> {
        // A user revoked this very second (a change of rights just made) would have this
        // token refused too: it is marked as issued the second after, within the leeway.
        let revoked = read(&self.revoked).list.user_revoked_at(&who.user_id);
        let iat = revoked.map_or(now, |at| now.max(at as u64 + 1));
        let claims = Claims {
            sub: who.user_id.clone(),
            cus: who.customer_id.clone(),
            role: who.role,
            iat,
            exp: now + self.lifetimes.access.as_secs(),
            jti: conduit_auth::secret::random_id(12)?,
            sid: sid.to_owned(),
        };
        let token = conduit_auth::sign(&self.keys().signing, &claims);
        // The row only feeds the gauge: a refresh has already spent its token when this runs,
        // so failing here would turn the client's retry into a reuse that ends its session.
        if let Err(e) = store.record_access_token(&AccessToken {
            jti: claims.jti.clone(),
            session_id: claims.sid.clone(),
            user_id: claims.sub.clone(),
            issued_at: claims.iat as i64,
            expires_at: claims.exp as i64,
        }) {
            log::warn!("recording an access token for manager_active_tokens: {e}");
        }
        Ok((token, claims))
    }

    /// Verifies an access token: signature, expiry, then the revocation list.
    pub fn verify(&self, store: &dyn Store, token: &str, now: u64) -> Result<Claims, Refusal> {
        let claims = match self.keys().verifier.verify(token, now) {
            // A key made on another replica moments ago: read the keys again, at most once
            // per KEY_RELOAD_ON_MISS, so made-up key ids cannot make every call a query.
            Err(TokenError::UnknownKey) if self.may_reload_on_miss() => {
                if let Err(e) = self.reload_keys(store, now as i64) {
                    log::warn!("reading the signing keys: {e:#}");
                }
                self.keys().verifier.verify(token, now)
            }
            other => other,
        }?;
        if self.is_revoked(store, &claims, now)? {
            return Err(Refusal::Token(TokenError::Revoked));
        }
        Ok(claims)
    }

    fn may_reload_on_miss(&self) -> bool {
        lock(&self.keys_read_at).elapsed() >= KEY_RELOAD_ON_MISS
    }

    fn is_revoked(&self, store: &dyn Store, claims: &Claims, now: u64) -> Result<bool, Refusal> {
        let stale = read(&self.revoked)
            .read_at
            .is_none_or(|t| t.elapsed() >= REVOCATION_REFRESH);
        if stale {
            match store.revocations(now as i64) {
                Ok(list) => {
                    let mut cache = write(&self.revoked);
                    cache.list = conduit_auth::Revocations::new();
                    for r in list {
                        cache.list.insert(r.kind.as_str(), r.id, r.revoked_at);
                    }
                    cache.read_at = Some(Instant::now());
                }
                // Fail closed: without a fresh list nothing is known to be unrevoked. The
                // token may well be good: the caller is told to try again, not to log in.
                Err(e) => {
                    log::warn!("reading the revocation list: {e}");
                    return Err(Refusal::Unavailable);
                }
            }
        }
        Ok(read(&self.revoked).list.revokes(claims))
    }

    /// Revokes every access token of session `sid` (issued until `now`), here and, through the
    /// store, on every replica and gateway.
    pub fn revoke_session(&self, store: &dyn Store, sid: &str, now: u64) -> Result<(), StoreError> {
        store.revoke(&Revocation {
            id: sid.to_owned(),
            kind: RevocationKind::Session,
            revoked_at: now as i64,
            // Kept as long as any token of the session could live.
            expires_at: (now + LONGEST_TOKEN_LIFE.as_secs()) as i64,
        })?;
        write(&self.revoked)
            .list
            .insert("session", sid.to_owned(), now as i64);
        Ok(())
    }

    /// Revokes every access token issued to `user_id` until `now` (their role, customer,
    /// password or standing changed), here and, through the store, everywhere.
    pub fn revoke_user(
        &self,
        store: &dyn Store,
        user_id: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        // Tokens issued since an earlier revocation this second are marked as issued the
        // second after it (see `issue`): this one must cover them too.
        let earlier = read(&self.revoked).list.user_revoked_at(user_id);
        let at = earlier.map_or(now as i64, |e| (now as i64).max(e + 1));
        store.revoke(&Revocation {
            id: user_id.to_owned(),
            kind: RevocationKind::User,
            revoked_at: at,
            expires_at: at + LONGEST_TOKEN_LIFE.as_secs() as i64,
        })?;
        write(&self.revoked)
            .list
            .insert("user", user_id.to_owned(), at);
        Ok(())
    }

    /// Access tokens, issued by any replica, that are neither expired nor revoked; `None`
    /// when the store cannot say (the gauge keeps its last value).
    pub fn active_count(store: &dyn Store, now: u64) -> Option<i64> {
        match store.active_access_tokens(now as i64) {
            Ok(n) => Some(n as i64),
            Err(e) => {
                log::warn!("counting the active tokens: {e}");
                None
            }
        }
    }
}

/// A new signing key's row.
fn new_key(now: i64) -> anyhow::Result<StoredKey> {
    use anyhow::Context;
    let kid = conduit_auth::secret::random_id(9).context("a key id")?;
    let key = SigningKey::generate(&kid).context("generate a signing key")?;
    Ok(StoredKey {
        kid,
        pkcs8: key.pkcs8().to_vec(),
        created_at: now,
        retired_at: None,
    })
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
