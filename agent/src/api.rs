//! The agent's API: `conduit.agent.v1.BmcService` in Connect JSON form, plus REST-style routes
//! for operators, all behind the bearer token from the configuration (`/metrics` and `/health`
//! stay open). Handlers run on the HTTP workers and wait for the BMC (bounded by the operation
//! timeout); the poller's cached state answers ListServers without touching a BMC.

use std::sync::Arc;

use conduit_api::agent::*;
use conduit_http::router::Router;
use conduit_http::rpc::{check_bearer, unary, Code, RpcError};
use conduit_http::{Method, Request, Response};
use futures_lite::future::block_on;

use crate::discovery::Discovery;
use crate::fleet::{Fleet, OpError, OpFailure, PowerAction};
#[cfg(feature = "ipmi")]
use conduit_ipmi::client::IpmiError;

fn rpc_error(e: OpError) -> RpcError {
    let code = match &e.failure {
        OpFailure::UnknownServer => Code::NotFound,
        OpFailure::TimedOut(_) => Code::DeadlineExceeded,
        OpFailure::Undetected(_) => Code::Unavailable,
        #[cfg(feature = "ipmi")]
        OpFailure::Ipmi(IpmiError::Completion { .. }) => Code::FailedPrecondition,
        #[cfg(feature = "ipmi")]
        OpFailure::Ipmi(_) => Code::Unavailable,
        #[cfg(feature = "redfish")]
        OpFailure::Redfish(
            conduit_redfish::RedfishError::NotAdvertised { .. }
            | conduit_redfish::RedfishError::Rejected { .. },
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

fn power_status(fleet: &Fleet, id: &str) -> Result<PowerStatusResponse, RpcError> {
    let on = block_on(fleet.power_status(id)).map_err(rpc_error)?;
    Ok(PowerStatusResponse {
        server_id: id.to_owned(),
        power: if on { "on" } else { "off" }.to_owned(),
    })
}

fn power_action(fleet: &Fleet, id: &str, action: &str) -> Result<PowerActionResponse, RpcError> {
    let a = PowerAction::parse(action).ok_or_else(|| {
        RpcError::new(
            Code::InvalidArgument,
            format!("unknown action {action:?}: on, off, cycle, reset, soft or diag"),
        )
    })?;
    block_on(fleet.power(id, a)).map_err(rpc_error)?;
    Ok(PowerActionResponse {
        server_id: id.to_owned(),
        action: action.to_owned(),
    })
}

fn get_server(fleet: &Fleet, id: &str) -> Result<GetServerResponse, RpcError> {
    let server = server_info(fleet, id)
        .ok_or_else(|| RpcError::new(Code::NotFound, format!("no server {id:?}")))?;
    let ident = block_on(fleet.identity(id)).map_err(rpc_error)?;
    Ok(GetServerResponse {
        server,
        manufacturer: ident.manufacturer,
        product: ident.product,
        firmware: ident.firmware,
    })
}

fn sensors(fleet: &Fleet, id: &str) -> Result<GetSensorsResponse, RpcError> {
    let readings = block_on(fleet.sensors(id)).map_err(rpc_error)?;
    Ok(GetSensorsResponse {
        server_id: id.to_owned(),
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

fn fleet_rpc_metrics(fleet: &Fleet) -> Arc<conduit_http::middleware::RpcMetrics> {
    fleet.metrics().rpc.clone()
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

/// Adds the API routes for `fleet` and `discovery`, protected by `token`.
pub fn routes(
    router: Router,
    fleet: Arc<Fleet>,
    discovery: Option<Arc<Discovery>>,
    token: Option<Arc<str>>,
) -> Router {
    let (d1, d2) = (discovery.clone(), discovery);
    let rpc = fleet.metrics().rpc.clone();
    let (f1, f2, f3, f4, f5) = (
        fleet.clone(),
        fleet.clone(),
        fleet.clone(),
        fleet.clone(),
        fleet.clone(),
    );
    let (r1, r2, r3, r4) = (fleet.clone(), fleet.clone(), fleet.clone(), fleet);
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
            unary(
                BMC_SERVICE,
                "GetServer",
                token.clone(),
                rpc.clone(),
                move |r: ServerRequest| get_server(&f2, &r.server_id),
            ),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/PowerStatus",
            unary(
                BMC_SERVICE,
                "PowerStatus",
                token.clone(),
                rpc.clone(),
                move |r: ServerRequest| power_status(&f3, &r.server_id),
            ),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/PowerAction",
            unary(
                BMC_SERVICE,
                "PowerAction",
                token.clone(),
                rpc.clone(),
                move |r: PowerActionRequest| power_action(&f4, &r.server_id, &r.action),
            ),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/GetSensors",
            unary(
                BMC_SERVICE,
                "GetSensors",
                token.clone(),
                rpc,
                move |r: ServerRequest| sensors(&f5, &r.server_id),
            ),
        )
        .route(
            Method::Get,
            "/api/v1/servers/{id}/sensors",
            rest(token.clone(), move |req| {
                sensors(&r4, req.param("id").unwrap_or_default())
            }),
        )
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/ListDiscovered",
            unary(
                BMC_SERVICE,
                "ListDiscovered",
                token.clone(),
                fleet_rpc_metrics(&r1),
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
            rest(token.clone(), move |_| Ok(list(&r1))),
        )
        .route(
            Method::Get,
            "/api/v1/servers/{id}/power",
            rest(token.clone(), move |req| {
                power_status(&r2, req.param("id").unwrap_or_default())
            }),
        )
        .route(
            Method::Post,
            "/api/v1/servers/{id}/power/{action}",
            rest(token, move |req| {
                power_action(
                    &r3,
                    req.param("id").unwrap_or_default(),
                    req.param("action").unwrap_or_default(),
                )
            }),
        )
}
