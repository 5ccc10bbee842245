"""Hostile YAML: params.yaml, overlays and the inventory are parsed with bounds.

Crafted files (a YAML bomb of nested anchors, a 50 MB file, a 200 kB path, deep nesting,
a recursive alias, NaN, a 5000-digit integer, thousands of unknown keys) go through the
real entry points. Each must give one error line naming the file (exit status 2), with
at most a short excerpt of the value, inside a 1 GiB address-space limit (the bomb alone
needs gigabytes when it is expanded). bench/hostile_params.py times each case.
"""
import resource
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO, assert_one_line_error, tiny_params, write_params
from workflow.config import load_params
from workflow.schema import MAX_YAML_DEPTH, excerpt, read_yaml
from workflow.errors import UserError
from workflow.inventory import load_inventory

LIMIT_AS = 1 << 30
MAX_LINE = 400  # an error line: the file name, the key, a short excerpt and what is expected


def bomb(levels=10, width=9):
    """YAML whose expansion has width**levels leaves, in about 1 kB."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def params_text(**replace):
    """The tiny test params as YAML text, with top-level lines appended (later keys win in PyYAML)."""
    return yaml.safe_dump(tiny_params(), sort_keys=False) + "".join(f"{k}: {v}\n" for k, v in replace.items())


def limited(command, cwd=REPO):
    """Run ``command`` under a 1 GiB address-space limit, as a user's shell would."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))

    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, preexec_fn=limit,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"})


def pack_stage(params):
    return limited([sys.executable, "-m", "workflow.pack", "--params", str(params), "--split", "eval", "--format", "rgb",
                    "--out", str(params.parent / "packed")])


HOSTILE = {
    # name: (params.yaml text, fragment of the error line)
    "bomb": (lambda: params_text() + bomb(), "expands to more than 100000 nodes"),
    "deep": (lambda: params_text() + "deep: " + "[" * 10000 + "]" * 10000 + "\n", "nested deeper than 64 levels"),
    "recursive": (lambda: params_text() + "loop: &loop [*loop]\n", "an alias refers to a node that contains it"),
    "nan": (lambda: params_text().replace("min_duration_s: 0.0", "min_duration_s: .nan"), "NaN"),
    "long_int": (lambda: params_text(seed="9" * 5000), "an integer with too many digits"),
    "big_file": (lambda: params_text() + "#" + "x" * (50 << 20) + "\n", "larger than 256 KiB"),
    "long_path": (lambda: params_text().replace(f"path: {REPO}", "path: " + "/a" * 100_000),
                  "key 'data.path': got \"/a/a/a"),
    "unknown_keys": (lambda: params_text() + "".join(f"junk_{i}: 1\n" for i in range(5000)),
                     "unknown key(s) 'junk_0', 'junk_1', 'junk_2', 'junk_3', 'junk_4', ... in the top level"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_params_give_one_short_line_within_bounded_memory(tmp_path, case):
    make, fragment = HOSTILE[case]
    params = tmp_path / "params.yaml"
    params.write_text(make())
    result = pack_stage(params)
    assert_one_line_error(result, str(params), fragment)
    assert len(result.stderr) < MAX_LINE, result.stderr[:MAX_LINE]
    assert not (tmp_path / "packed").exists()


def test_long_path_error_names_the_limit(tmp_path):
    params = tiny_params(data={"path": "/" + "p" * 150_000})
    with pytest.raises(UserError, match=r"'data.path': got \"/p+\.\.\., expected maxLength 4096 "
                                        r"\(got 150001 characters\)") as err:
        load_params(write_params(tmp_path / "params.yaml", params))
    assert len(str(err.value)) < MAX_LINE


def test_snakemake_rejects_a_bomb_with_one_line_and_starts_nothing(tmp_path):
    from test_dag_parity import workdir_with

    workdir = workdir_with(tmp_path, tiny_params())
    (workdir / "params.yaml").write_text(params_text() + bomb())
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], cwd=workdir,
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output and "MemoryError" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "expands to more than 100000 nodes" in errors[0], output[-2000:]
    assert "Job stats" not in output


def test_overlay_bomb_leaves_params_untouched(tmp_path):
    params = write_params(tmp_path / "params.yaml", tiny_params())
    before = params.read_text()
    overlay = tmp_path / "small.yaml"
    overlay.write_text("train.epochs: 2\n" + bomb())
    result = limited([sys.executable, "-m", "workflow.set_params", "--params", str(params), "--file", str(overlay)])
    assert_one_line_error(result, str(overlay), "expands to more than")
    assert params.read_text() == before


def test_command_line_value_bomb_is_refused(tmp_path):
    params = write_params(tmp_path / "params.yaml", tiny_params())
    before = params.read_text()
    value = "{" + ", ".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else 'x'}]" for i in range(11)) + "}"
    result = limited([sys.executable, "-m", "workflow.set_params", "--params", str(params), f"data.path={value}"])
    assert_one_line_error(result, "the value of data.path", "expands to more than")
    assert params.read_text() == before


