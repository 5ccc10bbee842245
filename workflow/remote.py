"""Run workflow/device_runner.py on an inventory device over SSH (fabric): deploy, run, fetch, clean up.

    result, deploy = run_remote(profile, runner_args, files)

Every file the runner needs (the runner itself, the model, the input samples) goes to
a content-addressed cache on the device, ``<workdir>/cache/<sha256><suffix>``: uploaded
to a temporary name, verified by its sha256 on the device, then renamed, so a dropped
connection never leaves a file that looks cached, and a file already there is not sent
again. Each run gets ``<workdir>/runs/<random id>/``.

Exclusive runs, nothing left running: the runner holds ``<workdir>/device.lock`` (flock)
for its whole measurement, so two runners never measure on one device at once (a second
one waits up to ``lock_wait_s``), and it ends itself and its children as soon as the SSH
session that started it ends (``--lifeline``: the session's channel is its stdin). The
result leaves the device over that same session (printed by the shell line that ran the
runner), which then removes the run folder, so a dropped session leaves no result file.

Device pools: a profile with several ``hosts`` is one device made of identical boards.
A run takes the first free member (the member's lock decides; members are tried from a
random start and polled in turn while all are busy), a member that is down or refuses
is skipped with its reason, and the result records the member that ran it.

Safety: host keys are checked strictly against the profile's known_hosts file (an
unknown or changed key is refused, never added: fabric's default would add it); there
are no passwords (key file or agent); every remote argument is shell-quoted; every
remote path is checked to stay below the work dir.

Faults (unreachable host, timeout, dropped connection, runner crash, busy device) are
retried with exponential backoff up to the profile's ``retries``; then
:class:`DeviceFailure` says why. Faults that a retry cannot fix (host key,
authentication, a model the device's runtime cannot run) fail at once. A mistake in
the inputs (runner exit status 2) is a UserError.
"""
import json
import posixpath
import random
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
BUSY_EXIT_STATUS = 75  # device_runner.py: the device lock stayed busy for --lock-wait
POLL_S = 2.0  # how long a pool member is waited for while every member is busy


class DeviceFailure(Exception):
    """The device produced no result. ``retry``: whether trying again may help."""

    def __init__(self, reason, retry=True, attempts=()):
        super().__init__(reason)
        self.reason, self.retry, self.attempts = reason, retry, list(attempts)


class DeviceBusy(DeviceFailure):
    """Another runner held the member's device lock (retry: it will be free later)."""


class UnsupportedModel(DeviceFailure):
    """The device's runtime cannot run this model: the same on every member, no retry."""

    def __init__(self, reason):
        super().__init__(reason, retry=False)


def remote_path(workdir, *parts):
    """A path below ``workdir``; anything that would leave it is refused."""
    path = posixpath.normpath(posixpath.join(workdir, *parts))
    if not path.startswith(workdir.rstrip("/") + "/"):
        raise UserError(f"remote path {path!r} escapes the device work dir {workdir!r}")
    return path


def member_name(member):
    return f"{member['host']}:{member['port']}"


def connect(profile, member):
    """An open fabric Connection to one member, strict host-key checking against the profile's known_hosts."""
    known_hosts = Path(profile["known_hosts"]).expanduser()
    if not known_hosts.is_file():
        fix = "sudo scripts/virtual-board.sh up writes it" if profile.get("emulated") else \
            "ssh-keyscan the device into it"
        raise DeviceFailure(f"known_hosts file {known_hosts} not found ({fix})", retry=False)
    connect_kwargs = {"look_for_keys": False, "allow_agent": bool(profile["agent"]),
                      "banner_timeout": profile["connect_timeout_s"], "auth_timeout": profile["connect_timeout_s"]}
    if profile["key_file"]:
        connect_kwargs["key_filename"] = str(Path(profile["key_file"]).expanduser())
    conn = fabric.Connection(member["host"], user=profile["user"], port=member["port"],
                             connect_timeout=profile["connect_timeout_s"], connect_kwargs=connect_kwargs,
                             config=fabric.Config(overrides={"load_ssh_configs": False}))
    conn.client.load_host_keys(str(known_hosts))
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        conn.open()
    except Exception as err:
        conn.close()
        raise classify(err, profile, member) from None
    return conn


def classify(err, profile, member):
    """A DeviceFailure saying what went wrong and whether a retry may help."""
    where = f"{profile['user']}@{member_name(member)}"
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


def max_run_s(profile):
    """How long one runner may take on the device: waiting for the lock, then measuring."""
    return int(profile["lock_wait_s"] + profile["run_timeout_s"])


def deploy(conn, profile, files):
    """Upload ``files`` into the device's cache unless already there: {local path: remote path}, stats.

    Missing files go to temporary names first, are hashed on the device in one call, and
    only then renamed to their content address.
    """
    workdir, q = profile["workdir"], shlex.quote
    cache, runs = remote_path(workdir, "cache"), remote_path(workdir, "runs")
    # Leftovers of runs whose shell was killed too (a board reset): run folders and partial
    # uploads older than any run can last are dead, so they go (a live run is never that old).
    stale_min = max_run_s(profile) // 60 + 2
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


