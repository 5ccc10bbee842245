"""Rerunning only the failed rows once the cause is fixed (./run.sh --retry-failed), end to end.

A project benchmarks four ONNX artifacts of one model on a remote device whose
known_hosts file lacks the board's key (and one on `local`): the remote rows fail (status failed, exit 0)
and Snakemake then has "Nothing to be done", as the issue reported. After the key is
added, `./run.sh --retry-failed` reruns exactly those four jobs; the local results, the
model and the artifacts are not touched. The remote device is a pool of two sshd boards
in network namespaces where this machine allows it (else one loopback sshd): Snakemake
gives the pool 2 slots, so the retried jobs run two at a time, never two on one board
(tests/test_device_pools.py shows the boards measuring in parallel).
"""
import json
import re
import sys

import pytest
import yaml

import sshd
from conftest import CIFAR_NPZ, REPO, copy_project, sh, tiny_params, write_params
from test_device_pools import board_pool, held, overlap  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sshd.available(), reason="openssh-server not installed (scripts/ci-deps.sh)")]

ARTIFACTS = {
    "onnx-fp32": {},
    "onnx-int8-dynamic": {"quantize": {"method": "dynamic", "per_channel": True, "weight_type": "quint8"}},
    "onnx-int8-static": {"quantize": {"method": "static", "format": "qdq", "calibration": "minmax"}},
    "onnx-int8-static-pt": {"quantize": {"method": "static", "format": "qdq", "per_channel": False}},
}


def bench(device, artifact):
    return f"results/bench/{device}/mobilenetv2-rgb/{artifact}.json"


@pytest.fixture
def farm(request, tmp_path):
    """(inventory entry of device `farm`, its boards' known_hosts lines, pool size)."""
    if sshd.namespaces_available():
        servers, devices = request.getfixturevalue("board_pool")
        entry = yaml.safe_load(devices.read_text())["devices"]["farm"]
        yield entry, "".join(s.known_hosts.read_text() for s in servers), len(servers)
        return
    with sshd.LoopbackSshd(tmp_path / "sshd") as server:
        yield server.device(), server.known_hosts.read_text(), 1


def project_with(tmp_path, entry):
    project = copy_project(tmp_path / "project")
    (project / ".venv").symlink_to(REPO / ".venv")
    (project / "scripts" / "setup.sh").write_text("exit 0  # the test's venv is the repository's\n")
    known_hosts = project / "config" / "known_hosts"
    known_hosts.write_text("")  # the mistake: the boards were never ssh-keyscanned into it
    (project / "config" / "devices.yaml").write_text(yaml.safe_dump(
        {"devices": {"farm": {**entry, "known_hosts": str(known_hosts), "retries": 0}}}))
    params = tiny_params(targets=["onnx"])
    params["models"] = {"mobilenetv2-rgb": params["models"]["mobilenetv2-rgb"]}
    params["artifacts"] = ARTIFACTS
    params["data"].update(path=str(CIFAR_NPZ))
    params["benchmark"].update(devices=["local", "farm"], min_duration_s=1.0, stream_workers=[], threads=[1])
    params["benchmark"]["pipeline"]["enabled"] = False
    write_params(project / "params.yaml", params)
    return project, known_hosts


def test_retry_failed_reruns_only_the_failed_rows(tmp_path, farm):
    entry, keys, slots = farm
    project, known_hosts = project_with(tmp_path, entry)
    targets = [bench("local", "onnx-fp32"), *(bench("farm", artifact) for artifact in ARTIFACTS)]
    sh(project, "./run.sh", *targets, timeout=1800)
    results = {t: json.loads((project / t).read_text()) for t in targets}
    assert results[bench("local", "onnx-fp32")]["status"] == "ok"
    assert all(results[bench("farm", a)]["status"] == "failed" and "refusing an unknown host key" in
               results[bench("farm", a)]["reason"] for a in ARTIFACTS)
    assert "Nothing to be done" in sh(project, sys.executable, "-m", "snakemake", "-n", *targets).stdout

    listed = sh(project, sys.executable, "-m", "workflow.failed")
    assert sorted(listed.stdout.split()) == sorted(bench("farm", a) for a in ARTIFACTS)
    assert listed.stderr.count("refusing an unknown host key") == 4
    dvc_stages = sh(project, sys.executable, "-m", "workflow.failed", "--dvc").stdout.split()
    assert sorted(dvc_stages) == sorted(f"benchmark-farm-mobilenetv2-rgb-{a}" for a in ARTIFACTS)

    known_hosts.write_text(keys)  # the fix
    untouched = [bench("local", "onnx-fp32"), "results/models/mobilenetv2-rgb/model.pt",
                 *(f"results/artifacts/mobilenetv2-rgb/{a}.onnx" for a in ARTIFACTS)]
    before = {path: (project / path).stat().st_mtime_ns for path in untouched}
    out = sh(project, "./run.sh", "--retry-failed", *targets, timeout=1800)
    assert {path: (project / path).stat().st_mtime_ns for path in untouched} == before
    log = out.stdout + out.stderr
    assert len(re.findall(r"^(?:local)?rule benchmark:", log, re.M)) == 4
    assert most_at_once(log, "benchmark") == slots  # Snakemake's resource device_farm: one slot per board
    retried = [json.loads((project / bench("farm", a)).read_text()) for a in ARTIFACTS]
    assert all(r["status"] == "ok" and r["deploy"]["attempts"][-1]["status"] == "ok" for r in retried)
    assert sh(project, sys.executable, "-m", "workflow.failed").stdout == ""

    by_member = {}
    for r in retried:
        by_member.setdefault(r["deploy"]["member"], []).append(held(r))
    assert len(by_member) == slots
    for intervals in by_member.values():  # never two at once on one board
        assert not any(overlap(a, b) for i, a in enumerate(intervals) for b in intervals[i + 1:]), by_member


def most_at_once(log, rule):
    """The most jobs of ``rule`` that Snakemake's log shows running at the same time."""
    running, most, jobs = 0, 0, set()
    for block in re.split(r"\n(?=\[[^\]]+\]\n)", log):
        started = re.search(rf"^(?:local)?rule {rule}:\n(?:.*\n)*?\s+jobid: (\d+)", block, re.M)
        if started:
            jobs.add(started.group(1))
            running += 1
        running -= sum(j in jobs for j in re.findall(r"^Finished jobid: (\d+)", block, re.M))
        most = max(most, running)
    return most
