//! Every command: what it asks of the manager or the gateway, and what it prints.

use std::process::ExitCode;

use anyhow::Context;
use conduit_api::agent as a;
use conduit_api::manager as m;

use crate::client::{explain, manager_endpoint, read_ca, session_of, Conduit};
use crate::output::{clean, or_dash, print, table, Format};
use crate::session::SessionStore;
use crate::terminal;

/// A command used wrongly (exit status 2, with its usage), as opposed to one that failed.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

macro_rules! usage {
    ($($t:tt)*) => {
        anyhow::Error::new(Usage(format!($($t)*)))
    };
}

/// A command's words and flags, as parsed.
#[derive(Debug, Default)]
pub struct Args {
    /// Words after the command's name.
    pub words: Vec<String>,
    /// Flags given, with their values (`None` for switches).
    pub flags: Vec<(String, Option<String>)>,
    /// `--output`.
    pub format: Option<Format>,
}

impl Args {
    /// A flag's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Whether a switch is given.
    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    fn format(&self) -> Format {
        self.format.unwrap_or(Format::Table)
    }

    /// The one word `what`, or an error naming it.
    fn one(&self, what: &str) -> anyhow::Result<&str> {
        match self.words.as_slice() {
            [w] => Ok(w),
            [] => Err(usage!("give the {what}")),
            _ => Err(usage!("give one {what} (got {})", self.words.join(" "))),
        }
    }
}

fn conduit() -> anyhow::Result<Conduit> {
    Conduit::open(SessionStore::from_env()?)
}

/// Calls the manager with the stored login.
fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    c: &Conduit,
    service: &str,
    method: &str,
    req: &Req,
    what: &str,
) -> anyhow::Result<Resp> {
    c.manager(service, method, req)
        .map_err(|e| explain(what, e))
}

/// Every page of a list.
fn pages<T>(
    mut page: impl FnMut(Option<String>) -> anyhow::Result<(Vec<T>, Option<String>)>,
) -> anyhow::Result<Vec<T>> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let (rows, next) = page(token)?;
        all.extend(rows);
        match next {
            Some(t) => token = Some(t),
            None => return Ok(all),
        }
    }
}

