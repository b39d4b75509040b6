"""Loading spoofsdk ONNX models of any precision, and the metadata they carry.

A spoofsdk model is a plain ONNX file whose ``metadata_props`` hold everything needed to
preprocess its input and read its output (see :data:`REQUIRED_KEYS` and the README's
"Model metadata" section). The runtime needs no side files, so preprocessing cannot drift
away from what the model was trained with.

Embedded models live in ``spoofsdk/assets`` and are listed in :data:`EMBEDDED_MODELS` with
their SHA-256; a file whose hash differs is refused (it was corrupted or tampered with).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .errors import MetadataError, ModelError

if TYPE_CHECKING:
    from .crop import FaceCrop

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_KEYS",
    "EMBEDDED_MODELS",
    "DEFAULT_MODEL",
    "ModelInfo",
    "SpoofModel",
    "load_model",
    "resolve_model_path",
    "parse_metadata",
    "read_metadata_props",
    "write_metadata_props",
]

FORMAT_VERSION = "1"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"

# key -> what it holds. All values are strings in the ONNX file.
REQUIRED_KEYS: dict[str, str] = {
    "spoofsdk_format": "metadata format version, currently '1'",
    "name": "model name, e.g. 'edgenet'",
    "architecture": "architecture name as in the trainer's registry",
    "precision": "fp32 | fp16 | int8",
    "input_size": "model input 'HEIGHTxWIDTH' in pixels (square), e.g. '128x128'",
    "color_order": "RGB | BGR, channel order the model expects",
    "mean": "per-channel mean on [0,1] pixels, comma-separated, in the model's colour order",
    "std": "per-channel std on [0,1] pixels, comma-separated, in the model's colour order",
    "crop_scale": "side of the square crop / longer side of the face box",
    "output": "'logits2' (two logits, order in class_order), 'logit1' (one logit, sigmoid = P(real)) or "
    "'logitsN' (N logits, softmax; P(real) = sum over the classes named 'real' in class_order)",
    "class_order": "comma-separated class names of the output, e.g. 'spoof,real' (logitsN: e.g. 'spoof,real,spoof')",
    "threshold": "decision threshold on P(real): score >= threshold means real",
}
OPTIONAL_KEYS: dict[str, str] = {
    "training_data": "what the model was trained on, and the licences of that data",
    "metrics": "JSON object of evaluation figures per test set",
    "license": "intended use / licence of the weights",
    "description": "free text",
    "created": "ISO date of export",
    "threshold_source": "how the threshold was chosen",
    "params": "number of parameters",
    "macs": "multiply-accumulates per image",
    "crop_policy": "'pad' (default when absent: square, padded past the frame) or 'shift_cap' "
    "(MiniFASNet's: rectangle scaled from the box, scale capped to fit, shifted inside, never padded); see spoofsdk.crop",
}
OUTPUTS = ("logits2", "logit1", "logitsN")
# onnxruntime's element type string -> the NumPy dtype fed or read. Other exporters' FP16 files take float16
# input (the trainer's FP16 export keeps float32 I/O); predict() casts each batch to the input's dtype.
FLOAT_TENSOR_TYPES: dict[str, type] = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
PRECISIONS = ("fp32", "fp16", "int8")

# name -> precision -> (file in assets/, sha256). Written by scripts/embed_default.py; see the
# README's model card.
# The default, hybrid_mnv2: the SPOOF hybrid (issue 11) on ImageNet MobileNetV2 trunk[:14], stages 0-6
# frozen as ImageNet left them, the seed's texture branch at stride 8 and its head; trained on every
# domain but gc535, distilled from the MiniFASNet pair (Apache-2.0), with SSDG's domain critic and
# asymmetric triplet loss. Chosen on the leave-one-source-out table (docs/TRAINING.md), two seeds of the recipe
# (metrics.loso and metrics.loso.replicates): above mnv2probe on the mean and the worst held-out domain.
# INT8 is the default precision (0.85 MB); the FP32 sibling serves the browser demo and precision="fp32".
_HYBRID_MNV2 = {
    "int8": ("hybrid_mnv2-int8.onnx", "5c172ad1a776095584a16ee53bbecabbf3097f58938371da775fbdc6de8f59bd"),
    "fp32": ("hybrid_mnv2-fp32.onnx", "e1a75c0bc9cd2e69ddb92be91d12e9149dfced3ddb466d88bb72a023881fd950"),
}
# The previous default, mnv2probe: the same frozen trunk[:14], texture statistics and a linear head
# (mean held-out AUC 0.80 over 11 domains, 0.88 over the 9 webcam sources); cheaper to retrain (seconds
# on cached statistics) and the best on some cameras (AksultanMukhanbet).
_MNV2PROBE = {
    "int8": ("mnv2probe-int8.onnx", "e5126203523e5e238b3d76576991261996a9a0d94b8fe4afedffe111b75d7514"),
    "fp32": ("mnv2probe-fp32.onnx", "60c12384ee13ce75e5601743309c11944c518a861233b0188adec5b5e2e13ddc"),
}
# EdgeNet, trained on NUAA + gc535 only: accurate on those two sets, at chance or
# backwards on other cameras. Kept as named models for comparison and for gc535-like setups.
_EDGENET = {
    "int8": ("edgenet-int8.onnx", "c62da88cc1a0df735ece366f407f603140f5908e9c5bc64b7991126d586bcc0d"),
    "fp32": ("edgenet-fp32.onnx", "df38977efc62444b7fb0ca2ce7635bc040d9808b478830c2977c0ed96e48dda0"),
}
# SpoofNet, the seed's plain 224x224 CNN (4,881,442 parameters, 3.28 G MACs), trained on every domain on a
# random 70/15/15 split for comparison with the seed's published 99.94 %; INT8 only (FP32 is 19.5 MB).
_SPOOFNET = {"int8": ("spoofnet-int8.onnx", "067d1ad243e9633c7edf9d4a576d3467c153f6b618b4ff6b3bf025c38ecc68cb")}
EMBEDDED_MODELS: dict[str, dict[str, tuple[str, str]]] = {
    "default": _HYBRID_MNV2, "hybrid_mnv2": _HYBRID_MNV2, "mnv2probe": _MNV2PROBE, "edgenet": _EDGENET, "spoofnet": _SPOOFNET,
}
DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class ModelInfo:
    """The validated metadata of a spoofsdk model."""

    name: str
    architecture: str
    precision: str
    input_size: int
    color_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_scale: float
    output: str
    class_order: tuple[str, ...]
    threshold: float
    format_version: str = FORMAT_VERSION
    extra: Mapping[str, str] = field(default_factory=dict)
    crop_policy: str = "pad"

    @property
    def metrics(self) -> dict[str, Any]:
        try:
            value = json.loads(self.extra.get("metrics", "{}"))
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}  # figures per set, or nothing: never a bare list or number

    def to_props(self) -> dict[str, str]:
        """The metadata as ONNX ``metadata_props`` strings (inverse of :func:`parse_metadata`)."""
        props = dict(self.extra)
        props.update(
            spoofsdk_format=self.format_version,
            name=self.name,
            architecture=self.architecture,
            precision=self.precision,
            input_size=f"{self.input_size}x{self.input_size}",
            color_order=self.color_order,
            mean=",".join(repr(float(v)) for v in self.mean),
            std=",".join(repr(float(v)) for v in self.std),
            crop_scale=repr(float(self.crop_scale)),
            output=self.output,
            class_order=",".join(self.class_order),
            threshold=repr(float(self.threshold)),
        )
        if self.crop_policy != "pad":  # absent means 'pad': files without the key round-trip unchanged
            props["crop_policy"] = self.crop_policy
        return props

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.to_props().items()}
        d["metrics"] = self.metrics
        return d


MIN_STD, MAX_NORM = 1e-4, 1e3  # bounds of the metadata's normalisation (see parse_metadata)


def _floats(key: str, text: str, n: int) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise MetadataError(f"metadata '{key}' must be {n} comma-separated numbers, got {text!r}") from None
    if len(values) != n or not all(np.isfinite(values)):
        raise MetadataError(f"metadata '{key}' must be {n} finite numbers, got {text!r}")
    return values


def parse_metadata(props: Mapping[str, str], source: str = "model") -> ModelInfo:
    """Validate ``metadata_props`` and return :class:`ModelInfo`; raise :class:`MetadataError` naming what is wrong."""
    missing = [k for k in REQUIRED_KEYS if k not in props]
    if missing:
        raise MetadataError(
            f"{source} has no valid spoofsdk metadata: missing {', '.join(missing)}. "
            "Export models with the trainer (spoofsdk-train export), which writes them."
        )
    if props["spoofsdk_format"] != FORMAT_VERSION:
        raise MetadataError(f"{source}: metadata format {props['spoofsdk_format']!r} is not supported (expected {FORMAT_VERSION!r})")
    precision = props["precision"].lower()
    if precision not in PRECISIONS:
        raise MetadataError(f"{source}: precision must be one of {PRECISIONS}, got {props['precision']!r}")
    try:
        h, w = (int(v) for v in props["input_size"].lower().split("x"))
    except ValueError:
        raise MetadataError(f"{source}: input_size must look like '128x128', got {props['input_size']!r}") from None
    if h != w or not 16 <= h <= 1024:
        raise MetadataError(f"{source}: input_size must be square, 16..1024 px, got {props['input_size']!r}")
    color_order = props["color_order"].upper()
    if color_order not in ("RGB", "BGR"):
        raise MetadataError(f"{source}: color_order must be RGB or BGR, got {props['color_order']!r}")
    mean = _floats("mean", props["mean"], 3)
    std = _floats("std", props["std"], 3)
    # Inputs are 0..1 before (x - mean) / std: 1/255 (a model fed 0..255) is the smallest std in use. A std far
    # below it, or a huge mean, turns every crop into overflow in float32, and every face into a silent 0.
    if not all(MIN_STD <= v <= MAX_NORM for v in std):
        raise MetadataError(f"{source}: std must lie in {MIN_STD:g}..{MAX_NORM:g}, got {props['std']!r}")
    if not all(abs(v) <= MAX_NORM for v in mean):
        raise MetadataError(f"{source}: mean must lie in -{MAX_NORM:g}..{MAX_NORM:g}, got {props['mean']!r}")
    (crop_scale,) = _floats("crop_scale", props["crop_scale"], 1)
    if not 0.5 <= crop_scale <= 4.0:
        raise MetadataError(f"{source}: crop_scale must be in [0.5, 4], got {crop_scale}")
    output = props["output"]
    class_order = tuple(c.strip() for c in props["class_order"].split(","))
    if output == "logits2":
        if sorted(class_order) != ["real", "spoof"]:
            raise MetadataError(f"{source}: class_order for logits2 must name 'real' and 'spoof', got {props['class_order']!r}")
    elif output == "logit1":
        if class_order != ("real",):
            raise MetadataError(f"{source}: class_order for logit1 must be 'real', got {props['class_order']!r}")
    elif output == "logitsN":
        if len(class_order) < 2 or set(class_order) != {"real", "spoof"}:
            raise MetadataError(
                f"{source}: class_order for logitsN must name each output 'real' or 'spoof', both present, got {props['class_order']!r}"
            )
    else:
        raise MetadataError(f"{source}: output must be one of {OUTPUTS}, got {output!r}")
    from .crop import CROP_POLICIES

    crop_policy = props.get("crop_policy", "pad")
    if crop_policy not in CROP_POLICIES:
        raise MetadataError(f"{source}: crop_policy must be one of {CROP_POLICIES}, got {crop_policy!r}")
    (threshold,) = _floats("threshold", props["threshold"], 1)
    if not 0.0 < threshold < 1.0:
        raise MetadataError(f"{source}: threshold must be in (0, 1), got {threshold}")
    extra = {k: v for k, v in props.items() if k not in REQUIRED_KEYS and k != "crop_policy"}
    return ModelInfo(
        name=props["name"],
        architecture=props["architecture"],
        precision=precision,
        input_size=h,
        color_order=color_order,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        crop_scale=crop_scale,
        output=output,
        class_order=class_order,
        threshold=threshold,
        format_version=props["spoofsdk_format"],
        extra=extra,
        crop_policy=crop_policy,
    )


# --- metadata_props without the onnx package -------------------------------------------
# ModelProto.metadata_props is field 14, a repeated StringStringEntryProto {key = 1, value = 2}.
# Reading and rewriting it needs only the protobuf wire format, so the runtime can read
# metadata before building a session and `spoofsdk calibrate` can write a new threshold
# without depending on the onnx package.
_METADATA_FIELD = 14


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ModelError("not a valid ONNX file (truncated protobuf varint)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ModelError("not a valid ONNX file (bad protobuf varint)")


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: bytes):
    """Yield (field_number, wire_type, payload_or_value, raw_bytes) for each top-level field."""
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ModelError(f"not a valid ONNX file (protobuf wire type {wire})")
        if pos > len(buf) or number == 0:
            raise ModelError("not a valid ONNX file (truncated protobuf field)")
        yield number, wire, value, buf[start:pos]


def _entry(payload: bytes) -> tuple[str, str]:
    key = value = ""
    for number, wire, v, _ in _fields(payload):
        if wire == 2 and number == 1:
            key = bytes(v).decode("utf-8", "replace")
        elif wire == 2 and number == 2:
            value = bytes(v).decode("utf-8", "replace")
    return key, value


def read_metadata_props(model_bytes: bytes) -> dict[str, str]:
    """The ``metadata_props`` of a serialized ONNX model."""
    props: dict[str, str] = {}
    for number, wire, value, _ in _fields(model_bytes):
        if number == _METADATA_FIELD and wire == 2:
            k, v = _entry(bytes(value))
            props[k] = v
    return props


def write_metadata_props(model_bytes: bytes, updates: Mapping[str, str]) -> bytes:
    """Return the serialized model with ``updates`` set in its ``metadata_props`` (other keys kept)."""
    props = read_metadata_props(model_bytes)
    props.update({str(k): str(v) for k, v in updates.items()})
    kept = [raw for number, wire, _, raw in _fields(model_bytes) if not (number == _METADATA_FIELD and wire == 2)]
    tag = _write_varint((_METADATA_FIELD << 3) | 2)
    entries = []
    for k, v in props.items():
        kb, vb = k.encode(), v.encode()
        payload = b"\x0a" + _write_varint(len(kb)) + kb + b"\x12" + _write_varint(len(vb)) + vb
        entries.append(tag + _write_varint(len(payload)) + payload)
    return b"".join(kept) + b"".join(entries)


# --- resolving and loading -----------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_model_path(model: str | os.PathLike | None = None, precision: str | None = None) -> tuple[Path, str | None]:
    """Map a model name or path to a file. Returns ``(path, expected_sha256 or None)``.

    ``None`` or ``"default"`` is the embedded default; another registered name picks that
    embedded model; anything else is a file path.
    """
    name = DEFAULT_MODEL if model is None else str(model)
    if precision is not None and precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if name in EMBEDDED_MODELS:
        variants = EMBEDDED_MODELS[name]
        chosen = precision or ("int8" if "int8" in variants else next(iter(variants)))
        if chosen not in variants:
            raise ModelError(f"embedded model {name!r} has no {chosen} version; available: {', '.join(variants)}")
        filename, sha = variants[chosen]
        return ASSETS_DIR / filename, sha
    path = Path(name)
    if not path.exists():
        known = ", ".join(sorted(EMBEDDED_MODELS)) or "none"
        raise ModelError(f"model file not found: {path} (embedded model names: {known})")
    return path, None


class SpoofModel:
    """An ONNX Runtime session over a spoofsdk model, with its :class:`ModelInfo`.

    ``predict`` takes a normalised NCHW batch and returns P(real) per image;
    ``score_crops`` takes BGR uint8 crops of the model's input size.
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes | None = None,
        *,
        precision: str | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        spin_wait: bool = False,
    ) -> None:
        if isinstance(model, (bytes, bytearray)):
            data, source, expected = bytes(model), "<bytes>", None
        else:
            path, expected = resolve_model_path(model, precision)
            source = str(path)
            try:
                data = path.read_bytes()
            except OSError as e:
                raise ModelError(f"cannot read model file {path}: {e}") from e
        if expected is not None and _sha256(data) != expected:
            raise ModelError(f"embedded model {source} fails its SHA-256 check: the file is corrupted or was modified")
        self.source = source
        self.sha256 = _sha256(data)
        self.session = _make_session(data, source, threads, providers, spin_wait)
        try:
            props = self.session.get_modelmeta().custom_metadata_map
        except UnicodeDecodeError as e:  # onnxruntime decodes metadata as UTF-8 and raises on anything else
            raise MetadataError(f"{source}: model metadata is not valid UTF-8 ({e})") from e
        self.info = parse_metadata(props, source)
        if precision is not None and self.info.precision != precision:
            raise ModelError(f"{source} is a {self.info.precision} model, but precision={precision!r} was requested")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"{source}: expected one input, found {len(inputs)}")
        if not outputs:  # onnxruntime opens a graph whose output list is empty (found by the model-file fuzzer)
            raise ModelError(f"{source}: the model has no output")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        # onnxruntime checks the feed's element type on every run: a float16 input loaded fine and then failed
        # every face with INVALID_ARGUMENT. Read it here, refuse what a normalised crop cannot be cast to.
        if inputs[0].type not in FLOAT_TENSOR_TYPES:
            raise ModelError(f"{source}: input element type is {inputs[0].type}; the runtime feeds normalised crops "
                             f"as one of {', '.join(FLOAT_TENSOR_TYPES)}")
        self.input_dtype = np.dtype(FLOAT_TENSOR_TYPES[inputs[0].type])
        # Only the first output is read. A BOOL output read as logits is 0s and 1s (a test model scored every
        # face 0.5, `real` under any threshold below 0.5); integers or strings are no logits either. Refused.
        if outputs[0].type not in FLOAT_TENSOR_TYPES:
            raise ModelError(f"{source}: output {self.output_name!r} has element type {outputs[0].type}; "
                             f"the {self.info.output} output must be one of {', '.join(FLOAT_TENSOR_TYPES)}")
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] not in (3, "3") or any(
            isinstance(d, int) and d != self.info.input_size for d in shape[2:]
        ):
            raise ModelError(f"{source}: input shape {shape} does not match metadata input_size {self.info.input_size}")
        self._fixed_batch = shape[0] if isinstance(shape[0], int) else None
        if self._fixed_batch not in (None, 1):  # predict() runs one face at a time on a fixed batch; only 1 fits
            raise ModelError(f"{source}: input batch is fixed at {self._fixed_batch}; export it with a dynamic batch or a batch of 1")
        self._n_out = 1 if self.info.output == "logit1" else len(self.info.class_order)
        out_shape = list(outputs[0].shape or [])
        # predict() reads the output batch-first, n_out values per face. The values per face are every dimension
        # after the batch (a [N, 2, 2] output has 4, not the 2 its last dimension suggests); a rank-1 output is
        # its own width. Symbolic dimensions are checked on the first answer (predict).
        per_face = out_shape[1:] if len(out_shape) >= 2 else out_shape
        if per_face and all(isinstance(d, int) for d in per_face) and int(np.prod(per_face)) != self._n_out:
            raise ModelError(f"{source}: output of shape {out_shape} has {int(np.prod(per_face))} values per face but "
                             f"metadata output/class_order describe {self._n_out}")
        # With a dynamic input batch, a fixed first output dimension above 1 is not the batch (a class-major
        # [2, N] output): its size matches N faces, so predict() would pair one face's logit with another's.
        if self._fixed_batch is None and len(out_shape) >= 2 and isinstance(out_shape[0], int) and out_shape[0] > 1:
            raise ModelError(f"{source}: output of shape {out_shape} does not lead with the batch dimension")
        self._real = np.array([c == "real" for c in self.info.class_order])

    @property
    def threshold(self) -> float:
        return self.info.threshold

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """P(real) for each image of a normalised NCHW float32 batch (cast to the model's input type).

        NaN where the input or the model's raw output is not finite (broken data, an FP16
        overflow): that face has no score. NaN compares false with every threshold, so it never
        reads as live; :class:`~spoofsdk.LivenessChecker` reports such a face ``unknown`` (reason
        ``error``) and :mod:`spoofsdk.metrics` refuses it.
        """
        if self._fixed_batch is not None and batch.shape[0] != self._fixed_batch:
            return np.concatenate([self.predict(batch[i : i + 1]) for i in range(batch.shape[0])])
        # Cast to the model's input type (onnxruntime refuses any other). A value beyond float16's range becomes
        # inf here, which is what the model sees, so the finiteness check below reads the cast batch.
        with np.errstate(over="ignore"):
            feed = np.asarray(batch, dtype=self.input_dtype)
        try:
            out = self.session.run([self.output_name], {self.input_name: feed})[0]
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelError(f"inference failed on {self.source}: {e}") from e
        out = np.asarray(out, dtype=np.float64)  # float16 / float32 / double logits: the score maths in float64
        if out.size != batch.shape[0] * self._n_out:  # a symbolic output width the load could not check
            raise ModelError(f"{self.source}: output of shape {out.shape} for {batch.shape[0]} face(s); "
                             f"metadata output/class_order describe {self._n_out} value(s) per face")
        out = out.reshape(batch.shape[0], self._n_out)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow and inf - inf are caught below, row by row
            if self.info.output == "logit1":
                scores = 1.0 / (1.0 + np.exp(-out[:, 0]))
            else:
                # Softmax; P(real) sums every class named real (one for logits2, any for logitsN).
                z = out - out.max(axis=1, keepdims=True)
                p = np.exp(z)
                scores = p[:, self._real].sum(axis=1) / p.sum(axis=1)
        # A non-finite output or input is broken data: no score at all, neither live nor attack. The raw
        # outputs are checked, not only the score: a logit of +inf (an FP16 overflow) gives a finite
        # P(real) of 1.0, and a quantized model maps an all-NaN input to a finite, possibly high, score.
        finite = np.isfinite(out).all(axis=1) & np.isfinite(feed.reshape(feed.shape[0], -1)).all(axis=1)
        return np.where(np.isfinite(scores) & finite, scores, np.nan)

    def crop_face(self, frame: np.ndarray, box: Sequence[float]) -> FaceCrop:
        """The crop this model takes of face ``box`` in ``frame``: its crop scale, input size and crop policy."""
        from .crop import crop_face

        return crop_face(frame, box, self.info.crop_scale, self.info.input_size, self.info.crop_policy)

    def fit_crop(self, image: np.ndarray) -> np.ndarray:
        """An image that is already a face crop -> this model's input crop (see :func:`spoofsdk.crop.fit_face_crop`)."""
        from .crop import fit_face_crop

        return fit_face_crop(image, self.info.input_size, self.info.crop_policy)

    def score_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """P(real) for BGR uint8 crops of the model's input size."""
        from .crop import to_tensor

        if len(crops) == 0:
            return np.zeros(0)
        return self.predict(to_tensor(crops, self.info.color_order, self.info.mean, self.info.std))


