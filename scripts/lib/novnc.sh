# The browser peer (tests/peers/novnc: noVNC and playwright-core for Debian's Chromium) and the
# web console's packages (web/): Node.js >= 20 with npm, and the pinned npm packages. Source
# after scripts/lib/common.sh (log, die, ensure_apt); run from the repository root.
# shellcheck shell=bash

# ensure_novnc — idempotent; quiet when everything is there, loud (die) when something fails.
ensure_novnc() {
  local dir=tests/peers/novnc
  [ -f "$dir/package-lock.json" ] || die "ensure_novnc: $dir/package-lock.json not found (run from the repo root)"
  ensure_apt chromium
  ensure_node
  npm_ci_once "$dir"
}

# ensure_web_assets — the web console's npm packages (web/: xterm.js, noVNC), which the
# manager serves from web/node_modules (--web-assets).
ensure_web_assets() {
  [ -f web/package-lock.json ] || die "ensure_web_assets: web/package-lock.json not found (run from the repo root)"
  ensure_node
  npm_ci_once web
}

# ensure_node — Node.js >= 20 and npm. Node may come from elsewhere (NodeSource, the machine
# image): only apt-install what is missing. Debian 12's nodejs is 18 and ships npm separately;
# playwright-core 1.65 wants node >= 20.
ensure_node() {
  command -v node >/dev/null 2>&1 || ensure_apt nodejs
  command -v npm >/dev/null 2>&1 || ensure_apt npm
  local major
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) || die "ensure_node: node does not run"
  [ "$major" -ge 20 ] || die "ensure_node: node $(node -v) is too old (needs >= 20)"
}

# npm_ci_once DIR — npm ci only when node_modules is missing or older than the lockfile (npm ci
# replaces it whole); no install scripts run.
npm_ci_once() {
  local dir=$1
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    log "installing the npm packages of $dir (pinned by its lockfile)"
    local out
    if ! out=$(PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$dir" --ignore-scripts \
                 --no-audit --no-fund --loglevel=error 2>&1); then
      printf '%s\n' "$out" >&2
      die "npm ci in $dir failed"
    fi
    touch "$dir/node_modules"
  fi
}
