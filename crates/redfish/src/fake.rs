//! A Redfish service with a SessionService (sushy-tools has none), in process: a session token
//! (or Basic auth) is required on the system resources, tokens can be expired by the test,
//! sessions hold slots until deleted, and logins, session deletions, resets and
//! Basic-authenticated requests are recorded. [`Opts`] picks how it answers the session login.

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
    /// 204 with `X-Auth-Token` and `Location`, as some services do.
    NoContent,
    /// 204 and no headers, as sushy-tools' static mockup server answers every POST.
    NoContentNoToken,
}

/// The `Location` the fake gives a new session `n`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Where {
    /// `/redfish/v1/SessionService/Sessions/<n>`.
    #[default]
    Path,
    /// The same as an absolute URL on the fake's own address.
    SameOrigin,
    /// The same path on another host (127.0.0.2, same port).
    OtherHost,
    /// Always `/redfish/v1/SessionService/Sessions/1`: slots handed out again.
    SameSlot,
}

#[derive(Debug, Clone, Copy, Default)]
struct Opts {
    login: LoginAnswer,
    location: Where,
    /// DELETE answers after 1 s.
    slow_delete: bool,
    /// A PATCH without `If-Match` gets 428.
    require_if_match: bool,
    /// Entries per page of the SEL (0: 2).
    page_size: usize,
    /// Every SEL page links back to the first.
    log_loop: bool,
    /// ClearLog gets 500 with a message.
    clear_refused: bool,
}

#[derive(Default)]
struct State {
    opts: Opts,
    logins: AtomicUsize,
    resets: AtomicUsize,
    /// Open sessions by slot: the token, and whether it is still accepted (a test can stop
    /// accepting tokens while the slot stays taken).
    sessions: Mutex<std::collections::BTreeMap<usize, (String, bool)>>,
    /// Every DELETE: path and the token it came with.
    deletes: Mutex<Vec<(String, Option<String>)>>,
    basic_seen: AtomicUsize,
    /// The system's boot override: target and enabled.
    boot: Mutex<(String, String)>,
    /// Every PATCH of the system: body and `If-Match`.
    patches: Mutex<Vec<(serde_json::Value, Option<String>)>>,
    /// Entries in the SEL.
    log_len: AtomicUsize,
    /// SEL pages served.
    pages: AtomicUsize,
    /// Every ClearLog body.
    clears: Mutex<Vec<serde_json::Value>>,
}

impl State {
    /// The service stops accepting every token it gave (the sessions keep their slots).
    fn expire_tokens(&self) {
        for (_, valid) in self.sessions.lock().unwrap().values_mut() {
            *valid = false;
        }
    }

    fn open_slots(&self) -> Vec<usize> {
        self.sessions.lock().unwrap().keys().copied().collect()
    }

    fn deletes(&self) -> Vec<(String, Option<String>)> {
        self.deletes.lock().unwrap().clone()
    }
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
    let token_ok = req.header("X-Auth-Token").is_some_and(|t| {
        st.sessions
            .lock()
            .unwrap()
            .values()
            .any(|(token, valid)| *valid && token == t)
    });
    let basic = format!("Basic {}", conduit_base64::encode(b"admin:secret"));
    token_ok || req.header("Authorization") == Some(basic.as_str())
}

/// `handler` behind the fake's authentication (401 otherwise).
fn guarded(
    st: &Arc<State>,
    handler: impl Fn(&State, &Request) -> Response + Send + Sync + 'static,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    let st = st.clone();
    move |req| {
        if !authorized(&st, req) {
            return Response::new(401);
        }
        handler(&st, req)
    }
}

fn login(st: &State, addr: std::net::SocketAddr, req: &Request) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    if v["UserName"] != "admin" || v["Password"] != "secret" {
        return Response::new(401);
    }
    let n = st.logins.fetch_add(1, Ordering::Relaxed) + 1;
    let status = match st.opts.login {
        LoginAnswer::NoContentNoToken => return Response::new(204),
        LoginAnswer::Created => 201,
        LoginAnswer::NoContent => 204,
    };
    let slot = if st.opts.location == Where::SameSlot {
        1
    } else {
        n
    };
    let token = format!("token-{n}");
    st.sessions
        .lock()
        .unwrap()
        .insert(slot, (token.clone(), true));
    let path = format!("/redfish/v1/SessionService/Sessions/{slot}");
    let location = match st.opts.location {
        Where::Path | Where::SameSlot => path,
        Where::SameOrigin => format!("http://{addr}{path}"),
        Where::OtherHost => format!("http://127.0.0.2:{}{path}", addr.port()),
    };
    Response::new(status)
        .with_header("X-Auth-Token", token)
        .with_header("Location", location)
}

