//! BMC operations over the inventory: what the CLI, the API and the poller call. Each
//! operation is bounded by the configured timeout and counted in the RFD metrics
//! (`agent_bmc_operations_total`, `agent_bmc_operation_duration_seconds`,
//! `agent_bmc_connection_errors_total`), with label values from fixed sets.

#[cfg(feature = "redfish")]
use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit_runtime::with_timeout;

#[cfg(feature = "redfish")]
use crate::config::RedfishTls;
use crate::config::{BmcConfig, Config, Protocol};
use crate::metrics::{AgentMetrics, BmcError, BmcOperation, BmcOperationKind};
#[cfg(feature = "ipmi")]
use conduit_ipmi::{
    client::{IpmiError, Timing},
    commands::{ChassisControl, GetChassisStatus},
    crypto::CipherSuite,
    rakp::Credentials,
    sdr::{self, Refresh, SdrCache},
    IpmiBmc,
};
#[cfg(feature = "redfish")]
use conduit_redfish::{RedfishBmc, RedfishError, ResetType, Tls};

/// The budget of one SDR repository read (`sdr_read`): what is not read by then is read on
/// the next poll, from where this one stopped.
pub const SDR_BUDGET: Duration = Duration::from_secs(20);

#[cfg(not(any(feature = "ipmi", feature = "redfish")))]
compile_error!("the agent needs at least one BMC protocol: feature `ipmi` or `redfish`");

/// One sensor reading, whichever protocol it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorReading {
    /// Sensor name as the BMC reports it (untrusted text).
    pub name: String,
    /// Unit label, from a fixed set (`celsius`, `rpm`, `volts`, `watts`, `percent`, …).
    pub unit: &'static str,
    /// Converted value; `None` when the BMC says the reading is unavailable.
    pub value: Option<f64>,
    /// `ok`, `non_critical`, `critical`, `non_recoverable` or `unavailable`.
    pub state: &'static str,
    /// IPMI: the SDR record ID; Redfish: none.
    pub record_id: Option<u16>,
    /// IPMI: the sensor type code (IPMI 2.0 table 42-3); Redfish: none.
    pub sensor_type: Option<u8>,
    /// A discrete sensor: states, never a value.
    pub discrete: bool,
}

impl SensorReading {
    /// The state as a level: 0 nominal (`ok`), 1 warning (`non_critical`), 2 critical
    /// (`critical`, `non_recoverable`); `None` while unavailable.
    pub fn level(&self) -> Option<u8> {
        match self.state {
            "ok" => Some(0),
            "non_critical" => Some(1),
            "critical" | "non_recoverable" => Some(2),
            _ => None,
        }
    }
}

/// What a poll reads of a BMC beside power and sensors ([`Fleet::status`]). A part the BMC
/// does not report is `None` (or absent from `health`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BmcStatus {
    /// Identity.
    pub identity: Option<BmcIdentity>,
    /// Watts the server draws: IPMI DCMI Get Power Reading; Redfish `PowerConsumedWatts` or
    /// `EnvironmentMetrics`.
    pub power_watts: Option<f64>,
    /// Entries in the event log: IPMI Get SEL Info; Redfish, the event logs' entry counts.
    pub event_log_entries: Option<u64>,
    /// Free bytes in the IPMI SEL.
    pub event_log_free_bytes: Option<u64>,
    /// Health by component, from a fixed set: IPMI `power`, `cooling`, `drive` (chassis status
    /// fault bits: 0 or 2); Redfish `system`, `chassis`, `power_supply`, `fan`, `memory`,
    /// `processor` (`Status.Health`: 0 OK, 1 Warning, 2 Critical).
    pub health: Vec<(&'static str, u8)>,
}

/// A power action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Power on.
    On,
    /// Hard power off.
    Off,
    /// Power cycle.
    Cycle,
    /// Hard reset.
    Reset,
    /// Soft (ACPI) shutdown.
    Soft,
    /// Diagnostic interrupt (NMI).
    Diag,
}

impl PowerAction {
    /// From the CLI/API word.
    pub fn parse(s: &str) -> Option<PowerAction> {
        Some(match s {
            "on" => PowerAction::On,
            "off" => PowerAction::Off,
            "cycle" => PowerAction::Cycle,
            "reset" => PowerAction::Reset,
            "soft" => PowerAction::Soft,
            "diag" => PowerAction::Diag,
            _ => return None,
        })
    }

    /// The `operation` label value.
    pub fn operation(self) -> &'static str {
        match self {
            PowerAction::On => "power_on",
            PowerAction::Off => "power_off",
            PowerAction::Cycle => "power_cycle",
            PowerAction::Reset => "power_reset",
            PowerAction::Soft => "power_soft",
            PowerAction::Diag => "power_diag",
        }
    }

    /// The Redfish reset type; `None` for a cycle, which the client composes when the service
    /// does not advertise `PowerCycle`.
    #[cfg(feature = "redfish")]
    fn reset_type(self) -> Option<ResetType> {
        Some(match self {
            PowerAction::On => ResetType::On,
            PowerAction::Off => ResetType::ForceOff,
            PowerAction::Soft => ResetType::GracefulShutdown,
            PowerAction::Reset => ResetType::ForceRestart,
            PowerAction::Diag => ResetType::Nmi,
            PowerAction::Cycle => return None,
        })
    }

    #[cfg(feature = "ipmi")]
    fn chassis(self) -> ChassisControl {
        match self {
            PowerAction::On => ChassisControl::PowerUp,
            PowerAction::Off => ChassisControl::PowerDown,
            PowerAction::Cycle => ChassisControl::PowerCycle,
            PowerAction::Reset => ChassisControl::HardReset,
            PowerAction::Soft => ChassisControl::SoftShutdown,
            PowerAction::Diag => ChassisControl::DiagnosticInterrupt,
        }
    }
}

