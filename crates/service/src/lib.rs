//! The common life of a component binary: serve flags, logging, the registry with process and
//! request metrics, `/metrics` and `/health`, and a clean stop on SIGTERM/SIGINT.
//!
//! A binary supplies its [`ComponentInfo`], registers its catalog through the
//! [`CatalogBuilder`] and adds its own routes; everything else is here, once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use log::LevelFilter;
use prometheus_client::registry::Registry;

use conduit_http::middleware::{HttpMetrics, HttpService};
use conduit_http::router::Router;
use conduit_http::server::{Limits, Server};
use conduit_http::{Method, Response};
use conduit_metrics::catalog::{CatalogBuilder, DEFAULT_SERIES_LIMIT};
use conduit_metrics::exposition::{wants_gzip, Encoder, Format};
use conduit_metrics::process::ProcessCollector;
use conduit_runtime::heartbeat::Heartbeats;

pub mod logging;

/// What distinguishes one component binary.
#[derive(Debug, Clone, Copy)]
pub struct ComponentInfo {
    /// Metric prefix, e.g. `manager`.
    pub prefix: &'static str,
    /// Binary name, e.g. `conduit-manager`.
    pub binary: &'static str,
    /// Default `/metrics` port.
    pub default_port: u16,
    /// One line saying what the component is.
    pub about: &'static str,
}

/// The flags every component serves with.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    /// Listen address.
    pub listen: SocketAddr,
    /// Connection and request limits.
    pub limits: Limits,
    /// Series cap per labeled metric family.
    pub series_limit: usize,
    /// Log level.
    pub log_level: LevelFilter,
}

/// Help text of the flags [`ServeArgs::parse_flag`] accepts.
pub const SERVE_FLAGS_HELP: &str =
    "  --listen ADDR              Address for /metrics, /health and the API
                             [alias: --web.listen-address] (default 0.0.0.0:PORT)
  --log-level LEVEL          error, warn, info, debug or trace (default info; env CONDUIT_LOG)
  --series-limit N           Most series per labeled metric family; new ones past it are
                             dropped and counted in *_metrics_series_dropped_total (default 2000)
  --http.max-connections N   Open HTTP connections at most (default 256)
  --http.read-timeout SECS   Longest wait for one read of an incomplete request (default 5)
  --http.head-deadline SECS  Longest time to receive a whole request head (default 10)
  --http.idle-timeout SECS   Keep-alive connections idle this long are closed (default 60)
  --http.workers N           Request handler threads (default 4)
";

/// Parses a positive number of seconds (fractions allowed), for duration flags.
pub fn parse_secs(v: &str) -> anyhow::Result<Duration> {
    let s: f64 = v
        .parse()
        .with_context(|| format!("{v:?} is not a number of seconds"))?;
    if !(s.is_finite() && s > 0.0) {
        bail!("{v:?} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(s))
}

/// Parses a positive whole number, for count flags.
pub fn parse_count(v: &str) -> anyhow::Result<usize> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{v:?} must be a positive whole number"),
    }
}

impl ServeArgs {
    /// Defaults for `info`: all interfaces on its port, as Prometheus exporters do.
    pub fn new(info: &ComponentInfo) -> Self {
        let log_level = std::env::var("CONDUIT_LOG")
            .ok()
            .and_then(|v| crate::logging::parse_level(&v))
            .unwrap_or(LevelFilter::Info);
        ServeArgs {
            listen: SocketAddr::from(([0, 0, 0, 0], info.default_port)),
            limits: Limits::default(),
            series_limit: DEFAULT_SERIES_LIMIT,
            log_level,
        }
    }

