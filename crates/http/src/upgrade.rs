//! The answer to a WebSocket upgrade request: the handshake rules are `conduit-ws`'s; this
//! turns them into the `101 Switching Protocols` response the server writes before it hands the
//! connection over (see [`crate::Upgrade`]).

use conduit_ws::WsError;

use crate::{Method, Request, Response};

/// Validates `req` as a WebSocket opening handshake and builds the 101 answer (add the
/// connection's [`crate::Upgrade`] to it). `protocol` is chosen when the client offers it.
pub fn websocket(req: &Request, protocol: Option<&str>) -> Result<Response, WsError> {
    let a = conduit_ws::accept(req.method == Method::Get, |n| req.header(n), protocol)?;
    let mut resp = Response::new(101)
        .with_header("Upgrade", "websocket")
        .with_header("Sec-WebSocket-Accept", a.accept);
    if let Some(p) = a.protocol {
        resp = resp.with_header("Sec-WebSocket-Protocol", p);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_answer_and_subprotocol() {
        let mut req = Request {
            method: Method::Get,
            path: "/console/vnc/n1".into(),
            headers: vec![
                ("Upgrade".into(), "websocket".into()),
                ("Connection".into(), "keep-alive, Upgrade".into()),
                ("Sec-WebSocket-Version".into(), "13".into()),
                (
                    "Sec-WebSocket-Key".into(),
                    "dGhlIHNhbXBsZSBub25jZQ==".into(),
                ),
                ("Sec-WebSocket-Protocol".into(), "binary, base64".into()),
            ],
            ..Request::default()
        };
        let r = websocket(&req, Some("binary")).unwrap();
        assert_eq!(r.status, 101);
        assert!(r
            .headers
            .contains(&("Sec-WebSocket-Protocol", "binary".into())));
        assert!(r.headers.contains(&(
            "Sec-WebSocket-Accept",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
        )));
        req.headers.retain(|(n, _)| n != "Sec-WebSocket-Key");
        assert_eq!(websocket(&req, None), Err(WsError::BadHandshake("no key")));
        req.method = Method::Post;
        assert!(websocket(&req, None).is_err());
    }
}
