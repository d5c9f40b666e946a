//! The agent's uplink to its gateway: JSON messages, one per WebSocket text message, on a
//! connection the agent dials out (`wss://gateway/uplink`, subprotocol [`SUBPROTOCOL`]).
//!
//! The conversation: the agent sends [`Register`] first; the gateway answers `registered`
//! (with the heartbeat interval it wants) or `refused` (with a reason the agent logs) and
//! closes. Then the agent heartbeats, sends `servers` when its inventory changes, and answers
//! every `request` with one `response` of the same id. Requests carry the agent API's own
//! request bodies ([`crate::agent`]) and responses its answers, so an operation means the same
//! through a gateway as at the agent.
//!
//! Consoles: the gateway asks for one with an `OpenConsole` request naming a random stream
//! id; the agent dials a data connection of its own to the gateway (`STREAM_PATH` + the id,
//! upgraded to a raw byte stream), answers with the path of its console endpoint (carrying a
//! one-time ticket), and splices that connection to the endpoint. The gateway then opens the
//! console's WebSocket over the data connection and splices its viewer to it: console bytes
//! never share the control link, so a busy VNC stream cannot delay an operation.
//!
//! Versions: [`VERSION`]. A minor version only adds optional fields and methods (readers ignore
//! unknown fields, and answer an unknown method `unimplemented`); a gateway refuses an agent
//! of another major version, reading only the `version` field to say so.

use serde::{Deserialize, Serialize};

/// The WebSocket subprotocol both ends name.
pub const SUBPROTOCOL: &str = "conduit.uplink.v1";
/// The path agents dial.
pub const PATH: &str = "/uplink";
/// This build's uplink protocol version (1.1: consoles).
pub const VERSION: Version = Version { major: 1, minor: 1 };
/// Where an agent dials a console's data connection: this, then the stream id.
pub const STREAM_PATH: &str = "/uplink/stream/";
/// The `Upgrade` token of a data connection (a raw byte stream after the 101).
pub const STREAM_UPGRADE: &str = "conduit-stream";
/// Largest message either end accepts (a big BMC's event log fits many times over).
pub const MAX_MESSAGE: usize = 4 << 20;
/// Largest registration a gateway accepts: it arrives before the agent has authenticated, so
/// it is held to what [`MAX_SERVERS`] entries need.
pub const MAX_REGISTRATION: usize = 1 << 20;
/// Most servers one agent may register (a rack appliance serves tens; each entry is at most
/// about 160 bytes of JSON, so a full list fits [`MAX_REGISTRATION`]).
pub const MAX_SERVERS: usize = 4096;

/// A protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Incompatible changes.
    pub major: u32,
    /// Compatible additions.
    pub minor: u32,
}

/// What an agent can do with one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Power status and actions.
    Power,
    /// Sensor readings.
    Sensors,
    /// The boot device override.
    Boot,
    /// The event log (read, clear).
    EventLog,
    /// Serial over LAN.
    Sol,
    /// The graphical console.
    Vnc,
}

impl Capability {
    /// The word the manager stores (`power`, `sensors`, `boot`, `event_log`, `sol`, `vnc`).
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Power => "power",
            Capability::Sensors => "sensors",
            Capability::Boot => "boot",
            Capability::EventLog => "event_log",
            Capability::Sol => "sol",
            Capability::Vnc => "vnc",
        }
    }
}

/// One server an agent reaches: never a BMC address or credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerEntry {
    /// Server id.
    pub server_id: String,
    /// `ipmi` or `redfish`.
    pub protocol: String,
    /// What the agent offers for it.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
}

/// The agent's first message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Register {
    /// The agent's uplink protocol version.
    pub version: Version,
    /// The credential the manager issued it (`cag_…`).
    pub credential: String,
    /// The agent's own version.
    #[serde(default)]
    pub agent_version: String,
    /// The datacenter it serves (as configured; the credential's record decides).
    #[serde(default)]
    pub datacenter: String,
    /// Its servers.
    #[serde(default)]
    pub servers: Vec<ServerEntry>,
}

impl std::fmt::Debug for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Register")
            .field("version", &self.version)
            .field("credential", &"<redacted>")
            .field("agent_version", &self.agent_version)
            .field("datacenter", &self.datacenter)
            .field("servers", &self.servers.len())
            .finish()
    }
}