/// What a BMC says it is (part of [`BmcStatus`]; empty fields where it says nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BmcIdentity {
    /// Manufacturer: a name (Redfish) or `IANA <enterprise number>` (IPMI).
    pub manufacturer: String,
    /// Product: a model name (Redfish) or the IPMI product id.
    pub product: String,
    /// Firmware version of the BMC.
    pub firmware: String,
    /// IPMI version the BMC speaks (`2.0`); empty for Redfish.
    pub ipmi_version: String,
    /// The system's serial number (Redfish); empty for IPMI.
    pub serial: String,
}

impl BmcIdentity {
    #[cfg(feature = "ipmi")]
    fn of_device(d: &ipmi_rs_core::app::DeviceId) -> BmcIdentity {
        BmcIdentity {
            manufacturer: format!("IANA {}", d.manufacturer_id),
            product: format!("{:#06x}", d.product_id),
            firmware: format!("{}.{:02}", d.major_fw_revision, d.minor_fw_revision),
            ipmi_version: format!("{}.{}", d.major_version, d.minor_version),
            serial: String::new(),
        }
    }

    #[cfg(feature = "redfish")]
    fn of_redfish(i: conduit_redfish::RedfishInfo) -> BmcIdentity {
        BmcIdentity {
            manufacturer: i.manufacturer,
            product: i.model,
            firmware: i.firmware,
            ipmi_version: String::new(),
            serial: i.serial,
        }
    }
}

/// A boot device to override the boot order with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// Network (PXE).
    Pxe,
    /// The local disk.
    Disk,
    /// The CD/DVD drive (or a virtual one).
    Cdrom,
    /// The firmware's setup screens.
    BiosSetup,
}

impl BootDevice {
    /// Every device, by its CLI/API word.
    pub const ALL: [BootDevice; 4] = [
        BootDevice::Pxe,
        BootDevice::Disk,
        BootDevice::Cdrom,
        BootDevice::BiosSetup,
    ];

    /// From the CLI/API word: `pxe`, `disk`, `cdrom`, `bios`.
    pub fn parse(s: &str) -> Option<BootDevice> {
        BootDevice::ALL.into_iter().find(|d| d.word() == s)
    }

    /// The CLI/API word.
    pub fn word(self) -> &'static str {
        match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Cdrom => "cdrom",
            BootDevice::BiosSetup => "bios",
        }
    }

    #[cfg(feature = "ipmi")]
    fn ipmi(self) -> conduit_ipmi::boot::BootDevice {
        use conduit_ipmi::boot::BootDevice as D;
        match self {
            BootDevice::Pxe => D::Pxe,
            BootDevice::Disk => D::Disk,
            BootDevice::Cdrom => D::Cdrom,
            BootDevice::BiosSetup => D::BiosSetup,
        }
    }

    #[cfg(feature = "redfish")]
    fn redfish(self) -> conduit_redfish::BootTarget {
        use conduit_redfish::BootTarget as T;
        match self {
            BootDevice::Pxe => T::Pxe,
            BootDevice::Disk => T::Hdd,
            BootDevice::Cdrom => T::Cd,
            BootDevice::BiosSetup => T::BiosSetup,
        }
    }
}

/// The boot override a BMC holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSetting {
    /// `none` (the normal boot order), a [`BootDevice`] word, or `other`.
    pub device: &'static str,
    /// Every boot until changed, rather than the next one only.
    pub persistent: bool,
}

impl BootSetting {
    /// From the override the BMC holds: `None` for none, `Some(None)` for a device this
    /// agent does not set.
    fn of(device: Option<Option<BootDevice>>, persistent: bool) -> BootSetting {
        BootSetting {
            device: match device {
                None => "none",
                Some(None) => "other",
                Some(Some(d)) => d.word(),
            },
            persistent: device.is_some() && persistent,
        }
    }
}

/// One entry of a BMC's event log (IPMI SEL, Redfish LogService entries).
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    /// The entry's id on the BMC.
    pub id: String,
    /// When it was logged (Unix seconds), if the BMC says.
    pub time: Option<f64>,
    /// Which sensor (untrusted text from the BMC).
    pub sensor: String,
    /// What happened (untrusted text from the BMC).
    pub event: String,
    /// `info`, `warning`, `critical` or `unknown`.
    pub severity: &'static str,
}

/// A BMC's event log as read.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLog {
    /// Entries, oldest first where the BMC orders them so.
    pub events: Vec<LogEvent>,
    /// False when a bound on entries or pages cut the read short.
    pub complete: bool,
}

/// Why an operation failed.
#[derive(Debug)]
pub enum OpFailure {
    /// No BMC with that id in the inventory.
    UnknownServer,
    /// The BMC did not complete the operation within the configured bound.
    TimedOut(Duration),
    /// The IPMI layer's error.
    #[cfg(feature = "ipmi")]
    Ipmi(IpmiError),
    /// The Redfish client's error.
    #[cfg(feature = "redfish")]
    Redfish(RedfishError),
    /// `protocol = "auto"` found no usable BMC protocol (the reason says what was tried).
    Undetected(String),
    /// The BMC left the inventory (or was replaced) by a reload while the call was on its way.
    Retired,
}

