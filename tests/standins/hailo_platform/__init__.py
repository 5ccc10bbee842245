"""A stand-in for HailoRT's Python API (``hailo_platform``), for tests only.

There is no Hailo-8 and no HailoRT here (both are proprietary). This module has the
names, call signatures and context-manager protocol of the HailoRT 4.x inference API
that workflow/device_runner.py uses, checks that they are used in HailoRT's order
(configure, vstreams, activate, then infer), and appends every call to the JSON-lines
file named by $HAILO_STANDIN_LOG. A ".hef" here is a JSON file naming the vstreams:
{"inputs": [{"name": ..., "shape": [H, W, C]}], "outputs": [{"name": ..., "shape": [...]}]}.
Outputs are the per-channel mean of the first input, tiled: deterministic, shape-correct.
"""
import enum
import json
import os
from types import SimpleNamespace

import numpy as np

__version__ = "4.20.0-standin"


class HailoRTException(Exception):
    pass


def _log(call, **fields):
    path = os.environ.get("HAILO_STANDIN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"call": call, **fields}, default=str) + "\n")


class FormatType(enum.Enum):
    AUTO = 0
    UINT8 = 1
    UINT16 = 2
    FLOAT32 = 3


class HailoStreamInterface(enum.Enum):
    PCIe = 0
    ETH = 1


class HEF:
    def __init__(self, hef_source):
        _log("HEF", path=str(hef_source))
        try:
            with open(hef_source) as f:
                spec = json.load(f)
        except (OSError, ValueError) as err:
            raise HailoRTException(f"Failed parsing HEF file {hef_source}: {err}") from None
        self._inputs = [SimpleNamespace(name=i["name"], shape=tuple(i["shape"])) for i in spec["inputs"]]
        self._outputs = [SimpleNamespace(name=o["name"], shape=tuple(o["shape"])) for o in spec["outputs"]]

    def get_input_vstream_infos(self, network_name=None):
        return list(self._inputs)

    def get_output_vstream_infos(self, network_name=None):
        return list(self._outputs)


class ConfigureParams:
    @staticmethod
    def create_from_hef(hef, interface):
        _log("ConfigureParams.create_from_hef", interface=interface.name)
        return {"hef": hef, "interface": interface}


class ConfiguredNetwork:
    def __init__(self, hef):
        self.hef, self.active = hef, False

    def create_params(self):
        return {"batch_size": 1}

    def activate(self, network_group_params=None):
        network = self

        class Activated:
            def __enter__(self):
                _log("activate.enter")
                network.active = True
                return self

            def __exit__(self, *exc):
                _log("activate.exit")
                network.active = False

        return Activated()


class VDevice:
    def __init__(self, params=None):
        _log("VDevice")
        self.released = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def release(self):
        _log("VDevice.release")
        self.released = True

    def configure(self, hef, configure_params):
        if configure_params["hef"] is not hef:
            raise HailoRTException("configure params were created from another HEF")
        _log("VDevice.configure")
        return [ConfiguredNetwork(hef)]

    def get_physical_devices_ids(self):
        return ["0000:01:00.0"]


class _VStreamParams:
    @classmethod
    def make(cls, configured_network, quantized=None, format_type=None, timeout_ms=None, queue_size=None):
        _log(f"{cls.__name__}.make", format_type=format_type.name if format_type else None)
        return {"network": configured_network, "format_type": format_type}


class InputVStreamParams(_VStreamParams):
    pass


class OutputVStreamParams(_VStreamParams):
    pass


class InferVStreams:
    def __init__(self, configured_net_group, input_vstreams_params, output_vstreams_params, tf_nms_format=False):
        self.network = configured_net_group
        self.input_format = input_vstreams_params["format_type"]
        self.open = False

    def __enter__(self):
        _log("InferVStreams.enter")
        self.open = True
        return self

    def __exit__(self, *exc):
        _log("InferVStreams.exit")
        self.open = False

    def infer(self, input_data):
        if not (self.open and self.network.active):
            raise HailoRTException("infer() needs open vstreams and an activated network group")
        infos = self.network.hef.get_input_vstream_infos()
        if sorted(input_data) != sorted(i.name for i in infos):
            raise HailoRTException(f"expected inputs {[i.name for i in infos]}, got {sorted(input_data)}")
        for info in infos:
            array = input_data[info.name]
            if array.shape[1:] != info.shape or (self.input_format is FormatType.FLOAT32 and array.dtype != np.float32):
                raise HailoRTException(f"input {info.name}: got {array.dtype} {array.shape}, expected "
                                       f"float32 (N, {', '.join(map(str, info.shape))})")
        first = input_data[infos[0].name]
        _log("infer", shapes={k: list(v.shape) for k, v in input_data.items()})
        channel_mean = first.reshape(first.shape[0], -1, first.shape[-1]).mean(axis=1)
        return {o.name: np.resize(channel_mean, (first.shape[0], *o.shape)).astype(np.float32)
                for o in self.network.hef.get_output_vstream_infos()}
