"""Throwaway OpenSSH servers for tests and bench/deploy_overhead.py.

Debian's openssh-server (scripts/ci-deps.sh installs it): own host key, a client key,
key-only login for the current user, sftp for uploads. ``device(**overrides)`` returns
an inventory entry that reaches it with strict host-key checking.

``LoopbackSshd`` listens on 127.0.0.1. ``NamespaceSshd`` is a board of its own: a network
namespace ``integ-<tag>`` reached over a veth pair at 10.231.<n>.2, whose sshd also has a
private mount of its own folder at the shared work-dir path (a board's own disk), so two
of them make a device pool whose members share the inventory entry but not a file system.
"""
import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
IP = shutil.which("ip") or "/usr/sbin/ip"


def available():
    return Path(SSHD).exists() and shutil.which("ssh-keygen") is not None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def wait_until_listening(address, port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {address}:{port} within {timeout} s")


class LoopbackSshd:
    address = "127.0.0.1"

    def __init__(self, root, client_key=None):
        """``client_key``: log in with this key (one key for several servers), else a new one."""
        self.root = Path(root)
        self.port = free_port()
        self.client_key = client_key

    def __enter__(self):
        d = self.root
        d.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation dir
        self.host_key = keygen(d / "host_ed25519")
        if self.client_key is None:
            self.client_key = keygen(d / "client_ed25519")
        shutil.copy(f"{self.client_key}.pub", d / "authorized_keys")
        host_pub = (d / "host_ed25519.pub").read_text().split()
        self.known_hosts = d / "known_hosts"
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"  # known_hosts' notation
        self.known_hosts.write_text(f"{name} {host_pub[0]} {host_pub[1]}\n")
        (d / "sshd_config").write_text(f"""Port {self.port}
ListenAddress {self.address}
HostKey {self.host_key}
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
MaxSessions 20
MaxStartups 50
Subsystem sftp internal-sftp
""")
        subprocess.run([SSHD, "-t", "-f", str(d / "sshd_config")], check=True)
        self.workdir = d / "device" / "edge-bench"
        self.start()
        wait_until_listening(self.address, self.port)
        return self

    def start(self):
        subprocess.run([SSHD, "-f", str(self.root / "sshd_config"), "-E", str(self.root / "sshd.log")], check=True)

    def stop_listener(self):
        """Stop accepting connections; sessions already open go on (as when a board's sshd is restarted)."""
        pid_file = self.root / "sshd.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), 15)
            wait_for_removal = time.monotonic() + 5  # sshd removes its pid file as it stops
            while pid_file.exists() and time.monotonic() < wait_for_removal:
                time.sleep(0.02)

    def __exit__(self, *exc):
        self.stop_listener()

    def device(self, **overrides):
        entry = {"host": self.address, "port": self.port, "user": getpass.getuser(),
                 "key_file": str(self.client_key), "known_hosts": str(self.known_hosts),
                 "workdir": str(self.workdir), "python": sys.executable,
                 "runtimes": ["onnxruntime", "litert"], "connect_timeout_s": 5, "run_timeout_s": 120,
                 "retries": 1, "retry_backoff_s": 0.1}
        entry.update(overrides)
        return entry


def namespaces_available():
    """Whether this process may create network namespaces (root with CAP_SYS_ADMIN and iproute2)."""
    if os.geteuid() != 0 or not Path(IP).exists() or not available():
        return False
    probe = f"integ-probe{os.getpid() % 100000}"
    created = subprocess.run([IP, "netns", "add", probe], capture_output=True).returncode == 0
    if created:
        subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return created


def free_subnets(count):
    """``count`` values of n for which no interface of this machine has an address in 10.231.<n>.0/24."""
    used = set(re.findall(r"inet 10\.231\.(\d+)\.", subprocess.run([IP, "-o", "addr"], capture_output=True,
                                                                     text=True).stdout))
    return [n for n in range(1 + os.getpid() % 200, 255) if str(n) not in used][:count]


class NamespaceSshd(LoopbackSshd):
    """sshd in network namespace ``integ-<tag>`` at 10.231.<subnet>.2:22, with ``disk`` mounted at
    ``mount_point`` for it alone (the board's own file system; the test reads it at ``disk``)."""

    def __init__(self, root, tag, subnet, disk, mount_point, client_key=None):
        super().__init__(root, client_key)
        self.namespace, self.veth = f"integ-{tag}", f"integ-{tag}h"
        self.address, self.port = f"10.231.{subnet}.2", 22
        self.gateway = f"10.231.{subnet}.1"
        self.disk, self.mount_point = Path(disk), Path(mount_point)
        self.process = None

    def __enter__(self):
        self.disk.mkdir(parents=True, exist_ok=True)
        self.mount_point.mkdir(parents=True, exist_ok=True)
        try:
            super().__enter__()
        except BaseException:
            self.__exit__()
            raise
        self.workdir = self.mount_point / "edge-bench"  # as the board sees it; the test reads `disk_workdir`
        self.disk_workdir = self.disk / "edge-bench"
        return self

    def start(self):
        ns, peer = self.namespace, f"{self.veth[:-1]}b"
        for command in ([IP, "netns", "add", ns],
                        [IP, "link", "add", self.veth, "type", "veth", "peer", "name", peer],
                        [IP, "link", "set", peer, "netns", ns],
                        [IP, "addr", "add", f"{self.gateway}/24", "dev", self.veth],
                        [IP, "link", "set", self.veth, "up"],
                        [IP, "-n", ns, "addr", "add", f"{self.address}/24", "dev", peer],
                        [IP, "-n", ns, "link", "set", peer, "up"],
                        [IP, "-n", ns, "link", "set", "lo", "up"]):
            subprocess.run(command, check=True, capture_output=True)
        # `ip netns exec` runs the command in a mount namespace of its own: the bind mount is this board's only.
        self.process = subprocess.Popen(
            [IP, "netns", "exec", ns, "sh", "-c", 'mount --bind "$1" "$2" && exec "$3" -D -f "$4" -E "$5"', "sh",
             str(self.disk), str(self.mount_point), SSHD, str(self.root / "sshd_config"), str(self.root / "sshd.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_listener(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def __exit__(self, *exc):
        self.stop_listener()
        # Sessions still closing would linger without a network once it is gone: end everything in it first.
        pids = subprocess.run([IP, "netns", "pids", self.namespace], capture_output=True, text=True).stdout.split()
        for pid in map(int, pids):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        subprocess.run([IP, "netns", "del", self.namespace], capture_output=True)
        subprocess.run([IP, "link", "del", self.veth], capture_output=True)
