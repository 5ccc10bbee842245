"""Quantize stage: ONNX Runtime post-training quantization of an exported fp32 ONNX model.

    python -m workflow.quantize --params params.yaml --model results/artifacts/M/onnx-fp32.onnx \
        --method static --format qdq --calibration minmax \
        --calib data/packed/rgb/calib.npy --manifest data/packed/rgb/manifest.json \
        --out results/artifacts/M/onnx-int8-qdq.onnx

Methods (onnxruntime.quantization, after its quant_pre_process):
  dynamic  quantize_dynamic: int8 weights, activations quantized at run time
           (ConvInteger / MatMulInteger / DynamicQuantizeLinear); seed 001's recipe is
           per-channel uint8 weights, the default here.
  static   quantize_static: activation ranges calibrated on the packed calibration split
           (MinMax, Entropy or Percentile), written as QDQ (QuantizeLinear/DequantizeLinear
           pairs) or QOperator (QLinearConv, ...) graphs.

The calibration images go through workflow.datasets.to_model_inputs exactly as in
evaluation, in batches of --calib-batch; each batch is collected on its own, so the
histogram calibrators hold one batch of intermediate outputs at a time.

The model is written only after a parity check: quantized vs fp32 logits on the
calibration images through ONNX Runtime. int8 legitimately differs, so the figures are
recorded; when the quantizer fails, the result does not run, or fewer than half the
argmaxes agree (a broken model), the artifact is recorded as failed with the reason
(workflow/artifacts.py) and the other formats go on. A report beside the model
(<artifact>.json) records the status, settings, checksums, node-type counts, size ratio,
timings and the parity figures.
"""
import argparse
import collections
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from workflow.artifacts import write_failed
from workflow.config import load_params, params_hash
from workflow.datasets import load_packed, to_model_inputs
from workflow.errors import UserError, cli, positive_int
from workflow.io import atomic_path, read_json, sha256_file, write_json
from workflow.producers import ARTIFACT_HELP, parse_args
from workflow.provenance import provenance

QUANT_TYPES = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
CALIBRATIONS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}
MIN_ARGMAX_AGREEMENT = 0.5  # below this the quantized model no longer computes the same function


# ----------------------------------------------------------------------------- inputs
def load_model(path):
    """The fp32 model's graph; a missing or corrupt file is a UserError naming it."""
    if not Path(path).is_file():
        raise UserError(f"{path}: model not found (run the export stage)")
    try:
        onnx.checker.check_model(str(path))
        return onnx.load(str(path))
    except Exception as err:  # noqa: BLE001 - onnx raises many types for a bad file
        raise UserError(f"{path}: not a valid ONNX model ({str(err).splitlines()[0][:120]})") from None


def load_calibration(calib, manifest_path, calib_size):
    """The first ``calib_size`` calibration images as model inputs {name: float32 array}."""
    manifest = read_json(manifest_path)
    if "calib" not in manifest.get("splits", {}):
        raise UserError(f"{manifest_path}: no 'calib' split in the manifest (rerun the pack stage)")
    images, _ = load_packed(calib, manifest, "calib")  # verifies the checksum
    if len(images) < calib_size:
        raise UserError(f"{calib}: the calibration split has {len(images)} images, fewer than "
                        f"--calib-size {calib_size} (lower --calib-size or raise data.calib_subset)")
    inputs = to_model_inputs(images[:calib_size], manifest["color_format"], manifest["height"], manifest["width"])
    return inputs, manifest["color_format"]


def model_inputs(graph):
    initializers = {t.name for t in graph.graph.initializer}
    return [i for i in graph.graph.input if i.name not in initializers]


