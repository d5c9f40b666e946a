//! `conduit console SERVER`: the server's serial console (SOL) in this terminal, through the
//! gateway that reaches it. The keyboard goes to the host as typed (raw mode: ^C too), but for
//! the escapes of [`crate::escape`]; the host's output comes back as it is sent.

use std::io::{Read, Write};
use std::time::Duration;

use conduit_api::agent::{CreateConsoleTicketRequest, CreateConsoleTicketResponse};

use crate::client::Conduit;
use crate::escape::{Action, Escapes, HELP};
use crate::terminal;
use crate::websocket::{self, Message, Receiver, Sender};

/// A gateway's console link that has carried nothing, not even the pings the agent sends an
/// idle viewer every 30 s, for this long is dead.
pub const QUIET_LIMIT: Duration = Duration::from_secs(100);

/// Opens `console` (`sol` or `vnc`) of `server`: a ticket from the gateway that reaches it,
/// then the WebSocket to the same gateway (`query` is added to the path: `mode=takeover`).
pub fn open(
    conduit: &Conduit,
    server: &str,
    console: &str,
    query: &str,
) -> anyhow::Result<(Sender, Receiver)> {
    let (loc, gw) = conduit.locate(server)?;
    let ticket: CreateConsoleTicketResponse = conduit.gateway_at(
        &loc,
        &gw,
        "CreateConsoleTicket",
        &CreateConsoleTicketRequest {
            server_id: server.to_owned(),
            console: console.to_owned(),
        },
    )?;
    let mut path = ticket.path;
    if !query.is_empty() {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(query);
    }
    websocket::open(gw.http(), &path, Some("binary")).map_err(|e| {
        anyhow::anyhow!(
            "opening {server}'s {console} console at gateway {}: {e}",
            loc.gateway_id
        )
    })
}

/// Why the gateway closed, in words.
fn close_reason(said: &Option<(u16, String)>) -> String {
    match said {
        Some((_, r)) if !r.is_empty() => crate::output::clean(&r.replace('_', " ")),
        Some((code, _)) => format!("code {code}"),
        None => "closed".into(),
    }
}

/// Runs the serial console until the user leaves (`~.`, or the end of standard input: then
/// this returns) or the gateway ends it (then the process exits with status 1, the reason
/// said: only leaving is success).
pub fn sol(conduit: &Conduit, server: &str, takeover: bool) -> anyhow::Result<()> {
    let (tx, mut rx) = open(
        conduit,
        server,
        "sol",
        if takeover { "mode=takeover" } else { "" },
    )?;
    eprint!(
        "[conduit: connected to {server}'s serial console — ~. to leave, ~B BREAK, ~T take the keyboard, ~? help]\r\n"
    );
    let raw = terminal::raw_mode()?;
    let server_name = server.to_owned();
    // The host's output, on its own thread: the main thread sits in a read of the keyboard,
    // so this one ends the process when the gateway ends the console.
    std::thread::Builder::new()
        .name("console-output".into())
        .spawn(move || {
            loop {
                match rx.recv(Duration::from_secs(1)) {
                    Ok(Some(Message::Binary(b))) => {
                        // Locked per chunk: a signal's exit must find standard output free.
                        let mut out = std::io::stdout().lock();
                        if out.write_all(&b).and_then(|()| out.flush()).is_err() {
                            drop(out);
                            terminal::exit(1);
                        }
                    }
                    Ok(Some(Message::Text(_))) => {}
                    Ok(None) if rx.quiet_for() > QUIET_LIMIT => {
                        eprint!(
                            "\r\n[conduit: {server_name}'s console link went silent; leaving]\r\n"
                        );
                        terminal::exit(1);
                    }
                    Ok(None) => {}
                    Ok(Some(Message::Closed(said))) => {
                        eprint!(
                            "\r\n[conduit: {server_name}'s console ended: {}]\r\n",
                            close_reason(&said)
                        );
                        terminal::exit(1);
                    }
                    Err(e) => {
                        eprint!("\r\n[conduit: {server_name}'s console link failed: {e}]\r\n");
                        terminal::exit(1);
                    }
                }
            }
        })?;
    let mut escapes = Escapes::default();
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => {
                // A script's input ran out: let the last output arrive, then leave.
                std::thread::sleep(Duration::from_secs(1));
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                drop(raw);
                return Err(e.into());
            }
        };
        let mut leave = false;
        for action in escapes.feed(&buf[..n]) {
            let sent = match action {
                Action::Send(b) => tx.binary(&b),
                Action::Break => tx.text(r#"{"type":"break"}"#),
                Action::Takeover => tx.text(r#"{"type":"takeover"}"#),
                Action::Help => {
                    eprint!("\r\n[conduit: {HELP}]\r\n");
                    Ok(())
                }
                Action::Leave => {
                    leave = true;
                    Ok(())
                }
            };
            if let Err(e) = sent {
                drop(raw);
                anyhow::bail!("{server}'s console: sending: {e}");
            }
        }
        if leave {
            break;
        }
    }
    let _ = tx.close();
    drop(raw);
    eprintln!("\r\n[conduit: left {server}'s console]");
    Ok(())
}