/// Messages from the agent (decoded with [`AgentMessage::decode`]).
#[derive(Debug, Clone, Serialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum AgentMessage {
    /// First message: who the agent is and what it serves.
    Register(Register),
    /// Still here.
    Heartbeat {
        /// Counts up from 1 on each connection.
        seq: u64,
    },
    /// The inventory changed: the whole list, replacing the last.
    Servers {
        /// Every server the agent serves now.
        servers: Vec<ServerEntry>,
    },
    /// The answer to one request.
    Response(Reply),
}

/// Why a gateway refused an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Unknown, revoked or wrong credential, or the credential belongs to another datacenter.
    Unauthenticated,
    /// Another major protocol version.
    Version,
    /// The first message was not a valid registration.
    Malformed,
    /// The gateway cannot check credentials now (no manager, nothing cached): retry later.
    Unavailable,
}

impl Refusal {
    /// The wire word, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Version => "version",
            Refusal::Malformed => "malformed",
            Refusal::Unavailable => "unavailable",
        }
    }
}

/// The operations a gateway asks an agent for (the agent API's methods of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// `ServerRequest` → `GetServerResponse`.
    GetServer,
    /// `ServerRequest` → `PowerStatusResponse`.
    PowerStatus,
    /// `PowerActionRequest` → `PowerActionResponse`.
    PowerAction,
    /// `ServerRequest` → `GetSensorsResponse`.
    GetSensors,
    /// `ServerRequest` → `BootDeviceResponse`.
    GetBootDevice,
    /// `SetBootDeviceRequest` → `BootDeviceResponse`.
    SetBootDevice,
    /// `ServerRequest` → `EventLogResponse`.
    GetEventLog,
    /// `ServerRequest` → `ClearEventLogResponse`.
    ClearEventLog,
    /// [`OpenConsole`] → [`ConsoleOpened`] (since 1.1).
    OpenConsole,
    /// A method of a later minor version: answered `unimplemented`.
    #[serde(other)]
    Unknown,
}

impl Method {
    /// The method's name (RPC metric labels, audit).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::GetServer => "GetServer",
            Method::PowerStatus => "PowerStatus",
            Method::PowerAction => "PowerAction",
            Method::GetSensors => "GetSensors",
            Method::GetBootDevice => "GetBootDevice",
            Method::SetBootDevice => "SetBootDevice",
            Method::GetEventLog => "GetEventLog",
            Method::ClearEventLog => "ClearEventLog",
            Method::OpenConsole => "OpenConsole",
            Method::Unknown => "unknown",
        }
    }

    /// Whether it changes the server (never re-sent by a gateway on its own).
    pub fn changes_state(self) -> bool {
        matches!(
            self,
            Method::PowerAction | Method::SetBootDevice | Method::ClearEventLog
        )
    }
}

/// A console the gateway asks an agent to open for one viewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenConsole {
    /// Server id.
    pub server_id: String,
    /// `sol` or `vnc`.
    pub console: String,
    /// The data connection's id: 32 random bytes, base64url (43 characters), known only to
    /// the two ends.
    pub stream: String,
    /// The viewer only watches (a SOL viewer that never holds the keyboard).
    #[serde(default)]
    pub watch: bool,
    /// The viewer takes the keyboard on arrival.
    #[serde(default)]
    pub takeover: bool,
}

/// The agent's answer: its data connection is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleOpened {
    /// The agent's console path, with its one-time ticket, to open over the data connection.
    pub path: String,
}

/// Whether `s` has the shape of a stream id (43 base64url characters: 32 bytes).
pub fn valid_stream_id(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One operation the gateway asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// Unique on this connection; the response carries it back.
    pub id: u64,
    /// What to do.
    pub method: Method,
    /// The agent API's request body for `method`, as JSON text (carried unparsed).
    pub body: Box<serde_json::value::RawValue>,
}

