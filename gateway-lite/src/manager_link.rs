//! The gateway's calls to the manager (`conduit.manager.v1.GatewayService`, Connect JSON over
//! the blocking HTTP client), each under one deadline, with the gateway's own credential.

use std::time::Duration;

use conduit_api::manager as m;
pub use conduit_connect::CallError;
use conduit_connect::Endpoint;
use http_client::Request;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Every call's deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one manager.
#[allow(missing_debug_implementations)] // holds the credential
pub struct ManagerLink {
    endpoint: Endpoint,
    credential: String,
}

impl ManagerLink {
    /// A client for `url` (`http://host:port` or `https://host:port`, then trusting `ca_pem`).
    pub fn new(url: &str, ca_pem: Option<Vec<u8>>, credential: String) -> anyhow::Result<Self> {
        let endpoint = Endpoint::new(
            url,
            ca_pem,
            CALL_TIMEOUT,
            concat!("conduit-gateway/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(|e| anyhow::anyhow!("--manager {e} (an https manager needs --manager-ca)"))?;
        Ok(ManagerLink {
            endpoint,
            credential,
        })
    }

    /// The manager's URL, for messages.
    pub fn url(&self) -> &str {
        self.endpoint.url()
    }

    fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp, CallError> {
        self.endpoint
            .call(m::GATEWAY_SERVICE, method, Some(&self.credential), req)
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
            .endpoint
            .http()
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