def fixed_batch(graph):
    """The model's batch size when its first input has a fixed batch dimension, else None."""
    dim = model_inputs(graph)[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def batches(inputs, batch_size):
    n = len(next(iter(inputs.values())))
    return [{k: v[s:s + batch_size] for k, v in inputs.items()} for s in range(0, n, batch_size)]


class PackedCalibrationReader(CalibrationDataReader):
    """Calibration batches for quantize_static.

    ``__len__`` and ``set_range`` let quantize_static (extra option CalibStridedMinMax) collect
    one batch per pass, for every calibration method, instead of all intermediate outputs at once.
    """

    def __init__(self, inputs, batch_size):
        self.batches = batches(inputs, batch_size)
        self.set_range(0, len(self.batches))

    def __len__(self):
        return len(self.batches)

    def set_range(self, start_index, end_index):
        self._next = iter(self.batches[start_index:end_index])

    def get_next(self):
        return next(self._next, None)


# ----------------------------------------------------------------------------- methods
def quantize_dynamic_model(src, dst, s, inputs):
    quantize_dynamic(src, dst, per_channel=s["per_channel"], weight_type=QUANT_TYPES[s["weight_type"]])


def quantize_static_model(src, dst, s, inputs):
    reader = PackedCalibrationReader(inputs, s["calib_batch"])
    extra_options = {"CalibStridedMinMax": 1}  # one reader item (a batch) per collection pass
    if s["calibration"] == "percentile":
        extra_options["CalibPercentile"] = s["percentile"]
    quantize_static(src, dst, reader,
                    quant_format=FORMATS[s["quant_format"]],
                    calibrate_method=CALIBRATIONS[s["calibration"]],
                    per_channel=s["per_channel"],
                    activation_type=QUANT_TYPES[s["activation_type"]],
                    weight_type=QUANT_TYPES[s["weight_type"]],
                    extra_options=extra_options)


METHODS = {"dynamic": quantize_dynamic_model, "static": quantize_static_model}


# ----------------------------------------------------------------------------- checks
def run_logits(path, inputs, batch_size):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, b)[0] for b in batches(inputs, batch_size)])


class ConversionFailed(Exception):
    """The quantized model is unusable; recorded as a failed artifact, not a user error."""


