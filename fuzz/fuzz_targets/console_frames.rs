//! A console's bytes as the gateway relays them, both ways: the frame scanner follows any
//! input, cut anywhere, without panicking, and counts the same however the input is cut.
#![no_main]

use conduit_ws::scan::FrameScanner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    for masked in [true, false] {
        let mut whole = FrameScanner::new(masked);
        let whole_ok = whole.feed(bytes).is_ok();
        let mut pieces = FrameScanner::new(masked);
        let mut pieces_ok = true;
        for chunk in bytes.chunks(usize::from(cut).max(1)) {
            // up to each boundary, as a relay that stops between frames does
            let mut rest = chunk;
            while !rest.is_empty() {
                match pieces.feed_to_boundary(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(_) => {
                        pieces_ok = false;
                        break;
                    }
                }
            }
            if !pieces_ok {
                break;
            }
        }
        assert_eq!(whole_ok, pieces_ok);
        if whole_ok {
            assert_eq!(whole.payload_bytes, pieces.payload_bytes);
            assert_eq!(whole.messages, pieces.messages);
            assert_eq!(whole.at_boundary(), pieces.at_boundary());
        }
    }
});
