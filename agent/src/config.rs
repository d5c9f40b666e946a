//! The agent's configuration file (TOML): the BMC inventory, credentials, the API token and
//! intervals. Parsed in two stages (ripgrep's low/high args): [`RawConfig`] is the file as
//! written, [`Config`] the validated, ready-to-use form. Every error names the file, the line
//! and the field; the agent does not start half-configured.
//!
//! See `agent/conduit-agent.example.toml` for a documented example.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// A configuration error, already phrased as `file: line N: field: problem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// How the agent speaks to a BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// IPMI over LAN (RMCP+).
    Ipmi,
    /// Redfish over HTTPS.
    Redfish,
    /// Whatever the BMC answers (discovery decides).
    Auto,
}

impl Protocol {
    /// The `bmc_type` label value.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Ipmi => "ipmi",
            Protocol::Redfish => "redfish",
            Protocol::Auto => "auto",
        }
    }
}

/// Where a secret comes from. Secrets are never logged and never leave the agent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    agent: RawAgent,
    #[serde(default, rename = "bmc")]
    bmcs: Vec<RawBmc>,
    #[serde(default)]
    discovery: RawDiscovery,
    #[serde(default)]
    console: RawConsole,
    uplink: Option<RawUplink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUplink {
    gateways: Spanned<Vec<String>>,
    credential: Option<Spanned<String>>,
    credential_file: Option<Spanned<String>>,
    credential_env: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    datacenter: Option<String>,
    plaintext: Option<bool>,
}

/// One gateway the agent may dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAddr {
    /// As configured, for messages.
    pub url: String,
    /// Host name or address (TLS checks the certificate against it).
    pub host: String,
    /// Port.
    pub port: u16,
    /// `wss://` (else `ws://`, only with `plaintext = true`).
    pub tls: bool,
}

impl GatewayAddr {
    /// Parses `wss://host[:port]` or `ws://host[:port]` (default port 8443); `None` otherwise.
    pub fn parse(url: &str) -> Option<GatewayAddr> {
        let (tls, rest) = match url.split_once("://")? {
            ("wss", r) => (true, r),
            ("ws", r) => (false, r),
            _ => return None,
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return None;
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => 8443,
                None => return None,
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().ok()?),
                None => (authority.to_owned(), 8443),
            }
        };
        (!host.is_empty() && port != 0).then(|| GatewayAddr {
            url: url.to_owned(),
            host,
            port,
            tls,
        })
    }
}

/// The gateway uplink (`[uplink]`).
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// Gateways in order of preference; the agent fails over down the list.
    pub gateways: Vec<GatewayAddr>,
    /// The credential the manager issued this agent.
    pub credential: Secret,
    /// The CA the gateways' certificates must chain to (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// The datacenter, as told to the gateway (its credential's record decides).
    pub datacenter: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    sol_log_dir: Option<Spanned<String>>,
    sol_log_max_bytes: Option<Spanned<i64>>,
    sol_log_keep: Option<Spanned<i64>>,
    sol_reconnect_max_secs: Option<Spanned<f64>>,
    vnc_connect_timeout_secs: Option<Spanned<f64>>,
    vnc_tcp_bind: Option<Spanned<String>>,
    vnc_tcp_accept_secs: Option<Spanned<f64>>,
    max_sessions: Option<Spanned<i64>>,
    max_sessions_per_server: Option<Spanned<i64>>,
}

/// Console settings (`[console]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleConfig {
    /// Where SOL session logs go (`<dir>/<server_id>.log`); none when unset.
    pub sol_log_dir: Option<PathBuf>,
    /// A log file is rotated when it would grow past this.
    pub sol_log_max_bytes: u64,
    /// Rotated files kept (`.1` … `.N`).
    pub sol_log_keep: usize,
    /// Cap of the SOL reconnect backoff (it starts at 0.5 s and doubles).
    pub sol_reconnect_max: Duration,
    /// Bound on dialing a BMC's VNC port and on its RFB handshake.
    pub vnc_connect_timeout: Duration,
    /// Address the per-session raw TCP VNC listeners bind to.
    pub vnc_tcp_bind: IpAddr,
    /// How long such a listener waits for its one viewer.
    pub vnc_tcp_accept: Duration,
    /// Console sessions (SOL viewers, VNC sessions, waiting raw VNC listeners) at most.
    pub max_sessions: usize,
    /// Console sessions on one server at most.
    pub max_sessions_per_server: usize,
}

