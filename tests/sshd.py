"""A throwaway OpenSSH server on loopback, for tests and bench/deploy_overhead.py.

Debian's openssh-server (scripts/ci-deps.sh installs it): own host key, own client key,
key-only login for the current user, sftp for uploads. ``device(**overrides)`` returns
an inventory entry that reaches it with strict host-key checking.
"""
import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def available():
    return Path(SSHD).exists() and shutil.which("ssh-keygen") is not None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class LoopbackSshd:
    def __init__(self, root):
        self.root = Path(root)
        self.port = free_port()

    def __enter__(self):
        d = self.root
        d.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation dir
        self.host_key = keygen(d / "host_ed25519")
        self.client_key = keygen(d / "client_ed25519")
        shutil.copy(d / "client_ed25519.pub", d / "authorized_keys")
        host_pub = (d / "host_ed25519.pub").read_text().split()
        self.known_hosts = d / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (d / "sshd_config").write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
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
        subprocess.run([SSHD, "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")], check=True)
        for _ in range(100):  # it daemonizes; wait until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        self.workdir = d / "device" / "edge-bench"
        return self

    def __exit__(self, *exc):
        pid_file = self.root / "sshd.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), 15)

    def device(self, **overrides):
        entry = {"host": "127.0.0.1", "port": self.port, "user": getpass.getuser(), "key_file": str(self.client_key),
                 "known_hosts": str(self.known_hosts), "workdir": str(self.workdir), "python": sys.executable,
                 "runtimes": ["onnxruntime", "litert"], "connect_timeout_s": 5, "run_timeout_s": 120,
                 "retries": 1, "retry_backoff_s": 0.1}
        entry.update(overrides)
        return entry
