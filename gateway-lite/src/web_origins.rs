//! Web pages of other origins (the manager's web console) that users' browsers run: which
//! may call GatewayService here and open consoles, and the CORS answers that let a browser do
//! so. Calls carry the access token in `Authorization`, never a cookie, so no credentials
//! mode is offered: a page of another origin learns nothing it could not ask for with a token.

use std::sync::Arc;

use conduit_http::router::Router;
use conduit_http::{Method, Request, Response};

/// How long a browser may reuse a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The origins (`scheme://host[:port]`) whose pages may use this gateway.
#[derive(Debug, Clone, Default)]
pub struct WebOrigins {
    listed: Vec<String>,
}

impl WebOrigins {
    /// The origins given with `--console-origin`.
    pub fn new(listed: Vec<String>) -> Arc<WebOrigins> {
        Arc::new(WebOrigins { listed })
    }

    fn listed(&self, origin: &str) -> bool {
        self.listed.iter().any(|o| o == origin)
    }

    /// Whether a browser's `Origin` may open consoles here: this gateway's own (the `Host`
    /// it was asked by), or a listed one. Clients that send none (the CLI) may.
    pub fn may_open_consoles(&self, req: &Request) -> bool {
        let Some(origin) = req.header("Origin") else {
            return true;
        };
        if self.listed(origin) {
            return true;
        }
        let host = req.header("Host").unwrap_or_default();
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|h| !host.is_empty() && h == host)
    }

    /// The CORS answer to a preflight (`OPTIONS`) of a listed origin's page; 403 otherwise.
    pub fn preflight(&self, req: &Request) -> Response {
        match req.header("Origin").filter(|o| self.listed(o)) {
            Some(origin) => Response::new(204)
                .with_header("Access-Control-Allow-Origin", origin)
                .with_header("Access-Control-Allow-Methods", "POST")
                .with_header(
                    "Access-Control-Allow-Headers",
                    "authorization, content-type, connect-protocol-version",
                )
                .with_header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE)
                .with_header("Vary", "Origin"),
            None => Response::text(403, "this origin may not call this gateway\n")
                .with_header("Vary", "Origin"),
        }
    }

    /// `handler`, its answers to a listed origin's page marked readable by that page (also an
    /// answer computed later, on the I/O thread).
    pub fn allow(
        self: &Arc<Self>,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
        let origins = self.clone();
        move |req| {
            let resp = handler(req);
            let Some(origin) = req.header("Origin").filter(|o| origins.listed(o)) else {
                return resp;
            };
            let origin = origin.to_owned();
            match resp.deferred.as_ref().and_then(|d| d.take()) {
                Some(later) => Response::deferred(async move { readable(later.await, origin) }),
                None => readable(resp, origin),
            }
        }
    }

    /// Adds `handler` for POST on `path`, and the preflight for it.
    pub fn route(
        self: &Arc<Self>,
        router: Router,
        path: &'static str,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Router {
        let origins = self.clone();
        router.route(Method::Post, path, self.allow(handler)).route(
            Method::Options,
            path,
            move |req| origins.preflight(req),
        )
    }
}

fn readable(resp: Response, origin: String) -> Response {
    resp.with_header("Access-Control-Allow-Origin", origin)
        .with_header("Vary", "Origin")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        Request {
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Request::default()
        }
    }

    fn header<'r>(r: &'r Response, name: &str) -> Option<&'r str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn listed_pages_get_readable_answers_others_none() {
        let o = WebOrigins::new(vec!["http://127.0.0.1:8080".into()]);
        let handler = o.allow(|_| Response::text(200, "ok"));
        let r = handler(&req(&[("Origin", "http://127.0.0.1:8080")]));
        assert_eq!(
            header(&r, "Access-Control-Allow-Origin"),
            Some("http://127.0.0.1:8080")
        );
        let r = handler(&req(&[("Origin", "https://evil.example")]));
        assert_eq!(header(&r, "Access-Control-Allow-Origin"), None);
        let r = handler(&req(&[]));
        assert_eq!(header(&r, "Access-Control-Allow-Origin"), None);
        let p = o.preflight(&req(&[("Origin", "http://127.0.0.1:8080")]));
        assert_eq!(p.status, 204);
        assert!(header(&p, "Access-Control-Allow-Headers")
            .unwrap()
            .contains("authorization"));
        assert_eq!(header(&p, "Access-Control-Allow-Credentials"), None);
        assert_eq!(
            o.preflight(&req(&[("Origin", "https://evil.example")]))
                .status,
            403
        );
    }

    #[test]
    fn consoles_from_the_own_origin_listed_ones_or_none() {
        let o = WebOrigins::new(vec!["http://127.0.0.1:8080".into()]);
        let host = ("Host", "gw.example:8081");
        assert!(o.may_open_consoles(&req(&[host])));
        assert!(o.may_open_consoles(&req(&[host, ("Origin", "http://gw.example:8081")])));
        assert!(o.may_open_consoles(&req(&[host, ("Origin", "http://127.0.0.1:8080")])));
        assert!(!o.may_open_consoles(&req(&[host, ("Origin", "https://evil.example")])));
        assert!(!o.may_open_consoles(&req(&[("Origin", "http://")])));
    }
}
