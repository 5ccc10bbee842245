"""Device pools: one inventory entry, several identical boards; each benchmark runs on a free one.

The pool test starts two real OpenSSH servers, each in a network namespace of its own with
a private mount at the shared work-dir path (two boards, two disks), and benchmarks four
artifacts at once on the 2-member pool: every run finishes, both members are used, runs on
one member never overlap (its device lock), runs on different members do, and each result
names its member. A member that is down is skipped with its reason.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import numpy as np
import pytest
import torch
import yaml

import sshd
from test_inventory import GOOD, write
from test_remote import inventory
from test_remote_integrity import measuring, processes_mentioning
from test_runner import TwoInputs, export
from workflow.benchmark import run_on_device
from workflow.errors import UserError
from workflow.inventory import device_slots, load_inventory
from workflow.remote import DeviceFailure

POOL = {**{k: v for k, v in GOOD.items() if k != "host"}, "hosts": ["10.0.0.1", {"host": "10.0.0.2", "port": 2222}]}


def test_a_pool_entry_lists_its_members(write_pool):
    devices = load_inventory(write_pool(POOL))
    assert devices["farm"]["members"] == [{"host": "10.0.0.1", "port": 22}, {"host": "10.0.0.2", "port": 2222}]
    assert devices["farm"]["lock_wait_s"] == devices["farm"]["run_timeout_s"]  # the default


@pytest.fixture
def write_pool(tmp_path):
    return lambda entry: write(tmp_path, {"farm": entry})


@pytest.mark.parametrize("entry, fragment", [
    ({**POOL, "host": "10.0.0.3"}, "set host (one board) or hosts (a pool of identical boards), not both"),
    ({k: v for k, v in POOL.items() if k != "hosts"}, "not neither"),
    ({**POOL, "hosts": []}, "'devices.farm.hosts'"),
    ({**POOL, "hosts": ["10.0.0.1", "10.0.0.1"]}, "a member is listed twice"),
    ({**POOL, "hosts": ["10.0.0.1", {"host": "10.0.0.1", "port": 22}]}, "a member is listed twice"),
    ({**POOL, "hosts": ["h; reboot"]}, "'devices.farm.hosts.0"),
    ({**POOL, "hosts": [{"host": "h", "port": 0}]}, "'devices.farm.hosts.0"),
    ({**POOL, "hosts": [{"host": "h", "user": "root"}]}, "'devices.farm.hosts.0"),
])
def test_bad_pools_are_one_line_errors(write_pool, entry, fragment):
    with pytest.raises(UserError) as err:
        load_inventory(write_pool(entry))
    assert "\n" not in str(err.value) and fragment in str(err.value), str(err.value)


def test_the_pool_size_is_the_devices_snakemake_resource(write_pool):
    """The Snakefile gives resource device_<name> this capacity (tests/test_retry_failed.py runs it)."""
    path = write_pool(POOL)
    assert device_slots("farm", path) == 2 and device_slots("local", path) == 1
    path.write_text(yaml.safe_dump({"devices": {"farm": GOOD}}))
    assert device_slots("farm", path) == 1


def models(folder, count):
    """``count`` distinct small ONNX models (different weights, so different files) and their samples."""
    files = []
    for seed in range(count):
        torch.manual_seed(seed)
        files.append(export(TwoInputs(), (torch.zeros(1, 1, 32, 32), torch.zeros(1, 2, 16, 16)),
                            folder / f"m{seed}.onnx", ["y", "uv"]))
    rng = np.random.default_rng(0)
    samples = folder / "samples.npz"
    np.savez(samples, y=rng.uniform(0, 255, (2, 1, 32, 32)).astype(np.float32),
             uv=rng.uniform(0, 255, (2, 2, 16, 16)).astype(np.float32))
    return [{"--model": f, "--inputs": samples} for f in files]


@pytest.mark.skipif(not sshd.available(), reason="openssh-server not installed (scripts/ci-deps.sh)")
def test_a_member_that_is_down_is_skipped_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setattr("workflow.remote.random.randrange", lambda n: 0)  # try the dead member first
    (files,) = models(tmp_path, 1)
    with sshd.LoopbackSshd(tmp_path / "sshd") as server:
        entry = server.device(retries=0)
        down = {"host": "127.0.0.1", "port": sshd.free_port()}
        entry["hosts"] = [down, {"host": "127.0.0.1", "port": entry.pop("port")}]
        del entry["host"]
        devices = inventory(tmp_path / "devices.yaml", farm=entry)
        result, deploy = run_on_device("farm", measuring(0), files, tmp_path, devices)
        assert result["status"] == "ok" and deploy["member"] == f"127.0.0.1:{server.port}"
        (skipped,) = deploy["skipped"]
        assert skipped["member"] == f"127.0.0.1:{down['port']}" and "failed" in skipped["reason"]
        server.stop_listener()  # now every member is down: one failure that names each
        with pytest.raises(DeviceFailure, match=rf"no member of pool farm ran it: 127.0.0.1:{down['port']}: "
                                                rf"connection .*; 127.0.0.1:{server.port}: connection"):
            run_on_device("farm", measuring(0), files, tmp_path, devices)


def held(result):
    lock = result["device_lock"]
    return datetime.fromisoformat(lock["held_from_utc"]), datetime.fromisoformat(lock["held_until_utc"])


def overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


@pytest.fixture
def board_pool(tmp_path):
    """Two boards in network namespaces integ-<pid>a / -b (10.231.x.2), one client key, one known_hosts."""
    if not sshd.available() or not sshd.namespaces_available():
        pytest.skip("needs openssh-server, iproute2 and root (network namespaces): scripts/ci-deps.sh")
    tag = os.getpid() % 100000
    client_key = sshd.keygen(tmp_path / "client_ed25519")
    mount_point = tmp_path / "board"  # the same path on every board, each with its own disk behind it
    servers = [sshd.NamespaceSshd(tmp_path / f"sshd-{m}", f"{tag}{m}", subnet, tmp_path / f"disk-{m}", mount_point,
                                  client_key) for m, subnet in zip("ab", sshd.free_subnets(2))]
    with servers[0], servers[1]:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text("".join(s.known_hosts.read_text() for s in servers))
        entry = servers[0].device(known_hosts=str(known_hosts), retries=1)
        del entry["host"]
        entry["hosts"] = [s.address for s in servers]
        yield servers, inventory(tmp_path / "devices.yaml", farm=entry)


@pytest.mark.slow
def test_four_artifacts_on_a_two_board_pool_run_in_parallel_without_overlap(tmp_path, board_pool):
    servers, devices = board_pool
    jobs = models(tmp_path, 4)
    with ThreadPoolExecutor(4) as pool:  # more jobs than boards: the locks decide who waits
        runs = list(pool.map(lambda files: run_on_device("farm", [*measuring(1), "--device-name", "farm"], files,
                                                         tmp_path, devices), jobs))
    assert all(r["status"] == "ok" and r["device_name"] == "farm" for r, _ in runs)
    by_member = {}
    for result, deploy in runs:
        by_member.setdefault(deploy["member"], []).append(held(result))
    timeline = sorted((a.time().isoformat(), b.time().isoformat(), m) for m, held_ in by_member.items()
                      for a, b in held_)
    assert sorted(by_member) == sorted(f"{s.address}:22" for s in servers), timeline  # both boards worked
    for member, intervals in by_member.items():  # never two at once on one board
        assert not any(overlap(a, b) for i, a in enumerate(intervals) for b in intervals[i + 1:]), timeline
    (first, second) = by_member.values()
    assert any(overlap(a, b) for a in first for b in second), timeline  # the boards did run at the same time
    for server in servers:  # each board's own disk got the runner, its lock and no leftovers
        assert (server.disk_workdir / "device.lock").exists() and list((server.disk_workdir / "runs").iterdir()) == []
        assert processes_mentioning(str(server.workdir)) == []
