#!/usr/bin/env bash
# Debian packages the tests need: openssh-server (a real sshd on loopback for the remote
# device tests) and linux-perf (the runner's hardware-counter path). Idempotent.
set -euo pipefail
missing=()
command -v /usr/sbin/sshd >/dev/null || missing+=(openssh-server)
command -v perf >/dev/null || missing+=(linux-perf)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
