//! Calls on the user's behalf: to the manager with the stored login (renewed before it
//! lapses, and once more if the manager says it has), and to the gateway the manager says
//! reaches a server now (`ServerService.Locate`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use conduit_api::manager as m;
use conduit_connect::{CallError, Endpoint};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::session::{Session, SessionStore};

/// The manager's answers come within this.
pub const MANAGER_TIMEOUT: Duration = Duration::from_secs(15);
/// A gateway waits up to 100 s (`--operation-timeout`, 30 by default) for a BMC: more here.
pub const GATEWAY_TIMEOUT: Duration = Duration::from_secs(110);

const USER_AGENT: &str = concat!("conduit-cli/", env!("CARGO_PKG_VERSION"));

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads the CA file of a login, if it names one.
pub fn read_ca(path: Option<&std::path::Path>) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|p| std::fs::read(p).with_context(|| format!("reading the CA file {}", p.display())))
        .transpose()
}

/// A client of the manager at `url`.
pub fn manager_endpoint(url: &str, ca: Option<Vec<u8>>) -> anyhow::Result<Endpoint> {
    Endpoint::new(url, ca, MANAGER_TIMEOUT, USER_AGENT).map_err(|e| {
        let hint = if url.starts_with("https://") {
            " (an https manager needs `conduit login --ca FILE`)"
        } else {
            ""
        };
        anyhow!("the manager URL {e}{hint}")
    })
}

/// A session from a Login or Refresh answer.
pub fn session_of(
    manager: &str,
    ca_file: Option<std::path::PathBuf>,
    api_key: Option<String>,
    t: m::TokenResponse,
) -> Session {
    Session {
        manager: manager.to_owned(),
        ca_file,
        access_token: t.access_token,
        expires_at: unix_now() + t.expires_in,
        refresh_token: t.refresh_token,
        api_key,
        user: t.user,
    }
}

/// What a refusal means to the person at the keyboard, with what to do.
pub fn explain(what: &str, e: CallError) -> anyhow::Error {
    match e {
        CallError::Unreachable(why) | CallError::Unanswered(why) => {
            anyhow!("{what}: {why} (is it running and reachable? try again later)")
        }
        CallError::Refused { code, message } => {
            let hint = match code.as_str() {
                "unauthenticated" => " — run `conduit login`",
                "permission_denied" => " — your role does not allow this (`conduit whoami`)",
                "not_found" => " — check the id (`conduit servers`)",
                "resource_exhausted" => " — too many at once; try again shortly",
                "deadline_exceeded" | "aborted" => {
                    " — the outcome is unknown: check the state before trying again"
                }
                _ => "",
            };
            anyhow!("{what}: {message} ({code}){hint}")
        }
    }
}

/// The logged-in user's connections.
#[allow(missing_debug_implementations)] // holds tokens
pub struct Conduit {
    store: SessionStore,
    session: Mutex<Session>,
    ca: Option<Vec<u8>>,
    manager: Endpoint,
    gateways: Mutex<HashMap<String, Arc<Endpoint>>>,
}

impl Conduit {
    /// The stored login, or an error saying how to log in.
    pub fn open(store: SessionStore) -> anyhow::Result<Conduit> {
        let Some(session) = store.load()? else {
            bail!("not logged in: run `conduit login --manager URL`");
        };
        let ca = read_ca(session.ca_file.as_deref())?;
        let manager = manager_endpoint(&session.manager, ca.clone())?;
        Ok(Conduit {
            store,
            session: Mutex::new(session),
            ca,
            manager,
            gateways: Mutex::new(HashMap::new()),
        })
    }

