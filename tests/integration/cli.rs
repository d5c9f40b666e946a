//! The `conduit` CLI as a person uses it, against real binaries: a manager, a gateway, an
//! agent behind its uplink, an ipmi_sim BMC whose serial port the test holds and a TigerVNC
//! screen. Logging in (password on stdin, the login file private), the customer's servers
//! only, power on several servers at once with one line each and the exit status, the login
//! renewed when the manager refuses the token, the gateway found through the manager and
//! another customer refused; the serial console in a real terminal under tmux: typing reaches
//! the host, the host's echo is shown, ^C goes through, `~.` leaves and the terminal is as it
//! was (`stty -a`); the VNC listener relays the screen to this user and refuses another.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::*;
use serde_json::{json, Value};

use crate::gateway_uplink::{eventually, ipmi_bmc, Site, PASSWORD};
use crate::manager_api::ok;

/// Runs `conduit ARGS` with its login in `home`, `stdin` on its standard input.
fn cli(home: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin("conduit"))
        .args(args)
        .env("CONDUIT_CONFIG_DIR", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run conduit");
    // A command that fails before it reads its input closes the pipe: not an error here.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "$ conduit {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

fn login(site: &Site, home: &Path, email: &str) {
    let url = format!("http://{}", site.manager.addr);
    let o = cli(
        home,
        &[
            "login",
            "--manager",
            &url,
            "--email",
            email,
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(email), "{}", stdout(&o));
}

/// A tmux server of its own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(tag: &str, env: &[(&str, &str)]) -> Tmux {
        let t = Tmux {
            socket: format!("conduit-{tag}-{}", std::process::id()),
        };
        let mut args: Vec<String> = ["new-session", "-d", "-s", "t", "-x", "160", "-y", "40"]
            .map(String::from)
            .into();
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.push("sh".into());
        t.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let o = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux (apt install tmux)");
        assert!(
            o.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Types `keys` (tmux key names: `Enter`, `C-c`; `-l` for literal text).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn literal(&self, text: &str) {
        self.run(&["send-keys", "-t", "t", "-l", text]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t", "-S", "-200"])
    }

    fn wait_screen(&self, what: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{what:?} not on the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// What the host side of the serial port reads until `want` has come, within 15 s.
fn host_reads_until(serial: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    serial
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(want.len()).any(|w| w == want) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the host read {got:?}, not {want:?}"
        );
        if let Ok(n) = serial.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    got
}

#[test]
fn a_person_logs_in_powers_servers_and_uses_the_consoles_from_the_command_line() {
    use conduit_tests::vnc::{VncServer, PASSWORD as VNC_PASSWORD};
    let site = Site::new("cli");
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let (mut serial, _) = host.accept().expect("ipmi_sim dials the host side");
    let tiger = VncServer::tiger(true);
    let bmc = format!(
        "{}vnc_port = {}\nvnc_password = \"{VNC_PASSWORD}\"\n",
        ipmi_bmc("s1", sim.addr),
        tiger.addr.port()
    );
    let (gw, _agent) = site.acme_s1_behind(&bmc);
    // Another customer's server, on no agent.
    site.globex_server("g1");

    let dir = TempDir::new("cli-homes");
    let op = dir.0.join("operator");
    let o = cli(&op, &["servers"], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not logged in: run `conduit login"),
        "{}",
        stderr(&o)
    );
    let o = cli(
        &op,
        &[
            "login",
            "--manager",
            &format!("http://{}", site.manager.addr),
            "--email",
            "op@acme.test",
            "--password-stdin",
        ],
        "wrong password\n",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unauthenticated"), "{}", stderr(&o));
    login(&site, &op, "op@acme.test");
    // Locate, which every operation starts with, is counted as a server operation: no sample
    // before the first one.
    let located = |status: &str| {
        crate::gateway_uplink::metric(
            site.manager.addr,
            "manager_server_operations_total",
            &[("operation", "locate"), ("status", status)],
        )
    };
    assert_eq!(located("ok"), None, "no Locate yet");
    let session = op.join("session.json");
    assert_eq!(
        std::fs::metadata(&session).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let me = json_of(&cli(&op, &["whoami", "--output", "json"], ""));
    assert_eq!(
        (me["role"].as_str(), me["email"].as_str()),
        (Some("operator"), Some("op@acme.test"))
    );

    // Exactly the customer's servers.
    let servers = json_of(&cli(&op, &["servers", "--output", "json"], ""));
    let ids: Vec<&str> = servers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["serverId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s1"]);
    assert!(stdout(&cli(&op, &["servers"], "")).starts_with("SERVER "));

    // The manager learns which gateway reaches s1 from the gateway's next report.
    eventually("s1's gateway is known", Duration::from_secs(30), || {
        cli(&op, &["power", "status", "s1"], "")
            .status
            .success()
            .then_some(())
    });
    // Power: several servers at once, one line each; any failure makes the exit status 1.
    let o = cli(&op, &["power", "on", "s1"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "s1  on done");
    eventually("the BMC is on", Duration::from_secs(10), || {
        sim.power().then_some(())
    });
    let o = cli(&op, &["power", "status", "s1", "g1", "nosuch"], "");
    assert_eq!(o.status.code(), Some(1));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["s1", "on"]
    );
    assert!(
        lines[1].starts_with("g1      error: ") && lines[1].contains("not_found"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("nosuch  error: ") && lines[2].contains("not_found"),
        "{lines:?}"
    );
    let o = cli(&op, &["power", "status", "s1", "--output", "json"], "");
    assert_eq!(json_of(&o)[0]["power"], "on");
    let o = cli(&op, &["power", "sideways", "s1"], "");
    assert_eq!(o.status.code(), Some(2), "used wrongly");
    assert!(
        stderr(&o).contains("give status, on, off"),
        "{}",
        stderr(&o)
    );

    // The other reads go through the same gateway.
    let sensors = json_of(&cli(&op, &["sensors", "s1", "--output", "json"], ""));
    assert!(sensors["sensors"].is_array(), "{sensors}");
    let show = json_of(&cli(&op, &["server", "show", "s1", "--output", "json"], ""));
    assert_eq!(show["location"]["gatewayId"], "gw1");
    assert_eq!(
        show["location"]["gatewayAddress"],
        format!("http://{}", gw.addr)
    );
    let o = cli(&op, &["boot", "s1", "pxe"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sim.boot_device(), "pxe");
    assert!(cli(&op, &["sel", "s1"], "").status.success());

    // A token the manager no longer takes (here: damaged) is renewed with the refresh token,
    // once, and the command goes on.
    let mut s: Value = serde_json::from_slice(&std::fs::read(&session).unwrap()).unwrap();
    let old_refresh = s["refreshToken"].clone();
    s["accessToken"] = json!("not.a.token");
    std::fs::write(&session, serde_json::to_vec(&s).unwrap()).unwrap();
    let me = json_of(&cli(&op, &["whoami", "--output", "json"], ""));
    assert_eq!(me["email"], "op@acme.test");
    let s: Value = serde_json::from_slice(&std::fs::read(&session).unwrap()).unwrap();
    assert_ne!(s["accessToken"], "not.a.token");
    assert_ne!(
        s["refreshToken"], old_refresh,
        "the refresh token was used and replaced"
    );

    // Commands renewing an expired login at once: one uses the refresh token, the others
    // take what it got (a refresh token works once; a second use would end the login).
    let mut s: Value = serde_json::from_slice(&std::fs::read(&session).unwrap()).unwrap();
    s["expiresAt"] = json!(0);
    std::fs::write(&session, serde_json::to_vec(&s).unwrap()).unwrap();
    let together: Vec<_> = (0..3)
        .map(|_| {
            let op = op.clone();
            std::thread::spawn(move || cli(&op, &["whoami", "--output", "json"], ""))
        })
        .collect();
    for t in together {
        let o = t.join().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(cli(&op, &["power", "status", "s1"], "").status.success());

    // Another customer's user: the server is not found, at the manager and at the gateway.
    let other = dir.0.join("globex");
    login(&site, &other, "op@globex.test");
    assert!(
        located("ok").unwrap_or(0.0) >= 1.0,
        "the operations located s1"
    );
    // The operator's `power status s1 g1 nosuch` asked for two servers it may not see.
    assert_eq!(located("not_found"), Some(2.0));
    let o = cli(&other, &["power", "status", "s1"], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("not_found"), "{}", stdout(&o));
    assert_eq!(
        located("not_found"),
        Some(3.0),
        "another customer's Locate, refused"
    );
    let o = cli(&other, &["console", "s1"], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not_found"), "{}", stderr(&o));

    // The serial console in a real terminal.
    let conduit = bin("conduit");
    let tmux = Tmux::new("cli", &[("CONDUIT_CONFIG_DIR", op.to_str().unwrap())]);
    let before = dir.0.join("stty-before");
    let after = dir.0.join("stty-after");
    tmux.literal(&format!("stty -a > {}", before.display()));
    tmux.keys(&["Enter"]);
    tmux.literal(&format!("{} console s1; echo exit=$?", conduit.display()));
    tmux.keys(&["Enter"]);
    tmux.wait_screen("connected to s1's serial console");
    // Raw mode: no local echo, Enter is a carriage return, ^C goes to the host.
    std::thread::sleep(Duration::from_millis(500));
    tmux.literal("hello");
    tmux.keys(&["Enter"]);
    host_reads_until(&mut serial, b"hello\r");
    serial.write_all(b"echo: hello from the host\r\n").unwrap();
    tmux.wait_screen("echo: hello from the host");
    tmux.keys(&["C-c"]);
    host_reads_until(&mut serial, b"\x03");
    // `~.` only at the start of a line: typed mid-line it goes to the host.
    tmux.literal("a~.");
    host_reads_until(&mut serial, b"a~.");
    tmux.keys(&["Enter"]);
    tmux.literal("~?");
    tmux.wait_screen("supported escapes");
    tmux.keys(&["Enter"]);
    tmux.literal("~.");
    let screen = tmux.wait_screen("exit=0");
    assert!(screen.contains("left s1's console"), "{screen}");
    tmux.literal(&format!("stty -a > {}", after.display()));
    tmux.keys(&["Enter"]);
    eventually("stty ran", Duration::from_secs(10), || {
        std::fs::read_to_string(&after)
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(
        std::fs::read_to_string(&before).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
        "the terminal is as it was"
    );
    // The gateway ending the console (an admin's CloseSession) restores the terminal too,
    // and says why.
    tmux.literal(&format!("{} console s1; echo exit=$?", conduit.display()));
    tmux.keys(&["Enter"]);
    eventually("connected again", Duration::from_secs(20), || {
        (tmux
            .screen()
            .matches("connected to s1's serial console")
            .count()
            == 2)
            .then_some(())
    });
    let sessions = eventually("the session is listed", Duration::from_secs(10), || {
        let (_, v) = site.gw(&gw, "ListSessions", Some(&site.admin), json!({}));
        let s = v["sessions"].as_array()?.first()?.clone();
        Some(s)
    });
    let (status, _) = site.gw(
        &gw,
        "CloseSession",
        Some(&site.admin),
        json!({"sessionId": sessions["sessionId"]}),
    );
    assert_eq!(status, 200);
    let screen = tmux.wait_screen("exit=1");
    assert!(
        screen.contains("s1's console ended: closed by admin"),
        "{screen}"
    );
    let same_terminal = |when: &str| {
        std::fs::remove_file(&after).unwrap();
        tmux.literal(&format!("stty -a > {}", after.display()));
        tmux.keys(&["Enter"]);
        // A terminal left raw would not run the command (no newline translation): no file.
        let now = eventually("stty ran", Duration::from_secs(10), || {
            std::fs::read_to_string(&after)
                .ok()
                .filter(|s| !s.is_empty())
        });
        assert_eq!(
            std::fs::read_to_string(&before).unwrap(),
            now,
            "the terminal is as it was {when}"
        );
    };
    same_terminal("after the gateway ended the console");
    // A signal (here SIGTERM) ends the console and restores the terminal too.
    tmux.literal("clear");
    tmux.keys(&["Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.run(&["clear-history", "-t", "t"]);
    tmux.literal(&format!("{} console s1; echo exit=$?", conduit.display()));
    tmux.keys(&["Enter"]);
    tmux.wait_screen("connected to s1's serial console");
    // The console is the child of the pane's shell (not any `conduit` of another test).
    let shell = tmux.run(&["display-message", "-p", "-t", "t", "#{pane_pid}"]);
    let pid = eventually("the console's process", Duration::from_secs(10), || {
        let o = Command::new("pgrep")
            .args(["-P", shell.trim(), "-x", "conduit"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .map(str::to_owned)
    });
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    tmux.wait_screen("exit=143");
    same_terminal("after SIGTERM");

    // The graphical console for a native viewer: this user's connection gets the screen.
    let vnc_port = free_port();
    let mut relay = Command::new(&conduit)
        .args(["vnc", "s1", "--port", &vnc_port.to_string()])
        .env("CONDUIT_CONFIG_DIR", &op)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut first = [0u8; 256];
    let n = relay.stdout.as_mut().unwrap().read(&mut first).unwrap();
    let said = String::from_utf8_lossy(&first[..n]).into_owned();
    assert!(said.contains(&format!("127.0.0.1:{vnc_port}")), "{said}");
    let mut viewer = TcpStream::connect(("127.0.0.1", vnc_port)).unwrap();
    viewer
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut version = [0u8; 12];
    viewer.read_exact(&mut version).unwrap();
    assert_eq!(
        &version, b"RFB 003.008\n",
        "the agent's RFB greeting, relayed"
    );
    drop(viewer);
    // Another local user's program is refused (needs root to be another user).
    if rustix::process::getuid().is_root() {
        let o = Command::new("runuser")
            .args(["-u", "nobody", "--", "python3", "-c"])
            .arg(format!(
                "import socket;s=socket.create_connection(('127.0.0.1',{vnc_port}));\
                 s.settimeout(5);print(repr(s.recv(12)))"
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "b''",
            "another user gets nothing: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let _ = relay.kill();
    let _ = relay.wait();

    // Logging out ends the login at the manager and here.
    let o = cli(&op, &["logout"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!session.exists());
    let o = cli(&op, &["whoami"], "");
    assert!(stderr(&o).contains("not logged in"), "{}", stderr(&o));
}

#[test]
fn an_admin_administers_from_the_command_line_and_a_script_logs_in_with_a_key() {
    use crate::manager_api::ADMIN;
    let site = Site::new("cli-admin");
    let dir = TempDir::new("cli-admin-homes");
    let admin = dir.0.join("admin");
    let url = format!("http://{}", site.manager.addr);
    let o = cli(
        &admin,
        &[
            "login",
            "--manager",
            &url,
            "--email",
            ADMIN.0,
            "--password-stdin",
        ],
        &format!("{}\n", ADMIN.1),
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // A customer, a user of it, a server assigned to it.
    let c = json_of(&cli(
        &admin,
        &["customers", "create", "Initech", "--output", "json"],
        "",
    ));
    let initech = c["customerId"].as_str().unwrap().to_owned();
    let listed = json_of(&cli(&admin, &["customers", "--output", "json"], ""));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "Initech"),
        "{listed}"
    );
    let o = cli(
        &admin,
        &[
            "users",
            "create",
            "ops@initech.test",
            "--role",
            "operator",
            "--customer",
            &initech,
            "--password-stdin",
            "--output",
            "json",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(json_of(&o)["role"], "operator");
    let o = cli(&admin, &["users", "create", "x@initech.test"], "");
    assert_eq!(o.status.code(), Some(2), "--role is needed: {}", stderr(&o));
    ok(
        site.manager.addr,
        "/conduit.manager.v1.ServerService/Create",
        Some(&site.admin),
        json!({"serverId": "i1", "datacenter": "dc1", "protocol": "ipmi"}),
    );
    let o = cli(&admin, &["assign", "i1", &initech], "");
    assert!(
        stdout(&o).contains("i1 belongs to customer"),
        "{}",
        stderr(&o)
    );
    let ops = dir.0.join("ops");
    login(&site, &ops, "ops@initech.test");
    let mine = json_of(&cli(&ops, &["servers", "--output", "json"], ""));
    assert_eq!(mine[0]["serverId"], "i1");
    // Not an admin: the admin commands are refused, saying why.
    let o = cli(
        &ops,
        &["gateways", "create", "gwx", "--datacenter", "dc1"],
        "",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("permission_denied"), "{}", stderr(&o));

    // Gateway and agent credentials: printed once, listed, revoked.
    let o = cli(
        &admin,
        &["gateways", "create", "gw9", "--datacenter", "dc1"],
        "",
    );
    assert!(stdout(&o).trim().starts_with("cgw_"), "{}", stdout(&o));
    let o = cli(
        &admin,
        &[
            "agents",
            "create",
            "ag9",
            "--datacenter",
            "dc1",
            "--output",
            "json",
        ],
        "",
    );
    assert!(json_of(&o)["credential"]
        .as_str()
        .unwrap()
        .starts_with("cag_"));
    let gws = stdout(&cli(&admin, &["gateways"], ""));
    assert!(gws.lines().any(|l| l.starts_with("gw9 ")), "{gws}");
    let agents = json_of(&cli(&admin, &["agents", "--output", "json"], ""));
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["agentId"] == "ag9"),
        "{agents}"
    );
    assert!(cli(&admin, &["agents", "revoke", "ag9"], "")
        .status
        .success());
    let agents = json_of(&cli(&admin, &["agents", "--output", "json"], ""));
    let ag9 = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agentId"] == "ag9")
        .unwrap();
    assert_eq!(ag9["revoked"], true);
    assert!(cli(&admin, &["gateways", "revoke", "gw9"], "")
        .status
        .success());

    // An API key for a script: it logs in with the key from stdin; its logout forgets the
    // login here only, and the key goes on working until revoked.
    let o = cli(
        &ops,
        &["api-keys", "create", "nightly", "--output", "json"],
        "",
    );
    let key = json_of(&o)["apiKey"].as_str().unwrap().to_owned();
    let key_id = json_of(&cli(&ops, &["api-keys", "--output", "json"], ""))["keys"][0]["keyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let script = dir.0.join("script");
    let o = cli(
        &script,
        &["login", "--manager", &url, "--api-key-stdin"],
        &format!("{key}\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(cli(&script, &["servers"], "").status.success());
    let o = cli(&script, &["logout"], "");
    assert!(stdout(&o).contains("the key stays valid"), "{}", stdout(&o));
    let o = cli(
        &script,
        &["login", "--manager", &url, "--api-key-stdin"],
        &format!("{key}\n"),
    );
    assert!(o.status.success(), "the key still logs in: {}", stderr(&o));
    assert!(cli(&ops, &["api-keys", "revoke", &key_id], "")
        .status
        .success());
    let o = cli(
        &script,
        &["login", "--manager", &url, "--api-key-stdin"],
        &format!("{key}\n"),
    );
    assert_eq!(o.status.code(), Some(1), "a revoked key: {}", stderr(&o));
}

/// Behind TLS-terminating proxies (stunnel), as an operator deploys the manager and the
/// gateways: the CLI logs in over https trusting the site's CA, and its serial console runs
/// over wss — the TLS path of its WebSocket, which takes decrypted bytes TLS holds before it
/// waits on the socket.
#[test]
fn the_cli_works_over_https_and_wss_through_tls_proxies() {
    use conduit_tests::stunnel::Stunnel;
    let mut site = Site::new("cli-tls");
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let (mut serial, _) = host.accept().expect("ipmi_sim dials the host side");
    let manager_proxy = Stunnel::start(site.manager.addr, &site.pki);
    // The gateway's users come through its proxy: that is the address it registers.
    let http = free_port();
    let gateway_proxy = Stunnel::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], http)),
        &site.pki,
    );
    site.gateway_flags = vec![
        "--address".into(),
        format!("https://localhost:{}", gateway_proxy.addr.port()),
    ];
    let uplink = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cred = site.credential("GatewayService", "gatewayId", "gw1");
    let gw = site.gateway_on(&cred, "gw1", Some(http), uplink, None);
    let agent_cred = site.credential("AgentService", "agentId", "ag1");
    let config = site.agent_config(
        "ag1",
        &ipmi_bmc("s1", sim.addr),
        &[format!("ws://{uplink}")],
        &agent_cred,
        &site.pki.ca,
    );
    let _agent = start_component("conduit-agent", &["--config", config.to_str().unwrap()]);
    site.assign_reported("s1", "ag1");
    site.wait_online(&gw, "s1");

    let dir = TempDir::new("cli-tls-homes");
    let op = dir.0.join("operator");
    let url = format!("https://localhost:{}", manager_proxy.addr.port());
    let o = cli(
        &op,
        &[
            "login",
            "--manager",
            &url,
            "--email",
            "op@acme.test",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        !o.status.success(),
        "no CA given: the proxy's certificate is not trusted"
    );
    assert!(stderr(&o).contains("CA"), "{}", stderr(&o));
    let ca = site.pki.ca.to_str().unwrap();
    let o = cli(
        &op,
        &[
            "login",
            "--manager",
            &url,
            "--ca",
            ca,
            "--email",
            "op@acme.test",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(
        "s1 through the https gateway",
        Duration::from_secs(30),
        || {
            let o = cli(&op, &["power", "status", "s1"], "");
            o.status.success().then_some(())
        },
    );

    // The serial console over wss, from a script (standard input not a terminal).
    let mut child = Command::new(bin("conduit"))
        .args(["console", "s1"])
        .env("CONDUIT_CONFIG_DIR", &op)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut out = child.stdout.take().unwrap();
    let sink = got.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    // The console is up once the host side gets the first keystrokes; keep typing until then.
    serial
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut typed = Vec::new();
    eventually(
        "the host reads what was typed over wss",
        Duration::from_secs(20),
        || {
            let _ = stdin.write_all(b"tls-typed\r");
            let mut buf = [0u8; 1024];
            if let Ok(n) = serial.read(&mut buf) {
                typed.extend_from_slice(&buf[..n]);
            }
            typed.windows(10).any(|w| w == b"tls-typed\r").then_some(())
        },
    );
    // A large answer: many TLS records, some decrypted before the client waits again.
    let big: String = (0..2000)
        .map(|i| format!("line {i} over tls\r\n"))
        .collect();
    serial.write_all(big.as_bytes()).unwrap();
    serial.write_all(b"echo: the end\r\n").unwrap();
    eventually("the whole answer arrives", Duration::from_secs(20), || {
        String::from_utf8_lossy(&got.lock().unwrap())
            .contains("echo: the end")
            .then_some(())
    });
    let shown = String::from_utf8_lossy(&got.lock().unwrap()).into_owned();
    assert!(shown.contains(&big), "every line, in order");
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "left at the end of input");
    reader.join().unwrap();
}
