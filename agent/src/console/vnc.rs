//! VNC consoles (in progress).
use std::sync::Arc;

use conduit_http::http::router::Router;

use crate::bmc::Fleet;
use crate::config::ConsoleConfig;

/// Adds the VNC console routes.
pub fn routes(
    router: Router,
    _fleet: Arc<Fleet>,
    _config: ConsoleConfig,
    _token: Option<Arc<str>>,
) -> Router {
    router
}
