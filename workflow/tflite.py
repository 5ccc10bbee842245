"""TFLite stage: the fp32 ONNX model -> a .tflite file of one precision, checked against ONNX Runtime.

    python -m workflow.tflite --params params.yaml --model results/artifacts/M/onnx-fp32.onnx \
        --precision int8 --io-type uint8 --calib-size 256 \
        --calib data/packed/rgb/calib.npy --manifest data/packed/rgb/manifest.json \
        --out results/artifacts/M/tflite-int8-full.tflite

Precisions:
  fp32          float32 weights and activations
  fp16          float16 weights (dequantized at load time on CPUs), float32 activations
  dynamic_int8  int8 weights, activations quantized at run time (TFLite "dynamic range")
  int8          full-integer: int8 weights and activations calibrated on the first
                --calib-size images of the packed calibration split (the representative
                dataset); inputs and outputs are int8 or uint8 (--io-type)

Converters (--converter):
  onnx2tf       the default: converts the fp32 ONNX artifact (the same graph ONNX Runtime
                evaluates) through TensorFlow; every precision; inputs become NHWC, TFLite's
                native layout, with their ONNX names and a resizable batch.
  litert_torch  converts the PyTorch checkpoint without TensorFlow (fp32 only here); inputs
                stay NCHW with a fixed batch of 1.
bench/tflite_converters.py measures both on our two models (README, "TFLite").

The model is written only after a parity check against the fp32 ONNX model through ONNX
Runtime on the packed calibration split (max |tflite - onnx| logit, argmax agreement). A
conversion that raises, or a result that does not run or agrees on fewer than half the
argmaxes, is recorded as a failed artifact with the reason (workflow/artifacts.py); the
other formats go on.
"""
import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from workflow.artifacts import write_failed
from workflow.config import load_params, params_hash
from workflow.datasets import load_packed, to_model_inputs
from workflow.errors import UserError, cli, positive_int
from workflow.io import atomic_path, read_json, sha256_file, write_json
from workflow.producers import ARTIFACT_HELP, parse_args
from workflow.provenance import provenance

PRECISIONS = ("fp32", "fp16", "dynamic_int8", "int8")
IO_TYPES = ("int8", "uint8")
CONVERTERS = ("onnx2tf", "litert_torch")
# Precisions each converter makes here (litert-torch's quantization goes through PT2E recipes
# that this stage does not set up).
CONVERTER_PRECISIONS = {"onnx2tf": PRECISIONS, "litert_torch": ("fp32",)}
MIN_ARGMAX_AGREEMENT = 0.5  # below this the converted model no longer computes the same function
# onnx2tf downloads this sample array from github for any image-like input, even when it is
# given its own calibration data; a file of that name in its working directory stops the download.
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
# onnx2tf's output file for each precision (<stem>_<suffix>.tflite)
ONNX2TF_OUTPUT = {"fp32": "float32", "fp16": "float16", "dynamic_int8": "dynamic_range_quant",
                  "int8": "full_integer_quant"}


class ConversionFailed(Exception):
    """The converted model is unusable; recorded as a failed artifact, not a user error."""


@contextlib.contextmanager
def converter_log(path):
    """Send the converters' console output (TensorFlow prints whole graphs) to a log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def last_error(log_text):
    """The converter's last ERROR line, without terminal colours."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in log_text.splitlines()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    return errors[-1] if errors else (lines[-1] if lines else "the converter exited without a message")


