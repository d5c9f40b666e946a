//! The web console, served by the manager: the user logs in where their account lives, and
//! the page then talks to the gateways directly (Connect calls with the access token in
//! `Authorization`, which the gateways allow from this origin; consoles over WebSocket with a
//! one-time ticket, which the gateways check against `Origin`).
//!
//! - `/` — the page; `/web/app.js`, `/web/app.css` — its own code, built into the binary.
//! - `/web/vendor/{path*}` — xterm.js and noVNC, from the npm packages installed (pinned, with
//!   a lockfile, in `web/`) under `--web-assets DIR`; only their script and style files.
//! - A Content-Security-Policy: scripts and styles from here only; connections here and to the
//!   registered gateways (http and ws); no frames, no forms elsewhere, no plugins. xterm.js
//!   writes its theme into a `<style>` element, so styles allow `'unsafe-inline'` (styles
//!   only: scripts never run inline).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use conduit_http::router::Router;
use conduit_http::{Method, Response};

use crate::api::Manager;

const INDEX: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");

/// The files of the npm packages the page may load: a package directory and the prefixes
/// within it, with the one file type each serves.
const VENDOR: &[(&str, &str, &str)] = &[
    ("@xterm/xterm", "lib/xterm.js", "js"),
    ("@xterm/xterm", "css/xterm.css", "css"),
    ("@novnc/novnc", "core/", "js"),
    ("@novnc/novnc", "vendor/pako/", "js"),
];

/// Largest vendor file served.
const MAX_ASSET: u64 = 4 << 20;

/// The page's CSP, letting it connect to `gateways` (their `http(s)://host:port` addresses).
pub fn content_security_policy(gateways: &[String]) -> String {
    let mut connect = vec!["'self'".to_owned()];
    for g in gateways {
        // Only well-formed origins: a registered address is the gateway's own word, and a
        // `;` in it must not add a directive.
        let ok = g
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:-[]/".contains(&b));
        let ws = g
            .strip_prefix("https://")
            .map(|h| format!("wss://{h}"))
            .or_else(|| g.strip_prefix("http://").map(|h| format!("ws://{h}")));
        if let (true, Some(ws)) = (ok, ws) {
            connect.push(g.trim_end_matches('/').to_owned());
            connect.push(ws.trim_end_matches('/').to_owned());
        }
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:; font-src 'self'; connect-src {}; worker-src 'self' blob:; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        connect.join(" ")
    )
}

/// Which vendor file `path` (below `/web/vendor/`) names, if it is one the page may load:
/// its place under the packages directory and its type.
pub fn vendor_file(path: &str) -> Option<(PathBuf, &'static str)> {
    let safe = path.split('/').all(|seg| {
        !seg.is_empty()
            && !seg.starts_with('.')
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    });
    if !safe {
        return None;
    }
    VENDOR.iter().find_map(|(package, prefix, kind)| {
        let rest = path.strip_prefix(package)?.strip_prefix('/')?;
        let within = if prefix.ends_with('/') {
            rest.starts_with(prefix)
        } else {
            rest == *prefix
        };
        (within && rest.ends_with(&format!(".{kind}"))).then(|| (PathBuf::from(path), *kind))
    })
}

fn content_type(kind: &str) -> &'static str {
    match kind {
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn hardened(resp: Response) -> Response {
    resp.with_header("X-Content-Type-Options", "nosniff")
        .with_header("Referrer-Policy", "no-referrer")
        .with_header("Cross-Origin-Opener-Policy", "same-origin")
}

fn read_asset(root: &Path, rel: &Path) -> Option<Vec<u8>> {
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    (meta.is_file() && meta.len() <= MAX_ASSET).then(|| std::fs::read(&path).ok())?
}

/// Adds the web console's routes; `assets` is the `node_modules` directory of `web/`.
pub fn routes(router: Router, mgr: &Arc<Manager>, assets: Option<PathBuf>) -> Router {
    let page = mgr.clone();
    router
        .route(Method::Get, "/", move |_| {
            let gateways = page
                .gateway_addresses
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            hardened(
                Response::new(200)
                    .with_header("Content-Type", "text/html; charset=utf-8")
                    .with_header("Cache-Control", "no-store")
                    .with_header(
                        "Content-Security-Policy",
                        content_security_policy(&gateways),
                    )
                    .with_body(INDEX.as_bytes().to_vec()),
            )
        })
        .route(Method::Get, "/web/app.js", |_| {
            hardened(
                Response::new(200)
                    .with_header("Content-Type", content_type("js"))
                    .with_header("Cache-Control", "no-cache")
                    .with_body(APP_JS.as_bytes().to_vec()),
            )
        })
        .route(Method::Get, "/web/app.css", |_| {
            hardened(
                Response::new(200)
                    .with_header("Content-Type", content_type("css"))
                    .with_header("Cache-Control", "no-cache")
                    .with_body(APP_CSS.as_bytes().to_vec()),
            )
        })
        .route(Method::Get, "/web/vendor/{path*}", move |req| {
            let Some((rel, kind)) = req.param("path").and_then(vendor_file) else {
                return Response::text(404, "not found\n");
            };
            let Some(root) = &assets else {
                return Response::text(
                    404,
                    "the web console's packages are not installed: run `npm ci --prefix web` \
                     and start the manager with --web-assets web/node_modules\n",
                );
            };
            match read_asset(root, &rel) {
                Some(body) => hardened(
                    Response::new(200)
                        .with_header("Content-Type", content_type(kind))
                        .with_header("Cache-Control", "max-age=3600")
                        .with_body(body),
                ),
                None => Response::text(404, "not found\n"),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_packages_files_are_served() {
        let ok = |p: &str| vendor_file(p).map(|(r, k)| (r.to_string_lossy().into_owned(), k));
        assert_eq!(
            ok("@xterm/xterm/lib/xterm.js"),
            Some(("@xterm/xterm/lib/xterm.js".into(), "js"))
        );
        assert_eq!(ok("@xterm/xterm/css/xterm.css").unwrap().1, "css");
        assert!(ok("@novnc/novnc/core/rfb.js").is_some());
        assert!(ok("@novnc/novnc/core/decoders/tight.js").is_some());
        assert!(ok("@novnc/novnc/vendor/pako/lib/zlib/inflate.js").is_some());
        for bad in [
            "@novnc/novnc/core/../../../etc/passwd.js",
            "@novnc/novnc/core/.hidden.js",
            "@novnc/novnc/package.json",
            "@novnc/novnc/core/rfb.js.map",
            "@xterm/xterm/lib/xterm.js/",
            "@xterm/xterm/lib/other.js",
            "other/core/x.js",
            "@novnc/novnc/core//rfb.js",
            "@novnc/novnc/core/r%2e.js",
            "",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_policy_names_the_gateways_and_nothing_injected() {
        let csp = content_security_policy(&[
            "http://127.0.0.1:8081".into(),
            "https://gw.example:8443/".into(),
            "http://evil; script-src *".into(),
        ]);
        assert!(csp.contains(
            "connect-src 'self' http://127.0.0.1:8081 ws://127.0.0.1:8081 https://gw.example:8443 wss://gw.example:8443;"
        ), "{csp}");
        assert!(!csp.contains("evil"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    }
}
