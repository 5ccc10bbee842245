"""Run workflow/device_runner.py on an inventory device over SSH (fabric): deploy, run, fetch, clean up.

    result, deploy = run_remote(profile, runner_args, files, scratch)

Every file the runner needs (the runner itself, the model, the input samples) goes to
a content-addressed cache on the device, ``<workdir>/cache/<sha256><suffix>``: uploaded
to a temporary name, verified by its sha256 on the device, then renamed, so a dropped
connection never leaves a file that looks cached, and a file already there is not sent
again. Each run gets ``<workdir>/runs/<random id>/``, removed afterwards.

Safety: host keys are checked strictly against the profile's known_hosts file (an
unknown or changed key is refused, never added: fabric's default would add it); there
are no passwords (key file or agent); every remote argument is shell-quoted; every
remote path is checked to stay below the work dir.

Faults (unreachable host, timeout, dropped connection, runner crash) are retried with
exponential backoff up to the profile's ``retries``; then :class:`DeviceFailure` says
why. Faults that a retry cannot fix (host key, authentication, a model the device's
runtime cannot run) fail at once. A mistake in the inputs (runner exit status 2) is a
UserError.
"""
import posixpath
import shlex
import socket
import time
import uuid
from pathlib import Path

import fabric
import invoke
import paramiko

from workflow.errors import UserError
from workflow.io import sha256_file

RUNNER = Path(__file__).with_name("device_runner.py")
# Hash a file with the device's own Python: no sha256sum needed on the board.
HASH_SNIPPET = ("import hashlib,sys\nfor p in sys.argv[1:]:\n h=hashlib.sha256();f=open(p,'rb')\n"
                " [h.update(b) for b in iter(lambda:f.read(1<<20),b'')]\n print(h.hexdigest())")


class DeviceFailure(Exception):
    """The device produced no result. ``retry``: whether trying again may help."""

    def __init__(self, reason, retry=True, attempts=()):
        super().__init__(reason)
        self.reason, self.retry, self.attempts = reason, retry, list(attempts)


def remote_path(workdir, *parts):
    """A path below ``workdir``; anything that would leave it is refused."""
    path = posixpath.normpath(posixpath.join(workdir, *parts))
    if not path.startswith(workdir.rstrip("/") + "/"):
        raise UserError(f"remote path {path!r} escapes the device work dir {workdir!r}")
    return path


def connect(profile):
    """An open fabric Connection with strict host-key checking against the profile's known_hosts."""
    known_hosts = Path(profile["known_hosts"]).expanduser()
    if not known_hosts.is_file():
        fix = "sudo scripts/virtual-board.sh up writes it" if profile.get("emulated") else \
            "ssh-keyscan the device into it"
        raise DeviceFailure(f"known_hosts file {known_hosts} not found ({fix})", retry=False)
    connect_kwargs = {"look_for_keys": False, "allow_agent": bool(profile["agent"]),
                      "banner_timeout": profile["connect_timeout_s"], "auth_timeout": profile["connect_timeout_s"]}
    if profile["key_file"]:
        connect_kwargs["key_filename"] = str(Path(profile["key_file"]).expanduser())
    conn = fabric.Connection(profile["host"], user=profile["user"], port=profile["port"],
                             connect_timeout=profile["connect_timeout_s"], connect_kwargs=connect_kwargs,
                             config=fabric.Config(overrides={"load_ssh_configs": False}))
    conn.client.load_host_keys(str(known_hosts))
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        conn.open()
    except Exception as err:
        conn.close()
        raise classify(err, profile) from None
    return conn


def classify(err, profile):
    """A DeviceFailure saying what went wrong and whether a retry may help."""
    where = f"{profile['user']}@{profile['host']}:{profile['port']}"
    if isinstance(err, DeviceFailure):
        return err
    if isinstance(err, paramiko.BadHostKeyException):
        return DeviceFailure(f"host key of {where} does not match {profile['known_hosts']}: refusing to connect",
                             retry=False)
    if isinstance(err, paramiko.AuthenticationException):
        return DeviceFailure(f"authentication to {where} failed: {err}", retry=False)
    if isinstance(err, paramiko.SSHException) and "known_hosts" in str(err):
        return DeviceFailure(f"{where} is not in {profile['known_hosts']}: refusing an unknown host key", retry=False)
    # An emulated board is started on this machine: say how (scripts/virtual-board.sh).
    hint = "; is the virtual board up? (sudo scripts/virtual-board.sh status)" if profile.get("emulated") else ""
    if isinstance(err, (socket.timeout, TimeoutError)):
        return DeviceFailure(f"{where} did not answer within {profile['connect_timeout_s']} s{hint}")
    if isinstance(err, invoke.CommandTimedOut):
        return DeviceFailure(f"no answer from the runner on {where} within {err.timeout} s")
    if isinstance(err, (paramiko.SSHException, EOFError, OSError)):
        return DeviceFailure(f"connection to {where} failed: {type(err).__name__}: {err}{hint}")
    raise err


