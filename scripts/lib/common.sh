# Shared by the scripts in scripts/: logging, privilege, idempotent package installs.
# shellcheck shell=bash

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

# ensure_apt PACKAGE... — installs the Debian packages that are missing, and nothing else.
# Packages whose services would start on install (prometheus) are kept from starting with a
# temporary policy-rc.d: only the tests start peers, on loopback.
ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
    made_policy=1
  fi
  local rc=0
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
    as_root apt-get update -q >/dev/null || rc=$?
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  fi
  [ $made_policy -eq 1 ] && as_root rm -f /usr/sbin/policy-rc.d
  [ $rc -eq 0 ] || die "apt-get install ${missing[*]} failed"
}

# ensure_peer_venv — the test peers from PyPI, pinned, in a virtualenv under target/:
# sushy-tools (the Redfish BMC emulator) and vncdotool (a VNC client, for the raw console test).
ensure_peer_venv() {
  local venv=target/peers/venv
  [ -x "$venv/bin/sushy-emulator" ] && [ -x "$venv/bin/vncdo" ] && return 0
  log "installing sushy-tools and vncdotool into $venv"
  if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"; mkdir -p target/peers
    if ! python3 -m venv "$venv" 2>/dev/null; then
      ensure_apt python3-venv
      /usr/bin/python3 -m venv "$venv"
    fi
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check sushy-tools==2.2.0 vncdotool==1.4.2 \
    || die "pip install sushy-tools vncdotool failed"
}

# start_ipmi_sim DIR NAME ADDR PORT [SOL_PORT [CONSOLE_PORT]] — a simulated IPMI BMC (OpenIPMI's
# ipmi_sim, user admin/password) listening on ADDR:PORT, in the background ($! is its pid),
# with its configuration, state, power file and log in DIR. With SOL_PORT it dials
# 127.0.0.1:SOL_PORT for the host side of its serial port; with CONSOLE_PORT it serves its
# telnet console there.
start_ipmi_sim() {
  local d=$1 name=$2 addr=$3 port=$4 sol=${5:-} console=${6:-}
  mkdir -p "$d/state"; echo 0 > "$d/power"
  d=$(realpath "$d")
  {
    printf 'name "%s"\nset_working_mc 0x20\n  startlan 1\n    addr %s %s\n    priv_limit admin\n' \
      "$name" "$addr" "$port"
    for who in callback user operator admin; do
      printf '    allowed_auths_%s none md2 md5 straight\n' "$who"
    done
    printf '    guid a123456789abcdefa123456789ab%04x\n  endlan\n' "$port"
    [ -n "$sol" ] && printf '  sol "tcp:127.0.0.1:%s" 115200\n' "$sol"
    printf '  chassis_control "%s %s 0x20"\n' "$PWD/tests/peers/ipmi/chassis.sh" "$d"
    [ -n "$console" ] && printf '  console 127.0.0.1 %s\n' "$console"
    printf 'user 2  true    "admin"  "password" admin    10        none md2 md5 straight\n'
  } > "$d/lan.conf"
  # -n: no console on stdin (ipmi_sim exits at EOF otherwise).
  ipmi_sim -c "$d/lan.conf" -f tests/peers/ipmi/bmc.emu -s "$d/state" -n < /dev/null > "$d/ipmi_sim.log" 2>&1 &
}
