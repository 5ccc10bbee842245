"""Parameter count, multiply-accumulates and file size of an ONNX model, read from its graph.

Rules (so that numbers from different exporters, formats and precisions compare):

* ``params``: the parameters of the network as deployed, one rule for ONNX, TF Lite and PyTorch
  (:data:`PARAM_SLOTS` here, :data:`workflow.litert.PARAM_INPUTS`, :func:`workflow.models.count_params`):
  the weights and biases of convolutions and matrix products (Conv, ConvTranspose, Gemm, MatMul with a
  constant operand and their integer forms), one shift per channel for each BatchNorm (its scale folds
  into the convolution's weights; an exporter folds the whole BatchNorm into the conv's bias), the scale
  and bias of other normalisations and PReLU slopes. A stored tensor reaches its op through
  dequantization, casts and layout changes (DequantizeLinear, Cast, Transpose, Reshape, ...) and counts
  once per op that uses it, whatever its precision. Not parameters: quantization scales and zero points
  (so an int8 file counts what its fp32 source counts), BatchNorm statistics, shape and index tensors,
  and constants of element-wise ops such as the input normalisation's mean and 1/std.
* ``macs``: one multiply-accumulate per weight per output position, at batch 1,
  for Conv / ConvInteger / QLinearConv / ConvTranspose (grouped and depthwise
  included), Gemm / QGemm and MatMul / MatMulInteger / QLinearMatMul. Bias additions,
  activations, pooling and element-wise ops are not counted, as in
  ``torch.utils.flop_counter`` (whose FLOPs are 2 x these MACs). Shapes come from
  ``onnx.shape_inference`` after the batch dimension of every graph input is fixed
  to 1; where it stops (ONNX Runtime's contrib ops in QOperator files: QLinearAdd,
  QLinearGlobalAveragePool ...), from one all-zero batch-1 run of ONNX Runtime. Subgraphs
  (If/Loop bodies) are not visited.
* ``size_bytes``: the size of the .onnx file plus any external-data files it names.
"""
import math
from pathlib import Path

import onnx

from workflow.errors import UserError

# op type -> input slots that hold the network's parameters (weights, biases, per-channel shifts)
PARAM_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "ConvInteger": (1,), "QLinearConv": (3, 8),
               "Gemm": (0, 1, 2), "QGemm": (3, 6), "MatMul": (0, 1), "MatMulInteger": (0, 1),
               "QLinearMatMul": (0, 3), "BatchNormalization": (2,), "InstanceNormalization": (1, 2),
               "LayerNormalization": (1, 2), "PRelu": (1,)}
# Ops a stored tensor passes through on its way to the op that uses it (their data input is slot 0).
PASS_THROUGH = {"DequantizeLinear", "Cast", "Transpose", "Reshape", "Identity", "Unsqueeze", "Squeeze", "Flatten"}
# Products whose bias is a separate Add: MatMul, and the integer forms after rescaling (Cast, Mul).
BIAS_ADDED_AFTER = {"ConvInteger", "MatMulInteger", "MatMul"}

# op type -> (index of the data input, index of the weight input)
CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "ConvTranspose": (0, 1)}
MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1), "QGemm": (0, 3)}


def onnx_stats(path):
    path = Path(path)
    try:
        model = onnx.load(path, load_external_data=False)
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found") from None
    except Exception as err:  # protobuf raises its own DecodeError
        raise UserError(f"{path}: not a readable ONNX model ({err})") from None
    return {"params": count_params(model.graph),
            "macs": count_macs(model),
            "size_bytes": path.stat().st_size + _external_data_bytes(model.graph, path.parent)}


def count_params(graph):
    """Element count of the stored tensors the graph uses as parameters (module docstring), once per use:
    exporters and optimizers store equal tensors once (an untrained model's zero biases) and hand the one
    tensor to every conv that has those values."""
    consumers, producer = {}, {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, slot))
        for name in node.output:
            producer[name] = node
    return sum(math.prod(t.dims) * _param_uses(t.name, consumers, producer) for t in graph.initializer)


