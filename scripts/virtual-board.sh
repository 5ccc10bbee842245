#!/usr/bin/env bash
# A virtual aarch64 board for the remote benchmark path, for machines (and CI) without a real one:
# a Debian bookworm arm64 root file system run by qemu-user through binfmt_misc, with sshd in its
# own network namespace and the boards' Python wheels (onnxruntime, ai-edge-litert, tflite-runtime).
#
#   sudo scripts/virtual-board.sh up       # build it (first time: minutes; then cached) and start it
#   sudo scripts/virtual-board.sh status   # what runs, and a login on every profile
#   sudo scripts/virtual-board.sh down     # stop what `up` started; the cached root file system stays
#
# Inventory profiles (config/devices.yaml), all at 10.78.0.2 in network namespace `vboard`:
#   virtual-a53         port 2253, QEMU_CPU=cortex-a53 (i.MX8M Plus, Coral Dev Board), /opt/venv
#   virtual-a72         port 2272, QEMU_CPU=cortex-a72 (Raspberry Pi CM4), /opt/venv
#   virtual-a53-tflite  port 2253, /opt/tflite-runtime: tflite-runtime 2.14 + numpy < 2 only
# /opt/venv holds envs/board-venv.txt, /opt/tflite-runtime envs/board-tflite-runtime.txt.
#
# This is user-mode emulation: the kernel, core count and /sys are this machine's and the code
# runs tens to a thousand times slower. It checks that the aarch64 builds of the runtimes work
# and give the host's answers; its timings say nothing about a real board.
#
# Environment: VBOARD_DIR  state and cache, outside the clone (default
#                          /var/cache/edge-vision-repro/virtual-board; config/devices.yaml names
#                          the key and known_hosts files below it)
#              VBOARD_MIRROR  Debian mirror for debootstrap (default http://deb.debian.org/debian)
# Needs root (namespaces, chroot, mounts) and Debian's qemu-user-static, binfmt-support and
# debootstrap (installed with apt-get when missing). Errors are one line naming cause and fix
# (exit status 2); `up` that fails stops whatever it had started.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=${VBOARD_DIR:-/var/cache/edge-vision-repro/virtual-board}
MIRROR=${VBOARD_MIRROR:-http://deb.debian.org/debian}
ROOT=$STATE/rootfs
RUN=$STATE/run
LOGS=$STATE/log
NETNS=vboard
HOST_IF=vboard-h
BOARD_IF=vboard-b
HOST_IP=10.78.0.1
BOARD_IP=10.78.0.2
PROFILES=(a53 a72)
declare -A PORT=([a53]=2253 [a72]=2272)
declare -A CPU_PART=([a53]=0xd03 [a72]=0xd08)
declare -A CPU_REVISION=([a53]=4 [a72]=3)
# name in /opt, requirements file
ENVS=("venv:envs/board-venv.txt" "tflite-runtime:envs/board-tflite-runtime.txt")
SSH_OPTS=(-i "$STATE/ssh/id_ed25519" -o UserKnownHostsFile="$STATE/ssh/known_hosts" -o StrictHostKeyChecking=yes
          -o BatchMode=yes -o ConnectTimeout=10 -o LogLevel=ERROR)

say() { echo "virtual-board: $*" >&2; }
die() { echo "error: $*" >&2; exit 2; }
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

# ----------------------------------------------------------------------------- host prerequisites
need_root() {
  [ "$(id -u)" = 0 ] || die "virtual-board.sh needs root (network namespace, chroot, mounts): run it with sudo"
}

install_packages() {
  local need=()
  [ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
  command -v update-binfmts >/dev/null || need+=(binfmt-support)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v ssh-keygen >/dev/null && command -v ssh >/dev/null || need+=(openssh-client)
  [ ${#need[@]} -eq 0 ] && return
  say "installing ${need[*]} (apt-get)"
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"; } \
      >"$LOGS/apt.log" 2>&1; then
    die "cannot install ${need[*]} with apt-get ($(tail -n 1 "$LOGS/apt.log")): install them by hand (Debian/Ubuntu packages of those names) and rerun"
  fi
}

check_binfmt() {
  local fs=/proc/sys/fs/binfmt_misc entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
  if [ ! -e "$fs/register" ] && ! mount -t binfmt_misc binfmt_misc "$fs" 2>/dev/null; then
    die "binfmt_misc is not available ($fs cannot be mounted), so aarch64 programs cannot run here: load the binfmt_misc kernel module (modprobe binfmt_misc), or run the container with --privileged"
  fi
  if [ ! -e "$entry" ] || ! grep -q '^enabled' "$entry"; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  if [ ! -e "$entry" ] || ! grep -q '^enabled' "$entry"; then
    die "qemu-aarch64 is not registered with binfmt_misc ($entry): run update-binfmts --enable qemu-aarch64 (package qemu-user-static)"
  fi
  # F (fix binary): the kernel opens the interpreter at registration, so it works inside the chroot
  grep -q '^flags:.*F' "$entry" || die "binfmt_misc's qemu-aarch64 entry lacks the F flag ($(grep '^flags' "$entry")), so it cannot run inside a chroot: reinstall qemu-user-static, whose entry sets it"
}

find_host_pip() {
  # Wheels for the board are fetched and unpacked by this machine's pip (native, fast) for the
  # board's platform; the project's venv first, else the system's.
  local python
  for python in "$REPO/.venv/bin/python" python3; do
    if "$python" -m pip --version >/dev/null 2>&1; then PIP_PYTHON=$python; return; fi
  done
  die "pip is needed on this machine to fetch the board's wheels: run scripts/setup.sh, or apt-get install python3-pip"
}

# ----------------------------------------------------------------------------- the root file system
build_rootfs() {
  [ -f "$ROOT/.vboard-rootfs" ] && return
  local start; start=$(date +%s)
  say "building Debian bookworm arm64 in $ROOT with debootstrap from $MIRROR (a few minutes; log: $LOGS/debootstrap.log)"
  rm -rf "$ROOT.partial" "$ROOT"
  # In a private mount namespace: the mounts debootstrap makes inside the target never outlive it.
  if ! nice -n 19 unshare --mount --propagation private \
      debootstrap --variant=minbase --arch=arm64 --include=python3,openssh-server \
      bookworm "$ROOT.partial" "$MIRROR" >"$LOGS/debootstrap.log" 2>&1; then
    die "debootstrap of Debian bookworm arm64 from $MIRROR failed ($(grep -E '^(E|W):' "$LOGS/debootstrap.log" | tail -n 1)): check the mirror (VBOARD_MIRROR) and $LOGS/debootstrap.log"
  fi
  mv "$ROOT.partial" "$ROOT"
  touch "$ROOT/.vboard-rootfs"  # last: a half-built tree is never taken for a finished one
  say "root file system built in $(elapsed "$start") ($(du -sh "$ROOT" | cut -f1))"
}

board_python() {
  # "3.11 2.36": the board's Python and glibc versions, which decide the wheels it can use.
  chroot "$ROOT" /usr/bin/python3 -c 'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1])'
}

install_env() {
  local name=$1 requirements=$REPO/$2 target=$ROOT/opt/$1
  local want; want=$(sha256sum "$requirements" | cut -d' ' -f1)
  [ "$(cat "$target/.requirements.sha256" 2>/dev/null)" = "$want" ] && return
  local start; start=$(date +%s)
  local py glibc; read -r py glibc < <(board_python) || true
  [ -n "$glibc" ] || die "the board's python3 does not run under qemu-user (chroot $ROOT /usr/bin/python3 failed): delete $ROOT and rerun up"
  local tag=cp${py/./} platforms=() minor
  for minor in $(seq "${glibc#2.}" -1 17); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
  platforms+=(--platform manylinux2014_aarch64 --platform linux_aarch64)
  say "installing $2 into /opt/$name (Python $py, glibc $glibc; log: $LOGS/pip-$name.log)"
  rm -rf "$target"
  chroot "$ROOT" /usr/bin/python3 -m venv --without-pip "/opt/$name"
  if ! "$PIP_PYTHON" -m pip install --no-deps --only-binary :all: --no-warn-conflicts --disable-pip-version-check \
      "${platforms[@]}" --python-version "$py" --implementation cp --abi "$tag" \
      --target "$target/lib/python$py/site-packages" -r "$requirements" >"$LOGS/pip-$name.log" 2>&1; then
    local missing; missing=$(grep -o 'No matching distribution found for [^ ]*' "$LOGS/pip-$name.log" | head -n 1 | cut -d' ' -f6)
    rm -rf "$target"
    [ -n "$missing" ] && die "no aarch64 wheel of $missing for the board's Python $py (glibc $glibc) on the package index: pin a version that has one in $2"
    die "installing $2 for the board failed ($(grep -m1 -i error "$LOGS/pip-$name.log" || tail -n 1 "$LOGS/pip-$name.log")): see $LOGS/pip-$name.log"
  fi
  echo "$want" >"$target/.requirements.sha256"  # last: an interrupted install is redone
  say "/opt/$name ready in $(elapsed "$start")"
}

cpuinfo() {
  # qemu-user passes this machine's x86 /proc/cpuinfo through, and the cpuinfo library inside
  # onnxruntime and ai-edge-litert segfaults on it; the board sees an ARM one for its profile.
  local profile=$1 i
  for i in $(seq 0 $(( $(getconf _NPROCESSORS_CONF) - 1 ))); do
    printf 'processor\t: %s\nBogoMIPS\t: 16.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n' "$i"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
      "${CPU_PART[$profile]}" "${CPU_REVISION[$profile]}"
  done
  printf 'Model\t\t: QEMU user-mode emulation of a Cortex-%s (virtual board)\n' "${profile^}"
}

configure() {
  mkdir -p "$STATE/ssh" "$RUN"
  [ -f "$STATE/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C virtual-board -f "$STATE/ssh/id_ed25519"
  [ -f "$ROOT/etc/ssh/vboard_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C virtual-board \
    -f "$ROOT/etc/ssh/vboard_host_ed25519_key"
  install -d -m 700 "$ROOT/root/.ssh"
  install -m 600 "$STATE/ssh/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
  install -d -m 755 "$ROOT/run/sshd"  # sshd's privilege separation directory
  local host_key profile; host_key=$(cut -d' ' -f1,2 "$ROOT/etc/ssh/vboard_host_ed25519_key.pub")
  for profile in "${PROFILES[@]}"; do echo "[$BOARD_IP]:${PORT[$profile]} $host_key"; done >"$STATE/ssh/known_hosts.tmp"
  mv "$STATE/ssh/known_hosts.tmp" "$STATE/ssh/known_hosts"  # readers never see it half written
  for profile in "${PROFILES[@]}"; do
    cpuinfo "$profile" >"$RUN/cpuinfo-$profile"
    cat >"$ROOT/etc/ssh/vboard-$profile.conf" <<EOF
# written by scripts/virtual-board.sh: profile $profile
Port ${PORT[$profile]}
ListenAddress $BOARD_IP
HostKey /etc/ssh/vboard_host_ed25519_key
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
MaxStartups 20
Subsystem sftp internal-sftp
SetEnv QEMU_CPU=cortex-$profile
EOF
  done
  # The key files are what config/devices.yaml points at; `sudo` users may read them as themselves.
  [ -n "${SUDO_USER:-}" ] && chown -R "$SUDO_USER" "$STATE/ssh"
  return 0
}

# ----------------------------------------------------------------------------- processes
sshd_pid() {  # the PID in run/sshd-<profile>.pid when that process is still our sshd, else nothing
  local file=$RUN/sshd-$1.pid pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "vboard-$1.conf"; then echo "$pid"; fi
}

descendants() {  # one PID a line
  local child
  for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do  # space-separated PIDs
    echo "$child"; descendants "$child"
  done
}

stop_pids() {  # TERM, up to 10 s, then KILL
  [ $# -eq 0 ] && return
  kill -TERM "$@" 2>/dev/null || true
  local i
  for i in $(seq 50); do
    kill -0 "$@" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL "$@" 2>/dev/null || true
}

board_down() {
  local profile pid pids=() inside
  for profile in "${PROFILES[@]}"; do
    pid=$(sshd_pid "$profile")
    [ -n "$pid" ] && pids+=("$pid") && mapfile -t -O "${#pids[@]}" pids < <(descendants "$pid")
    rm -f "$RUN/sshd-$profile.pid"
  done
  stop_pids "${pids[@]}"
  if netns_exists; then
    mapfile -t inside < <(ip netns pids "$NETNS")  # sessions still inside: all were started by our sshd
    stop_pids "${inside[@]}"
    ip netns delete "$NETNS"  # removes the veth pair too (asynchronously)
  fi
  ip link delete "$HOST_IF" 2>/dev/null || true  # a veth left by a start that failed half-way
}

netns_exists() { ip netns list | grep -q "^$NETNS\( \|$\)"; }

board_running() {
  local profile
  netns_exists || return 1
  for profile in "${PROFILES[@]}"; do [ -n "$(sshd_pid "$profile")" ] || return 1; done
}

start_network() {
  ip netns add "$NETNS"
  ip link add "$HOST_IF" type veth peer name "$BOARD_IF" netns "$NETNS"
  ip addr add "$HOST_IP/24" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip -n "$NETNS" addr add "$BOARD_IP/24" dev "$BOARD_IF"
  ip -n "$NETNS" link set "$BOARD_IF" up
  ip -n "$NETNS" link set lo up
}

start_sshd() {
  # `ip netns exec` gives the command its own mount namespace: /proc, /sys, /dev and the
  # profile's cpuinfo are mounted into the chroot there and vanish with it. nice 19: the
  # emulation yields to everything else on this machine. Each step execs the next, so $! is sshd.
  local profile=$1
  # shellcheck disable=SC2016  # $1..$3 belong to the inner sh
  setsid nice -n 19 ip netns exec "$NETNS" sh -c '
    mount -t proc proc "$1/proc" && mount -t sysfs sysfs "$1/sys" && mount --rbind /dev "$1/dev" &&
    mount --bind "$2" "$1/proc/cpuinfo" && exec chroot "$1" /usr/sbin/sshd -D -e -f "$3"' \
    sshd "$ROOT" "$RUN/cpuinfo-$profile" "/etc/ssh/vboard-$profile.conf" \
    </dev/null >"$LOGS/sshd-$profile.log" 2>&1 &
  echo $! >"$RUN/sshd-$profile.pid"
}

board_ssh() {  # board_ssh PROFILE COMMAND: run COMMAND on the board as the inventory would
  ssh "${SSH_OPTS[@]}" -p "${PORT[$1]}" "root@$BOARD_IP" "$2"
}

wait_for_sshd() {
  local profile=$1 i
  for i in $(seq 100); do
    [ -n "$(sshd_pid "$profile")" ] || die "sshd of profile $profile exited at start: $(tail -n 1 "$LOGS/sshd-$profile.log")"
    (exec 3<>"/dev/tcp/$BOARD_IP/${PORT[$profile]}") 2>/dev/null && return
    sleep 0.2
  done
  die "sshd of profile $profile does not accept connections on $BOARD_IP:${PORT[$profile]} (log: $LOGS/sshd-$profile.log)"
}

check_board() {
  # The runtimes the inventory lists must import on the board, under each profile's CPU.
  local check='import platform, numpy, onnxruntime, ai_edge_litert, cv2; print(platform.machine(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__, "ai-edge-litert", ai_edge_litert.__version__)'
  local tflite='import numpy, tflite_runtime; print("numpy", numpy.__version__, "tflite-runtime", tflite_runtime.__version__)'
  local profile out
  for profile in "${PROFILES[@]}"; do
    out=$(board_ssh "$profile" "/opt/venv/bin/python -c '$check'" 2>&1) ||
      die "the board (profile $profile) cannot import its runtimes from /opt/venv: ${out##*$'\n'} (rebuild: delete $ROOT/opt/venv and rerun up)"
    say "virtual-$profile: $out"
  done
  out=$(board_ssh a53 "/opt/tflite-runtime/bin/python -c '$tflite'" 2>&1) ||
    die "the board cannot import tflite_runtime from /opt/tflite-runtime: ${out##*$'\n'} (rebuild: delete $ROOT/opt/tflite-runtime and rerun up)"
  say "virtual-a53-tflite: $out"
}

# ----------------------------------------------------------------------------- commands
up() {
  local start; start=$(date +%s)
  if board_running; then
    say "already up at $BOARD_IP (ports ${PORT[a53]}, ${PORT[a72]}); 'status' checks it"
    return
  fi
  install_packages
  check_binfmt
  find_host_pip
  build_rootfs
  local env
  for env in "${ENVS[@]}"; do install_env "${env%%:*}" "${env#*:}"; done
  configure
  board_down  # leftovers of a board that died or of a failed start
  trap 'board_down' EXIT  # a failed start leaves no namespace or sshd behind
  start_network
  local profile
  for profile in "${PROFILES[@]}"; do start_sshd "$profile"; done
  for profile in "${PROFILES[@]}"; do wait_for_sshd "$profile"; done
  check_board
  trap - EXIT
  say "up in $(elapsed "$start"): virtual-a53, virtual-a72, virtual-a53-tflite at $BOARD_IP (config/devices.yaml)"
  say "benchmark on it: ./run.sh -S \"benchmark.devices=[local, virtual-a53]\"; stop it: $0 down"
}

status() {
  local profile pid out rc=0
  for profile in "${PROFILES[@]}"; do
    pid=$(sshd_pid "$profile")
    if [ -z "$pid" ]; then
      echo "virtual-$profile: down"; rc=3; continue
    fi
    # shellcheck disable=SC2016  # expanded on the board
    if out=$(board_ssh "$profile" 'echo $(uname -m) QEMU_CPU=$QEMU_CPU $(/opt/venv/bin/python -V)' 2>&1); then
      echo "virtual-$profile: up, sshd pid $pid, root@$BOARD_IP:${PORT[$profile]}: $out"
    else
      echo "virtual-$profile: sshd pid $pid runs but the login fails: ${out##*$'\n'}"; rc=3
    fi
  done
  return $rc
}

case "${1:-}" in
  up|down|status) ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
need_root
mkdir -p "$STATE" "$RUN" "$LOGS"
exec 9>"$STATE/lock"
flock -w 600 9 || die "another virtual-board.sh holds $STATE/lock"
case "$1" in
  up) up ;;
  down) board_down; say "down (the root file system stays cached in $ROOT)" ;;
  status) status ;;
esac
