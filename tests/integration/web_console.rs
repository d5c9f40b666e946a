//! The web console in headless Debian Chromium (playwright-core), against real binaries: the
//! manager serves the page (with its CSP and the pinned npm packages), the browser logs in
//! there and reaches the gateway directly (CORS, consoles with tickets and `Origin`). A
//! customer's operator sees exactly the customer's servers, powers one on and sees the state
//! change, reads sensors (one named with HTML, shown as text), types into the serial console
//! and sees the host's echo; a viewer watches the same session and its keystrokes never reach
//! the host; the graphical console's canvas matches vncdotool's capture of the same QEMU
//! screen; another customer's user gets nothing of the server.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conduit_tests::ipmi_sim::{self, IpmiSim};
use conduit_tests::vnc::VncServer;
use conduit_tests::*;
use serde_json::{json, Value};

use crate::gateway_uplink::{ipmi_bmc, Site, PASSWORD};
use crate::manager_api::{call, ok, ADMIN};

/// A sensor name a careless page would render as markup (16 bytes at most: an SDR name).
const HTML_SENSOR: &str = "<b>hot</b>";

/// The share of pixels two PNGs have equal (0 when their sizes differ), by PIL in the peers'
/// venv (vncdotool brings it).
fn same_pixels(a: &std::path::Path, b: &std::path::Path) -> f64 {
    let script = "import sys\nfrom PIL import Image\n\
        a=Image.open(sys.argv[1]).convert('RGB'); b=Image.open(sys.argv[2]).convert('RGB')\n\
        print(0 if a.size!=b.size else sum(x==y for x,y in zip(a.getdata(), b.getdata()))/(a.size[0]*a.size[1]))";
    let out = Command::new(venv_bin("python"))
        .args(["-c", script])
        .arg(a)
        .arg(b)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn the_web_console_from_login_to_a_servers_screen() {
    let peer = workspace_root().join("tests/peers/novnc");
    let assets = workspace_root().join("web/node_modules");
    assert!(
        peer.join("node_modules/playwright-core").is_dir() && assets.join("@xterm/xterm").is_dir(),
        "npm packages missing: scripts/test installs them (ensure_novnc, ensure_web_assets)"
    );
    let manager_port = free_port();
    let site = Site::with_manager(
        "web",
        manager_port,
        &["--web-assets", assets.to_str().unwrap()],
    );
    let page_origin = format!("http://127.0.0.1:{manager_port}");

    // The BMC: its serial port's host side held here, a sensor named with markup, and QEMU's
    // screen behind its VNC port.
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let emu = ipmi_sim::large_emu(2, 0).replace(
        &ipmi_sim::main_sdr_add(&ipmi_sim::temperature_sdr(2, "Temp 2")),
        &ipmi_sim::main_sdr_add(&ipmi_sim::temperature_sdr(2, HTML_SENSOR)),
    );
    let sim = IpmiSim::start_with_emu_and_sol_host(&emu, host.local_addr().unwrap());
    let (serial, _) = host.accept().expect("ipmi_sim dials the host side");
    let qemu = VncServer::qemu();
    let mut site = site;
    site.gateway_flags = vec!["--console-origin".into(), page_origin.clone()];
    let bmc = format!(
        "{}vnc_port = {}\n",
        ipmi_bmc("s1", sim.addr),
        qemu.addr.port()
    );
    let (gw, _agent) = site.acme_s1_behind(&bmc);
    site.globex_server("g1");
    // The page learns the gateway's address from the manager's inventory of gateways
    // (refreshed every few seconds) and which gateway reaches s1 from its reports.
    crate::gateway_uplink::eventually("s1 located", Duration::from_secs(30), || {
        let (s, _) = call(
            site.manager.addr,
            "/conduit.manager.v1.ServerService/Locate",
            Some(&site.acme_operator),
            &json!({"serverId": "s1"}),
        );
        (s == 200).then_some(())
    });
    // An unassigned server for the admin's page to assign.
    ok(
        site.manager.addr,
        "/conduit.manager.v1.ServerService/Create",
        Some(&site.admin),
        json!({"serverId": "u1", "datacenter": "dc1", "protocol": "ipmi"}),
    );
    // The page's CSP names the gateways as of the manager's last count (every few seconds).
    crate::gateway_uplink::eventually("the CSP names the gateway", Duration::from_secs(15), || {
        let page = get(site.manager.addr, "/", &[]);
        let csp = page
            .header("Content-Security-Policy")
            .unwrap_or_default()
            .to_owned();
        csp.contains(&format!("http://{}", gw.addr)).then_some(())
    });

    // The host: echoes every line it reads, and keeps everything.
    let read = Arc::new(Mutex::new(Vec::<u8>::new()));
    {
        let read = read.clone();
        let mut serial = serial;
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut line = Vec::new();
            while let Ok(n) = serial.read(&mut buf) {
                if n == 0 {
                    break;
                }
                read.lock().unwrap().extend_from_slice(&buf[..n]);
                for &b in &buf[..n] {
                    if b == b'\r' {
                        let text = String::from_utf8_lossy(&line).into_owned();
                        let _ = serial.write_all(format!("\r\necho: {text}\r\n").as_bytes());
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
        });
    }

    let dir = TempDir::new("web-console");
    let png = dir.0.join("canvas.png");
    let plan = json!({
        "manager": page_origin,
        "server": "s1",
        "operator": ["op@acme.test", PASSWORD],
        "viewer": ["viewer@acme.test", PASSWORD],
        "other": ["op@globex.test", PASSWORD],
        "admin": [ADMIN.0, ADMIN.1],
        "unassigned": "u1",
        "assignTo": "Acme",
        "png": png,
        "timeoutMs": 20000,
    });
    let out = Command::new(tool("node"))
        .arg(peer.join("web_console.mjs"))
        .arg(plan.to_string())
        .output()
        .expect("run node");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    eprintln!("web console report: {report}");
    assert!(out.status.success(), "{report}");

    assert_eq!(
        report["servers"],
        json!(["s1"]),
        "exactly the customer's servers"
    );
    assert_eq!(report["powerBefore"], "off");
    assert_eq!(report["powerAfter"], "on");
    assert!(sim.power(), "the BMC is on");
    let names: Vec<&str> = report["sensorNames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&HTML_SENSOR),
        "the name shown as text: {names:?}"
    );
    assert_eq!(report["markupInCells"], json!([]), "no markup from the BMC");
    let host_read = String::from_utf8_lossy(&read.lock().unwrap()).into_owned();
    assert!(host_read.contains("hello-web\r"), "{host_read:?}");
    assert!(host_read.contains("shared\r"), "{host_read:?}");
    assert!(
        !host_read.contains("viewer"),
        "a viewer's keys reach the host: {host_read:?}"
    );
    assert!(
        !host_read.contains("dropped-keys"),
        "keys without the keyboard: {host_read:?}"
    );
    assert!(host_read.contains("admin-typed\r"), "{host_read:?}");
    assert_eq!(report["adminKeyboard"], "Keyboard: you");
    assert_eq!(report["operatorKeyboard"], "Keyboard: another viewer");
    let admin_text = report["adminText"].as_str().unwrap();
    for shown in ["gw1", "ag1", "connected", "u1"] {
        assert!(
            admin_text.contains(shown),
            "{shown} on the admin's page: {admin_text}"
        );
    }
    let (_, u1) = call(
        site.manager.addr,
        "/conduit.manager.v1.ServerService/Get",
        Some(&site.admin),
        &json!({"serverId": "u1"}),
    );
    assert_eq!(
        u1["customerId"],
        site.acme.as_str(),
        "assigned from the page"
    );
    assert_eq!(report["keptAfterLogout"], 0);
    assert_eq!(report["viewerHasTakeover"], false);
    assert_eq!(report["viewerKeyboard"], "Keyboard: you are watching");
    assert_eq!(
        report["otherServers"],
        json!(["g1"]),
        "only the other customer's own"
    );
    let refused = report["otherConsole"].as_str().unwrap();
    assert!(refused.contains("not found"), "{refused}");
    assert_eq!(report["otherTerminal"], false);
    // No script error, no CSP violation. Refusals the page shows are logged by Chromium too
    // and are not errors of the page: another customer's server (404 from Locate), a server
    // with no agent yet (503), calls still in flight when the user logged out (401).
    let errors: Vec<&Value> = report["pageErrors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            !e.as_str().is_some_and(|s| {
                s.starts_with("Failed to load resource: the server responded with a status of")
            })
        })
        .collect();
    assert!(errors.is_empty(), "the page's errors: {errors:?}");

    // The canvas is QEMU's screen as vncdotool sees it.
    let capture = dir.0.join("vncdo.png");
    let o = Command::new(venv_bin("vncdo"))
        .args(["-s", &format!("127.0.0.1::{}", qemu.addr.port())])
        .args(["--timeout", "20", "capture"])
        .arg(&capture)
        .output()
        .expect("run vncdo");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(report["canvas"], json!([720, 400]));
    let same = same_pixels(&png, &capture);
    assert!(
        same > 0.99,
        "the canvas matches the VNC server's screen: {same}"
    );

    // The page and the vendor files come with the policy and only from the packages.
    let page = get(site.manager.addr, "/", &[]);
    let csp = page.header("Content-Security-Policy").unwrap_or_default();
    assert!(
        csp.contains(&format!(
            "connect-src 'self' http://{} ws://{}",
            gw.addr, gw.addr
        )),
        "{csp}"
    );
    assert_eq!(
        get(
            site.manager.addr,
            "/web/vendor/@novnc/novnc/package.json",
            &[]
        )
        .status,
        404
    );
    let preflight = request(
        gw.addr,
        "OPTIONS",
        "/conduit.gateway.v1.GatewayService/PowerAction",
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(
        preflight.status, 403,
        "another page's origin may not call the gateway"
    );
}
