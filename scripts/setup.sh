#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine with a Rust toolchain:
# cmake + libclang-dev (unicorn-engine's C build), openssh-server (GXP's real-sshd tests),
# fonts-dejavu-core (PNG figure text), chromium (the report's headless-browser check and
# screenshot), pdsh (GXP benchmark baseline, optional).
# Idempotent: installs only what is missing.
set -euo pipefail
need=()
for pkg in cmake libclang-dev openssh-server openssh-client fonts-dejavu-core pkg-config chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
optional=()
dpkg -s pdsh >/dev/null 2>&1 || optional+=(pdsh)
if [ ${#need[@]} -gt 0 ] || [ ${#optional[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${need[*]} ${optional[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  echo "setup: installing ${need[*]} ${optional[*]}" >&2
  $SUDO apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if [ ${#optional[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null \
      || echo "setup: optional ${optional[*]} not installed (benchmark baseline only)" >&2
  fi
fi
