"""Hailo stage: the Dataflow Compiler (DFC) flow, fp32 ONNX -> .har -> quantized .har -> .hef.

    python -m workflow.hailo translate --params params.yaml --model results/artifacts/M/onnx-fp32.onnx \
        --hw-arch hailo8 --out results/hailo/M/hef-int8-parsed.har
    python -m workflow.hailo optimize --params params.yaml --har results/hailo/M/hef-int8-parsed.har \
        --calib-size 1024 --calib data/packed/rgb/calib.npy --manifest data/packed/rgb/manifest.json \
        --out results/hailo/M/hef-int8-quantized.har
    python -m workflow.hailo compile --params params.yaml --har results/hailo/M/hef-int8-quantized.har \
        --out results/artifacts/M/hef-int8.hef

Each step drives the DFC's Python API (``hailo_sdk_client.ClientRunner``):

  translate  ClientRunner(hw_arch).translate_onnx_model(onnx, net_name, start/end node names,
             net_input_shapes at batch 1) -> save_har
  optimize   load_model_script(<generated .alls>) and optimize(calibration set): the first
             --calib-size images of the packed calibration split as NHWC float32 pixels (one array
             for a single-input model; {input layer: array} for the two-input YUV model)
  compile    compile() -> the .hef bytes

The model script (written beside the quantized .har as ``.alls``) is generated from the
artifact's params: ``model_optimization_flavor`` (optimization and compression level) and, for
``camera_format: nv12``, the on-chip input conversion: an RGB model gets
``input_conversion(input_layer1, nv12_to_rgb)``, so the board feeds NV12 camera frames; the
YUV-4:2:0 model needs none, because its two inputs already are NV12's planes (Y, H x W x 1, and
the interleaved UV, H/2 x W/2 x 2, in NHWC). Normalisation is the model's first layer, so the
script has no ``normalization`` command.

The SDK is proprietary (Hailo Developer Zone) and cannot be installed here; without it every
step stops with one line saying what to install. A step whose SDK call fails records the
artifact as failed with the reason (workflow/artifacts.py), and the later steps carry it on.
The tests drive this module against a stand-in with the same API; it has not been run against
the real SDK.
"""
import argparse
import importlib
import importlib.metadata
import sys
from pathlib import Path

import numpy as np

from workflow.artifacts import failure_reason, write_failed
from workflow.config import HAILO_CALIB_SIZE, load_params, params_hash
from workflow.datasets import load_packed, to_model_inputs
from workflow.errors import UserError, cli, positive_int
from workflow.io import atomic_path, read_json, sha256_file, write_json, write_text
from workflow.producers import ARTIFACT_HELP, parse_args
from workflow.provenance import provenance

HW_ARCHS = ("hailo8", "hailo8l", "hailo15h", "hailo15m")
CAMERA_FORMATS = ("rgb", "nv12")
INSTALL_HINT = ("install the Hailo Dataflow Compiler (the hailo_dataflow_compiler wheel from the Hailo "
                "Developer Zone, https://hailo.ai/developer-zone/) into this environment")


def sdk():
    """The DFC's Python package; its absence is a one-line error, not a failed artifact."""
    try:
        return importlib.import_module("hailo_sdk_client")
    except ImportError:
        raise UserError(f"hailo_sdk_client is not installed: {INSTALL_HINT}") from None


def sdk_version(module):
    try:
        return importlib.metadata.version("hailo_dataflow_compiler")
    except importlib.metadata.PackageNotFoundError:
        return getattr(module, "__version__", None)


def report_path(path):
    return Path(path).with_suffix(".json")


def fail(out, base, err, settings):
    """Record this step as failed (empty output + report) and say so; later steps carry the reason on."""
    reason = write_failed(out, {**base, "provenance": provenance(params_hash(settings))}, err)
    print(f"warning: {out}: Hailo {base['step']} failed ({reason}); recorded as status failed", file=sys.stderr)
    return {**base, "status": "failed", "reason": reason}


class UpstreamFailed(Exception):
    """An earlier step of this artifact failed; its reason is carried on."""


