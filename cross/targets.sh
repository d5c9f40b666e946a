# Docker-free cross builds: rustup target + Debian cross toolchain + qemu-user.
# Sourced by cross/test and cross/size; `cross_env TARGET` exports what cargo needs.
# shellcheck shell=bash

# The 32-bit ARM target: musleabihf when rustup can install it (its rust-std download answers
# 404 on some mirrors), else gnueabihf, which CI uses.
armv7_target() {
  if rustup target list --installed | grep -qx armv7-unknown-linux-musleabihf; then
    echo armv7-unknown-linux-musleabihf
  elif rustup target add armv7-unknown-linux-musleabihf >/dev/null 2>&1; then
    echo armv7-unknown-linux-musleabihf
  else
    echo armv7-unknown-linux-gnueabihf
  fi
}

# cross_setup TARGET: installs the rustup target and the Debian packages it needs (idempotent).
cross_setup() {
  local t=$1
  rustup target list --installed | grep -qx "$t" || rustup target add "$t" >/dev/null
  case "$t" in
    aarch64-*) ensure_apt qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;;
    armv7-*)   ensure_apt qemu-user gcc-arm-linux-gnueabihf libc6-dev-armhf-cross ;;
    x86_64-*)  ;;
    *) die "unsupported target $t" ;;
  esac
}

# cross_env TARGET: linker, C compiler (ring and bundled SQLite build C) and qemu runner.
# aarch64-musl links statically with Debian's aarch64 gcc as the driver (rustc supplies musl's
# self-contained CRT and libc); the same gcc compiles C dependencies. armv7 gnueabihf links
# against Debian's armhf glibc, which qemu finds under -L.
cross_env() {
  local t=$1 up
  up=$(echo "$t" | tr 'a-z-' 'A-Z_')
  case "$t" in
    aarch64-unknown-linux-musl)
      export "CARGO_TARGET_${up}_LINKER=aarch64-linux-gnu-gcc"
      export "CARGO_TARGET_${up}_RUNNER=qemu-aarch64"
      export "CC_${t//-/_}=aarch64-linux-gnu-gcc" "AR_${t//-/_}=aarch64-linux-gnu-ar"
      CONDUIT_TEST_RUNNER="qemu-aarch64" ;;
    armv7-unknown-linux-gnueabihf|armv7-unknown-linux-musleabihf)
      export "CARGO_TARGET_${up}_LINKER=arm-linux-gnueabihf-gcc"
      export "CARGO_TARGET_${up}_RUNNER=qemu-arm -L /usr/arm-linux-gnueabihf"
      export "CC_${t//-/_}=arm-linux-gnueabihf-gcc" "AR_${t//-/_}=arm-linux-gnueabihf-ar"
      CONDUIT_TEST_RUNNER="qemu-arm -L /usr/arm-linux-gnueabihf" ;;
    x86_64-unknown-linux-musl)
      # The host gcc compiles ring's C for a static musl binary (no musl headers needed).
      export "CC_${t//-/_}=gcc" "AR_${t//-/_}=ar"
      CONDUIT_TEST_RUNNER="" ;;
  esac
  # The integration harness starts the target's binaries through the same runner.
  export CONDUIT_TEST_RUNNER
}

# The crates that ship on the appliance: the only ones whose tests run under qemu. The
# integration suite (conduit-tests) runs there too, less the tests that exist for the manager
# and the gateway and the CLI (QEMU_SKIP, test-name filters).
APPLIANCE_CRATES=(-p conduit-agent -p conduit-board -p conduit-ipmi -p conduit-redfish
  -p conduit-http-client -p conduit-rfb -p conduit-ws -p conduit-base64 -p conduit-http -p conduit-metrics
  -p conduit-runtime -p conduit-service -p conduit-api -p conduit-tests)
# Full names (skip filters match substrings in every test binary: a bare `exposition::` would
# also skip conduit-metrics' own exposition tests).
QEMU_SKIP=(--skip exposition::prometheus_gets_openmetrics_and_text_clients_get_text
  --skip exposition::head_metrics_has_headers_and_no_body --skip exposition::health_and_index
  --skip metrics_reference:: --skip prometheus_e2e:: --skip manager_api::
  --skip manager_replicas:: --skip pg_client:: --skip gateway_uplink:: --skip gateway_site:: --skip gateway_console::
  --skip cli::a_person_logs_in_powers_servers_and_uses_the_consoles_from_the_command_line
  --skip cli::an_admin_administers_from_the_command_line_and_a_script_logs_in_with_a_key
  --skip cli::the_cli_works_over_https_and_wss_through_tls_proxies
  --skip web_console::the_web_console_from_login_to_a_servers_screen)