def runner_command(profile, argv, rundir, lock_wait):
    """The shell line that runs the runner in ``rundir`` and prints its result.

    The runner's stdin stays the SSH channel (its lifeline), its stdout goes to stderr, so
    stdout carries the result JSON alone, printed only after a clean exit. The run folder is
    removed by the same line, also when the session has gone: the shell outlives it, and
    ignores SIGPIPE so that reporting the runner's end to a closed channel cannot stop it.
    """
    q = shlex.quote
    lock = remote_path(profile["workdir"], "device.lock")
    runner = " ".join(q(str(a)) for a in [*argv, "--out", "result.json", "--lifeline", "--lock", lock,
                                          "--lock-wait", f"{lock_wait:g}"])
    return (f"trap '' PIPE; mkdir -p {q(rundir)} && cd {q(rundir)} && "
            f"timeout -k 10 {max_run_s(profile)} {runner} 1>&2; status=$?; "
            f"if [ $status -eq 0 ]; then cat result.json; fi; cd / && rm -rf {q(rundir)}; exit $status")


def run_once(profile, member, runner_args, files, lock_wait):
    """One attempt on one member: connect, deploy, run the runner, read its JSON."""
    t0 = time.perf_counter()
    conn = connect(profile, member)
    name = f"{profile['name']} ({member_name(member)})" if len(profile["members"]) > 1 else profile["name"]
    try:
        mapping, stats = deploy(conn, profile, [RUNNER, *files.values()])
        stats["deploy_s"] = time.perf_counter() - t0
        argv = [profile["python"], mapping[str(RUNNER)], *runner_args]
        for flag, local in files.items():
            argv += [flag, mapping[str(local)]]
        rundir = remote_path(profile["workdir"], "runs", uuid.uuid4().hex)
        t1 = time.perf_counter()
        run = conn.run(runner_command(profile, argv, rundir, lock_wait), hide=True, warn=True, in_stream=False,
                       timeout=max_run_s(profile) + 30)
        stats["run_s"] = time.perf_counter() - t1
    except (UserError, DeviceFailure):
        raise
    except Exception as err:
        raise classify(err, profile, member) from None
    finally:
        conn.close()
    if run.exited == 0:
        try:
            return json.loads(run.stdout), stats
        except ValueError:
            raise DeviceFailure(f"the result from {name} arrived incomplete") from None
    last = (run.stderr.strip().splitlines() or ["no error output"])[-1]
    last = last[len("error: "):] if last.startswith("error: ") else last
    if run.exited == 2:
        raise UserError(f"device_runner on {name} failed: {last}")
    if run.exited == 3:
        raise UnsupportedModel(f"the runtime on {name} cannot run the model: {last}")
    if run.exited == 4:  # the inventory lists a runtime the device's python cannot import
        raise DeviceFailure(f"{name}: {last} for {profile['python']}, but its inventory entry lists "
                            f"it in runtimes: install it there, or remove it from runtimes", retry=False)
    if run.exited == BUSY_EXIT_STATUS:
        raise DeviceBusy(f"{name}: {last}")
    if run.exited == 124:
        raise DeviceFailure(f"runner on {name} timed out after {max_run_s(profile)} s")
    if run.exited == -1:  # paramiko: the channel closed without an exit status
        raise DeviceFailure(f"connection to {name} dropped during the run")
    raise DeviceFailure(f"runner on {name} crashed (exit status {run.exited}): {last}")


def run_on_member(profile, runner_args, files):
    """One attempt on the device: on the first free member of a pool (the only host otherwise).

    A single host's runner waits up to ``lock_wait_s`` for its lock. A pool's members are
    tried from a random start (parallel jobs spread over the pool) without waiting; while
    all live ones are busy they are polled in turn, each for up to POLL_S, until
    ``lock_wait_s`` has passed. A member that is down or refuses is skipped (with its
    reason, in the result); a model the runtime cannot run fails at once (it would fail on
    every member).
    """
    members = profile["members"]
    start = random.randrange(len(members))
    pending = members[start:] + members[:start]
    deadline = time.monotonic() + profile["lock_wait_s"]
    skipped, first_pass = {}, True
    while pending:
        busy = []
        for member in pending:
            remaining = max(0.0, deadline - time.monotonic())
            lock_wait = remaining if len(members) == 1 else 0.0 if first_pass else min(POLL_S, remaining)
            try:
                result, stats = run_once(profile, member, runner_args, files, lock_wait)
            except (UnsupportedModel, UserError):
                raise
            except DeviceFailure as failure:
                if len(members) == 1:
                    raise
                skipped[member_name(member)] = failure
                if isinstance(failure, DeviceBusy):
                    busy.append(member)
                continue
            skipped.pop(member_name(member), None)  # busy before, free now
            return result, {**stats, "member": member_name(member),
                            "skipped": [{"member": m, "reason": f.reason} for m, f in skipped.items()]}
        pending = busy if time.monotonic() < deadline else []
        first_pass = False
    raise DeviceFailure(f"no member of pool {profile['name']} ran it: "
                        + "; ".join(f"{m}: {f.reason}" for m, f in skipped.items()),
                        retry=any(f.retry for f in skipped.values()))


def run_remote(profile, runner_args, files):
    """Run with retries: (the runner's result, deploy stats with the member and the attempts)."""
    attempts = []
    for attempt in range(profile["retries"] + 1):
        if attempt:
            time.sleep(profile["retry_backoff_s"] * 2 ** (attempt - 1))
        try:
            result, stats = run_on_member(profile, runner_args, files)
            stats["attempts"] = attempts + [{"attempt": attempt + 1, "status": "ok", "member": stats["member"]}]
            return result, stats
        except DeviceFailure as failure:
            attempts.append({"attempt": attempt + 1, "status": "failed", "reason": failure.reason})
            if not failure.retry:
                break
    raise DeviceFailure(attempts[-1]["reason"], retry=False, attempts=attempts)