# ----------------------------------------------------------------------------- translate
def onnx_inputs(path):
    """[(name, [1, C, H, W])] of the ONNX model's graph inputs, batch fixed to 1."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except FileNotFoundError:
        raise UserError(f"{path}: model not found (run the export stage)") from None
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise UserError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0][:120]})") from None
    initializers = {t.name for t in graph.initializer}
    inputs = [(i.name, [1] + [d.dim_value for d in i.type.tensor_type.shape.dim[1:]])
              for i in graph.input if i.name not in initializers]
    return inputs, [o.name for o in graph.output]


def translate(model, hw_arch, out):
    client = sdk()
    inputs, outputs = onnx_inputs(model)
    out = Path(out)
    net_name = out.parent.name.replace("-", "_")  # the model's name; HN names allow no dashes
    settings = {"hw_arch": hw_arch}
    base = {"step": "translate", "format": "har", "hw_arch": hw_arch, "net_name": net_name,
            "source_model": str(model), "inputs": dict(inputs), "outputs": outputs,
            "sdk_version": sdk_version(client)}
    try:
        runner = client.ClientRunner(hw_arch=hw_arch)
        runner.translate_onnx_model(str(model), net_name, start_node_names=[n for n, _ in inputs],
                                    end_node_names=outputs, net_input_shapes=dict(inputs))
        with atomic_path(out) as tmp:
            runner.save_har(str(tmp))
    except Exception as err:  # noqa: BLE001 - the SDK's parser errors are this format's result
        return fail(out, base, err, settings)
    report = {**base, "status": "ok", "sha256": sha256_file(out), "source_model_sha256": sha256_file(model),
              "provenance": provenance(params_hash(settings))}
    write_json(report_path(out), report)
    return report


# ----------------------------------------------------------------------------- optimize
def model_script(settings, input_format):
    """The .alls model script for one artifact, generated from its params."""
    lines = [f"# generated by workflow.hailo from params.yaml ({input_format} model, camera {settings['camera_format']})",
             f"model_optimization_flavor(optimization_level={settings['optimization_level']}, "
             f"compression_level={settings['compression_level']})"]
    if settings["camera_format"] == "nv12" and input_format == "rgb":
        # NV12 frames in, RGB to the network: the conversion runs on the chip; calibration stays RGB
        lines.append("yuv_to_rgb1 = input_conversion(input_layer1, nv12_to_rgb, emulator_support=False)")
    elif settings["camera_format"] == "nv12":
        lines.append("# the inputs y (H x W x 1) and uv (H/2 x W/2 x 2) already are the NV12 planes: no conversion")
    return "\n".join(lines) + "\n"


def calibration_set(calib, manifest_path, calib_size):
    """{ONNX input name: NHWC float32 pixels} of the first ``calib_size`` calibration images."""
    manifest = read_json(manifest_path)
    if "calib" not in manifest.get("splits", {}):
        raise UserError(f"{manifest_path}: no 'calib' split in the manifest (rerun the pack stage)")
    images, _ = load_packed(calib, manifest, "calib")
    if len(images) < calib_size:
        raise UserError(f"{calib}: the calibration split has {len(images)} images, fewer than --calib-size "
                        f"{calib_size} (raise data.calib_subset; Hailo recommends {HAILO_CALIB_SIZE})")
    inputs = to_model_inputs(images[:calib_size], manifest["color_format"], manifest["height"], manifest["width"])
    return {k: np.ascontiguousarray(v.transpose(0, 2, 3, 1)) for k, v in inputs.items()}, manifest["color_format"]


def input_layers(runner):
    """{ONNX input name: HN input layer name} from the translated network."""
    layers = runner.get_hn_dict()["layers"]
    return {original: name for name, layer in layers.items() if layer["type"] == "input_layer"
            for original in layer.get("original_names", [])}


def optimize(har, calib, manifest_path, settings, out):
    client = sdk()
    out = Path(out)
    alls_path = out.with_suffix(".alls")
    base = {"step": "optimize", "format": "har", **settings, "source_har": str(har),
            "sdk_version": sdk_version(client)}
    data, input_format = calibration_set(calib, manifest_path, settings["calib_size"])
    script = model_script(settings, input_format)
    try:
        reason = failure_reason(har)
        if reason:
            raise UpstreamFailed(f"translate failed ({reason})")
        runner = client.ClientRunner(har=str(har))
        layers = input_layers(runner)
        if sorted(layers) != sorted(data):
            raise UserError(f"{har}: network inputs {sorted(layers)} do not match the {input_format} packed data "
                            f"({sorted(data)})")
        dataset = next(iter(data.values())) if len(data) == 1 else {layers[k]: v for k, v in data.items()}
        runner.load_model_script(script)
        runner.optimize(dataset)
        with atomic_path(out) as tmp:
            runner.save_har(str(tmp))
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - the SDK's optimization errors are this format's result
        write_text(alls_path, script)
        return fail(out, base, err, settings)
    write_text(alls_path, script)
    report = {**base, "status": "ok", "model_script": script, "input_format": input_format,
              "calibration": {k: {"shape": list(v.shape), "dtype": str(v.dtype), "layout": "NHWC"}
                              for k, v in data.items()},
              "sha256": sha256_file(out), "calib_sha256": sha256_file(calib),
              "provenance": provenance(params_hash(settings))}
    write_json(report_path(out), report)
    return report


# ----------------------------------------------------------------------------- compile
def compile_hef(har, out):
    client = sdk()
    out = Path(out)
    quantized = read_json(report_path(har)) if report_path(har).is_file() else {}
    base = {"step": "compile", "artifact": out.name, "format": "hef", "precision": "int8",
            "hw_arch": quantized.get("hw_arch"), "calib_size": quantized.get("calib_size"),
            "source_har": str(har), "sdk_version": sdk_version(client)}
    try:
        reason = failure_reason(har)
        if reason:
            raise UpstreamFailed(f"optimize failed ({reason})")
        runner = client.ClientRunner(har=str(har))
        hef = runner.compile()
        with atomic_path(out) as tmp:
            tmp.write_bytes(hef)
    except Exception as err:  # noqa: BLE001 - the SDK's compiler errors are this format's result
        return fail(out, base, err, {})
    report = {**base, "status": "ok", "size_bytes": out.stat().st_size, "sha256": sha256_file(out),
              "source_har_sha256": sha256_file(har), "provenance": provenance(params_hash({}))}
    write_json(report_path(out), report)
    return report


# ----------------------------------------------------------------------------- command line
@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    t = steps.add_parser("translate", help="ONNX -> .har")
    t.add_argument("--model", required=True, help="fp32 ONNX model (export stage)")
    t.add_argument("--hw-arch", choices=HW_ARCHS, default="hailo8")
    o = steps.add_parser("optimize", help=".har -> quantized .har (calibration)")
    o.add_argument("--har", required=True, help="the translated .har")
    o.add_argument("--calib-size", type=positive_int, default=HAILO_CALIB_SIZE,
                   help=f"calibration images, the first N of the split (default {HAILO_CALIB_SIZE}, as Hailo recommends)")
    o.add_argument("--optimization-level", type=int, choices=range(5), default=2)
    o.add_argument("--compression-level", type=int, choices=range(6), default=0)
    o.add_argument("--camera-format", choices=CAMERA_FORMATS, default="rgb",
                   help="what the board feeds: rgb, or nv12 frames (converted on the chip for an RGB model)")
    o.add_argument("--calib", required=True, help="packed calibration split")
    o.add_argument("--manifest", required=True, help="the packed data's manifest.json")
    c = steps.add_parser("compile", help="quantized .har -> .hef")
    c.add_argument("--har", required=True, help="the quantized .har")
    for sub in (t, o, c):
        sub.add_argument("--params", default="params.yaml")
        sub.add_argument("--artifact", help=ARTIFACT_HELP)
        sub.add_argument("--out", required=True)
    args = parse_args(parser, argv, subcommand=True)
    load_params(args.params)  # every stage validates params.yaml
    if args.step == "translate":
        report = translate(args.model, args.hw_arch, args.out)
    elif args.step == "optimize":
        settings = {"calib_size": args.calib_size, "optimization_level": args.optimization_level,
                    "compression_level": args.compression_level, "camera_format": args.camera_format,
                    "hw_arch": read_json(report_path(args.har)).get("hw_arch") if report_path(args.har).is_file()
                    else None}
        report = optimize(args.har, args.calib, args.manifest, settings, args.out)
    else:
        report = compile_hef(args.har, args.out)
    if report["status"] == "ok":
        print(f"hailo {args.step}: wrote {args.out}")


if __name__ == "__main__":
    main()