/// Messages from the gateway (decoded with [`GatewayMessage::decode`]).
#[derive(Debug, Clone, Serialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum GatewayMessage {
    /// The registration is accepted.
    Registered {
        /// The agent's id, from its credential's record.
        agent_id: String,
        /// Heartbeat this often (the agent adds jitter).
        heartbeat_secs: u64,
    },
    /// The registration is refused; the gateway closes the connection next.
    Refused {
        /// Why, as a word.
        reason: Refusal,
        /// Why, for a person.
        message: String,
    },
    /// A heartbeat arrived.
    HeartbeatAck {
        /// The heartbeat's `seq`.
        seq: u64,
    },
    /// Run an operation.
    Request(Call),
}

/// The answer to a [`Call`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    /// The call's id.
    pub id: u64,
    /// The agent API's response body, on success, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<serde_json::value::RawValue>>,
    /// The Connect error, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ReplyError>,
}

/// A failed call: a Connect code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError {
    /// Connect code (`not_found`, `unavailable`, `deadline_exceeded`, …).
    pub code: String,
    /// For a person.
    pub message: String,
}

// Decoding: the `type` first, then the variant's own struct from the same text. (serde's
// internally tagged enums buffer the whole message into an intermediate tree, which costs code
// size on the appliance and cannot carry the raw JSON bodies.)

#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Seq {
    seq: u64,
}

#[derive(Deserialize)]
struct Servers {
    servers: Vec<ServerEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registered {
    agent_id: String,
    heartbeat_secs: u64,
}

#[derive(Deserialize)]
struct Refused {
    reason: Refusal,
    message: String,
}

fn unknown_type(kind: &str) -> serde_json::Error {
    serde::de::Error::custom(format_args!("unknown message type {kind:?}"))
}

impl AgentMessage {
    /// Decodes one message from the agent.
    pub fn decode(text: &[u8]) -> Result<AgentMessage, serde_json::Error> {
        let Kind { kind } = serde_json::from_slice(text)?;
        Ok(match kind.as_str() {
            "register" => AgentMessage::Register(serde_json::from_slice(text)?),
            "heartbeat" => AgentMessage::Heartbeat {
                seq: serde_json::from_slice::<Seq>(text)?.seq,
            },
            "servers" => AgentMessage::Servers {
                servers: serde_json::from_slice::<Servers>(text)?.servers,
            },
            "response" => AgentMessage::Response(serde_json::from_slice(text)?),
            other => return Err(unknown_type(other)),
        })
    }
}

impl GatewayMessage {
    /// Decodes one message from the gateway.
    pub fn decode(text: &[u8]) -> Result<GatewayMessage, serde_json::Error> {
        let Kind { kind } = serde_json::from_slice(text)?;
        Ok(match kind.as_str() {
            "registered" => {
                let r: Registered = serde_json::from_slice(text)?;
                GatewayMessage::Registered {
                    agent_id: r.agent_id,
                    heartbeat_secs: r.heartbeat_secs,
                }
            }
            "refused" => {
                let r: Refused = serde_json::from_slice(text)?;
                GatewayMessage::Refused {
                    reason: r.reason,
                    message: r.message,
                }
            }
            "heartbeat_ack" => GatewayMessage::HeartbeatAck {
                seq: serde_json::from_slice::<Seq>(text)?.seq,
            },
            "request" => GatewayMessage::Request(serde_json::from_slice(text)?),
            other => return Err(unknown_type(other)),
        })
    }
}

/// Reads only the version of a registration, so that another major version is refused as
/// such even when the rest of its message has changed shape.
pub fn registration_version(message: &[u8]) -> Option<Version> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: String,
        version: Version,
    }
    serde_json::from_slice::<Probe>(message)
        .ok()
        .filter(|p| p.kind == "register")
        .map(|p| p.version)
}

