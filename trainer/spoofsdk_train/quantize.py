"""FP16 and INT8 versions of a spoofsdk ONNX model, each with a report against FP32. No torch.

``spoofsdk-train quantize`` (this module imports only onnx, onnxruntime, onnxconverter-common,
numpy and spoofsdk, so it runs on a board or a CI box without PyTorch)::

    spoofsdk-train quantize runs/edge/edge.onnx --precision int8 --calib cache/
    spoofsdk-train quantize runs/edge/edge.onnx --precision fp16

The conversion itself is :mod:`spoofsdk_train.convert`. Here: the data and the report.
Calibration and evaluation data are real face crops made by the runtime's own preprocessing
(:func:`spoofsdk.crop.crop_face` / :func:`spoofsdk.crop.fit_face_crop` and
:func:`spoofsdk.crop.to_tensor` with the model's metadata), from a labelled image folder
(:mod:`spoofsdk.folders`: frames go through the detector, face crops are taken as they are)
or from the trainer's prepared data (``manifest.json``); never random tensors. The INT8
defaults were chosen by measurement on the development CPU (``--sweep`` reruns that
measurement; docs/QUANTIZATION.md has the numbers).

The report, printed and written as JSON beside the output: file sizes, latency relative to
FP32 measured side by side in one run (:func:`spoofsdk.timing.interleaved`), and AUC / EER /
ACER / BPCER@APCER5% on a labelled set for both models, with the largest score difference and
the share of samples whose decision is unchanged.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spoofsdk import folders, metrics
from spoofsdk.crop import crop_face, fit_face_crop, resize_square, to_tensor
from spoofsdk.errors import ImageError
from spoofsdk.model import ModelInfo, SpoofModel, read_metadata_props
from spoofsdk.timing import interleaved, machine_facts, timed

from .convert import INT8_DEFAULTS, QuantizeError, convert, finish, load_fp32, quantize_int8

__all__ = [
    "INT8_DEFAULTS", "QuantizeError", "QuantizeResult", "Sample", "find_manifests", "collect_samples", "quantize",
    "evaluate_pair", "format_report", "sweep_int8", "format_sweep", "to_json",
]

PRECISIONS = ("fp16", "int8")


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
    domain: str | None = None  # the prepared data set (manifest) it came from; None for image folders


def _spread(items: Sequence, n: int | None) -> list:
    """``n`` items spread evenly over ``items`` (all of them when n is None or large)."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    if n <= 0:
        return []
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in dict.fromkeys(idx.tolist())]


def _read(path: Path) -> np.ndarray | None:
    """The runtime's own reader (it refuses truncated JPEGs); None for a file to skip."""
    try:
        return folders.read_image(path)
    except ImageError:
        return None


class _FrameCropper:
    """Camera frame -> largest detected face -> crop with the model's crop scale."""

    def __init__(self, info: ModelInfo, detector: Any = None):
        self.info = info
        self._detector = detector

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        if self._detector is None or isinstance(self._detector, str):
            from spoofsdk.detect import DEFAULT_DETECTOR, make_detector

            self._detector = make_detector(self._detector or DEFAULT_DETECTOR)  # the runtime's default (bundled YuNet)
        faces = self._detector.detect(frame)
        return crop_face(frame, faces[0].box, self.info.crop_scale, self.info.input_size).image if faces else None


def _same_policy(manifest: dict, info: ModelInfo) -> bool:
    """The manifest's crops were cut at the model's input size and crop scale."""
    crop = manifest.get("crop") or {}
    scale = crop.get("crop_scale")
    return int(crop.get("size") or 0) == info.input_size and (scale is None or abs(float(scale) - info.crop_scale) < 1e-6)