def parity(src, quantized, inputs, batch_size):
    """Max |quantized - fp32| logits and argmax agreement on the calibration images."""
    reference = run_logits(src, inputs, batch_size)
    try:
        logits = run_logits(quantized, inputs, batch_size)
    except Exception as err:  # noqa: BLE001 - e.g. an operator/type combination ORT cannot run
        raise ConversionFailed(f"the quantized model does not run in ONNX Runtime "
                               f"({str(err).splitlines()[0][:160]})") from None
    return {"samples": int(len(reference)),
            "max_abs_diff": float(np.abs(logits - reference).max()),
            "argmax_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "min_argmax_agreement": MIN_ARGMAX_AGREEMENT}


@contextlib.contextmanager
def quiet_ort_logging():
    """ORT's quantizer logs advice through the root logger; keep stderr for real errors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


# ----------------------------------------------------------------------------- stage
def quantize(params, model, calib, manifest, out, settings):
    source = load_model(model)
    inputs, input_format = load_calibration(calib, manifest, settings["calib_size"])
    names = [i.name for i in model_inputs(source)]
    if sorted(inputs) != sorted(names):
        raise UserError(f"{model}: model inputs {names} do not match the {input_format} packed data "
                        f"({sorted(inputs)})")
    batch_size = fixed_batch(source) or settings["calib_batch"]
    settings = {**settings, "calib_batch": batch_size}
    out = Path(out)
    base = {"artifact": out.name, "format": "onnx", "precision": "int8",
            "input_format": input_format, "inputs": names, "source_model": str(model), **settings}
    try:
        with (atomic_path(out) as tmp, tempfile.TemporaryDirectory(prefix="quantize.") as work,
              quiet_ort_logging()):
            start = time.perf_counter()
            pre = Path(work) / "preprocessed.onnx"
            quant_pre_process(str(model), str(pre))
            preprocess_seconds = time.perf_counter() - start
            METHODS[settings["method"]](str(pre), str(tmp), settings, inputs)
            quantize_seconds = time.perf_counter() - start
            check = parity(model, tmp, inputs, batch_size)
            if check["argmax_agreement"] < MIN_ARGMAX_AGREEMENT:
                raise ConversionFailed(
                    f"quantization broke the model: argmax agrees with fp32 on only "
                    f"{check['argmax_agreement']:.0%} of {check['samples']} calibration images (< "
                    f"{MIN_ARGMAX_AGREEMENT:.0%}; max |int8 - fp32| logit {check['max_abs_diff']:.3g})")
    except Exception as err:  # noqa: BLE001 - any converter failure is this format's result, not a crash
        reason = write_failed(out, {**base, "provenance": provenance(params_hash(settings))}, err)
        print(f"warning: {out}: quantization failed ({reason}); recorded as status failed", file=sys.stderr)
        return {**base, "status": "failed", "reason": reason}
    graph = onnx.load(str(out))
    used_domains = {""} | {n.domain for n in graph.graph.node}
    report = {
        **base, "status": "ok",
        "opset": {o.domain or "ai.onnx": o.version for o in graph.opset_import if o.domain in used_domains},
        "nodes": len(graph.graph.node),
        "node_types": dict(sorted(collections.Counter(n.op_type for n in graph.graph.node).items())),
        "size_bytes": out.stat().st_size, "source_size_bytes": Path(model).stat().st_size,
        "size_ratio": out.stat().st_size / Path(model).stat().st_size,
        "preprocess_seconds": preprocess_seconds, "quantize_seconds": quantize_seconds,
        "parity": check,
        "sha256": sha256_file(out), "source_model_sha256": sha256_file(model),
        "calib_sha256": sha256_file(calib),
        "provenance": provenance(params_hash(settings)),
    }
    write_json(out.with_suffix(".json"), report)
    return report


def settings_from_args(args):
    """The quantization settings; options that do not apply to the method are errors, not ignored."""
    dynamic = args.method == "dynamic"
    if dynamic:
        given = [flag for flag, value in (("--format", args.format), ("--calibration", args.calibration),
                                          ("--activation-type", args.activation_type)) if value is not None]
        if given:
            raise UserError(f"{', '.join(given)}: only for --method static (dynamic quantization quantizes "
                            "activations to uint8 at run time)")
    calibration = None if dynamic else (args.calibration or "minmax")
    if args.percentile is not None and calibration != "percentile":
        raise UserError("--percentile: only for --method static --calibration percentile")
    settings = {
        "method": args.method,
        "quant_format": None if dynamic else (args.format or "qdq"),
        "calibration": calibration,
        "percentile": (args.percentile or 99.999) if calibration == "percentile" else None,
        "calib_size": args.calib_size,
        "calib_batch": args.calib_batch,
        "per_channel": args.per_channel,
        "weight_type": args.weight_type or ("quint8" if dynamic else "qint8"),
        "activation_type": "quint8" if dynamic else (args.activation_type or "quint8"),
    }
    if settings["activation_type"] == "qint8" and settings["weight_type"] == "quint8":
        raise UserError("--activation-type qint8 with --weight-type quint8: not supported by ONNX Runtime "
                        "(use qint8 weights)")
    return settings


def percentile_value(text):
    value = float(text)
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentile in (0, 100], got {value}")
    return value


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, help="fp32 ONNX model (export stage)")
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument("--format", choices=sorted(FORMATS), help="static only (default qdq)")
    parser.add_argument("--calibration", choices=sorted(CALIBRATIONS), help="static only (default minmax)")
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                        help="per-channel weight scales (default: on)")
    parser.add_argument("--weight-type", choices=sorted(QUANT_TYPES),
                        help="default: quint8 for dynamic (seed 001), qint8 for static")
    parser.add_argument("--activation-type", choices=sorted(QUANT_TYPES), help="static only (default quint8)")
    parser.add_argument("--calib", required=True, help="packed calibration split (also used for the parity check)")
    parser.add_argument("--manifest", required=True, help="the packed data's manifest.json")
    parser.add_argument("--calib-size", type=positive_int, default=256,
                        help="calibration images, the first N of the split (default 256)")
    parser.add_argument("--calib-batch", type=positive_int, default=32,
                        help="images per calibration batch (default 32; bounds calibration memory)")
    parser.add_argument("--percentile", type=percentile_value,
                        help="percentile calibration only (default 99.999)")
    parser.add_argument("--artifact", help=ARTIFACT_HELP)
    parser.add_argument("--out", required=True, help="output .onnx path")
    args = parse_args(parser, argv)
    params = load_params(args.params)  # every stage validates params.yaml
    settings = settings_from_args(args)
    report = quantize(params, args.model, args.calib, args.manifest, args.out, settings)
    if report["status"] == "failed":
        return
    counts = report["node_types"]
    integer_ops = {k: v for k, v in counts.items()
                   if k.startswith(("QLinear", "Quantize", "Dequantize", "DynamicQuantize")) or "Integer" in k}
    print(f"quantized {args.out} ({report['method']}"
          + (f", {report['quant_format']}, {report['calibration']}" if report["method"] == "static" else "")
          + f"): {report['size_ratio']:.2f}x the fp32 size, {report['quantize_seconds']:.1f} s, "
          f"argmax agreement {report['parity']['argmax_agreement']:.3f} on {report['parity']['samples']} images, "
          f"{integer_ops}")


if __name__ == "__main__":
    main()
