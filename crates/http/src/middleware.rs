//! The request metrics middleware: `<component>_http_requests_total{method,endpoint,status_code}`
//! and `<component>_http_request_duration_seconds{method,endpoint}` for every request, plus the
//! RPC families the Connect dispatcher drives.
//!
//! Label values stay bounded: `method` is one of the standard verbs or `OTHER`, `endpoint` is a
//! route template or `other`, `status_code` one of the codes the server emits.

use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::router::{Match, Router, UNMATCHED};
use crate::{Method, Request, Response};
use conduit_metrics::buckets;
use conduit_metrics::catalog::{Buckets, CappedFamily, CatalogBuilder};

/// Labels of `*_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Request method.
    pub method: Method,
    /// Route template or `other`.
    pub endpoint: &'static str,
    /// Response status.
    pub status_code: u16,
}

/// Labels of `*_http_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// Request method.
    pub method: Method,
    /// Route template or `other`.
    pub endpoint: &'static str,
}

/// The HTTP request families of one component.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: CappedFamily<RequestLabels, Counter>,
    duration: CappedFamily<DurationLabels, Histogram, Buckets>,
}

impl HttpMetrics {
    /// Registers both families under the builder's prefix.
    pub fn register(b: &mut CatalogBuilder) -> Self {
        HttpMetrics {
            requests: b.counter_family("http_requests", "HTTP requests"),
            duration: b.histogram_family(
                "http_request_duration_seconds",
                "Request duration",
                buckets::HTTP_RPC,
            ),
        }
    }

    /// Records one answered request.
    pub fn observe(&self, method: Method, endpoint: &'static str, status: u16, took: Duration) {
        self.requests.inc(&RequestLabels {
            method,
            endpoint,
            status_code: status,
        });
        self.duration
            .observe(&DurationLabels { method, endpoint }, took.as_secs_f64());
    }
}

/// Labels of `*_rpc_calls_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Fully qualified service, e.g. `conduit.agent.v1.BmcService`.
    pub service: &'static str,
    /// Method name, e.g. `PowerAction`.
    pub method: &'static str,
    /// Connect code, e.g. `ok`, `unauthenticated`.
    pub status: &'static str,
}

/// Labels of `*_rpc_call_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcDurationLabels {
    /// Fully qualified service.
    pub service: &'static str,
    /// Method name.
    pub method: &'static str,
}

/// The RPC call families of one component, driven by the Connect dispatcher.
#[derive(Debug)]
pub struct RpcMetrics {
    calls: CappedFamily<RpcLabels, Counter>,
    duration: CappedFamily<RpcDurationLabels, Histogram, Buckets>,
}

impl RpcMetrics {
    /// Registers both families under the builder's prefix.
    pub fn register(b: &mut CatalogBuilder) -> Self {
        RpcMetrics {
            calls: b.counter_family("rpc_calls", "RPC calls"),
            duration: b.histogram_family(
                "rpc_call_duration_seconds",
                "RPC duration",
                buckets::HTTP_RPC,
            ),
        }
    }

    /// Records one finished call.
    pub fn observe(
        &self,
        service: &'static str,
        method: &'static str,
        status: &'static str,
        took: Duration,
    ) {
        self.calls.inc(&RpcLabels {
            service,
            method,
            status,
        });
        self.duration
            .observe(&RpcDurationLabels { service, method }, took.as_secs_f64());
    }
}

/// A router wrapped in the request metrics: what the server's workers call.
#[derive(Debug)]
pub struct HttpService {
    router: Router,
    metrics: std::sync::Arc<HttpMetrics>,
}

impl HttpService {
    /// Wraps `router`.
    pub fn new(router: Router, metrics: HttpMetrics) -> Self {
        HttpService {
            router,
            metrics: std::sync::Arc::new(metrics),
        }
    }

    /// Dispatches one request and records it.
    pub fn handle(&self, mut req: Request) -> Response {
        let start = Instant::now();
        let (endpoint, resp) = match self.router.lookup(req.method, &req.path) {
            Match::Found {
                template,
                handler,
                params,
            } => {
                req.params = params;
                (template, handler(&req))
            }
            Match::MethodNotAllowed { template, allow } => (
                template,
                Response::text(405, "method not allowed\n").with_header("Allow", allow),
            ),
            Match::NotFound => (UNMATCHED, Response::text(404, "not found\n")),
        };
        // A deferred answer is recorded when it is ready, with its real status and duration.
        if let Some(later) = resp.deferred.as_ref().and_then(|d| d.take()) {
            let (metrics, method) = (self.metrics.clone(), req.method);
            return Response::deferred(async move {
                let resp = later.await;
                metrics.observe(method, endpoint, resp.status, start.elapsed());
                resp
            });
        }
        self.metrics
            .observe(req.method, endpoint, resp.status, start.elapsed());
        resp
    }

    /// Records a request the server refused before dispatch (malformed, too large, too slow).
    pub fn record_refused(&self, method: Method, status: u16, took: Duration) {
        self.metrics.observe(method, UNMATCHED, status, took);
    }
}
