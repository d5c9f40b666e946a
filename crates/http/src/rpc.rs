//! Unary RPCs in the Connect protocol's JSON form (`POST /<package>.<Service>/<Method>`,
//! `Content-Type: application/json`, errors as `{"code": "...", "message": "..."}` with
//! Connect's code → HTTP status mapping), the bearer-token guard, and the RPC metrics.
//! One dispatcher for all three components; messages live in the `conduit-api` crate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::middleware::RpcMetrics;
use crate::{Request, Response};

/// Connect error codes (the `status` label of `*_rpc_calls_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success (label only).
    Ok,
    /// The request is malformed.
    InvalidArgument,
    /// No such entity.
    NotFound,
    /// The entity to create exists already.
    AlreadyExists,
    /// The operation is not possible in the current state.
    FailedPrecondition,
    /// Deadline exceeded.
    DeadlineExceeded,
    /// Not implemented.
    Unimplemented,
    /// Internal error.
    Internal,
    /// The dependency (a BMC) is unavailable.
    Unavailable,
    /// Missing or bad credentials.
    Unauthenticated,
    /// Denied.
    PermissionDenied,
    /// Too many calls in flight; retry later (`Retry-After` says when).
    ResourceExhausted,
    /// The operation was cut off midway: whether it took effect is unknown.
    Aborted,
}

/// Every code, for parsing.
const CODES: [Code; 13] = [
    Code::Ok,
    Code::InvalidArgument,
    Code::NotFound,
    Code::AlreadyExists,
    Code::FailedPrecondition,
    Code::DeadlineExceeded,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::Unauthenticated,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::Aborted,
];

impl Code {
    /// The code as written in JSON errors and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::InvalidArgument => "invalid_argument",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::FailedPrecondition => "failed_precondition",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Aborted => "aborted",
        }
    }

    /// The code written `word`, if it is one of ours.
    pub fn parse(word: &str) -> Option<Code> {
        CODES.into_iter().find(|c| c.as_str() == word)
    }

    /// Connect's HTTP status for the code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::InvalidArgument => 400,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::FailedPrecondition => 400,
            Code::DeadlineExceeded => 504,
            Code::Unimplemented => 501,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Aborted => 409,
        }
    }
}

/// An RPC error: a code and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// Code.
    pub code: Code,
    /// Human-readable message (never secrets).
    pub message: String,
    /// For `resource_exhausted`: when to try again (`Retry-After`, whole seconds).
    pub retry_after: Option<std::time::Duration>,
}

impl RpcError {
    /// An error with `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `resource_exhausted`, to be retried after `after`.
    pub fn exhausted(message: impl Into<String>, after: std::time::Duration) -> Self {
        RpcError {
            retry_after: Some(after),
            ..RpcError::new(Code::ResourceExhausted, message)
        }
    }

    /// The error as a Connect JSON response.
    pub fn response(&self) -> Response {
        let body = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        let mut r = Response::json(self.code.http_status(), &body);
        if self.code == Code::Unauthenticated {
            r = r.with_header("WWW-Authenticate", "Bearer");
        }
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            r = r.with_header("Retry-After", secs.max(1).to_string());
        }
        r
    }
}