def _param_uses(name, consumers, producer):
    """How many parameter slots a stored tensor reaches, through :data:`PASS_THROUGH` ops."""
    pending, uses = [name], 0
    while pending:
        tensor = pending.pop()
        for node, slot in consumers.get(tensor, ()):
            if node.op_type in PASS_THROUGH and slot == 0:
                pending += node.output[:1]
            elif slot in PARAM_SLOTS.get(node.op_type, ()) or (
                    node.op_type == "Add" and _is_bias_add(node, slot, producer)):
                uses += 1
    return uses


def _is_bias_add(node, slot, producer):
    """An Add whose other operand is the (rescaled) result of a product in :data:`BIAS_ADDED_AFTER`."""
    source = producer.get(node.input[1 - slot]) if len(node.input) == 2 else None
    while source is not None and source.op_type in ("Cast", "Mul", "Reshape"):
        source = producer.get(source.input[0])
    return source is not None and source.op_type in BIAS_ADDED_AFTER


def _external_data_bytes(graph, folder):
    locations = {entry.value for t in graph.initializer for entry in t.external_data if entry.key == "location"}
    return sum((folder / loc).stat().st_size for loc in locations if (folder / loc).is_file())


def _shapes(model):
    """Batch-1 shapes of every tensor in the graph: {name: [int or None, ...]}."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # do not edit the caller's copy
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name not in initializers and len(dims) > 0:
            dims[0].Clear()
            dims[0].dim_value = 1
    graph = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None
                                  for d in value.type.tensor_type.shape.dim]
    unknown = [out for node in graph.node for out in node.output
               if out and (shapes.get(out) is None or None in shapes[out])]
    if unknown:  # ONNX's inference stops at ONNX Runtime's contrib ops (QLinearAdd, QLinearGlobalAveragePool ...)
        shapes.update(_runtime_shapes(model, unknown))
    return graph, shapes


def _runtime_shapes(model, names):
    """{name: shape} of tensors as ONNX Runtime computes them for one all-zero batch-1 input."""
    import numpy as np
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names
                              if n not in {o.name for o in model.graph.output})
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name not in initializers:
            dims = [d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            feeds[value.name] = np.zeros([1, *dims[1:]] if dims else [], dtype=dtype)
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return {n: list(a.shape) for n, a in zip(names, session.run(names, feeds))}
    except Exception:  # ORT raises its own exception types; the caller names the node whose shape is unknown
        return {}


def _unknown_outputs(model):
    """Whether some node output has no static shape after inference."""
    known = {v.name for v in [*model.graph.value_info, *model.graph.output]
             if v.type.tensor_type.HasField("shape")
             and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}
    return any(out not in known for node in model.graph.node for out in node.output if out)


def _known(shapes, name, node):
    shape = shapes.get(name)
    if shape is None or None in shape:
        raise UserError(f"cannot count MACs of {node.op_type} node '{node.name}': shape of '{name}' is "
                        f"unknown after shape inference (dynamic dimension other than batch?)")
    return shape


def count_macs(model):
    graph, shapes = _shapes(model)
    macs = 0
    for node in graph.node:
        if node.op_type in CONV_OPS:
            data, weight = CONV_OPS[node.op_type]
            w = _known(shapes, node.input[weight], node)
            # Conv: every output element takes (C_in / groups) * k_h * k_w MACs = prod(W.shape[1:]).
            # ConvTranspose scatters every input element through (C_out / groups) * k_h * k_w weights.
            positions = node.input[data] if node.op_type == "ConvTranspose" else node.output[0]
            macs += math.prod(_known(shapes, positions, node)) * math.prod(w[1:])
        elif node.op_type in MATMUL_OPS:
            data, _ = MATMUL_OPS[node.op_type]
            a = _known(shapes, node.input[data], node)
            trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
            inner = a[0] if node.op_type in ("Gemm", "QGemm") and trans_a else a[-1]
            macs += math.prod(_known(shapes, node.output[0], node)) * inner
    return macs
