"""params.yaml `artifacts`: which stage makes each artifact, for which models, with which options.

An artifact's entry has one key naming the stage that makes it (``quantize``, ``qat``, ``tflite``,
``hailo``; none for the export stage's ``onnx-fp32``). Those stages take ``--artifact NAME`` and
read the entry's settings from params.yaml themselves (:func:`parse_args`), so a DAG command names
files and entries but holds no parameter value: changing a value reruns the stage (DVC params,
Snakemake params) without regenerating dvc.yaml.
"""
import argparse
import sys

from workflow.config import DEFAULT_TARGETS, load_params
from workflow.errors import UserError
from workflow.layout import file_format
from workflow.model_specs import qat_settings

# The Dataflow Compiler's options per step of workflow.hailo.
HAILO_STEP_KEYS = {"translate": ("hw_arch",),
                   "optimize": ("calib_size", "optimization_level", "compression_level", "camera_format"),
                   "compile": ()}


def producer(params, artifact):
    """The stage that makes an artifact: the one key of its params entry ('export' for onnx-fp32)."""
    return next(iter(params["artifacts"][artifact]), "export")


def targets(params):
    """The file formats this run produces (params.yaml `targets`)."""
    return params.get("targets", list(DEFAULT_TARGETS))


def artifacts_of(params, model):
    """The artifacts a model is exported to: its own `artifacts` list, else all of them, of the `targets` formats."""
    names = params["models"][model].get("artifacts", list(params["artifacts"]))
    return [a for a in names if file_format(a) in targets(params)]



def _flags(settings, keys):
    return [x for key in keys if settings.get(key) is not None
            for x in (f"--{key.replace('_', '-')}", str(settings[key]))]


def artifact_options(params, artifact, step=None):
    """The command-line options of the stage that makes ``artifact``, from its params.yaml entry.

    Calibration sizes default to every packed calibration image (data.calib_subset); ONNX Runtime
    quantization checks parity on them for both methods."""
    entry = params["artifacts"][artifact]
    kind = producer(params, artifact)
    if kind == "quantize":
        q = entry["quantize"]
        calib = [] if "calib_size" in q else ["--calib-size", str(params["data"]["calib_subset"])]
        per_channel = [] if "per_channel" not in q else ["--per-channel" if q["per_channel"] else "--no-per-channel"]
        return ["--method", q["method"], *calib, *_flags(q, ("format", "calibration", "percentile", "calib_size",
                                                              "calib_batch", "weight_type", "activation_type")),
                *per_channel]
    if kind == "qat":
        q = qat_settings(entry)
        return [*_flags(q, ("epochs", "steps", "lr", "freeze_bn_after")),
                "--per-channel" if q["per_channel"] else "--no-per-channel"]
    if kind == "tflite":
        t = entry["tflite"]
        calib = ["--calib-size", str(params["data"]["calib_subset"])] if (t["precision"] == "int8"
                                                                        and "calib_size" not in t) else []
        return ["--precision", t["precision"], *calib, *_flags(t, ("converter", "io_type", "calib_size"))]
    if kind == "hailo":
        return _flags(entry["hailo"], HAILO_STEP_KEYS.get(step, ()))
    raise UserError(f"artifact {artifact!r} is made by the export stage and has no options")


ARTIFACT_HELP = "a params.yaml `artifacts` entry: its settings become the options (options given here win)"


def parse_args(parser, argv=None, subcommand=False):
    """Parse a stage's command line (its parser has --params and --artifact); with ``--artifact NAME``
    the options of that params.yaml entry come first (after the subcommand, the Hailo step), the
    command line's own options after them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--params", default="params.yaml")
    first.add_argument("--artifact")
    known, _ = first.parse_known_args(argv)
    if known.artifact is not None:
        params = load_params(known.params)
        if known.artifact not in params["artifacts"]:
            raise UserError(f"--artifact {known.artifact!r}: not an entry of {known.params} artifacts "
                            f"({', '.join(params['artifacts'])})")
        at = 1 if subcommand else 0
        argv = argv[:at] + artifact_options(params, known.artifact, argv[0] if subcommand else None) + argv[at:]
    return parser.parse_args(argv)
