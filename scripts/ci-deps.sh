#!/usr/bin/env bash
# Debian packages the tests need (they skip with a reason when a package is absent):
#   slurm-wlm, munge   a real single-node Slurm cluster (tests/test_slurm.py)
#   openssh-server     a real sshd on loopback for the remote-device tests
#   iproute2           network namespaces: the device-pool tests' boards (ip netns)
#   linux-perf         the runner's hardware-counter path
# Idempotent: installs only what is missing. Needs root (CI runs as root) or sudo.
set -euo pipefail
need=()
[ -x /usr/sbin/slurmctld ] || need+=(slurm-wlm)
[ -x /usr/sbin/munged ] || need+=(munge)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
command -v perf >/dev/null 2>&1 || need+=(linux-perf)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi
