"""Remote runs are exclusive and leave nothing behind, against a real OpenSSH server on loopback.

The SSH session of a running benchmark is killed on the server (its sshd process, as a
dropped link or a crashed client leaves it), once with the listener still up and once with
it down: the attempt fails, the runner ends with its session (no orphan keeps measuring),
no result file stays on the device, and a retry runs alone. Two runs on one device never
measure at the same time (the device lock), and every file the runner writes stays below
the work dir.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

import sshd
from conftest import REPO
from test_remote import QUICK, inventory, tiny_model  # noqa: F401 (a fixture)
from workflow.inventory import load_inventory
from workflow.remote import DeviceFailure, run_remote

pytestmark = pytest.mark.skipif(not sshd.available(), reason="openssh-server not installed (scripts/ci-deps.sh)")


def measuring(seconds):
    return ["--warmup", "1", "--min-runs", "5", "--min-duration", str(seconds), "--threads", "1"]


def profile_of(tmp_path, entry, name="loopback"):
    return load_inventory(inventory(tmp_path / f"{name}.yaml", **{name: entry}))[name]


def processes_mentioning(*texts):
    """PIDs of the live processes whose command line contains every one of ``texts``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended meanwhile
            continue
        if all(text in line for text in texts):
            found.append(int(cmdline.parent.name))
    return [pid for pid in found if pid != os.getpid() and alive(pid)]


def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def parent_of(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1])