@pytest.mark.parametrize("case, devices, fragment", [
    ("bomb", bomb().replace("\n", "\n  ").join(["devices:\n  ", "x: 1\n"]), "expands to more than"),
    ("long_host", yaml.safe_dump({"devices": {"rpi": {
        "host": "h" * 300_000, "user": "pi", "agent": True, "known_hosts": "k", "workdir": "/w"}}}),
     "larger than 256 KiB"),
    ("long_user", yaml.safe_dump({"devices": {"rpi": {
        "host": "h", "user": "u" * 100_000, "agent": True, "known_hosts": "k", "workdir": "/w"}}}),
     "'devices.rpi.user': got \"uuuu"),
    ("bad_member", yaml.safe_dump({"devices": {"rpi": {
        "hosts": ["ok", "h; " + "x" * 50_000], "user": "pi", "agent": True, "known_hosts": "k", "workdir": "/w"}}}),
     "'devices.rpi.hosts.1'"),
])
def test_hostile_inventory_gives_one_short_line(tmp_path, case, devices, fragment):
    path = tmp_path / "devices.yaml"
    path.write_text(devices)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        load_inventory(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and fragment in message, message[:MAX_LINE]
    assert len(message) < MAX_LINE, message[:MAX_LINE]
    assert time.monotonic() - start < 30  # a hang guard, not a speed claim (bench/hostile_params.py times it)


def test_a_huge_file_is_never_read_whole(tmp_path):
    """A 4 GiB sparse file (or /dev/zero) is refused after reading 256 KiB."""
    huge = tmp_path / "params.yaml"
    with open(huge, "wb") as f:
        f.truncate(4 << 30)
    for path in (huge, "/dev/zero"):
        with pytest.raises(UserError, match="larger than 256 KiB"):
            read_yaml(path, "missing", "sections")


def test_legitimate_anchors_and_depth_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    nested = "[" * (MAX_YAML_DEPTH - 2) + "1" + "]" * (MAX_YAML_DEPTH - 2)
    path.write_text(f"base: &base {{a: 1, b: [1, 2]}}\nfirst: *base\nsecond: *base\ndeep: {nested}\n")
    doc = read_yaml(path, "missing", "sections")
    assert doc["first"] == doc["second"] == {"a": 1, "b": [1, 2]}
    for paper in (REPO / "config" / "papers").glob("*/mapping.yaml"):  # the shipped files use anchors
        read_yaml(paper, "missing", "tables")


def test_excerpt_is_short_and_cheap_for_any_value():
    shared = ["x"]
    for _ in range(40):  # 2**40 leaves when expanded
        shared = [shared, shared]
    values = [shared, "y" * 10_000_000, {f"k{i}": i for i in range(100_000)}, list(range(1_000_000)), 10 ** 4000]
    start = time.monotonic()
    for value in values:
        assert len(excerpt(value)) <= 60
    assert time.monotonic() - start < 5  # a hang guard: expanding `shared` would never finish
    assert excerpt("cifar100") == '"cifar100"' and excerpt([1, 2]) == "[1, 2]"
    assert excerpt({"a": [1, {"b": 2}]}) == '{"a": [1, {"b": 2}]}'
