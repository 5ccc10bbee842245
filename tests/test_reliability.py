"""Reliability under bad input: mutated params.yaml files generated from the schema, corrupt files.

The mutations are derived from workflow/schemas/params.schema.yaml and the shipped
params.yaml (so sections added later are fuzzed too): a wrong type for every leaf, a value
just outside every bound, an unknown key in every section, every required key removed, bad
device lists. Each must give a one-line error naming the key; through `snakemake -n` and a
stage's entry point no job starts and nothing is written.
"""
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import (DELETE, REPO, apply_mutation, assert_one_line_error, base_params, run_module, tiny_params,
                      write_params)
from workflow.config import SCHEMA_PATH, validate
from workflow.errors import UserError

SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())


def wrong_type(schema, value):
    if "enum" in schema:
        return "not-an-option"
    kind = schema.get("type")
    if isinstance(kind, list):  # e.g. [string, "null"]: a type outside the list
        kind = next(k for k in kind if k != "null")
    if kind == "boolean":
        return "maybe"
    if kind in ("integer", "number"):
        return "not-a-number"
    if kind == "string":
        return 12345
    if kind == "array":
        return "not-a-list"
    if kind == "object":
        return ["not", "a", "mapping"]
    if isinstance(kind, list):  # e.g. [string, "null"]: a value of none of the types
        for candidate, types in ((["not-a-scalar"], {"array"}), (12345, {"integer", "number"}), (True, {"boolean"})):
            if not types & set(kind):
                return candidate
    return None


def out_of_range(schema):
    """Values just outside each bound the schema declares."""
    step = 1 if schema.get("type") == "integer" else 0.5
    values = []
    if "minimum" in schema:
        values.append(schema["minimum"] - step)
    if "exclusiveMinimum" in schema:
        values.append(schema["exclusiveMinimum"])
    if "maximum" in schema:
        values.append(schema["maximum"] + step)
    if "exclusiveMaximum" in schema:
        values.append(schema["exclusiveMaximum"])
    if schema.get("type") == "array" and "minItems" in schema:
        values.append([])
    if schema.get("type") == "array" and "items" in schema and "minimum" in schema["items"]:
        values.append([schema["items"]["minimum"] - 1])
    return values


def generate(schema, value, path=()):
    """Yield (path, new value or DELETE, the key the error must name, or a tuple of acceptable keys)."""
    props = schema.get("properties")
    if schema.get("type") == "object" and (props or isinstance(schema.get("additionalProperties"), dict)):
        if schema.get("additionalProperties") is False:
            # the unknown key itself, or the section when it caps its number of keys (artifacts.<name>)
            yield path + ("unknown_key_x",), 1, ("unknown_key_x", ".".join(path) or "unknown_key_x")
        for key in schema.get("required", []):
            yield path + (key,), DELETE, key
        for key, child in value.items():
            child_schema = (props or {}).get(key) or schema.get("additionalProperties")
            if isinstance(child_schema, dict):
                yield from generate(child_schema, child, path + (key,))
        return
    dotted = ".".join(path)
    yield path, wrong_type(schema, value), dotted
    for bad in out_of_range(schema):
        yield path, bad, dotted


def device_mutations():
    devices = ("benchmark", "devices")
    return [(devices, ["local", "local"], "benchmark.devices"), (devices, ["Bad Name"], "benchmark.devices.0"),
            (devices, ["nosuchboard"], "benchmark.devices.0"), (devices, "local", "benchmark.devices"),
            (devices, [""], "benchmark.devices.0"), (devices, ["local", 7], "benchmark.devices.1")]


BASE = base_params()
MUTATIONS = list(generate(SCHEMA, BASE)) + device_mutations()


def test_enough_mutations_of_every_kind():
    assert len(MUTATIONS) >= 20
    kinds = {"delete": sum(v is DELETE for _, v, _ in MUTATIONS),
             "unknown": sum(p[-1] == "unknown_key_x" for p, _, _ in MUTATIONS),
             "type": sum(isinstance(v, str) and v.startswith("not-") for _, v, _ in MUTATIONS)}
    assert min(kinds.values()) >= 5, kinds
    assert {p[0] for p, _, _ in MUTATIONS} >= {"seed", "data", "models", "train", "export", "evaluate", "benchmark"}


