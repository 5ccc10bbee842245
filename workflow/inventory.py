"""The device inventory (config/devices.yaml): SSH profiles of the boards a benchmark can run on.

Validated against workflow/schemas/devices.schema.yaml, then checked for what a schema
cannot say: the remote work dir is an absolute, normalised path (no `..`, not `/`), a
profile authenticates with a key file or an agent, it names a `host` or a pool of `hosts`
(not both), and `local` is not redefined. A mistake is one UserError line naming the
file and the key. Each profile gets ``members``: [{host, port}], one per board.
"""
import posixpath
from pathlib import Path

import jsonschema
import yaml

from workflow.errors import UserError
from workflow.schema import describe, excerpt, read_yaml

LOCAL = "local"
DEFAULT_INVENTORY = "config/devices.yaml"
SCHEMA_PATH = Path(__file__).parent / "schemas" / "devices.schema.yaml"
DEFAULTS = {"port": 22, "agent": False, "key_file": None, "python": "python3", "runtimes": ["onnxruntime"],
            "cpus": [], "threads": None, "governor": None, "connect_timeout_s": 10, "run_timeout_s": 900,
            "lock_wait_s": None, "retries": 2, "retry_backoff_s": 5, "emulated": False}


def load_inventory(path=DEFAULT_INVENTORY):
    """{device name: profile with defaults filled in}; an absent file is an empty inventory."""
    path = Path(path)
    if not path.exists():
        return {}
    doc = read_yaml(path, "file not found", "sections (devices: name -> SSH profile)")
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        if best.validator == "pattern":  # hosts, users and paths have their own character sets
            key = ".".join(str(p) for p in best.absolute_path)
            raise UserError(f"{path}: key '{key}': got {excerpt(best.instance)}, expected a value matching "
                            f"{best.validator_value} (no spaces or shell metacharacters)")
        raise UserError(f"{path}: {describe(best)}")
    devices = {}
    for name, entry in (doc["devices"] or {}).items():
        where = f"{path}: key 'devices.{name}"
        if name == LOCAL:
            raise UserError(f"{where}': 'local' is this machine and is built in; pick another name")
        workdir = entry["workdir"]
        if posixpath.normpath(workdir) != workdir or ".." in workdir.split("/") or workdir == "/":
            raise UserError(f"{where}.workdir': got {excerpt(workdir)}, expected a normalised absolute folder "
                            f"below / (no '..', no trailing '/')")
        if not entry.get("key_file") and not entry.get("agent"):
            raise UserError(f"{where}': set key_file or agent: true (passwords are not supported)")
        if ("host" in entry) == ("hosts" in entry):
            raise UserError(f"{where}': set host (one board) or hosts (a pool of identical boards), not "
                            f"{'both' if 'host' in entry else 'neither'}")
        profile = {"name": name, **DEFAULTS, **entry}
        profile["members"] = pool_members(profile)
        if len({(m["host"], m["port"]) for m in profile["members"]}) < len(profile["members"]):
            raise UserError(f"{where}.hosts': a member is listed twice")
        if profile["lock_wait_s"] is None:
            profile["lock_wait_s"] = profile["run_timeout_s"]
        devices[name] = profile
    return devices


def pool_members(profile):
    """[{host, port}]: the boards of a device (one, or the pool's ``hosts``; a member's port defaults to
    the profile's)."""
    hosts = profile.get("hosts") or [profile["host"]]
    return [{"host": h, "port": profile["port"]} if isinstance(h, str) else {"port": profile["port"], **h}
            for h in hosts]


def device_slots(name, inventory_path=DEFAULT_INVENTORY):
    """How many benchmarks may run on ``name`` at once: its number of boards (Snakemake's resource)."""
    profile = device_profile(name, inventory_path)
    return 1 if profile is None else len(profile["members"])


def device_kind(profile):
    """What a device's timings are: ``host`` (local), ``board`` (real hardware) or ``emulated``
    (an entry with emulated: true, e.g. the qemu-user virtual board: never comparable timings)."""
    if profile is None:
        return "host"
    return "emulated" if profile["emulated"] else "board"


def device_profile(name, inventory_path=DEFAULT_INVENTORY):
    """The profile of ``name``, or None for ``local``."""
    if name == LOCAL:
        return None
    devices = load_inventory(inventory_path)
    if name not in devices:
        raise UserError(f"device {name!r} is not in {inventory_path} "
                        f"(defined: {', '.join(devices) or 'none'}; 'local' needs no entry)")
    return devices[name]