fn delete_session(st: &State, req: &Request) -> Response {
    st.deletes.lock().unwrap().push((
        req.path.clone(),
        req.header("X-Auth-Token").map(str::to_owned),
    ));
    if st.opts.slow_delete {
        std::thread::sleep(Duration::from_secs(1));
    }
    let slot = req.params.iter().find(|(k, _)| *k == "id");
    let slot = slot.and_then(|(_, v)| v.parse::<usize>().ok());
    match slot.and_then(|n| st.sessions.lock().unwrap().remove(&n)) {
        Some(_) => Response::new(204),
        None => Response::new(404),
    }
}

/// The system's `@odata.etag`.
const ETAG: &str = "W/\"7\"";

fn system(st: &State) -> Response {
    let (target, enabled) = st.boot.lock().unwrap().clone();
    json(serde_json::json!({
        "@odata.etag": ETAG,
        "PowerState": "On",
        "Boot": {
            "BootSourceOverrideTarget": target,
            "BootSourceOverrideEnabled": enabled,
            "BootSourceOverrideTarget@Redfish.AllowableValues":
                ["None", "Pxe", "Hdd", "Cd", "BiosSetup"]
        },
        "LogServices": {"@odata.id": "/redfish/v1/Systems/1/LogServices"},
        "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1"}]},
        "Actions": {"#ComputerSystem.Reset": {
            "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff"]
        }}
    }))
}

fn error(status: u16, message: &str) -> Response {
    Response::new(status)
        .with_header("Content-Type", "application/json")
        .with_body(
            serde_json::json!({"error": {
                "code": "Base.1.8.GeneralError",
                "message": "See @Message.ExtendedInfo",
                "@Message.ExtendedInfo": [{"Message": message}]
            }})
            .to_string()
            .into_bytes(),
        )
}

/// PATCH of the system: takes a boot override, except Cd ("no media"); with
/// `require_if_match`, only with the current etag.
fn patch_system(st: &State, req: &Request) -> Response {
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let if_match = req.header("If-Match").map(str::to_owned);
    st.patches
        .lock()
        .unwrap()
        .push((body.clone(), if_match.clone()));
    if req.header("Content-Type") != Some("application/json") {
        return error(415, "JSON only");
    }
    if st.opts.require_if_match && if_match.as_deref() != Some(ETAG) {
        return error(428, "If-Match required");
    }
    let boot = &body["Boot"];
    let (Some(target), Some(enabled)) = (
        boot["BootSourceOverrideTarget"].as_str(),
        boot["BootSourceOverrideEnabled"].as_str(),
    ) else {
        return error(400, "Boot properties missing");
    };
    if target == "Cd" {
        return error(400, "No bootable media in the virtual drive");
    }
    *st.boot.lock().unwrap() = (target.to_owned(), enabled.to_owned());
    Response::new(204)
}

const SEL: &str = "/redfish/v1/Systems/1/LogServices/SEL";

/// A page of the SEL: `$skip` from the query, `page_size` entries, expanded.
fn sel_page(st: &State, req: &Request) -> Response {
    st.pages.fetch_add(1, Ordering::Relaxed);
    let per_page = if st.opts.page_size == 0 {
        2
    } else {
        st.opts.page_size
    };
    let len = st.log_len.load(Ordering::Relaxed);
    let skip = req
        .query_param("$skip")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let end = len.min(skip + per_page);
    let members: Vec<_> = (skip..end)
        .map(|i| {
            let n = i + 1;
            serde_json::json!({
                "@odata.id": format!("{SEL}/Entries/{n}"),
                "Id": n.to_string(),
                "EntryType": "SEL",
                "Severity": if n % 2 == 0 { "Warning" } else { "OK" },
                "Created": format!("2024-05-01T10:00:{:02}Z", n % 60),
                "Message": format!("event {n}"),
                "MessageId": "Event.1.0.Test"
            })
        })
        .collect();
    let mut page = serde_json::json!({"Members@odata.count": len, "Members": members});
    if st.opts.log_loop {
        page["Members@odata.nextLink"] = format!("{SEL}/Entries?$skip=0").into();
    } else if end < len {
        page["Members@odata.nextLink"] = format!("{SEL}/Entries?$skip={end}").into();
    }
    json(page)
}