@pytest.mark.parametrize("path, value, key", MUTATIONS,
                         ids=[f"{'.'.join(p)}={'DELETE' if v is DELETE else str(v)[:20]}" for p, v, _ in MUTATIONS])
def test_mutation_gives_one_line_error_naming_the_key(tmp_path, path, value, key):
    mutated = apply_mutation(BASE, path, value)
    with pytest.raises(UserError) as err:
        validate(mutated)
    message = str(err.value)
    assert "\n" not in message and message.startswith("params.yaml: "), message
    keys = key if isinstance(key, tuple) else (key,)
    assert any(k in message for k in keys), (key, message)


def workdir_with(tmp_path, params):
    for item in ("Snakefile", "rules", "workflow", "profiles", "config"):
        (tmp_path / item).symlink_to(REPO / item)
    write_params(tmp_path / "params.yaml", params)
    return tmp_path


@pytest.mark.parametrize("index", [0, 7, 19, len(MUTATIONS) - 1])
def test_snakemake_starts_no_job_on_a_mutated_file(tmp_path, index):
    path, value, key = MUTATIONS[index]
    workdir = workdir_with(tmp_path, apply_mutation(base_params(), path, value))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], cwd=workdir,
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    keys = key if isinstance(key, tuple) else (key,)
    assert len(errors) == 1 and any(k in errors[0] for k in keys), output
    assert "Job stats" not in output and not (workdir / "results").exists() and not (workdir / "data").exists()


def test_stage_entry_point_rejects_a_mutated_file_before_work(tmp_path):
    path, value, key = next(m for m in MUTATIONS if m[0] == ("data", "train_subset") and m[1] == "not-a-number")
    assert key == "data.train_subset"
    params = write_params(tmp_path / "params.yaml", apply_mutation(tiny_params(), path, value))
    result = run_module("pack", "--params", params, "--split", "eval", "--format", "rgb", "--out", tmp_path / "packed")
    assert_one_line_error(result, key)
    assert not (tmp_path / "packed").exists()


# ----------------------------------------------------------------------------- corrupt files
def test_corrupt_packed_dataset_is_named_by_train(tmp_path, packed_dir):
    data = tmp_path / "packed"
    shutil.copytree(packed_dir, data, ignore=shutil.ignore_patterns("*.yaml"))
    bad = data / "train" / "images.npy"
    blob = bytearray(bad.read_bytes())
    blob[len(blob) // 2:len(blob) // 2 + 64] = bytes(64)
    bad.write_bytes(bytes(blob))
    params = write_params(tmp_path / "params.yaml", tiny_params())
    result = run_module("train", "--params", params, "--model", "mobilenetv2-rgb", "--data", data,
                        "--out", tmp_path / "m", "--checkpoints", tmp_path / "ck")
    assert_one_line_error(result, str(bad), "checksum mismatch")
    assert not (tmp_path / "m" / "train_metrics.json").exists()


def test_truncated_packed_dataset_is_named_by_evaluate(tmp_path, packed_dir):
    data = tmp_path / "packed"
    shutil.copytree(packed_dir, data, ignore=shutil.ignore_patterns("*.yaml"))
    bad = data / "rgb" / "test.npy"
    bad.write_bytes(bad.read_bytes()[:100])
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not an onnx model")
    params = write_params(tmp_path / "params.yaml", tiny_params())
    result = run_module("evaluate", "--params", params, "--artifact", model, "--packed", bad,
                        "--manifest", data / "rgb" / "manifest.json", "--out", tmp_path / "e.json")
    assert_one_line_error(result)
    assert str(model) in result.stderr or str(bad) in result.stderr
    assert not (tmp_path / "e.json").exists()


def test_corrupt_onnx_file_is_named_by_benchmark(tmp_path, packed_dir):
    model = tmp_path / "onnx-fp32.onnx"
    model.write_bytes(np.random.default_rng(0).bytes(2048))
    params = write_params(tmp_path / "params.yaml", tiny_params())
    result = run_module("benchmark", "--params", params, "--device", "local", "--model-name", "mobilenetv2-rgb",
                        "--artifact", model, "--packed", packed_dir / "rgb" / "test.npy",
                        "--manifest", packed_dir / "rgb" / "manifest.json", "--out", tmp_path / "b.json")
    assert_one_line_error(result, str(model))
    assert not (tmp_path / "b.json").exists()