    /// Consumes long flag `--name` (and its value) if it is a serve flag; returns whether it was.
    pub fn parse_flag(&mut self, name: &str, parser: &mut lexopt::Parser) -> anyhow::Result<bool> {
        let mut value = || flag_value(name, parser);
        let ctx = |e: anyhow::Error| e.context(format!("--{name}"));
        match name {
            "listen" | "web.listen-address" => {
                let v = value()?;
                self.listen = parse_listen(&v).map_err(ctx)?;
            }
            "log-level" => {
                let v = value()?;
                self.log_level = crate::logging::parse_level(&v)
                    .with_context(|| format!("--log-level: unknown level {v:?}"))?;
            }
            "series-limit" => self.series_limit = parse_count(&value()?).map_err(ctx)?,
            "http.max-connections" => {
                self.limits.max_connections = parse_count(&value()?).map_err(ctx)?
            }
            "http.read-timeout" => self.limits.read_timeout = parse_secs(&value()?).map_err(ctx)?,
            "http.head-deadline" => {
                self.limits.head_deadline = parse_secs(&value()?).map_err(ctx)?
            }
            "http.idle-timeout" => self.limits.idle_timeout = parse_secs(&value()?).map_err(ctx)?,
            "http.workers" => self.limits.workers = parse_count(&value()?).map_err(ctx)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The value of flag `--name`, as UTF-8.
pub fn flag_value(name: &str, parser: &mut lexopt::Parser) -> anyhow::Result<String> {
    let v = parser.value().with_context(|| format!("--{name}"))?;
    v.into_string()
        .map_err(|_| anyhow::anyhow!("--{name}: value is not UTF-8"))
}

/// Parses `HOST:PORT`, `[V6]:PORT` or `:PORT` (all interfaces, as Prometheus writes it).
pub fn parse_listen(v: &str) -> anyhow::Result<SocketAddr> {
    let full = match v.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => v.to_owned(),
    };
    let full = full.replace("localhost:", "127.0.0.1:");
    full.parse()
        .with_context(|| format!("{v:?} is not an address like 127.0.0.1:8080 or :8080"))
}

/// A component ready to serve: its registry is complete and its routes are set.
#[derive(Debug)]
pub struct Stack {
    info: ComponentInfo,
    args: ServeArgs,
    service: Arc<HttpService>,
}

impl Stack {
    /// Builds the registry (process metrics, the component's catalog via `catalog`, request
    /// metrics) and the router (the component's routes from `routes`, plus `/metrics`,
    /// `/health` and `/`).
    pub fn build<T>(
        info: ComponentInfo,
        args: ServeArgs,
        catalog: impl FnOnce(&mut CatalogBuilder) -> T,
        routes: impl FnOnce(Router, &T) -> Router,
    ) -> (Stack, T) {
        Stack::build_with_health(info, args, Arc::default(), catalog, routes)
    }

    /// [`Stack::build`] with the heartbeats `/health` checks: it answers 503, naming the
    /// stalled loops, when one of them has made no progress for several expected periods.
    pub fn build_with_health<T>(
        info: ComponentInfo,
        args: ServeArgs,
        heartbeats: Arc<Heartbeats>,
        catalog: impl FnOnce(&mut CatalogBuilder) -> T,
        routes: impl FnOnce(Router, &T) -> Router,
    ) -> (Stack, T) {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector::current()));
        let mut builder = CatalogBuilder::new(&mut registry, info.prefix, args.series_limit);
        let http = HttpMetrics::register(&mut builder);
        let component = catalog(&mut builder);
        let registry = Arc::new(registry);

        let encoder = Arc::new(Encoder::default());
        let router = routes(Router::new(), &component)
            .route(Method::Get, "/metrics", move |req| {
                let format = Format::from_accept(req.header("Accept"));
                let gzip = wants_gzip(req.header("Accept-Encoding"));
                let mut resp = Response::new(200)
                    .with_header("Content-Type", format.content_type())
                    .with_header("Vary", "Accept, Accept-Encoding")
                    .with_body(encoder.encode(&registry, format, gzip));
                if gzip {
                    resp = resp.with_header("Content-Encoding", "gzip");
                }
                resp
            })
            .route(Method::Get, "/health", {
                // Logged when the answer changes, not on every probe.
                let failing = std::sync::atomic::AtomicBool::new(false);
                move |_| {
                    let checked = heartbeats.check();
                    let was = failing.swap(checked.is_err(), std::sync::atomic::Ordering::Relaxed);
                    match checked {
                        Ok(()) => {
                            if was {
                                log::info!("health check passing again");
                            }
                            Response::text(200, "ok\n")
                        }
                        Err(stalled) => {
                            if !was {
                                log::warn!("health check failing: {stalled}");
                            }
                            Response::text(503, format!("{stalled}\n"))
                        }
                    }
                }
            });
        let index = format!(
            "{} — {}\n\n{}\n",
            info.binary,
            info.about,
            router.templates().collect::<Vec<_>>().join("\n")
        );
        let router = router.route(Method::Get, "/", move |_| {
            Response::text(200, index.clone())
        });
        let service = Arc::new(HttpService::new(router, http));
        (
            Stack {
                info,
                args,
                service,
            },
            component,
        )
    }

