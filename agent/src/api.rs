//! The agent's API: `conduit.agent.v1.BmcService` in Connect JSON form, plus REST-style routes
//! for operators, all behind the bearer token from the configuration (`/metrics` and `/health`
//! stay open). BMC operations run on the operations executor (`operations.rs`), bounded per
//! server and overall; the HTTP workers never wait for a BMC. The poller's cached state
//! answers ListServers without touching a BMC.

use std::sync::Arc;

use conduit_api::agent::*;
use conduit_http::router::Router;
use conduit_http::rpc::{check_bearer, refused, unary, unary_deferred, Code, RpcError, RpcFuture};
use conduit_http::{Method, Request, Response};

use crate::discovery::Discovery;
use crate::fleet::{BootDevice, Fleet, OpError, OpFailure, PowerAction};
use crate::operations::Operations;
#[cfg(feature = "ipmi")]
use conduit_ipmi::client::IpmiError;

fn rpc_error(e: OpError) -> RpcError {
    let code = match &e.failure {
        OpFailure::UnknownServer => Code::NotFound,
        OpFailure::TimedOut(_) => Code::DeadlineExceeded,
        OpFailure::Undetected(_) | OpFailure::Retired => Code::Unavailable,
        #[cfg(feature = "ipmi")]
        OpFailure::Ipmi(IpmiError::Completion { .. }) => Code::FailedPrecondition,
        #[cfg(feature = "ipmi")]
        OpFailure::Ipmi(_) => Code::Unavailable,
        #[cfg(feature = "redfish")]
        OpFailure::Redfish(
            conduit_redfish::RedfishError::NotAdvertised { .. }
            | conduit_redfish::RedfishError::Rejected { .. }
            | conduit_redfish::RedfishError::Unsupported { .. }
            | conduit_redfish::RedfishError::Refused { .. },
        ) => Code::FailedPrecondition,
        #[cfg(feature = "redfish")]
        OpFailure::Redfish(_) => Code::Unavailable,
    };
    RpcError::new(code, e.to_string())
}

fn server_info(fleet: &Fleet, id: &str) -> Option<Server> {
    let bmc = fleet.get(id)?;
    // The poller's cache, not the metrics: a capped family must not blank the answer.
    let health = fleet.health().get(id);
    let up = health.as_ref().map(|h| h.up);
    let power = health
        .and_then(|h| h.power_on)
        .map(|on| if on { "on" } else { "off" }.to_owned());
    Some(Server {
        server_id: id.to_owned(),
        address: bmc.config.addr.to_string(),
        bmc_type: bmc.config.protocol.label().to_owned(),
        up,
        power,
    })
}

fn list(fleet: &Fleet) -> ListServersResponse {
    ListServersResponse {
        servers: fleet
            .bmcs()
            .iter()
            .filter_map(|b| server_info(fleet, &b.config.id))
            .collect(),
    }
}

async fn power_status(fleet: Arc<Fleet>, id: String) -> Result<PowerStatusResponse, RpcError> {
    let on = fleet.power_status(&id).await.map_err(rpc_error)?;
    Ok(PowerStatusResponse {
        server_id: id,
        power: if on { "on" } else { "off" }.to_owned(),
    })
}

fn parse_action(action: &str) -> Result<PowerAction, RpcError> {
    PowerAction::parse(action).ok_or_else(|| {
        RpcError::new(
            Code::InvalidArgument,
            format!("unknown action {action:?}: on, off, cycle, reset, soft or diag"),
        )
    })
}

async fn power_action(
    fleet: Arc<Fleet>,
    id: String,
    action: PowerAction,
    word: String,
) -> Result<PowerActionResponse, RpcError> {
    fleet.power(&id, action).await.map_err(rpc_error)?;
    Ok(PowerActionResponse {
        server_id: id,
        action: word,
    })
}

async fn get_server(fleet: Arc<Fleet>, id: String) -> Result<GetServerResponse, RpcError> {
    let server = server_info(&fleet, &id)
        .ok_or_else(|| RpcError::new(Code::NotFound, format!("no server {id:?}")))?;
    // The poller's last status read, else one now (a BMC not polled yet).
    let cached = fleet.health().get(&id).and_then(|h| h.status?.identity);
    let ident = match cached {
        Some(i) => i,
        None => fleet
            .status(&id)
            .await
            .map_err(rpc_error)?
            .identity
            .unwrap_or_default(),
    };
    Ok(GetServerResponse {
        server,
        manufacturer: ident.manufacturer,
        product: ident.product,
        firmware: ident.firmware,
    })
}

