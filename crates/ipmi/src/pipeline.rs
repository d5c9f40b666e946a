//! Several IPMI requests outstanding on one session, as pure bookkeeping: which request goes
//! out (or out again) when, under which requester sequence number (rqSeq), and which request a
//! reply answers. [`super::client::Connection::request_batch`] seals, sends and receives; the
//! clock is passed in.
//!
//! # Window
//!
//! At most `window` requests are outstanding at once, never more than [`MAX_WINDOW`]. Each has
//! an rqSeq no other outstanding request has (the IPMI message's 6-bit sequence number is what
//! pairs a reply with its request), kept across its retransmits so that a late reply to an
//! earlier copy still counts. Every copy is sealed with the session's next sequence number;
//! copies leave in order and at most [`MAX_WINDOW`] are in flight, so a BMC never sees a
//! sequence number more than 8 away from the highest it has seen, the least window IPMI 2.0
//! (§6.12.13) lets it keep.
//!
//! # Falling back to one at a time
//!
//! A BMC that cannot take several requests at once drops some (they go unanswered) or answers
//! "node busy" (completion code 0xC0). Either one sets the window to 1 for the rest of the batch,
//! and [`Pipeline::window`] tells the caller to keep it so (`IpmiBmc` does, for that BMC). An
//! unanswered request is resent after its reply timeout, as a lone request would be; a busy
//! one goes out again when the window lets it. Both count against the request's sends
//! (`1 + retries`): a request still unanswered after its last send times the batch out, and a
//! BMC still busy at the last send gets its 0xC0 passed on as that request's answer.

use std::time::Instant;

use super::client::Timing;

/// The most requests outstanding on one session.
pub const MAX_WINDOW: usize = 8;

/// Completion code "node busy": the BMC cannot take the request now.
pub const NODE_BUSY: u8 = 0xC0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Not out: never sent, or answered busy (`sends` copies so far).
    Waiting { sends: u32 },
    /// Out, waiting for its reply until `deadline`.
    InFlight {
        seq: u8,
        sends: u32,
        deadline: Instant,
    },
    /// Answered.
    Done,
}

/// The requests of one batch, by index.
#[derive(Debug)]
pub struct Pipeline {
    entries: Vec<Entry>,
    window: usize,
    timing: Timing,
    /// Every entry before this one is done.
    first_open: usize,
    outstanding: usize,
}

/// A request that got no reply after its last send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered(pub usize);

impl Pipeline {
    /// `n` requests, at most `window` (clamped to 1..=[`MAX_WINDOW`]) outstanding at once.
    pub fn new(n: usize, window: usize, timing: Timing) -> Pipeline {
        Pipeline {
            entries: vec![Entry::Waiting { sends: 0 }; n],
            window: window.clamp(1, MAX_WINDOW),
            timing,
            first_open: 0,
            outstanding: 0,
        }
    }

    /// The window now: 1 once the BMC dropped or refused a request as busy.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Whether every request is answered.
    pub fn is_done(&self) -> bool {
        self.first_open == self.entries.len()
    }

    /// When the next request that is out times out (`None`: nothing out).
    pub fn deadline(&self) -> Option<Instant> {
        self.entries[self.first_open..]
            .iter()
            .filter_map(|e| match e {
                Entry::InFlight { deadline, .. } => Some(*deadline),
                _ => None,
            })
            .min()
    }

    fn seq_in_use(&self, seq: u8) -> bool {
        self.entries[self.first_open..]
            .iter()
            .any(|e| matches!(e, Entry::InFlight { seq: s, .. } if *s == seq))
    }

    /// What to send at `now`, in order, as `(index, rqSeq)`: resends of requests whose reply
    /// is overdue, then new requests as far as the window allows. `next_seq` hands out rqSeqs
    /// (6 bits) for requests going out the first time; one still in use is skipped.
    pub fn poll(
        &mut self,
        now: Instant,
        mut next_seq: impl FnMut() -> u8,
    ) -> Result<Vec<(usize, u8)>, Unanswered> {
        let mut out = Vec::new();
        let timeout = self.timing.reply_timeout;
        for i in self.first_open..self.entries.len() {
            if let Entry::InFlight {
                seq,
                sends,
                deadline,
            } = self.entries[i]
            {
                if deadline > now {
                    continue;
                }
                if sends > self.timing.retries {
                    return Err(Unanswered(i));
                }
                // A lost reply while several were out: the BMC may not cope with them.
                self.window = 1;
                self.entries[i] = Entry::InFlight {
                    seq,
                    sends: sends + 1,
                    deadline: now + timeout,
                };
                out.push((i, seq));
            }
        }
        let mut i = self.first_open;
        while self.outstanding < self.window && i < self.entries.len() {
            if let Entry::Waiting { sends } = self.entries[i] {
                let mut seq = next_seq() & 0x3F;
                // At most MAX_WINDOW are in use: this ends within MAX_WINDOW + 1 draws.
                while self.seq_in_use(seq) {
                    seq = next_seq() & 0x3F;
                }
                self.entries[i] = Entry::InFlight {
                    seq,
                    sends: sends + 1,
                    deadline: now + timeout,
                };
                self.outstanding += 1;
                out.push((i, seq));
            }
            i += 1;
        }
        Ok(out)
    }

    /// The request out under `seq`, if any (the caller checks that the reply is for that
    /// request's command, then calls [`Pipeline::answered`] or [`Pipeline::busy`]).
    pub fn in_flight(&self, seq: u8) -> Option<usize> {
        (self.first_open..self.entries.len())
            .find(|&i| matches!(self.entries[i], Entry::InFlight { seq: s, .. } if s == seq))
    }