    /// Binds the listen address; the caller then runs the returned server.
    pub fn bind(&self) -> anyhow::Result<Server> {
        let server = Server::bind(self.args.listen, self.args.limits.clone())
            .with_context(|| format!("listen on {}", self.args.listen))?;
        let addr = server.local_addr()?;
        log::info!("listening on {addr}; metrics at http://{addr}/metrics");
        Ok(server)
    }

    /// Binds, then serves until SIGTERM or SIGINT, then stops cleanly.
    pub fn serve(self) -> anyhow::Result<()> {
        let server = self.bind()?;
        self.run(server)
    }

    /// Serves on an already bound server until SIGTERM or SIGINT, then stops cleanly.
    pub fn run(self, server: Server) -> anyhow::Result<()> {
        self.run_with(server, SignalHooks::default())
    }

    /// [`Stack::run`] with the component's own answers to signals (see [`SignalHooks`]).
    pub fn run_with(self, server: Server, hooks: SignalHooks) -> anyhow::Result<()> {
        let stop = server.shutdown_handle();
        let signals = async_signal::Signals::new([
            async_signal::Signal::Term,
            async_signal::Signal::Int,
            async_signal::Signal::Hup,
        ])
        .context("install signal handlers")?;
        let binary = self.info.binary;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                use futures_lite::StreamExt;
                let SignalHooks { on_stop, on_reload } = hooks;
                let mut signals = signals;
                loop {
                    match futures_lite::future::block_on(signals.next()) {
                        Some(Ok(async_signal::Signal::Hup)) => match &on_reload {
                            Some(reload) => {
                                log::info!("received SIGHUP: reloading");
                                reload();
                            }
                            None => log::info!("received SIGHUP: {binary} has nothing to reload"),
                        },
                        Some(Ok(sig)) => {
                            log::info!("received {sig:?}: shutting down");
                            break;
                        }
                        Some(Err(_)) => continue,
                        None => break,
                    }
                }
                if let Some(f) = on_stop {
                    f();
                }
                stop.stop();
            })
            .context("spawn signal thread")?;
        server.run(self.service).context("http server")?;
        log::info!("{} stopped", self.info.binary);
        Ok(())
    }

    /// The request service (router plus middleware), e.g. to run on a server of one's own.
    pub fn service(&self) -> Arc<HttpService> {
        self.service.clone()
    }
}

/// What a component does on signals, beyond the stack's own clean stop.
#[derive(Default)]
pub struct SignalHooks {
    /// Called on the signal thread as soon as SIGTERM/SIGINT arrives, before the server
    /// drains its connections: work that can be cancelled at once (operations in flight)
    /// need not wait out the grace period.
    pub on_stop: Option<Box<dyn FnOnce() + Send>>,
    /// Called on the signal thread on each SIGHUP (without one, SIGHUP is logged and ignored
    /// rather than ending the process).
    pub on_reload: Option<Box<dyn Fn() + Send>>,
}

impl std::fmt::Debug for SignalHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalHooks")
            .field("on_stop", &self.on_stop.is_some())
            .field("on_reload", &self.on_reload.is_some())
            .finish()
    }
}

/// Prints the usage of a component that only serves (manager, gateway).
pub fn usage(info: &ComponentInfo) -> String {
    usage_with(info, "")
}

/// The usage text, with the component's own flags (`extra_flags`, formatted like
/// [`SERVE_FLAGS_HELP`]) listed before the common ones.
pub fn usage_with(info: &ComponentInfo, extra_flags: &str) -> String {
    let intro = format!(
        "Usage: {bin} [OPTIONS]\n\n\
         Serves GET /metrics (Prometheus text 0.0.4, or OpenMetrics when asked for), /health, and\n\
         the component API on one HTTP listener (default 0.0.0.0:{port}). Stops cleanly on\n\
         SIGTERM or SIGINT.\n",
        bin = info.binary,
        port = info.default_port
    );
    usage_full(info, &intro, extra_flags)
}

/// The usage text with a custom introduction (usage lines, commands) and extra flags.
pub fn usage_full(info: &ComponentInfo, intro: &str, extra_flags: &str) -> String {
    format!(
        "{bin} — {about}\n\n{intro}\n\
         Options:\n{extra_flags}{flags}  -h, --help                 Print this help\n  -V, --version              Print the version\n",
        bin = info.binary,
        about = info.about,
        flags = SERVE_FLAGS_HELP.replace("PORT", &info.default_port.to_string()),
    )
}