async fn sensors(fleet: Arc<Fleet>, id: String) -> Result<GetSensorsResponse, RpcError> {
    let readings = fleet.sensors(&id).await.map_err(rpc_error)?;
    Ok(GetSensorsResponse {
        server_id: id,
        sensors: readings
            .into_iter()
            .map(|r| Sensor {
                name: r.name,
                value: r.value,
                unit: r.unit.to_owned(),
                state: r.state.to_owned(),
            })
            .collect(),
    })
}

fn parse_device(device: &str) -> Result<BootDevice, RpcError> {
    BootDevice::parse(device).ok_or_else(|| {
        RpcError::new(
            Code::InvalidArgument,
            format!("unknown boot device {device:?}: pxe, disk, cdrom or bios"),
        )
    })
}

fn boot_response(id: String, b: crate::fleet::BootSetting) -> BootDeviceResponse {
    BootDeviceResponse {
        server_id: id,
        device: b.device.to_owned(),
        persistent: b.persistent,
    }
}

async fn get_boot(fleet: Arc<Fleet>, id: String) -> Result<BootDeviceResponse, RpcError> {
    let b = fleet.boot(&id).await.map_err(rpc_error)?;
    Ok(boot_response(id, b))
}

/// Sets the override, then answers with what the BMC holds now (some services apply it their
/// own way: the answer says what took).
async fn set_boot(
    fleet: Arc<Fleet>,
    id: String,
    device: BootDevice,
    persistent: bool,
) -> Result<BootDeviceResponse, RpcError> {
    fleet
        .set_boot(&id, device, persistent)
        .await
        .map_err(rpc_error)?;
    get_boot(fleet, id).await
}

async fn events(fleet: Arc<Fleet>, id: String) -> Result<EventLogResponse, RpcError> {
    let log = fleet.events(&id).await.map_err(rpc_error)?;
    Ok(EventLogResponse {
        server_id: id,
        complete: log.complete,
        events: log
            .events
            .into_iter()
            .map(|e| LogEvent {
                id: e.id,
                time: e.time,
                sensor: e.sensor,
                event: e.event,
                severity: e.severity.to_owned(),
            })
            .collect(),
    })
}

async fn clear_events(fleet: Arc<Fleet>, id: String) -> Result<ClearEventLogResponse, RpcError> {
    fleet.clear_events(&id).await.map_err(rpc_error)?;
    Ok(ClearEventLogResponse { server_id: id })
}

/// The BMC operations of the API, each submitted to the operations executor.
#[derive(Clone)]
struct Bmcs {
    fleet: Arc<Fleet>,
    ops: Arc<Operations>,
}

impl Bmcs {
    fn submit<T, F>(&self, id: &str, op: fn(Arc<Fleet>, String) -> F) -> RpcFuture<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, RpcError>> + 'static,
    {
        let (fleet, owned) = (self.fleet.clone(), id.to_owned());
        self.ops.submit(id, move || op(fleet, owned))
    }

    fn set_boot(&self, id: &str, device: &str, persistent: bool) -> RpcFuture<BootDeviceResponse> {
        let device = match parse_device(device) {
            Ok(d) => d,
            Err(e) => return refused(e),
        };
        let (fleet, owned) = (self.fleet.clone(), id.to_owned());
        self.ops
            .submit(id, move || set_boot(fleet, owned, device, persistent))
    }

    fn power(&self, id: &str, word: &str) -> RpcFuture<PowerActionResponse> {
        let action = match parse_action(word) {
            Ok(a) => a,
            Err(e) => return refused(e),
        };
        let (fleet, owned, word) = (self.fleet.clone(), id.to_owned(), word.to_owned());
        self.ops
            .submit(id, move || power_action(fleet, owned, action, word))
    }
}

/// The API's BMC operations by method name, for the gateway uplink: the same operations,
/// bounds and `agent_rpc_*` metrics as the Connect routes.
#[derive(Clone)]
pub struct Dispatcher {
    bmcs: Bmcs,
    rpc: Arc<conduit_http::middleware::RpcMetrics>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dispatcher")
    }
}

type Raw = Box<serde_json::value::RawValue>;

fn json<T: serde::Serialize + Send + 'static>(f: RpcFuture<T>) -> RpcFuture<Raw> {
    Box::pin(async move {
        let v = f.await?;
        serde_json::value::to_raw_value(&v)
            .map_err(|e| RpcError::new(Code::Internal, e.to_string()))
    })
}

impl Dispatcher {
    /// Operations on `fleet`, run on `ops`.
    pub fn new(fleet: Arc<Fleet>, ops: Arc<Operations>) -> Self {
        let rpc = fleet.metrics().rpc.clone();
        Dispatcher {
            bmcs: Bmcs { fleet, ops },
            rpc,
        }
    }