/// Checks a registration's contents: ids, protocol words and the list's size.
pub fn check_servers(servers: &[ServerEntry]) -> Result<(), String> {
    if servers.len() > MAX_SERVERS {
        return Err(format!("at most {MAX_SERVERS} servers"));
    }
    for s in servers {
        if !crate::valid_id(&s.server_id) {
            return Err("serverId: 1–64 of letters, digits and . - _ :".into());
        }
        if s.protocol != "ipmi" && s.protocol != "redfish" {
            return Err(format!(
                "server {}: protocol must be ipmi or redfish",
                s.server_id
            ));
        }
    }
    let mut ids: Vec<&str> = servers.iter().map(|s| s.server_id.as_str()).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("server {} listed twice", w[0]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_valid_registration_fits_the_first_message_limit() {
        let servers = (0..MAX_SERVERS)
            .map(|i| ServerEntry {
                server_id: format!("{i:0>64}"),
                protocol: "redfish".into(),
                capabilities: vec![
                    Capability::Power,
                    Capability::Sensors,
                    Capability::Boot,
                    Capability::EventLog,
                    Capability::Sol,
                    Capability::Vnc,
                ],
            })
            .collect::<Vec<_>>();
        assert_eq!(check_servers(&servers), Ok(()));
        let reg = AgentMessage::Register(Register {
            version: VERSION,
            credential: format!("cag_{}", "x".repeat(100)),
            agent_version: "v".repeat(64),
            datacenter: "d".repeat(64),
            servers,
        });
        let len = serde_json::to_vec(&reg).unwrap().len();
        assert!(len <= MAX_REGISTRATION, "{len} bytes");
    }

    #[test]
    fn messages_round_trip_in_their_wire_shape() {
        let m = AgentMessage::Heartbeat { seq: 3 };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"heartbeat","seq":3}"#
        );
        let call = GatewayMessage::decode(
            br#"{"type":"request","id":7,"method":"PowerAction","body":{"serverId":"s1","action":"on"},"later":1}"#,
        )
        .unwrap();
        let GatewayMessage::Request(c) = call else {
            panic!("not a request")
        };
        assert_eq!((c.id, c.method), (7, Method::PowerAction));
        assert_eq!(c.body.get(), r#"{"serverId":"s1","action":"on"}"#);
        assert!(c.method.changes_state());
        // what one end encodes the other decodes
        let again = serde_json::to_vec(&GatewayMessage::Request(c)).unwrap();
        assert!(matches!(
            GatewayMessage::decode(&again),
            Ok(GatewayMessage::Request(_))
        ));
        let reg = serde_json::to_vec(&GatewayMessage::Registered {
            agent_id: "a".into(),
            heartbeat_secs: 10,
        })
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&reg).unwrap(),
            r#"{"type":"registered","agentId":"a","heartbeatSecs":10}"#
        );
        assert!(matches!(
            GatewayMessage::decode(&reg),
            Ok(GatewayMessage::Registered {
                heartbeat_secs: 10,
                ..
            })
        ));
        assert!(AgentMessage::decode(br#"{"type":"nope"}"#).is_err());
        assert!(AgentMessage::decode(br#"{"seq":1}"#).is_err());
        assert!(matches!(
            AgentMessage::decode(br#"{"type":"heartbeat","seq":2}"#),
            Ok(AgentMessage::Heartbeat { seq: 2 })
        ));
        let later: Call = serde_json::from_str(r#"{"id":1,"method":"Reboot2","body":{}}"#).unwrap();
        assert_eq!(later.method, Method::Unknown);
    }

    #[test]
    fn the_version_is_read_even_from_another_major_shape() {
        let v2 = br#"{"type":"register","version":{"major":2,"minor":0},"identity":{"x":1}}"#;
        assert_eq!(
            registration_version(v2),
            Some(Version { major: 2, minor: 0 })
        );
        assert!(AgentMessage::decode(v2).is_err());
        assert_eq!(
            registration_version(br#"{"type":"heartbeat","seq":1}"#),
            None
        );
        assert_eq!(registration_version(b"\xff"), None);
    }

    #[test]
    fn server_lists_are_checked() {
        let s = |id: &str, p: &str| ServerEntry {
            server_id: id.into(),
            protocol: p.into(),
            capabilities: vec![Capability::Power],
        };
        assert!(check_servers(&[s("a", "ipmi"), s("b", "redfish")]).is_ok());
        assert!(check_servers(&[s("a", "ipmi"), s("a", "ipmi")]).is_err());
        assert!(check_servers(&[s("a b", "ipmi")]).is_err());
        assert!(check_servers(&[s("a", "snmp")]).is_err());
    }

    #[test]
    fn a_registration_never_prints_its_credential() {
        let r = Register {
            version: VERSION,
            credential: "cag_x_secret".into(),
            agent_version: String::new(),
            datacenter: String::new(),
            servers: vec![],
        };
        assert!(!format!("{r:?}").contains("secret"));
    }
}