/// Parses the command line: the serve flags, `--help`, `--version`, the component's own long
/// flags through `extra` (which returns whether it took the flag), and positional words (a
/// subcommand and its arguments), returned in order. On `--help`, `--version` or a usage error
/// it has already printed what is due and returns the exit code.
pub fn parse_args(
    info: &ComponentInfo,
    usage_text: &str,
    mut extra: impl FnMut(&str, &mut lexopt::Parser) -> anyhow::Result<bool>,
) -> Result<(ServeArgs, Vec<String>), std::process::ExitCode> {
    use std::process::ExitCode;
    let mut args = ServeArgs::new(info);
    let mut words = Vec::new();
    let mut parser = lexopt::Parser::from_env();
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => return Ok((args, words)),
            Err(e) => return Err(usage_error(info, &e.to_string())),
        };
        match arg {
            lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => {
                print!("{usage_text}");
                return Err(ExitCode::SUCCESS);
            }
            lexopt::Arg::Value(v) => match v.into_string() {
                Ok(w) => words.push(w),
                Err(_) => return Err(usage_error(info, "argument is not UTF-8")),
            },
            lexopt::Arg::Short('V') | lexopt::Arg::Long("version") => {
                println!("{} {}", info.binary, env!("CARGO_PKG_VERSION"));
                return Err(ExitCode::SUCCESS);
            }
            lexopt::Arg::Long(name) => {
                let name = name.to_owned();
                let taken = args.parse_flag(&name, &mut parser).and_then(|t| {
                    if t {
                        Ok(t)
                    } else {
                        extra(&name, &mut parser)
                    }
                });
                match taken {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(usage_error(info, &format!("unknown option --{name}")))
                    }
                    Err(e) => return Err(usage_error(info, &format!("{e:#}"))),
                }
            }
            other => return Err(usage_error(info, &other.unexpected().to_string())),
        }
    }
}

/// Logs a fatal error once, with its context chain, and maps it to exit code 1.
pub fn exit_with(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `main` of a component that only serves: flags, logging, catalog, routes, serve.
/// Exit codes: 0 after a clean stop, 1 on a runtime error, 2 on bad usage.
pub fn main<T>(
    info: ComponentInfo,
    catalog: impl FnOnce(&mut CatalogBuilder) -> T,
    routes: impl FnOnce(Router, &T) -> Router,
) -> std::process::ExitCode {
    let args = match parse_args(&info, &usage(&info), |_, _| Ok(false)) {
        Ok((args, words)) if words.is_empty() => args,
        Ok((_, words)) => {
            return usage_error(&info, &format!("unexpected argument {:?}", words[0]))
        }
        Err(code) => return code,
    };
    crate::logging::init(info.binary, args.log_level);
    let (stack, _component) = Stack::build(info, args, catalog, routes);
    exit_with(stack.serve())
}

/// Reports a usage error the way every component does, exit code 2.
pub fn usage_error(info: &ComponentInfo, msg: &str) -> std::process::ExitCode {
    eprintln!("{}: {msg}\nTry '{} --help'.", info.binary, info.binary);
    std::process::ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen(":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(parse_listen("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(
            parse_listen("localhost:80").unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert!(parse_listen("8080").is_err());
        assert!(parse_listen("nohost:1").is_err());
    }

    #[test]
    fn serve_flags() {
        let info = ComponentInfo {
            prefix: "manager",
            binary: "conduit-manager",
            default_port: 8080,
            about: "test",
        };
        let mut args = ServeArgs::new(&info);
        assert_eq!(args.listen.port(), 8080);
        let mut p = lexopt::Parser::from_args([
            "--web.listen-address=127.0.0.1:9",
            "--http.read-timeout",
            "0.5",
            "--bogus",
        ]);
        let next = |p: &mut lexopt::Parser| match p.next().unwrap().unwrap() {
            lexopt::Arg::Long(n) => n.to_owned(),
            other => panic!("{other:?}"),
        };
        let n = next(&mut p);
        assert!(args.parse_flag(&n, &mut p).unwrap());
        let n = next(&mut p);
        assert!(args.parse_flag(&n, &mut p).unwrap());
        let n = next(&mut p);
        assert!(!args.parse_flag(&n, &mut p).unwrap());
        assert_eq!(args.listen, "127.0.0.1:9".parse().unwrap());
        assert_eq!(args.limits.read_timeout, Duration::from_millis(500));
        let mut p = lexopt::Parser::from_args(["--http.workers", "0"]);
        let n = next(&mut p);
        assert!(args.parse_flag(&n, &mut p).is_err());
    }
}
