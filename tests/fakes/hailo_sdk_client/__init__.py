"""A stand-in for the Hailo Dataflow Compiler's ``hailo_sdk_client`` (tests only; the real SDK is proprietary).

Same calls as the DFC's ClientRunner that workflow/hailo.py uses. It checks what the real
SDK requires of its arguments (a known hw_arch, an existing ONNX file, the calibration set
as NHWC float32 arrays matching the input layers, a model script before optimize, optimize
before compile) and appends every call, with those facts, as a JSON line to the file named
by $HAILO_STANDIN_CALLS. A .har here is a JSON file holding the runner's state; the .hef is
a marker plus that state. Nothing is compiled.
"""
import json
import os
from pathlib import Path

import numpy as np

__version__ = "0.0+stand-in"
HW_ARCHS = ("hailo8", "hailo8l", "hailo15h", "hailo15m")


def record(call, **facts):
    with open(os.environ["HAILO_STANDIN_CALLS"], "a") as f:
        f.write(json.dumps({"call": call, **facts}) + "\n")


class ClientRunner:
    def __init__(self, hw_arch=None, har=None):
        if har is not None:
            self.state = json.loads(Path(har).read_text())
        else:
            if hw_arch not in HW_ARCHS:
                raise ValueError(f"unsupported hw_arch {hw_arch!r}")
            self.state = {"hw_arch": hw_arch, "layers": {}, "script": None, "quantized": False}
        record("ClientRunner", hw_arch=hw_arch, har=str(har) if har else None)

    def translate_onnx_model(self, model, net_name, start_node_names=None, end_node_names=None,
                             net_input_shapes=None):
        import onnx

        graph = onnx.load(model).graph  # raises for a missing or corrupt file, as the real parser does
        names = {i.name for i in graph.input}
        missing = [n for n in start_node_names or [] if n not in names]
        if missing:
            raise ValueError(f"start nodes {missing} are not in the ONNX graph")
        if os.environ.get("HAILO_STANDIN_UNSUPPORTED"):
            raise RuntimeError(f"Unsupported layer {os.environ['HAILO_STANDIN_UNSUPPORTED']}")
        layers = {}
        for i, name in enumerate(start_node_names, 1):
            n, c, h, w = net_input_shapes[name]
            layers[f"{net_name}/input_layer{i}"] = {"type": "input_layer", "original_names": [name],
                                                    "input_shapes": [[-1, h, w, c]]}
        self.state.update(net_name=net_name, layers=layers)
        record("translate_onnx_model", model=model, net_name=net_name, start_node_names=start_node_names,
               end_node_names=end_node_names, net_input_shapes=net_input_shapes)

    def get_hn_dict(self):
        return {"name": self.state["net_name"], "layers": self.state["layers"]}

    def load_model_script(self, script):
        self.state["script"] = script
        record("load_model_script", script=script)

    def optimize(self, calib_dataset):
        if self.state["script"] is None:
            raise RuntimeError("no model script loaded")
        layers = self.state["layers"]
        data = calib_dataset if isinstance(calib_dataset, dict) else {next(iter(layers)): calib_dataset}
        if sorted(data) != sorted(layers):
            raise ValueError(f"calibration inputs {sorted(data)} do not match the input layers {sorted(layers)}")
        for name, array in data.items():
            expected = layers[name]["input_shapes"][0][1:]
            if array.dtype != np.float32 or list(array.shape[1:]) != expected:
                raise ValueError(f"{name}: calibration data {array.dtype} {list(array.shape)}, expected float32 "
                                 f"[N, {', '.join(map(str, expected))}] (NHWC)")
        self.state["quantized"] = True
        record("optimize", inputs={k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in data.items()},
               single_array=not isinstance(calib_dataset, dict))

    def save_har(self, path):
        Path(path).write_text(json.dumps(self.state))
        record("save_har", quantized=self.state["quantized"])

    def compile(self):
        if not self.state["quantized"]:
            raise RuntimeError("the model must be optimized before compiling")
        record("compile", hw_arch=self.state["hw_arch"])
        return b"HEF stand-in\n" + json.dumps(self.state).encode()
