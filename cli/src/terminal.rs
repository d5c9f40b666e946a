//! The terminal: raw mode for a console, put back on every way out — the console's end, an
//! error, a signal (SIGTERM, SIGHUP, SIGINT, SIGQUIT) and a panic — and a password read with
//! the echo off, put back the same ways.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::fd::AsFd;
use std::sync::Mutex;

use rustix::termios::{self, LocalModes, OptionalActions, Termios};

/// The terminal to put back and its settings, while it is changed.
static SAVED: Mutex<Option<(File, Termios)>> = Mutex::new(None);

/// Settings changed on a terminal while the value lives.
#[derive(Debug)]
pub struct Changed(());

impl Changed {
    fn apply(tty: File, change: impl FnOnce(&mut Termios)) -> io::Result<Changed> {
        let was = termios::tcgetattr(&tty)?;
        let mut now = was.clone();
        change(&mut now);
        install_guards();
        termios::tcsetattr(&tty, OptionalActions::Flush, &now)?;
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some((tty, was));
        Ok(Changed(()))
    }
}

impl Drop for Changed {
    fn drop(&mut self) {
        restore();
    }
}

/// Makes standard input raw (no echo, no line editing, no signals from keys: ^C goes to
/// the host); `None` when it is not a terminal.
pub fn raw_mode() -> io::Result<Option<Changed>> {
    let stdin = io::stdin();
    if !termios::isatty(stdin.as_fd()) {
        return Ok(None);
    }
    let tty = File::from(stdin.as_fd().try_clone_to_owned()?);
    Changed::apply(tty, Termios::make_raw).map(Some)
}

/// Puts the terminal back as it was, if it is changed; safe to call from any thread, any
/// number of times.
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((tty, t)) = saved {
        // Drain: output still queued would otherwise come out under the old settings.
        let _ = termios::tcsetattr(&tty, OptionalActions::Drain, &t);
    }
}

/// Restores and exits: the way out of a thread other than the one reading the keyboard.
/// (Standard output is not flushed here: the output thread may hold it, and writes whole
/// chunks itself.)
pub fn exit(code: i32) -> ! {
    restore();
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
                        restore();
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
    let reader = tty.try_clone()?;
    (&tty).write_all(prompt.as_bytes())?;
    let quiet = Changed::apply(tty, |t| {
        t.local_modes.remove(LocalModes::ECHO);
        t.local_modes.insert(LocalModes::ECHONL);
    })?;
    let mut line = String::new();
    let read = io::BufReader::new(reader).read_line(&mut line);
    drop(quiet);
    anyhow::ensure!(read? > 0, "no password given");
    let v = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!v.is_empty(), "no password given");
    Ok(v)
}

/// The first line of standard input (a password or key given by a script).
pub fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let v = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!v.is_empty(), "no {what} on standard input");
    Ok(v)
}
