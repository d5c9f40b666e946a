//! Who is calling, and logging in: `AuthService` and the check every other call starts with.
//!
//! Logins never reveal whether an account exists: an unknown e-mail costs the same argon2id
//! work as a wrong password, gets the same answer (`unauthenticated`, "invalid e-mail or
//! password") and counts against the same throttle.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use conduit_api::manager::{TokenResponse, UserInfo};
use conduit_auth::secret::{self, Secret};
use conduit_http::rpc::{Code, RpcError};
use conduit_http::Request;

use crate::identity::password::Passwords;
use crate::identity::throttle::{unix_now_ms, Throttle};
use crate::metrics::{AuthLabels, AuthMethod, ManagerMetrics};
use crate::store::{ApiKey, RefreshToken, Role, Store, StoreError, User};
use crate::tokens::{Principal, Refusal, Tokens};
use conduit_metrics::labels::Status;

/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "crt";
/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "cak";

/// The caller of an authenticated call.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who, and with which rights.
    pub principal: Principal,
    /// How: `user` (an access token) or `api_key`.
    pub kind: &'static str,
    /// The session (`sid`) the call belongs to.
    pub session: String,
    /// The credential's id for the audit log (user id or API key id).
    pub actor: String,
    /// The client's address (for the throttle).
    pub addr: IpAddr,
}

impl Caller {
    /// Admins only.
    pub fn require_admin(&self) -> Result<(), RpcError> {
        if self.principal.role == Role::Admin {
            Ok(())
        } else {
            Err(RpcError::new(
                Code::PermissionDenied,
                "this call needs the admin role",
            ))
        }
    }

    /// The customer whose rows this caller may see: `None` for admins (every customer).
    pub fn tenant(&self) -> Option<&str> {
        match self.principal.role {
            Role::Admin => None,
            // Fail closed: a non-admin without a customer (refused at authentication anyway)
            // sees the rows of no customer, never those of all.
            _ => Some(self.principal.customer_id.as_deref().unwrap_or("")),
        }
    }
}

/// Identity: logins, tokens, the caller check.
#[derive(Debug)]
pub struct Auth {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Token authority.
    pub tokens: Tokens,
    /// Password hashing.
    pub passwords: Passwords,
    /// Failed-login throttle.
    pub throttle: Throttle,
    /// Metrics.
    pub metrics: Arc<ManagerMetrics>,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn invalid_credentials() -> RpcError {
    RpcError::new(Code::Unauthenticated, "invalid e-mail or password")
}

fn internal(what: &str, e: impl std::fmt::Display) -> RpcError {
    log::error!("{what}: {e}");
    RpcError::new(Code::Internal, format!("{what} failed"))
}

/// The answer to an attempt the throttle holds back: `resource_exhausted` with when to try
/// again, or `unavailable` when the counts could not be read.
pub fn throttle_refusal(t: crate::identity::throttle::Throttled) -> RpcError {
    match t.scope {
        Some(_) => RpcError::exhausted("too many failed logins; try again later", t.retry_after),
        None => RpcError::new(
            Code::Unavailable,
            "the login cannot be checked now: the database is unavailable; try again",
        ),
    }
}

/// A caller that cannot be checked now: the database is down.
fn unavailable_check() -> RpcError {
    RpcError::new(
        Code::Unavailable,
        "the caller cannot be checked now: the database is unavailable; try again",
    )
}

/// A store failure where no row can be missing or conflict: `unavailable` when the database
/// may come back (the API's one mapping), else internal.
fn db_failure(what: &str, e: StoreError) -> RpcError {
    match e {
        e @ (StoreError::Backend(_) | StoreError::Unavailable(_)) => {
            crate::api::store_error(what, e)
        }
        e => internal(what, e),
    }
}

/// The API's view of a user.
pub fn user_info(u: &User) -> UserInfo {
    UserInfo {
        user_id: u.id.clone(),
        email: u.email.clone(),
        name: u.name.clone(),
        role: u.role.as_str().to_owned(),
        customer_id: u.customer_id.clone(),
        disabled: u.disabled_at.is_some(),
    }
}

/// The form an e-mail is stored, looked up and throttled under (Unicode lowercase, trimmed).
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The client address, for the throttle (unknown peers share one bucket).
pub fn client_addr(req: &Request) -> IpAddr {
    req.peer
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip())
}

impl Auth {
    fn count(&self, method: &'static str, status: &'static str, start: Instant) {
        self.metrics
            .auth_requests
            .inc(&AuthLabels { status, method });
        self.metrics
            .auth_duration
            .observe(&AuthMethod { method }, start.elapsed().as_secs_f64());
        self.refresh_active_tokens(unix_now());
    }