impl Default for ConsoleConfig {
    fn default() -> ConsoleConfig {
        ConsoleConfig {
            sol_log_dir: None,
            sol_log_max_bytes: 1 << 20,
            sol_log_keep: 3,
            sol_reconnect_max: Duration::from_secs(30),
            vnc_connect_timeout: Duration::from_secs(5),
            vnc_tcp_bind: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            vnc_tcp_accept: Duration::from_secs(30),
            max_sessions: 32,
            max_sessions_per_server: 4,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    #[serde(default)]
    ranges: Vec<Spanned<String>>,
    ipmi_ports: Option<Vec<u16>>,
    redfish_ports: Option<Vec<u16>>,
    interval_secs: Option<Spanned<f64>>,
    probe_timeout_secs: Option<Spanned<f64>>,
    concurrency: Option<Spanned<i64>>,
    max_bmcs: Option<Spanned<i64>>,
}

/// An IPv4 range in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address (host bits cleared).
    pub network: std::net::Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` (or a single address).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok()?),
            None => (s, 32),
        };
        let ip: std::net::Ipv4Addr = addr.trim().parse().ok()?;
        if prefix > 32 {
            return None;
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Some(Cidr {
            network: (u32::from(ip) & mask).into(),
            prefix,
        })
    }

    /// Number of addresses in the range.
    pub fn len(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// True for a zero-size range (never: a /32 holds one address).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: std::net::Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        u32::from(ip) & mask == u32::from(self.network)
    }

    /// Every address of the range.
    pub fn addresses(&self) -> impl Iterator<Item = std::net::Ipv4Addr> {
        let start = u32::from(self.network);
        (0..self.len() as u32).map(move |i| std::net::Ipv4Addr::from(start + i))
    }
}

/// Largest range one entry may scan (a /16): a typo must not become a scan of the Internet.
pub const MAX_RANGE: u64 = 1 << 16;

/// Discovery settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// Ranges to scan; empty means discovery only counts the static inventory.
    pub ranges: Vec<Cidr>,
    /// UDP ports probed with an RMCP presence ping.
    pub ipmi_ports: Vec<u16>,
    /// TCP ports probed with `GET /redfish/v1` over HTTPS.
    pub redfish_ports: Vec<u16>,
    /// Time between cycles.
    pub interval: Duration,
    /// How long a probe waits for an answer.
    pub probe_timeout: Duration,
    /// Most Redfish probes at once.
    pub concurrency: usize,
    /// Most BMCs one cycle keeps (a fixed-capacity table: findings past it are dropped and
    /// counted as `table_full` discovery errors).
    pub max_bmcs: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    api_token: Option<Spanned<String>>,
    api_token_file: Option<Spanned<String>>,
    api_token_env: Option<Spanned<String>>,
    poll_interval_secs: Option<Spanned<f64>>,
    operation_timeout_secs: Option<Spanned<f64>>,
    watchdog_device: Option<Spanned<String>>,
    watchdog_interval_secs: Option<Spanned<f64>>,
    max_operations: Option<Spanned<i64>>,
    max_operations_per_server: Option<Spanned<i64>>,
    state_dir: Option<Spanned<String>>,
    ipmi_exporter_endpoint: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBmc {
    id: Spanned<String>,
    address: Spanned<String>,
    port: Option<u16>,
    #[serde(default = "default_protocol")]
    protocol: Spanned<String>,
    username: Option<String>,
    password: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    cipher_suite: Option<Spanned<i64>>,
    privilege: Option<Spanned<String>>,
    scheme: Option<Spanned<String>>,
    redfish_port: Option<u16>,
    tls_ca_file: Option<Spanned<String>>,
    insecure_skip_verify: Option<Spanned<bool>>,
    sol_instance: Option<Spanned<i64>>,
    vnc_port: Option<u16>,
    vnc_password: Option<Spanned<String>>,
    vnc_password_file: Option<Spanned<String>>,
    vnc_password_env: Option<Spanned<String>>,
}

fn default_protocol() -> Spanned<String> {
    Spanned::new(0..0, "ipmi".to_owned())
}

/// One BMC, validated. Equal when nothing about the BMC changed (secrets included): a reload
/// keeps its sessions and consoles then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcConfig {
    /// Operator-chosen id (metric label `server_id`).
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// How to speak to it.
    pub protocol: Protocol,
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// IPMI cipher suite (3 or 17).
    pub cipher_suite: u8,
    /// IPMI privilege level (2 user, 3 operator, 4 administrator).
    pub privilege: u8,
    /// Redfish: how to check the BMC's certificate.
    pub tls: RedfishTls,
    /// Redfish port: `port` for Redfish BMCs, `redfish_port` (default 443) for auto ones,
    /// whose `port` is the IPMI port.
    pub redfish_port: u16,
    /// SOL payload instance (1 unless the BMC has several serial ports).
    pub sol_instance: u8,
    /// The BMC's VNC/KVM TCP port (same address).
    pub vnc_port: u16,
    /// The BMC's VNC password, for VNC Authentication (only its first 8 bytes count).
    pub vnc_password: Option<Secret>,
}

/// How a Redfish BMC's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedfishTls {
    /// Verify against this CA (the PEM read from `tls_ca_file`).
    CaPem(Vec<u8>),
    /// `insecure_skip_verify = true`: no verification (said explicitly).
    Insecure,
    /// `scheme = "http"`: no TLS at all (labs, tests).
    PlainHttp,
    /// Not a Redfish BMC.
    NotApplicable,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// The API bearer token, if configured (the API is closed without one).
    pub api_token: Option<Secret>,
    /// How often the poller refreshes each BMC.
    pub poll_interval: Duration,
    /// Bound on one BMC operation, retransmits included.
    pub operation_timeout: Duration,
    /// The inventory, in file order.
    pub bmcs: Vec<BmcConfig>,
    /// Discovery.
    pub discovery: DiscoveryConfig,
    /// The hardware watchdog to arm, if any (`--watchdog` overrides).
    pub watchdog_device: Option<PathBuf>,
    /// How often to pet it.
    pub watchdog_interval: Duration,
    /// Consoles.
    pub console: ConsoleConfig,
    /// API operations in flight at most (`agent.max_operations`); past it, `resource_exhausted`.
    pub max_operations: usize,
    /// API operations in flight on one server at most.
    pub max_operations_per_server: usize,
    /// Where the agent keeps what must survive a crash (the SOL payloads it holds):
    /// `agent.state_dir`, by default `state` next to the configuration file.
    pub state_dir: PathBuf,
    /// `agent.ipmi_exporter_endpoint`: serve `/ipmi?target=…` in ipmi_exporter's names
    /// (default off).
    pub ipmi_exporter_endpoint: bool,
    /// The gateway uplink, if configured.
    pub uplink: Option<UplinkConfig>,
}

/// Upper bounds of the operation and console caps: together they stay below the HTTP
/// connection cap's default (256), so an open console or a waiting API call can never take the
/// last connection slots a scrape or the watchdog's health probe needs.
pub const MAX_OPERATIONS: usize = 128;
/// See [`MAX_OPERATIONS`].
pub const MAX_CONSOLES: usize = 64;

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        msg: impl std::fmt::Display,
    ) -> Result<T, ConfigError> {
        Err(ConfigError(format!(
            "{}: line {}: {field}: {msg}",
            self.path.display(),
            self.line(span.start)
        )))
    }

    fn secret(
        &self,
        field: &str,
        inline: &Option<Spanned<String>>,
        file: &Option<Spanned<String>>,
        env: &Option<Spanned<String>>,
    ) -> Result<Option<Secret>, ConfigError> {
        let given = [inline.is_some(), file.is_some(), env.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            let span = [inline, file, env]
                .iter()
                .find_map(|s| s.as_ref().map(|s| s.span()))
                .unwrap_or(0..0);
            return self.err(
                span,
                field,
                "give only one of the inline value, _file and _env",
            );
        }
        if let Some(v) = inline {
            return Ok(Some(Secret(v.get_ref().clone())));
        }
        if let Some(f) = file {
            let p = self.resolve(f.get_ref());
            return match std::fs::read_to_string(&p) {
                Ok(s) => Ok(Some(Secret(s.trim_end_matches(['\n', '\r']).to_owned()))),
                Err(e) => self.err(
                    f.span(),
                    &format!("{field}_file"),
                    format!("{}: {e}", p.display()),
                ),
            };
        }
        if let Some(v) = env {
            return match std::env::var(v.get_ref()) {
                Ok(s) => Ok(Some(Secret(s))),
                Err(_) => self.err(
                    v.span(),
                    &format!("{field}_env"),
                    format!("environment variable {} is not set", v.get_ref()),
                ),
            };
        }
        Ok(None)
    }

    /// Relative paths in the file are relative to the file.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

fn count(
    ctx: &Ctx,
    v: &Option<Spanned<i64>>,
    field: &str,
    default: usize,
    max: i64,
) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(c) if (1..=max).contains(c.get_ref()) => Ok(*c.get_ref() as usize),
        Some(c) => ctx.err(c.span(), field, format!("must be between 1 and {max}")),
    }
}

fn secs(
    ctx: &Ctx,
    v: &Option<Spanned<f64>>,
    field: &str,
    default: f64,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(Duration::from_secs_f64(default)),
        Some(s) if s.get_ref().is_finite() && *s.get_ref() > 0.0 && *s.get_ref() < 86_400.0 => {
            Ok(Duration::from_secs_f64(*s.get_ref()))
        }
        Some(s) => ctx.err(
            s.span(),
            field,
            "must be a number of seconds between 0 and 86400",
        ),
    }
}

fn uplink(ctx: &Ctx, u: &RawUplink) -> Result<UplinkConfig, ConfigError> {
    if !cfg!(feature = "uplink") {
        return ctx.err(
            u.gateways.span(),
            "uplink",
            "this agent was built without the uplink feature",
        );
    }
    let plaintext = u.plaintext.unwrap_or(false);
    let mut gateways = Vec::new();
    for g in u.gateways.get_ref() {
        let Some(addr) = GatewayAddr::parse(g) else {
            return ctx.err(
                u.gateways.span(),
                "uplink.gateways",
                format!("{g:?}: give wss://HOST[:PORT]"),
            );
        };
        if !addr.tls && !plaintext {
            return ctx.err(
                u.gateways.span(),
                "uplink.gateways",
                format!("{g:?} is plaintext: use wss://, or set plaintext = true (loopback or a trusted VLAN only)"),
            );
        }
        gateways.push(addr);
    }
    if gateways.is_empty() || gateways.len() > 16 {
        return ctx.err(
            u.gateways.span(),
            "uplink.gateways",
            "list 1 to 16 gateways",
        );
    }
    let credential = ctx
        .secret(
            "uplink.credential",
            &u.credential,
            &u.credential_file,
            &u.credential_env,
        )?
        .ok_or_else(|| {
            ConfigError(format!(
                "{}: [uplink]: give credential, credential_file or credential_env (the agent credential the manager issued)",
                ctx.path.display()
            ))
        })?;
    let ca_pem = match &u.ca_file {
        Some(f) => {
            let p = ctx.resolve(f.get_ref());
            match std::fs::read(&p) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    return ctx.err(f.span(), "uplink.ca_file", format!("{}: {e}", p.display()))
                }
            }
        }
        None if gateways.iter().any(|g| g.tls) => {
            return ctx.err(
                u.gateways.span(),
                "uplink.ca_file",
                "wss:// gateways need ca_file: the CA their certificates chain to",
            )
        }
        None => None,
    };
    let datacenter = u.datacenter.clone().unwrap_or_default();
    if datacenter.len() > 64 {
        return ctx.err(u.gateways.span(), "uplink.datacenter", "at most 64 bytes");
    }
    Ok(UplinkConfig {
        gateways,
        credential,
        ca_pem,
        datacenter,
    })
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let ctx = Ctx { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| ctx.line(s.start)).unwrap_or(0);
            ConfigError(format!("{}: line {line}: {}", path.display(), e.message()))
        })?;
        let a = &raw.agent;
        let api_token = ctx.secret(
            "agent.api_token",
            &a.api_token,
            &a.api_token_file,
            &a.api_token_env,
        )?;
        if let Some(t) = &api_token {
            if t.expose().len() < 16 {
                let span = a
                    .api_token
                    .as_ref()
                    .or(a.api_token_file.as_ref())
                    .or(a.api_token_env.as_ref())
                    .map(|s| s.span())
                    .unwrap_or(0..0);
                return ctx.err(span, "agent.api_token", "must be at least 16 characters");
            }
        }
        let mut seen = HashSet::new();
        let mut bmcs = Vec::new();
        for (i, b) in raw.bmcs.iter().enumerate() {
            let field = |f: &str| format!("bmc[{i}].{f}");
            let id = b.id.get_ref().trim();
            let valid_id = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
            if !valid_id {
                return ctx.err(
                    b.id.span(),
                    &field("id"),
                    "1 to 64 characters of letters, digits, - _ . :",
                );
            }
            if !seen.insert(id.to_owned()) {
                return ctx.err(b.id.span(), &field("id"), format!("duplicate id {id:?}"));
            }
            // A defaulted protocol has no span of its own: point at the BMC's id instead.
            let protocol_span = if b.protocol.span().is_empty() {
                b.id.span()
            } else {
                b.protocol.span()
            };
            let protocol = match b.protocol.get_ref().as_str() {
                "ipmi" if cfg!(feature = "ipmi") => Protocol::Ipmi,
                "ipmi" => {
                    let defaulted = if b.protocol.span().is_empty() {
                        " (protocol defaults to \"ipmi\")"
                    } else {
                        ""
                    };
                    return ctx.err(
                        protocol_span,
                        &field("protocol"),
                        format!(
                            "this agent was built without the ipmi feature{defaulted}; set \
                             protocol = \"redfish\" or \"auto\""
                        ),
                    );
                }
                "redfish" if cfg!(feature = "redfish") => Protocol::Redfish,
                "redfish" => {
                    return ctx.err(
                        b.protocol.span(),
                        &field("protocol"),
                        "this agent was built without the redfish feature",
                    )
                }
                "auto" => Protocol::Auto,
                other => {
                    return ctx.err(
                        b.protocol.span(),
                        &field("protocol"),
                        format!("{other:?}: expected ipmi, redfish or auto"),
                    )
                }
            };
            let ip: IpAddr = match b.address.get_ref().parse() {
                Ok(ip) => ip,
                Err(_) => return ctx.err(b.address.span(), &field("address"), "not an IP address"),
            };
            let port = b.port.unwrap_or(if protocol == Protocol::Redfish {
                443
            } else {
                623
            });
            let cipher_suite = match &b.cipher_suite {
                None => 3,
                Some(c) if matches!(c.get_ref(), 3 | 17) => *c.get_ref() as u8,
                Some(c) => {
                    return ctx.err(
                        c.span(),
                        &field("cipher_suite"),
                        "supported suites are 3 and 17",
                    )
                }
            };
            let privilege = match b.privilege.as_ref().map(|p| p.get_ref().as_str()) {
                None | Some("administrator") => 4,
                Some("operator") => 3,
                Some("user") => 2,
                Some(other) => {
                    let span = b.privilege.as_ref().map(|p| p.span()).unwrap_or(0..0);
                    return ctx.err(
                        span,
                        &field("privilege"),
                        format!("{other:?}: expected user, operator or administrator"),
                    );
                }
            };
            let password = ctx
                .secret(
                    &field("password"),
                    &b.password,
                    &b.password_file,
                    &b.password_env,
                )?
                .unwrap_or(Secret(String::new()));
            // IPMI's limits; Redfish accounts have none of these.
            let ipmi_limits = protocol != Protocol::Redfish;
            if ipmi_limits && password.expose().len() > 20 {
                return ctx.err(
                    b.id.span(),
                    &field("password"),
                    "IPMI passwords are at most 20 bytes",
                );
            }
            let redfish_port = match (protocol, b.redfish_port) {
                (Protocol::Auto, p) => p.unwrap_or(443),
                (_, Some(_)) => {
                    return ctx.err(
                        b.id.span(),
                        &field("redfish_port"),
                        "only applies to protocol = \"auto\"",
                    )
                }
                (_, None) => port,
            };
            let tls = if protocol == Protocol::Auto
                && b.scheme.is_none()
                && b.tls_ca_file.is_none()
                && b.insecure_skip_verify.is_none()
            {
                // Auto without TLS settings: fine as long as the BMC turns out to speak IPMI.
                RedfishTls::NotApplicable
            } else if protocol == Protocol::Ipmi {
                for (name, given) in [
                    ("scheme", b.scheme.as_ref().map(|s| s.span())),
                    ("tls_ca_file", b.tls_ca_file.as_ref().map(|s| s.span())),
                    (
                        "insecure_skip_verify",
                        b.insecure_skip_verify.as_ref().map(|s| s.span()),
                    ),
                ] {
                    if let Some(span) = given {
                        return ctx.err(
                            span,
                            &field(name),
                            "only applies to protocol = \"redfish\" or \"auto\"",
                        );
                    }
                }
                RedfishTls::NotApplicable
            } else {
                let insecure = b
                    .insecure_skip_verify
                    .as_ref()
                    .is_some_and(|v| *v.get_ref());
                match (b.scheme.as_ref().map(|s| s.get_ref().as_str()), &b.tls_ca_file, insecure) {
                    (Some("http"), None, false) => RedfishTls::PlainHttp,
                    (Some("http"), _, _) => {
                        let span = b.scheme.as_ref().map(|s| s.span()).unwrap_or(0..0);
                        return ctx.err(span, &field("scheme"), "http has no TLS settings to go with it");
                    }
                    (Some(other), _, _) if other != "https" => {
                        let span = b.scheme.as_ref().map(|s| s.span()).unwrap_or(0..0);
                        return ctx.err(span, &field("scheme"), format!("{other:?}: expected https or http"));
                    }
                    (_, Some(_), true) => {
                        let span = b.insecure_skip_verify.as_ref().map(|s| s.span()).unwrap_or(0..0);
                        return ctx.err(span, &field("insecure_skip_verify"), "give either tls_ca_file or insecure_skip_verify, not both");
                    }
                    (_, Some(ca), false) => {
                        let p = ctx.resolve(ca.get_ref());
                        match std::fs::read(&p) {
                            Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => RedfishTls::CaPem(pem),
                            Ok(_) => return ctx.err(ca.span(), &field("tls_ca_file"), format!("{}: no PEM certificate in it", p.display())),
                            Err(e) => return ctx.err(ca.span(), &field("tls_ca_file"), format!("{}: {e}", p.display())),
                        }
                    }
                    (_, None, true) => RedfishTls::Insecure,
                    (_, None, false) => {
                        return ctx.err(b.id.span(), &field("tls_ca_file"), "a Redfish BMC needs tls_ca_file (or an explicit insecure_skip_verify = true)")
                    }
                }
            };
            let username = b.username.clone().unwrap_or_default();
            if ipmi_limits && username.len() > 16 {
                return ctx.err(
                    b.id.span(),
                    &field("username"),
                    "IPMI user names are at most 16 bytes",
                );
            }
            let sol_instance = count(&ctx, &b.sol_instance, &field("sol_instance"), 1, 15)? as u8;
            let vnc_password = ctx.secret(
                &field("vnc_password"),
                &b.vnc_password,
                &b.vnc_password_file,
                &b.vnc_password_env,
            )?;
            bmcs.push(BmcConfig {
                sol_instance,
                vnc_port: b.vnc_port.unwrap_or(5900),
                vnc_password,
                id: id.to_owned(),
                addr: SocketAddr::new(ip, port),
                protocol,
                username,
                password,
                cipher_suite,
                privilege,
                tls,
                redfish_port,
            });
        }
        let d = &raw.discovery;
        let mut ranges = Vec::new();
        for r in &d.ranges {
            let Some(c) = Cidr::parse(r.get_ref()) else {
                return ctx.err(
                    r.span(),
                    "discovery.ranges",
                    format!("{:?} is not an IPv4 address or CIDR range", r.get_ref()),
                );
            };
            if c.len() > MAX_RANGE {
                return ctx.err(
                    r.span(),
                    "discovery.ranges",
                    format!("{:?} is larger than a /16", r.get_ref()),
                );
            }
            ranges.push(c);
        }
        let concurrency = count(&ctx, &d.concurrency, "discovery.concurrency", 64, 1024)?;
        let max_bmcs = count(&ctx, &d.max_bmcs, "discovery.max_bmcs", 1024, 65_536)?;
        let discovery = DiscoveryConfig {
            max_bmcs,
            ranges,
            ipmi_ports: d.ipmi_ports.clone().unwrap_or_else(|| vec![623]),
            redfish_ports: d.redfish_ports.clone().unwrap_or_else(|| vec![443]),
            interval: secs(&ctx, &d.interval_secs, "discovery.interval_secs", 300.0)?,
            probe_timeout: secs(
                &ctx,
                &d.probe_timeout_secs,
                "discovery.probe_timeout_secs",
                1.0,
            )?,
            concurrency,
        };
        let watchdog_device = a.watchdog_device.as_ref().map(|d| ctx.resolve(d.get_ref()));
        let watchdog_interval = secs(
            &ctx,
            &a.watchdog_interval_secs,
            "agent.watchdog_interval_secs",
            10.0,
        )?;
        let c = &raw.console;
        let defaults = ConsoleConfig::default();
        let vnc_tcp_bind = match &c.vnc_tcp_bind {
            None => defaults.vnc_tcp_bind,
            Some(a) => match a.get_ref().parse() {
                Ok(ip) => ip,
                Err(_) => return ctx.err(a.span(), "console.vnc_tcp_bind", "not an IP address"),
            },
        };
        let console = ConsoleConfig {
            sol_log_dir: c.sol_log_dir.as_ref().map(|d| ctx.resolve(d.get_ref())),
            sol_log_max_bytes: count(
                &ctx,
                &c.sol_log_max_bytes,
                "console.sol_log_max_bytes",
                defaults.sol_log_max_bytes as usize,
                1 << 40,
            )? as u64,
            sol_log_keep: count(&ctx, &c.sol_log_keep, "console.sol_log_keep", 3, 100)?,
            sol_reconnect_max: secs(
                &ctx,
                &c.sol_reconnect_max_secs,
                "console.sol_reconnect_max_secs",
                30.0,
            )?,
            vnc_connect_timeout: secs(
                &ctx,
                &c.vnc_connect_timeout_secs,
                "console.vnc_connect_timeout_secs",
                5.0,
            )?,
            vnc_tcp_bind,
            vnc_tcp_accept: secs(
                &ctx,
                &c.vnc_tcp_accept_secs,
                "console.vnc_tcp_accept_secs",
                30.0,
            )?,
            max_sessions: count(
                &ctx,
                &c.max_sessions,
                "console.max_sessions",
                defaults.max_sessions,
                MAX_CONSOLES as i64,
            )?,
            max_sessions_per_server: count(
                &ctx,
                &c.max_sessions_per_server,
                "console.max_sessions_per_server",
                defaults.max_sessions_per_server,
                MAX_CONSOLES as i64,
            )?,
        };
        Ok(Config {
            console,
            discovery,
            watchdog_device,
            watchdog_interval,
            path: path.to_owned(),
            api_token,
            poll_interval: secs(
                &ctx,
                &a.poll_interval_secs,
                "agent.poll_interval_secs",
                30.0,
            )?,
            operation_timeout: secs(
                &ctx,
                &a.operation_timeout_secs,
                "agent.operation_timeout_secs",
                5.0,
            )?,
            state_dir: match &a.state_dir {
                Some(d) => ctx.resolve(d.get_ref()),
                None => ctx.resolve("state"),
            },
            max_operations: count(
                &ctx,
                &a.max_operations,
                "agent.max_operations",
                64,
                MAX_OPERATIONS as i64,
            )?,
            max_operations_per_server: count(
                &ctx,
                &a.max_operations_per_server,
                "agent.max_operations_per_server",
                4,
                MAX_OPERATIONS as i64,
            )?,
            ipmi_exporter_endpoint: a.ipmi_exporter_endpoint.unwrap_or(false),
            uplink: match &raw.uplink {
                Some(u) => Some(uplink(&ctx, u)?),
                None => None,
            },
            bmcs,
        })
    }

    /// The BMC with `id`.
    pub fn bmc(&self, id: &str) -> Option<&BmcConfig> {
        self.bmcs.iter().find(|b| b.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/conduit/agent.toml"), text)
    }

    #[test]
    #[cfg(feature = "ipmi")] // IPMI BMCs (the default protocol)
    fn example_file_is_valid() {
        std::env::set_var("CONDUIT_EXAMPLE_BMC_PASSWORD", "password");
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/conduit-agent.example.toml"
        ));
        let c = Config::load(path).unwrap();
        assert!(!c.bmcs.is_empty());
        assert!(c.api_token.is_some());
    }

    #[test]
    fn gateway_urls() {
        let g = GatewayAddr::parse("wss://gw.example:9443").unwrap();
        assert_eq!((g.host.as_str(), g.port, g.tls), ("gw.example", 9443, true));
        let g = GatewayAddr::parse("ws://[::1]").unwrap();
        assert_eq!((g.host.as_str(), g.port, g.tls), ("::1", 8443, false));
        for bad in [
            "https://gw",
            "wss://",
            "wss://gw/path",
            "wss://u@gw",
            "wss://gw:0",
            "wss://gw:x",
        ] {
            assert!(GatewayAddr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    #[cfg(feature = "uplink")]
    fn uplinks_need_a_ca_and_tls_unless_told_otherwise() {
        let with = |body: &str| parse(&format!("[uplink]\ncredential = \"cag_a_b\"\n{body}"));
        let e = with("gateways = [\"wss://gw:8443\"]").unwrap_err();
        assert!(e.0.contains("line 3: uplink.ca_file"), "{}", e.0);
        let e = with("gateways = [\"ws://gw:8443\"]").unwrap_err();
        assert!(e.0.contains("is plaintext"), "{}", e.0);
        let e = with("gateways = []").unwrap_err();
        assert!(e.0.contains("1 to 16"), "{}", e.0);
        let ok = with("gateways = [\"ws://gw:8443\"]\nplaintext = true").unwrap();
        let u = ok.uplink.unwrap();
        assert_eq!(u.gateways.len(), 1);
        assert_eq!(u.credential.expose(), "cag_a_b");
        let e = parse("[uplink]\ngateways = [\"ws://gw\"]\nplaintext = true\n").unwrap_err();
        assert!(e.0.contains("credential"), "{}", e.0);
    }

    #[test]
    fn cidr_ranges() {
        let c = Cidr::parse("10.1.2.77/29").unwrap();
        assert_eq!(c.network, std::net::Ipv4Addr::new(10, 1, 2, 72));
        assert_eq!(c.len(), 8);
        let all: Vec<_> = c.addresses().collect();
        assert_eq!(all.first(), Some(&std::net::Ipv4Addr::new(10, 1, 2, 72)));
        assert_eq!(all.last(), Some(&std::net::Ipv4Addr::new(10, 1, 2, 79)));
        assert!(
            c.contains("10.1.2.79".parse().unwrap()) && !c.contains("10.1.2.80".parse().unwrap())
        );
        assert_eq!(Cidr::parse("10.0.0.1").unwrap().len(), 1);
        assert!(Cidr::parse("10.0.0.0/33").is_none() && Cidr::parse("::1/128").is_none());
    }

    #[test]
    #[cfg(feature = "ipmi")] // IPMI BMCs (the default protocol)
    fn defaults() {
        let c = parse("[[bmc]]\nid = \"n1\"\naddress = \"10.0.0.7\"\nusername = \"admin\"\npassword = \"pw\"\n").unwrap();
        let b = &c.bmcs[0];
        assert_eq!(b.addr, "10.0.0.7:623".parse().unwrap());
        assert_eq!(
            (b.protocol, b.cipher_suite, b.privilege),
            (Protocol::Ipmi, 3, 4)
        );
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert!(c.api_token.is_none());
        assert_eq!(format!("{:?}", b.password), "<redacted>");
    }

    #[test]
    #[cfg(not(feature = "ipmi"))]
    fn a_redfish_only_agent_refuses_ipmi_bmcs_at_their_line() {
        let e = parse("[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "line 2: bmc[0].protocol: this agent was built without the ipmi feature \
                 (protocol defaults to \"ipmi\")"
            ),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let cases = [
            ("[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\ncipher_suite = 5\n", "line 4: bmc[0].cipher_suite: supported suites are 3 and 17"),
            ("[[bmc]]\nid = \"a\"\naddress = \"nope\"\n", "line 3: bmc[0].address: not an IP address"),
            ("[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\n[[bmc]]\nid = \"a\"\naddress = \"10.0.0.2\"\n", "line 5: bmc[1].id: duplicate id"),
            ("[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\nprotocol = \"snmp\"\n", "line 4: bmc[0].protocol"),
            ("[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\nredfish_port = 8443\n", "line 2: bmc[0].redfish_port: only applies to protocol = \"auto\""),
            ("[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\ninsecure_skip_verify = true\n", "line 4: bmc[0].insecure_skip_verify: only applies"),
            ("[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\nprotocol = \"auto\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n", "line 5: bmc[0].tls_ca_file: /nonexistent/ca.pem"),
            ("[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\ncolour = 1\n", "line 4: unknown field `colour`"),
            ("[agent]\napi_token = \"short\"\n", "line 2: agent.api_token: must be at least 16"),
            ("[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\npassword_env = \"CONDUIT_SURELY_UNSET\"\n", "line 4: bmc[0].password_env: environment variable"),
            ("[[bmc]]\nid = \"a b\"\naddress = \"10.0.0.1\"\n", "line 2: bmc[0].id"),
            ("[discovery]\nranges = [\"10.0.0.0/24\", \"10.0.0.0/8\"]\n", "line 2: discovery.ranges: \"10.0.0.0/8\" is larger than a /16"),
            ("[discovery]\nranges = [\"10.0.0.300/24\"]\n", "line 2: discovery.ranges"),
        ];
        let redfish: &[(&str, &str)] = if cfg!(feature = "redfish") {
            &[
                ("[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\nprotocol = \"redfish\"\n", "line 2: bmc[0].tls_ca_file: a Redfish BMC needs"),
                ("[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\nprotocol = \"redfish\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n", "line 5: bmc[0].tls_ca_file: /nonexistent/ca.pem"),
            ]
        } else {
            &[(
                "[[bmc]]\nid = \"a\"\naddress = \"10.0.0.1\"\nprotocol = \"redfish\"\n",
                "line 4: bmc[0].protocol: this agent was built without the redfish feature",
            )]
        };
        // Without IPMI, BMCs of the default protocol fail on that first (tested above).
        let speaks_default = |t: &&(&str, &str)| {
            cfg!(feature = "ipmi") || !t.0.contains("[[bmc]]") || t.0.contains("protocol = ")
        };
        for (text, want) in cases.iter().filter(speaks_default).chain(redfish) {
            let err = parse(text).unwrap_err().0;
            assert!(err.starts_with("/etc/conduit/agent.toml: "), "{err}");
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }
}
