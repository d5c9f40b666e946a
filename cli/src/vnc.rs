//! `conduit vnc SERVER`: a listener on 127.0.0.1 for a native VNC viewer, relaying to the
//! server's graphical console through its gateway. Any local user can connect to a loopback
//! port, so each connection is checked: the kernel's socket table (`/proc/net/tcp`) says which
//! user owns the connecting socket, and only this user's are relayed.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use crate::client::Conduit;
use crate::console;
use crate::websocket::Message;

/// The owner of the TCP socket whose local address is `local` and remote `remote`, from the
/// text of `/proc/net/tcp`.
pub fn socket_owner(table: &str, local: SocketAddrV4, remote: SocketAddrV4) -> Option<u32> {
    let hex = |a: SocketAddrV4| {
        format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        )
    };
    let (l, r) = (hex(local), hex(remote));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 7 && f[1] == l && f[2] == r)
            .then(|| f[7].parse().ok())
            .flatten()
    })
}

/// Whether the peer of `s`, accepted on `listener`, belongs to this user.
fn peer_is_me(s: &TcpStream, listener: SocketAddrV4) -> bool {
    let Ok(SocketAddr::V4(peer)) = s.peer_addr() else {
        return false;
    };
    let me = rustix::process::getuid().as_raw();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    socket_owner(&table, peer, listener) == Some(me)
}

/// Serves viewers on `port` (0: any free port) until interrupted, one relay per viewer.
pub fn serve(conduit: &Conduit, server: &str, port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
        .map_err(|e| anyhow::anyhow!("listening on 127.0.0.1:{port}: {e}"))?;
    let SocketAddr::V4(addr) = listener.local_addr()? else {
        unreachable!("bound to an IPv4 address")
    };
    // Checked before anyone is told where to connect: a refusal shows now, not in the viewer.
    if conduit.session().user.role == "viewer" {
        anyhow::bail!(
            "viewers watch serial consoles only: a graphical console takes the keyboard and mouse"
        );
    }
    conduit.locate(server)?;
    println!(
        "{server}'s graphical console: point a VNC viewer at {addr} (e.g. `vncviewer {}::{}`); \
         only your user may connect. Ctrl-C stops.",
        addr.ip(),
        addr.port()
    );
    let _ = std::io::stdout().flush();
    for conn in listener.incoming() {
        let s = match conn {
            Ok(s) => s,
            Err(e) => {
                eprintln!("conduit: accepting a viewer: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if !peer_is_me(&s, addr) {
            eprintln!(
                "conduit: refused a viewer from {}: its program is not yours (or its owner \
                 could not be read from /proc/net/tcp; viewers must connect to 127.0.0.1)",
                s.peer_addr().map_or("?".into(), |a| a.to_string())
            );
            continue;
        }
        match relay(conduit, server, s) {
            Ok(()) => eprintln!("conduit: the viewer left"),
            Err(e) => eprintln!("conduit: {e:#}"),
        }
    }
    Ok(())
}

/// One viewer's session: its TCP stream spliced to a console WebSocket.
fn relay(conduit: &Conduit, server: &str, viewer: TcpStream) -> anyhow::Result<()> {
    let (tx, mut rx) = console::open(conduit, server, "vnc", "")?;
    eprintln!("conduit: a viewer connected to {server}'s graphical console");
    let _ = viewer.set_nodelay(true);
    let mut from_viewer = viewer.try_clone()?;
    let up = std::thread::Builder::new()
        .name("vnc-viewer".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from_viewer.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.binary(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = tx.close();
        })?;
    let mut to_viewer = viewer;
    let _ = to_viewer.set_write_timeout(Some(Duration::from_secs(30)));
    let result = loop {
        match rx.recv(Duration::from_secs(1)) {
            Ok(Some(Message::Binary(b))) => {
                if let Err(e) = to_viewer.write_all(&b) {
                    break Err(anyhow::anyhow!("writing to the viewer: {e}"));
                }
            }
            Ok(Some(Message::Text(_))) => {}
            Ok(None) if up.is_finished() => break Ok(()),
            Ok(None) if rx.quiet_for() > console::QUIET_LIMIT => {
                break Err(anyhow::anyhow!("the console link went silent"))
            }
            Ok(None) => {}
            Ok(Some(Message::Closed(said))) => match said {
                Some((1000, _)) | None => break Ok(()),
                Some((_, why)) => break Err(anyhow::anyhow!("the console ended: {why}")),
            },
            Err(e) => break Err(anyhow::anyhow!("the console link failed: {e}")),
        }
    };
    let _ = to_viewer.shutdown(Shutdown::Both);
    let _ = up.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_connection_from_the_socket_table() {
        // Two ends of one loopback connection 127.0.0.1:40000 -> 127.0.0.1:5900 and a listener.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:170C 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:9C40 0100007F:170C 01 00000000:00000000 00:00000000 00000000  1001        0 2 1 0000000000000000 20 4 30 10 -1\n\
   2: 0100007F:170C 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0000000000000000 20 4 30 10 -1\n";
        let peer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        let listener = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5900);
        assert_eq!(socket_owner(table, peer, listener), Some(1001));
        assert_eq!(socket_owner(table, listener, peer), Some(1000));
        let other = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40001);
        assert_eq!(socket_owner(table, other, listener), None);
        assert_eq!(socket_owner("", peer, listener), None);
        assert_eq!(socket_owner("h\n garbage", peer, listener), None);
    }

    #[test]
    fn a_real_connection_is_mine() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = l.local_addr().unwrap() else {
            unreachable!()
        };
        let _c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(peer_is_me(&s, addr));
    }
}