impl OpFailure {
    /// Whether the failure is about reaching or talking to the BMC at all (counted in
    /// `agent_bmc_connection_errors_total`), rather than the BMC refusing a command.
    fn is_connection(&self) -> bool {
        match self {
            OpFailure::UnknownServer | OpFailure::Retired => false,
            #[cfg(feature = "ipmi")]
            OpFailure::Ipmi(IpmiError::Retired) => false,
            #[cfg(feature = "ipmi")]
            OpFailure::Ipmi(IpmiError::Completion { .. }) => false,
            #[cfg(feature = "redfish")]
            OpFailure::Redfish(
                RedfishError::NotAdvertised { .. }
                | RedfishError::Rejected { .. }
                | RedfishError::Unsupported { .. }
                | RedfishError::Refused { .. }
                | RedfishError::Status { .. },
            ) => false,
            _ => true,
        }
    }
}

#[cfg(feature = "ipmi")]
impl From<IpmiError> for OpFailure {
    fn from(e: IpmiError) -> Self {
        OpFailure::Ipmi(e)
    }
}

#[cfg(feature = "redfish")]
impl From<RedfishError> for OpFailure {
    fn from(e: RedfishError) -> Self {
        OpFailure::Redfish(e)
    }
}

/// An operation error with its context: which BMC, which operation.
#[derive(Debug)]
pub struct OpError {
    /// Server id.
    pub server: String,
    /// BMC address, when known.
    pub addr: Option<std::net::SocketAddr>,
    /// Operation label.
    pub operation: &'static str,
    /// What failed.
    pub failure: OpFailure,
}

