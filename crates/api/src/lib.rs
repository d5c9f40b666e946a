//! Messages between Conduit components and their clients (Connect JSON: lowerCamelCase field
//! names). One definition, used by the server that answers and the client that asks.

pub mod uplink;

/// Whether `v` is a valid id of a server, customer, gateway or agent: 1–64 of ASCII letters,
/// digits and `. - _ :` (ids appear in metric labels and paths, so nothing else).
pub fn valid_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

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

/// `conduit.manager.v1.*`: the manager's identity, tenancy, inventory and audit API.
///
/// Requests refuse unknown fields; text fields travel verbatim.
pub mod manager {
    use serde::{Deserialize, Serialize};

    /// `AuthService`: Login, Refresh, Logout, WhoAmI.
    pub const AUTH_SERVICE: &str = "conduit.manager.v1.AuthService";
    /// `ServerService`: List, Get, Locate, Create, Update, Delete, Assign.
    pub const SERVER_SERVICE: &str = "conduit.manager.v1.ServerService";
    /// `CustomerService`: Create, List, Get.
    pub const CUSTOMER_SERVICE: &str = "conduit.manager.v1.CustomerService";
    /// `UserService`: Create, List, Get, Update, Delete, SetPassword.
    pub const USER_SERVICE: &str = "conduit.manager.v1.UserService";
    /// `ApiKeyService`: Create, List, Revoke.
    pub const API_KEY_SERVICE: &str = "conduit.manager.v1.ApiKeyService";
    /// `AuditService`: List.
    pub const AUDIT_SERVICE: &str = "conduit.manager.v1.AuditService";

