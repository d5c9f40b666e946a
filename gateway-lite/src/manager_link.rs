//! The gateway's calls to the manager (`conduit.manager.v1.GatewayService`, Connect JSON over
//! the blocking HTTP client), each under one deadline, with the gateway's own credential.

use std::net::ToSocketAddrs;
use std::time::Duration;

use conduit_api::manager as m;
use http_client::{Client, Request, Tls};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Every call's deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No answer, or one that says "later" (`unavailable`, 5xx): the manager may come back.
    Unreachable(String),
    /// The manager answered with a Connect error.
    Refused {
        /// Connect code.
        code: String,
        /// Its message.
        message: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "manager unreachable: {why}"),
            CallError::Refused { code, message } => {
                write!(f, "manager refused ({code}): {message}")
            }
        }
    }
}

/// A client of one manager.
#[allow(missing_debug_implementations)] // holds the credential
pub struct ManagerLink {
    client: Client,
    credential: String,
    url: String,
}

impl ManagerLink {
    /// A client for `url` (`http://host:port` or `https://host:port`, then trusting `ca_pem`).
    pub fn new(url: &str, ca_pem: Option<Vec<u8>>, credential: String) -> anyhow::Result<Self> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            let ca = ca_pem.ok_or_else(|| anyhow::anyhow!("--manager-ca is needed for https"))?;
            (Tls::CaPem(ca), rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Tls::Plain, rest)
        } else {
            anyhow::bail!("--manager {url:?}: give http://HOST:PORT or https://HOST:PORT");
        };
        let authority = rest.trim_end_matches('/');
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .trim_matches(|c| c == '[' || c == ']');
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("--manager {url:?}: {e}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("--manager {url:?}: no address"))?;
        let name = host.parse::<std::net::IpAddr>().is_err().then_some(host);
        let client = Client::new(addr, name, tls, CALL_TIMEOUT)
            .map_err(|e| anyhow::anyhow!("--manager {url:?}: {e}"))?
            .with_user_agent(concat!("conduit-gateway/", env!("CARGO_PKG_VERSION")));
        Ok(ManagerLink {
            client,
            credential,
            url: url.to_owned(),
        })
    }

    /// The manager's URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp, CallError> {
        let path = format!("/{}/{method}", m::GATEWAY_SERVICE);
        let body = serde_json::to_vec(req).map_err(|e| CallError::Unreachable(e.to_string()))?;
        let auth = format!("Bearer {}", self.credential);
        let headers = [
            ("Content-Type", "application/json"),
            ("Authorization", auth.as_str()),
        ];
        let resp = self
            .client
            .request(&Request {
                headers: &headers,
                body: &body,
                max_body: 16 << 20,
                ..Request::new("POST", &path)
            })
            .map_err(|e| CallError::Unreachable(format!("{method}: {e}")))?;
        if resp.status == 200 {
            return serde_json::from_slice(&resp.body)
                .map_err(|e| CallError::Unreachable(format!("{method}: bad answer: {e}")));
        }
        #[derive(serde::Deserialize)]
        struct ConnectError {
            code: String,
            #[serde(default)]
            message: String,
        }
        match serde_json::from_slice::<ConnectError>(&resp.body) {
            Ok(e) if e.code != "unavailable" && resp.status < 500 => Err(CallError::Refused {
                code: e.code,
                message: e.message,
            }),
            Ok(e) => Err(CallError::Unreachable(format!("{method}: {}", e.message))),
            Err(_) => Err(CallError::Unreachable(format!(
                "{method}: HTTP {}",
                resp.status
            ))),
        }
    }

    /// GatewayService.Register.
    pub fn register(&self, address: &str) -> Result<m::RegisterResponse, CallError> {
        self.call(
            "Register",
            &m::RegisterRequest {
                address: address.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        )
    }

    /// GatewayService.Heartbeat.
    pub fn heartbeat(&self) -> Result<(), CallError> {
        self.call::<_, m::Empty>("Heartbeat", &m::Empty {})
            .map(drop)
    }

    /// The published signing keys (JWKS).
    pub fn jwks(&self) -> Result<conduit_auth::KeySet, CallError> {
        let resp = self
            .client
            .request(&Request::new("GET", "/.well-known/jwks.json"))
            .map_err(|e| CallError::Unreachable(format!("jwks: {e}")))?;
        if resp.status != 200 {
            return Err(CallError::Unreachable(format!(
                "jwks: HTTP {}",
                resp.status
            )));
        }
        let text = String::from_utf8_lossy(&resp.body);
        conduit_auth::KeySet::from_jwks(&text)
            .map_err(|e| CallError::Unreachable(format!("jwks: {e}")))
    }

    /// GatewayService.ListRevocations.
    pub fn revocations(&self) -> Result<Vec<m::RevocationEntry>, CallError> {
        self.call::<_, m::ListRevocationsResponse>("ListRevocations", &m::Empty {})
            .map(|r| r.revocations)
    }

    /// GatewayService.ListServers, every page.
    pub fn servers(&self) -> Result<Vec<m::Server>, CallError> {
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let page: m::ListServersResponse = self.call(
                "ListServers",
                &m::PageRequest {
                    page_size: 1000,
                    page_token: token,
                },
            )?;
            all.extend(page.servers);
            match page.next_page_token {
                Some(t) if all.len() < 1_000_000 => token = Some(t),
                _ => return Ok(all),
            }
        }
    }

    /// GatewayService.VerifyAgent: `Ok(None)` when the manager says the credential is bad.
    pub fn verify_agent(&self, credential: &str) -> Result<Option<m::AgentInfo>, CallError> {
        match self.call(
            "VerifyAgent",
            &m::VerifyAgentRequest {
                credential: credential.to_owned(),
            },
        ) {
            Ok(info) => Ok(Some(info)),
            Err(CallError::Refused { code, .. }) if code == "unauthenticated" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GatewayService.ReportAgents.
    pub fn report_agents(&self, agent_ids: Vec<String>) -> Result<(), CallError> {
        self.call::<_, m::Empty>("ReportAgents", &m::ReportAgentsRequest { agent_ids })
            .map(drop)
    }

    /// GatewayService.ReportServers.
    pub fn report_servers(&self, report: &m::ReportServersRequest) -> Result<(), CallError> {
        self.call::<_, m::Empty>("ReportServers", report).map(drop)
    }

    /// GatewayService.RecordAudit.
    pub fn record_audit(&self, records: Vec<m::GatewayAuditRecord>) -> Result<(), CallError> {
        self.call::<_, m::Empty>("RecordAudit", &m::RecordAuditRequest { records })
            .map(drop)
    }
}