    /// Sets `manager_active_tokens` from the store's rows.
    pub fn refresh_active_tokens(&self, now: u64) {
        if let Some(n) = Tokens::active_count(self.store.as_ref(), now) {
            self.metrics.active_tokens.set(n);
        }
    }

    /// The refusal of a password login the throttle holds back now (counted), if any: checked
    /// before the login is queued for hashing.
    pub fn refuse_throttled(&self, email: &str, addr: IpAddr) -> Option<RpcError> {
        let start = Instant::now();
        let t = self
            .throttle
            .check(
                self.store.as_ref(),
                &normalize_email(email),
                addr,
                unix_now_ms(),
            )
            .err()?;
        let refusal = throttle_refusal(t);
        let status = if t.scope.is_some() {
            "throttled"
        } else {
            "error"
        };
        self.count("password", status, start);
        Some(refusal)
    }

    /// Login with e-mail and password (runs on the hash pool).
    pub fn login_password(
        &self,
        email: &str,
        password: &str,
        addr: IpAddr,
    ) -> Result<TokenResponse, RpcError> {
        let start = Instant::now();
        let result = self.login_password_inner(email, password, addr);
        let status = match &result {
            Ok(_) => "success",
            Err(e) if e.code == Code::ResourceExhausted => "throttled",
            Err(e) if e.code == Code::Unauthenticated => "invalid_credentials",
            Err(e) if e.code == Code::InvalidArgument => "invalid_request",
            Err(_) => "error",
        };
        self.count("password", status, start);
        result
    }

    fn login_password_inner(
        &self,
        email: &str,
        password: &str,
        addr: IpAddr,
    ) -> Result<TokenResponse, RpcError> {
        let account = normalize_email(email);
        if account.is_empty() || account.len() > 254 || password.len() > 1024 {
            return Err(RpcError::new(
                Code::InvalidArgument,
                "email (at most 254 bytes) and password (at most 1024 bytes) are required",
            ));
        }
        if let Err(t) = self
            .throttle
            .check(self.store.as_ref(), &account, addr, unix_now_ms())
        {
            return Err(throttle_refusal(t));
        }
        let found = match self.store.user_by_email(&account) {
            Ok(c) => Some(c),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(db_failure("login", e)),
        };
        let user = match found {
            // A disabled account answers as a wrong password does, after the same work.
            Some(c)
                if self.passwords.verify(&c.password_hash, password)
                    && c.user.disabled_at.is_none() =>
            {
                if self.passwords.needs_rehash(&c.password_hash) {
                    if let Ok(h) = self.passwords.hash(password) {
                        let _ = self.store.set_password_hash(&c.user.id, &h);
                    }
                }
                c.user
            }
            Some(_) => {
                self.throttle
                    .failed(self.store.as_ref(), &account, addr, unix_now_ms())
                    .map_err(|e| db_failure("login", e))?;
                return Err(invalid_credentials());
            }
            None => {
                self.passwords.verify_unknown_user(password);
                self.throttle
                    .failed(self.store.as_ref(), &account, addr, unix_now_ms())
                    .map_err(|e| db_failure("login", e))?;
                return Err(invalid_credentials());
            }
        };
        self.throttle.succeeded(self.store.as_ref(), &account);
        let family = secret::random_id(12).map_err(|e| internal("login", e))?;
        self.issue_pair(&user, &family)
    }

    /// A new access token and refresh token for `user` in session `family`.
    fn issue_pair(&self, user: &User, family: &str) -> Result<TokenResponse, RpcError> {
        let now = unix_now();
        let ends = now + self.tokens.session_ttl().as_secs();
        let refresh = self.new_refresh(user, family, now, ends as i64)?;
        self.store
            .insert_refresh(&refresh.1)
            .map_err(|e| db_failure("login", e))?;
        self.access(user, family, Some(refresh.0), now)
    }

    /// A refresh token of session `family` valid until `expires_at`.
    fn new_refresh(
        &self,
        user: &User,
        family: &str,
        now: u64,
        expires_at: i64,
    ) -> Result<(String, RefreshToken), RpcError> {
        let s = Secret::generate(REFRESH_PREFIX).map_err(|e| internal("login", e))?;
        let row = RefreshToken {
            id: s.id().to_owned(),
            secret_hash: secret::hash(s.secret()).to_vec(),
            family_id: family.to_owned(),
            user_id: user.id.clone(),
            created_at: now as i64,
            expires_at,
            spent_at: None,
            revoked_at: None,
        };
        Ok((s.to_string(), row))
    }