    /// Login: e-mail and password, or an API key.
    #[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct LoginRequest {
        /// E-mail (with `password`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub email: Option<String>,
        /// Password (with `email`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub password: Option<String>,
        /// An API key instead of e-mail and password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub api_key: Option<String>,
    }

    /// Login and Refresh response.
    #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TokenResponse {
        /// The access token (a JWT, `Authorization: Bearer …`).
        pub access_token: String,
        /// Seconds until the access token expires.
        pub expires_in: u64,
        /// The refresh token (opaque, one use); absent for API-key logins.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub refresh_token: Option<String>,
        /// Who logged in.
        pub user: UserInfo,
    }

    /// Refresh: a refresh token for a new pair.
    #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct RefreshRequest {
        /// The refresh token from Login or the last Refresh.
        pub refresh_token: String,
    }

    /// An empty message (Logout, WhoAmI requests; Logout, Delete responses).
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Empty {}

    /// A user as the API shows it (never its password hash).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct UserInfo {
        /// Id.
        pub user_id: String,
        /// E-mail.
        pub email: String,
        /// Display name.
        pub name: String,
        /// `admin`, `operator` or `viewer`.
        pub role: String,
        /// The customer of an operator or viewer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub customer_id: Option<String>,
        /// Disabled: logs in with nothing (shown only when true).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pub disabled: bool,
    }

    /// A server as the API shows it: inventory only, never BMC credentials.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Server {
        /// Id.
        pub server_id: String,
        /// Display name.
        pub name: String,
        /// Datacenter.
        pub datacenter: String,
        /// The agent reaching it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub agent_id: Option<String>,
        /// `ipmi` or `redfish`.
        pub protocol: String,
        /// `power`, `sensors`, `boot`, `event_log`, `sol`, `vnc`.
        pub capabilities: Vec<String>,
        /// Owning customer; absent while unassigned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub customer_id: Option<String>,
        /// `active`, `maintenance` or `offline`.
        pub status: String,
    }

    /// ServerService.List: a page of the servers the caller may see.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ListServersRequest {
        /// Rows per page (default 100, at most 1000).
        #[serde(default)]
        pub page_size: u32,
        /// `nextPageToken` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub page_token: Option<String>,
        /// Only this customer's (admins; others always see their own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub customer_id: Option<String>,
        /// Only unassigned servers (admins).
        #[serde(default)]
        pub unassigned: bool,
        /// Only this datacenter's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub datacenter: Option<String>,
        /// Only this status.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub status: Option<String>,
    }

    /// ServerService.List response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListServersResponse {
        /// The page.
        pub servers: Vec<Server>,
        /// Pass as `pageToken` for the next page; absent on the last.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub next_page_token: Option<String>,
    }

    /// A request naming one server (Get, Delete).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ServerRef {
        /// Server id.
        pub server_id: String,
    }

    /// ServerService.Locate response: the gateway through which the server is reached now
    /// (its agent's uplink). Refused with `unavailable` while its agent is not connected to an
    /// up gateway.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ServerLocation {
        /// Server id.
        pub server_id: String,
        /// The agent reaching it.
        pub agent_id: String,
        /// The gateway that agent is connected to.
        pub gateway_id: String,
        /// Where users reach that gateway (`http://host:port` or `https://host:port`).
        pub gateway_address: String,
    }

    /// ServerService.Create (admins).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct CreateServerRequest {
        /// Id (the agent's server id): letters, digits, `.-_:`, at most 64.
        pub server_id: String,
        /// Display name (default: the id).
        #[serde(default)]
        pub name: String,
        /// Datacenter.
        pub datacenter: String,
        /// `ipmi` or `redfish`.
        pub protocol: String,
        /// Capabilities.
        #[serde(default)]
        pub capabilities: Vec<String>,
        /// The agent reaching it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub agent_id: Option<String>,
        /// Owning customer (default: unassigned).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub customer_id: Option<String>,
    }

    /// ServerService.Update (admins): the fields given change.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct UpdateServerRequest {
        /// Server id.
        pub server_id: String,
        /// New display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
        /// New status.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub status: Option<String>,
        /// New capabilities.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub capabilities: Option<Vec<String>>,
        /// New agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub agent_id: Option<String>,
    }

    /// ServerService.Assign (admins): give a server to a customer, or take it back.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct AssignServerRequest {
        /// Server id.
        pub server_id: String,
        /// The new owner; absent or empty to unassign.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub customer_id: Option<String>,
    }

    /// A customer.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Customer {
        /// Id.
        pub customer_id: String,
        /// Name, verbatim.
        pub name: String,
    }

    /// CustomerService.Create (admins).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct CreateCustomerRequest {
        /// Name, verbatim (1–200 characters).
        pub name: String,
    }

    /// A request naming one customer.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct CustomerRef {
        /// Customer id.
        pub customer_id: String,
    }

    /// A page request for lists without filters.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct PageRequest {
        /// Rows per page (default 100, at most 1000).
        #[serde(default)]
        pub page_size: u32,
        /// `nextPageToken` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub page_token: Option<String>,
    }

    /// CustomerService.List response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListCustomersResponse {
        /// The page.
        pub customers: Vec<Customer>,
        /// Next page, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub next_page_token: Option<String>,
    }

    /// UserService.Create (admins).
    #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct CreateUserRequest {
        /// E-mail (unique, any case).
        pub email: String,
        /// Display name, verbatim.
        #[serde(default)]
        pub name: String,
        /// Initial password (12–1024 bytes).
        pub password: String,
        /// `admin`, `operator` or `viewer`.
        pub role: String,
        /// The customer of an operator or viewer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub customer_id: Option<String>,
    }

    /// UserService.List request: a page, all users or one customer's.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ListUsersRequest {
        /// Rows per page (default 100, at most 1000).
        #[serde(default)]
        pub page_size: u32,
        /// `nextPageToken` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub page_token: Option<String>,
        /// Only this customer's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub customer_id: Option<String>,
    }

    /// UserService.List response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListUsersResponse {
        /// The page.
        pub users: Vec<UserInfo>,
        /// Next page, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub next_page_token: Option<String>,
    }

    /// UserService.Update (admins): what is given changes, the rest stays. A change of role,
    /// customer or standing ends the user's access tokens (they refresh into the new rights;
    /// a disabled user cannot).
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct UpdateUserRequest {
        /// User id.
        pub user_id: String,
        /// Display name, verbatim.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
        /// `admin`, `operator` or `viewer` (with `customerId` unless admin).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub role: Option<String>,
        /// The customer of an operator or viewer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub customer_id: Option<String>,
        /// Disable (true) or enable (false) the account.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub disabled: Option<bool>,
    }

    /// UserService.SetPassword: one's own (with the current password) or, for admins,
    /// anyone's. Every session of the user ends: they log in again with the new one.
    #[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct SetPasswordRequest {
        /// Whose (default: the caller's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub user_id: Option<String>,
        /// The current password: required for one's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub current_password: Option<String>,
        /// The new password (12–1024 bytes).
        pub new_password: String,
    }

    /// A request naming one user.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct UserRef {
        /// User id.
        pub user_id: String,
    }

    /// ApiKeyService.Create: a key for the caller, acting with at most the caller's role.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct CreateApiKeyRequest {
        /// Label, verbatim.
        pub name: String,
        /// Role (default: the caller's); never above the caller's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub role: Option<String>,
        /// The customer an operator or viewer key acts for (admins only; others' keys act
        /// for their own customer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub customer_id: Option<String>,
    }

    /// An API key's public part.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ApiKeyInfo {
        /// Key id (the middle part of the key).
        pub key_id: String,
        /// Label.
        pub name: String,
        /// Role it acts with.
        pub role: String,
        /// Customer it acts for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub customer_id: Option<String>,
        /// Created, unix seconds.
        pub created_at: i64,
        /// Whether it was revoked.
        pub revoked: bool,
    }

    /// ApiKeyService.Create response: the key, shown this once.
    #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CreateApiKeyResponse {
        /// The whole key; it is stored hashed and cannot be shown again.
        pub api_key: String,
        /// Its public part.
        pub key: ApiKeyInfo,
    }

    /// ApiKeyService.List response: the caller's keys.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListApiKeysResponse {
        /// The keys.
        pub keys: Vec<ApiKeyInfo>,
    }

    /// ApiKeyService.Revoke.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct RevokeApiKeyRequest {
        /// Key id.
        pub key_id: String,
    }

    /// One audit record.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AuditRecord {
        /// Sequence number (order of the log).
        pub seq: i64,
        /// When, unix seconds.
        pub at: i64,
        /// Who (user, key or gateway id).
        pub actor: String,
        /// `user`, `api_key` or `gateway`.
        pub actor_kind: String,
        /// What.
        pub action: String,
        /// Which server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub server_id: Option<String>,
        /// `ok` or the error code.
        pub result: String,
        /// Details, verbatim.
        pub detail: String,
    }

    /// AuditService.List: records after `afterSeq`, oldest first.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ListAuditRequest {
        /// Only records after this sequence number.
        #[serde(default)]
        pub after_seq: i64,
        /// Rows per page (default 100, at most 1000).
        #[serde(default)]
        pub page_size: u32,
    }

    /// AuditService.List response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListAuditResponse {
        /// The records.
        pub records: Vec<AuditRecord>,
    }

    /// `GatewayService`: admins create and revoke gateway credentials and list gateways;
    /// gateways (with their credential) register, heartbeat, report their agents and servers,
    /// check agent credentials, pull the inventory and the revocations, and record audit.
    pub const GATEWAY_SERVICE: &str = "conduit.manager.v1.GatewayService";
    /// `AgentService`: admins create, list and revoke agent credentials.
    pub const AGENT_SERVICE: &str = "conduit.manager.v1.AgentService";

    /// GatewayService.Create (admins).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct CreateGatewayRequest {
        /// Id: letters, digits, `.-_:`, at most 64.
        pub gateway_id: String,
        /// Display name.
        #[serde(default)]
        pub name: String,
        /// The datacenter it serves.
        pub datacenter: String,
    }

    /// A gateway as the API shows it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct GatewayInfo {
        /// Id.
        pub gateway_id: String,
        /// Display name.
        pub name: String,
        /// Datacenter.
        pub datacenter: String,
        /// Where users reach it (as it registered).
        pub address: String,
        /// Its version.
        pub version: String,
        /// `up` (heard from within 30 s), `down` or `revoked`.
        pub status: String,
        /// Last heard from, unix seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub last_seen: Option<i64>,
    }

    /// GatewayService.Create and AgentService.Create response: the credential, shown once.
    #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CredentialResponse {
        /// The credential (`Authorization: Bearer …`); stored hashed, never shown again.
        pub credential: String,
        /// Whose it is.
        pub id: String,
    }

    /// GatewayService.List response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListGatewaysResponse {
        /// Every gateway.
        pub gateways: Vec<GatewayInfo>,
    }

    /// GatewayService.Revoke (admins).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct GatewayRef {
        /// Gateway id.
        pub gateway_id: String,
    }

    /// GatewayService.Register (gateways).
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct RegisterRequest {
        /// Where users reach it (`https://host:port`).
        #[serde(default)]
        pub address: String,
        /// Its version.
        #[serde(default)]
        pub version: String,
    }

    /// GatewayService.Register response: who the gateway is and how often to pull.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct RegisterResponse {
        /// Its id.
        pub gateway_id: String,
        /// Its datacenter (the servers it may broker).
        pub datacenter: String,
        /// Heartbeat every this many seconds.
        pub heartbeat_secs: u64,
        /// Pull ListRevocations every this many seconds (the revocation bound).
        pub revocation_poll_secs: u64,
        /// Pull ListServers every this many seconds (ownership changes).
        pub inventory_poll_secs: u64,
    }

    /// Most agents one ReportAgents names: the whole connected set of a gateway travels in
    /// one report (under the manager's 1 MiB request limit), so it bounds a gateway's agents.
    pub const MAX_REPORTED_AGENTS: usize = 10_000;

    /// GatewayService.ReportAgents (gateways): the agents connected to it now.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ReportAgentsRequest {
        /// Agent ids (at most [`MAX_REPORTED_AGENTS`]).
        pub agent_ids: Vec<String>,
    }

    /// One server an agent reaches, as a gateway reports it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ReportedServer {
        /// Server id.
        pub server_id: String,
        /// `ipmi` or `redfish`.
        pub protocol: String,
        /// Capabilities.
        #[serde(default)]
        pub capabilities: Vec<String>,
    }

    /// GatewayService.ReportServers (gateways): an agent's servers. New ones are added
    /// unassigned; known ones get their agent, protocol and capabilities updated.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ReportServersRequest {
        /// The agent.
        pub agent_id: String,
        /// Its servers (at most 10,000).
        pub servers: Vec<ReportedServer>,
    }

    /// GatewayService.VerifyAgent (gateways): is this agent credential good?
    #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct VerifyAgentRequest {
        /// The credential the agent presented.
        pub credential: String,
    }

    /// An agent as the API shows it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AgentInfo {
        /// Id.
        pub agent_id: String,
        /// Display name.
        pub name: String,
        /// Datacenter.
        pub datacenter: String,
        /// The gateway it is connected to, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub gateway_id: Option<String>,
        /// Whether that gateway reports it connected.
        pub connected: bool,
        /// Whether its credential was revoked.
        pub revoked: bool,
    }

    /// AgentService.Create (admins).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct CreateAgentRequest {
        /// Id: letters, digits, `.-_:`, at most 64.
        pub agent_id: String,
        /// Display name.
        #[serde(default)]
        pub name: String,
        /// Its datacenter.
        pub datacenter: String,
    }

    /// AgentService.List response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListAgentsResponse {
        /// The page.
        pub agents: Vec<AgentInfo>,
        /// Next page, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub next_page_token: Option<String>,
    }

    /// AgentService.Revoke (admins).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct AgentRef {
        /// Agent id.
        pub agent_id: String,
    }

    /// One revocation as gateways pull it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct RevocationEntry {
        /// A token id (`jti`), a session id (`sid`), an agent id or a user id (`sub`).
        pub id: String,
        /// `token`, `session`, `agent` or `user` (every token of the user issued at or before
        /// `revokedAt`).
        pub kind: String,
        /// When, unix seconds (0 from managers that did not say).
        #[serde(default)]
        pub revoked_at: i64,
        /// Dropped from the list after this (what it names has expired by then).
        pub expires_at: i64,
    }

    /// GatewayService.ListRevocations response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListRevocationsResponse {
        /// Every revocation in force.
        pub revocations: Vec<RevocationEntry>,
    }

    /// One audit record a gateway sends (an operation or console session it brokered).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct GatewayAuditRecord {
        /// When, unix seconds.
        pub at: i64,
        /// The user id (the token's `sub`).
        pub actor: String,
        /// What: `power.cycle`, `boot.set`, `console.sol`, …
        pub action: String,
        /// Which server.
        pub server_id: String,
        /// `ok` or the error code.
        pub result: String,
        /// Details (never secrets).
        #[serde(default)]
        pub detail: String,
    }

    /// GatewayService.RecordAudit (gateways).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct RecordAuditRequest {
        /// The records (at most 1,000).
        pub records: Vec<GatewayAuditRecord>,
    }

    // Messages carrying secrets print them redacted (a logged request never leaks one).

    impl std::fmt::Debug for LoginRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("LoginRequest")
                .field("email", &self.email)
                .field("password", &"<redacted>")
                .field("api_key", &"<redacted>")
                .finish()
        }
    }

    impl std::fmt::Debug for TokenResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TokenResponse")
                .field("expires_in", &self.expires_in)
                .field("user", &self.user)
                .field("access_token", &"<redacted>")
                .field("refresh_token", &"<redacted>")
                .finish()
        }
    }

    impl std::fmt::Debug for RefreshRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RefreshRequest")
                .field("refresh_token", &"<redacted>")
                .finish()
        }
    }

    impl std::fmt::Debug for CreateUserRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CreateUserRequest")
                .field("email", &self.email)
                .field("name", &self.name)
                .field("role", &self.role)
                .field("customer_id", &self.customer_id)
                .field("password", &"<redacted>")
                .finish()
        }
    }

    impl std::fmt::Debug for SetPasswordRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SetPasswordRequest")
                .field("user_id", &self.user_id)
                .field("current_password", &"<redacted>")
                .field("new_password", &"<redacted>")
                .finish()
        }
    }

    impl std::fmt::Debug for CreateApiKeyResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CreateApiKeyResponse")
                .field("key", &self.key)
                .field("api_key", &"<redacted>")
                .finish()
        }
    }

    impl std::fmt::Debug for CredentialResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CredentialResponse")
                .field("id", &self.id)
                .field("credential", &"<redacted>")
                .finish()
        }
    }

    impl std::fmt::Debug for VerifyAgentRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("VerifyAgentRequest")
                .field("credential", &"<redacted>")
                .finish()
        }
    }
}

