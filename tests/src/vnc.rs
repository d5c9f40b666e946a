//! VNC test peers and a small viewer.
//!
//! Peers (Debian packages, installed by `scripts/test`): TigerVNC's `Xtigervnc` (VNC
//! Authentication with a password file made by `tigervncpasswd`, or None; a black screen) and
//! QEMU's built-in VNC server (None; SeaBIOS "No bootable device." in 720x400 text mode). Two
//! independent RFB implementations, both on loopback.
//!
//! The viewer speaks just enough RFB 3.8 to check what the agent presents: security None, the
//! replayed ServerInit, one full framebuffer update in Raw encoding. It counts every byte it
//! sends and receives after the handshake so tests can hold the agent's counters to them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::ws_client::Link;
use crate::{spawn, tool, Running, TempDir};

/// The password the peers are started with.
pub const PASSWORD: &str = "password";

/// A VNC server on loopback, stopped on drop.
#[derive(Debug)]
pub struct VncServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it is, for messages.
    pub name: String,
    _proc: Running,
    _dir: TempDir,
}

/// A free port in `from..to`; tests of one process start at different places, so two peers
/// started at once do not both pick the port neither holds yet.
fn free_port_in(from: u16, to: u16) -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let nth = NEXT.fetch_add(37, std::sync::atomic::Ordering::Relaxed);
    let start = from + ((std::process::id() as u16).wrapping_add(nth) % (to - from));
    (start..to)
        .chain(from..start)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port for the VNC peer")
}

impl VncServer {
    /// `Xtigervnc` with VNC Authentication (password [`PASSWORD`]) or None.
    pub fn tiger(vnc_auth: bool) -> VncServer {
        let dir = TempDir::new("tiger");
        let port = crate::free_port();
        // A display number no other X server holds (Xtigervnc creates /tmp/.X<n>-lock).
        let display = (200..1200)
            .map(|n| (n + std::process::id() as u16 % 500 + port % 97) % 1000 + 100)
            .find(|n| !std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists())
            .expect("a free X display");
        let mut cmd = Command::new(tool("Xtigervnc"));
        cmd.arg(format!(":{display}"))
            .args(["-rfbport", &port.to_string(), "-interface", "127.0.0.1"])
            .args(["-nolisten", "tcp", "-geometry", "1024x768", "-depth", "24"])
            .args(["-BlacklistThreshold", "1000000", "-AlwaysShared"]);
        if vnc_auth {
            let passwd = dir.0.join("passwd");
            let mut p = Command::new(tool("tigervncpasswd"))
                .arg("-f")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("run tigervncpasswd");
            p.stdin
                .take()
                .expect("stdin")
                .write_all(format!("{PASSWORD}\n").as_bytes())
                .expect("write the password");
            let out = p.wait_with_output().expect("tigervncpasswd");
            assert!(
                out.status.success() && out.stdout.len() == 8,
                "tigervncpasswd -f failed"
            );
            std::fs::write(&passwd, out.stdout).expect("passwd file");
            cmd.args(["-SecurityTypes", "VncAuth", "-rfbauth"])
                .arg(&passwd);
        } else {
            cmd.args(["-SecurityTypes", "None"]);
        }
        let proc = spawn("Xtigervnc", cmd);
        VncServer::ready(port, format!("Xtigervnc :{display}"), proc, dir)
    }

