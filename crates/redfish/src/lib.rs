//! Redfish over HTTPS: a blocking client (`conduit-http-client`: HTTP/1.1 on rustls with the ring
//! provider; redirects are never followed), run off the
//! async threads by the caller. Session authentication (`SessionService`, `X-Auth-Token`) where
//! the service offers it, Basic otherwise (also when its session login brings no token); the
//! session is deleted on re-login and by [`RedfishBmc::logout`]. A CA file or an explicit
//! insecure mode for the BMC's certificate.
//!
//! Operations: power state, `ComputerSystem.Reset` limited to the reset types the service
//! advertises, system and manager identity, sensors (the chassis' Sensors collection, else its
//! Thermal and Power resources), the boot override, the system's and manager's logs (read,
//! clear).
//!
//! Everything the service sends is untrusted: requests go only to paths on this service (a
//! session `Location` only when it is on our own origin), bodies are bounded (4 MiB), and so
//! are collections (pages, members) and the texts kept from them. Parsing lives in pure
//! modules (`sensors`, `session`, `boot`, `logs`) tested on JSON alone; this module does the
//! I/O.

#![forbid(unsafe_code)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

mod boot;
pub mod health;
mod logs;
mod sensors;
mod session;

pub use boot::{BootEnabled, BootOverride, BootPersistence, BootSource, BootTarget};
pub use logs::{LogEntries, LogEntry, LogKind, LogScope, LogService, Severity};
pub use sensors::RedfishReading;

/// How to check the BMC's certificate.
#[derive(Debug, Clone)]
pub enum Tls {
    /// Trust these CA certificates (PEM bytes of the CA file).
    CaPem(Vec<u8>),
    /// Do not verify (explicitly configured `insecure_skip_verify`).
    Insecure,
    /// Plain HTTP (explicitly configured `scheme = "http"`, for labs and tests).
    PlainHttp,
}

/// The `ResetType`s of `ComputerSystem.Reset` the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetType {
    /// `On`.
    On,
    /// `ForceOff`.
    ForceOff,
    /// `GracefulShutdown`.
    GracefulShutdown,
    /// `ForceRestart`.
    ForceRestart,
    /// `Nmi`.
    Nmi,
    /// `PowerCycle`.
    PowerCycle,
}

impl ResetType {
    /// The value as Redfish writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetType::On => "On",
            ResetType::ForceOff => "ForceOff",
            ResetType::GracefulShutdown => "GracefulShutdown",
            ResetType::ForceRestart => "ForceRestart",
            ResetType::Nmi => "Nmi",
            ResetType::PowerCycle => "PowerCycle",
        }
    }
}

/// Something a service may not offer, or not with the value asked for.
///
/// A type of its own rather than text: it keeps [`RedfishError`] as small as it was (every
/// `Result` of the crate, and the agent's errors wrapping it, carry one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// The system's `Boot` override.
    BootOverride,
    /// A `BootSourceOverrideTarget`.
    BootTarget,
    /// A `BootSourceOverrideEnabled`.
    BootPersistence,
    /// A log service's `LogService.ClearLog` action.
    ClearLog,
}