    /// Request `i` has its answer.
    pub fn answered(&mut self, i: usize) {
        if matches!(self.entries.get(i), Some(Entry::InFlight { .. })) {
            self.entries[i] = Entry::Done;
            self.outstanding -= 1;
            while self.entries.get(self.first_open) == Some(&Entry::Done) {
                self.first_open += 1;
            }
        }
    }

    /// Request `i` was answered "node busy": it goes out again when the window allows, and
    /// the window drops to 1. Returns false when it has had all its sends: then the busy
    /// answer is its answer (the caller takes it and calls [`Pipeline::answered`]).
    pub fn busy(&mut self, i: usize) -> bool {
        let Some(Entry::InFlight { sends, .. }) = self.entries.get(i).copied() else {
            return false;
        };
        self.window = 1;
        if sends > self.timing.retries {
            return false;
        }
        self.entries[i] = Entry::Waiting { sends };
        self.outstanding -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn timing() -> Timing {
        Timing {
            reply_timeout: Duration::from_millis(100),
            retries: 2,
        }
    }

    fn counter() -> impl FnMut() -> u8 {
        let mut n = 0u8;
        move || {
            n = n.wrapping_add(1);
            n
        }
    }

    #[test]
    fn a_window_of_requests_goes_out_and_refills_as_replies_come() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(10, 4, timing());
        let mut seqs = counter();
        let first = p.poll(t0, &mut seqs).unwrap();
        assert_eq!(first, [(0, 1), (1, 2), (2, 3), (3, 4)]);
        assert_eq!(p.poll(t0, &mut seqs).unwrap(), [], "window full");
        // Replies out of order.
        let i = p.in_flight(3).unwrap();
        assert_eq!(i, 2);
        p.answered(i);
        p.answered(p.in_flight(1).unwrap());
        assert_eq!(p.poll(t0, &mut seqs).unwrap(), [(4, 5), (5, 6)]);
        assert_eq!(p.in_flight(3), None, "answered");
        for s in [2, 4, 5, 6] {
            p.answered(p.in_flight(s).unwrap());
        }
        let rest = p.poll(t0, &mut seqs).unwrap();
        assert_eq!(rest, [(6, 7), (7, 8), (8, 9), (9, 10)]);
        for (i, _) in rest {
            p.answered(i);
        }
        assert!(p.is_done());
        assert_eq!(p.window(), 4);
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn a_lost_reply_is_resent_under_its_rqseq_and_the_window_drops_to_one() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(5, 3, timing());
        let mut seqs = counter();
        assert_eq!(p.poll(t0, &mut seqs).unwrap().len(), 3);
        p.answered(0);
        p.answered(2);
        assert_eq!(p.poll(t0, &mut seqs).unwrap(), [(3, 4), (4, 5)]);
        assert_eq!(p.deadline(), Some(t0 + Duration::from_millis(100)));
        // Request 1 (rqSeq 2) is overdue: resent, same rqSeq; nothing new.
        let t1 = t0 + Duration::from_millis(100);
        p.answered(3);
        assert_eq!(p.poll(t1, &mut seqs).unwrap(), [(1, 2), (4, 5)]);
        assert_eq!(p.window(), 1);
        p.answered(p.in_flight(2).unwrap());
        p.answered(4);
        assert!(p.is_done());
    }

    #[test]
    fn a_request_unanswered_after_its_last_send_fails_the_batch() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(1, 1, timing());
        let mut seqs = counter();
        let mut sends = 0;
        let mut now = t0;
        let err = loop {
            match p.poll(now, &mut seqs) {
                Ok(out) => sends += out.len(),
                Err(e) => break e,
            }
            now = p.deadline().unwrap();
        };
        assert_eq!((sends, err), (3, Unanswered(0)));
    }

    #[test]
    fn busy_answers_are_resent_one_at_a_time_then_passed_on() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(3, 3, timing());
        let mut seqs = counter();
        assert_eq!(p.poll(t0, &mut seqs).unwrap().len(), 3);
        // rqSeq 2: request 1.
        assert!(p.busy(p.in_flight(2).unwrap()));
        assert_eq!(p.window(), 1);
        // Requests 0 and 2 are still out: nothing goes until both are answered.
        assert_eq!(p.poll(t0, &mut seqs).unwrap(), []);
        p.answered(0);
        assert_eq!(p.poll(t0, &mut seqs).unwrap(), []);
        p.answered(p.in_flight(3).unwrap());
        let again = p.poll(t0, &mut seqs).unwrap();
        assert_eq!(again, [(1, 4)]);
        assert!(p.busy(1));
        assert_eq!(p.poll(t0, &mut seqs).unwrap(), [(1, 5)]);
        // The third send answered busy again: that is the answer.
        assert!(!p.busy(1));
        p.answered(1);
        assert!(p.is_done());
    }

    #[test]
    fn rqseqs_in_use_are_not_handed_out_again() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(70, 2, timing());
        let mut seqs = counter();
        let first = p.poll(t0, &mut seqs).unwrap();
        assert_eq!(first, [(0, 1), (1, 2)]);
        // Request 0 stays out while 62 others come and go; the counter wraps to 1 again.
        let mut sent = Vec::new();
        for _ in 0..63 {
            let out = p.poll(t0, &mut seqs).unwrap();
            for &(i, s) in &out {
                if i != 0 {
                    sent.push(s);
                    p.answered(i);
                }
            }
            if let Some(i) = p.in_flight(2) {
                p.answered(i);
            }
        }
        assert_eq!(p.in_flight(1), Some(0));
        assert!(!sent.contains(&1), "rqSeq 1 is request 0's");
        assert!(sent.iter().all(|&s| s < 64));
    }
}