/// The credential of `Authorization: Bearer <credential>`, if the request carries one.
pub fn bearer(req: &Request) -> Option<&str> {
    req.header("Authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Checks `Authorization: Bearer <token>` against the configured token in constant time.
/// With no token configured, every call is refused.
pub fn check_bearer(req: &Request, token: Option<&str>) -> Result<(), RpcError> {
    let Some(token) = token else {
        return Err(RpcError::new(
            Code::Unauthenticated,
            "the API is disabled: no api_token is configured",
        ));
    };
    let given = bearer(req).unwrap_or("");
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    if same {
        Ok(())
    } else {
        Err(RpcError::new(
            Code::Unauthenticated,
            "missing or invalid bearer token",
        ))
    }
}

/// A unary Connect handler for `service`/`method`: token check, JSON decode, call, JSON
/// encode, metrics.
pub fn unary<Req, Resp>(
    service: &'static str,
    method: &'static str,
    token: Option<Arc<str>>,
    metrics: Arc<RpcMetrics>,
    call: impl Fn(Req) -> Result<Resp, RpcError> + Send + Sync + 'static,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static
where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    move |req| {
        let start = Instant::now();
        let (code, resp) = encode(decode(req, token.as_deref()).and_then(&call));
        metrics.observe(service, method, code.as_str(), start.elapsed());
        resp
    }
}

/// What a deferred call returns: the answer to come, computed elsewhere.
pub type RpcFuture<T> = Pin<Box<dyn Future<Output = Result<T, RpcError>> + Send>>;

/// A deferred call refused before it started.
pub fn refused<T: 'static>(e: RpcError) -> RpcFuture<T> {
    Box::pin(async move { Err(e) })
}

/// A unary handler whose call waits on something slow (a BMC): `call` starts the work
/// elsewhere and returns at once (refusing, e.g. `resource_exhausted`, if it cannot), so the
/// worker is free while the connection waits for the answer. Metrics are recorded when it
/// comes.
pub fn unary_deferred<Req, Resp>(
    service: &'static str,
    method: &'static str,
    token: Option<Arc<str>>,
    metrics: Arc<RpcMetrics>,
    call: impl Fn(Req) -> RpcFuture<Resp> + Send + Sync + 'static,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static
where
    Req: DeserializeOwned,
    Resp: Serialize + 'static,
{
    unary_authenticating(
        service,
        method,
        metrics,
        move |req, body| match check_bearer(req, token.as_deref()) {
            Ok(()) => call(body),
            Err(e) => refused(e),
        },
    )
}

/// [`unary_deferred`] for services that authenticate each caller themselves (the manager's
/// users, keys and gateways): `call` gets the request (its `Authorization` header, its peer)
/// with the decoded body and does its own checks.
pub fn unary_authenticating<Req, Resp>(
    service: &'static str,
    method: &'static str,
    metrics: Arc<RpcMetrics>,
    call: impl Fn(&Request, Req) -> RpcFuture<Resp> + Send + Sync + 'static,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static
where
    Req: DeserializeOwned,
    Resp: Serialize + 'static,
{
    unary_raw(service, method, metrics, move |req| {
        match decode_body(req) {
            Ok(body) => call(req, body),
            Err(e) => refused(e),
        }
    })
}

/// The most general deferred unary handler: `call` gets the raw request and decodes the body
/// itself (with [`decode_body`]) when it chooses — after authenticating the caller, so that
/// no one without credentials learns anything of the request schema.
pub fn unary_raw<Resp>(
    service: &'static str,
    method: &'static str,
    metrics: Arc<RpcMetrics>,
    call: impl Fn(&Request) -> RpcFuture<Resp> + Send + Sync + 'static,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static
where
    Resp: Serialize + 'static,
{
    move |req| {
        let start = Instant::now();
        let later = call(req);
        let metrics = metrics.clone();
        Response::deferred(async move {
            let (code, resp) = encode(later.await);
            metrics.observe(service, method, code.as_str(), start.elapsed());
            resp
        })
    }
}

/// The bearer check, then the JSON request body.
fn decode<Req: DeserializeOwned>(req: &Request, token: Option<&str>) -> Result<Req, RpcError> {
    check_bearer(req, token)?;
    decode_body(req)
}

/// The JSON request body (an empty body is `{}`), checking its `Content-Type`.
pub fn decode_body<Req: DeserializeOwned>(req: &Request) -> Result<Req, RpcError> {
    let ct = req.header("Content-Type").unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(RpcError::new(
            Code::InvalidArgument,
            "Content-Type must be application/json",
        ));
    }
    let body = if req.body.is_empty() {
        &b"{}"[..]
    } else {
        &req.body
    };
    serde_json::from_slice::<Req>(body)
        .map_err(|e| RpcError::new(Code::InvalidArgument, format!("request body: {e}")))
}

/// The call's result as a Connect response, with its code.
fn encode<Resp: Serialize>(result: Result<Resp, RpcError>) -> (Code, Response) {
    match result {
        Ok(v) => match serde_json::to_vec(&v) {
            Ok(body) => (
                Code::Ok,
                Response::new(200)
                    .with_header("Content-Type", "application/json")
                    .with_body(body),
            ),
            Err(e) => {
                let e = RpcError::new(Code::Internal, format!("encode response: {e}"));
                (e.code, e.response())
            }
        },
        Err(e) => (e.code, e.response()),
    }
}
