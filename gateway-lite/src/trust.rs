//! What the gateway decides with, offline: the manager's signing keys, its revocation list,
//! its inventory (which customer owns which server) and the agent credentials it vouched for.
//! The sync loop (`sync.rs`) refreshes them; requests never wait on the manager.
//!
//! Manager outage: everything here keeps serving for [`Trust::ttl`] after the last successful
//! pull (default 10 minutes, `--trust-ttl`); past it user requests are refused `unavailable`
//! (fail closed: a revocation we cannot hear about must not be ignored forever), and an agent
//! credential is accepted only if it was verified within the same window.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use conduit_api::manager as m;
use conduit_auth::{Claims, Revocations, Role, TokenError, Verifier};
use conduit_http::rpc::{Code, RpcError};

/// One server as the manager last listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    /// The owning customer, if assigned.
    pub customer_id: Option<String>,
    /// Display name.
    pub name: String,
    /// The agent the manager records as reaching it: the only one routed to.
    pub agent_id: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    verifier: Arc<Verifier>,
    revocations: Revocations,
    servers: HashMap<String, Owned>,
    /// When keys, revocations and inventory were last all pulled.
    fresh_at: Option<Instant>,
}

/// An authorized caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's claims.
    pub claims: Claims,
}

impl Caller {
    /// Whether the caller administers the whole site (not one customer).
    pub fn is_site_admin(&self) -> bool {
        site_admin(&self.claims)
    }
}

/// Why a user's request was refused, as `gateway_token_validations_total{status}` counts it.
pub type Validation = &'static str;

