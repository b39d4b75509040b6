"""Parameters and multiply-accumulates counted on an ONNX graph (torch-free).

The one MAC counter for model files: the benchmarks count every model they measure with it, the
exported metadata's ``macs`` is checked against it (tests/test_one_house.py cross-checks it with the
torch hook counter :func:`spoofsdk_train.models.count_macs` on every registered architecture).
Counted: Conv, Gemm and MatMul nodes whose weights are initializers, per image (batch 1).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["onnx_params_macs"]

_FLOAT_TYPES = (1, 10, 16)  # FLOAT, FLOAT16, BFLOAT16


def onnx_params_macs(model) -> tuple[int, int]:
    """(parameters in float initializers, MACs per image of Conv/Gemm/MatMul) of an ONNX model, path or bytes."""
    import onnx
    from onnx import shape_inference

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(str(Path(model)))
    elif isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in _FLOAT_TYPES)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:  # batch 1 so every shape is concrete
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(m)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    macs = 0
    for n in inferred.graph.node:
        out = shapes.get(n.output[0])
        if not out or not all(out) or len(n.input) < 2 or n.input[1] not in inits:
            continue
        w = inits[n.input[1]]
        if n.op_type == "Conv":
            macs += int(np.prod(out[1:])) * w[1] * int(np.prod(w[2:]))
        elif n.op_type in ("Gemm", "MatMul"):
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            macs += int(np.prod(out[1:])) * (w[1] if trans_b else w[0])
    return int(params), int(macs)
