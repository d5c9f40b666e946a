//! Route templates (`/api/v1/servers/{id}`) and method dispatch.
//!
//! The matched template, never the raw path, is what the request metrics record as `endpoint`.

use std::sync::Arc;

use crate::{Method, Request, Response};

/// A request handler. Handlers run on the server's worker threads.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// The `endpoint` label value of requests that matched no route.
pub const UNMATCHED: &str = "other";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Literal(&'static str),
    Param(&'static str),
    /// `{name*}`, last: one or more segments, the parameter's value joined with `/`
    /// (feature `rest-segments`: the agent, whose size is budgeted, has no use for it).
    #[cfg(feature = "rest-segments")]
    Rest(&'static str),
}

struct Route {
    template: &'static str,
    segments: Vec<Segment>,
    handlers: Vec<(Method, Handler)>,
}

/// An ordered set of routes.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|r| r.template))
            .finish()
    }
}

/// The outcome of looking a request up.
#[allow(missing_debug_implementations)] // holds a handler closure
pub enum Match<'r> {
    /// A route and a handler for the method.
    Found {
        /// The route template.
        template: &'static str,
        /// The handler.
        handler: &'r Handler,
        /// Template parameter values.
        params: Vec<(&'static str, String)>,
    },
    /// A route matched the path but not the method.
    MethodNotAllowed {
        /// The route template.
        template: &'static str,
        /// Value for the `Allow` header.
        allow: String,
    },
    /// No route matched the path.
    NotFound,
}

fn parse_template(template: &'static str) -> Vec<Segment> {
    assert!(
        template.starts_with('/'),
        "route template {template:?} must start with /"
    );
    template[1..]
        .split('/')
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                #[cfg(feature = "rest-segments")]
                Some(name) if name.ends_with('*') => Segment::Rest(&name[..name.len() - 1]),
                Some(name) => Segment::Param(name),
                None => Segment::Literal(s),
            },
        )
        .collect()
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds `handler` for `method` on `template`. `GET` routes also answer `HEAD` (without the
    /// body) unless a `HEAD` handler is given. Of two handlers for one method and template,
    /// the first added answers.
    pub fn route(
        mut self,
        method: Method,
        template: &'static str,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Self {
        let handler: Handler = Arc::new(handler);
        match self.routes.iter_mut().find(|r| r.template == template) {
            Some(r) => r.handlers.push((method, handler)),
            None => self.routes.push(Route {
                template,
                segments: parse_template(template),
                handlers: vec![(method, handler)],
            }),
        }
        self
    }

    /// The templates this router serves.
    pub fn templates(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.iter().map(|r| r.template)
    }

    /// Finds the route for `path` and the handler for `method`.
    pub fn lookup(&self, method: Method, path: &str) -> Match<'_> {
        let Some(rest) = path.strip_prefix('/') else {
            return Match::NotFound;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        for route in &self.routes {
            let Some(params) = match_segments(&route.segments, &parts) else {
                continue;
            };
            let find = |m: Method| route.handlers.iter().find(|(hm, _)| *hm == m);
            let found = find(method).or_else(|| {
                (method == Method::Head)
                    .then(|| find(Method::Get))
                    .flatten()
            });
            return match found {
                Some((_, handler)) => Match::Found {
                    template: route.template,
                    handler,
                    params,
                },
                None => {
                    let mut allow: Vec<&str> =
                        route.handlers.iter().map(|(m, _)| m.as_str()).collect();
                    if allow.contains(&"GET") && !allow.contains(&"HEAD") {
                        allow.push("HEAD");
                    }
                    Match::MethodNotAllowed {
                        template: route.template,
                        allow: allow.join(", "),
                    }
                }
            };
        }
        Match::NotFound
    }
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<Vec<(&'static str, String)>> {
    #[cfg(feature = "rest-segments")]
    let rest = matches!(segments.last(), Some(Segment::Rest(_)));
    #[cfg(not(feature = "rest-segments"))]
    let rest = false;
    if segments.len() != parts.len() && !(rest && parts.len() > segments.len()) {
        return None;
    }
    let mut params = Vec::new();
    for (i, (seg, part)) in segments.iter().zip(parts).enumerate() {
        #[cfg(not(feature = "rest-segments"))]
        let _ = i;
        match seg {
            Segment::Literal(l) if l == part => {}
            Segment::Param(name) if !part.is_empty() => params.push((*name, (*part).to_owned())),
            // Only ever the last segment: what follows it is its own.
            #[cfg(feature = "rest-segments")]
            Segment::Rest(name) if parts[i..].iter().all(|p| !p.is_empty()) => {
                params.push((*name, parts[i..].join("/")));
                return Some(params);
            }
            _ => return None,
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new()
            .route(Method::Get, "/metrics", |_| Response::new(200))
            .route(Method::Get, "/api/v1/servers/{id}", |r| {
                Response::text(200, r.param("id").unwrap_or_default())
            })
            .route(Method::Delete, "/api/v1/servers/{id}", |_| {
                Response::new(204)
            })
    }

    #[cfg(feature = "rest-segments")]
    #[test]
    fn a_rest_parameter_takes_the_remaining_segments() {
        let r = Router::new().route(Method::Get, "/web/{path*}", |r| {
            Response::text(200, r.param("path").unwrap_or_default())
        });
        let path = |p: &str| match r.lookup(Method::Get, p) {
            Match::Found { params, .. } => Some(params[0].1.clone()),
            _ => None,
        };
        assert_eq!(path("/web/a.js").as_deref(), Some("a.js"));
        assert_eq!(path("/web/a/b/c.js").as_deref(), Some("a/b/c.js"));
        assert_eq!(path("/web/"), None);
        assert_eq!(path("/web"), None);
        assert_eq!(path("/web/a//b"), None, "no empty segment");
    }

    #[test]
    fn matches_templates_and_params() {
        let r = router();
        match r.lookup(Method::Get, "/api/v1/servers/n7") {
            Match::Found {
                template, params, ..
            } => {
                assert_eq!(template, "/api/v1/servers/{id}");
                assert_eq!(params, vec![("id", "n7".to_owned())]);
            }
            _ => panic!("no match"),
        }
        assert!(matches!(
            r.lookup(Method::Head, "/metrics"),
            Match::Found { .. }
        ));
        assert!(matches!(
            r.lookup(Method::Get, "/api/v1/servers/"),
            Match::NotFound
        ));
        assert!(matches!(
            r.lookup(Method::Get, "/metrics/x"),
            Match::NotFound
        ));
        assert!(matches!(r.lookup(Method::Get, "*"), Match::NotFound));
    }

    #[test]
    fn wrong_method_lists_allowed_ones() {
        match router().lookup(Method::Post, "/metrics") {
            Match::MethodNotAllowed { template, allow } => {
                assert_eq!(template, "/metrics");
                assert_eq!(allow, "GET, HEAD");
            }
            _ => panic!("expected 405"),
        }
        match router().lookup(Method::Put, "/api/v1/servers/x") {
            Match::MethodNotAllowed { allow, .. } => assert_eq!(allow, "GET, DELETE, HEAD"),
            _ => panic!("expected 405"),
        }
    }
}