/// `conduit.gateway.v1.GatewayService`: users' BMC operations at their site's gateway. The
/// requests and answers of the operations are the agent API's ([`agent`]), so a call means
/// the same at the gateway as at the agent; ListServers adds who reaches each server.
pub mod gateway {
    use serde::{Deserialize, Serialize};

    /// The service name.
    pub const GATEWAY_SERVICE: &str = "conduit.gateway.v1.GatewayService";

    /// One of the caller's servers, as this gateway reaches it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Server {
        /// Server id.
        pub server_id: String,
        /// Display name.
        pub name: String,
        /// `online` (its agent is connected here), `stale` (its agent missed heartbeats),
        /// `offline` (its agent's link is gone) or `unreachable` (no agent here serves it).
        pub state: String,
        /// The agent serving it here, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub agent_id: Option<String>,
        /// `ipmi` or `redfish`, when an agent serves it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub protocol: Option<String>,
    }

    /// ListServers response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListServersResponse {
        /// The caller's servers in this gateway's datacenter.
        pub servers: Vec<Server>,
    }

    /// One console session brokered here.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Session {
        /// Session id (random; names the session in CloseSession and the audit record).
        pub session_id: String,
        /// Server id.
        pub server_id: String,
        /// `sol` or `vnc`.
        pub console: String,
        /// The user (token subject) watching or typing.
        pub user_id: String,
        /// Whether the user only watches.
        pub watch: bool,
        /// Unix seconds.
        pub started_at: i64,
        /// Console payload bytes from the viewer so far.
        pub bytes_in: u64,
        /// Console payload bytes to the viewer so far.
        pub bytes_out: u64,
    }

    /// ListSessions request: nothing (the caller's sessions; an admin's: all).
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ListSessionsRequest {}

    /// ListSessions response.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ListSessionsResponse {
        /// Sessions, oldest first.
        pub sessions: Vec<Session>,
    }

    /// CloseSession request (the session's user, or an admin).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct CloseSessionRequest {
        /// Session id.
        pub session_id: String,
    }

    /// CloseSession response: nothing.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CloseSessionResponse {}
}
