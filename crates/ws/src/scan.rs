//! Counting the frames of a stream that is relayed as bytes, not decoded: a gateway splicing a
//! viewer's WebSocket to an agent's passes each read on as it came, and this scanner follows
//! the frame headers in it to count data payload bytes and messages — and to know when the
//! stream stands between two frames, where a frame of the relay's own (a close) may go in.
//! No payload is buffered.

use crate::{Opcode, WsError};

/// Longest frame header: 2 bytes, a 64-bit length, a mask key.
const MAX_HEADER: usize = 14;

/// Follows the frames of one direction of a WebSocket.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    masked: bool,
    head: [u8; MAX_HEADER],
    have: usize,
    remaining: u64,
    data: bool,
    /// Payload bytes of data frames (text, binary, continuations) passed so far.
    pub payload_bytes: u64,
    /// Data messages passed so far (counted at their final frame's header).
    pub messages: u64,
    /// A close frame has passed.
    pub closed: bool,
}

impl FrameScanner {
    /// A scanner for frames sent by a client (`masked`: they must be) or a server (they must
    /// not be).
    pub fn new(masked: bool) -> FrameScanner {
        FrameScanner {
            masked,
            head: [0; MAX_HEADER],
            have: 0,
            remaining: 0,
            data: false,
            payload_bytes: 0,
            messages: 0,
            closed: false,
        }
    }

    /// Whether the bytes fed so far end exactly at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Follows `bytes`, the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), WsError> {
        while !bytes.is_empty() {
            let n = self.feed_to_boundary(bytes)?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Follows `bytes` up to the first frame boundary in them, and returns how many it took
    /// (all of them when no frame ends inside): a relay that must stop between frames
    /// forwards exactly that much.
    pub fn feed_to_boundary(&mut self, bytes: &[u8]) -> Result<usize, WsError> {
        let mut used = 0;
        while used < bytes.len() {
            if self.remaining > 0 {
                let n = ((bytes.len() - used) as u64).min(self.remaining);
                if self.data {
                    self.payload_bytes += n;
                }
                self.remaining -= n;
                used += n as usize;
            } else {
                self.head[self.have] = bytes[used];
                self.have += 1;
                used += 1;
                if let Some(len) = self.header()? {
                    self.have = 0;
                    self.remaining = len;
                }
            }
            if self.at_boundary() {
                break;
            }
        }
        Ok(used)
    }

    /// The payload length once the header collected so far is whole.
    fn header(&mut self) -> Result<Option<u64>, WsError> {
        if self.have < 2 {
            return Ok(None);
        }
        let (b0, b1) = (self.head[0], self.head[1]);
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        if self.have < 2 + ext + mask {
            return Ok(None);
        }
        if (mask != 0) != self.masked {
            return Err(WsError::Unmasked);
        }
        if b0 & 0x70 != 0 {
            return Err(WsError::Reserved);
        }
        let opcode = Opcode::from_bits(b0 & 0x0f).ok_or(WsError::Reserved)?;
        let len = match ext {
            0 => u64::from(b1 & 0x7f),
            2 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            _ => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&self.head[2..10]);
                u64::from_be_bytes(l)
            }
        };
        if opcode.is_control() && (len > 125 || b0 & 0x80 == 0) {
            return Err(WsError::BadControl);
        }
        self.data = !opcode.is_control();
        self.closed |= opcode == Opcode::Close;
        if self.data && b0 & 0x80 != 0 {
            self.messages += 1;
        }
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_client_frame, encode_server_frame};

    #[test]
    fn counts_payloads_and_messages_however_the_bytes_are_cut() {
        let mut stream = Vec::new();
        stream.extend(encode_server_frame(Opcode::Binary, b"hello"));
        stream.extend(encode_server_frame(Opcode::Ping, b"p"));
        stream.extend(encode_server_frame(Opcode::Binary, &[7u8; 300]));
        stream.extend(encode_server_frame(Opcode::Text, &[b'x'; 70_000]));
        for cut in [1, 2, 3, 7, 64, 1000, stream.len()] {
            let mut s = FrameScanner::new(false);
            for chunk in stream.chunks(cut) {
                s.feed(chunk).unwrap();
            }
            assert_eq!(s.payload_bytes, 5 + 300 + 70_000, "cut {cut}");
            assert_eq!(s.messages, 3, "cut {cut}");
            assert!(s.at_boundary());
        }
        let mut s = FrameScanner::new(false);
        s.feed(&stream[..4]).unwrap();
        assert!(!s.at_boundary(), "inside the first frame");
        // the first frame is 2 + 5 bytes: three more end it
        assert_eq!(s.feed_to_boundary(&stream[4..]), Ok(3));
        assert!(s.at_boundary());
        assert_eq!(s.feed_to_boundary(&stream[7..8]), Ok(1));
        assert!(!s.at_boundary(), "a header byte");
    }

    #[test]
    fn client_frames_are_masked_and_fragments_count_once() {
        let mut s = FrameScanner::new(true);
        // a message in two fragments: Binary without FIN, then a final continuation
        let mut first = encode_client_frame(Opcode::Binary, b"ab", [1, 2, 3, 4]);
        first[0] &= 0x7f;
        s.feed(&first).unwrap();
        assert_eq!(s.messages, 0);
        s.feed(&encode_client_frame(
            Opcode::Continuation,
            b"cd",
            [5, 6, 7, 8],
        ))
        .unwrap();
        assert_eq!((s.payload_bytes, s.messages), (4, 1));
        assert!(!s.closed);
        s.feed(&encode_client_frame(Opcode::Close, &[3, 232], [0; 4]))
            .unwrap();
        assert!(s.closed && s.at_boundary());
        assert_eq!(
            FrameScanner::new(true).feed(&encode_server_frame(Opcode::Binary, b"x")),
            Err(WsError::Unmasked)
        );
        assert_eq!(
            FrameScanner::new(false).feed(&[0x83, 0]),
            Err(WsError::Reserved)
        );
        assert_eq!(
            FrameScanner::new(false).feed(&[0x09, 0]),
            Err(WsError::BadControl),
            "a fragmented ping"
        );
    }
}