    fn access(
        &self,
        user: &User,
        sid: &str,
        refresh: Option<String>,
        now: u64,
    ) -> Result<TokenResponse, RpcError> {
        let who = Principal {
            user_id: user.id.clone(),
            customer_id: user.customer_id.clone(),
            role: user.role,
        };
        let (token, _) = self
            .tokens
            .issue(self.store.as_ref(), &who, sid, now)
            .map_err(|e| match e.downcast::<StoreError>() {
                Ok(e) => db_failure("issue a token", e),
                Err(e) => internal("issue a token", e),
            })?;
        Ok(TokenResponse {
            access_token: token,
            expires_in: self.tokens.access_ttl().as_secs(),
            refresh_token: refresh,
            user: user_info(user),
        })
    }

    /// Refresh: spends a refresh token for a new pair; a spent one coming back means it was
    /// stolen (or replayed), so its whole session is revoked.
    pub fn refresh(&self, presented: &str) -> Result<TokenResponse, RpcError> {
        let start = Instant::now();
        let result = self.refresh_inner(presented);
        let status = match &result {
            Ok(_) => "success",
            Err(e) if e.message.contains("reused") => "reused",
            Err(e) if e.code == Code::Unauthenticated => "invalid_token",
            Err(_) => "error",
        };
        self.count("refresh", status, start);
        result
    }

    fn refresh_inner(&self, presented: &str) -> Result<TokenResponse, RpcError> {
        let invalid = || RpcError::new(Code::Unauthenticated, "invalid or expired refresh token");
        let s = Secret::parse(presented)
            .filter(|s| s.prefix() == REFRESH_PREFIX)
            .ok_or_else(invalid)?;
        let row = match self.store.refresh(s.id()) {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Err(invalid()),
            Err(e) => return Err(db_failure("refresh", e)),
        };
        if !secret::constant_time_eq(&row.secret_hash, &secret::hash(s.secret())) {
            return Err(invalid());
        }
        let now = unix_now();
        if row.revoked_at.is_some() || row.expires_at <= now as i64 {
            return Err(invalid());
        }
        let user = match self.store.user(&row.user_id) {
            Ok(u) if u.disabled_at.is_none() => u,
            Ok(_) | Err(StoreError::NotFound) => return Err(invalid()),
            Err(e) => return Err(db_failure("refresh", e)),
        };
        // The session's end stays where the login put it: rotation renews the token, never the
        // session, so a stolen session cannot be kept alive forever by refreshing.
        let (display, next) = self.new_refresh(&user, &row.family_id, now, row.expires_at)?;
        let was = self
            .store
            .rotate_refresh(&row.id, now as i64, &next)
            .map_err(|e| db_failure("refresh", e))?;
        if was.spent_at.is_some() || was.revoked_at.is_some() {
            self.revoke_session(&row.family_id, now)?;
            log::warn!(
                "refresh token of session {} reused: the session is revoked",
                row.family_id
            );
            return Err(RpcError::new(
                Code::Unauthenticated,
                "refresh token reused: the session is revoked; log in again",
            ));
        }
        self.access(&user, &row.family_id, Some(display), now)
    }

    /// Login with an API key: an access token (no refresh token) in the key's session.
    pub fn login_api_key(&self, presented: &str) -> Result<TokenResponse, RpcError> {
        let start = Instant::now();
        let result = self.check_api_key(presented).and_then(|(key, user)| {
            let effective = User {
                role: key.role,
                customer_id: key.customer_id.clone(),
                ..user
            };
            self.access(&effective, &api_key_session(&key.id), None, unix_now())
        });
        let status = match &result {
            Ok(_) => "success",
            Err(e) if e.code == Code::Unauthenticated => "invalid_credentials",
            Err(_) => "error",
        };
        self.count("api_key", status, start);
        result
    }

    /// An API key and its owner, if the key is valid and unrevoked.
    fn check_api_key(&self, presented: &str) -> Result<(ApiKey, User), RpcError> {
        let invalid = || RpcError::new(Code::Unauthenticated, "invalid or revoked API key");
        let s = Secret::parse(presented)
            .filter(|s| s.prefix() == API_KEY_PREFIX)
            .ok_or_else(invalid)?;
        let key = match self.store.api_key(s.id()) {
            Ok(k) => k,
            Err(StoreError::NotFound) => return Err(invalid()),
            Err(e) => return Err(db_failure("API key check", e)),
        };
        // A non-admin key acts for exactly one customer (the schema says so too).
        let scoped = (key.role == Role::Admin) == key.customer_id.is_none();
        if key.revoked_at.is_some()
            || !scoped
            || !secret::constant_time_eq(&key.secret_hash, &secret::hash(s.secret()))
        {
            return Err(invalid());
        }
        let user = self.store.user(&key.user_id).map_err(|e| match e {
            StoreError::NotFound => invalid(),
            e => db_failure("API key check", e),
        })?;
        // A key acts with at most its owner's rights now: a disabled owner's keys do nothing,
        // and a key made before its owner was demoted or moved to another customer is refused
        // rather than acting with rights its owner no longer has.
        let within = match user.role {
            Role::Admin => true,
            owner => role_rank(key.role) <= role_rank(owner) && key.customer_id == user.customer_id,
        };
        if user.disabled_at.is_some() || !within {
            return Err(invalid());
        }
        Ok((key, user))
    }