    /// Runs `method` with the agent API's request `body`; the answer is its response body.
    pub fn call(&self, method: conduit_api::uplink::Method, body: Raw) -> RpcFuture<Raw> {
        use conduit_api::uplink::Method as M;
        fn decode<T: serde::de::DeserializeOwned>(
            v: &serde_json::value::RawValue,
        ) -> Result<T, RpcError> {
            serde_json::from_str(v.get())
                .map_err(|e| RpcError::new(Code::InvalidArgument, format!("request body: {e}")))
        }
        let b = &self.bmcs;
        let started = std::time::Instant::now();
        let answer = match method {
            M::Unknown => refused(RpcError::new(
                Code::Unimplemented,
                "this agent does not know that method",
            )),
            // Opened by the uplink itself (a data connection, not an answer).
            M::OpenConsole => refused(RpcError::new(
                Code::Unimplemented,
                "consoles are not operations",
            )),
            M::PowerAction => match decode::<PowerActionRequest>(&body) {
                Ok(r) => json(b.power(&r.server_id, &r.action)),
                Err(e) => refused(e),
            },
            M::SetBootDevice => match decode::<SetBootDeviceRequest>(&body) {
                Ok(r) => json(b.set_boot(&r.server_id, &r.device, r.persistent)),
                Err(e) => refused(e),
            },
            m => match decode::<ServerRequest>(&body) {
                Ok(r) => match m {
                    M::GetServer => json(b.submit(&r.server_id, get_server)),
                    M::PowerStatus => json(b.submit(&r.server_id, power_status)),
                    M::GetSensors => json(b.submit(&r.server_id, sensors)),
                    M::GetBootDevice => json(b.submit(&r.server_id, get_boot)),
                    M::GetEventLog => json(b.submit(&r.server_id, events)),
                    M::ClearEventLog => json(b.submit(&r.server_id, clear_events)),
                    // (each method above has its own arm; none reaches here)
                    _ => refused(RpcError::new(Code::Unimplemented, "no such operation")),
                },
                Err(e) => refused(e),
            },
        };
        let rpc = self.rpc.clone();
        Box::pin(async move {
            let result = answer.await;
            let code = result.as_ref().err().map_or(Code::Ok, |e| e.code);
            rpc.observe(
                BMC_SERVICE,
                method.as_str(),
                code.as_str(),
                started.elapsed(),
            );
            result
        })
    }
}

/// A REST handler: token check, then `f`, JSON either way.
fn rest<T: serde::Serialize>(
    token: Option<Arc<str>>,
    f: impl Fn(&Request) -> Result<T, RpcError> + Send + Sync + 'static,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    move |req| match check_bearer(req, token.as_deref()).and_then(|()| f(req)) {
        Ok(v) => Response::json(200, &v),
        Err(e) => e.response(),
    }
}

/// A REST handler for a BMC operation: token check, then the operation `f` starts, JSON when
/// it ends (the worker does not wait for it).
fn rest_deferred<T: serde::Serialize + 'static>(
    token: Option<Arc<str>>,
    f: impl Fn(&Request) -> RpcFuture<T> + Send + Sync + 'static,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    move |req| match check_bearer(req, token.as_deref()) {
        Ok(()) => {
            let later = f(req);
            Response::deferred(async move {
                match later.await {
                    Ok(v) => Response::json(200, &v),
                    Err(e) => e.response(),
                }
            })
        }
        Err(e) => e.response(),
    }
}

fn discovered(discovery: &Option<Arc<Discovery>>) -> ListDiscoveredResponse {
    ListDiscoveredResponse {
        bmcs: discovery
            .as_ref()
            .map(|d| d.last())
            .unwrap_or_default()
            .into_iter()
            .map(|f| DiscoveredBmc {
                address: f.ip.to_string(),
                bmc_type: f.bmc_type().to_owned(),
                ipmi_port: f.ipmi_port,
                redfish_port: f.redfish_port,
                vendor: f.vendor,
            })
            .collect(),
    }
}

