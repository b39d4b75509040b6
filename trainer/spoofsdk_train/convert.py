"""FP32 -> FP16 and FP32 -> INT8 (static QDQ) conversion of spoofsdk ONNX models, metadata kept. No torch.

- **FP16**: ``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``:
  weights and arithmetic in float16, input and output stay float32 so callers change nothing.
- **INT8**: ONNX Runtime static quantization, QDQ format, per-channel weights, after
  ``quant_pre_process`` (shape inference + graph optimisation, BatchNorm folded), calibrated
  on normalised face-crop tensors the caller makes with the runtime's preprocessing.

Every output keeps the model's spoofsdk metadata with ``precision`` updated and a
``quantization`` entry saying how it was made (:func:`finish`). Calibration data and the
report are :mod:`spoofsdk_train.quantize`'s, the command ``spoofsdk-train quantize``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from spoofsdk.errors import ModelError
from spoofsdk.model import ModelInfo, parse_metadata, read_metadata_props, write_metadata_props

__all__ = ["INT8_DEFAULTS", "QuantizeError", "load_fp32", "finish", "quantize_fp16", "quantize_int8", "convert"]

# INT8 settings chosen from measurements on the development CPU (AMD EPYC, 2 vCPU, AVX-512
# with VNNI); see docs/QUANTIZATION.md for the sweep tables. In short:
# - weights QInt8 per channel, activations QUInt8 ("U8S8"): the combination ONNX Runtime's
#   x86 kernels are built for; S8S8 QDQ is converted on x86 and measured no faster.
# - reduce_range=True: 7-bit weights. On x86 CPUs *without* VNNI (AVX2-only boards, older
#   Atoms/Celerons common in kiosks and access terminals), the U8S8 kernels multiply with
#   vpmaddubsw, whose int16 pair sums saturate with full 8-bit weights; 7-bit weights cannot
#   saturate. The development CPU has VNNI, where it makes no difference to speed, and the
#   measured accuracy cost on it was within noise, so the portable choice wins.
# - MinMax calibration: on face crops it matched or beat Entropy and Percentile on AUC and
#   score error, and it is the cheapest (Entropy/Percentile clip the long activation tails
#   that carry the print/screen texture cues).
INT8_DEFAULTS: dict[str, Any] = {
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "calibrate_method": "MinMax",
    "reduce_range": True,
    "per_channel": True,
    "fp32_input_convs": True,
    # ONNX node-name prefixes kept in FP32 (e.g. "/low/low.1/": a whole block of the exported
    # module tree). For models whose early, full-resolution activations carry the texture cue:
    # hybrid_mnv2's stride-2/4 blocks in 8 bits moved gc535's AUC by -0.011, in FP32 by < 0.002
    # (docs/QUANTIZATION.md). Empty: quantize everything else.
    "fp32_nodes": (),
    # "all": every operator onnxruntime can quantize. "matmul": Conv/Gemm/MatMul only, everything
    # between them in FP32 -- for graphs with precision-critical elementwise math, e.g. mnv2probe's
    # channel standard deviations, sqrt(E[x^2] - E[x]^2), which 8-bit activations destroy
    # (measured: AUC -0.014 with "all", see docs/QUANTIZATION.md).
    "op_types": "all",
}


class QuantizeError(ModelError):
    """Quantization cannot be done as asked (bad precision, no calibration data, ...)."""


class _CropReader:
    """onnxruntime CalibrationDataReader over face crops, in batches; supports ranges for strided calibration."""

    def __init__(self, tensors: np.ndarray, input_name: str, batch: int):
        self._batches = [tensors[i : i + batch] for i in range(0, len(tensors), batch)]
        self.input_name = input_name
        self.set_range(0, len(self._batches))

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self._batches[start_index:end_index])

    def get_next(self):
        b = next(self._iter, None)
        return None if b is None else {self.input_name: b}


def load_fp32(model_path: str | os.PathLike) -> tuple[bytes, ModelInfo]:
    path = Path(model_path)
    if not path.is_file():
        raise QuantizeError(f"model file not found: {path}")
    data = path.read_bytes()
    info = parse_metadata(read_metadata_props(data), str(path))  # MetadataError names what is missing
    if info.precision != "fp32":
        raise QuantizeError(f"{path} is already {info.precision}; quantize the FP32 model")
    return data, info


def finish(model_bytes: bytes, original_props: dict[str, str], precision: str, how: dict) -> bytes:
    """Put the original metadata back (tools may drop it), with precision and how it was made."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    del model.metadata_props[:]
    props = dict(original_props)
    props["precision"] = precision
    props["quantization"] = json.dumps(how, sort_keys=True)
    return write_metadata_props(model.SerializeToString(), props)


def quantize_fp16(model_bytes: bytes) -> bytes:
    """FP16 weights and arithmetic, float32 input/output (``keep_io_types=True``)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load_from_string(model_bytes)
    _name_nodes(model)  # the converter names its Cast nodes after their neighbours: empty names collide
    converted = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    return converted.SerializeToString()


def _name_nodes(model) -> None:
    """Give every unnamed node a unique name (the quantizer and the FP16 converter key on names)."""
    names = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
            while n.name in names:
                n.name += "_"
            names.add(n.name)


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    try:
        return getattr(QuantType, name)
    except AttributeError:
        raise QuantizeError(f"unknown quantization type {name!r}: use QUInt8 or QInt8") from None


def _calib_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    try:
        return getattr(CalibrationMethod, name)
    except AttributeError:
        raise QuantizeError(f"unknown calibration method {name!r}: use MinMax, Entropy or Percentile") from None


def _preprocess(model_bytes: bytes, workdir: Path) -> Path:
    """``quant_pre_process`` (shape inference, graph optimisation), and a name for every node."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = workdir / "fp32.onnx", workdir / "fp32.pre.onnx"
    src.write_bytes(model_bytes)
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    model = onnx.load(str(dst))
    _name_nodes(model)
    onnx.save(model, str(dst))
    return dst