fn clear_sel(st: &State, req: &Request) -> Response {
    st.clears
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&req.body).unwrap_or_default());
    if st.opts.clear_refused {
        return error(500, "The log is being written, try again later");
    }
    st.log_len.store(0, Ordering::Relaxed);
    Response::new(202)
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
        boot: Mutex::new(("None".into(), "Disabled".into())),
        log_len: AtomicUsize::new(5),
        ..State::default()
    });
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), Limits::default()).unwrap();
    let addr = server.local_addr().unwrap();
    let a = st.clone();
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
            move |req| login(&a, addr, req),
        )
        .route(
            Method::Delete,
            "/redfish/v1/SessionService/Sessions/{id}",
            guarded(&st, delete_session),
        )
        .route(
            Method::Get,
            "/redfish/v1/Systems",
            guarded(&st, |_, _| {
                json(serde_json::json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]}))
            }),
        )
        .route(
            Method::Get,
            "/redfish/v1/Systems/1",
            guarded(&st, |st, _| system(st)),
        )
        .route(
            Method::Patch,
            "/redfish/v1/Systems/1",
            guarded(&st, patch_system),
        )
        .route(
            Method::Get,
            "/redfish/v1/Systems/1/LogServices",
            guarded(&st, |_, _| {
                json(serde_json::json!({"Members": [{"@odata.id": SEL}]}))
            }),
        )
        .route(
            Method::Get,
            SEL,
            guarded(&st, |_, _| {
                json(serde_json::json!({
                    "Id": "SEL",
                    "Name": "System Event Log",
                    "LogEntryType": "SEL",
                    "Entries": {"@odata.id": format!("{SEL}/Entries")},
                    "Actions": {"#LogService.ClearLog": {
                        "target": format!("{SEL}/Actions/LogService.ClearLog")
                    }}
                }))
            }),
        )
        .route(
            Method::Get,
            "/redfish/v1/Systems/1/LogServices/SEL/Entries",
            guarded(&st, sel_page),
        )
        .route(
            Method::Post,
            "/redfish/v1/Systems/1/LogServices/SEL/Actions/LogService.ClearLog",
            guarded(&st, clear_sel),
        )
        .route(Method::Get, "/redfish/v1/Chassis/1", |_| {
            // A Sensors link to nothing (404) beside a Power resource.
            json(serde_json::json!({
                "Sensors": {"@odata.id": "/redfish/v1/Chassis/1/Sensors"},
                "Power": {"@odata.id": "/redfish/v1/Chassis/1/Power"}
            }))
        })
        .route(Method::Get, "/redfish/v1/Chassis/1/Power", |_| {
            json(serde_json::json!({"PowerControl": [
                {"Name": "System Power", "PowerConsumedWatts": 212.0, "Status": {"Health": "Warning"}}
            ]}))
        })
        .route(
            Method::Post,
            "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            guarded(&st, |st, _| {
                st.resets.fetch_add(1, Ordering::Relaxed);
                Response::new(204)
            }),
        );
    let mut reg = prometheus_client::registry::Registry::default();
    let http = HttpMetrics::register(&mut CatalogBuilder::new(&mut reg, "fake", 100));
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
    // The service stops taking the token: one new login, then the call succeeds, and the old
    // session is deleted with the new token.
    st.expire_tokens();
    assert!(r.power_on().unwrap());
    assert_eq!(st.logins.load(Ordering::Relaxed), 2);
    assert_eq!(
        st.deletes(),
        vec![(
            "/redfish/v1/SessionService/Sessions/1".into(),
            Some("token-2".into())
        )]
    );
    assert_eq!(st.open_slots(), vec![2], "the old slot is free again");
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
fn power_consumption_from_the_chassis_power_resource_when_sensors_fail() {
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
        ..Opts::default()
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

#[test]
fn logout_deletes_the_session_and_the_next_call_logs_in_again() {
    for login in [LoginAnswer::Created, LoginAnswer::NoContent] {
        let (addr, st, stop) = start_with(Opts {
            login,
            ..Opts::default()
        });
        let r = client(addr, "secret");
        assert!(r.power_on().unwrap());
        assert_eq!(st.open_slots(), vec![1], "{login:?}");
        r.logout().unwrap();
        assert_eq!(
            st.deletes(),
            vec![(
                "/redfish/v1/SessionService/Sessions/1".into(),
                Some("token-1".into())
            )],
            "{login:?}"
        );
        assert!(st.open_slots().is_empty());
        r.logout().unwrap(); // nothing left to end: no request
        assert_eq!(st.deletes().len(), 1);
        assert!(r.power_on().unwrap());
        assert_eq!(st.logins.load(Ordering::Relaxed), 2);
        assert_eq!(st.basic_seen.load(Ordering::Relaxed), 0);
        stop.stop();
    }
}

#[test]
fn an_absolute_location_on_the_same_origin_is_deleted_by_its_path() {
    let (addr, st, stop) = start_with(Opts {
        location: Where::SameOrigin,
        ..Opts::default()
    });
    let r = client(addr, "secret");
    assert!(r.power_on().unwrap());
    r.logout().unwrap();
    assert_eq!(
        st.deletes(),
        vec![(
            "/redfish/v1/SessionService/Sessions/1".into(),
            Some("token-1".into())
        )]
    );
    stop.stop();
}

#[test]
fn a_location_on_another_host_is_never_used() {
    let (addr, st, stop) = start_with(Opts {
        location: Where::OtherHost,
        ..Opts::default()
    });
    let r = client(addr, "secret");
    assert!(r.power_on().unwrap());
    st.expire_tokens();
    assert!(r.power_on().unwrap(), "logged in again");
    r.logout().unwrap();
    assert_eq!(st.deletes(), vec![], "neither on re-login nor on logout");
    assert_eq!(st.open_slots(), vec![1, 2], "left to expire");
    stop.stop();
}

#[test]
fn a_slot_handed_out_again_is_not_deleted_on_relogin() {
    let (addr, st, stop) = start_with(Opts {
        location: Where::SameSlot,
        ..Opts::default()
    });
    let r = client(addr, "secret");
    assert!(r.power_on().unwrap());
    st.expire_tokens();
    assert!(r.power_on().unwrap());
    assert_eq!(st.logins.load(Ordering::Relaxed), 2);
    assert_eq!(st.deletes(), vec![], "that path is the new session now");
    assert!(r.power_on().unwrap(), "which still works");
    assert_eq!(st.logins.load(Ordering::Relaxed), 2);
    stop.stop();
}

#[test]
fn logout_is_bounded_by_the_client_timeout() {
    let (addr, st, stop) = start_with(Opts {
        slow_delete: true,
        ..Opts::default()
    });
    let r = RedfishBmc::new(
        addr,
        "admin",
        "secret",
        Tls::PlainHttp,
        Duration::from_millis(300),
    )
    .unwrap();
    assert!(r.power_on().unwrap());
    let t = Instant::now();
    let err = r.logout().unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(st.deletes().len(), 1);
    stop.stop();
}

#[test]
fn logout_on_basic_auth_sends_nothing() {
    let (addr, st, stop) = start_with(Opts {
        login: LoginAnswer::NoContentNoToken,
        ..Opts::default()
    });
    let r = client(addr, "secret");
    r.logout().unwrap();
    assert!(r.power_on().unwrap());
    r.logout().unwrap();
    assert_eq!(st.deletes(), vec![]);
    stop.stop();
}

#[test]
fn boot_override_set_and_read_back() {
    let (addr, st, stop) = start();
    let r = client(addr, "secret");
    let b = r.boot().unwrap();
    assert_eq!(
        (b.enabled, b.target),
        (BootEnabled::Disabled, BootSource::None)
    );
    assert_eq!(b.allowed, Some(BootTarget::ALL.to_vec()));
    r.set_boot(BootTarget::BiosSetup, BootPersistence::Once)
        .unwrap();
    let b = r.boot().unwrap();
    assert_eq!(
        (b.enabled, b.target),
        (BootEnabled::Once, BootSource::Target(BootTarget::BiosSetup))
    );
    let patches = st.patches.lock().unwrap().clone();
    assert_eq!(
        patches,
        vec![(
            serde_json::json!({"Boot": {"BootSourceOverrideTarget": "BiosSetup",
                                        "BootSourceOverrideEnabled": "Once"}}),
            None
        )],
        "one PATCH, no If-Match unless asked for"
    );
    stop.stop();
}

#[test]
fn boot_override_refused_by_the_service_carries_its_message() {
    let (addr, _st, stop) = start();
    let err = client(addr, "secret")
        .set_boot(BootTarget::Cd, BootPersistence::Continuous)
        .unwrap_err();
    assert_eq!(err.kind(), "action_rejected");
    assert_eq!(
        err.to_string(),
        "the BMC refused boot override: HTTP 400: No bootable media in the virtual drive"
    );
    stop.stop();
}

#[test]
fn boot_override_asked_again_with_if_match_when_required() {
    let (addr, st, stop) = start_with(Opts {
        require_if_match: true,
        ..Opts::default()
    });
    let r = client(addr, "secret");
    r.set_boot(BootTarget::Pxe, BootPersistence::Continuous)
        .unwrap();
    let if_matches: Vec<_> = st
        .patches
        .lock()
        .unwrap()
        .iter()
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(if_matches, vec![None, Some(ETAG.to_owned())]);
    assert_eq!(
        r.boot().unwrap().target,
        BootSource::Target(BootTarget::Pxe)
    );
    stop.stop();
}

fn sel(r: &RedfishBmc) -> LogService {
    let services = r.log_services().unwrap();
    assert_eq!(services.len(), 1, "the fake has no manager: {services:?}");
    services.into_iter().next().unwrap()
}

#[test]
fn log_entries_across_pages_then_cleared() {
    let (addr, st, stop) = start();
    let r = client(addr, "secret");
    let log = sel(&r);
    assert_eq!(
        (log.scope, log.id.as_str(), log.kind, log.can_clear),
        (LogScope::System, "SEL", LogKind::Sel, true)
    );
    let read = r.log_entries(&log).unwrap();
    assert!(read.complete);
    let ids: Vec<_> = read.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"]);
    assert_eq!(st.pages.load(Ordering::Relaxed), 3, "2 + 2 + 1 per page");
    let second = &read.entries[1];
    assert_eq!(
        (second.severity, second.message.as_str()),
        (Some(Severity::Warning), "event 2")
    );
    r.clear_log(&log).unwrap();
    assert_eq!(*st.clears.lock().unwrap(), vec![serde_json::json!({})]);
    let read = r.log_entries(&log).unwrap();
    assert_eq!((read.entries.len(), read.complete), (0, true));
    stop.stop();
}

#[test]
fn a_refused_clear_carries_the_message() {
    let (addr, _st, stop) = start_with(Opts {
        clear_refused: true,
        ..Opts::default()
    });
    let r = client(addr, "secret");
    let err = r.clear_log(&sel(&r)).unwrap_err();
    assert_eq!(err.kind(), "action_rejected");
    assert_eq!(
        err.to_string(),
        "the BMC refused LogService.ClearLog: HTTP 500: The log is being written, try again later"
    );
    stop.stop();
}

#[test]
fn log_pages_and_entries_are_bounded() {
    // A next link back to a page already read.
    let (addr, st, stop) = start_with(Opts {
        log_loop: true,
        ..Opts::default()
    });
    let r = client(addr, "secret");
    let read = r.log_entries(&sel(&r)).unwrap();
    assert!(!read.complete);
    assert_eq!(
        st.pages.load(Ordering::Relaxed),
        2,
        "the first page, then ?$skip=0 once"
    );
    assert_eq!(read.entries.len(), 4);
    stop.stop();

    // A long log, in small pages: the page bound.
    let (addr, st, stop) = start();
    st.log_len.store(1500, Ordering::Relaxed);
    let r = client(addr, "secret");
    let read = r.log_entries(&sel(&r)).unwrap();
    assert_eq!((read.entries.len(), read.complete), (2 * MAX_PAGES, false));
    assert_eq!(st.pages.load(Ordering::Relaxed), MAX_PAGES);
    stop.stop();

    // In large pages: the entry bound.
    let (addr, st, stop) = start_with(Opts {
        page_size: 600,
        ..Opts::default()
    });
    st.log_len.store(1500, Ordering::Relaxed);
    let r = client(addr, "secret");
    let read = r.log_entries(&sel(&r)).unwrap();
    assert_eq!(
        (read.entries.len(), read.complete),
        (MAX_LOG_ENTRIES, false)
    );
    assert_eq!(read.entries.last().unwrap().id, MAX_LOG_ENTRIES.to_string());
    stop.stop();
}
