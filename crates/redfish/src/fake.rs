//! A Redfish service with a SessionService (sushy-tools has none), in process: a session token
//! (or Basic auth) is required on the system resources, tokens can be expired by the test, and
//! logins, resets and Basic-authenticated requests are counted. [`Opts`] picks how it answers
//! the session login.

use super::*;
use conduit_http::middleware::{HttpMetrics, HttpService};
use conduit_http::router::Router;
use conduit_http::server::{Limits, Server};
use conduit_http::{Method, Request, Response};
use conduit_metrics::catalog::CatalogBuilder;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How the fake answers a good session login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum LoginAnswer {
    /// 201 with `X-Auth-Token` and `Location`, as most services do.
    #[default]
    Created,
    /// 204 and no headers, as sushy-tools' static mockup server answers every POST.
    NoContentNoToken,
}

#[derive(Debug, Clone, Copy, Default)]
struct Opts {
    login: LoginAnswer,
}

#[derive(Default)]
struct State {
    opts: Opts,
    logins: AtomicUsize,
    resets: AtomicUsize,
    valid_token: Mutex<String>,
    basic_seen: AtomicUsize,
}

fn json(v: serde_json::Value) -> Response {
    Response::new(200)
        .with_header("Content-Type", "application/json")
        .with_body(v.to_string().into_bytes())
}

fn authorized(st: &State, req: &Request) -> bool {
    if req.header("Authorization").is_some() {
        st.basic_seen.fetch_add(1, Ordering::Relaxed);
    }
    let valid = st.valid_token.lock().unwrap().clone();
    let basic = format!("Basic {}", conduit_ws::base64(b"admin:secret"));
    (!valid.is_empty() && req.header("X-Auth-Token") == Some(valid.as_str()))
        || req.header("Authorization") == Some(basic.as_str())
}

fn start() -> (
    std::net::SocketAddr,
    Arc<State>,
    conduit_http::server::Shutdown,
) {
    start_with(Opts::default())
}

fn start_with(
    opts: Opts,
) -> (
    std::net::SocketAddr,
    Arc<State>,
    conduit_http::server::Shutdown,
) {
    let st = Arc::new(State {
        opts,
        ..State::default()
    });
    let (a, b, c, d) = (st.clone(), st.clone(), st.clone(), st.clone());
    let router = Router::new()
        .route(Method::Get, "/redfish/v1/", |_| {
            json(serde_json::json!({
                "Systems": {"@odata.id": "/redfish/v1/Systems"},
                "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}
            }))
        })
        .route(
            Method::Post,
            "/redfish/v1/SessionService/Sessions",
            move |req| {
                let v: serde_json::Value =
                    serde_json::from_slice(&req.body).unwrap_or_default();
                if v["UserName"] != "admin" || v["Password"] != "secret" {
                    return Response::new(401);
                }
                let n = a.logins.fetch_add(1, Ordering::Relaxed) + 1;
                if a.opts.login == LoginAnswer::NoContentNoToken {
                    return Response::new(204);
                }
                let token = format!("token-{n}");
                *a.valid_token.lock().unwrap() = token.clone();
                Response::new(201)
                    .with_header("X-Auth-Token", token)
                    .with_header(
                        "Location",
                        format!("/redfish/v1/SessionService/Sessions/{n}"),
                    )
            },
        )
        .route(Method::Get, "/redfish/v1/Systems", move |req| {
            if !authorized(&b, req) {
                return Response::new(401);
            }
            json(serde_json::json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]}))
        })
        .route(Method::Get, "/redfish/v1/Systems/1", move |req| {
            if !authorized(&c, req) {
                return Response::new(401);
            }
            json(serde_json::json!({
                "PowerState": "On",
                "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1"}]},
                "Actions": {"#ComputerSystem.Reset": {
                    "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": ["On", "ForceOff"]
                }}
            }))
        })
        .route(Method::Get, "/redfish/v1/Chassis/1", |_| {
            json(serde_json::json!({"Power": {"@odata.id": "/redfish/v1/Chassis/1/Power"}}))
        })
        .route(Method::Get, "/redfish/v1/Chassis/1/Power", |_| {
            json(serde_json::json!({"PowerControl": [
                {"Name": "System Power", "PowerConsumedWatts": 212.0, "Status": {"Health": "Warning"}}
            ]}))
        })
        .route(
            Method::Post,
            "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            move |req| {
                if !authorized(&d, req) {
                    return Response::new(401);
                }
                d.resets.fetch_add(1, Ordering::Relaxed);
                Response::new(204)
            },
        );
    let mut reg = prometheus_client::registry::Registry::default();
    let http = HttpMetrics::register(&mut CatalogBuilder::new(&mut reg, "fake", 100));
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), Limits::default()).unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, _thread) = server
        .spawn(Arc::new(HttpService::new(router, http)))
        .unwrap();
    (addr, st, stop)
}