def find_manifests(path: str | os.PathLike, info: ModelInfo | None = None) -> list[dict]:
    """The trainer's prepared data at ``path`` (``spoofsdk_train.data.read_manifest``): the manifest
    itself, ``path/manifest.json``, or one group of per-data-set manifests below it
    (``cache/<group>/<set>/manifest.json``, up to ``cache/<a>/<b>/<set>/manifest.json``).

    When ``path`` holds several groups, one is chosen by, in this order:

    1. its splits: a group holding a random re-cut (``spoofsdk-train resplit``,
       :func:`spoofsdk_train.data.is_random_resplit`) loses to one without, because its test part
       holds frames and people from the prepared train split a model was trained on;
    2. its crop policy: a group whose manifests all match ``info`` (input size, crop scale) wins,
       then the one with the most matching manifests (crops of another policy are cut again from
       the source frames; with ``info`` None every manifest counts as matching);
    3. nothing else: groups still equal raise :class:`QuantizeError` naming them, so pass the
       folder you mean (e.g. ``cache/s1.0_128``) rather than have sort order decide -- unless none
       of them holds a single crop of ``info``'s policy: then every crop is cut again from its
       source frame whichever group lists it, and the first group by name is read.
    """
    from .data import is_random_resplit, read_manifest

    path = Path(path)
    if path.is_file() and path.name.endswith(".json"):
        return [read_manifest(path)]
    if not path.is_dir():
        return []
    if (path / "manifest.json").is_file():
        return [read_manifest(path)]
    groups: dict[Path, list[dict]] = {}
    for m in sorted(p for depth in ("*", "*/*", "*/*/*") for p in path.glob(f"{depth}/manifest.json")):
        groups.setdefault(m.parent.parent, []).append(read_manifest(m))

    def rank(manifests: list[dict]) -> tuple[bool, bool, int]:
        matching = sum(info is None or _same_policy(m, info) for m in manifests)
        return not any(is_random_resplit(m) for m in manifests), matching == len(manifests), matching

    ranks = {k: rank(ms) for k, ms in groups.items()}
    top = max(ranks.values(), default=None)
    best = [k for k, r in ranks.items() if r == top]
    if len(best) > 1 and top[2] == 0:
        # No group holds crops of the model's policy: every crop is cut again from its source
        # frame, so the groups differ only in which items they list; the first by name is read.
        return groups[best[0]]
    if len(best) > 1:
        policy = f" for {info.input_size} px crops at scale {info.crop_scale:g}" if info is not None else ""
        raise QuantizeError(f"{path} holds {len(best)} groups of prepared data that fit equally well{policy}: "
                            f"{', '.join(str(k) for k in best)}; pass the folder you mean")
    return groups[best[0]] if best else []


