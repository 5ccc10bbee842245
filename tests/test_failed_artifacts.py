"""A format whose conversion fails is a summary row with status failed and the reason; the others go on."""
import json
import re

import pandas as pd

from conftest import run_module, tiny_params, write_params
from workflow.artifacts import failure_reason, write_failed


def test_failed_conversion_flows_into_a_summary_row(tmp_path, trained, packed_dir):
    params = tiny_params()
    params["models"] = {"mobilenetv2-rgb": params["models"]["mobilenetv2-rgb"]}
    params["benchmark"]["pipeline"]["enabled"] = False  # it needs a YUV model too
    params["artifacts"] = {"onnx-fp32": {}, "onnx-int8-static": params["artifacts"]["onnx-int8-static"]}
    params_path = write_params(tmp_path / "params.yaml", params)
    results, model = tmp_path / "results", "mobilenetv2-rgb"
    (results / "models").mkdir(parents=True)
    (results / "models" / model).symlink_to(trained[model])
    test, manifest = packed_dir / "rgb" / "test.npy", packed_dir / "rgb" / "manifest.json"
    fp32 = results / "artifacts" / model / "onnx-fp32.onnx"
    run_module("export", "--params", params_path, "--checkpoint", trained[model] / "model.pt", "--packed", test,
               "--out", fp32, check=True)
    broken = fp32.with_name("onnx-int8-static.onnx")
    reason = write_failed(broken, {"artifact": broken.name, "format": "onnx", "precision": "int8"},
                          RuntimeError("converter crashed\nsecond line"))
    assert reason == "RuntimeError: converter crashed" and failure_reason(broken) == reason
    assert broken.stat().st_size == 0 and failure_reason(fp32) is None

    for artifact in (fp32, broken):
        name = artifact.stem
        run_module("evaluate", "--params", params_path, "--artifact", artifact, "--packed", test,
                   "--manifest", manifest, "--out", results / "eval" / model / f"{name}.json", check=True)
        run_module("benchmark", "--params", params_path, "--device", "local", "--model-name", model,
                   "--artifact", artifact, "--packed", test, "--manifest", manifest,
                   "--out", results / "bench" / "local" / model / f"{name}.json", check=True)
    assert json.loads((results / "eval" / model / "onnx-int8-static.json").read_text())["status"] == "failed"
    run_module("aggregate", "--params", params_path, "--results", results, "--out", results / "summary.csv",
               check=True)
    table = pd.read_csv(results / "summary.csv").set_index("artifact")
    assert table.loc["onnx-fp32", "status"] == "ok" and table.loc["onnx-fp32", "top1"] > 0
    failed = table.loc["onnx-int8-static"]
    assert failed["status"] == "failed" and failed["reason"] == reason
    assert pd.isna(failed["top1"]) and pd.isna(failed["latency_p50_ms"])
    # the blank cells leave the counts of the other rows exact (no 6-digit float formatting)
    macs = next(line for line in (results / "summary.csv").read_text().splitlines() if ",onnx-fp32," in line)
    assert f",{int(table.loc['onnx-fp32', 'macs'])}," in macs and "e+" not in macs
    assert failed["quant_method"] == "static" and failed["precision"] == "int8"
    markdown = (results / "summary.md").read_text()
    assert re.search(r"\|\s*failed\s*\|", markdown) and "nan" not in markdown
