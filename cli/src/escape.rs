//! The console's escapes, as in ssh: `~` at the start of a line (or of the session) begins
//! one. `~.` leaves, `~B` sends a serial BREAK, `~T` takes the keyboard, `~?` lists them,
//! `~~` sends one `~`; `~` before anything else is sent as typed. Pure: bytes in, actions out.

/// What the typed bytes ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bytes for the host.
    Send(Vec<u8>),
    /// A serial BREAK.
    Break,
    /// Take the keyboard from another viewer.
    Takeover,
    /// Leave the console.
    Leave,
    /// Show the escapes.
    Help,
}

/// The help `~?` shows.
pub const HELP: &str = "supported escapes (at the start of a line): ~. leave, ~B send BREAK, \
~T take the keyboard, ~~ send ~, ~? this help";

/// The escape recognizer's state between reads.
#[derive(Debug, Clone)]
pub struct Escapes {
    line_start: bool,
    tilde: bool,
}

impl Default for Escapes {
    fn default() -> Self {
        Escapes {
            line_start: true,
            tilde: false,
        }
    }
}

impl Escapes {
    /// Feeds typed bytes; consecutive bytes for the host come as one [`Action::Send`].
    pub fn feed(&mut self, input: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        let mut send = Vec::new();
        let act = |out: &mut Vec<Action>, send: &mut Vec<u8>, a: Action| {
            if !send.is_empty() {
                out.push(Action::Send(std::mem::take(send)));
            }
            out.push(a);
        };
        for &b in input {
            if self.tilde {
                self.tilde = false;
                match b {
                    b'.' => {
                        act(&mut out, &mut send, Action::Leave);
                        // Nothing typed after leaving is sent.
                        return out;
                    }
                    b'B' => act(&mut out, &mut send, Action::Break),
                    b'T' => act(&mut out, &mut send, Action::Takeover),
                    b'?' => act(&mut out, &mut send, Action::Help),
                    b'~' => send.push(b'~'),
                    other => {
                        send.push(b'~');
                        send.push(other);
                    }
                }
                // After an escape the line goes on: `~.` needs a new line again, as in ssh.
                self.line_start = matches!(b, b'\r' | b'\n');
                continue;
            }
            if b == b'~' && self.line_start {
                self.tilde = true;
                continue;
            }
            self.line_start = matches!(b, b'\r' | b'\n');
            send.push(b);
        }
        if !send.is_empty() {
            out.push(Action::Send(send));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    fn feed(e: &mut Escapes, s: &[u8]) -> Vec<Action> {
        e.feed(s)
    }

    #[test]
    fn escapes_only_at_line_start() {
        let mut e = Escapes::default();
        assert_eq!(feed(&mut e, b"~."), vec![Leave], "at the session's start");
        let mut e = Escapes::default();
        assert_eq!(feed(&mut e, b"ls ~."), vec![Send(b"ls ~.".to_vec())]);
        assert_eq!(feed(&mut e, b"\r~B"), vec![Send(b"\r".to_vec()), Break]);
        assert_eq!(feed(&mut e, b"x"), vec![Send(b"x".to_vec())]);
        assert_eq!(
            feed(&mut e, b"\n~T\r~?"),
            vec![Send(b"\n".to_vec()), Takeover, Send(b"\r".to_vec()), Help]
        );
    }

    #[test]
    fn split_reads_double_tilde_and_unknown() {
        let mut e = Escapes::default();
        assert_eq!(feed(&mut e, b"\r"), vec![Send(b"\r".to_vec())]);
        assert_eq!(feed(&mut e, b"~"), vec![], "held until the next byte");
        assert_eq!(feed(&mut e, b"."), vec![Leave]);
        let mut e = Escapes::default();
        assert_eq!(feed(&mut e, b"~~"), vec![Send(b"~".to_vec())]);
        assert_eq!(
            feed(&mut e, b"~."),
            vec![Send(b"~.".to_vec())],
            "not at line start"
        );
        let mut e = Escapes::default();
        assert_eq!(
            feed(&mut e, b"~x\r~.junk"),
            vec![Send(b"~x\r".to_vec()), Leave]
        );
        let mut e = Escapes::default();
        assert_eq!(feed(&mut e, b"~\r~."), vec![Send(b"~\r".to_vec()), Leave]);
        assert_eq!(feed(&mut Escapes::default(), b""), vec![]);
    }
}
