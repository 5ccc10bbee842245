"""TFLite models through ai-edge-litert's Interpreter, fed like an ONNX model.

The packed data gives float32 NCHW arrays keyed by input name (``image``, or ``y`` and
``uv``). Converted models differ in three ways, each handled here from the model's own
tensor details rather than assumed:

* names: onnx2tf keeps the ONNX names, or for integer models ``serving_default_<name>:0``;
  litert-torch uses ``serving_default_args_<i>``. An input whose plain name is not a data
  key takes the one array whose shape fits.
* layout: onnx2tf makes inputs NHWC (TFLite's native layout); litert-torch keeps NCHW.
* type: full-integer models take int8/uint8 inputs and give int8/uint8 outputs; floats are
  quantized with the input's (scale, zero point) and the output dequantized with its own.

XNNPACK (TFLite's default CPU delegate) is on unless ``xnnpack=False``, which selects the
builtin kernels without default delegates.
"""
import numpy as np

from workflow.errors import UserError


# op -> inputs that hold the network's parameters (filters, weights, biases): the rule of
# workflow/onnx_stats.py; quantization scales and zero points are tensor metadata here, never counted.
PARAM_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "CONV_3D": (1, 2), "FULLY_CONNECTED": (1, 2),
                "TRANSPOSE_CONV": (1, 3)}


def plain_name(name):
    return name.split("/")[-1].removeprefix("serving_default_").split(":")[0]


def to_layout(array, shape):
    """``array`` (NCHW) as is when it fits ``shape`` (batch ignored), as NHWC when that fits, else None."""
    if array.ndim != len(shape):
        return None
    if tuple(array.shape[1:]) == tuple(shape[1:]):
        return array
    if array.ndim == 4 and tuple(array.transpose(0, 2, 3, 1).shape[1:]) == tuple(shape[1:]):
        return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    return None


def quantize(array, dtype, scale, zero_point):
    info = np.iinfo(dtype)
    return np.clip(np.round(array / scale + zero_point), info.min, info.max).astype(dtype)


class LiteRTModel:
    runtime = "litert"

    def __init__(self, path, num_threads, xnnpack=True):
        from ai_edge_litert import interpreter as tfl
        import ai_edge_litert

        self.path, self.num_threads, self.xnnpack = str(path), num_threads, xnnpack
        self.tfl = tfl
        self.version = ai_edge_litert.__version__
        self.providers = ["XNNPACK"] if xnnpack else ["builtin"]
        self.interpreter = self._load()
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.input_names = [plain_name(d["name"]) for d in self.inputs]
        # A fixed batch dimension (litert-torch exports batch 1) caps the batch; -1 can be resized.
        batch = self.inputs[0]["shape_signature"][0]
        self.max_batch = None if batch == -1 else int(batch)
        self.layout = "NHWC" if self.inputs[0]["shape"][-1] in (1, 2, 3) else "NCHW"
        self._batch = None

    def _load(self):
        resolver = (self.tfl.OpResolverType.AUTO if self.xnnpack
                    else self.tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        try:
            interpreter = self.tfl.Interpreter(model_path=self.path, num_threads=self.num_threads,
                                               experimental_op_resolver_type=resolver)
            interpreter.allocate_tensors()
        except ValueError as err:
            if "not found" in str(err).lower() or "could not open" in str(err).lower():
                raise UserError(f"{self.path}: model not found (run the tflite stage)") from None
            raise UserError(f"{self.path}: not a valid TFLite model ({str(err).splitlines()[0][:120]})") from None
        return interpreter

    def match_inputs(self, inputs):
        """{tflite input index: array in the model's layout and type} for a batch of NCHW float inputs."""
        feeds = {}
        for detail in self.inputs:
            name = plain_name(detail["name"])
            keys = [name] if name in inputs else [k for k, v in inputs.items()
                                                  if to_layout(v, detail["shape_signature"]) is not None]
            if len(keys) != 1:
                raise UserError(f"{self.path}: cannot tell which of the data inputs {sorted(inputs)} feeds "
                                f"model input '{detail['name']}' (shape {list(detail['shape_signature'])})")
            array = to_layout(inputs[keys[0]], detail["shape_signature"])
            if array is None:
                raise UserError(f"{self.path}: input '{detail['name']}' expects shape "
                                f"{list(detail['shape_signature'])}, the data has {list(inputs[keys[0]].shape)}")
            scale, zero_point = detail["quantization"]
            if np.issubdtype(detail["dtype"], np.integer) and scale:
                array = quantize(array, detail["dtype"], scale, zero_point)
            feeds[detail["index"]] = array.astype(detail["dtype"], copy=False)
        return feeds

    def _resize(self, batch):
        if batch == self._batch:
            return
        for detail in self.inputs:
            self.interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
        self.interpreter.allocate_tensors()
        self._batch = batch

    def __call__(self, inputs):
        feeds = self.match_inputs(inputs)
        batch = len(next(iter(feeds.values())))
        if self.max_batch is not None and batch != self.max_batch:
            # a fixed-batch model runs one batch at a time
            return np.concatenate([self({k: v[s:s + self.max_batch] for k, v in inputs.items()})
                                   for s in range(0, batch, self.max_batch)])
        if self.max_batch is None:
            self._resize(batch)
        for index, array in feeds.items():
            self.interpreter.set_tensor(index, array)
        self.interpreter.invoke()
        out = self.outputs[0]
        logits = self.interpreter.get_tensor(out["index"])
        scale, zero_point = out["quantization"]
        if np.issubdtype(logits.dtype, np.integer) and scale:
            return (logits.astype(np.float32) - zero_point) * scale
        return logits.astype(np.float32, copy=False)

    def details(self):
        """Input/output tensors and op counts, for the conversion report."""
        def tensor(d):
            scale, zero_point = d["quantization"]
            return {"name": d["name"], "shape": [int(x) for x in d["shape_signature"]],
                    "dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}

        # the graph's own ops, read from an interpreter without delegates (XNNPACK folds them into one node)
        plain = self.tfl.Interpreter(model_path=self.path,
                                     experimental_op_resolver_type=self.tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        plain.allocate_tensors()
        ops, param_uses = {}, []  # tensors in a parameter input, once per op that uses them
        for op in plain._get_ops_details():  # the interpreter's only listing of the graph's ops
            ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
            inputs = list(op["inputs"])
            param_uses += [int(inputs[i]) for i in PARAM_INPUTS.get(op["op_name"], ()) if i < len(inputs)
                           and inputs[i] >= 0]
        shapes = {d["index"]: d["shape"] for d in plain.get_tensor_details()}
        return {"inputs": [tensor(d) for d in self.inputs], "outputs": [tensor(d) for d in self.outputs],
                "layout": self.layout, "op_types": dict(sorted(ops.items())),
                "params": int(sum(np.prod(shapes[i]) for i in param_uses))}
