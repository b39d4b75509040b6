"""FP16 and INT8 versions of a spoofsdk ONNX model, each with a report against FP32. No torch.

This module imports only onnx, onnxruntime, onnxconverter-common, numpy and spoofsdk, so it
runs on a board or a CI box without PyTorch::

    spoofsdk-train quantize runs/edge/edge.onnx --precision int8 --calib cache/
    spoofsdk-train quantize runs/edge/edge.onnx --precision fp16

- **FP16**: ``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``:
  weights and arithmetic in float16, input and output stay float32 so callers change nothing.
- **INT8**: ONNX Runtime static quantization, QDQ format, per-channel weights, after
  ``quant_pre_process`` (shape inference + graph optimisation, BatchNorm folded). Calibration
  data are real face crops made by the runtime's own preprocessing (:func:`spoofsdk.crop.crop_face`
  and :func:`spoofsdk.crop.to_tensor` with the model's metadata), from a folder of frames
  (detector -> crop), a folder of face crops, or the trainer's manifest; never random tensors.
  The default types, calibration method and ``reduce_range`` were chosen by measurement on the
  development CPU (``--sweep`` reruns that measurement; docs/QUANTIZATION.md has the numbers).

Every output keeps the model's spoofsdk metadata with ``precision`` updated (plus a
``quantization`` entry saying how it was made) and gets a report, printed and written as JSON
beside it: file sizes, latency relative to FP32 measured side by side in one run (interleaved
rounds), and AUC / EER / ACER / BPCER@APCER5% on a labelled set for both models, with the
largest score difference and the share of samples whose decision is unchanged.
"""
from __future__ import annotations

import csv
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from spoofsdk.crop import crop_face, fit_face_crop, resize_square, to_tensor
from spoofsdk.errors import ImageError, ModelError
from spoofsdk.model import ModelInfo, SpoofModel, parse_metadata, read_metadata_props, write_metadata_props
from spoofsdk.sources import read_image

__all__ = [
    "INT8_DEFAULTS",
    "QuantizeError",
    "QuantizeResult",
    "Sample",
    "collect_samples",
    "quantize",
    "quantize_fp16",
    "quantize_int8",
    "evaluate_pair",
    "interleaved_latency",
    "format_report",
    "sweep_int8",
]

PRECISIONS = ("fp16", "int8")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MANIFEST_NAMES = ("manifest.jsonl", "manifest.json", "manifest.csv")
REAL_WORDS = {"real", "live", "living", "bonafide", "bona_fide", "genuine"}
ATTACK_WORDS = {"attack", "spoof", "fake", "print", "replay", "imposter"}
# An image whose longer side is at most this is taken as an existing face crop (gc535-style),
# anything larger as a camera frame that goes through the detector first (auto mode).
CROP_MAX_SIDE = 256

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
}


class QuantizeError(ModelError):
    """Quantization cannot be done as asked (bad precision, no calibration data, ...)."""


# --------------------------------------------------------------------------------------
# Calibration and evaluation data: face crops made by the runtime's preprocessing
# --------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One face crop for the model: BGR uint8, model input size; ``label`` 1 real, 0 attack, None unknown."""

    crop: np.ndarray
    label: int | None
    source: str
    split: str | None = None


def _label_from_parts(parts: Iterable[str]) -> int | None:
    for part in parts:
        p = part.lower()
        if p in REAL_WORDS:
            return 1
        if p in ATTACK_WORDS:
            return 0
    return None


def _label_value(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, int, np.integer)):
        return int(value) if int(value) in (0, 1) else None
    text = str(value).strip().lower()
    if text in ("1", "real", "live", "bonafide", "bona_fide", "genuine"):
        return 1
    if text in ("0", "attack", "spoof", "fake"):
        return 0
    return None