fn client(addr: std::net::SocketAddr, password: &str) -> RedfishBmc {
    RedfishBmc::new(
        addr,
        "admin",
        password,
        Tls::PlainHttp,
        Duration::from_secs(5),
    )
    .unwrap()
}

#[test]
fn uses_a_session_token_and_logs_in_again_when_it_expires() {
    let (addr, st, stop) = start();
    let r = client(addr, "secret");
    assert!(r.power_on().unwrap());
    assert!(r.power_on().unwrap());
    assert_eq!(st.logins.load(Ordering::Relaxed), 1, "one session, reused");
    // The service forgets the session: one new login, then the call succeeds.
    *st.valid_token.lock().unwrap() = "something-else".into();
    assert!(r.power_on().unwrap());
    assert_eq!(st.logins.load(Ordering::Relaxed), 2);
    assert_eq!(
        st.basic_seen.load(Ordering::Relaxed),
        0,
        "no Basic auth when sessions work"
    );
    r.reset(ResetType::ForceOff).unwrap();
    assert_eq!(st.resets.load(Ordering::Relaxed), 1);
    stop.stop();
}

#[test]
fn unadvertised_reset_types_are_refused_without_calling() {
    let (addr, st, stop) = start();
    let r = client(addr, "secret");
    let err = r.reset(ResetType::GracefulShutdown).unwrap_err();
    assert_eq!(
        err,
        RedfishError::NotAdvertised {
            reset_type: "GracefulShutdown",
            allowed: vec!["On".into(), "ForceOff".into()]
        }
    );
    assert_eq!(
        st.resets.load(Ordering::Relaxed),
        0,
        "the BMC was not asked"
    );
    assert!(
        err.to_string()
            .contains("not advertised by the BMC (it allows On, ForceOff)"),
        "{err}"
    );
    stop.stop();
}

#[test]
fn power_consumption_from_the_chassis_power_resource() {
    let (addr, _st, stop) = start();
    let readings = client(addr, "secret").sensors().unwrap();
    assert_eq!(
        readings,
        vec![RedfishReading {
            name: "System Power".into(),
            value: Some(212.0),
            unit: "watts",
            state: "non_critical"
        }]
    );
    stop.stop();
}

#[test]
fn refused_session_login_is_an_auth_error() {
    let (addr, _st, stop) = start();
    let err = client(addr, "wrong").power_on().unwrap_err();
    assert_eq!(err.kind(), "auth_failed", "{err}");
    stop.stop();
}

#[test]
fn a_login_answered_without_a_token_falls_back_to_basic_auth() {
    let (addr, st, stop) = start_with(Opts {
        login: LoginAnswer::NoContentNoToken,
    });
    let r = client(addr, "secret");
    assert!(r.power_on().unwrap());
    assert!(r.power_on().unwrap());
    assert_eq!(
        st.logins.load(Ordering::Relaxed),
        1,
        "asked once, then Basic"
    );
    assert!(st.basic_seen.load(Ordering::Relaxed) >= 2);
    stop.stop();
}