impl Capability {
    /// How messages name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::BootOverride => "boot override",
            Capability::BootTarget => "boot target",
            Capability::BootPersistence => "boot persistence",
            Capability::ClearLog => "LogService.ClearLog",
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong talking Redfish; [`RedfishError::kind`] is the metric's `error_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedfishError {
    /// 401/403: the credentials were refused.
    Auth(&'static str),
    /// TLS failed (untrusted or mismatched certificate, protocol).
    Tls(String),
    /// Nothing answered, or the connection broke.
    Unreachable(String),
    /// No answer in time.
    Timeout(&'static str),
    /// An unexpected HTTP status.
    Status {
        /// What was asked.
        what: &'static str,
        /// Status.
        status: u16,
    },
    /// A reply that is not the JSON expected.
    Malformed(&'static str),
    /// The service does not advertise the reset type needed.
    NotAdvertised {
        /// The reset type needed.
        reset_type: &'static str,
        /// What the service advertises.
        allowed: Vec<String>,
    },
    /// The service does not offer what was asked: a resource or action it lacks (`value` is
    /// empty), or a value outside its `@Redfish.AllowableValues`.
    Unsupported {
        /// What was asked.
        what: Capability,
        /// The value asked for, if any.
        value: &'static str,
        /// What the service advertises (its text, bounded).
        allowed: Vec<String>,
    },
    /// The service refused a change (a PATCH, an action other than a reset).
    Refused {
        /// What was asked.
        what: &'static str,
        /// Status.
        status: u16,
        /// The service's message, if any (its text, bounded).
        message: String,
    },
    /// The service advertises the reset type but rejected it.
    Rejected {
        /// The reset type.
        reset_type: &'static str,
        /// Status.
        status: u16,
        /// The service's message, if any.
        message: String,
    },
}

impl RedfishError {
    /// A bounded label value for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RedfishError::Auth(_) => "auth_failed",
            RedfishError::Tls(_) => "tls_error",
            RedfishError::Unreachable(_) => "unreachable",
            RedfishError::Timeout(_) => "timeout",
            RedfishError::Status { .. } => "http_error",
            RedfishError::Malformed(_) => "malformed_reply",
            RedfishError::NotAdvertised { .. } | RedfishError::Unsupported { .. } => {
                "unsupported_action"
            }
            RedfishError::Refused { .. } => "action_rejected",
            RedfishError::Rejected { .. } => "action_rejected",
        }
    }
}

impl std::fmt::Display for RedfishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedfishError::Auth(what) => write!(f, "{what}: credentials refused"),
            RedfishError::Tls(e) => write!(f, "tls: {e}"),
            RedfishError::Unreachable(e) => write!(f, "unreachable: {e}"),
            RedfishError::Timeout(what) => write!(f, "{what}: timed out"),
            RedfishError::Status { what, status } => write!(f, "{what}: HTTP {status}"),
            RedfishError::Malformed(what) => write!(f, "{what}: unexpected reply"),
            RedfishError::NotAdvertised {
                reset_type,
                allowed,
            } => write!(
                f,
                "reset type {reset_type} is not advertised by the BMC (it allows {})",
                allowed.join(", ")
            ),
            RedfishError::Unsupported {
                what, value: "", ..
            } => write!(f, "{what}: not offered by the BMC"),
            RedfishError::Unsupported {
                what,
                value,
                allowed,
            } => write!(
                f,
                "{what} {value} is not advertised by the BMC (it allows {})",
                allowed.join(", ")
            ),
            RedfishError::Refused {
                what,
                status,
                message,
            } => {
                write!(f, "the BMC refused {what}: HTTP {status}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            RedfishError::Rejected {
                reset_type,
                status,
                message,
            } => {
                write!(f, "the BMC rejected reset type {reset_type}: HTTP {status}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for RedfishError {}

/// System and manager identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedfishInfo {
    /// System manufacturer.
    pub manufacturer: String,
    /// System model.
    pub model: String,
    /// Manager (BMC) firmware version.
    pub firmware: String,
    /// System serial number.
    pub serial: String,
}

/// What a poll reads of a service beside power and sensors ([`RedfishBmc::status`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RedfishStatus {
    /// Identity.
    pub info: RedfishInfo,
    /// Health of the parts that report one.
    pub health: Vec<(health::Component, health::Health)>,
    /// Watts the chassis draws, if the service says.
    pub power_watts: Option<f64>,
}

/// A session this client opened.
#[derive(Clone)]
struct Session {
    token: String,
    /// Its path on this service, to delete it (see [`session::same_origin_path`]).
    location: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Session")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
enum Auth {
    Unknown,
    Basic,
    Session(Session),
}

/// One Redfish service.
pub struct RedfishBmc {
    http: http_client::Client,
    base: String,
    username: String,
    password: String,
    timeout: Duration,
    auth: Mutex<Auth>,
    system: Mutex<Option<String>>,
}

impl std::fmt::Debug for RedfishBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password or the session token.
        f.debug_struct("RedfishBmc")
            .field("base", &self.base)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn transport_error(what: &'static str, e: http_client::Error) -> RedfishError {
    use http_client::Error as E;
    match e {
        E::Timeout => RedfishError::Timeout(what),
        E::Tls(m) => RedfishError::Tls(m),
        e @ (E::Connect(_) | E::Io(_) | E::Protocol(_) | E::TooLarge) => {
            RedfishError::Unreachable(e.to_string())
        }
    }
}

const MAX_BODY: usize = 4 * 1024 * 1024;

/// Most pages of one collection followed: a service that pages on forever is cut off.
const MAX_PAGES: usize = 64;

/// Most sensors read from a Sensors collection (a request each when the collection only links
/// them).
const MAX_SENSORS: usize = 256;

/// Most log services read from one system's or manager's collection.
const MAX_LOG_SERVICES: usize = 16;

/// Most entries read from one log (a request each when the collection only links them).
const MAX_LOG_ENTRIES: usize = 1000;

/// The message of a Redfish error reply (its first extended info, else its own), at most 512
/// characters of it; empty when there is none.
fn error_message(reply: &Value) -> String {
    reply
        .pointer("/error/@Message.ExtendedInfo/0/Message")
        .or_else(|| reply.pointer("/error/message"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(512)
        .collect()
}

/// The link to a collection's next page, by the name Redfish gives it or OData's.
fn next_link(page: &Value) -> Option<&str> {
    page.get("Members@odata.nextLink")
        .or_else(|| page.get("@odata.nextLink"))
        .and_then(Value::as_str)
}

impl RedfishBmc {
    /// A client for the service at `host:port`, with `timeout` per request.
    pub fn new(
        addr: std::net::SocketAddr,
        username: &str,
        password: &str,
        tls: Tls,
        timeout: Duration,
    ) -> Result<RedfishBmc, RedfishError> {
        let (scheme, tls) = match tls {
            Tls::CaPem(pem) => ("https", http_client::Tls::CaPem(pem)),
            Tls::Insecure => ("https", http_client::Tls::Insecure),
            Tls::PlainHttp => ("http", http_client::Tls::Plain),
        };
        let http = http_client::Client::new(addr, None, tls, timeout)
            .map_err(|e| match e {
                http_client::Error::Tls(m) => RedfishError::Tls(m),
                other => RedfishError::Tls(other.to_string()),
            })?
            .with_user_agent("conduit-agent");
        Ok(RedfishBmc {
            http,
            base: format!("{scheme}://{addr}"),
            username: username.to_owned(),
            password: password.to_owned(),
            timeout,
            auth: Mutex::new(Auth::Unknown),
            system: Mutex::new(None),
        })
    }

    fn auth_header(&self) -> Result<(&'static str, String), RedfishError> {
        let auth = self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match auth {
            Auth::Session(s) => Ok(("X-Auth-Token", s.token)),
            Auth::Basic => Ok((
                "Authorization",
                format!(
                    "Basic {}",
                    conduit_base64::encode(
                        format!("{}:{}", self.username, self.password).as_bytes()
                    )
                ),
            )),
            Auth::Unknown => {
                self.login()?;
                self.auth_header()
            }
        }
    }

    /// Opens a Redfish session when the service has a SessionService; Basic auth otherwise.
    fn login(&self) -> Result<(), RedfishError> {
        let root = self
            .request_json("service root", "GET", "/redfish/v1/", None, false, &[])?
            .1;
        let sessions = root
            .pointer("/Links/Sessions/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                root.get("SessionService")
                    .map(|_| "/redfish/v1/SessionService/Sessions".to_owned())
            });
        let mut auth = Auth::Basic;
        if let Some(path) = sessions {
            if !path.starts_with('/') || path.starts_with("//") || path.contains('@') {
                return Err(RedfishError::Malformed("service root Sessions link"));
            }
            let body = serde_json::json!({"UserName": self.username, "Password": self.password})
                .to_string();
            let resp = self
                .http
                .request(&http_client::Request {
                    headers: &[
                        ("Accept", "application/json"),
                        ("Content-Type", "application/json"),
                    ],
                    body: body.as_bytes(),
                    max_body: MAX_BODY,
                    ..http_client::Request::new("POST", &path)
                })
                .map_err(|e| transport_error("create session", e))?;
            let origin = session::Origin {
                scheme: self.http.scheme(),
                authority: self.http.authority(),
            };
            let answer = session::judge(
                resp.status,
                resp.header("X-Auth-Token"),
                resp.header("Location"),
                origin,
            );
            match answer {
                session::Login::Session { token, location } => {
                    auth = Auth::Session(Session { token, location })
                }
                session::Login::Refused => return Err(RedfishError::Auth("create session")),
                session::Login::Basic => {}
            }
        }
        *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = auth;
        Ok(())
    }

    /// The session in use, if any, leaving the client to log in again.
    fn take_session(&self) -> Option<Session> {
        let mut auth = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *auth, Auth::Unknown) {
            Auth::Session(s) => Some(s),
            other => {
                *auth = other;
                None
            }
        }
    }

    /// Deletes, best effort, a session whose token the service refused: usually it has expired
    /// and is gone (404), but a service that still holds it frees its slot, of which BMCs have
    /// few. Authenticated with what the client uses now, never deleting that session (a
    /// service may hand out the same path again).
    fn forget(&self, old: Session) {
        let Some(path) = old.location else {
            return;
        };
        let auth = self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let header = match &auth {
            Auth::Session(now) if now.location.as_deref() == Some(path.as_str()) => return,
            Auth::Session(now) => ("X-Auth-Token", now.token.clone()),
            Auth::Basic => match self.auth_header() {
                Ok(h) => h,
                Err(_) => return,
            },
            Auth::Unknown => return,
        };
        let _ = self.delete_session(&path, header);
    }

    fn delete_session(
        &self,
        path: &str,
        (name, value): (&str, String),
    ) -> Result<u16, RedfishError> {
        self.http
            .request(&http_client::Request {
                headers: &[("Accept", "application/json"), (name, value.as_str())],
                ..http_client::Request::new("DELETE", path)
            })
            .map(|r| r.status)
            .map_err(|e| transport_error("delete session", e))
    }

    /// Ends the session this client opened, if any: a `DELETE` of the session's `Location`
    /// with its token, one request bounded by the client's timeout (for the agent's shutdown:
    /// BMCs hold few sessions, and an abandoned one holds a slot until it expires). A session
    /// already gone (404, or its token refused) counts as ended. The client forgets the session
    /// whatever the outcome and logs in again on its next call. Nothing is sent on Basic auth,
    /// before any login, or when the service gave no `Location` on its own origin.
    pub fn logout(&self) -> Result<(), RedfishError> {
        let Some(s) = self.take_session() else {
            return Ok(());
        };
        let Some(path) = s.location else {
            return Ok(());
        };
        match self.delete_session(&path, ("X-Auth-Token", s.token))? {
            200..=299 | 401 | 404 => Ok(()),
            status => Err(RedfishError::Status {
                what: "delete session",
                status,
            }),
        }
    }

    fn request_json(
        &self,
        what: &'static str,
        method: &str,
        path: &str,
        body: Option<&Value>,
        authenticated: bool,
        extra: &[(&str, &str)],
    ) -> Result<(u16, Value), RedfishError> {
        // Paths come from the BMC's own JSON: only paths on this service are followed, never
        // absolute URLs or authority tricks that would send credentials elsewhere.
        if !path.starts_with('/') || path.starts_with("//") || path.contains('@') {
            return Err(RedfishError::Malformed(what));
        }
        let mut tries = 0;
        loop {
            let auth = if authenticated {
                Some(self.auth_header()?)
            } else {
                None
            };
            let body_text = body.map(Value::to_string).unwrap_or_default();
            let mut headers = vec![("Accept", "application/json")];
            if body.is_some() {
                headers.push(("Content-Type", "application/json"));
            }
            headers.extend_from_slice(extra);
            if let Some((k, v)) = &auth {
                headers.push((k, v.as_str()));
            }
            let resp = self
                .http
                .request(&http_client::Request {
                    headers: &headers,
                    body: body_text.as_bytes(),
                    max_body: MAX_BODY,
                    ..http_client::Request::new(method, path)
                })
                .map_err(|e| transport_error(what, e))?;
            let status = resp.status;
            if (status == 401 || status == 403) && authenticated {
                // An expired session gets one fresh login; refused credentials are final.
                if tries == 0 {
                    if let Some(old) = self.take_session() {
                        tries += 1;
                        self.login()?;
                        self.forget(old);
                        continue;
                    }
                }
                return Err(RedfishError::Auth(what));
            }
            let bytes = resp.body;
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            return Ok((status, value));
        }
    }

    fn get(&self, what: &'static str, path: &str) -> Result<Value, RedfishError> {
        match self.request_json(what, "GET", path, None, true, &[])? {
            (200, v) if v.is_object() => Ok(v),
            (200, _) => Err(RedfishError::Malformed(what)),
            (status, _) => Err(RedfishError::Status { what, status }),
        }
    }

    fn first_member(&self, what: &'static str, collection: &str) -> Result<String, RedfishError> {
        let c = self.get(what, collection)?;
        c.pointer("/Members/0/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(RedfishError::Malformed(what))
    }

    /// The members of the collection at `path` across its pages (`Members@odata.nextLink`):
    /// at most `max` of them from at most [`MAX_PAGES`] pages; the flag says whether that was
    /// all of them. A link back to a page already read ends the walk, as incomplete.
    fn members(
        &self,
        what: &'static str,
        path: &str,
        max: usize,
        until: Option<std::time::Instant>,
    ) -> Result<(Vec<Value>, bool), RedfishError> {
        let mut out = Vec::new();
        let mut read: Vec<String> = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(page_path) = next.take() {
            let late = until.is_some_and(|u| std::time::Instant::now() >= u);
            if late || read.len() == MAX_PAGES || read.contains(&page_path) {
                return Ok((out, false));
            }
            let mut page = self.get(what, &page_path)?;
            read.push(page_path);
            next = next_link(&page).map(str::to_owned);
            let Some(Value::Array(members)) = page.get_mut("Members").map(Value::take) else {
                return Err(RedfishError::Malformed(what));
            };
            for m in members {
                if out.len() == max {
                    return Ok((out, false));
                }
                out.push(m);
            }
        }
        Ok((out, true))
    }

    /// The system resource (the service's first system; cached).
    fn system(&self) -> Result<(String, Value), RedfishError> {
        let cached = self
            .system
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let path = match cached {
            Some(p) => p,
            None => {
                let p = self.first_member("systems", "/redfish/v1/Systems")?;
                *self.system.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
                p
            }
        };
        let v = self.get("system", &path)?;
        Ok((path, v))
    }

    /// Whether the system's power is on (`PowerState` On or PoweringOff).
    pub fn power_on(&self) -> Result<bool, RedfishError> {
        let (_, sys) = self.system()?;
        match sys.get("PowerState").and_then(Value::as_str) {
            Some("On") | Some("PoweringOff") => Ok(true),
            Some("Off") | Some("PoweringOn") => Ok(false),
            _ => Err(RedfishError::Malformed("system PowerState")),
        }
    }

    fn reset_system(&self, sys: &Value, reset_type: &'static str) -> Result<(), RedfishError> {
        let action =
            sys.pointer("/Actions/#ComputerSystem.Reset")
                .ok_or(RedfishError::NotAdvertised {
                    reset_type,
                    allowed: Vec::new(),
                })?;
        let target = action
            .get("target")
            .and_then(Value::as_str)
            .ok_or(RedfishError::Malformed("ComputerSystem.Reset target"))?;
        let allowed: Option<Vec<String>> = action
            .get("ResetType@Redfish.AllowableValues")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            });
        // A service that lists its reset types is held to them; one that lists none is tried.
        if let Some(allowed) = &allowed {
            if !allowed.iter().any(|a| a == reset_type) {
                return Err(RedfishError::NotAdvertised {
                    reset_type,
                    allowed: allowed.clone(),
                });
            }
        }
        let body = serde_json::json!({ "ResetType": reset_type });
        let (status, reply) = self.request_json("reset", "POST", target, Some(&body), true, &[])?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let message = error_message(&reply);
        Err(RedfishError::Rejected {
            reset_type,
            status,
            message,
        })
    }

    /// Runs `ComputerSystem.Reset` with `reset_type`, when the service advertises it (or
    /// advertises no list at all).
    pub fn reset(&self, reset_type: ResetType) -> Result<(), RedfishError> {
        let (_, sys) = self.system()?;
        self.reset_system(&sys, reset_type.as_str())
    }

    /// A power cycle: `PowerCycle` when advertised, else `ForceOff` and, once `PowerState`
    /// reads Off (within half the request bound), `On`.
    pub fn power_cycle(&self) -> Result<(), RedfishError> {
        let (_, sys) = self.system()?;
        let advertised = sys
            .pointer("/Actions/#ComputerSystem.Reset/ResetType@Redfish.AllowableValues")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "PowerCycle"));
        if advertised {
            return self.reset_system(&sys, "PowerCycle");
        }
        self.reset_system(&sys, "ForceOff")?;
        // Half the operation's bound for the BMC to report Off, leaving time for On.
        let until = Instant::now() + self.timeout / 2;
        while self.power_on()? {
            if Instant::now() >= until {
                return Err(RedfishError::Timeout("power cycle: waiting for Off"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let (_, sys) = self.system()?;
        self.reset_system(&sys, "On")
    }

    /// The system's boot override (`Boot`), as the service reports it now.
    pub fn boot(&self) -> Result<BootOverride, RedfishError> {
        let (_, sys) = self.system()?;
        boot::read(&sys)
    }

    /// Sets the system's boot override: a PATCH of `Boot` on the system with
    /// `BootSourceOverrideTarget` and `BootSourceOverrideEnabled`. Where the service lists the
    /// values it allows (`@Redfish.AllowableValues`), a target or persistence outside them is
    /// [`RedfishError::Unsupported`] and nothing is sent. A service that requires `If-Match`
    /// (428) is asked once more with the system's `@odata.etag`. Success means the service
    /// took the change; some apply it their own way (sushy-tools keeps every override
    /// `Continuous`): read it back with [`RedfishBmc::boot`].
    pub fn set_boot(
        &self,
        target: BootTarget,
        persistence: BootPersistence,
    ) -> Result<(), RedfishError> {
        const WHAT: &str = "boot override";
        let (path, sys) = self.system()?;
        let body = boot::change(&sys, target, persistence)?;
        let (mut status, mut reply) =
            self.request_json(WHAT, "PATCH", &path, Some(&body), true, &[])?;
        if status == 428 {
            // Precondition required: the service wants the version the change applies to.
            let etag = sys.get("@odata.etag").and_then(Value::as_str);
            let etag = etag.filter(|e| e.len() <= 256 && !e.bytes().any(|b| b < b' ' || b == 0x7f));
            if let Some(etag) = etag {
                (status, reply) = self.request_json(
                    WHAT,
                    "PATCH",
                    &path,
                    Some(&body),
                    true,
                    &[("If-Match", etag)],
                )?;
            }
        }
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(RedfishError::Refused {
            what: WHAT,
            status,
            message: error_message(&reply),
        })
    }

    /// The system's manager: the one it names, else the service's first.
    fn manager(&self, sys: &Value) -> Result<Value, RedfishError> {
        let manager = match sys
            .pointer("/Links/ManagedBy/0/@odata.id")
            .and_then(Value::as_str)
        {
            Some(p) => p.to_owned(),
            None => self.first_member("managers", "/redfish/v1/Managers")?,
        };
        self.get("manager", &manager)
    }

    /// System manufacturer, model and serial number, and the manager's firmware version (empty
    /// when the service fails to serve the manager).
    pub fn info(&self) -> Result<RedfishInfo, RedfishError> {
        let (_, sys) = self.system()?;
        self.identity(&sys)
    }

    fn identity(&self, sys: &Value) -> Result<RedfishInfo, RedfishError> {
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let firmware = match self.manager(sys) {
            Ok(m) => text(&m, "FirmwareVersion"),
            Err(RedfishError::Status { .. } | RedfishError::Malformed(_)) => String::new(),
            Err(e) => return Err(e),
        };
        Ok(RedfishInfo {
            manufacturer: text(sys, "Manufacturer"),
            model: text(sys, "Model"),
            firmware,
            serial: text(sys, "SerialNumber"),
        })
    }

    /// A resource the service may not have or may fail to serve: `None` then, but a service
    /// that stops answering is an error.
    fn optional(
        &self,
        what: &'static str,
        path: Option<&str>,
    ) -> Result<Option<Value>, RedfishError> {
        let Some(path) = path else {
            return Ok(None);
        };
        match self.get(what, path) {
            Ok(v) => Ok(Some(v)),
            Err(RedfishError::Status { .. } | RedfishError::Malformed(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Identity, health roll-ups (system, memory and processor summaries, chassis, power
    /// supplies, fans) and power draw: the system, its manager and chassis, and the chassis'
    /// `Power` and `Thermal` resources (or, in the newer model, its `PowerSubsystem`,
    /// `ThermalSubsystem` and `EnvironmentMetrics`). A part the service does not have or fails
    /// to serve is left out.
    pub fn status(&self) -> Result<RedfishStatus, RedfishError> {
        let (_, sys) = self.system()?;
        let info = self.identity(&sys)?;
        let mut out = health::system(&sys);
        let ch = self.get("chassis", &self.chassis_of(&sys)?)?;
        out.extend(health::chassis(&ch).map(|h| (health::Component::Chassis, h)));
        let link = |k: &str| {
            ch.pointer(&format!("/{k}/@odata.id"))
                .and_then(Value::as_str)
        };
        // The deprecated Power and Thermal resources first (older services have only those),
        // then the newer model's subsystems and EnvironmentMetrics for what they left out.
        let power = self.optional("power", link("Power"))?;
        let supplies = match power.as_ref().and_then(health::power_supplies) {
            Some(h) => Some(h),
            None => self
                .optional("power subsystem", link("PowerSubsystem"))?
                .as_ref()
                .and_then(health::subsystem),
        };
        out.extend(supplies.map(|h| (health::Component::PowerSupply, h)));
        let thermal = self.optional("thermal", link("Thermal"))?;
        let fans = match thermal.as_ref().and_then(health::fans) {
            Some(h) => Some(h),
            None => self
                .optional("thermal subsystem", link("ThermalSubsystem"))?
                .as_ref()
                .and_then(health::subsystem),
        };
        out.extend(fans.map(|h| (health::Component::Fan, h)));
        let power_watts = match power.as_ref().and_then(health::power_watts) {
            Some(w) => Some(w),
            None => self
                .optional("environment metrics", link("EnvironmentMetrics"))?
                .as_ref()
                .and_then(health::environment_watts),
        };
        Ok(RedfishStatus {
            info,
            health: out,
            power_watts,
        })
    }

    /// The number of entries in a log: its collection's `Members@odata.count`, or the members
    /// of a collection with one page. `None` when the service says neither.
    pub fn log_entry_count(&self, service: &LogService) -> Result<Option<u64>, RedfishError> {
        let v = self.get("log entries", &service.entries)?;
        if let Some(n) = v.get("Members@odata.count").and_then(Value::as_u64) {
            return Ok(Some(n));
        }
        if v.get("Members@odata.nextLink").is_some() {
            return Ok(None);
        }
        Ok(v.get("Members")
            .and_then(Value::as_array)
            .map(|m| m.len() as u64))
    }

    /// The log services of the system, then those of its manager (at most 16 each), with an
    /// Entries collection; pick one by [`LogService::kind`] (the SEL is [`LogKind::Sel`]) or
    /// id. A system or manager without `LogServices`, or a manager the service fails to serve,
    /// adds none; a service that stops answering is an error.
    pub fn log_services(&self) -> Result<Vec<LogService>, RedfishError> {
        let (_, sys) = self.system()?;
        let mut out = self.scope_log_services(LogScope::System, &sys)?;
        match self.manager(&sys) {
            Ok(mgr) => out.extend(self.scope_log_services(LogScope::Manager, &mgr)?),
            Err(RedfishError::Status { .. } | RedfishError::Malformed(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(out)
    }

    fn scope_log_services(
        &self,
        scope: LogScope,
        owner: &Value,
    ) -> Result<Vec<LogService>, RedfishError> {
        let Some(path) = owner
            .pointer("/LogServices/@odata.id")
            .and_then(Value::as_str)
        else {
            return Ok(Vec::new());
        };
        let (members, _) = self.members("log services", path, MAX_LOG_SERVICES, None)?;
        let mut out = Vec::new();
        for m in members {
            let Some(link) = m.get("@odata.id").and_then(Value::as_str) else {
                continue;
            };
            match self.get("log service", link) {
                Ok(v) => out.extend(logs::service(scope, &v)),
                Err(RedfishError::Status { .. } | RedfishError::Malformed(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The entries of a log, following its pages (`Members@odata.nextLink`), at most 1000
    /// entries from at most 64 pages: [`LogEntries::complete`] says whether that was all.
    /// Entries the collection only links are read one by one (within the same bound); one
    /// the service fails to serve is skipped.
    pub fn log_entries(&self, service: &LogService) -> Result<LogEntries, RedfishError> {
        self.read_log_entries(service, None)
    }

    /// [`RedfishBmc::log_entries`], reading no further page or entry once `until` has passed
    /// (the entries read by then, as incomplete): a large log on a slow service stays within
    /// the caller's budget.
    pub fn log_entries_until(
        &self,
        service: &LogService,
        until: std::time::Instant,
    ) -> Result<LogEntries, RedfishError> {
        self.read_log_entries(service, Some(until))
    }

    fn read_log_entries(
        &self,
        service: &LogService,
        until: Option<std::time::Instant>,
    ) -> Result<LogEntries, RedfishError> {
        let (members, mut complete) =
            self.members("log entries", &service.entries, MAX_LOG_ENTRIES, until)?;
        let mut entries = Vec::with_capacity(members.len());
        for m in members {
            if until.is_some_and(|u| std::time::Instant::now() >= u) {
                complete = false;
                break;
            }
            if logs::is_expanded(&m) {
                entries.push(logs::entry(&m));
                continue;
            }
            let Some(link) = m.get("@odata.id").and_then(Value::as_str) else {
                continue;
            };
            match self.get("log entry", link) {
                Ok(v) => entries.push(logs::entry(&v)),
                Err(RedfishError::Status { .. } | RedfishError::Malformed(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(LogEntries { entries, complete })
    }

    /// Clears a log: a POST to its `LogService.ClearLog` target. A service that accepts it
    /// for later (202) counts as done. Without the action, [`RedfishError::Unsupported`] and
    /// nothing is sent.
    pub fn clear_log(&self, service: &LogService) -> Result<(), RedfishError> {
        const WHAT: &str = "LogService.ClearLog";
        let Some(target) = &service.clear else {
            return Err(RedfishError::Unsupported {
                what: Capability::ClearLog,
                value: "",
                allowed: Vec::new(),
            });
        };
        let body = serde_json::json!({});
        let (status, reply) = self.request_json(WHAT, "POST", target, Some(&body), true, &[])?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(RedfishError::Refused {
            what: WHAT,
            status,
            message: error_message(&reply),
        })
    }

    /// The readings of the system's chassis: from its Sensors collection where it has one (at
    /// most 256 sensors), else temperatures and fans from its Thermal resource and power
    /// consumption from its Power resource. A chassis with both is read from Sensors only
    /// (Thermal and Power are deprecated there and repeat the same sensors), unless its Sensors
    /// collection is empty or the service fails to serve it.
    pub fn sensors(&self) -> Result<Vec<RedfishReading>, RedfishError> {
        let (_, sys) = self.system()?;
        let ch = self.get("chassis", &self.chassis_of(&sys)?)?;
        let thermal = ch.pointer("/Thermal/@odata.id").and_then(Value::as_str);
        let power = ch.pointer("/Power/@odata.id").and_then(Value::as_str);
        if let Some(path) = ch.pointer("/Sensors/@odata.id").and_then(Value::as_str) {
            match self.sensor_collection(path) {
                Ok(readings) if !readings.is_empty() => return Ok(readings),
                Ok(_) => {}
                // A Sensors link the service fails to serve, beside the older resources: those
                // may still have the readings.
                Err(RedfishError::Status { .. } | RedfishError::Malformed(_))
                    if thermal.is_some() || power.is_some() => {}
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::new();
        if let Some(thermal) = thermal {
            out.extend(sensors::thermal(&self.get("thermal", thermal)?));
        }
        if let Some(power) = power {
            out.extend(sensors::power(&self.get("power", power)?));
        }
        Ok(out)
    }

    /// The system's chassis: the one it links, else the service's first.
    fn chassis_of(&self, sys: &Value) -> Result<String, RedfishError> {
        match sys
            .pointer("/Links/Chassis/0/@odata.id")
            .and_then(Value::as_str)
        {
            Some(p) => Ok(p.to_owned()),
            None => self.first_member("chassis", "/redfish/v1/Chassis"),
        }
    }

    fn sensor_collection(&self, path: &str) -> Result<Vec<RedfishReading>, RedfishError> {
        let (members, _) = self.members("sensors", path, MAX_SENSORS, None)?;
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            if sensors::is_expanded(&m) {
                out.push(sensors::sensor(&m));
                continue;
            }
            let Some(link) = m.get("@odata.id").and_then(Value::as_str) else {
                continue;
            };
            match self.get("sensor", link) {
                Ok(s) => out.push(sensors::sensor(&s)),
                // One sensor the service fails to serve does not blank the others; a service
                // that stops answering does fail the whole read.
                Err(RedfishError::Status { .. } | RedfishError::Malformed(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Discovery's probe: `GET /redfish/v1/` over HTTPS, without credentials and without checking
/// the certificate (it identifies, it does not trust). `Some(vendor)` when a Redfish service
/// root answers: its `Vendor` (or `Product`) as the service writes it, untrusted text.
pub fn probe(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<Option<String>, &'static str> {
    let Ok(client) = RedfishBmc::new(addr, "", "", Tls::Insecure, timeout) else {
        return Ok(None);
    };
    let resp = match client.http.request(&http_client::Request {
        headers: &[("Accept", "application/json")],
        max_body: 1 << 20,
        ..http_client::Request::new("GET", "/redfish/v1/")
    }) {
        Ok(r) => r,
        Err(http_client::Error::Timeout) => return Err("probe_timeout"),
        Err(_) => return Ok(None), // something listens, but it is not HTTPS we can talk to
    };
    if resp.status != 200 {
        return Ok(None);
    }
    let bytes = resp.body;
    let Ok(root) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(None);
    };
    if root.get("RedfishVersion").is_none() && root.get("@odata.id").is_none() {
        return Ok(None);
    }
    let vendor = root
        .get("Vendor")
        .or_else(|| root.get("Product"))
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    Ok(Some(vendor))
}

#[cfg(test)]
mod fake;