def _spread(items: Sequence, n: int | None) -> list:
    """``n`` items spread evenly over ``items`` (all of them when n is None or large)."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    if n <= 0:
        return []
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in dict.fromkeys(idx.tolist())]


def _read_image(path: Path) -> np.ndarray | None:
    """The runtime's own reader (it refuses truncated JPEGs); None for a file to skip."""
    try:
        return read_image(path)
    except ImageError:
        return None


def _face_crop_image(image: np.ndarray, info: ModelInfo) -> np.ndarray:
    """An existing tight face crop -> model input, exactly as the runtime's ``check_face`` and the
    trainer's ``prepare`` make it (:func:`spoofsdk.crop.fit_face_crop`)."""
    return fit_face_crop(image, info.input_size)


class _FrameCropper:
    """Camera frame -> largest detected face -> crop with the model's crop scale."""

    def __init__(self, info: ModelInfo, detector: Any = None):
        self.info = info
        self._detector = detector

    @property
    def detector(self):
        if self._detector is None or isinstance(self._detector, str):
            from spoofsdk.detect import YUNET_ENV, make_detector

            name = self._detector or ("yunet" if os.environ.get(YUNET_ENV) else "haar")
            self._detector = make_detector(name)
        return self._detector

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        faces = self.detector.detect(frame)
        if not faces:
            return None
        return crop_face(frame, faces[0].box, self.info.crop_scale, self.info.input_size).image


def _manifest_matches(manifest: Path, info: ModelInfo | None) -> bool:
    if info is None:
        return True
    try:
        crop = json.loads(manifest.read_text(encoding="utf-8")).get("crop") or {}
    except (ValueError, AttributeError, OSError):
        return False
    scale = crop.get("crop_scale")
    return int(crop.get("size") or 0) == info.input_size and (scale is None or abs(float(scale) - info.crop_scale) < 1e-6)


def _find_manifests(path: Path, info: ModelInfo | None = None) -> list[Path]:
    """The trainer's manifests at ``path``: the file itself, ``path/manifest.json``, or the
    per-data-set manifests below it (``cache/<policy>/<set>/manifest.json``). When several crop
    policies are cached, the folder whose crops match ``info`` (input size, crop scale) wins;
    crops of another policy are cut again from the source frames (see :func:`_load_manifest_crop`)."""
    path = Path(path)
    if path.is_file():
        return [path] if path.suffix.lower() in (".json", ".jsonl", ".csv") else []
    if not path.is_dir():
        return []
    for name in MANIFEST_NAMES:
        if (path / name).is_file():
            return [path / name]
    found = sorted({p for depth in ("*", "*/*", "*/*/*") for name in MANIFEST_NAMES for p in path.glob(f"{depth}/{name}")})
    groups: dict[Path, list[Path]] = {}
    for m in found:
        groups.setdefault(m.parent.parent, []).append(m)
    if len(groups) <= 1:
        return found
    return max(groups.values(), key=lambda ms: (sum(_manifest_matches(m, info) for m in ms) == len(ms), sum(_manifest_matches(m, info) for m in ms)))


def _manifest_rows(manifest: Path) -> tuple[dict, list[dict]]:
    text = manifest.read_text(encoding="utf-8")
    if manifest.suffix.lower() == ".csv":
        return {}, list(csv.DictReader(text.splitlines()))
    if manifest.suffix.lower() == ".jsonl":
        return {}, [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, dict):
        for key in ("items", "samples", "crops", "rows", "records"):
            if isinstance(data.get(key), list):
                return data, data[key]
        raise QuantizeError(f"manifest {manifest}: no list of samples found (keys: {', '.join(data)})")
    return {}, list(data)


_PATH_KEYS = ("file", "crop", "crop_path", "path", "image", "filename")
_SPLIT_KEYS = ("split", "subset", "partition")


