//! The live agent reads its board from a fake sysfs/procfs tree and pets a watchdog device
//! (a plain file here) while healthy, disarming it with the magic close on SIGTERM.

use std::time::Duration;

use conduit_reference::parse_exposition;
use conduit_tests::{get, start_component, wait_for, TempDir};

fn write(root: &std::path::Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn gauge(text: &str, family: &str, label: (&str, &str)) -> Option<f64> {
    let fams = parse_exposition(text).unwrap();
    fams.get(family)?
        .samples
        .iter()
        .find(|s| s.labels.iter().any(|(k, v)| k == label.0 && v == label.1))
        .map(|s| s.value)
}

#[test]
fn board_metrics_and_watchdog() {
    let root = TempDir::new("board");
    let r = &root.0;
    write(
        r,
        "proc/device-tree/model",
        b"Conduit Test Board rev\x01 2\0",
    );
    write(
        r,
        "proc/device-tree/compatible",
        b"conduit,test\0vendor,soc\0",
    );
    write(r, "sys/class/thermal/thermal_zone0/type", b"cpu-thermal\n");
    write(r, "sys/class/thermal/thermal_zone0/temp", b"47500\n");
    write(r, "dev/watchdog", b"");
    let wd = r.join("dev/watchdog");

    let mut agent = start_component(
        "conduit-agent",
        &[
            "--board-root",
            r.to_str().unwrap(),
            "--watchdog",
            wd.to_str().unwrap(),
            "--watchdog-interval",
            "0.2",
        ],
    );
    let text = get(agent.addr, "/metrics", &[]).text();
    assert!(
        text.contains(
            r#"agent_board_info{model="Conduit Test Board rev_ 2",board="conduit,test"} 1"#
        ),
        "{text}"
    );
    assert_eq!(
        gauge(
            &text,
            "agent_board_temperature_celsius",
            ("zone", "cpu-thermal")
        ),
        Some(47.5)
    );

    // Temperatures are read at scrape time.
    write(r, "sys/class/thermal/thermal_zone0/temp", b"61000\n");
    let text = get(agent.addr, "/metrics", &[]).text();
    assert_eq!(
        gauge(
            &text,
            "agent_board_temperature_celsius",
            ("zone", "cpu-thermal")
        ),
        Some(61.0)
    );

    let petted = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let n = std::fs::read(&wd)
            .unwrap()
            .iter()
            .filter(|&&b| b == 0)
            .count();
        (n >= 3).then_some(n)
    });
    assert!(
        petted.is_some(),
        "watchdog not petted: {:?}",
        std::fs::read(&wd)
    );

    let status = agent
        .proc
        .terminate(Duration::from_secs(5))
        .expect("clean exit");
    assert!(status.success(), "{}", agent.proc.log());
    let written = std::fs::read(&wd).unwrap();
    assert_eq!(
        written.last(),
        Some(&b'V'),
        "magic close on clean stop: {written:?}"
    );
}

#[test]
fn watchdog_from_the_configuration_file() {
    let root = TempDir::new("board-config");
    write(&root.0, "dev/watchdog", b"");
    let cfg = root.0.join("agent.toml");
    std::fs::write(
        &cfg,
        "[agent]\nwatchdog_device = \"dev/watchdog\"\nwatchdog_interval_secs = 0.2\n",
    )
    .unwrap();
    let wd = root.0.join("dev/watchdog");
    let mut agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let petted = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        (std::fs::read(&wd)
            .unwrap()
            .iter()
            .filter(|&&b| b == 0)
            .count()
            >= 3)
            .then_some(())
    });
    assert!(
        petted.is_some(),
        "watchdog not petted: {:?}",
        std::fs::read(&wd)
    );
    assert!(agent
        .proc
        .terminate(Duration::from_secs(5))
        .expect("clean exit")
        .success());
    assert_eq!(std::fs::read(&wd).unwrap().last(), Some(&b'V'));
}
