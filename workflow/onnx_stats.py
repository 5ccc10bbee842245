"""Parameter count, multiply-accumulates and file size of an ONNX model, read from its graph.

Rules (so that numbers from different exporters compare):

* ``params``: the element count of every initializer that holds weights, i.e. of
  floating-point or 8/16/32-bit integer type with at least 2 elements. int64
  initializers (shapes, axes, indices) and scalars (epsilons, quantization scales
  and zero points) are left out. Each stored tensor counts once, as in the file
  (the TorchScript exporter stores identical tensors once, e.g. an untrained
  BatchNorm's). A BatchNorm folded into Conv counts as the fused conv bias; an
  unfolded one counts its scale, bias, mean and variance. Constants the model
  keeps in its graph (e.g. a 3-element normalisation mean) count too.
* ``macs``: one multiply-accumulate per weight per output position, at batch 1,
  for Conv / ConvInteger / QLinearConv / ConvTranspose (grouped and depthwise
  included), Gemm and MatMul / MatMulInteger / QLinearMatMul. Bias additions,
  activations, pooling and element-wise ops are not counted, as in
  ``torch.utils.flop_counter`` (whose FLOPs are 2 x these MACs). Shapes come from
  ``onnx.shape_inference`` after the batch dimension of every graph input is fixed
  to 1. Subgraphs (If/Loop bodies) are not visited.
* ``size_bytes``: the size of the .onnx file plus any external-data files it names.
"""
import math
from pathlib import Path

import onnx
from onnx import TensorProto

from workflow.errors import UserError

WEIGHT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
                TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
                TensorProto.INT32, TensorProto.UINT32}

# op type -> (index of the data input, index of the weight input)
CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "ConvTranspose": (0, 1)}
MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1)}


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
    return sum(math.prod(t.dims) for t in graph.initializer
               if t.data_type in WEIGHT_TYPES and math.prod(t.dims) >= 2)


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
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = inferred.graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None
                                  for d in value.type.tensor_type.shape.dim]
    return graph, shapes


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
            inner = a[0] if node.op_type == "Gemm" and trans_a else a[-1]
            macs += math.prod(_known(shapes, node.output[0], node)) * inner
    return macs
