"""The report beside every artifact (``<artifact>.json``) and the record of a conversion that failed.

A derived format (quantized ONNX, TFLite, HEF) whose conversion or validation fails must not
stop the other formats (as in ultralytics' benchmark): its stage writes the report with
``status: failed`` and the reason, and an empty model file so that the DAG's declared output
exists. Evaluate, benchmark and aggregate read the report first and carry the failure into
their own results, so an empty model file never passes for a real one.
"""
import json
from pathlib import Path

from workflow.io import write_json, write_text


def report_of(artifact):
    return Path(artifact).with_suffix(".json")


def write_failed(artifact, report, error):
    """Record a failed conversion: an empty ``artifact`` and its report with the reason."""
    reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    write_text(artifact, "")
    write_json(report_of(artifact), {**report, "status": "failed", "reason": reason[:300]})
    return reason


def failure_reason(artifact):
    """The reason recorded when the artifact's conversion failed, else None."""
    path = report_of(artifact)
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return report.get("reason") if report.get("status") == "failed" else None