impl OpError {
    /// The `error_type` label value.
    pub fn kind(&self) -> &'static str {
        match &self.failure {
            OpFailure::UnknownServer => "unknown_server",
            OpFailure::Retired => "retired",
            OpFailure::TimedOut(_) => "timeout",
            OpFailure::Undetected(_) => "undetected",
            #[cfg(feature = "ipmi")]
            OpFailure::Ipmi(e) => e.kind(),
            #[cfg(feature = "redfish")]
            OpFailure::Redfish(e) => e.kind(),
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bmc {}", self.server)?;
        if let Some(a) = self.addr {
            write!(f, " ({a})")?;
        }
        write!(f, ": {}: ", self.operation.replace('_', " "))?;
        match &self.failure {
            OpFailure::UnknownServer => f.write_str("no such server in the inventory"),
            OpFailure::Retired => f.write_str("removed from the inventory by a reload"),
            OpFailure::TimedOut(d) => write!(f, "timed out after {d:?}"),
            OpFailure::Undetected(why) => f.write_str(why),
            #[cfg(feature = "ipmi")]
            OpFailure::Ipmi(e) => e.fmt(f),
            #[cfg(feature = "redfish")]
            OpFailure::Redfish(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpError {}

/// One BMC of the inventory.
#[derive(Debug)]
pub struct Bmc {
    /// Its configuration.
    pub config: BmcConfig,
    backend: BmcBackend,
    // Set when a reload replaced or removed it: no new operation starts on it.
    retired: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
enum BmcBackend {
    Known(Backend),
    // `protocol = "auto"`: detected on first use, then kept.
    Auto(Box<Auto>),
}

#[derive(Debug)]
struct Auto {
    config: BmcConfig,
    pace: Pace,
    detected: async_lock::OnceCell<Backend>,
}

/// How long operations may take, and (IPMI) how requests are retransmitted within that.
#[derive(Debug, Clone, Copy)]
struct Pace {
    timeout: Duration,
    #[cfg(feature = "ipmi")]
    timing: Timing,
}

impl Auto {
    /// IPMI first (a presence ping on `port`), then Redfish (`GET /redfish/v1` on
    /// `redfish_port`), each as far as this build speaks it.
    async fn detect(&self) -> Result<Backend, OpFailure> {
        let c = &self.config;
        let probe = (self.pace.timeout / 4).max(Duration::from_millis(200));
        #[cfg(feature = "ipmi")]
        if crate::probe::ipmi(c.addr, probe).await {
            log::info!("bmc {} ({}): detected IPMI", c.id, c.addr);
            let ipmi = BmcConfig {
                protocol: Protocol::Ipmi,
                ..c.clone()
            };
            return Backend::new(&ipmi, self.pace).map_err(OpFailure::Undetected);
        }
        #[cfg(feature = "redfish")]
        let redfish_addr = std::net::SocketAddr::new(c.addr.ip(), c.redfish_port);
        #[cfg(feature = "redfish")]
        if let Ok(Some(_)) = crate::probe::redfish(redfish_addr, probe).await {
            if c.tls == RedfishTls::NotApplicable {
                return Err(OpFailure::Undetected(format!(
                    "Redfish answers on {redfish_addr}, but neither tls_ca_file nor insecure_skip_verify is configured"
                )));
            }
            log::info!("bmc {} ({redfish_addr}): detected Redfish", c.id);
            let redfish = BmcConfig {
                protocol: Protocol::Redfish,
                addr: redfish_addr,
                ..c.clone()
            };
            return Backend::new(&redfish, self.pace).map_err(OpFailure::Undetected);
        }
        let tried: &[String] = &[
            #[cfg(feature = "ipmi")]
            format!("no IPMI presence pong from {}", c.addr),
            #[cfg(feature = "redfish")]
            format!("no Redfish service on {redfish_addr}"),
        ];
        Err(OpFailure::Undetected(tried.join(" and ")))
    }
}

impl Bmc {
    /// The backend to use, detecting it first for `protocol = "auto"`.
    async fn backend(&self) -> Result<&Backend, OpFailure> {
        match &self.backend {
            BmcBackend::Known(b) => Ok(b),
            BmcBackend::Auto(a) => a.detected.get_or_try_init(|| a.detect()).await,
        }
    }

    /// The backend if it is known without talking to the BMC.
    fn known_backend(&self) -> Option<&Backend> {
        match &self.backend {
            BmcBackend::Known(k) => Some(k),
            BmcBackend::Auto(a) => a.detected.get(),
        }
    }

    /// The `bmc_type` label: the configured protocol, or the detected one (`auto` before).
    pub fn bmc_type(&self) -> &'static str {
        self.known_backend().map_or("auto", Backend::label)
    }
}

#[derive(Debug)]
enum Backend {
    #[cfg(feature = "ipmi")]
    Ipmi {
        ipmi: Box<IpmiBmc>,
        // The threshold sensors of its SDR repository: read once, in parts if the budget
        // runs out, and re-read only when Get SDR Repository Info says it changed.
        sensors: Box<async_lock::Mutex<SdrCache>>,
    },
    // Blocking client: its calls run on the blocking pool, one at a time per BMC.
    #[cfg(feature = "redfish")]
    Redfish(Arc<RedfishBmc>, Arc<async_lock::Mutex<()>>),
}

impl Backend {
    fn label(&self) -> &'static str {
        match self {
            #[cfg(feature = "ipmi")]
            Backend::Ipmi { .. } => "ipmi",
            #[cfg(feature = "redfish")]
            Backend::Redfish(..) => "redfish",
        }
    }

    fn new(c: &BmcConfig, pace: Pace) -> Result<Backend, String> {
        match c.protocol {
            #[cfg(feature = "redfish")]
            Protocol::Redfish => {
                let tls = match &c.tls {
                    RedfishTls::CaPem(pem) => Tls::CaPem(pem.clone()),
                    RedfishTls::Insecure => Tls::Insecure,
                    RedfishTls::PlainHttp => Tls::PlainHttp,
                    RedfishTls::NotApplicable => Tls::Insecure,
                };
                let r =
                    RedfishBmc::new(c.addr, &c.username, c.password.expose(), tls, pace.timeout)
                        .map_err(|e| format!("bmc {}: {e}", c.id))?;
                Ok(Backend::Redfish(
                    Arc::new(r),
                    Arc::new(async_lock::Mutex::new(())),
                ))
            }
            #[cfg(feature = "ipmi")]
            Protocol::Ipmi => {
                let suite = CipherSuite::from_id(c.cipher_suite).unwrap_or(CipherSuite::Suite3);
                let creds = Credentials {
                    username: c.username.as_bytes().to_vec(),
                    password: c.password.expose().as_bytes().to_vec(),
                    privilege: c.privilege,
                };
                Ok(Backend::Ipmi {
                    ipmi: Box::new(IpmiBmc::new(c.addr, suite, creds, pace.timing)),
                    sensors: Box::new(async_lock::Mutex::new(SdrCache::new())),
                })
            }
            other => Err(format!(
                "bmc {}: protocol {:?} is not built into this agent",
                c.id,
                other.label()
            )),
        }
    }
}

/// Runs a blocking Redfish call on the blocking pool, serialized per BMC.
#[cfg(feature = "redfish")]
async fn redfish<T: Send + 'static>(
    r: &Arc<RedfishBmc>,
    lock: &Arc<async_lock::Mutex<()>>,
    f: impl FnOnce(&RedfishBmc) -> Result<T, RedfishError> + Send + 'static,
) -> Result<T, OpFailure> {
    let call: RedfishCall = Box::new(move |r| f(r).map(|v| Box::new(v) as Box<dyn Any + Send>));
    let any = redfish_call(r, lock, call).await?;
    // The box holds the `T` the call made.
    any.downcast::<T>()
        .map(|v| *v)
        .map_err(|_| OpFailure::Redfish(RedfishError::Malformed("internal: call result type")))
}

/// A Redfish call with its result type erased.
#[cfg(feature = "redfish")]
type RedfishCall =
    Box<dyn FnOnce(&RedfishBmc) -> Result<Box<dyn Any + Send>, RedfishError> + Send + 'static>;

/// [`redfish`]'s blocking hop, type-erased: every operation shares this one instantiation of
/// the blocking pool's task machinery (some 9 KiB of code per call site otherwise, which the
/// aarch64 size budget feels).
#[cfg(feature = "redfish")]
async fn redfish_call(
    r: &Arc<RedfishBmc>,
    lock: &Arc<async_lock::Mutex<()>>,
    f: RedfishCall,
) -> Result<Box<dyn Any + Send>, OpFailure> {
    // The guard goes into the blocking call: if the operation times out, the call runs on to
    // its own request deadline (conduit-http-client) still holding the BMC, so a retry cannot overlap it.
    let one_at_a_time = lock.lock_arc().await;
    let r = r.clone();
    smol::unblock(move || {
        let _held = one_at_a_time;
        f(&r)
    })
    .await
    .map_err(OpFailure::Redfish)
}

/// The inventory's BMCs and the operations on them.
#[derive(Debug)]
pub struct Fleet {
    // Swapped whole by a reload; readers take a snapshot.
    bmcs: std::sync::RwLock<Arc<Vec<Arc<Bmc>>>>,
    health: crate::health::HealthCache,
    metrics: Arc<AgentMetrics>,
    timeout: Duration,
    pace: Pace,
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Servers new to the inventory.
    pub added: Vec<String>,
    /// Servers whose configuration changed (new sessions; their consoles end).
    pub changed: Vec<String>,
    /// Servers gone from the inventory.
    pub removed: Vec<String>,
    /// The BMCs replaced or removed: their sessions are to be closed.
    pub retired: Vec<Arc<Bmc>>,
    /// What the poller had learnt of them (their series are to be removed).
    pub forgotten: Vec<(String, crate::health::Health)>,
}

impl Bmc {
    fn new(c: &BmcConfig, pace: Pace) -> Result<Bmc, String> {
        let backend = if c.protocol == Protocol::Auto {
            BmcBackend::Auto(Box::new(Auto {
                config: c.clone(),
                pace,
                detected: async_lock::OnceCell::new(),
            }))
        } else {
            BmcBackend::Known(Backend::new(c, pace)?)
        };
        Ok(Bmc {
            config: c.clone(),
            backend,
            retired: Default::default(),
        })
    }

    /// Closes its sessions for good (a reload replaced or removed it): operations still
    /// running on it open none, and none starts on it.
    pub async fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Relaxed);
        match self.known_backend() {
            #[cfg(feature = "ipmi")]
            Some(Backend::Ipmi { ipmi, .. }) => ipmi.retire().await,
            _ => self.close().await,
        }
    }