def _input_convs(graph, max_channels: int = 4) -> list[str]:
    """Conv nodes of ``graph`` (an onnx GraphProto) that read few channels (the raw image: stems, fixed high-pass filters)."""
    weights = {t.name: list(t.dims) for t in graph.initializer}
    out = []
    for n in graph.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in weights:
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if weights[n.input[1]][1] * group <= max_channels:
            out.append(n.name)
    return out


def _nodes_named(graph, prefixes: Sequence[str]) -> list[str]:
    """Names of the nodes of ``graph`` under each of ``prefixes``; a prefix that names no node is an
    error (a typo would otherwise quantize the block it meant to keep)."""
    if isinstance(prefixes, str):  # one prefix given bare, not as a 1-tuple
        prefixes = (prefixes,)
    if not prefixes:
        return []
    if any(not p for p in prefixes):
        raise QuantizeError("fp32_nodes: an empty prefix would name every node (the whole model would stay FP32)")
    names = [n.name for n in graph.node]
    out = []
    for prefix in prefixes:
        hit = [n for n in names if n.startswith(prefix)]
        if not hit:
            raise QuantizeError(f"fp32_nodes: no node of the model is named {prefix!r}... (names look like {names[0]!r})")
        out += hit
    return out


def _image_input_name(graph) -> str:
    """The graph's one real input (older exporters also list initializers as inputs)."""
    weights = {init.name for init in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise QuantizeError(f"INT8 calibration expects a model with one image input, this one has {inputs}")
    return inputs[0]


def quantize_int8(
    model_bytes: bytes,
    calib_tensors: np.ndarray,
    *,
    activation_type: str = INT8_DEFAULTS["activation_type"],
    weight_type: str = INT8_DEFAULTS["weight_type"],
    calibrate_method: str = INT8_DEFAULTS["calibrate_method"],
    reduce_range: bool = INT8_DEFAULTS["reduce_range"],
    per_channel: bool = INT8_DEFAULTS["per_channel"],
    fp32_input_convs: bool = INT8_DEFAULTS["fp32_input_convs"],
    op_types: str = INT8_DEFAULTS["op_types"],
    fp32_nodes: Sequence[str] = INT8_DEFAULTS["fp32_nodes"],
    percentile: float = 99.999,
    workdir: str | os.PathLike | None = None,
    calibration_cache: str | os.PathLike | None = None,
) -> bytes:
    """Static QDQ quantization of ``model_bytes`` calibrated on ``calib_tensors`` (normalised NCHW float32)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_static

    if op_types not in ("all", "matmul"):
        raise QuantizeError(f"op_types must be 'all' or 'matmul', got {op_types!r}")
    if calib_tensors is None or len(calib_tensors) == 0:
        raise QuantizeError("INT8 needs calibration data: pass face crops (a folder or the trainer's manifest)")
    with tempfile.TemporaryDirectory(prefix="spoofsdk-q-") as tmp:
        work = Path(workdir) if workdir else Path(tmp)
        pre = _preprocess(model_bytes, work)
        graph = onnx.load(str(pre)).graph  # read once: the input's name and both exclusion rules
        input_name = _image_input_name(graph)
        batch = 8
        n_batches = -(-len(calib_tensors) // batch)
        # Strided calibration bounds memory: ranges/histograms are gathered `stride` batches at a
        # time (the calibrator otherwise keeps every intermediate tensor of every sample).
        stride = max(d for d in range(1, 5) if n_batches % d == 0)
        extra = {
            "CalibStridedMinMax": stride,
            "CalibPercentile": percentile,
            "WeightSymmetric": True,
            "ActivationSymmetric": False,
        }
        out = work / "int8.onnx"
        exclude = sorted(set(_input_convs(graph) if fp32_input_convs else []) | set(_nodes_named(graph, fp32_nodes)))
        quantize_static(
            str(pre),
            str(out),
            _CropReader(np.ascontiguousarray(calib_tensors, dtype=np.float32), input_name, batch),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=_quant_type(activation_type),
            weight_type=_quant_type(weight_type),
            calibrate_method=_calib_method(calibrate_method),
            calibration_cache_path=str(calibration_cache) if calibration_cache else None,
            nodes_to_exclude=exclude,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"] if op_types == "matmul" else None,
            extra_options=extra,
        )
        return out.read_bytes()


def convert(model_bytes: bytes, precision: str, calib_tensors: np.ndarray | None = None, **int8_options: Any) -> tuple[bytes, dict]:
    """``model_bytes`` (FP32 with metadata) as ``precision``, metadata restored; returns (bytes, how it was made)."""
    if precision == "fp16":
        how: dict[str, Any] = {"tool": "onnxconverter-common convert_float_to_float16", "keep_io_types": True}
        converted = quantize_fp16(model_bytes)
    elif precision == "int8":
        unknown = set(int8_options) - set(INT8_DEFAULTS) - {"percentile"}
        if unknown:
            raise QuantizeError(f"unknown INT8 option(s): {', '.join(sorted(unknown))}")
        options = {**INT8_DEFAULTS, **int8_options}
        converted = quantize_int8(model_bytes, calib_tensors, **options)
        how = {"tool": "onnxruntime quantize_static", "format": "QDQ", "calibration_samples": len(calib_tensors), **options}
    else:
        raise QuantizeError(f"precision must be fp16 or int8, got {precision!r}")
    return finish(converted, read_metadata_props(model_bytes), precision, how), how
