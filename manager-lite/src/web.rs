//! The web console, served by the manager: the user logs in where their account lives, and
//! the page then talks to the gateways directly (Connect calls with the access token in
//! `Authorization`, which the gateways allow from this origin; consoles over WebSocket with a
//! one-time ticket, which the gateways check against `Origin`).
//!
//! - `/` — the page; `/web/app.js`, `/web/app.css` — its own code, built into the binary.
//! - `/web/vendor/{path*}` — xterm.js and noVNC, from the npm packages installed (pinned, with
//!   a lockfile, in `web/`) under `--web-assets DIR`; only their script and style files, read
//!   into memory at start (about 1 MiB), so no request waits on the disk or follows a link
//!   out of the packages.
//! - A Content-Security-Policy: scripts and styles from here only; connections here and to the
//!   registered gateways (http and ws); no frames, no forms elsewhere, no plugins. xterm.js
//!   writes its theme into a `<style>` element, so styles allow `'unsafe-inline'` (styles
//!   only: scripts never run inline).

use std::collections::HashMap;
use std::path::Path;
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
         img-src 'self' data: blob:; font-src 'self'; connect-src {}; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        connect.join(" ")
    )
}

/// Whether `path` (below `/web/vendor/`) names a file the page may load: its type if so.
pub fn vendor_file(path: &str) -> Option<&'static str> {
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
        (within && rest.ends_with(&format!(".{kind}"))).then_some(*kind)
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

/// A script or style file (`kind` `js` or `css`), cached as `cache` says.
fn file(kind: &str, cache: &'static str, body: Vec<u8>) -> Response {
    hardened(
        Response::new(200)
            .with_header("Content-Type", content_type(kind))
            .with_header("Cache-Control", cache)
            .with_body(body),
    )
}

/// The vendor files, read at start: path below `/web/vendor/` → (bytes, type).
#[derive(Debug, Default)]
pub struct Assets {
    files: HashMap<String, (Vec<u8>, &'static str)>,
}

impl Assets {
    /// Reads the allowed files of the packages under `root` (`web/node_modules`); each must
    /// resolve to a file inside its package. Fails naming what is missing.
    pub fn load(root: &Path) -> anyhow::Result<Assets> {
        use anyhow::Context;
        let mut files = HashMap::new();
        let mut packages: Vec<&str> = VENDOR.iter().map(|(p, _, _)| *p).collect();
        packages.dedup();
        for package in packages {
            let dir = root.join(package).canonicalize().with_context(|| {
                format!(
                    "--web-assets {}: no {package} (run `npm ci --prefix web`)",
                    root.display()
                )
            })?;
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                for entry in std::fs::read_dir(&d)? {
                    let path = entry?.path().canonicalize()?;
                    if !path.starts_with(&dir) {
                        continue; // a link out of the package
                    }
                    let rel = format!("{package}/{}", path.strip_prefix(&dir)?.to_string_lossy());
                    if path.is_dir() {
                        if !rel.contains("/node_modules") && !rel.contains("/.") {
                            stack.push(path);
                        }
                        continue;
                    }
                    let Some(kind) = vendor_file(&rel) else {
                        continue;
                    };
                    if std::fs::metadata(&path)?.len() <= MAX_ASSET {
                        files.insert(rel, (std::fs::read(&path)?, kind));
                    }
                }
            }
        }
        for needed in ["@xterm/xterm/lib/xterm.js", "@novnc/novnc/core/rfb.js"] {
            anyhow::ensure!(
                files.contains_key(needed),
                "--web-assets {}: {needed} is missing (run `npm ci --prefix web`)",
                root.display()
            );
        }
        Ok(Assets { files })
    }

    /// How many files, and their bytes.
    pub fn size(&self) -> (usize, usize) {
        (
            self.files.len(),
            self.files.values().map(|(b, _)| b.len()).sum(),
        )
    }
}

/// Adds the web console's routes; `assets` are xterm.js's and noVNC's files.
pub fn routes(router: Router, mgr: &Arc<Manager>, assets: Option<Arc<Assets>>) -> Router {
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
            file("js", "no-cache", APP_JS.as_bytes().to_vec())
        })
        .route(Method::Get, "/web/app.css", |_| {
            file("css", "no-cache", APP_CSS.as_bytes().to_vec())
        })
        .route(Method::Get, "/web/vendor/{path*}", move |req| {
            let Some(assets) = &assets else {
                return Response::text(
                    404,
                    "the web console's packages are not installed: run `npm ci --prefix web` \
                     and start the manager with --web-assets web/node_modules\n",
                );
            };
            match req.param("path").and_then(|p| assets.files.get(p)) {
                Some((body, kind)) => file(kind, "max-age=3600", body.clone()),
                None => Response::text(404, "not found\n"),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_packages_files_are_served() {
        let ok = vendor_file;
        assert_eq!(ok("@xterm/xterm/lib/xterm.js"), Some("js"));
        assert_eq!(ok("@xterm/xterm/css/xterm.css"), Some("css"));
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
