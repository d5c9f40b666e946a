//! The bytes an agent (or anyone reaching the uplink port) sends after the WebSocket upgrade,
//! read as the gateway reads them: frames reassembled under the first-message limit, then the
//! larger one, each message decoded as the gateway decodes it. Nothing may panic, and no
//! message may exceed its limit.
#![no_main]

use conduit_api::uplink::{self as up, AgentMessage};
use conduit_uplink::link::{Incoming, MessageReader, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    futures_lite::future::block_on(async {
        let mut reader = MessageReader::new(data, Role::Server, up::MAX_REGISTRATION, Vec::new());
        let mut first = true;
        while let Ok(incoming) = reader.next().await {
            if let Incoming::Message(m) = incoming {
                assert!(m.len() <= if first { up::MAX_REGISTRATION } else { up::MAX_MESSAGE });
                let _ = up::registration_version(&m);
                match AgentMessage::decode(&m) {
                    Ok(AgentMessage::Register(r)) => {
                        let _ = up::check_servers(&r.servers);
                    }
                    Ok(AgentMessage::Servers { servers }) => {
                        let _ = up::check_servers(&servers);
                    }
                    _ => {}
                }
                if first {
                    reader.set_max_message(up::MAX_MESSAGE);
                    first = false;
                }
            }
        }
    });
});