/// Adds the API routes for `fleet` and `discovery`, protected by `token`; BMC operations run
/// on `ops`.
pub fn routes(
    router: Router,
    fleet: Arc<Fleet>,
    ops: Arc<Operations>,
    discovery: Option<Arc<Discovery>>,
    token: Option<Arc<str>>,
) -> Router {
    let (d1, d2) = (discovery.clone(), discovery);
    let rpc = fleet.metrics().rpc.clone();
    let bmcs = Bmcs {
        fleet: fleet.clone(),
        ops,
    };
    let (b1, b2, b3, b4, b5, b6) = (
        bmcs.clone(),
        bmcs.clone(),
        bmcs.clone(),
        bmcs.clone(),
        bmcs.clone(),
        bmcs,
    );
    let (f1, f2) = (fleet.clone(), fleet);
    let router = router
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/GetBootDevice",
            unary_deferred(BMC_SERVICE, "GetBootDevice", token.clone(), rpc.clone(), {
                let b = b6.clone();
                move |r: ServerRequest| b.submit(&r.server_id, get_boot)
            }),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/SetBootDevice",
            unary_deferred(BMC_SERVICE, "SetBootDevice", token.clone(), rpc.clone(), {
                let b = b6.clone();
                move |r: SetBootDeviceRequest| b.set_boot(&r.server_id, &r.device, r.persistent)
            }),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/GetEventLog",
            unary_deferred(BMC_SERVICE, "GetEventLog", token.clone(), rpc.clone(), {
                let b = b6.clone();
                move |r: ServerRequest| b.submit(&r.server_id, events)
            }),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/ClearEventLog",
            unary_deferred(BMC_SERVICE, "ClearEventLog", token.clone(), rpc.clone(), {
                let b = b6.clone();
                move |r: ServerRequest| b.submit(&r.server_id, clear_events)
            }),
        )
        .route(Method::Get, "/api/v1/servers/{id}/boot", {
            let b = b6.clone();
            rest_deferred(token.clone(), move |req| {
                b.submit(req.param("id").unwrap_or_default(), get_boot)
            })
        })
        .route(Method::Post, "/api/v1/servers/{id}/boot/{device}", {
            let b = b6.clone();
            rest_deferred(token.clone(), move |req| {
                let persistent = req
                    .query_param("persistent")
                    .is_some_and(|v| v == "1" || v == "true");
                b.set_boot(
                    req.param("id").unwrap_or_default(),
                    req.param("device").unwrap_or_default(),
                    persistent,
                )
            })
        })
        .route(Method::Get, "/api/v1/servers/{id}/events", {
            let b = b6.clone();
            rest_deferred(token.clone(), move |req| {
                b.submit(req.param("id").unwrap_or_default(), events)
            })
        })
        .route(Method::Delete, "/api/v1/servers/{id}/events", {
            let b = b6.clone();
            rest_deferred(token.clone(), move |req| {
                b.submit(req.param("id").unwrap_or_default(), clear_events)
            })
        });
    router
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/ListServers",
            unary(
                BMC_SERVICE,
                "ListServers",
                token.clone(),
                rpc.clone(),
                move |_: ListServersRequest| Ok(list(&f1)),
            ),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/GetServer",
            unary_deferred(
                BMC_SERVICE,
                "GetServer",
                token.clone(),
                rpc.clone(),
                move |r: ServerRequest| b1.submit(&r.server_id, get_server),
            ),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/PowerStatus",
            unary_deferred(
                BMC_SERVICE,
                "PowerStatus",
                token.clone(),
                rpc.clone(),
                move |r: ServerRequest| b2.submit(&r.server_id, power_status),
            ),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/PowerAction",
            unary_deferred(
                BMC_SERVICE,
                "PowerAction",
                token.clone(),
                rpc.clone(),
                move |r: PowerActionRequest| b3.power(&r.server_id, &r.action),
            ),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/GetSensors",
            unary_deferred(
                BMC_SERVICE,
                "GetSensors",
                token.clone(),
                rpc.clone(),
                move |r: ServerRequest| b4.submit(&r.server_id, sensors),
            ),
        )
        .route(
            Method::Get,
            "/api/v1/servers/{id}/sensors",
            rest_deferred(token.clone(), move |req| {
                b5.submit(req.param("id").unwrap_or_default(), sensors)
            }),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/ListDiscovered",
            unary(
                BMC_SERVICE,
                "ListDiscovered",
                token.clone(),
                rpc,
                move |_: ListServersRequest| Ok(discovered(&d1)),
            ),
        )
        .route(
            Method::Get,
            "/api/v1/discovered",
            rest(token.clone(), move |_| Ok(discovered(&d2))),
        )
        .route(
            Method::Get,
            "/api/v1/servers",
            rest(token.clone(), move |_| Ok(list(&f2))),
        )
        .route(
            Method::Get,
            "/api/v1/servers/{id}/power",
            rest_deferred(token.clone(), {
                let b = b6.clone();
                move |req| b.submit(req.param("id").unwrap_or_default(), power_status)
            }),
        )
        .route(
            Method::Post,
            "/api/v1/servers/{id}/power/{action}",
            rest_deferred(token, move |req| {
                b6.power(
                    req.param("id").unwrap_or_default(),
                    req.param("action").unwrap_or_default(),
                )
            }),
        )
}