def _manifest_samples(manifest: Path, info: ModelInfo, splits: Sequence[str] | None) -> list[Sample]:
    """Every (wanted-split) row of one manifest as a crop for ``info``'s model.

    The trainer's crops were cut by ``crop_face`` at its crop scale and size; when those differ
    from the model's, the crop is cut again from the source frame with the model's settings
    (the manifest keeps the detector box), so calibration sees what the runtime will feed.
    """
    head, rows = _manifest_rows(manifest)
    if splits:
        wanted = {s.lower() for s in splits}
        rows = [r for r in rows if str(next((r[k] for k in _SPLIT_KEYS if k in r), "")).lower() in wanted]
    crop_info = head.get("crop") or {}
    same_policy = int(crop_info.get("size") or 0) == info.input_size and (
        crop_info.get("crop_scale") is None or abs(float(crop_info["crop_scale"]) - info.crop_scale) < 1e-6
    )
    root = Path(head["root"]) if head.get("root") else None
    samples = []
    for row in rows:
        key = next((k for k in _PATH_KEYS if row.get(k)), None)
        if key is None:
            raise QuantizeError(f"manifest {manifest}: a row has none of the path keys {_PATH_KEYS}: {row}")
        p = Path(str(row[key]))
        if not p.is_absolute():
            p = manifest.parent / p
        label = _label_value(row.get("label"))
        if label is None:
            label = _label_from_parts(p.parts)
        split = next((str(row[k]) for k in _SPLIT_KEYS if k in row), None)
        samples.append(Sample(None, label, str(p), split))  # type: ignore[arg-type]
        samples[-1]._row = (row, same_policy, root)  # type: ignore[attr-defined]
    return samples


def _load_manifest_crop(sample: Sample, info: ModelInfo) -> np.ndarray | None:
    row, same_policy, root = sample._row  # type: ignore[attr-defined]
    if not same_policy and row.get("box") and root is not None and row.get("source"):
        frame = _read_image(root / row["source"])
        if frame is not None:
            return crop_face(frame, row["box"], info.crop_scale, info.input_size).image
    image = _read_image(Path(sample.source))
    if image is None:
        return None
    return resize_square(image, info.input_size)  # unchanged when already the input size


def collect_samples(
    source: str | os.PathLike,
    info: ModelInfo,
    *,
    limit: int | None = None,
    splits: Sequence[str] | None = None,
    kind: str = "auto",
    detector: Any = None,
    exclude: set[str] | None = None,
) -> list[Sample]:
    """Face crops for ``info``'s model from ``source``, made exactly as the runtime makes them.

    ``source`` is the trainer's manifest (a ``manifest.{jsonl,json,csv}`` file, or a folder
    holding manifests, such as the trainer's ``cache/``; ``splits`` picks rows by their split),
    or a folder of images searched recursively. Folder images are camera frames (``kind='frames'``: detector -> largest face
    -> :func:`crop_face` with the model's crop scale), face crops (``kind='crops'``), or
    ``'auto'``: a crop when the longer side is <= 256 px, a frame otherwise. Labels come from
    the manifest or from folder names (``real``/``live`` vs ``attack``/``spoof``/``fake``).
    Frames without a detected face are skipped. ``exclude`` drops these source paths.
    """
    if kind not in ("auto", "frames", "crops"):
        raise ValueError(f"kind must be 'auto', 'frames' or 'crops', got {kind!r}")
    path = Path(source)
    if not path.exists():
        raise QuantizeError(f"data not found: {path}")
    manifests = _find_manifests(path, info)
    if manifests:
        rows = [s for m in manifests for s in _manifest_samples(m, info, splits)]
        if exclude:
            rows = [s for s in rows if s.source not in exclude]
        samples = []
        for s in _spread(rows, limit):
            crop = _load_manifest_crop(s, info)
            if crop is not None:
                samples.append(Sample(np.ascontiguousarray(crop), s.label, s.source, s.split))
        return samples
    if not path.is_dir():
        raise QuantizeError(f"{path} is neither a folder of images nor a manifest (.jsonl/.json/.csv)")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if exclude:
        files = [p for p in files if str(p) not in exclude]
    cropper = _FrameCropper(info, detector)
    samples = []
    # Read a little more than asked for: frames with no face are skipped.
    for p in _spread(files, None if limit is None else int(limit * 1.25) + 4):
        image = _read_image(p)
        if image is None:
            continue
        as_crop = kind == "crops" or (kind == "auto" and max(image.shape[:2]) <= CROP_MAX_SIDE)
        crop = _face_crop_image(image, info) if as_crop else cropper(image)
        if crop is None:
            continue
        samples.append(Sample(np.ascontiguousarray(crop), _label_from_parts(p.relative_to(path).parts), str(p)))
    return _spread(samples, limit)


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

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


