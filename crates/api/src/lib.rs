//! Messages between Conduit components and their clients (Connect JSON: lowerCamelCase field
//! names). One definition, used by the server that answers and the client that asks.

/// `conduit.agent.v1.BmcService`: the agent's BMC API.
pub mod agent {
    use serde::{Deserialize, Serialize};

    /// The service name.
    pub const BMC_SERVICE: &str = "conduit.agent.v1.BmcService";

    /// ListServers request.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ListServersRequest {}

    /// One BMC of the inventory, with its last polled state.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Server {
        /// Server id.
        pub server_id: String,
        /// BMC address, `host:port`.
        pub address: String,
        /// `ipmi` or `redfish`.
        pub bmc_type: String,
        /// Whether the last poll succeeded; absent before the first poll.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        pub up: Option<bool>,
        /// Power state at the last successful poll (`on`/`off`).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        pub power: Option<String>,
    }

    /// ListServers response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListServersResponse {
        /// The inventory.
        pub servers: Vec<Server>,
    }

    /// SetBootDevice request: override the boot device.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct SetBootDeviceRequest {
        /// Server id.
        pub server_id: String,
        /// `pxe`, `disk`, `cdrom` or `bios`.
        pub device: String,
        /// Every boot until changed; the next boot only when false (the default).
        #[serde(default)]
        pub persistent: bool,
    }

    /// SetBootDevice and GetBootDevice response: the override the BMC holds.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct BootDeviceResponse {
        /// Server id.
        pub server_id: String,
        /// `none`, `pxe`, `disk`, `cdrom`, `bios` or `other`.
        pub device: String,
        /// Every boot until changed.
        pub persistent: bool,
    }

    /// One event of a BMC's event log.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct LogEvent {
        /// The entry's id on the BMC.
        pub id: String,
        /// When it was logged (Unix seconds), if the BMC says.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        pub time: Option<f64>,
        /// Which sensor.
        pub sensor: String,
        /// What happened.
        pub event: String,
        /// `info`, `warning`, `critical` or `unknown`.
        pub severity: String,
    }

    /// GetEventLog response.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct EventLogResponse {
        /// Server id.
        pub server_id: String,
        /// The entries.
        pub events: Vec<LogEvent>,
        /// False when a bound on entries cut the read short.
        pub complete: bool,
    }

    /// ClearEventLog response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ClearEventLogResponse {
        /// Server id.
        pub server_id: String,
    }

    /// CreateConsoleTicket request: a one-time ticket to open one console.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct CreateConsoleTicketRequest {
        /// Server id.
        pub server_id: String,
        /// `sol` or `vnc`.
        pub console: String,
    }

    /// CreateConsoleTicket response.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CreateConsoleTicketResponse {
        /// The ticket: valid once, for this console only.
        pub ticket: String,
        /// Seconds the ticket stays valid.
        pub expires_in_secs: f64,
        /// The console's path with the ticket (`/console/sol/n1?ticket=…`): open it as a
        /// WebSocket.
        pub path: String,
    }

    /// A request naming one server (GetServer, PowerStatus).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ServerRequest {
        /// Server id.
        pub server_id: String,
    }

    /// GetServer response: the server and its BMC's identity (live Get Device ID).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct GetServerResponse {
        /// The server.
        pub server: Server,
        /// Manufacturer: a name (Redfish) or `IANA <enterprise number>` (IPMI).
        pub manufacturer: String,
        /// Product: a model name (Redfish) or the IPMI product id.
        pub product: String,
        /// Firmware revision.
        pub firmware: String,
    }

    /// PowerStatus response (a live query of the BMC).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PowerStatusResponse {
        /// Server id.
        pub server_id: String,
        /// `on` or `off`.
        pub power: String,
    }

    /// PowerAction request.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct PowerActionRequest {
        /// Server id.
        pub server_id: String,
        /// `on`, `off`, `cycle`, `reset` or `soft`.
        pub action: String,
    }

    /// PowerAction response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PowerActionResponse {
        /// Server id.
        pub server_id: String,
        /// The action done.
        pub action: String,
    }

    /// One sensor reading.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Sensor {
        /// Sensor name as the BMC reports it.
        pub name: String,
        /// Reading; absent when the BMC reports it unavailable.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        pub value: Option<f64>,
        /// Unit, e.g. `celsius`, `rpm`.
        pub unit: String,
        /// `ok`, `non_critical`, `critical`, `non_recoverable` or `unavailable`.
        pub state: String,
    }

    /// GetSensors response (a live read of the BMC).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct GetSensorsResponse {
        /// Server id.
        pub server_id: String,
        /// Threshold sensors of the BMC's SDR repository.
        pub sensors: Vec<Sensor>,
    }

    /// A BMC found by discovery.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct DiscoveredBmc {
        /// IP address.
        pub address: String,
        /// `ipmi`, `redfish` or `both`.
        pub bmc_type: String,
        /// UDP port that answered the presence ping.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        pub ipmi_port: Option<u16>,
        /// TCP port that served `/redfish/v1`.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        pub redfish_port: Option<u16>,
        /// Vendor, or `unknown`.
        pub vendor: String,
    }

    /// ListDiscovered response: the last discovery cycle's findings.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListDiscoveredResponse {
        /// BMCs found in the configured ranges.
        pub bmcs: Vec<DiscoveredBmc>,
    }
}