@contextlib.contextmanager
def working_directory(path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def convert_onnx2tf(source, work, settings, calib_inputs):
    """onnx2tf's Python API in ``work``; returns the path of the .tflite of the requested precision."""
    import onnx2tf

    precision = settings["precision"]
    options = {}
    if precision == "dynamic_int8":
        options = dict(output_dynamic_range_quantized_tflite=True)
    if precision == "int8":
        # Each input's representative data as NHWC float32 pixels; the model normalises itself,
        # so onnx2tf's (x - mean) / std is the identity.
        data = []
        for name, array in calib_inputs.items():
            path = Path(work) / f"calib_{name}.npy"
            np.save(path, array.transpose(0, 2, 3, 1))
            channels = array.shape[1]
            data.append([name, str(path), [[[[0.0] * channels]]], [[[[1.0] * channels]]]])
        options = dict(output_integer_quantized_tflite=True, custom_input_op_name_np_data_path=data,
                       quant_type="per-channel", input_quant_dtype=settings["io_type"],
                       output_quant_dtype=settings["io_type"])
    np.save(Path(work) / ONNX2TF_SAMPLE, np.zeros((20, 128, 128, 3), np.float32))
    # onnx2tf rewrites the ONNX file it is given (shape inference) in place: convert a copy, so the
    # fp32 artifact that other stages measured (and DVC hashed) stays byte-identical.
    out_dir, source = Path(work) / "onnx2tf", Path(shutil.copy(source, Path(work) / Path(source).name))
    with working_directory(work):
        onnx2tf.convert(input_onnx_file_path=str(source), output_folder_path=str(out_dir),
                        not_use_onnxsim=True, verbosity="error", **options)
    return out_dir / f"{Path(source).stem}_{ONNX2TF_OUTPUT[precision]}.tflite"


def convert_litert_torch(checkpoint, work, settings, calib_inputs):
    import litert_torch
    import torch

    from workflow.models import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    example = tuple(torch.from_numpy(calib_inputs[name][:1]) for name in model.input_names)
    path = Path(work) / "litert_torch.tflite"
    litert_torch.convert(model, example).export(str(path))
    return path


CONVERTER_FUNCTIONS = {"onnx2tf": convert_onnx2tf, "litert_torch": convert_litert_torch}


def converter_version(name):
    from importlib.metadata import version

    return version(name.replace("_", "-"))


def load_calibration(calib, manifest_path, calib_size):
    """The first ``calib_size`` images of the calibration split as model inputs (all of them when None)."""
    manifest = read_json(manifest_path)
    if "calib" not in manifest.get("splits", {}):
        raise UserError(f"{manifest_path}: no 'calib' split in the manifest (rerun the pack stage)")
    images, _ = load_packed(calib, manifest, "calib")  # verifies the checksum
    if calib_size is not None and len(images) < calib_size:
        raise UserError(f"{calib}: the calibration split has {len(images)} images, fewer than "
                        f"--calib-size {calib_size} (lower --calib-size or raise data.calib_subset)")
    images = images[:calib_size] if calib_size else images
    return to_model_inputs(images, manifest["color_format"], manifest["height"], manifest["width"]), manifest


def onnx_logits(source, inputs):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def parity(source, tflite_path, inputs):
    """Max |tflite - fp32 ONNX| logits and argmax agreement, and the converted model's tensors."""
    from workflow.litert import LiteRTModel

    reference = onnx_logits(source, inputs)
    try:
        model = LiteRTModel(tflite_path, num_threads=1)
        logits = model(inputs)
    except Exception as err:  # noqa: BLE001 - the interpreter's own error types
        raise ConversionFailed(f"the converted model does not run in LiteRT ({str(err).splitlines()[0][:160]})") \
            from None
    check = {"samples": int(len(reference)), "reference": "onnxruntime fp32",
             "max_abs_diff": float(np.abs(logits - reference).max()),
             "argmax_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
             "min_argmax_agreement": MIN_ARGMAX_AGREEMENT}
    return check, model.details()


def convert(params, source, calib, manifest_path, out, settings, checkpoint=None):
    from workflow.onnx_stats import onnx_stats

    if not Path(source).is_file():
        raise UserError(f"{source}: model not found (run the export stage)")
    if settings["converter"] == "litert_torch" and not checkpoint:
        raise UserError("--converter litert_torch converts the PyTorch model: pass --checkpoint")
    calib_inputs, manifest = load_calibration(calib, manifest_path, settings["calib_size"])
    out = Path(out)
    stats = onnx_stats(source)
    base = {"artifact": out.name, "format": "tflite", **settings,
            # TFLite's post-training quantization: min/max ranges over the representative dataset
            "quant_method": {"dynamic_int8": "dynamic", "int8": "full_integer"}.get(settings["precision"]),
            "calibration": "minmax" if settings["precision"] == "int8" else None,
            "converter_version": converter_version(settings["converter"]),
            "input_format": manifest["color_format"], "source_model": str(source),
            "params": stats["params"], "macs": stats["macs"]}  # a converted file's own count replaces params
    start = time.perf_counter()
    try:
        with (atomic_path(out) as tmp, tempfile.TemporaryDirectory(prefix="tflite.") as work):
            log = Path(work) / "converter.log"
            try:
                with converter_log(log):
                    converted = CONVERTER_FUNCTIONS[settings["converter"]](
                        checkpoint if settings["converter"] == "litert_torch" else source, work, settings,
                        calib_inputs)
            except SystemExit:  # onnx2tf logs its error and calls sys.exit(1)
                raise ConversionFailed(last_error(log.read_text())) from None
            convert_seconds = time.perf_counter() - start
            if not converted.is_file():
                raise ConversionFailed(f"{settings['converter']} wrote no {converted.name}")
            tmp.write_bytes(converted.read_bytes())
            check, details = parity(source, tmp, calib_inputs)
            if check["argmax_agreement"] < MIN_ARGMAX_AGREEMENT:
                raise ConversionFailed(
                    f"conversion broke the model: argmax agrees with fp32 ONNX on only "
                    f"{check['argmax_agreement']:.0%} of {check['samples']} calibration images "
                    f"(max |tflite - onnx| logit {check['max_abs_diff']:.3g})")
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - any converter failure is this format's result, not a crash
        reason = write_failed(out, {**base, "provenance": provenance(params_hash(settings))}, err)
        print(f"warning: {out}: TFLite conversion failed ({reason}); recorded as status failed", file=sys.stderr)
        return {**base, "status": "failed", "reason": reason}
    report = {
        **base, "status": "ok", **details,
        "size_bytes": out.stat().st_size, "source_size_bytes": Path(source).stat().st_size,
        "size_ratio": out.stat().st_size / Path(source).stat().st_size,
        "convert_seconds": convert_seconds, "parity": check,
        "sha256": sha256_file(out), "source_model_sha256": sha256_file(source),
        "calib_sha256": sha256_file(calib),
        "provenance": provenance(params_hash(settings)),
    }
    write_json(out.with_suffix(".json"), report)
    return report


def settings_from_args(args):
    """The conversion settings; options that do not apply to the precision are errors, not ignored."""
    integer = args.precision == "int8"
    if not integer and (args.io_type or args.calib_size):
        given = "--io-type" if args.io_type else "--calib-size"
        raise UserError(f"{given}: only for --precision int8 (the full-integer model's representative "
                        "dataset and input/output type)")
    if args.precision not in CONVERTER_PRECISIONS[args.converter]:
        raise UserError(f"--precision {args.precision}: --converter {args.converter} makes "
                        f"{', '.join(CONVERTER_PRECISIONS[args.converter])} here (use onnx2tf)")
    return {"precision": args.precision, "converter": args.converter,
            "io_type": (args.io_type or "int8") if integer else None,
            "calib_size": (args.calib_size or 256) if integer else None}


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, help="fp32 ONNX model (export stage); the parity reference")
    parser.add_argument("--precision", required=True, choices=PRECISIONS)
    parser.add_argument("--io-type", choices=IO_TYPES, help="int8 only: input/output type (default int8)")
    parser.add_argument("--calib-size", type=positive_int,
                        help="int8 only: representative images, the first N of the calibration split (default 256)")
    parser.add_argument("--converter", choices=CONVERTERS, default="onnx2tf")
    parser.add_argument("--checkpoint", help="the PyTorch checkpoint (--converter litert_torch)")
    parser.add_argument("--calib", required=True, help="packed calibration split (also used for the parity check)")
    parser.add_argument("--manifest", required=True, help="the packed data's manifest.json")
    parser.add_argument("--artifact", help=ARTIFACT_HELP)
    parser.add_argument("--out", required=True, help="output .tflite path")
    args = parse_args(parser, argv)
    params = load_params(args.params)  # every stage validates params.yaml
    settings = settings_from_args(args)
    report = convert(params, args.model, args.calib, args.manifest, args.out, settings, args.checkpoint)
    if report["status"] == "failed":
        return
    print(f"converted {args.out} ({report['precision']}, {report['converter']} {report['converter_version']}): "
          f"{report['size_ratio']:.2f}x the ONNX size, {report['convert_seconds']:.1f} s, max |tflite - onnx| "
          f"{report['parity']['max_abs_diff']:.3g}, argmax agreement {report['parity']['argmax_agreement']:.3f} "
          f"on {report['parity']['samples']} images")


if __name__ == "__main__":
    main()