    /// Revokes a session: its refresh tokens and every access token issued in it.
    pub fn revoke_session(&self, sid: &str, now: u64) -> Result<(), RpcError> {
        self.store
            .revoke_family(sid, now as i64)
            .map_err(|e| db_failure("revoke", e))?;
        self.tokens
            .revoke_session(self.store.as_ref(), sid, now)
            .map_err(|e| db_failure("revoke", e))?;
        self.refresh_active_tokens(now);
        Ok(())
    }

    /// Ends every access token issued to `user_id` until now and, with `refresh`, their
    /// refresh tokens too (no session of theirs renews).
    pub fn revoke_user(&self, user_id: &str, refresh: bool) -> Result<(), RpcError> {
        let now = unix_now();
        if refresh {
            self.store
                .revoke_user_refresh(user_id, now as i64)
                .map_err(|e| db_failure("revoke", e))?;
        }
        self.tokens
            .revoke_user(self.store.as_ref(), user_id, now)
            .map_err(|e| db_failure("revoke", e))?;
        self.refresh_active_tokens(now);
        Ok(())
    }

    /// Logout: ends the caller's session.
    pub fn logout(&self, caller: &Caller) -> Result<(), RpcError> {
        let start = Instant::now();
        let result = self.revoke_session(&caller.session, unix_now());
        self.count(
            "logout",
            if result.is_ok() { "success" } else { "error" },
            start,
        );
        result
    }

    /// The caller of `req`: `Authorization: Bearer` with an access token or an API key.
    /// Every outcome is counted in `manager_token_validations_total`.
    pub fn authenticate(&self, req: &Request) -> Result<Caller, RpcError> {
        let result = self.authenticate_inner(req);
        let status = match &result {
            Ok(_) => "valid",
            Err((label, _)) => label,
        };
        self.metrics.token_validations.inc(&Status { status });
        result.map_err(|(_, e)| e)
    }

    fn authenticate_inner(&self, req: &Request) -> Result<Caller, (&'static str, RpcError)> {
        let unauth = |m: &str| RpcError::new(Code::Unauthenticated, m.to_owned());
        let Some(given) = conduit_http::rpc::bearer(req) else {
            return Err(("missing", unauth("missing bearer token")));
        };
        if given.starts_with(&format!("{API_KEY_PREFIX}_")) {
            let (key, user) = self.check_api_key(given).map_err(|e| match e.code {
                Code::Unavailable => ("unavailable", e),
                _ => ("invalid_api_key", e),
            })?;
            return Ok(Caller {
                principal: Principal {
                    user_id: user.id,
                    customer_id: key.customer_id.clone(),
                    role: key.role,
                },
                kind: "api_key",
                session: api_key_session(&key.id),
                actor: key.id,
                addr: client_addr(req),
            });
        }
        let claims = self
            .tokens
            .verify(self.store.as_ref(), given, unix_now())
            .map_err(|r| match r {
                Refusal::Token(e) => (e.as_str(), unauth(&format!("access token refused: {e}"))),
                Refusal::Unavailable => ("unavailable", unavailable_check()),
            })?;
        let role = claims.role;
        let customer_ok = (role == Role::Admin) == claims.cus.is_none();
        if !customer_ok {
            return Err((
                "malformed",
                unauth("access token refused: bad customer claim"),
            ));
        }
        // A token an API key logged in acts for the key: what keys may not do, its tokens may
        // not either, and the audit log names the key.
        let (kind, actor) = match claims.sid.strip_prefix(API_KEY_SESSION_PREFIX) {
            Some(key_id) => ("api_key", key_id.to_owned()),
            None => ("user", claims.sub.clone()),
        };
        Ok(Caller {
            principal: Principal {
                user_id: claims.sub,
                customer_id: claims.cus,
                role,
            },
            kind,
            session: claims.sid,
            actor,
            addr: client_addr(req),
        })
    }
}

/// Orders roles by rights.
pub fn role_rank(r: Role) -> u8 {
    match r {
        Role::Viewer => 0,
        Role::Operator => 1,
        Role::Admin => 2,
    }
}

/// How the session id of an API key's tokens starts.
const API_KEY_SESSION_PREFIX: &str = "key:";

/// The session id of the tokens an API key logs in: revoking the key revokes them.
pub fn api_key_session(key_id: &str) -> String {
    format!("{API_KEY_SESSION_PREFIX}{key_id}")
}
