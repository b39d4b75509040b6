"""``spoofsdk bench``: how fast is this machine? (The benchmarks/ suites are not in the wheel; this is.)

Two measurements, printed as a small table:

- **model latency** per precision: one face crop (batch 1) through onnxruntime, after a
  warm-up, median and 90th percentile over ``runs`` calls. Every precision the embedded model
  ships in is timed, or the one file given.
- **pipeline fps** on the user's own camera or a video file: detection (every
  ``detect_every`` frames, tracking in between) + crop + quality gates + model + temporal
  decision, as ``spoofsdk run`` does it. Reading the frames is not counted for a video file
  (it is for a camera, whose frame rate may then be the limit; the table says which).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from .errors import SourceError
from .timing import time_calls

__all__ = ["bench_models", "bench_pipeline", "format_table"]

log = logging.getLogger(__name__)

WARMUP_RUNS = 5


def _model_variants(model: str | None) -> list[tuple[str | None, str | None]]:
    """(model, precision) pairs to time: every precision of an embedded name, or the file as it is."""
    from .model import DEFAULT_MODEL, EMBEDDED_MODELS

    name = DEFAULT_MODEL if model is None else str(model)
    if name in EMBEDDED_MODELS:
        return [(name, precision) for precision in EMBEDDED_MODELS[name]]
    return [(model, None)]


def bench_models(model: str | None = None, threads: int | None = None, providers: Sequence[str] | None = None,
                 runs: int = 50) -> list[dict[str, Any]]:
    """Latency of one face crop (batch 1) for each precision of ``model``, in milliseconds.

    The precisions are timed side by side (:func:`spoofsdk.timing.interleaved`: every round runs
    each once, in a rotated order), so a background load hits them alike and ``ratio`` (time / the
    first precision's) holds even when the absolute times wander.
    """
    from .model import load_model
    from .timing import interleaved

    loaded = {}
    runners = {}
    for name, precision in _model_variants(model):
        m = load_model(name, precision=precision, threads=threads, providers=providers)
        key = f"{m.info.name} {m.info.precision}"
        crop = np.random.default_rng(0).integers(0, 256, (m.info.input_size, m.info.input_size, 3), dtype=np.uint8)
        loaded[key] = m
        runners[key] = (lambda m=m, crop=crop: m.score_crops([crop]))
    timed = interleaved(runners, rounds=int(runs), warmup=WARMUP_RUNS)
    first = next(iter(runners))
    rows = []
    for key, m in loaded.items():
        t = timed[key]
        rows.append({
            "model": m.info.name, "precision": m.info.precision, "input": m.info.input_size, "source": m.source,
            "median_ms": t["median_ms"], "p90_ms": t["p90_ms"], "per_second": 1000.0 / t["median_ms"],
            "ratio": t[f"ratio_to_{first}"], "ratio_to": first, "runs": int(runs), "threads": threads,
        })
        log.debug("bench %s: median %.2f ms", key, t["median_ms"])
    return rows


def bench_pipeline(model: str | None = None, camera: Any = None, video: Any = None, frames: int = 100, threads: int | None = None,
                   providers: Sequence[str] | None = None, detector: str = "yunet", yunet_model: Any = None,
                   detect_every: int = 3, **camera_kwargs: Any) -> dict[str, Any]:
    """Frames per second of the whole stream pipeline on a camera or video file (time per frame by stage)."""
    from .checker import LivenessChecker
    from .sources import VideoSource, open_source

    checker = LivenessChecker(model, threads=threads, providers=providers, detector=detector, yunet_model=yunet_model,
                              detect_every=detect_every)
    source = open_source(camera=camera, video=video, **camera_kwargs)
    is_file = isinstance(source, VideoSource)
    processing: list[float] = []
    stages: dict[str, list[float]] = {"detect": [], "track": [], "faces": []}
    size = None
    labels: dict[str, int] = {}
    start = time.perf_counter()
    try:
        for _, result in checker.stream_frames(source, max_frames=frames):
            if result.error:
                continue
            size = result.image_size
            processing.append(result.timings.get("total", 0.0))
            for key in stages:
                if key in result.timings:
                    stages[key].append(result.timings[key])
            labels[str(result.label)] = labels.get(str(result.label), 0) + 1
    finally:
        source.close()
    wall = time.perf_counter() - start
    if not processing:
        raise SourceError("no frame could be processed from the source")
    mean_ms = float(np.mean(processing))
    return {
        "source": str(camera if camera is not None else video), "kind": "file" if is_file else "camera",
        "frames": len(processing), "frame_size": list(size) if size else None, "detector": detector, "detect_every": detect_every,
        "model": checker.model.info.name, "precision": checker.model.info.precision,
        "processing_ms": mean_ms, "processing_fps": 1000.0 / mean_ms if mean_ms > 0 else None,
        "wall_fps": len(processing) / wall if wall > 0 else None,
        "stage_ms": {k: float(np.mean(v)) for k, v in stages.items() if v},
        "labels": labels,
    }


def format_table(rows: list[dict[str, Any]], pipeline: dict[str, Any] | None = None) -> str:
    """The measurements as a plain-text table."""
    lines = [f"{'model':<10} {'precision':<9} {'input':>5} {'median ms':>10} {'p90 ms':>8} {'crops/s':>8} {'ratio':>6}"]
    for r in rows:
        lines.append(f"{r['model']:<10} {r['precision']:<9} {r['input']:>5} {r['median_ms']:>10.2f} {r['p90_ms']:>8.2f} "
                     f"{r['per_second']:>8.1f} {r['ratio']:>6.2f}")
    if len(rows) > 1:
        lines.append(f"(ratio: time per crop / {rows[0]['ratio_to']}'s, measured side by side)")
    if pipeline:
        p = pipeline
        size = "x".join(map(str, p["frame_size"])) if p["frame_size"] else "?"
        stages = ", ".join(f"{k} {v:.1f} ms" for k, v in p["stage_ms"].items())
        lines += [
            "",
            f"pipeline on {p['source']} ({p['kind']}, {size}, {p['frames']} frames; {p['detector']} every {p['detect_every']} frames, "
            f"{p['model']} {p['precision']})",
            f"  processing: {p['processing_ms']:.1f} ms/frame = {p['processing_fps']:.1f} fps ({stages})",
            f"  end to end: {p['wall_fps']:.1f} fps" + (" (includes decoding the file)" if p["kind"] == "file" else " (camera-paced: cannot exceed the camera's frame rate)"),
        ]
    return "\n".join(lines)