/// The gateway's offline trust.
#[derive(Debug)]
pub struct Trust {
    state: RwLock<State>,
    agents: RwLock<HashMap<[u8; 32], (m::AgentInfo, Instant)>>,
    ttl: Duration,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Trust {
    /// Nothing known yet; decisions last `ttl` without the manager.
    pub fn new(ttl: Duration) -> Self {
        Trust {
            state: RwLock::default(),
            agents: RwLock::default(),
            ttl,
        }
    }

    /// How long decisions serve without the manager.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A complete pull: keys, revocations and inventory as of now.
    /// The manager's answers to a pull that began at `asked` (freshness counts from then:
    /// the revocations are no newer than the question).
    pub fn update(
        &self,
        keys: conduit_auth::KeySet,
        revocations: &[m::RevocationEntry],
        servers: Vec<m::Server>,
        asked: Instant,
    ) {
        let mut list = Revocations::new();
        for r in revocations {
            list.insert(&r.kind, r.id.clone(), r.revoked_at);
        }
        // Vouched-for agents that are now revoked are forgotten at once.
        write(&self.agents).retain(|_, (a, _)| !list.contains("agent", &a.agent_id));
        let mut s = write(&self.state);
        if s.verifier.keys() != &keys {
            s.verifier = Arc::new(Verifier::new(keys));
        }
        s.revocations = list;
        s.servers = servers
            .into_iter()
            .map(|v| {
                (
                    v.server_id,
                    Owned {
                        customer_id: v.customer_id,
                        name: v.name,
                        agent_id: v.agent_id,
                    },
                )
            })
            .collect();
        s.fresh_at = Some(asked);
    }

    fn fresh(&self, s: &State) -> bool {
        s.fresh_at.is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// Whether an agent id is on the revocation list.
    pub fn agent_revoked(&self, agent_id: &str) -> bool {
        read(&self.state).revocations.contains("agent", agent_id)
    }

    /// Checks a user's bearer token; `Err` carries the refusal and its validation status.
    pub fn caller(&self, bearer: Option<&str>, now: u64) -> Result<Caller, (RpcError, Validation)> {
        let unauth = |why: &str| RpcError::new(Code::Unauthenticated, why.to_owned());
        let token = bearer.ok_or_else(|| (unauth("missing bearer token"), "missing"))?;
        let s = read(&self.state);
        if !self.fresh(&s) {
            return Err((
                RpcError::new(
                    Code::Unavailable,
                    "the gateway has not heard from the manager recently enough to check tokens; try again shortly",
                ),
                "unavailable",
            ));
        }
        let claims = s
            .verifier
            .verify(token, now)
            .map_err(|e: TokenError| (unauth(&e.to_string()), e.as_str()))?;
        if s.revocations.revokes(&claims) {
            return Err((unauth("token revoked"), "revoked"));
        }
        Ok(Caller { claims })
    }

    /// The caller's right to `server_id`: `act` for state changes (operators and admins).
    /// Another customer's server is `not_found`, like one that does not exist.
    pub fn authorize(&self, caller: &Caller, server_id: &str, act: bool) -> Result<(), RpcError> {
        let s = read(&self.state);
        let visible = s
            .servers
            .get(server_id)
            .is_some_and(|o| may_see(&caller.claims, o));
        if !visible {
            return Err(RpcError::new(Code::NotFound, "server not found"));
        }
        if act && caller.claims.role == Role::Viewer {
            return Err(RpcError::new(
                Code::PermissionDenied,
                "viewers may read, not act: ask an operator",
            ));
        }
        Ok(())
    }

    /// The servers the caller may see, with their names.
    pub fn visible(&self, caller: &Caller) -> Vec<(String, Owned)> {
        let s = read(&self.state);
        let mut v: Vec<(String, Owned)> = s
            .servers
            .iter()
            .filter(|(_, o)| may_see(&caller.claims, o))
            .map(|(id, o)| (id.clone(), o.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Whether a console opened by `caller` on `server_id` may go on: the pull is fresh, and
    /// neither the token, its login session nor its user is revoked, nor has the server
    /// changed hands. (A console outlives its access token: it is bound to the login
    /// session, which a logout or an admin ends.) `Err` is the reason, as a word.
    pub fn still_allowed(&self, caller: &Caller, server_id: &str) -> Result<(), &'static str> {
        let s = read(&self.state);
        if !self.fresh(&s) {
            return Err("trust_expired");
        }
        if s.revocations.revokes(&caller.claims) {
            return Err("access_revoked");
        }
        let visible = (s.servers.get(server_id)).is_some_and(|o| may_see(&caller.claims, o));
        if !visible {
            return Err("access_revoked");
        }
        Ok(())
    }

    /// The customer owning a server (`unassigned` if none), for metric labels.
    pub fn owner_of(&self, server_id: &str) -> String {
        read(&self.state)
            .servers
            .get(server_id)
            .and_then(|o| o.customer_id.clone())
            .unwrap_or_else(|| "unassigned".into())
    }

    /// The agent the manager records for a server, if any.
    pub fn agent_of(&self, server_id: &str) -> Option<String> {
        read(&self.state)
            .servers
            .get(server_id)
            .and_then(|o| o.agent_id.clone())
    }

    /// An agent credential verified within the trust window, if any.
    pub fn vouched(&self, credential: &str) -> Option<m::AgentInfo> {
        let key = conduit_auth::secret::hash(credential);
        read(&self.agents)
            .get(&key)
            .filter(|(a, at)| at.elapsed() < self.ttl && !self.agent_revoked(&a.agent_id))
            .map(|(a, _)| a.clone())
    }

    /// Remembers that the manager vouched for `credential` now.
    pub fn vouch(&self, credential: &str, agent: m::AgentInfo) {
        let key = conduit_auth::secret::hash(credential);
        let mut agents = write(&self.agents);
        if agents.len() >= 100_000 {
            agents.retain(|_, (_, at)| at.elapsed() < self.ttl);
        }
        agents.insert(key, (agent, Instant::now()));
    }

    /// Forgets a credential the manager refused.
    pub fn unvouch(&self, credential: &str) {
        write(&self.agents).remove(&conduit_auth::secret::hash(credential));
    }
}

/// An admin of the whole site (not of one customer): sees every server and session.
fn site_admin(claims: &Claims) -> bool {
    claims.role == Role::Admin && claims.cus.is_none()
}

fn may_see(claims: &Claims, owned: &Owned) -> bool {
    site_admin(claims) || claims.cus.is_some() && claims.cus == owned.customer_id
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_auth::{sign, KeySet, SigningKey};

    fn server(id: &str, cus: Option<&str>) -> m::Server {
        m::Server {
            server_id: id.into(),
            name: id.into(),
            datacenter: "dc1".into(),
            agent_id: None,
            protocol: "ipmi".into(),
            capabilities: vec![],
            customer_id: cus.map(Into::into),
            status: "active".into(),
        }
    }

    #[test]
    fn tenancy_roles_revocation_and_staleness_decide() {
        let key = SigningKey::generate("k1").unwrap();
        let mut keys = KeySet::new();
        keys.insert(key.public());
        let trust = Trust::new(Duration::from_millis(300));
        let now = conduit_auth_now();
        let token = |sub: &str, cus: Option<&str>, role| {
            sign(
                &key,
                &Claims {
                    sub: sub.into(),
                    cus: cus.map(Into::into),
                    role,
                    iat: now,
                    exp: now + 600,
                    jti: format!("j-{sub}"),
                    sid: format!("s-{sub}"),
                },
            )
        };
        let (op, viewer, other) = (
            token("op", Some("acme"), Role::Operator),
            token("vw", Some("acme"), Role::Viewer),
            token("ot", Some("globex"), Role::Operator),
        );
        // nothing pulled yet: fail closed
        assert_eq!(trust.caller(Some(&op), now).unwrap_err().1, "unavailable");
        let inv = || vec![server("s1", Some("acme")), server("s2", None)];
        trust.update(keys.clone(), &[], inv(), Instant::now());
        let c = trust.caller(Some(&op), now).unwrap();
        assert!(trust.authorize(&c, "s1", true).is_ok());
        assert_eq!(
            trust.authorize(&c, "s2", false).unwrap_err().code,
            Code::NotFound
        );
        assert_eq!(
            trust.authorize(&c, "nope", false).unwrap_err().code,
            Code::NotFound
        );
        let v = trust.caller(Some(&viewer), now).unwrap();
        assert!(trust.authorize(&v, "s1", false).is_ok());
        assert_eq!(
            trust.authorize(&v, "s1", true).unwrap_err().code,
            Code::PermissionDenied
        );
        let o = trust.caller(Some(&other), now).unwrap();
        assert_eq!(
            trust.authorize(&o, "s1", false).unwrap_err().code,
            Code::NotFound
        );
        assert_eq!(trust.visible(&c).len(), 1);
        assert_eq!(trust.caller(None, now).unwrap_err().1, "missing");
        assert_eq!(trust.caller(Some("x.y.z"), now).unwrap_err().1, "malformed");
        let revoked = m::RevocationEntry {
            id: "s-op".into(),
            kind: "session".into(),
            revoked_at: now as i64,
            expires_at: now as i64 + 60,
        };
        trust.update(keys, &[revoked], inv(), Instant::now());
        assert_eq!(trust.caller(Some(&op), now).unwrap_err().1, "revoked");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(
            trust.caller(Some(&viewer), now).unwrap_err().1,
            "unavailable"
        );
    }

    fn conduit_auth_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn vouched_agents_expire_and_revocations_drop_them() {
        let trust = Trust::new(Duration::from_secs(60));
        let a = m::AgentInfo {
            agent_id: "a1".into(),
            name: String::new(),
            datacenter: "dc1".into(),
            gateway_id: None,
            connected: false,
            revoked: false,
        };
        trust.vouch("cag_x_y", a.clone());
        assert_eq!(trust.vouched("cag_x_y"), Some(a));
        assert_eq!(trust.vouched("cag_x_z"), None);
        let rev = m::RevocationEntry {
            id: "a1".into(),
            kind: "agent".into(),
            revoked_at: 0,
            expires_at: i64::MAX,
        };
        trust.update(KeySet::new(), &[rev], vec![], Instant::now());
        assert_eq!(trust.vouched("cag_x_y"), None);
        assert!(trust.agent_revoked("a1"));
    }
}