# --------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------
def _load_fp32(model_path: str | os.PathLike) -> tuple[bytes, ModelInfo]:
    path = Path(model_path)
    if not path.is_file():
        raise QuantizeError(f"model file not found: {path}")
    data = path.read_bytes()
    info = parse_metadata(read_metadata_props(data), str(path))  # MetadataError names what is missing
    if info.precision != "fp32":
        raise QuantizeError(f"{path} is already {info.precision}; quantize the FP32 model")
    return data, info


def _finish(model_bytes: bytes, original_props: dict[str, str], precision: str, how: dict) -> bytes:
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


def _input_convs(pre_path: Path, max_channels: int = 4) -> list[str]:
    """Conv nodes that read few channels (the raw image: stems, fixed high-pass filters)."""
    import onnx

    model = onnx.load(str(pre_path))
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in weights:
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if weights[n.input[1]][1] * group <= max_channels:
            out.append(n.name)
    return out


def quantize_int8(
    model_bytes: bytes,
    info: ModelInfo,
    calib_tensors: np.ndarray,
    *,
    activation_type: str = INT8_DEFAULTS["activation_type"],
    weight_type: str = INT8_DEFAULTS["weight_type"],
    calibrate_method: str = INT8_DEFAULTS["calibrate_method"],
    reduce_range: bool = INT8_DEFAULTS["reduce_range"],
    per_channel: bool = INT8_DEFAULTS["per_channel"],
    fp32_input_convs: bool = INT8_DEFAULTS["fp32_input_convs"],
    percentile: float = 99.999,
    workdir: str | os.PathLike | None = None,
    calibration_cache: str | os.PathLike | None = None,
) -> bytes:
    """Static QDQ quantization of ``model_bytes`` calibrated on ``calib_tensors`` (normalised NCHW float32)."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    if calib_tensors is None or len(calib_tensors) == 0:
        raise QuantizeError("INT8 needs calibration data: pass face crops (a folder or the trainer's manifest)")
    with tempfile.TemporaryDirectory(prefix="spoofsdk-q-") as tmp:
        work = Path(workdir) if workdir else Path(tmp)
        pre = _preprocess(model_bytes, work)
        import onnxruntime as ort

        input_name = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name
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
        exclude = _input_convs(pre) if fp32_input_convs else []
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
            extra_options=extra,
        )
        return out.read_bytes()


# --------------------------------------------------------------------------------------
# Measurements: latency side by side, accuracy against FP32
# --------------------------------------------------------------------------------------
def interleaved_latency(
    runners: dict[str, Any], rounds: int = 30, warmup: int = 3, inner: int = 1
) -> dict[str, dict[str, float]]:
    """Time several callables side by side: every round calls each once (order rotated), so a
    background load hits them alike. Returns per name: median and p90 ms per call, and the
    ratio of its median to the first runner's (per round medians of the pairwise ratios)."""
    names = list(runners)
    for _ in range(warmup):
        for n in names:
            runners[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            for _ in range(inner):
                runners[n]()
            times[n].append((time.perf_counter() - t0) * 1000.0 / inner)
    ref = names[0]
    out = {}
    for n in names:
        ratios = [a / b for a, b in zip(times[n], times[ref]) if b > 0]
        out[n] = {
            "median_ms": float(statistics.median(times[n])),
            "p90_ms": float(np.percentile(times[n], 90)),
            "min_ms": float(min(times[n])),
            "ratio_to_" + ref: float(statistics.median(ratios)) if ratios else float("nan"),
        }
    return out


def _scores(model: SpoofModel, tensors: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([model.predict(tensors[i : i + batch]) for i in range(0, len(tensors), batch)]) if len(tensors) else np.zeros(0)


def _metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    from spoofsdk.metrics import summary

    s = summary(labels, scores, threshold)
    keep = ("n", "n_real", "n_attack", "auc", "eer", "apcer", "bpcer", "acer", "bpcer_at_apcer_5", "accuracy")
    return {k: s[k] for k in keep if k in s}


def evaluate_pair(
    fp32: SpoofModel, quant: SpoofModel, samples: Sequence[Sample], *, rounds: int = 30, latency_batch: int = 1
) -> dict:
    """Accuracy of both models on labelled samples, score differences, and side-by-side latency."""
    out: dict[str, Any] = {}
    if samples:
        tensors = to_tensor([s.crop for s in samples], fp32.info.color_order, fp32.info.mean, fp32.info.std)
        s32, sq = _scores(fp32, tensors), _scores(quant, tensors)
        thr = fp32.info.threshold
        diff = np.abs(s32 - sq)
        out["n_samples"] = len(samples)
        out["max_abs_dscore"] = float(diff.max())
        out["mean_abs_dscore"] = float(diff.mean())
        out["decision_agreement"] = float(((s32 >= thr) == (sq >= thr)).mean())
        labels = np.array([-1 if s.label is None else s.label for s in samples])
        known = labels >= 0
        if known.any() and len(set(labels[known].tolist())) == 2:
            out["fp32"] = _metrics(labels[known], s32[known], thr)
            out["quantized"] = _metrics(labels[known], sq[known], thr)
            out["delta"] = {
                k: out["quantized"][k] - out["fp32"][k]
                for k in ("auc", "eer", "acer", "bpcer_at_apcer_5")
                if k in out["fp32"] and k in out["quantized"]
            }
        x = tensors[:latency_batch]
    else:
        x = np.zeros((latency_batch, 3, fp32.info.input_size, fp32.info.input_size), np.float32)
    if rounds > 0:
        lat = interleaved_latency({"fp32": lambda: fp32.predict(x), "quantized": lambda: quant.predict(x)}, rounds=rounds)
        out["latency"] = {
            "batch": int(x.shape[0]),
            "rounds": rounds,
            "fp32_median_ms": lat["fp32"]["median_ms"],
            "quantized_median_ms": lat["quantized"]["median_ms"],
            "ratio_quantized_to_fp32": lat["quantized"]["ratio_to_fp32"],
            "speedup": 1.0 / lat["quantized"]["ratio_to_fp32"],
        }
    return out


# --------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------
@dataclass
class QuantizeResult:
    out: Path
    report_path: Path | None
    report: dict = field(default_factory=dict)


def _default_out(model_path: Path, precision: str) -> Path:
    stem = model_path.name[:-5] if model_path.name.endswith(".onnx") else model_path.name
    return model_path.with_name(f"{stem}.{precision}.onnx")


def _split_calib_eval(
    calib: str | os.PathLike,
    eval_data: str | os.PathLike | None,
    info: ModelInfo,
    calib_size: int,
    eval_size: int,
    detector: Any,
    kind: str,
) -> tuple[list[Sample], list[Sample]]:
    calib_path = Path(calib)
    manifest = _find_manifests(calib_path, info) or None
    # From the trainer's manifest: calibrate on training crops, evaluate on held-out test crops.
    calib_splits = ("train",) if manifest is not None else None
    samples = collect_samples(calib_path, info, limit=calib_size, splits=calib_splits, kind=kind, detector=detector)
    if manifest is not None and not samples:  # a manifest without split names
        samples = collect_samples(calib_path, info, limit=calib_size, kind=kind, detector=detector)
    if eval_size <= 0:
        return samples, []
    used = {s.source for s in samples}
    if eval_data is not None:
        ev_path = Path(eval_data)
        ev_manifest = _find_manifests(ev_path, info) or None
        splits = ("test",) if ev_manifest is not None else None
        ev = collect_samples(ev_path, info, limit=eval_size, splits=splits, kind=kind, detector=detector, exclude=used)
    elif manifest is not None:
        ev = collect_samples(calib_path, info, limit=eval_size, splits=("test",), kind=kind, detector=detector)
    else:  # the same folder: the images not used for calibration
        ev = collect_samples(calib_path, info, limit=eval_size, kind=kind, detector=detector, exclude=used)
    return samples, ev


def quantize(
    model_path: str | os.PathLike,
    precision: str = "fp16",
    calib: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    *,
    eval_data: str | os.PathLike | None = None,
    calib_size: int = 256,
    eval_size: int = 400,
    kind: str = "auto",
    detector: Any = None,
    threads: int = 1,
    rounds: int = 30,
    report: bool = True,
    verbose: bool = True,
    **int8_options: Any,
) -> QuantizeResult:
    """Write an FP16 or INT8 version of a spoofsdk FP32 model, and its report.

    ``calib`` (required for INT8; used for FP16 only to evaluate) is a folder of frames or
    face crops, or the trainer's manifest; see :func:`collect_samples`. ``eval_data`` is a
    labelled set for the report (default: held-out samples of ``calib``; the manifest's
    ``test`` split). ``int8_options`` override :data:`INT8_DEFAULTS`. Returns the output
    path, the report's path (``<out>.report.json``) and the report.
    """
    if precision not in PRECISIONS:
        raise QuantizeError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    unknown = set(int8_options) - set(INT8_DEFAULTS) - {"percentile"}
    if unknown:
        raise QuantizeError(f"unknown INT8 option(s): {', '.join(sorted(unknown))}")
    model_path = Path(model_path)
    data, info = _load_fp32(model_path)
    if precision == "int8" and calib is None:
        raise QuantizeError("INT8 needs calibration data: pass calib= a folder of frames/face crops or the trainer's manifest")
    out_path = Path(out) if out else _default_out(model_path, precision)
    if out_path.resolve() == model_path.resolve():
        raise QuantizeError("the output would overwrite the FP32 model; choose another --out")
    props = read_metadata_props(data)

    calib_samples: list[Sample] = []
    eval_samples: list[Sample] = []
    t0 = time.perf_counter()
    if calib is not None:
        calib_samples, eval_samples = _split_calib_eval(
            calib, eval_data, info, calib_size, eval_size if report else 0, detector, kind
        )
    elif eval_data is not None and report:
        eval_samples = collect_samples(eval_data, info, limit=eval_size, kind=kind, detector=detector)
    data_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    if precision == "fp16":
        how: dict[str, Any] = {"tool": "onnxconverter-common convert_float_to_float16", "keep_io_types": True}
        qbytes = quantize_fp16(data)
    else:
        if not calib_samples:
            raise QuantizeError(f"no usable calibration crops in {calib} (no images, or no face detected in any frame)")
        options = {**INT8_DEFAULTS, **int8_options}
        tensors = to_tensor([s.crop for s in calib_samples], info.color_order, info.mean, info.std)
        qbytes = quantize_int8(data, info, tensors, **options)
        how = {"tool": "onnxruntime quantize_static", "format": "QDQ", "calibration_samples": len(calib_samples), **options}
    qbytes = _finish(qbytes, props, precision, how)
    convert_s = time.perf_counter() - t0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(qbytes)

    rep: dict[str, Any] = {
        "model": str(model_path),
        "output": str(out_path),
        "precision": precision,
        "name": info.name,
        "architecture": info.architecture,
        "how": how,
        "size_bytes": {"fp32": len(data), precision: len(qbytes)},
        "size_ratio": len(qbytes) / len(data),
        "threads": threads,
        "seconds": {"data": round(data_s, 2), "convert": round(convert_s, 2)},
        "cpu": _cpu_name(),
    }
    report_path = None
    # The quantized model must load in the runtime's own loader and keep float32 IO.
    qmodel = SpoofModel(qbytes, threads=threads)
    if qmodel.info.precision != precision:
        raise QuantizeError(f"metadata precision is {qmodel.info.precision}, expected {precision}")
    if report:
        fp32 = SpoofModel(data, threads=threads)
        rep.update(evaluate_pair(fp32, qmodel, eval_samples, rounds=rounds))
        report_path = out_path.with_name(out_path.name[:-5] + ".report.json" if out_path.name.endswith(".onnx") else out_path.name + ".report.json")
        report_path.write_text(to_json(rep), encoding="utf-8")
    if verbose:
        print(format_report(rep))
        print(f"wrote {out_path}" + (f" and {report_path}" if report_path else ""))
    return QuantizeResult(out_path, report_path, rep)


def to_json(obj: Any) -> str:
    """A report or sweep rows as JSON text (numpy numbers and paths as plain values)."""
    return json.dumps(obj, indent=2, default=_json_default) + "\n"


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _fmt(v: Any, digits: int | str = 4) -> str:
    """A figure for the tables: ``digits`` decimals, or 'g' for three significant digits (small differences)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3g}" if digits == "g" else f"{v:.{digits}f}"
    return str(v)


def format_report(rep: dict) -> str:
    """The report as a small text table."""
    p = rep["precision"]
    lines = [f"{rep['name']} ({rep['architecture']}): FP32 -> {p.upper()}  [{rep['how'].get('tool')}]"]
    sz = rep["size_bytes"]
    lines.append(f"  file size      {sz['fp32'] / 1e6:8.3f} MB -> {sz[p] / 1e6:8.3f} MB  ({rep['size_ratio']:.2f}x)")
    lat = rep.get("latency")
    if lat:
        lines.append(
            f"  latency b{lat['batch']}     {lat['fp32_median_ms']:8.3f} ms -> {lat['quantized_median_ms']:8.3f} ms"
            f"  (x{lat['speedup']:.2f} speed, same run, {lat['rounds']} interleaved rounds, {rep['threads']} thread(s))"
        )
    if "n_samples" in rep:
        lines.append(
            f"  scores         max |d| {rep['max_abs_dscore']:.3g}, mean |d| {rep['mean_abs_dscore']:.3g}, "
            f"decisions agree {rep['decision_agreement'] * 100:.2f}% on {rep['n_samples']} crops"
        )
    if "fp32" in rep:
        a, b = rep["fp32"], rep["quantized"]
        lines.append(f"  {'metric':<16}{'FP32':>9}{p.upper():>9}{'delta':>9}")
        for k in ("auc", "eer", "acer", "bpcer_at_apcer_5"):
            if k in a:
                lines.append(f"  {k:<16}{_fmt(a[k]):>9}{_fmt(b[k]):>9}{_fmt(b[k] - a[k], 'g'):>9}")
        lines.append(f"  (n={a['n']}: {a['n_real']} real, {a['n_attack']} attack; threshold from metadata)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Choosing the INT8 settings by measurement
# --------------------------------------------------------------------------------------
def sweep_int8(
    model_path: str | os.PathLike,
    calib: str | os.PathLike,
    *,
    eval_data: str | os.PathLike | None = None,
    calib_size: int = 128,
    eval_size: int = 300,
    activation_types: Sequence[str] = ("QUInt8", "QInt8"),
    methods: Sequence[str] = ("MinMax", "Entropy", "Percentile"),
    reduce_ranges: Sequence[bool] = (False, True),
    threads: int = 1,
    rounds: int = 40,
    kind: str = "auto",
    detector: Any = None,
) -> list[dict]:
    """Quantize with each combination, then measure all of them side by side (one interleaved
    latency run with FP32 first) and against FP32 on the same labelled crops."""
    data, info = _load_fp32(model_path)
    calib_samples, eval_samples = _split_calib_eval(calib, eval_data, info, calib_size, eval_size, detector, kind)
    if not calib_samples:
        raise QuantizeError(f"no usable calibration crops in {calib}")
    ctensors = to_tensor([s.crop for s in calib_samples], info.color_order, info.mean, info.std)
    etensors = to_tensor([s.crop for s in eval_samples], info.color_order, info.mean, info.std) if eval_samples else None
    fp32 = SpoofModel(data, threads=threads)
    rows, models = [], {"fp32": fp32}
    with tempfile.TemporaryDirectory(prefix="spoofsdk-sweep-") as tmp:
        for method in methods:
            cache = Path(tmp) / f"calib-{method}.json"  # ranges depend on the method only: compute once
            for act in activation_types:
                for rr in reduce_ranges:
                    name = f"{'U8' if act == 'QUInt8' else 'S8'}S8/{method}/rr={int(rr)}"
                    t0 = time.perf_counter()
                    q = quantize_int8(
                        data, info, ctensors, activation_type=act, calibrate_method=method, reduce_range=rr, calibration_cache=cache
                    )
                    q = _finish(q, read_metadata_props(data), "int8", {})
                    models[name] = SpoofModel(q, threads=threads)
                    rows.append({"config": name, "activation_type": act, "calibrate_method": method, "reduce_range": rr,
                                 "size_bytes": len(q), "quantize_s": time.perf_counter() - t0})
    thr = info.threshold
    labels = np.array([-1 if s.label is None else s.label for s in eval_samples]) if eval_samples else None
    s32 = _scores(fp32, etensors) if etensors is not None else None
    for row in rows:
        m = models[row["config"]]
        if etensors is not None:
            sq = _scores(m, etensors)
            row["max_abs_dscore"] = float(np.abs(sq - s32).max())
            row["mean_abs_dscore"] = float(np.abs(sq - s32).mean())
            row["decision_agreement"] = float(((sq >= thr) == (s32 >= thr)).mean())
            known = labels >= 0
            if known.any() and len(set(labels[known].tolist())) == 2:
                row["metrics"] = _metrics(labels[known], sq[known], thr)
    x = etensors[:1] if etensors is not None else ctensors[:1]
    lat = interleaved_latency({k: (lambda m=m: m.predict(x)) for k, m in models.items()}, rounds=rounds)
    for row in rows:
        row["latency_ms"] = lat[row["config"]]["median_ms"]
        row["speedup_vs_fp32"] = 1.0 / lat[row["config"]]["ratio_to_fp32"]
    base = {"config": "fp32", "size_bytes": len(data), "latency_ms": lat["fp32"]["median_ms"], "speedup_vs_fp32": 1.0}
    if etensors is not None and labels is not None and (labels >= 0).any() and len(set(labels[labels >= 0].tolist())) == 2:
        base["metrics"] = _metrics(labels[labels >= 0], s32[labels >= 0], thr)
    return [base] + rows


def format_sweep(rows: list[dict]) -> str:
    head = f"{'config':<26}{'MB':>7}{'ms b1':>8}{'speedup':>8}{'AUC':>8}{'EER':>8}{'ACER':>8}{'max|d|':>9}{'agree':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r.get("metrics", {})
        lines.append(
            f"{r['config']:<26}{r['size_bytes'] / 1e6:7.3f}{r['latency_ms']:8.3f}{r['speedup_vs_fp32']:8.2f}"
            f"{_fmt(m.get('auc')):>8}{_fmt(m.get('eer')):>8}{_fmt(m.get('acer')):>8}"
            f"{_fmt(r.get('max_abs_dscore'), 'g'):>9}{_fmt(r.get('decision_agreement'), 4):>7}"
        )
    return "\n".join(lines)