    /// The IPMI side of this BMC, for consoles that open sessions of their own: `None` for a
    /// Redfish BMC or an auto BMC not yet detected as IPMI.
    #[cfg(feature = "ipmi")]
    pub fn ipmi(&self) -> Option<&IpmiBmc> {
        match self.known_backend()? {
            Backend::Ipmi { ipmi, .. } => Some(ipmi),
            #[cfg(feature = "redfish")]
            Backend::Redfish(..) => None,
        }
    }

    /// Closes its sessions (IPMI Close Session, Redfish session DELETE).
    pub async fn close(&self) {
        match self.known_backend() {
            #[cfg(feature = "ipmi")]
            Some(Backend::Ipmi { ipmi, .. }) => ipmi.close().await,
            // The session we created is deleted (bounded by the client's timeout); a call
            // still running holds the BMC's lock and is waited for only as long as the
            // caller's own bound allows.
            #[cfg(feature = "redfish")]
            Some(Backend::Redfish(r, lock)) => {
                let _ = redfish(r, lock, |r| r.logout()).await;
            }
            None => {}
        }
    }
}

impl Fleet {
    /// The BMCs of `config` (none without one); nothing is sent until an operation runs.
    pub fn new(config: Option<&Config>, metrics: Arc<AgentMetrics>) -> Result<Fleet, String> {
        let timeout = config.map_or(Duration::from_secs(5), |c| c.operation_timeout);
        let pace = Pace {
            timeout,
            // Retransmits fit inside the operation bound: a silent BMC is reported as such (no
            // reply after 3 tries) rather than as the operation's deadline.
            #[cfg(feature = "ipmi")]
            timing: Timing {
                reply_timeout: (timeout / 4)
                    .clamp(Duration::from_millis(100), Duration::from_secs(1)),
                retries: 2,
            },
        };
        let bmcs = config
            .map(|c| c.bmcs.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|c| Bmc::new(c, pace).map(Arc::new))
            .collect::<Result<_, String>>()?;
        Ok(Fleet {
            bmcs: std::sync::RwLock::new(Arc::new(bmcs)),
            health: Default::default(),
            metrics,
            timeout,
            pace,
        })
    }