    /// The session as it stands.
    pub fn session(&self) -> Session {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A valid access token, renewed first if it is about to lapse.
    pub fn token(&self) -> Result<String, CallError> {
        let s = self.session();
        if !s.needs_refresh(unix_now()) {
            return Ok(s.access_token);
        }
        self.renew(&s.access_token)
    }

    /// Renews the access token unless another command did since `stale` was read. Holds the
    /// login's lock: a refresh token works once. `Refused` (`unauthenticated`) means the
    /// login has ended; anything else that it could not be renewed now.
    fn renew(&self, stale: &str) -> Result<String, CallError> {
        let local = |e: anyhow::Error| CallError::Unreachable(format!("{e:#}"));
        let ended = |why: &str| CallError::Refused {
            code: "unauthenticated".into(),
            message: format!("{why}: run `conduit login`"),
        };
        let _lock = self.store.lock().map_err(local)?;
        let Some(mut s) = self.store.load().map_err(local)? else {
            return Err(ended("logged out meanwhile"));
        };
        let started = self.session();
        if (&s.manager, &s.ca_file) != (&started.manager, &started.ca_file) {
            // Another `conduit login` meanwhile, maybe to another manager: its tokens are
            // not for the one this command talks to.
            return Err(ended(
                "logged in elsewhere meanwhile; run the command again",
            ));
        }
        if s.access_token != stale && !s.needs_refresh(unix_now()) {
            let token = s.access_token.clone();
            *self.session.lock().unwrap_or_else(|p| p.into_inner()) = s;
            return Ok(token);
        }
        let answer: Result<m::TokenResponse, CallError> = match (&s.refresh_token, &s.api_key) {
            (Some(r), _) => self.manager.call(
                m::AUTH_SERVICE,
                "Refresh",
                None,
                &m::RefreshRequest {
                    refresh_token: r.clone(),
                },
            ),
            (None, Some(k)) => self.manager.call(
                m::AUTH_SERVICE,
                "Login",
                None,
                &m::LoginRequest {
                    api_key: Some(k.clone()),
                    ..Default::default()
                },
            ),
            (None, None) => return Err(ended("your login has expired")),
        };
        let t = match answer {
            Ok(t) => t,
            Err(CallError::Refused { code, message }) if code == "unauthenticated" => {
                // Expired, logged out or revoked: the stored login is of no use any more.
                let _ = self.store.remove();
                return Err(ended(&format!("the login has ended ({message})")));
            }
            Err(CallError::Refused { code, message }) => {
                return Err(CallError::Refused {
                    code,
                    message: format!("renewing your login: {message}"),
                })
            }
            Err(CallError::Unreachable(why) | CallError::Unanswered(why)) => {
                // Unanswered too: a refresh whose answer was lost has spent the token, but the
                // next attempt finds that out and says so.
                return Err(CallError::Unreachable(format!(
                    "renewing your login at {}: {why}",
                    s.manager
                )));
            }
        };
        let api_key = s.api_key.take();
        s = session_of(&s.manager, s.ca_file.clone(), api_key, t);
        if let Err(e) = self.store.save(&s).or_else(|_| self.store.save(&s)) {
            // The old refresh token is spent: without the new one the next command cannot
            // renew. Say so plainly.
            return Err(CallError::Unreachable(format!(
                "the login was renewed but could not be saved ({e:#}): run `conduit login` again"
            )));
        }
        let token = s.access_token.clone();
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = s;
        Ok(token)
    }

    /// Calls the manager; an `unauthenticated` answer (the token ended early: a role change,
    /// a restart with new keys) renews the login once and calls again — the call was refused
    /// before anything was done, so nothing happens twice.
    pub fn manager<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
    ) -> Result<Resp, CallError> {
        self.with_token(|token| self.manager.call(service, method, Some(token), req))
    }

    fn with_token<T>(&self, call: impl Fn(&str) -> Result<T, CallError>) -> Result<T, CallError> {
        let token = self.token()?;
        match call(&token) {
            Err(CallError::Refused { code, .. }) if code == "unauthenticated" => {
                call(&self.renew(&token)?)
            }
            other => other,
        }
    }

    /// Where `server` is reached now: the gateway its agent's uplink goes to.
    pub fn locate(&self, server: &str) -> anyhow::Result<(m::ServerLocation, Arc<Endpoint>)> {
        let loc: m::ServerLocation = self
            .manager(
                m::SERVER_SERVICE,
                "Locate",
                &m::ServerRef {
                    server_id: server.to_owned(),
                },
            )
            .map_err(|e| explain(&format!("finding server {server}'s gateway"), e))?;
        if loc.gateway_address.is_empty() {
            bail!(
                "server {server}: gateway {} has no address users reach it by (its --address)",
                loc.gateway_id
            );
        }
        let mut gateways = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        let endpoint = match gateways.get(&loc.gateway_address) {
            Some(e) => e.clone(),
            None => {
                let e = Endpoint::new(
                    &loc.gateway_address,
                    self.ca.clone(),
                    GATEWAY_TIMEOUT,
                    USER_AGENT,
                )
                .map_err(|e| anyhow!("gateway {}: {e}", loc.gateway_id))?;
                let e = Arc::new(e);
                gateways.insert(loc.gateway_address.clone(), e.clone());
                e
            }
        };
        Ok((loc, endpoint))
    }

    /// Calls `method` of the gateway that reaches `server`.
    pub fn gateway<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        server: &str,
        method: &str,
        req: &Req,
    ) -> anyhow::Result<Resp> {
        let (loc, gw) = self.locate(server)?;
        self.gateway_at(&loc, &gw, method, req)
    }

    /// Calls `method` of gateway `gw`, located for `loc.server_id`.
    pub fn gateway_at<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        loc: &m::ServerLocation,
        gw: &Endpoint,
        method: &str,
        req: &Req,
    ) -> anyhow::Result<Resp> {
        let what = format!("{} (through gateway {})", loc.server_id, loc.gateway_id);
        self.with_token(|token| {
            gw.call(
                conduit_api::gateway::GATEWAY_SERVICE,
                method,
                Some(token),
                req,
            )
        })
        .map_err(|e| match e {
            // A change sent whose answer did not come back may have happened.
            CallError::Unanswered(why) if CHANGES.contains(&method) => anyhow!(
                "{what}: {why} — the outcome is unknown: check the state before trying again"
            ),
            e => explain(&what, e),
        })
    }
}

/// The gateway calls that change a server.
const CHANGES: [&str; 3] = ["PowerAction", "SetBootDevice", "ClearEventLog"];