def _manifest_crop(item: dict, manifest: dict, info: ModelInfo) -> np.ndarray | None:
    """One prepared crop for ``info``'s model: re-cut from the source frame (the manifest keeps the
    detector box) when the trainer cut it at another scale or size, so calibration sees what the
    runtime will feed."""
    if not _same_policy(manifest, info) and item.get("box") and manifest.get("root") and item.get("source"):
        frame = _read(Path(manifest["root"]) / item["source"])
        if frame is not None:
            return crop_face(frame, item["box"], info.crop_scale, info.input_size).image
    image = _read(Path(manifest["_dir"]) / item["file"])
    return None if image is None else resize_square(image, info.input_size)  # unchanged when already the input size


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

    ``source`` is the trainer's prepared data (see :func:`find_manifests`; ``splits`` picks items
    by their split) or an image folder searched recursively, labelled by its class folders
    (:mod:`spoofsdk.folders`). Folder images are camera frames (``kind='frames'``: detector ->
    largest face -> :func:`crop_face` with the model's crop scale), face crops (``kind='crops'``),
    or ``'auto'`` (:func:`spoofsdk.folders.is_face_crop`). Frames without a detected face are
    skipped. ``exclude`` drops these source paths.
    """
    if kind not in ("auto", "frames", "crops"):
        raise ValueError(f"kind must be 'auto', 'frames' or 'crops', got {kind!r}")
    path = Path(source)
    if not path.exists():
        raise QuantizeError(f"data not found: {path}")
    manifests = find_manifests(path, info)
    if manifests:
        rows = [(item, m) for m in manifests for item in m["items"] if not splits or item.get("split") in splits]
        rows = [(item, m) for item, m in rows if not exclude or str(Path(m["_dir"]) / item["file"]) not in exclude]
        samples = []
        for item, m in _spread(rows, limit):
            crop = _manifest_crop(item, m, info)
            if crop is not None:
                samples.append(Sample(np.ascontiguousarray(crop), int(item["label"]), str(Path(m["_dir"]) / item["file"]), item.get("split"),
                                      m.get("dataset")))
        return samples
    if not path.is_dir():
        raise QuantizeError(f"{path} is neither an image folder nor the trainer's prepared data (manifest.json)")
    files = [p for p in folders.image_files(path) if not exclude or str(p) not in exclude]
    cropper = _FrameCropper(info, detector)
    samples = []
    # Read a little more than asked for: frames with no face are skipped.
    for p in _spread(files, None if limit is None else int(limit * 1.25) + 4):
        image = _read(p)
        if image is None:
            continue
        as_crop = kind == "crops" or (kind == "auto" and folders.is_face_crop(image))
        crop = fit_face_crop(image, info.input_size) if as_crop else cropper(image)
        if crop is not None:
            samples.append(Sample(np.ascontiguousarray(crop), folders.label_from_path(p, path), str(p)))
    return _spread(samples, limit)


def _split_calib_eval(calib, eval_data, info: ModelInfo, calib_size: int, eval_size: int, detector: Any, kind: str) -> tuple[list[Sample], list[Sample]]:
    """Calibration crops and held-out evaluation crops: from prepared data the train and test
    splits, from a folder disjoint images (or ``eval_data``)."""
    prepared = bool(find_manifests(calib, info))
    samples = collect_samples(calib, info, limit=calib_size, splits=("train",) if prepared else None, kind=kind, detector=detector)
    if eval_size <= 0:
        return samples, []
    used = {s.source for s in samples}
    if eval_data is not None:
        splits = ("test",) if find_manifests(eval_data, info) else None
        ev = collect_samples(eval_data, info, limit=eval_size, splits=splits, kind=kind, detector=detector, exclude=used)
    elif prepared:
        ev = collect_samples(calib, info, limit=eval_size, splits=("test",), kind=kind, detector=detector)
    else:  # the same folder: the images not used for calibration
        ev = collect_samples(calib, info, limit=eval_size, kind=kind, detector=detector, exclude=used)
    return samples, ev


# --------------------------------------------------------------------------------------
# Measurements: latency side by side, accuracy against FP32
# --------------------------------------------------------------------------------------
def _scores(model: SpoofModel, tensors: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([model.predict(tensors[i : i + batch]) for i in range(0, len(tensors), batch)]) if len(tensors) else np.zeros(0)


def _decisions(scores: np.ndarray, threshold: float) -> np.ndarray:
    """1 real, 0 spoof, -1 no score (a non-finite model output: the runtime's ``unknown``/``error``)."""
    return np.where(np.isfinite(scores), scores >= threshold, -1).astype(np.int64)  # NaN >= t is False, silently


def _score_differences(s32: np.ndarray, sq: np.ndarray, threshold: float) -> dict:
    """How far the quantized scores move from FP32's, on the crops both scored; a crop one of them
    could not score (NaN: an overflow) is counted, and is a disagreement, never a silent NaN figure."""
    both = np.isfinite(s32) & np.isfinite(sq)
    diff = np.abs(s32[both] - sq[both])
    return {
        "max_abs_dscore": float(diff.max()) if diff.size else None,
        "mean_abs_dscore": float(diff.mean()) if diff.size else None,
        "decision_agreement": float((_decisions(s32, threshold) == _decisions(sq, threshold)).mean()),
        "n_unscored": {"fp32": int((~np.isfinite(s32)).sum()), "quantized": int((~np.isfinite(sq)).sum())},
    }


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
        out["n_samples"] = len(samples)
        out.update(_score_differences(s32, sq, thr))
        labels = np.array([-1 if s.label is None else s.label for s in samples])
        # Accuracy on the crops both models scored, so that the two columns and their delta compare alike.
        known = (labels >= 0) & np.isfinite(s32) & np.isfinite(sq)
        if known.any() and len(set(labels[known].tolist())) == 2:
            out["fp32"] = _metrics(labels[known], s32[known], thr)
            out["quantized"] = _metrics(labels[known], sq[known], thr)
            out["delta"] = {
                k: out["quantized"][k] - out["fp32"][k]
                for k in ("auc", "eer", "acer", "bpcer_at_apcer_5")
                if k in out["fp32"] and k in out["quantized"]
            }
        domains = [s.domain for s in samples]
        if len(set(domains)) > 1 and None not in domains:
            # Several prepared data sets: quantization may cost one camera what it does not cost the pool.
            out["per_domain"] = {}
            for name in sorted(set(domains)):
                labelled = np.array([i for i, d in enumerate(domains) if d == name and labels[i] >= 0], dtype=np.int64)
                agree = _decisions(s32[labelled], thr) == _decisions(sq[labelled], thr)
                row: dict[str, Any] = {"n": int(len(labelled)), "decision_agreement": float(agree.mean()) if labelled.size else None}
                idx = labelled[known[labelled]]
                if len(set(labels[idx].tolist())) == 2:
                    row["fp32_auc"] = metrics.roc_auc(labels[idx], s32[idx])
                    row["quantized_auc"] = metrics.roc_auc(labels[idx], sq[idx])
                    row["delta_auc"] = row["quantized_auc"] - row["fp32_auc"]
                out["per_domain"][name] = row
            deltas = [abs(r["delta_auc"]) for r in out["per_domain"].values() if "delta_auc" in r]
            if deltas:
                out["max_abs_delta_auc_per_domain"] = float(max(deltas))
        x = tensors[:latency_batch]
    else:
        x = np.zeros((latency_batch, 3, fp32.info.input_size, fp32.info.input_size), np.float32)
    if rounds > 0:
        lat = interleaved({"fp32": lambda: fp32.predict(x), "quantized": lambda: quant.predict(x)}, rounds=rounds)
        out["latency"] = {
            "batch": int(x.shape[0]),
            "rounds": rounds,
            "fp32_median_ms": lat["fp32"]["median_ms"],
            "quantized_median_ms": lat["quantized"]["median_ms"],
            "ratio_quantized_to_fp32": lat["quantized"]["ratio_to_fp32"],
            "speedup": 1.0 / lat["quantized"]["ratio_to_fp32"],
        }
    return out


@dataclass
class QuantizeResult:
    out: Path
    report_path: Path | None
    report: dict = field(default_factory=dict)


def _default_out(model_path: Path, precision: str) -> Path:
    stem = model_path.name[:-5] if model_path.name.endswith(".onnx") else model_path.name
    return model_path.with_name(f"{stem}.{precision}.onnx")


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
    data, info = load_fp32(model_path)
    if precision == "int8" and calib is None:
        raise QuantizeError("INT8 needs calibration data: pass calib= a folder of frames/face crops or the trainer's manifest")
    out_path = Path(out) if out else _default_out(model_path, precision)
    if out_path.resolve() == model_path.resolve():
        raise QuantizeError("the output would overwrite the FP32 model; choose another --out")

    def data_for_report() -> tuple[list[Sample], list[Sample]]:
        if calib is not None:
            return _split_calib_eval(calib, eval_data, info, calib_size, eval_size if report else 0, detector, kind)
        if eval_data is not None and report:
            return [], collect_samples(eval_data, info, limit=eval_size, kind=kind, detector=detector)
        return [], []

    (calib_samples, eval_samples), data_ms = timed(data_for_report)
    if precision == "int8" and not calib_samples:
        raise QuantizeError(f"no usable calibration crops in {calib} (no images, or no face detected in any frame)")
    tensors = to_tensor([s.crop for s in calib_samples], info.color_order, info.mean, info.std) if calib_samples else None
    (qbytes, how), convert_ms = timed(lambda: convert(data, precision, tensors, **int8_options))
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
        "seconds": {"data": round(data_ms / 1000, 2), "convert": round(convert_ms / 1000, 2)},
        "cpu": machine_facts()["cpu"],
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
            f"  scores         max |d| {_fmt(rep['max_abs_dscore'], 'g')}, mean |d| {_fmt(rep['mean_abs_dscore'], 'g')}, "
            f"decisions agree {rep['decision_agreement'] * 100:.2f}% on {rep['n_samples']} crops"
        )
        unscored = rep.get("n_unscored", {})
        if any(unscored.values()):
            lines.append(f"  NO SCORE       (non-finite output) FP32 on {unscored['fp32']} crop(s), {p.upper()} on {unscored['quantized']}: "
                         "the runtime reports those faces unknown/error")
    if "fp32" in rep:
        a, b = rep["fp32"], rep["quantized"]
        lines.append(f"  {'metric':<16}{'FP32':>9}{p.upper():>9}{'delta':>9}")
        for k in ("auc", "eer", "acer", "bpcer_at_apcer_5"):
            if k in a:
                lines.append(f"  {k:<16}{_fmt(a[k]):>9}{_fmt(b[k]):>9}{_fmt(b[k] - a[k], 'g'):>9}")
        lines.append(f"  (n={a['n']}: {a['n_real']} real, {a['n_attack']} attack; threshold from metadata)")
    if "per_domain" in rep:
        lines.append(f"  {'domain':<20}{'n':>6}{'FP32 AUC':>10}{p.upper() + ' AUC':>10}{'delta':>9}{'agree':>8}")
        for name, r in rep["per_domain"].items():
            auc = (f"{_fmt(r['fp32_auc']):>10}{_fmt(r['quantized_auc']):>10}{_fmt(r['delta_auc'], 'g'):>9}" if "delta_auc" in r
                   else f"{'-':>10}{'-':>10}{'-':>9}")
            agree = f"{r['decision_agreement'] * 100:>7.1f}%" if r["decision_agreement"] is not None else f"{'-':>8}"
            lines.append(f"  {name:<20}{r['n']:>6}{auc}{agree}")
        if "max_abs_delta_auc_per_domain" in rep:
            lines.append(f"  worst |delta AUC| over domains: {rep['max_abs_delta_auc_per_domain']:.4f}")
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
    data, info = load_fp32(model_path)
    calib_samples, eval_samples = _split_calib_eval(calib, eval_data, info, calib_size, eval_size, detector, kind)
    if not calib_samples:
        raise QuantizeError(f"no usable calibration crops in {calib}")
    ctensors = to_tensor([s.crop for s in calib_samples], info.color_order, info.mean, info.std)
    etensors = to_tensor([s.crop for s in eval_samples], info.color_order, info.mean, info.std) if eval_samples else None
    fp32 = SpoofModel(data, threads=threads)
    props = read_metadata_props(data)
    rows, models = [], {"fp32": fp32}
    with tempfile.TemporaryDirectory(prefix="spoofsdk-sweep-") as tmp:
        for method in methods:
            cache = Path(tmp) / f"calib-{method}.json"  # ranges depend on the method only: compute once
            for act in activation_types:
                for rr in reduce_ranges:
                    name = f"{'U8' if act == 'QUInt8' else 'S8'}S8/{method}/rr={int(rr)}"
                    q, ms = timed(lambda: quantize_int8(data, ctensors, activation_type=act, calibrate_method=method, reduce_range=rr,
                                                        calibration_cache=cache))
                    q = finish(q, props, "int8", {})
                    models[name] = SpoofModel(q, threads=threads)
                    rows.append({"config": name, "activation_type": act, "calibrate_method": method, "reduce_range": rr,
                                 "size_bytes": len(q), "quantize_s": ms / 1000})
    thr = info.threshold
    labels = np.array([-1 if s.label is None else s.label for s in eval_samples]) if eval_samples else None
    s32 = _scores(fp32, etensors) if etensors is not None else None
    for row in rows:
        m = models[row["config"]]
        if etensors is not None:
            sq = _scores(m, etensors)
            row.update(_score_differences(s32, sq, thr))
            known = (labels >= 0) & np.isfinite(sq)
            if known.any() and len(set(labels[known].tolist())) == 2:
                row["metrics"] = _metrics(labels[known], sq[known], thr)
    x = etensors[:1] if etensors is not None else ctensors[:1]
    lat = interleaved({k: (lambda m=m: m.predict(x)) for k, m in models.items()}, rounds=rounds)
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