def _make_session(data: bytes, source: str, threads: int | None, providers: Sequence[str] | None, spin_wait: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning keeps idle cores busy between calls; in a camera loop that waits for the next
    # frame it burns power and steals CPU from the detector, so it is off unless asked for.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    available = ort.get_available_providers()
    chosen = list(providers) if providers else ["CPUExecutionProvider"]
    unknown = [p for p in chosen if p not in available]
    if unknown:
        raise ModelError(f"execution providers not available: {unknown}; available: {available}")
    try:
        return ort.InferenceSession(data, sess_options=options, providers=chosen)
    except Exception as e:
        raise ModelError(f"cannot load ONNX model {source}: {e}") from e


def load_model(model: str | os.PathLike | bytes | None = None, **kwargs: Any) -> SpoofModel:
    """Load a spoofsdk model by embedded name, path or bytes. See :class:`SpoofModel`."""
    return SpoofModel(model, **kwargs)


#: The figures a leave-one-source-out table holds per held-out domain (``spoofsdk-train crossval``), in the
#: order the trainer's tables print them.
LOSO_FIGURES = ("auc", "eer", "apcer", "bpcer", "bpcer_at_apcer_5")


def loso_tables(metrics: Mapping[str, Any]) -> list[dict[str, dict[str, float | None]]]:
    """Every seed's leave-one-source-out figures per held-out domain that a model's ``metrics`` carry
    (``metrics['loso']``: the table, then each of its ``replicates``); [] for a model without one.

    Each run maps domain -> {figure: value} over :data:`LOSO_FIGURES`, a figure the table lacks is None:
    a replicate embedded before session 10 holds per-domain AUC only."""
    loso = metrics.get("loso") if isinstance(metrics, Mapping) else None
    if not isinstance(loso, Mapping) or not isinstance(loso.get("domains"), Mapping):
        return []

    def figures(domains: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
        return {d: {k: v.get(k) for k in LOSO_FIGURES} for d, v in domains.items() if isinstance(v, Mapping)}

    runs = [figures(loso["domains"])]
    for rep in loso.get("replicates", []):
        if not isinstance(rep, Mapping):
            continue
        if isinstance(rep.get("domains"), Mapping) and rep["domains"]:
            runs.append(figures(rep["domains"]))
        elif isinstance(rep.get("auc"), Mapping):
            runs.append(figures({d: {"auc": a} for d, a in rep["auc"].items()}))
    return runs


def loso_runs(metrics: Mapping[str, Any]) -> list[dict[str, float]]:
    """The leave-one-source-out AUC per held-out domain of each seed a model's ``metrics`` carry
    (:func:`loso_tables`, AUC only); [] for a model without one."""
    return [{d: v["auc"] for d, v in run.items()} for run in loso_tables(metrics)]


def loso_summary(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """Mean and worst leave-one-source-out AUC over the domains every seed scored, each averaged over the
    seeds (one seed's held-out fold moves by more than recipes differ), with each seed's mean; None
    without a table. The figure models are chosen on (README, model card)."""
    runs = loso_runs(metrics)
    domains = [d for d in (runs[0] if runs else {}) if all(isinstance(run.get(d), (int, float)) for run in runs)]
    if not domains:
        return None
    means = [sum(run[d] for d in domains) / len(domains) for run in runs]
    worsts = [min(run[d] for d in domains) for run in runs]
    return {"mean": sum(means) / len(means), "worst": sum(worsts) / len(worsts), "seed_means": means,
            "seeds": len(runs), "domains": domains}


def embedded_models() -> list[dict[str, Any]]:
    """Every embedded model file: name, precision, input size, threshold, size, leave-one-source-out AUC
    (mean and worst, where its metadata has the table), and the names it answers to.

    Reads the metadata only (no onnxruntime session). A registered file that is missing is
    listed with ``size_bytes`` None.
    """
    rows: dict[str, dict[str, Any]] = {}
    for name, variants in EMBEDDED_MODELS.items():
        for precision, (filename, _sha) in variants.items():
            row = rows.get(filename)
            if row is not None:  # an alias ("default") of a model already listed
                row["aliases"].append(name)
                continue
            path = ASSETS_DIR / filename
            row = {"name": name, "precision": precision, "file": str(path), "aliases": [], "size_bytes": None,
                   "input_size": None, "threshold": None, "architecture": None, "loso_auc_mean": None, "loso_auc_worst": None}
            if path.is_file():
                data = path.read_bytes()
                row["size_bytes"] = len(data)
                try:
                    info = parse_metadata(read_metadata_props(data), str(path))
                    row.update(input_size=info.input_size, threshold=info.threshold, architecture=info.architecture)
                    if (loso := loso_summary(info.metrics)) is not None:
                        row.update(loso_auc_mean=loso["mean"], loso_auc_worst=loso["worst"])
                except ModelError:
                    pass
            rows[filename] = row
    for row in rows.values():  # "default" listed under its real name, flagged as the default
        if row["name"] == DEFAULT_MODEL and len(EMBEDDED_MODELS) > 1:
            for other, variants in EMBEDDED_MODELS.items():
                if other != DEFAULT_MODEL and any(f == Path(row["file"]).name for f, _ in variants.values()):
                    row["aliases"], row["name"] = [DEFAULT_MODEL], other
                    break
    return list(rows.values())
