#!/usr/bin/env bash
# Debian packages some tests need (they skip with a reason when a package is absent).
# Idempotent: installs only what is missing. Needs root (CI runs as root).
set -euo pipefail
need=()
command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ] || need+=(slurm-wlm)   # tests/test_slurm.py
command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || need+=(munge)             # tests/test_slurm.py
if [ ${#need[@]} -gt 0 ]; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