def wait_for(condition, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def measuring_runner(workdir):
    """The PID of the runner that holds ``workdir``'s device lock (it is timing the model)."""
    def holder():
        lock = Path(workdir) / "device.lock"
        text = lock.read_text() if lock.exists() else ""
        pids = processes_mentioning(f"{workdir}/cache", "--lifeline")
        return next((pid for pid in pids if f"runner pid {pid} " in text), None)

    return wait_for(holder, what=f"a runner holding {workdir}/device.lock")


def sshd_session_of(pid):
    """The sshd process that serves ``pid``'s SSH session (its nearest sshd ancestor)."""
    while pid > 1:
        pid = parent_of(pid)
        if Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd"):
            return pid
    raise AssertionError("no sshd ancestor")


def result_files(workdir):
    return sorted(str(p) for p in Path(workdir).rglob("*") if p.is_file() and "result" in p.name)


def drop_session_mid_run(server, profile, tiny_model, listener_up):
    """Run, kill the session's sshd while the runner measures; (outcome of run_remote, the runner's PID)."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_remote, profile, measuring(3), tiny_model)
        runner = measuring_runner(server.workdir)
        if not listener_up:
            server.stop_listener()
        os.kill(sshd_session_of(runner), signal.SIGKILL)
        try:
            return future.result(timeout=120), runner
        except DeviceFailure as failure:
            return failure, runner


@pytest.mark.slow
def test_dropped_session_ends_the_runner_and_the_retry_runs_alone(tmp_path, tiny_model):
    with sshd.LoopbackSshd(tmp_path / "sshd") as server:
        profile = profile_of(tmp_path, server.device(retries=1))
        (result, deploy), orphan = drop_session_mid_run(server, profile, tiny_model, listener_up=True)
        assert [a["status"] for a in deploy["attempts"]] == ["failed", "ok"]
        assert "dropped during the run" in deploy["attempts"][0]["reason"]
        assert not alive(orphan) and processes_mentioning(str(server.workdir)) == []
        # The retry measured alone: it took the lock at once, after the first runner had ended.
        assert result["status"] == "ok" and result["device_lock"]["waited_s"] < 1
        assert result_files(server.workdir) == [] and list((server.workdir / "runs").iterdir()) == []


@pytest.mark.slow
def test_dropped_session_with_the_listener_down_leaves_nothing_running(tmp_path, tiny_model):
    with sshd.LoopbackSshd(tmp_path / "sshd") as server:
        profile = profile_of(tmp_path, server.device(retries=1))
        failure, orphan = drop_session_mid_run(server, profile, tiny_model, listener_up=False)
        assert isinstance(failure, DeviceFailure), failure
        first, retry = (a["reason"] for a in failure.attempts)
        assert "dropped during the run" in first and retry.startswith("connection to ") and "failed" in retry
        wait_for(lambda: not alive(orphan), timeout=5, what="the orphaned runner to end")
        # The runner ended within a moment of its session: it neither finished nor wrote a result,
        # and the shell that started it removed the run folder.
        time.sleep(4)  # longer than the run would have lasted
        assert processes_mentioning(str(server.workdir)) == []
        assert result_files(server.workdir) == [] and list((server.workdir / "runs").iterdir()) == []


def test_two_runs_on_one_device_never_measure_at_once(tmp_path, tiny_model):
    with sshd.LoopbackSshd(tmp_path / "sshd") as server:
        profile = profile_of(tmp_path, server.device(retries=0))
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda _: run_remote(profile, measuring(1), tiny_model), range(2)))
    held = sorted((datetime.fromisoformat(r["device_lock"]["held_from_utc"]),
                   datetime.fromisoformat(r["device_lock"]["held_until_utc"])) for r, _ in runs)
    assert held[0][1] < held[1][0], held  # one after the other
    assert max(r["device_lock"]["waited_s"] for r, _ in runs) > 0.5  # the second one waited for the first


@pytest.mark.slow
def test_a_device_busy_for_longer_than_lock_wait_fails_and_is_retried(tmp_path, tiny_model):
    """Another runner (e.g. another project's benchmark) holds the board: this run waits lock_wait_s, then
    the attempt fails as busy and is retried after the backoff."""
    with sshd.LoopbackSshd(tmp_path / "sshd") as server:
        slow = profile_of(tmp_path, server.device(retries=0), "slow")
        quick = profile_of(tmp_path, server.device(retries=1, lock_wait_s=0.5, retry_backoff_s=0.2), "quick")
        with ThreadPoolExecutor(1) as pool:
            holder = pool.submit(run_remote, slow, measuring(6), tiny_model)
            measuring_runner(server.workdir)
            with pytest.raises(DeviceFailure) as failure:
                run_remote(quick, QUICK, tiny_model)
            holder.result(timeout=60)
    assert [a["status"] for a in failure.value.attempts] == ["failed", "failed"]
    assert all("device busy" in a["reason"] and "is held by runner pid" in a["reason"]
               for a in failure.value.attempts), failure.value.attempts


def test_every_runner_file_stays_below_the_work_dir(tmp_path, tiny_model):
    """perf's output and any temporary file go to the run folder, not to the board's /tmp (TMPDIR here)."""
    if not shutil.which("perf"):
        pytest.skip("linux-perf not installed (scripts/ci-deps.sh): the runner makes no perf folder without it")
    board_tmp = tmp_path / "board-tmp"
    board_tmp.mkdir()
    python = tmp_path / "python"  # the board's python, started with TMPDIR pointing at its /tmp
    python.write_text(f'#!/bin/sh\nTMPDIR={board_tmp} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    with sshd.LoopbackSshd(tmp_path / "sshd") as server:
        profile = profile_of(tmp_path, server.device(python=str(python)))
        result, _ = run_remote(profile, [*QUICK, "--perf"], tiny_model)
        assert "perf not found" not in result["perf"].get("reason", "")
        assert list(board_tmp.iterdir()) == []
        assert sorted(p.name for p in server.workdir.iterdir()) == ["cache", "device.lock", "runs"]


@pytest.mark.slow
def test_local_runner_ends_with_the_stage_that_started_it(tmp_path, tiny_model):
    """The same lifeline for `local`: a benchmark stage killed mid-run takes its runner with it."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path\n"
            "from workflow.benchmark import run_on_device\n"
            "run_on_device('local', ['--min-duration', '30'], {'--model': Path(sys.argv[2]), "
            "'--inputs': Path(sys.argv[3])}, sys.argv[4])\n")
    stage = subprocess.Popen([sys.executable, "-c", code, str(REPO), str(tiny_model["--model"]),
                              str(tiny_model["--inputs"]), str(tmp_path)])
    runner = wait_for(lambda: next(iter(processes_mentioning(f"--out {tmp_path}/runner.json")), None),
                      what="the local runner")
    time.sleep(1)
    stage.kill()
    stage.wait()
    wait_for(lambda: not alive(runner), timeout=5, what="the local runner to end")
    assert not (tmp_path / "runner.json").exists()
