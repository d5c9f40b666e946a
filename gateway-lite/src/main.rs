use std::process::ExitCode;
use std::time::Duration;

use conduit_service as service;
use gateway_lite::serve::Config;

#[global_allocator]
static ALLOC: conduit_metrics::heap::CountingAllocator = conduit_metrics::heap::CountingAllocator;

const INTRO: &str = "\
Usage: conduit-gateway [OPTIONS]    Register at the manager, accept agents' uplinks, and serve
                                    GatewayService (users' BMC operations), consoles
                                    (/console/{sol|vnc}/SERVER), /metrics, /health
";

const FLAGS: &str =
    "  --manager URL              The manager (default http://127.0.0.1:8080; https:// needs
                             --manager-ca)
  --manager-ca FILE          CA certificate(s), PEM, for an https manager
  --credential-file FILE     This gateway's credential (cgw_…, from the manager's
                             GatewayService.Create; default ./gateway.credential)
  --uplink-listen ADDR       Where agents dial in (default 0.0.0.0:8443)
  --tls-cert FILE            Certificate chain (PEM) agents check against their CA
  --tls-key FILE             Its private key (PEM)
  --uplink-plaintext         Uplinks without TLS: loopback or a trusted VLAN only
  --address URL              Where users reach this gateway, as told to the manager
                             (default http://LISTEN)
  --state-dir DIR            The audit outbox (default ./conduit-gateway-data)
  --heartbeat-secs N         Agents heartbeat this often (default 10); stale after 3 missed,
                             their link closed after 6
  --forget-after SECS        A disconnected agent and its series are dropped after this
                             (default 600)
  --trust-ttl SECS           Without the manager, keys, revocations, inventory and agent
                             credentials serve this long after the last pull (default 600,
                             at least 3; pulls run at least 3 times per window); then user
                             calls answer unavailable
  --operation-timeout SECS   Longest wait for an agent's answer, 1 to 100 (default 30)
  --max-agents N             Most uplinks at once (default and most 10000: the manager takes
                             a gateway's connected set in one report); the open-files limit
                             is raised to fit at start
  --agent-series-limit N     Per-agent metric families are sized for N agents (default 10000)
  --console-max N            Console sessions at once at this gateway (default 64; each
                             holds an HTTP connection: 32 of --http.max-connections stay free)
  --console-max-per-user N   ... per user (default 4)
  --console-max-per-server N ... per server (default 8)
  --console-idle-secs SECS   A console whose viewer sends nothing this long is closed
                             (default 3600)
  --console-origin ORIGIN    A web page origin (the manager's web console, e.g.
                             https://conduit.example) whose pages may call GatewayService
                             (CORS) and open consoles here besides the gateway's own;
                             repeat for more
";

fn main() -> ExitCode {
    let info = gateway_lite::INFO;
    let mut cfg = Config::default();
    let usage = service::usage_full(&info, INTRO, FLAGS);
    let (args, words) = match service::parse_args(&info, &usage, |name, p| {
        let secs = |p: &mut lexopt::Parser| -> anyhow::Result<Duration> {
            service::parse_secs(&service::flag_value(name, p)?)
        };
        match name {
            "manager" => cfg.manager = service::flag_value(name, p)?,
            "manager-ca" => cfg.manager_ca = Some(service::flag_value(name, p)?.into()),
            "credential-file" => cfg.credential_file = service::flag_value(name, p)?.into(),
            "uplink-listen" => {
                cfg.uplink_listen = service::parse_listen(&service::flag_value(name, p)?)?
            }
            "tls-cert" | "tls-key" => {
                let v: std::path::PathBuf = service::flag_value(name, p)?.into();
                let (mut cert, mut key) = cfg.tls.take().unwrap_or_default();
                if name == "tls-cert" {
                    cert = v;
                } else {
                    key = v;
                }
                cfg.tls = Some((cert, key));
            }
            "uplink-plaintext" => cfg.uplink_plaintext = true,
            "address" => cfg.address = Some(service::flag_value(name, p)?),
            "state-dir" => cfg.state_dir = service::flag_value(name, p)?.into(),
            "heartbeat-secs" => {
                let hb = secs(p)?;
                anyhow::ensure!(hb >= Duration::from_secs(1), "--heartbeat-secs: at least 1");
                cfg.policy.heartbeat = hb;
                cfg.policy.stale_after = 3 * hb;
            }
            "forget-after" => cfg.policy.forget_after = secs(p)?,
            "trust-ttl" => {
                let ttl = secs(p)?;
                // pulls run at least once a second, three per window
                anyhow::ensure!(ttl >= Duration::from_secs(3), "--trust-ttl: at least 3");
                cfg.trust_ttl = ttl;
            }
            "operation-timeout" => {
                let t = secs(p)?;
                // The HTTP server gives a deferred answer 120 s; the operation's own deadline
                // must come first, or its audit record would be dropped with it.
                anyhow::ensure!(
                    (Duration::from_secs(1)..=Duration::from_secs(100)).contains(&t),
                    "--operation-timeout: 1 to 100"
                );
                cfg.operation_timeout = t;
            }
            "max-agents" => {
                let n = service::parse_count(&service::flag_value(name, p)?)?;
                let most = conduit_api::manager::MAX_REPORTED_AGENTS;
                anyhow::ensure!(
                    n <= most,
                    "--max-agents: at most {most} (the manager takes a gateway's connected agents in one report; run another gateway for more)"
                );
                cfg.max_agents = n;
            }
            "console-max" => {
                cfg.console_limits.total = service::parse_count(&service::flag_value(name, p)?)?
            }
            "console-max-per-user" => {
                cfg.console_limits.per_user = service::parse_count(&service::flag_value(name, p)?)?
            }
            "console-max-per-server" => {
                cfg.console_limits.per_server =
                    service::parse_count(&service::flag_value(name, p)?)?
            }
            "console-idle-secs" => cfg.console_limits.idle = secs(p)?,
            "console-origin" => {
                let origin = service::flag_value(name, p)?;
                anyhow::ensure!(
                    origin.starts_with("http://") || origin.starts_with("https://"),
                    "--console-origin {origin:?}: give scheme://host[:port]"
                );
                cfg.console_origins
                    .push(origin.trim_end_matches('/').to_owned());
            }
            "agent-series-limit" => {
                cfg.agent_series_limit = service::parse_count(&service::flag_value(name, p)?)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }) {
        Ok((args, words)) => (args, words),
        Err(code) => return code,
    };
    if let Some(w) = words.first() {
        return service::usage_error(&info, &format!("unexpected argument {w:?}"));
    }
    if let Some((cert, key)) = &cfg.tls {
        if cert.as_os_str().is_empty() || key.as_os_str().is_empty() {
            return service::usage_error(&info, "--tls-cert and --tls-key go together");
        }
    }
    service::logging::init(info.binary, args.log_level);
    service::exit_with(gateway_lite::serve::run(info, args, cfg))
}