/// `login`.
pub fn login(args: &Args) -> anyhow::Result<ExitCode> {
    let store = SessionStore::from_env()?;
    let previous = store.load().ok().flatten();
    let manager = args
        .get("manager")
        .map(str::to_owned)
        .or_else(|| previous.as_ref().map(|s| s.manager.clone()))
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let ca_file = args
        .get("ca")
        .map(|p| std::fs::canonicalize(p).with_context(|| format!("--ca {p}")))
        .transpose()?
        .or_else(|| previous.as_ref().and_then(|s| s.ca_file.clone()));
    let endpoint = manager_endpoint(&manager, read_ca(ca_file.as_deref())?)?;
    if let Ok(t) = conduit_connect::parse_url(&manager) {
        let local = t.host == "localhost"
            || t.host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !t.tls && !local {
            eprintln!(
                "conduit: warning: {manager} is plain http: the password and tokens cross the \
                 network readable; use the https address of the manager's TLS proxy"
            );
        }
    }
    let (req, api_key) = if args.has("api-key-stdin") {
        let key = terminal::read_stdin_line("API key")?;
        (
            m::LoginRequest {
                api_key: Some(key.clone()),
                ..Default::default()
            },
            Some(key),
        )
    } else {
        let email = match args.get("email") {
            Some(e) => e.to_owned(),
            None if args.has("password-stdin") => {
                return Err(usage!("--password-stdin needs --email"))
            }
            None => {
                eprint!("E-mail: ");
                terminal::read_stdin_line("e-mail")?
            }
        };
        let password = if args.has("password-stdin") {
            terminal::read_stdin_line("password")?
        } else {
            terminal::read_password(&format!("Password for {email}: "))?
        };
        (
            m::LoginRequest {
                email: Some(email),
                password: Some(password),
                api_key: None,
            },
            None,
        )
    };
    let t: m::TokenResponse = endpoint
        .call(m::AUTH_SERVICE, "Login", None, &req)
        .map_err(|e| explain(&format!("logging in at {manager}"), e))?;
    let s = session_of(&manager, ca_file, api_key, t);
    {
        let _lock = store.lock()?;
        store.save(&s)?;
    }
    let u = &s.user;
    println!(
        "logged in to {manager} as {} ({}{}); the login is kept in {}",
        u.email,
        u.role,
        u.customer_id
            .as_deref()
            .map_or(String::new(), |c| format!(" of customer {c}")),
        store.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `logout`.
pub fn logout(_: &Args) -> anyhow::Result<ExitCode> {
    let store = SessionStore::from_env()?;
    let Some(s) = store.load()? else {
        println!("not logged in");
        return Ok(ExitCode::SUCCESS);
    };
    if s.api_key.is_some() {
        // A key's logins share one session at the manager: ending it would lock out every
        // other user of the key. Only this copy goes; `conduit api-keys revoke` ends the key.
        let _lock = store.lock()?;
        store.remove()?;
        println!(
            "forgot the API-key login to {} (the key stays valid)",
            s.manager
        );
        return Ok(ExitCode::SUCCESS);
    }
    let c = Conduit::open(store.clone())?;
    // The manager ends the login everywhere (its refresh token, its access tokens at the
    // gateways); the local copy goes whatever it answers.
    let said: Result<m::Empty, _> = c.manager(m::AUTH_SERVICE, "Logout", &m::Empty {});
    {
        let _lock = store.lock()?;
        store.remove()?;
    }
    match said {
        Ok(_) => println!("logged out of {}", s.manager),
        Err(e) => eprintln!(
            "conduit: the manager did not confirm the logout ({e}); the local login is removed"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `whoami`.
pub fn whoami(args: &Args) -> anyhow::Result<ExitCode> {
    let c = conduit()?;
    let u: m::UserInfo = call(&c, m::AUTH_SERVICE, "WhoAmI", &m::Empty {}, "whoami")?;
    print(
        args.format(),
        &u,
        &["USER", "EMAIL", "NAME", "ROLE", "CUSTOMER"],
        || {
            vec![vec![
                u.user_id.clone(),
                u.email.clone(),
                u.name.clone(),
                u.role.clone(),
                or_dash(u.customer_id.as_deref()),
            ]]
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `servers`.
pub fn servers(args: &Args) -> anyhow::Result<ExitCode> {
    let c = conduit()?;
    let all = pages(|token| {
        let r: m::ListServersResponse = call(
            &c,
            m::SERVER_SERVICE,
            "List",
            &m::ListServersRequest {
                page_size: 1000,
                page_token: token,
                customer_id: args.get("customer").map(str::to_owned),
                unassigned: args.has("unassigned"),
                datacenter: args.get("datacenter").map(str::to_owned),
                status: args.get("status").map(str::to_owned),
            },
            "listing servers",
        )?;
        Ok((r.servers, r.next_page_token))
    })?;
    print(
        args.format(),
        &all,
        &[
            "SERVER",
            "NAME",
            "DATACENTER",
            "PROTOCOL",
            "CUSTOMER",
            "STATUS",
            "CAPABILITIES",
        ],
        || {
            all.iter()
                .map(|s| {
                    vec![
                        s.server_id.clone(),
                        s.name.clone(),
                        s.datacenter.clone(),
                        s.protocol.clone(),
                        or_dash(s.customer_id.as_deref()),
                        s.status.clone(),
                        s.capabilities.join(","),
                    ]
                })
                .collect()
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `server show SERVER`.
pub fn server_show(args: &Args) -> anyhow::Result<ExitCode> {
    let id = args.one("server id")?;
    let c = conduit()?;
    let s: m::Server = call(
        &c,
        m::SERVER_SERVICE,
        "Get",
        &m::ServerRef {
            server_id: id.to_owned(),
        },
        &format!("server {id}"),
    )?;
    // What the gateway knows (the BMC's identity) is a live query: shown when it answers.
    let located = c.locate(id);
    let live: anyhow::Result<a::GetServerResponse> = match &located {
        Ok((loc, gw)) => c.gateway_at(
            loc,
            gw,
            "GetServer",
            &a::ServerRequest {
                server_id: id.to_owned(),
            },
        ),
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    let gateway = located.ok().map(|(l, _)| l);
    if args.format() == Format::Json {
        let v = serde_json::json!({
            "server": s,
            "location": gateway,
            "bmc": live.as_ref().ok(),
            "bmcError": live.as_ref().err().map(|e| format!("{e:#}")),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        vec!["server".into(), s.server_id.clone()],
        vec!["name".into(), s.name.clone()],
        vec!["datacenter".into(), s.datacenter.clone()],
        vec!["customer".into(), or_dash(s.customer_id.as_deref())],
        vec!["status".into(), s.status.clone()],
        vec!["protocol".into(), s.protocol.clone()],
        vec!["capabilities".into(), s.capabilities.join(",")],
        vec!["agent".into(), or_dash(s.agent_id.as_deref())],
        vec![
            "gateway".into(),
            gateway.map_or("- (not reachable now)".into(), |g| {
                format!("{} ({})", g.gateway_id, g.gateway_address)
            }),
        ],
    ];
    match &live {
        Ok(b) => {
            rows.push(vec!["manufacturer".into(), b.manufacturer.clone()]);
            rows.push(vec!["product".into(), b.product.clone()]);
            rows.push(vec!["firmware".into(), b.firmware.clone()]);
        }
        Err(e) => rows.push(vec!["bmc".into(), format!("{e:#}")]),
    }
    print!("{}", table(&["FIELD", "VALUE"], &rows));
    Ok(ExitCode::SUCCESS)
}

/// What one server's power command came to.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PowerResult {
    server_id: String,
    ok: bool,
    /// `on` or `off` (status).
    #[serde(skip_serializing_if = "Option::is_none")]
    power: Option<String>,
    /// The action done.
    #[serde(skip_serializing_if = "Option::is_none")]
    done: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `power ACTION SERVER…`: every server at once, one line each.
pub fn power(args: &Args) -> anyhow::Result<ExitCode> {
    let Some((action, servers)) = args.words.split_first() else {
        return Err(usage!(
            "give an action (status, on, off, cycle, reset, soft) and one or more servers"
        ));
    };
    if !["status", "on", "off", "cycle", "reset", "soft"].contains(&action.as_str()) {
        return Err(usage!(
            "power {action:?}: give status, on, off, cycle, reset or soft"
        ));
    }
    if servers.is_empty() {
        return Err(usage!("power {action}: give one or more servers"));
    }
    // Each server once: `power cycle s1 s1` must not cycle it twice.
    let mut unique: Vec<String> = Vec::new();
    for s in servers {
        if !unique.contains(s) {
            unique.push(s.clone());
        }
    }
    let servers = &unique[..];
    let c = conduit()?;
    // Renewed once here, not by every thread at once.
    c.token().map_err(|e| explain("your login", e))?;
    let results: Vec<PowerResult> = servers
        .chunks(POWER_PARALLEL)
        .flat_map(|batch| power_batch(&c, action, batch))
        .collect();
    let failed = results.iter().filter(|r| !r.ok).count();
    if args.format() == Format::Json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        let width = servers.iter().map(|s| s.len()).max().unwrap_or(0);
        for r in &results {
            match (&r.power, &r.done, &r.error) {
                (Some(p), _, _) => println!("{:width$}  {}", r.server_id, clean(p)),
                (_, Some(d), _) => println!("{:width$}  {} done", r.server_id, clean(d)),
                (_, _, Some(e)) => println!("{:width$}  error: {}", r.server_id, clean(e)),
                _ => {}
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Servers whose power is asked about or changed at once.
const POWER_PARALLEL: usize = 16;

fn power_batch(c: &Conduit, action: &str, servers: &[String]) -> Vec<PowerResult> {
    std::thread::scope(|scope| {
        let jobs: Vec<_> = servers
            .iter()
            .map(|server| {
                scope.spawn(move || {
                    let mut r = PowerResult {
                        server_id: server.clone(),
                        ok: true,
                        power: None,
                        done: None,
                        error: None,
                    };
                    let asked = if action == "status" {
                        c.gateway::<_, a::PowerStatusResponse>(
                            server,
                            "PowerStatus",
                            &a::ServerRequest {
                                server_id: server.clone(),
                            },
                        )
                        .map(|p| r.power = Some(p.power))
                    } else {
                        c.gateway::<_, a::PowerActionResponse>(
                            server,
                            "PowerAction",
                            &a::PowerActionRequest {
                                server_id: server.clone(),
                                action: action.to_owned(),
                            },
                        )
                        .map(|p| r.done = Some(p.action))
                    };
                    if let Err(e) = asked {
                        r.ok = false;
                        r.error = Some(format!("{e:#}"));
                    }
                    r
                })
            })
            .collect();
        // Panics abort (the workspace's one strategy): a join never fails.
        jobs.into_iter().filter_map(|j| j.join().ok()).collect()
    })
}

/// `sensors SERVER`.
pub fn sensors(args: &Args) -> anyhow::Result<ExitCode> {
    let id = args.one("server id")?;
    let c = conduit()?;
    let r: a::GetSensorsResponse = c.gateway(
        id,
        "GetSensors",
        &a::ServerRequest {
            server_id: id.to_owned(),
        },
    )?;
    print(
        args.format(),
        &r,
        &["SENSOR", "VALUE", "UNIT", "STATE"],
        || {
            r.sensors
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.value.map_or("-".into(), |v| v.to_string()),
                        s.unit.clone(),
                        s.state.clone(),
                    ]
                })
                .collect()
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `boot SERVER [DEVICE]`.
pub fn boot(args: &Args) -> anyhow::Result<ExitCode> {
    let (id, device) = match args.words.as_slice() {
        [id] => (id, None),
        [id, d] => (id, Some(d)),
        _ => {
            return Err(usage!(
                "give a server, and a device (pxe, disk, cdrom, bios) to set one"
            ))
        }
    };
    let c = conduit()?;
    let r: a::BootDeviceResponse = match device {
        None => c.gateway(
            id,
            "GetBootDevice",
            &a::ServerRequest {
                server_id: id.clone(),
            },
        )?,
        Some(d) => c.gateway(
            id,
            "SetBootDevice",
            &a::SetBootDeviceRequest {
                server_id: id.clone(),
                device: d.clone(),
                persistent: args.has("persistent"),
            },
        )?,
    };
    print(
        args.format(),
        &r,
        &["SERVER", "BOOT DEVICE", "PERSISTENT"],
        || {
            vec![vec![
                r.server_id.clone(),
                r.device.clone(),
                r.persistent.to_string(),
            ]]
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `sel SERVER [--clear]`.
pub fn sel(args: &Args) -> anyhow::Result<ExitCode> {
    let id = args.one("server id")?;
    let c = conduit()?;
    let req = a::ServerRequest {
        server_id: id.to_owned(),
    };
    if args.has("clear") {
        let _: a::ClearEventLogResponse = c.gateway(id, "ClearEventLog", &req)?;
        println!("{id}: event log cleared");
        return Ok(ExitCode::SUCCESS);
    }
    let r: a::EventLogResponse = c.gateway(id, "GetEventLog", &req)?;
    print(
        args.format(),
        &r,
        &["ID", "TIME", "SEVERITY", "SENSOR", "EVENT"],
        || {
            r.events
                .iter()
                .map(|e| {
                    vec![
                        e.id.clone(),
                        e.time.map_or("-".into(), |t| format!("{t:.0}")),
                        e.severity.clone(),
                        e.sensor.clone(),
                        e.event.clone(),
                    ]
                })
                .collect()
        },
    )?;
    if !r.complete && args.format() == Format::Table {
        eprintln!("conduit: the log is longer than one read; the newest entries may be missing");
    }
    Ok(ExitCode::SUCCESS)
}

/// `console SERVER`.
pub fn console(args: &Args) -> anyhow::Result<ExitCode> {
    let id = args.one("server id")?;
    let c = conduit()?;
    crate::console::sol(&c, id, args.has("takeover"))?;
    Ok(ExitCode::SUCCESS)
}

/// `vnc SERVER`.
pub fn vnc(args: &Args) -> anyhow::Result<ExitCode> {
    let id = args.one("server id")?;
    let port = match args.get("port") {
        Some(p) => p.parse().with_context(|| format!("--port {p:?}"))?,
        None => 0,
    };
    let c = conduit()?;
    crate::vnc::serve(&c, id, port)?;
    Ok(ExitCode::SUCCESS)
}

/// `customers [create NAME]`.
pub fn customers(args: &Args) -> anyhow::Result<ExitCode> {
    let c = conduit()?;
    match args.words.split_first() {
        None => {
            let all = pages(|token| {
                let r: m::ListCustomersResponse = call(
                    &c,
                    m::CUSTOMER_SERVICE,
                    "List",
                    &m::PageRequest {
                        page_size: 1000,
                        page_token: token,
                    },
                    "listing customers",
                )?;
                Ok((r.customers, r.next_page_token))
            })?;
            print(args.format(), &all, &["CUSTOMER", "NAME"], || {
                all.iter()
                    .map(|c| vec![c.customer_id.clone(), c.name.clone()])
                    .collect()
            })?;
        }
        Some((w, name)) if w == "create" && !name.is_empty() => {
            let name = name.join(" ");
            let r: m::Customer = call(
                &c,
                m::CUSTOMER_SERVICE,
                "Create",
                &m::CreateCustomerRequest { name },
                "creating the customer",
            )?;
            print(args.format(), &r, &["CUSTOMER", "NAME"], || {
                vec![vec![r.customer_id.clone(), r.name.clone()]]
            })?;
        }
        _ => return Err(usage!("give nothing (list) or `create NAME`")),
    }
    Ok(ExitCode::SUCCESS)
}

fn user_rows(users: &[m::UserInfo]) -> Vec<Vec<String>> {
    users
        .iter()
        .map(|u| {
            vec![
                u.user_id.clone(),
                u.email.clone(),
                u.role.clone(),
                or_dash(u.customer_id.as_deref()),
                if u.disabled { "disabled" } else { "enabled" }.into(),
                u.name.clone(),
            ]
        })
        .collect()
}

const USER_HEADER: [&str; 6] = ["USER", "EMAIL", "ROLE", "CUSTOMER", "STATE", "NAME"];

/// `users [create EMAIL]`.
pub fn users(args: &Args) -> anyhow::Result<ExitCode> {
    let c = conduit()?;
    match args.words.as_slice() {
        [] => {
            let all = pages(|token| {
                let r: m::ListUsersResponse = call(
                    &c,
                    m::USER_SERVICE,
                    "List",
                    &m::ListUsersRequest {
                        page_size: 1000,
                        page_token: token,
                        customer_id: args.get("customer").map(str::to_owned),
                    },
                    "listing users",
                )?;
                Ok((r.users, r.next_page_token))
            })?;
            print(args.format(), &all, &USER_HEADER, || user_rows(&all))?;
        }
        [w, email] if w == "create" => {
            let role = args
                .get("role")
                .ok_or_else(|| usage!("--role admin|operator|viewer is needed"))?;
            let password = if args.has("password-stdin") {
                terminal::read_stdin_line("password")?
            } else {
                let p = terminal::read_password(&format!("Initial password for {email}: "))?;
                let again = terminal::read_password("Again: ")?;
                anyhow::ensure!(p == again, "the passwords differ");
                p
            };
            let u: m::UserInfo = call(
                &c,
                m::USER_SERVICE,
                "Create",
                &m::CreateUserRequest {
                    email: email.clone(),
                    name: args.get("name").unwrap_or_default().to_owned(),
                    password,
                    role: role.to_owned(),
                    customer_id: args.get("customer").map(str::to_owned),
                },
                "creating the user",
            )?;
            print(args.format(), &u, &USER_HEADER, || {
                user_rows(std::slice::from_ref(&u))
            })?;
        }
        [w, id] if w == "disable" || w == "enable" => {
            let u: m::UserInfo = call(
                &c,
                m::USER_SERVICE,
                "Update",
                &m::UpdateUserRequest {
                    user_id: id.clone(),
                    disabled: Some(w == "disable"),
                    ..Default::default()
                },
                &format!("{w} user {id}"),
            )?;
            print(args.format(), &u, &USER_HEADER, || {
                user_rows(std::slice::from_ref(&u))
            })?;
        }
        _ => {
            return Err(usage!(
                "give nothing (list), `create EMAIL`, `disable USER` or `enable USER`"
            ))
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `assign SERVER CUSTOMER` or `assign SERVER --none`.
pub fn assign(args: &Args) -> anyhow::Result<ExitCode> {
    let (server, customer) = match (args.words.as_slice(), args.has("none")) {
        ([s, c], false) => (s, Some(c.clone())),
        ([s], true) => (s, None),
        _ => {
            return Err(usage!(
                "give a server and a customer, or a server and --none"
            ))
        }
    };
    let c = conduit()?;
    let s: m::Server = call(
        &c,
        m::SERVER_SERVICE,
        "Assign",
        &m::AssignServerRequest {
            server_id: server.clone(),
            customer_id: customer,
        },
        &format!("assigning {server}"),
    )?;
    match &s.customer_id {
        Some(cust) => println!("{} belongs to customer {cust}", s.server_id),
        None => println!("{} is unassigned", s.server_id),
    }
    Ok(ExitCode::SUCCESS)
}

fn credential(args: &Args, r: &m::CredentialResponse, kind: &str) -> anyhow::Result<()> {
    if args.format() == Format::Json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        println!("{}", r.credential);
        eprintln!(
            "conduit: {kind} {}'s credential, shown this once: keep it in the {kind}'s \
             credential file (mode 0600)",
            r.id
        );
    }
    Ok(())
}

/// `create ID --datacenter DC [--name N]` (the credential printed once) or `revoke ID` of a
/// `kind` of component (`gateway`, `agent`) at `service`, whose requests name it `id_field`.
fn create_or_revoke(
    c: &Conduit,
    args: &Args,
    service: &str,
    kind: &str,
    id_field: &str,
    word: &str,
    id: &str,
) -> anyhow::Result<()> {
    if word == "revoke" {
        let _: m::Empty = call(
            c,
            service,
            "Revoke",
            &serde_json::json!({ id_field: id }),
            &format!("revoking {kind} {id}"),
        )?;
        println!("{kind} {id} revoked");
        return Ok(());
    }
    let datacenter = args
        .get("datacenter")
        .ok_or_else(|| usage!("--datacenter DC is needed"))?;
    let r: m::CredentialResponse = call(
        c,
        service,
        "Create",
        &serde_json::json!({
            id_field: id,
            "name": args.get("name").unwrap_or_default(),
            "datacenter": datacenter,
        }),
        &format!("creating {kind} {id}"),
    )?;
    credential(args, &r, kind)
}

/// `gateways`, `gateways create ID --datacenter DC`, `gateways revoke ID`.
pub fn gateways(args: &Args) -> anyhow::Result<ExitCode> {
    let c = conduit()?;
    let svc = m::GATEWAY_SERVICE;
    match args.words.as_slice() {
        [] => {
            let r: m::ListGatewaysResponse =
                call(&c, svc, "List", &m::Empty {}, "listing gateways")?;
            print(
                args.format(),
                &r,
                &[
                    "GATEWAY",
                    "DATACENTER",
                    "STATUS",
                    "ADDRESS",
                    "VERSION",
                    "NAME",
                ],
                || {
                    r.gateways
                        .iter()
                        .map(|g| {
                            vec![
                                g.gateway_id.clone(),
                                g.datacenter.clone(),
                                g.status.clone(),
                                g.address.clone(),
                                g.version.clone(),
                                g.name.clone(),
                            ]
                        })
                        .collect()
                },
            )?;
        }
        [w, id] if w == "create" || w == "revoke" => {
            create_or_revoke(&c, args, svc, "gateway", "gatewayId", w, id)?
        }
        _ => {
            return Err(usage!(
                "give nothing (list), `create ID --datacenter DC` or `revoke ID`"
            ))
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `agents`, `agents create ID --datacenter DC`, `agents revoke ID`.
pub fn agents(args: &Args) -> anyhow::Result<ExitCode> {
    let c = conduit()?;
    let svc = m::AGENT_SERVICE;
    match args.words.as_slice() {
        [] => {
            let all = pages(|token| {
                let r: m::ListAgentsResponse = call(
                    &c,
                    svc,
                    "List",
                    &m::PageRequest {
                        page_size: 1000,
                        page_token: token,
                    },
                    "listing agents",
                )?;
                Ok((r.agents, r.next_page_token))
            })?;
            print(
                args.format(),
                &all,
                &["AGENT", "DATACENTER", "GATEWAY", "STATE", "NAME"],
                || {
                    all.iter()
                        .map(|a| {
                            vec![
                                a.agent_id.clone(),
                                a.datacenter.clone(),
                                or_dash(a.gateway_id.as_deref()),
                                if a.revoked {
                                    "revoked"
                                } else if a.connected {
                                    "connected"
                                } else {
                                    "disconnected"
                                }
                                .into(),
                                a.name.clone(),
                            ]
                        })
                        .collect()
                },
            )?;
        }
        [w, id] if w == "create" || w == "revoke" => {
            create_or_revoke(&c, args, svc, "agent", "agentId", w, id)?
        }
        _ => {
            return Err(usage!(
                "give nothing (list), `create ID --datacenter DC` or `revoke ID`"
            ))
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `api-keys`, `api-keys create NAME`, `api-keys revoke KEY`.
pub fn api_keys(args: &Args) -> anyhow::Result<ExitCode> {
    let c = conduit()?;
    let svc = m::API_KEY_SERVICE;
    let header = ["KEY", "ROLE", "CUSTOMER", "STATE", "NAME"];
    let rows = |keys: &[m::ApiKeyInfo]| -> Vec<Vec<String>> {
        keys.iter()
            .map(|k| {
                vec![
                    k.key_id.clone(),
                    k.role.clone(),
                    or_dash(k.customer_id.as_deref()),
                    if k.revoked { "revoked" } else { "active" }.into(),
                    k.name.clone(),
                ]
            })
            .collect()
    };
    match args.words.as_slice() {
        [] => {
            let r: m::ListApiKeysResponse = call(&c, svc, "List", &m::Empty {}, "listing keys")?;
            print(args.format(), &r, &header, || rows(&r.keys))?;
        }
        [w, name @ ..] if w == "create" && !name.is_empty() => {
            let r: m::CreateApiKeyResponse = call(
                &c,
                svc,
                "Create",
                &m::CreateApiKeyRequest {
                    name: name.join(" "),
                    role: args.get("role").map(str::to_owned),
                    customer_id: args.get("customer").map(str::to_owned),
                },
                "creating the key",
            )?;
            if args.format() == Format::Json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{}", r.api_key);
                eprintln!(
                    "conduit: key {} ({}), shown this once; log in with it: \
                     conduit login --api-key-stdin < FILE",
                    r.key.key_id, r.key.role
                );
            }
        }
        [w, id] if w == "revoke" => {
            let _: m::Empty = call(
                &c,
                svc,
                "Revoke",
                &m::RevokeApiKeyRequest { key_id: id.clone() },
                &format!("revoking key {id}"),
            )?;
            println!("key {id} revoked");
        }
        _ => return Err(usage!("give nothing (list), `create NAME` or `revoke KEY`")),
    }
    Ok(ExitCode::SUCCESS)
}
