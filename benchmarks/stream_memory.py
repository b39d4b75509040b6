"""Resident memory of a process that streams frames through a LivenessChecker (run as a subprocess).

    python -m benchmarks.stream_memory MODEL.onnx --frames 2000 [--detector haar] [--json OUT]

Frames are NUAA 640x480 images decoded once and cycled (decoding is not what is measured, and a
growing frame list would hide a leak). RSS is sampled before importing spoofsdk, after loading,
every 100 frames, and at the end; the peak is the kernel's high-water mark for the process (VmHWM).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # Linux fallback
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    return float("nan")


def hwm_mb() -> float:
    """Peak RSS of this process image (VmHWM; unlike ru_maxrss it does not inherit the parent's peak across fork+exec)."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--distinct", type=int, default=40)
    p.add_argument("--detector", default="haar")
    p.add_argument("--yunet")
    p.add_argument("--data", required=True, help="NUAA folder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    a = p.parse_args(argv)
    samples = {"before_import": rss_mb()}
    from pathlib import Path

    files = sorted(Path(a.data).rglob("*.jpg"))
    files = files[:: max(1, len(files) // a.distinct)][: a.distinct]
    from spoofsdk.folders import read_image

    frames = [read_image(f) for f in files]
    samples["frames_decoded"] = rss_mb()
    from spoofsdk.checker import LivenessChecker

    checker = LivenessChecker(a.model, threads=a.threads, detector=a.detector, yunet_model=a.yunet)
    samples["loaded"] = rss_mb()
    series = []
    t0 = time.perf_counter()
    for i, r in enumerate(checker.stream(frames[i % len(frames)] for i in range(a.frames))):
        if i % 100 == 0:
            series.append((i, round(rss_mb(), 2)))
    elapsed = time.perf_counter() - t0
    samples["end"] = rss_mb()
    series.append((a.frames, round(samples["end"], 2)))
    peak = hwm_mb()
    # Growth over the stream, after the first 200 frames (allocator warm-up), per 1,000 frames.
    later = [(i, v) for i, v in series if i >= 200]
    slope = (later[-1][1] - later[0][1]) / max(1, later[-1][0] - later[0][0]) * 1000 if len(later) > 1 else 0.0
    out = {
        "frames": a.frames, "distinct_frames": len(frames), "detector": a.detector, "model": a.model,
        "rss_mb": {k: round(v, 2) for k, v in samples.items()}, "peak_mb": round(peak, 2),
        "start_mb": round(samples["loaded"], 2), "end_mb": round(samples["end"], 2),
        "growth_mb_per_1000_frames_after_200": round(slope, 3), "series": series,
        "seconds": round(elapsed, 2), "fps": round(a.frames / elapsed, 1),
    }
    text = json.dumps(out, indent=1)
    if a.json:
        Path(a.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
