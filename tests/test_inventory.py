"""config/devices.yaml: schema, names, paths and the params lookup."""
import pytest
import yaml

from conftest import REPO, tiny_params
from workflow.config import validate
from workflow.errors import UserError
from workflow.inventory import device_profile, load_inventory
from workflow.remote import remote_path

GOOD = {"host": "192.168.1.50", "user": "pi", "key_file": "~/.ssh/id_ed25519", "known_hosts": "config/known_hosts",
        "workdir": "/home/pi/edge-bench"}


def write(tmp_path, devices):
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}))
    return path


def test_shipped_inventory_is_valid_and_its_examples_are_too(tmp_path):
    # Only the virtual board (scripts/virtual-board.sh) is live; the real boards are commented examples.
    shipped = load_inventory(REPO / "config" / "devices.yaml")
    assert set(shipped) == {"virtual-a53", "virtual-a72", "virtual-a53-tflite"}
    assert all(p["emulated"] for p in shipped.values()) and shipped["virtual-a53-tflite"]["runtimes"] == ["litert"]
    text = (REPO / "config" / "devices.yaml").read_text()
    uncommented = "\n".join("  " + line[4:] if line.startswith("  # ") else line for line in text.splitlines())
    devices = load_inventory(write(tmp_path, yaml.safe_load(uncommented)["devices"]))
    assert set(devices) - set(shipped) == {"rpi-cm4-hailo8", "imx8mp", "coral-dev"}
    assert not any(devices[name]["emulated"] for name in ("rpi-cm4-hailo8", "imx8mp", "coral-dev"))
    assert devices["rpi-cm4-hailo8"]["runtimes"] == ["onnxruntime", "litert", "hailort"]
    assert devices["coral-dev"]["cpus"] == [3] and devices["imx8mp"]["port"] == 22  # defaults filled in


@pytest.mark.parametrize("name, entry, fragment", [
    ("rpi;reboot", GOOD, "devices"),
    ("rpi", {**GOOD, "host": "h; rm -rf /"}, "'devices.rpi.host'"),
    ("rpi", {**GOOD, "host": "$(reboot)"}, "'devices.rpi.host'"),
    ("rpi", {**GOOD, "user": "pi`id`"}, "'devices.rpi.user'"),
    ("rpi", {**GOOD, "workdir": "/home/pi/../../etc"}, "'devices.rpi.workdir'"),
    ("rpi", {**GOOD, "workdir": "relative/dir"}, "'devices.rpi.workdir'"),
    ("rpi", {**GOOD, "workdir": "/"}, "'devices.rpi.workdir'"),
    ("rpi", {**GOOD, "workdir": "/home/pi bench"}, "'devices.rpi.workdir'"),
    ("rpi", {**GOOD, "python": "python3; reboot"}, "'devices.rpi.python'"),
    ("rpi", {**GOOD, "password": "hunter2"}, "'password'"),
    ("rpi", {k: v for k, v in GOOD.items() if k != "key_file"}, "set key_file or agent"),
    ("rpi", {k: v for k, v in GOOD.items() if k != "known_hosts"}, "known_hosts"),
    ("rpi", {**GOOD, "runtimes": ["tensorrt"]}, "'devices.rpi.runtimes.0'"),
    ("local", GOOD, "built in"),
])
def test_bad_inventory_entries_are_one_line_errors(tmp_path, name, entry, fragment):
    with pytest.raises(UserError) as err:
        load_inventory(write(tmp_path, {name: entry}))
    message = str(err.value)
    assert "\n" not in message and "devices.yaml" in message and fragment in message, message


def test_params_devices_are_looked_up_in_the_inventory(tmp_path):
    path = write(tmp_path, {"rpi": GOOD})
    params = tiny_params(benchmark={"devices": ["local", "rpi"], "inventory": str(path)})
    validate(params)
    assert device_profile("rpi", path)["workdir"] == "/home/pi/edge-bench" and device_profile("local", path) is None
    params["benchmark"]["devices"] = ["local", "imx8mp"]
    with pytest.raises(UserError, match=r"key 'benchmark.devices.1': got 'imx8mp', expected local or a device of"):
        validate(params)


@pytest.mark.parametrize("name", ["rpi; rm -rf /", "a b", "$(id)", "Rpi"])
def test_device_names_with_shell_metacharacters_are_rejected_in_params(name):
    with pytest.raises(UserError, match="'benchmark.devices.0'"):
        validate(tiny_params(benchmark={"devices": [name]}))


def test_model_names_with_shell_metacharacters_are_rejected():
    params = tiny_params()
    params["models"]["m;reboot"] = params["models"]["mobilenetv2-rgb"]
    with pytest.raises(UserError, match="m;reboot"):
        validate(params)


def test_default_run_needs_no_inventory(tmp_path):
    params = tiny_params(benchmark={"inventory": str(tmp_path / "absent.yaml")})
    assert validate(params)["benchmark"]["devices"] == ["local"]


def test_remote_paths_never_escape_the_work_dir():
    assert remote_path("/home/pi/edge-bench", "cache", "ab.onnx") == "/home/pi/edge-bench/cache/ab.onnx"
    for parts in (("..", "x"), ("cache", "../../etc/passwd"), ("/etc/passwd",), (".",)):
        with pytest.raises(UserError, match="escapes the device work dir"):
            remote_path("/home/pi/edge-bench", *parts)


def test_pipeline_models_must_exist_with_the_right_format():
    params = tiny_params()
    params["benchmark"]["pipeline"]["yuv_model"] = "mobilenetv2-rgb"
    with pytest.raises(UserError, match="'benchmark.pipeline.yuv_model'.*input_format yuv420"):
        validate(params)


def test_dag_parity_with_a_remote_device(tmp_path):
    """Snakemake and DVC agree when a device comes from the inventory (its file is a dependency),
    and every benchmark and pipeline job holds its own device's resource only."""
    import re
    import subprocess
    import sys

    from test_dag_parity import check_parity, workdir_with
    from workflow.producers import artifacts_of

    write(tmp_path, {"rpi": GOOD})  # tmp_path/devices.yaml; config/ is the repository's
    params = tiny_params(benchmark={"devices": ["local", "rpi"], "inventory": "devices.yaml"})
    workdir = workdir_with(tmp_path, params)
    check_parity(workdir, params)
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "1"],
                         cwd=workdir, capture_output=True, text=True, check=True).stdout
    jobs = re.findall(r"^(?:local)?rule (benchmark|pipeline_bench):\n(.*?)\n\n", out, re.M | re.S)
    artifacts = sum(len(artifacts_of(params, model)) for model in params["models"])
    assert len(jobs) == artifacts * 2 + 2  # every artifact on both devices, 1 pipeline table per device
    for _, block in jobs:
        device = re.search(r"wildcards: .*device=([\w-]+)", block).group(1)
        other = "local" if device == "rpi" else "rpi"
        assert f"device_{device}=1" in block and f"device_{other}=0" in block, block