    /// QEMU's VNC server (security None) in front of a machine showing SeaBIOS.
    pub fn qemu() -> VncServer {
        let dir = TempDir::new("qemu");
        // QEMU takes a display number: port 5900 + n.
        let port = free_port_in(6000, 9000);
        let mut cmd = Command::new(tool("qemu-system-x86_64"));
        cmd.args([
            "-nodefaults",
            "-machine",
            "pc,accel=tcg",
            "-m",
            "32",
            "-vga",
            "std",
        ])
        .args([
            "-display",
            "none",
            "-vnc",
            &format!("127.0.0.1:{}", port - 5900),
        ]);
        let proc = spawn("qemu-system-x86_64", cmd);
        let server = VncServer::ready(port, "QEMU".into(), proc, dir);
        // The machine boots at 640x480 and SeaBIOS switches to 720x400 text a moment later:
        // wait for it, so the screen tests see is the settled one.
        let until = Instant::now() + Duration::from_secs(20);
        while server_init_size(server.addr) != Some((720, 400)) {
            assert!(
                Instant::now() < until,
                "QEMU never reached SeaBIOS text mode"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn ready(port: u16, name: String, mut proc: Running, dir: TempDir) -> VncServer {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut v = [0u8; 12];
                if s.read_exact(&mut v).is_ok() && v.starts_with(b"RFB ") {
                    break;
                }
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("{name} exited ({status}): {}", proc.log());
            }
            assert!(
                Instant::now() < until,
                "{name} not ready on {addr}: {}",
                proc.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        VncServer {
            addr,
            name,
            _proc: proc,
            _dir: dir,
        }
    }
}

/// The framebuffer size a direct RFB 3.8 / None handshake reports.
fn server_init_size(addr: SocketAddr) -> Option<(u16, u16)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    s.write_all(b"RFB 003.008\n").ok()?;
    let mut n = [0u8; 1];
    s.read_exact(&mut n).ok()?;
    let mut types = vec![0u8; usize::from(n[0])];
    s.read_exact(&mut types).ok()?;
    if !types.contains(&1) {
        return None;
    }
    s.write_all(&[1]).ok()?;
    let mut result = [0u8; 4];
    s.read_exact(&mut result).ok()?;
    s.write_all(&[1]).ok()?;
    let mut init = [0u8; 4];
    s.read_exact(&mut init).ok()?;
    Some((
        u16::from_be_bytes([init[0], init[1]]),
        u16::from_be_bytes([init[2], init[3]]),
    ))
}

/// What the viewer saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    /// ServerInit width.
    pub width: u16,
    /// ServerInit height.
    pub height: u16,
    /// Desktop name.
    pub name: String,
    /// Raw pixels of the first full update (`bpp` bytes each).
    pub pixels: Vec<u8>,
    /// Bytes per pixel.
    pub bpp: usize,
    /// RFB bytes sent after ClientInit.
    pub sent: usize,
    /// RFB bytes received after ServerInit.
    pub received: usize,
}

impl Screen {
    /// Pixels that are not all-zero.
    pub fn non_black(&self) -> usize {
        self.pixels
            .chunks_exact(self.bpp)
            .filter(|p| p.iter().any(|b| *b != 0))
            .count()
    }
}

/// How a viewer handshake went.
#[derive(Debug)]
pub enum Handshake {
    /// Security None was offered and ServerInit arrived.
    Ready(u16, u16, String),
    /// The server sent an RFB failure with this reason.
    Refused(String),
}

/// The viewer's side of the handshake through the agent: 3.8, security None, shared.
pub fn handshake(link: &mut Link) -> Handshake {
    let version = link.read_exact(12).expect("the agent's RFB version");
    assert_eq!(&version, b"RFB 003.008\n");
    link.send(b"RFB 003.008\n");
    let n = link.read_exact(1).expect("security types")[0];
    if n == 0 {
        let len = u32::from_be_bytes(link.read_exact(4).unwrap().try_into().unwrap());
        let why = link.read_exact(len as usize).unwrap();
        return Handshake::Refused(String::from_utf8_lossy(&why).into_owned());
    }
    let types = link.read_exact(n as usize).unwrap();
    assert_eq!(types, [1], "the agent offers security None only");
    link.send(&[1]);
    assert_eq!(
        link.read_exact(4).unwrap(),
        [0, 0, 0, 0],
        "SecurityResult ok"
    );
    link.send(&[1]);
    let head = link.read_exact(24).expect("ServerInit");
    let name_len = u32::from_be_bytes(head[20..24].try_into().unwrap()) as usize;
    let name = link.read_exact(name_len).unwrap();
    Handshake::Ready(
        u16::from_be_bytes([head[0], head[1]]),
        u16::from_be_bytes([head[2], head[3]]),
        String::from_utf8_lossy(&name).into_owned(),
    )
}

/// Handshake, then ask for a full update in Raw encoding at 32 bpp and read the first one.
pub fn view(link: &mut Link) -> Screen {
    let Handshake::Ready(width, height, name) = handshake(link) else {
        panic!("the agent refused the viewer");
    };
    let mut sent = 0;
    // SetPixelFormat: 32 bpp, depth 24, little endian, true colour, 8 bits per channel.
    let set_pf = [
        0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
    ];
    // SetEncodings: Raw only.
    let set_enc = [2, 0, 0, 1, 0, 0, 0, 0];
    let mut request = vec![3, 0, 0, 0, 0, 0];
    request.extend_from_slice(&width.to_be_bytes());
    request.extend_from_slice(&height.to_be_bytes());
    for msg in [&set_pf[..], &set_enc, &request] {
        link.send(msg);
        sent += msg.len();
    }
    let bpp = 4;
    let mut pixels = vec![0u8; usize::from(width) * usize::from(height) * bpp];
    let mut received = 0;
    // The first FramebufferUpdate, whole (Bell messages before it are skipped).
    loop {
        let t = link.read_exact(1).expect("server message")[0];
        received += 1;
        match t {
            0 => break,
            2 => {} // Bell
            other => panic!("unexpected server message {other} before the update"),
        }
    }
    let h = link.read_exact(3).unwrap();
    received += 3;
    let rects = u16::from_be_bytes([h[1], h[2]]);
    for _ in 0..rects {
        let r = link.read_exact(12).unwrap();
        received += 12;
        let at = |i: usize| usize::from(u16::from_be_bytes([r[i], r[i + 1]]));
        let (x, y, w, hgt) = (at(0), at(2), at(4), at(6));
        let enc = i32::from_be_bytes(r[8..12].try_into().unwrap());
        assert_eq!(enc, 0, "only Raw was asked for");
        assert!(
            x + w <= usize::from(width) && y + hgt <= usize::from(height),
            "rectangle inside"
        );
        let data = link.read_exact(w * hgt * bpp).expect("rectangle pixels");
        received += data.len();
        for row in 0..hgt {
            let dst = ((y + row) * usize::from(width) + x) * bpp;
            pixels[dst..dst + w * bpp].copy_from_slice(&data[row * w * bpp..(row + 1) * w * bpp]);
        }
    }
    Screen {
        width,
        height,
        name,
        pixels,
        bpp,
        sent,
        received,
    }
}
