//! A blocking Connect JSON client of one Conduit service URL (`http://host:port` or
//! `https://host:port`): the gateway's calls to its manager and the `conduit` CLI's calls to
//! the manager and the gateways go through here, so that URL parsing, deadlines and the
//! reading of Connect errors are written once.
#![forbid(unsafe_code)]

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use http_client::{Client, Request, Tls};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No answer, or one that says "later" (`unavailable`, 5xx): the service may come back.
    /// The request was not taken (no connection), or taken and refused for now.
    Unreachable(String),
    /// The request may have reached the service, but no answer came back (a timeout, a
    /// connection lost mid-call): a change it asked for may have happened.
    Unanswered(String),
    /// The service answered with a Connect error.
    Refused {
        /// Connect code (`not_found`, `permission_denied`, `unauthenticated`, …).
        code: String,
        /// Its message.
        message: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "unreachable: {why}"),
            CallError::Unanswered(why) => write!(f, "no answer: {why}"),
            CallError::Refused { code, message } => write!(f, "refused ({code}): {message}"),
        }
    }
}

impl std::error::Error for CallError {}

/// A URL split into what [`Client::new`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `true` for https.
    pub tls: bool,
    /// `host:port` as written.
    pub authority: String,
    /// The host, without brackets.
    pub host: String,
}

/// Parses `http://host:port` or `https://host:port` (a trailing `/` is allowed; no path).
pub fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "{url:?}: give http://HOST:PORT or https://HOST:PORT"
        ));
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{url:?}: give http://HOST:PORT or https://HOST:PORT, no path"
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (authority, None), // bare IPv6
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if let Some(p) = port {
        p.parse::<u16>()
            .map_err(|_| format!("{url:?}: bad port {p:?}"))?;
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let authority = match port {
        Some(_) => authority.to_owned(),
        None if host.contains(':') => format!("[{host}]:{}", if tls { 443 } else { 80 }),
        None => format!("{host}:{}", if tls { 443 } else { 80 }),
    };
    Ok(Target {
        tls,
        authority,
        host,
    })
}

/// A client of one service URL.
#[allow(missing_debug_implementations)] // holds a connection; callers print the URL
pub struct Endpoint {
    client: Client,
    url: String,
}

impl Endpoint {
    /// A client of `url`; an https URL trusts exactly the CA certificates in `ca_pem`. The
    /// name is resolved here, once. `timeout` bounds each call (connect, TLS, write, read).
    pub fn new(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        timeout: Duration,
        user_agent: &str,
    ) -> Result<Endpoint, String> {
        let t = parse_url(url)?;
        let tls = match (t.tls, ca_pem) {
            (true, Some(ca)) => Tls::CaPem(ca),
            (true, None) => return Err(format!("{url:?}: https needs a CA certificate file")),
            (false, _) => Tls::Plain,
        };
        let addr = t
            .authority
            .to_socket_addrs()
            .map_err(|e| format!("{url:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url:?}: the name has no address"))?;
        let name = t.host.parse::<IpAddr>().is_err().then_some(t.host.as_str());
        let client = Client::new(addr, name, tls, timeout)
            .map_err(|e| format!("{url:?}: {e}"))?
            .with_user_agent(user_agent);
        Ok(Endpoint {
            client,
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    /// The URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The HTTP client (other requests, upgrades).
    pub fn http(&self) -> &Client {
        &self.client
    }

    /// One unary call of `service`'s `method`, with `bearer` as the credential.
    pub fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        bearer: Option<&str>,
        req: &Req,
    ) -> Result<Resp, CallError> {
        let path = format!("/{service}/{method}");
        let body = serde_json::to_vec(req).map_err(|e| CallError::Unreachable(e.to_string()))?;
        let auth = bearer.map(|b| format!("Bearer {b}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let resp = self
            .client
            .request(&Request {
                headers: &headers,
                body: &body,
                max_body: 16 << 20,
                ..Request::new("POST", &path)
            })
            .map_err(|e| match e {
                // Not connected, or the handshake failed: nothing was sent.
                http_client::Error::Connect(_) | http_client::Error::Tls(_) => {
                    CallError::Unreachable(format!("{method}: {e}"))
                }
                _ => CallError::Unanswered(format!("{method}: {e}")),
            })?;
        answer(method, resp.status, &resp.body)
    }
}

/// Reads a Connect answer: 200 with the message, or an error body `{code, message}`.
/// `unavailable` and 5xx without a code are [`CallError::Unreachable`].
pub fn answer<Resp: DeserializeOwned>(
    method: &str,
    status: u16,
    body: &[u8],
) -> Result<Resp, CallError> {
    if status == 200 {
        return serde_json::from_slice(body)
            .map_err(|e| CallError::Unreachable(format!("{method}: bad answer: {e}")));
    }
    #[derive(serde::Deserialize)]
    struct ConnectError {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<ConnectError>(body) {
        Ok(e) if e.code != "unavailable" && status < 500 => Err(CallError::Refused {
            code: e.code,
            message: e.message,
        }),
        Ok(e) => Err(CallError::Unreachable(format!("{method}: {}", e.message))),
        Err(_) => Err(CallError::Unreachable(format!("{method}: HTTP {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("https://gw.example:8443/").unwrap();
        assert_eq!(
            t,
            Target {
                tls: true,
                authority: "gw.example:8443".into(),
                host: "gw.example".into()
            }
        );
        let t = parse_url("http://127.0.0.1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:80");
        let t = parse_url("http://[::1]:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority.as_str()),
            ("::1", "[::1]:8080")
        );
        for bad in [
            "ftp://x",
            "127.0.0.1:8080",
            "http://",
            "http://h:port",
            "http://h:8080/path",
            "http://user@h",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers() {
        let ok: Result<serde_json::Value, _> = answer("M", 200, br#"{"a":1}"#);
        assert_eq!(ok.unwrap()["a"], 1);
        let e = answer::<serde_json::Value>("M", 404, br#"{"code":"not_found","message":"no"}"#);
        assert!(matches!(e, Err(CallError::Refused { code, .. }) if code == "not_found"));
        let e = answer::<serde_json::Value>("M", 503, br#"{"code":"unavailable","message":"x"}"#);
        assert!(matches!(e, Err(CallError::Unreachable(_))));
        let e = answer::<serde_json::Value>("M", 502, b"<html>");
        assert_eq!(e.unwrap_err(), CallError::Unreachable("M: HTTP 502".into()));
        let e = answer::<serde_json::Value>("M", 200, b"nope");
        assert!(matches!(e, Err(CallError::Unreachable(_))));
    }
}