    /// Takes the BMCs of `config` as the inventory: a BMC whose configuration is unchanged
    /// is kept as it is (its sessions, caches and consoles go on); a changed one is replaced
    /// and a removed one dropped (the caller closes their sessions, from
    /// [`Reloaded::retired`]). Nothing changes when a BMC cannot be set up.
    pub fn reload(&self, config: &Config) -> Result<Reloaded, String> {
        let old = self.snapshot();
        let mut r = Reloaded::default();
        let mut next = Vec::with_capacity(config.bmcs.len());
        for c in &config.bmcs {
            match old.iter().find(|b| b.config.id == c.id) {
                Some(b) if b.config == *c => next.push(b.clone()),
                Some(_) => {
                    r.changed.push(c.id.clone());
                    next.push(Arc::new(Bmc::new(c, self.pace)?));
                }
                None => {
                    r.added.push(c.id.clone());
                    next.push(Arc::new(Bmc::new(c, self.pace)?));
                }
            }
        }
        for b in old.iter() {
            let kept = next.iter().any(|n| Arc::ptr_eq(n, b));
            if !kept {
                if !r.changed.contains(&b.config.id) {
                    r.removed.push(b.config.id.clone());
                }
                if let Some(h) = self.health.forget(&b.config.id) {
                    r.forgotten.push((b.config.id.clone(), h));
                }
                r.retired.push(b.clone());
            }
        }
        *self.bmcs.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(r)
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Bmc>>> {
        self.bmcs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The BMC with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Bmc>> {
        self.snapshot().iter().find(|b| b.config.id == id).cloned()
    }

    /// The bound on one operation.
    pub fn operation_timeout(&self) -> Duration {
        self.timeout
    }

    /// What the poller last learnt of each BMC.
    pub fn health(&self) -> &crate::health::HealthCache {
        &self.health
    }

    /// The metrics the operations record into.
    pub fn metrics(&self) -> &Arc<AgentMetrics> {
        &self.metrics
    }

    /// Every BMC, in configuration order (a snapshot: a reload does not change it).
    pub fn bmcs(&self) -> Arc<Vec<Arc<Bmc>>> {
        self.snapshot()
    }

    fn find(&self, id: &str, operation: &'static str) -> Result<Arc<Bmc>, OpError> {
        self.get(id).ok_or_else(|| OpError {
            server: id.to_owned(),
            addr: None,
            operation,
            failure: OpFailure::UnknownServer,
        })
    }

    /// Runs one operation on `bmc` under the timeout and records it.
    async fn run<T>(
        &self,
        bmc: &Bmc,
        operation: &'static str,
        op: impl Future<Output = Result<T, OpFailure>>,
    ) -> Result<T, OpError> {
        self.run_within(bmc, operation, self.timeout, op).await
    }

    /// [`Fleet::run`] with a bound of its own.
    async fn run_within<T>(
        &self,
        bmc: &Bmc,
        operation: &'static str,
        timeout: Duration,
        op: impl Future<Output = Result<T, OpFailure>>,
    ) -> Result<T, OpError> {
        let start = Instant::now();
        if bmc.retired.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(OpError {
                server: bmc.config.id.clone(),
                addr: Some(bmc.config.addr),
                operation,
                failure: OpFailure::Retired,
            });
        }
        // Boxed, so that the timeout combinator is built once per result type rather than
        // once per operation (code size: the aarch64 budget).
        let op: std::pin::Pin<Box<dyn Future<Output = Result<T, OpFailure>> + '_>> = Box::pin(op);
        let result = with_timeout(timeout, op)
            .await
            .unwrap_or(Err(OpFailure::TimedOut(timeout)));
        let bmc_type = bmc.bmc_type();
        let m = &self.metrics;
        m.bmc_operation_duration.observe(
            &BmcOperationKind {
                bmc_type,
                operation,
            },
            start.elapsed().as_secs_f64(),
        );
        let status = if result.is_ok() { "success" } else { "error" };
        m.bmc_operations.inc(&BmcOperation {
            bmc_type,
            operation,
            status,
        });
        result.map_err(|failure| {
            let e = OpError {
                server: bmc.config.id.clone(),
                addr: Some(bmc.config.addr),
                operation,
                failure,
            };
            if e.failure.is_connection() {
                m.bmc_connection_errors.inc(&BmcError {
                    bmc_type,
                    error_type: e.kind(),
                });
            }
            e
        })
    }

    /// Whether the server's power is on.
    pub async fn power_status(&self, id: &str) -> Result<bool, OpError> {
        let bmc = &*self.find(id, "power_status")?;
        self.run(bmc, "power_status", async {
            match bmc.backend().await? {
                #[cfg(feature = "ipmi")]
                Backend::Ipmi { ipmi, .. } => Ok(ipmi
                    .execute("chassis status", GetChassisStatus)
                    .await?
                    .power_on),
                #[cfg(feature = "redfish")]
                Backend::Redfish(r, lock) => redfish(r, lock, |r| r.power_on()).await,
            }
        })
        .await
    }

    /// Runs a power action.
    pub async fn power(&self, id: &str, action: PowerAction) -> Result<(), OpError> {
        let op = action.operation();
        let bmc = &*self.find(id, op)?;
        self.run(bmc, op, async {
            match bmc.backend().await? {
                #[cfg(feature = "ipmi")]
                Backend::Ipmi { ipmi, .. } => Ok(ipmi
                    .execute_once("chassis control", action.chassis())
                    .await?),
                #[cfg(feature = "redfish")]
                Backend::Redfish(r, lock) => {
                    redfish(r, lock, move |r| match action.reset_type() {
                        Some(t) => r.reset(t),
                        None => r.power_cycle(),
                    })
                    .await
                }
            }
        })
        .await
    }

    /// What the poller reads beside power and sensors (`status`): IPMI Get Device ID, Get SEL
    /// Info, DCMI Get Power Reading and Get Chassis Status in one batch; Redfish identity,
    /// health roll-ups and power draw ([`RedfishBmc::status`]) and the entry counts of the
    /// logs [`Fleet::events`] reads, under one operation timeout.
    pub async fn status(&self, id: &str) -> Result<BmcStatus, OpError> {
        let bmc = &*self.find(id, "status")?;
        self.run(bmc, "status", async {
            match bmc.backend().await? {
                #[cfg(feature = "ipmi")]
                Backend::Ipmi { ipmi, .. } => {
                    let s = conduit_ipmi::status::read_status(ipmi.as_ref()).await?;
                    let fault = |f: bool| if f { 2 } else { 0 };
                    Ok(BmcStatus {
                        identity: s.device.as_ref().map(BmcIdentity::of_device),
                        power_watts: s.power.map(|p| f64::from(p.current_watts)),
                        event_log_entries: s.sel.map(|l| u64::from(l.entries)),
                        event_log_free_bytes: s.sel.map(|l| u64::from(l.free_bytes)),
                        health: s
                            .chassis
                            .map(|c| {
                                vec![
                                    ("power", fault(c.power_fault || c.power_overload)),
                                    ("cooling", fault(c.cooling_fault)),
                                    ("drive", fault(c.drive_fault)),
                                ]
                            })
                            .unwrap_or_default(),
                    })
                }
                #[cfg(feature = "redfish")]
                Backend::Redfish(r, lock) => {
                    redfish(r, lock, |r| {
                        use conduit_redfish::health::Health;
                        let s = r.status()?;
                        let mut entries = None;
                        for service in crate::event_log::event_services(r.log_services()?) {
                            if let Some(n) = r.log_entry_count(&service)? {
                                *entries.get_or_insert(0) += n;
                            }
                        }
                        Ok(BmcStatus {
                            identity: Some(BmcIdentity::of_redfish(s.info)),
                            power_watts: s.power_watts,
                            event_log_entries: entries,
                            event_log_free_bytes: None,
                            health: s
                                .health
                                .into_iter()
                                .map(|(c, h)| {
                                    let level = match h {
                                        Health::Ok => 0,
                                        Health::Warning => 1,
                                        Health::Critical => 2,
                                    };
                                    (c.as_str(), level)
                                })
                                .collect(),
                        })
                    })
                    .await
                }
            }
        })
        .await
    }

    /// Every sensor's current reading: IPMI threshold sensors, or the Redfish chassis'
    /// sensors. For IPMI the SDR repository is brought up to date first, as its own operation
    /// (`sdr_read`) under its own budget ([`SDR_BUDGET`]): a large repository on a slow BMC is
    /// read over several polls if it must, never restarted, and not read again until the
    /// repository's timestamps change. The readings are then one `sensors` operation, several
    /// requests outstanding on the session.
    pub async fn sensors(&self, id: &str) -> Result<Vec<SensorReading>, OpError> {
        let bmc = &*self.find(id, "sensors")?;
        // Detection (`protocol = "auto"`) fails as the sensors operation.
        let backend = match bmc.backend().await {
            Ok(b) => b,
            Err(f) => return self.run(bmc, "sensors", async { Err(f) }).await,
        };
        let convert = |name, unit, value, state| SensorReading {
            name,
            unit,
            value,
            state,
            record_id: None,
            sensor_type: None,
            discrete: false,
        };
        match backend {
            #[cfg(feature = "ipmi")]
            Backend::Ipmi { ipmi, sensors } => {
                self.run_within(bmc, "sdr_read", SDR_BUDGET + self.timeout, async {
                    let mut cache = sensors.lock().await;
                    if cache.refresh(ipmi.as_ref(), SDR_BUDGET).await? == Refresh::Partial {
                        log::info!(
                            "bmc {id}: SDR repository read in part ({} sensors so far); the next poll goes on",
                            cache.sensors().len()
                        );
                    }
                    Ok(())
                })
                .await?;
                self.run(bmc, "sensors", async {
                    let cache = sensors.lock().await;
                    let readings = sdr::read_sensors(ipmi.as_ref(), cache.sensors()).await?;
                    Ok(readings
                        .into_iter()
                        .map(|r| SensorReading {
                            record_id: Some(r.record_id),
                            sensor_type: Some(r.sensor_type),
                            discrete: r.discrete,
                            ..convert(r.name, r.unit, r.value, r.state)
                        })
                        .collect())
                })
                .await
            }
            #[cfg(feature = "redfish")]
            Backend::Redfish(r, lock) => {
                self.run(bmc, "sensors", async {
                    let readings = redfish(r, lock, |r| r.sensors()).await?;
                    Ok(readings
                        .into_iter()
                        .map(|r| convert(r.name, r.unit, r.value, r.state))
                        .collect())
                })
                .await
            }
        }
    }

    /// Overrides the boot device: the next boot only, or every boot until changed
    /// (`boot_set`: IPMI Set System Boot Options, Redfish `Boot` override).
    pub async fn set_boot(
        &self,
        id: &str,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), OpError> {
        let bmc = &*self.find(id, "boot_set")?;
        self.run(bmc, "boot_set", async {
            match bmc.backend().await? {
                #[cfg(feature = "ipmi")]
                Backend::Ipmi { ipmi, .. } => {
                    use conduit_ipmi::boot::{self, BootOverride, Persistence};
                    let persistence = if persistent {
                        Persistence::Persistent
                    } else {
                        Persistence::NextBoot
                    };
                    let o = BootOverride {
                        device: device.ipmi(),
                        persistence,
                        efi: false,
                    };
                    Ok(boot::set_boot_override(ipmi, o).await?)
                }
                #[cfg(feature = "redfish")]
                Backend::Redfish(r, lock) => {
                    use conduit_redfish::BootPersistence;
                    let p = if persistent {
                        BootPersistence::Continuous
                    } else {
                        BootPersistence::Once
                    };
                    redfish(r, lock, move |r| r.set_boot(device.redfish(), p)).await
                }
            }
        })
        .await
    }

    /// The boot override the BMC holds (`boot_get`).
    pub async fn boot(&self, id: &str) -> Result<BootSetting, OpError> {
        let bmc = &*self.find(id, "boot_get")?;
        self.run(bmc, "boot_get", async {
            match bmc.backend().await? {
                #[cfg(feature = "ipmi")]
                Backend::Ipmi { ipmi, .. } => {
                    use conduit_ipmi::boot::{self, BootDevice as D, Persistence};
                    // The device the flags hold, valid bit or not: a BMC clears the bit
                    // once the override is used (or, on some, 60 s after it was set) but the
                    // device still says what was asked for; ipmi_sim never sets it.
                    let f = boot::boot_flags(ipmi).await?;
                    let device = match f.boot.device {
                        D::NoOverride => None,
                        D::Pxe => Some(Some(BootDevice::Pxe)),
                        D::Disk => Some(Some(BootDevice::Disk)),
                        D::Cdrom => Some(Some(BootDevice::Cdrom)),
                        D::BiosSetup => Some(Some(BootDevice::BiosSetup)),
                        D::Other(_) => Some(None),
                    };
                    Ok(BootSetting::of(
                        device,
                        f.boot.persistence == Persistence::Persistent,
                    ))
                }
                #[cfg(feature = "redfish")]
                Backend::Redfish(r, lock) => {
                    use conduit_redfish::{BootEnabled, BootSource, BootTarget as T};
                    let b = redfish(r, lock, |r| r.boot()).await?;
                    let device = match (&b.enabled, &b.target) {
                        (BootEnabled::Disabled, _) | (_, BootSource::None) => None,
                        (_, BootSource::Target(T::Pxe)) => Some(Some(BootDevice::Pxe)),
                        (_, BootSource::Target(T::Hdd)) => Some(Some(BootDevice::Disk)),
                        (_, BootSource::Target(T::Cd)) => Some(Some(BootDevice::Cdrom)),
                        (_, BootSource::Target(T::BiosSetup)) => Some(Some(BootDevice::BiosSetup)),
                        (_, BootSource::Other(_)) => Some(None),
                    };
                    Ok(BootSetting::of(
                        device,
                        b.enabled == BootEnabled::Continuous,
                    ))
                }
            }
        })
        .await
    }

    /// The BMC's event log (`sel_read`: the IPMI SEL; Redfish, the entries of the SEL log
    /// services, else of every log service of the system), under the SDR budget: a full log
    /// of a slow BMC takes longer than one operation timeout.
    pub async fn events(&self, id: &str) -> Result<EventLog, OpError> {
        let bmc = &*self.find(id, "sel_read")?;
        self.run_within(bmc, "sel_read", SDR_BUDGET, async {
            match bmc.backend().await? {
                #[cfg(feature = "ipmi")]
                Backend::Ipmi { ipmi, .. } => {
                    let entries = conduit_ipmi::sel::read_sel(ipmi.as_ref()).await?;
                    Ok(EventLog {
                        events: entries.iter().map(crate::event_log::from_sel).collect(),
                        complete: entries.len() < conduit_ipmi::sel::MAX_ENTRIES,
                    })
                }
                #[cfg(feature = "redfish")]
                Backend::Redfish(r, lock) => {
                    // The blocking walk stops itself at the budget: dropping the waiting
                    // future would not stop it, and it holds the BMC's lock.
                    let until = Instant::now() + SDR_BUDGET - Duration::from_secs(1);
                    redfish(r, lock, move |r| {
                        let mut log = EventLog {
                            events: Vec::new(),
                            complete: true,
                        };
                        for s in crate::event_log::event_services(r.log_services()?) {
                            if Instant::now() >= until {
                                log.complete = false;
                                break;
                            }
                            let e = r.log_entries_until(&s, until)?;
                            log.complete &= e.complete;
                            log.events
                                .extend(e.entries.iter().map(crate::event_log::from_redfish));
                        }
                        Ok(log)
                    })
                    .await
                }
            }
        })
        .await
    }

    /// Clears the BMC's event log (`sel_clear`), the same logs [`Fleet::events`] reads.
    pub async fn clear_events(&self, id: &str) -> Result<(), OpError> {
        let bmc = &*self.find(id, "sel_clear")?;
        self.run_within(bmc, "sel_clear", SDR_BUDGET, async {
            match bmc.backend().await? {
                #[cfg(feature = "ipmi")]
                Backend::Ipmi { ipmi, .. } => Ok(conduit_ipmi::sel::clear_sel(ipmi).await?),
                #[cfg(feature = "redfish")]
                Backend::Redfish(r, lock) => {
                    redfish(r, lock, |r| {
                        for s in crate::event_log::event_services(r.log_services()?) {
                            r.clear_log(&s)?;
                        }
                        Ok(())
                    })
                    .await
                }
            }
        })
        .await
    }

    /// Closes every open session, all at once (on shutdown: frees the BMCs' session slots
    /// without waiting on each BMC in turn).
    pub async fn close_all(&self) {
        close_all(&self.snapshot()).await;
    }
}

/// Retires `bmcs` (a reload replaced or removed them), all at once.
pub async fn retire_all(bmcs: &[Arc<Bmc>]) {
    all_at_once(bmcs, |b| async move { b.retire().await }).await;
}

/// Closes the sessions of `bmcs`, all at once.
pub async fn close_all(bmcs: &[Arc<Bmc>]) {
    all_at_once(bmcs, |b| async move { b.close().await }).await;
}

/// Runs `f` on every BMC concurrently (none waits on another BMC's answer).
async fn all_at_once<F: Future<Output = ()>>(bmcs: &[Arc<Bmc>], f: impl Fn(Arc<Bmc>) -> F) {
    let ex = smol::LocalExecutor::new();
    let tasks: Vec<smol::Task<()>> = bmcs.iter().map(|b| ex.spawn(f(b.clone()))).collect();
    ex.run(async {
        for t in tasks {
            t.await;
        }
    })
    .await;
}
