//! The terminal: raw mode for a console, put back on every way out — the console's end, an
//! error, a signal (SIGTERM, SIGHUP, SIGINT, SIGQUIT) and a panic — and a password read with
//! the echo off.

use std::fs::OpenOptions;
use std::io::{self, BufRead, Write};
use std::sync::Mutex;

use rustix::termios::{self, LocalModes, OptionalActions, Termios};

/// The settings to put back, while the terminal is raw.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Raw mode on standard input while the value lives.
#[derive(Debug)]
pub struct RawMode(());

impl RawMode {
    /// Makes standard input raw (no echo, no line editing, no signals from keys: ^C goes to
    /// the host); `None` when it is not a terminal.
    pub fn enter() -> io::Result<Option<RawMode>> {
        let stdin = rustix::stdio::stdin();
        if !termios::isatty(stdin) {
            return Ok(None);
        }
        let was = termios::tcgetattr(stdin)?;
        let mut raw = was.clone();
        raw.make_raw();
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(was);
        install_guards();
        termios::tcsetattr(stdin, OptionalActions::Now, &raw)?;
        Ok(Some(RawMode(())))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as it was before raw mode, if it is raw; safe to call from any
/// thread, any number of times.
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(t) = saved {
        // Drain: output still queued would otherwise come out under the old settings.
        let _ = termios::tcsetattr(rustix::stdio::stdin(), OptionalActions::Drain, &t);
    }
}

/// Restores and exits: the way out of a thread that is not the one reading the keyboard.
pub fn exit(code: i32) -> ! {
    restore();
    let _ = io::stdout().flush();
    std::process::exit(code)
}

fn install_guards() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        use async_signal::{Signal, Signals};
        let signals = [Signal::Term, Signal::Hup, Signal::Int, Signal::Quit];
        if let Ok(mut s) = Signals::new(signals) {
            let _ = std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    use futures_lite::StreamExt;
                    if let Some(Ok(sig)) = futures_lite::future::block_on(s.next()) {
                        let number = match sig {
                            Signal::Hup => 1,
                            Signal::Int => 2,
                            Signal::Quit => 3,
                            _ => 15,
                        };
                        eprint!("\r\nconduit: stopped by {sig:?}\r\n");
                        exit(128 + number);
                    }
                });
        }
    });
}

/// Asks for a password on the terminal with the echo off.
pub fn read_password(prompt: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context(
        "no terminal to ask for the password on: give it on standard input with --password-stdin",
    )?;
    let was = termios::tcgetattr(&tty)?;
    let mut quiet = was.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    (&tty).write_all(prompt.as_bytes())?;
    termios::tcsetattr(&tty, OptionalActions::Flush, &quiet)?;
    let mut line = String::new();
    let read = io::BufReader::new(&tty).read_line(&mut line);
    termios::tcsetattr(&tty, OptionalActions::Now, &was)?;
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The first line of standard input (a password or key given by a script).
pub fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let v = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!v.is_empty(), "no {what} on standard input");
    Ok(v)
}
