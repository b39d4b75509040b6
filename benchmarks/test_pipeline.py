"""The whole pipeline on real 640x480 NUAA frames: detection + crop + quality + inference +
tracking/smoothing, in stream mode, per detector. Decoding is excluded (frames are decoded
before timing). Per-stage shares come from the checker's own timings (FrameResult.timings:
detect | track, faces; FaceResult.timings: crop, quality, model); ``other`` is the rest of
the frame's total: the grey/downscaled copy for tracking, IoU track update, EMA/hysteresis
smoothing and result building.
"""
from __future__ import annotations

import statistics

import pytest

from benchmarks.models import data_root, default_entry, yunet_path

FPS = 30.0  # timestamps given to the stream, as from a 30 fps camera


def _frames(n: int):
    """Decoded NUAA frames: consecutive frames of a few sequences from different subjects, both classes."""
    from spoofsdk.errors import ImageError
    from spoofsdk.folders import read_image

    root = data_root() / "nuaa"
    if not root.is_dir():
        pytest.skip(f"NUAA frames not found at {root}")
    frames = []
    for cls in ("real", "attack"):
        subjects = sorted(p for p in (root / cls).iterdir() if p.is_dir())
        for subj in subjects[:: max(1, len(subjects) // 3)][:3]:
            files = sorted(subj.glob("*.jpg"))
            for f in files[: max(1, n // 6)]:
                try:
                    frames.append(read_image(f))
                except ImageError:
                    continue
    return frames[:n]


@pytest.mark.parametrize("detect_every", [3, 1])
@pytest.mark.parametrize("detector", ["haar", "yunet"])
def test_pipeline(bench, benchmark, detector, detect_every):
    from spoofsdk.checker import LivenessChecker

    if bench.quick and detect_every != 3:
        pytest.skip("quick mode: default detect_every only")
    yunet = None
    if detector == "yunet":
        yunet = yunet_path()
        if not yunet.is_file():
            pytest.skip(f"YuNet model not found at {yunet}")
    entry = default_entry(list(bench.entries.values()))
    paths = bench.variants(entry.key)
    precision = "int8" if "int8" in paths else "fp32"
    threads = 2
    model = bench.session(entry.key, precision, threads)
    frames = _frames(24 if bench.quick else 120)
    n_rounds = 24 if bench.quick else 360
    checker = LivenessChecker(model, detector=detector, yunet_model=yunet, detect_every=detect_every)
    checker.reset()
    state = {"i": 0}
    results = []

    def step():
        i = state["i"]
        state["i"] = i + 1
        results.append(checker.feed(frames[i % len(frames)], t=i / FPS, index=i))

    benchmark.group = "pipeline"
    benchmark.extra_info.update(detector=detector, detect_every=detect_every, model=entry.key, precision=precision)
    benchmark.pedantic(step, rounds=n_rounds, warmup_rounds=5, iterations=1)
    timed = results[5:]  # drop warm-up frames
    totals = [r.timings.get("total", 0.0) for r in timed]
    stages = {"detect": 0.0, "track": 0.0, "crop": 0.0, "quality": 0.0, "model": 0.0}
    for r in timed:
        stages["detect"] += r.timings.get("detect", 0.0)
        stages["track"] += r.timings.get("track", 0.0)
        for f in r.faces:
            for k in ("crop", "quality", "model"):
                stages[k] += f.timings.get(k, 0.0)
    total = sum(totals)
    stages["other (tracking copy, smoothing, results)"] = max(0.0, total - sum(stages.values()))
    labels = [r.label for r in timed]
    mean_ms = total / len(timed)
    bench.results["pipeline"].append({
        "detector": detector, "detect_every": detect_every, "model": entry.key, "model_kind": entry.kind,
        "precision": precision, "threads": threads, "frames": len(timed), "distinct_frames": len(frames),
        "frame_size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
        "mean_ms": mean_ms, "median_ms": statistics.median(totals), "p90_ms": sorted(totals)[int(0.9 * (len(totals) - 1))],
        "fps": 1000.0 / mean_ms if mean_ms else None,
        "stage_ms": {k: v / len(timed) for k, v in stages.items()},
        "stage_share": {k: (v / total if total else 0.0) for k, v in stages.items()},
        "faces_per_frame": sum(len(r.faces) for r in timed) / len(timed),
        "labels": {lab: labels.count(lab) for lab in sorted(set(labels))},
        "timing_source": "LivenessChecker timings (FrameResult/FaceResult.timings)",
    })