def deploy(conn, profile, files):
    """Upload ``files`` into the device's cache unless already there: {local path: remote path}, stats.

    Missing files go to temporary names first, are hashed on the device in one call, and
    only then renamed to their content address.
    """
    workdir, q = profile["workdir"], shlex.quote
    cache, runs = remote_path(workdir, "cache"), remote_path(workdir, "runs")
    # Leftovers of dropped connections: run folders and partial uploads older than any
    # run can last are dead, so they go (a live run is never that old).
    stale_min = int(profile["run_timeout_s"] // 60) + 2
    conn.run(f"mkdir -p {q(cache)} {q(runs)} && "
             f"find {q(runs)} -mindepth 1 -maxdepth 1 -mmin +{stale_min} -exec rm -rf {{}} + && "
             f"find {q(cache)} -maxdepth 1 -name '.*.part' -mmin +{stale_min} -exec rm -f {{}} +",
             hide=True, in_stream=False)
    sftp = conn.sftp()
    mapping, stats = {}, {"uploaded": [], "cached": [], "bytes_uploaded": 0}
    pending = []  # (local, digest, partial, target)
    for local in map(Path, files):
        digest = sha256_file(local)
        suffix = local.suffix if local.suffix[1:].isalnum() else ""
        target = remote_path(workdir, "cache", digest + suffix)
        mapping[str(local)] = target
        try:
            sftp.stat(target)
            stats["cached"].append(local.name)
        except FileNotFoundError:
            pending.append((local, digest, remote_path(workdir, "cache", f".{digest}.{uuid.uuid4().hex}.part"), target))
    if not pending:
        return mapping, stats
    try:
        for local, _, partial, _ in pending:
            sftp.put(str(local), partial)
        check = conn.run(f"{q(profile['python'])} -c {q(HASH_SNIPPET)} "
                         + " ".join(q(partial) for _, _, partial, _ in pending),
                         hide=True, warn=True, in_stream=False, timeout=profile["run_timeout_s"])
        if check.exited != 0 or check.stdout.split() != [digest for _, digest, _, _ in pending]:
            raise DeviceFailure(f"uploads arrived corrupted or could not be hashed with {profile['python']} "
                                f"on the device ({check.stderr.strip()[-200:]})")
        for local, _, partial, target in pending:
            sftp.posix_rename(partial, target)
            stats["uploaded"].append(local.name)
            stats["bytes_uploaded"] += local.stat().st_size
    finally:
        for _, _, partial, _ in pending:
            try:
                sftp.remove(partial)
            except Exception:  # renamed already, or the connection is gone; a .part file is never used
                pass
    return mapping, stats


def run_once(profile, runner_args, files, scratch):
    """One attempt: connect, deploy, run the runner, fetch its JSON, remove the run folder."""
    q, workdir = shlex.quote, profile["workdir"]
    t0 = time.perf_counter()
    conn = connect(profile)
    try:
        mapping, stats = deploy(conn, profile, [RUNNER, *files.values()])
        stats["deploy_s"] = time.perf_counter() - t0
        rundir = remote_path(workdir, "runs", uuid.uuid4().hex)
        result_path = remote_path(rundir, "result.json")
        argv = [profile["python"], mapping[str(RUNNER)], *runner_args]
        for flag, local in files.items():
            argv += [flag, mapping[str(local)]]
        argv += ["--out", result_path]
        timeout = int(profile["run_timeout_s"])
        # `; exit $?` keeps the shell from exec'ing the runner, so a runner killed by a
        # signal reports 128 + signal instead of tearing the session down like a drop.
        command = (f"mkdir -p {q(rundir)} && cd {q(rundir)} && "
                   f"timeout -k 10 {timeout} {' '.join(q(str(a)) for a in argv)}; exit $?")
        t1 = time.perf_counter()
        try:
            run = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout + 30)
            stats["run_s"] = time.perf_counter() - t1
            if run.exited == 0:
                local = Path(scratch) / "runner.json"
                conn.sftp().get(result_path, str(local))
                return local, stats
        finally:
            try:
                conn.run(f"rm -rf {q(rundir)}", hide=True, warn=True, in_stream=False, timeout=30)
            except Exception:  # the connection may be gone; the next run uses a fresh folder
                pass
        last = (run.stderr.strip().splitlines() or [f"no error output"])[-1].removeprefix("error: ")
        if run.exited == 2:
            raise UserError(f"device_runner on {profile['name']} failed: {last}")
        if run.exited == 3:
            raise DeviceFailure(f"the runtime on {profile['name']} cannot run the model: {last}", retry=False)
        if run.exited == 4:  # the inventory lists a runtime the device's python cannot import
            raise DeviceFailure(f"{profile['name']}: {last} for {profile['python']}, but its inventory entry lists "
                                f"it in runtimes: install it there, or remove it from runtimes", retry=False)
        if run.exited == 124:
            raise DeviceFailure(f"runner on {profile['name']} timed out after {timeout} s")
        if run.exited == -1:  # paramiko: the channel closed without an exit status
            raise DeviceFailure(f"connection to {profile['name']} dropped during the run")
        raise DeviceFailure(f"runner on {profile['name']} crashed (exit status {run.exited}): {last}")
    except (UserError, DeviceFailure):
        raise
    except Exception as err:
        raise classify(err, profile) from None
    finally:
        conn.close()


def run_remote(profile, runner_args, files, scratch):
    """Run with retries: (path of the fetched result JSON, deploy stats with the attempts)."""
    attempts = []
    for attempt in range(profile["retries"] + 1):
        if attempt:
            time.sleep(profile["retry_backoff_s"] * 2 ** (attempt - 1))
        try:
            local, stats = run_once(profile, runner_args, files, scratch)
            stats["attempts"] = attempts + [{"attempt": attempt + 1, "status": "ok"}]
            return local, stats
        except DeviceFailure as failure:
            attempts.append({"attempt": attempt + 1, "status": "failed", "reason": failure.reason})
            if not failure.retry:
                break
    raise DeviceFailure(attempts[-1]["reason"], retry=False, attempts=attempts)
