"""A long stream soak: 20,000 frames through one LivenessChecker, resident memory every 1,000.

    python -m benchmarks.stream_soak [--frames 20000] [--model default] [--json OUT]

The frames come through a :class:`~spoofsdk.sources.LiveSource` (the camera path: grabber
logic, timestamps, step), built from NUAA 640x480 frames decoded once and cycled, so faces come
and go, tracks are created and forgotten, and every 50th frame is broken (None, a float array,
a 1-pixel image: the stream must carry on). After the last frame the "camera" stops delivering:
the soak checks that this ends the stream with a clear :class:`~spoofsdk.errors.SourceError`
message after every delivered frame was judged.

Pass criteria (exit status 1 otherwise): RSS growth after warm-up (the first ``--warmup``
frames: allocator and onnxruntime arenas settling) at most ``--max-growth-mb`` (5 MB), every
frame judged, no frame broken by an exception, the camera loss reported. The machine is shared:
run the full 20,000 frames rarely; ``--frames 300`` is a smoke run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--every", type=int, default=1000, help="RSS sample interval in frames")
    p.add_argument("--warmup", type=int, default=2000, help="frames before the growth baseline")
    p.add_argument("--max-growth-mb", type=float, default=5.0)
    p.add_argument("--model", default=None, help="model file or embedded name (default: the embedded default)")
    p.add_argument("--detector", default="yunet")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--distinct", type=int, default=60, help="distinct NUAA frames cycled")
    p.add_argument("--data", default=os.environ.get("SPOOFSDK_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    p.add_argument("--json")
    a = p.parse_args(argv)

    from spoofsdk.folders import read_image
    import numpy as np

    from spoofsdk import LivenessChecker
    from spoofsdk.errors import SourceError
    from spoofsdk.sources import LiveSource

    nuaa = Path(a.data) / "nuaa"
    files = sorted(nuaa.rglob("*.jpg"))
    if not files:
        print(f"no NUAA frames under {nuaa}", file=sys.stderr)
        return 2
    files = files[:: max(1, len(files) // a.distinct)][: a.distinct]
    frames = [read_image(f) for f in files]
    # Broken frames a driver can deliver: wrong dtype, empty, a single pixel (the last is readable: no face).
    broken = [np.zeros((480, 640, 3), np.float32), np.zeros((0, 0, 3), np.uint8), np.zeros((1, 1, 3), np.uint8)]
    unreadable = sum(1 for i in range(a.frames) if i % 50 == 49 and (i // 50) % len(broken) < 2)
    checker = LivenessChecker(a.model, threads=a.threads, detector=a.detector)
    count = {"n": 0}

    def read():
        i = count["n"]
        count["n"] += 1
        if i >= a.frames:
            return False, None  # the camera is unplugged
        if i % 50 == 49:
            return True, broken[(i // 50) % len(broken)]
        # runs of 40 frames of one face, so tracks live, turn real or spoof, and are forgotten
        return True, frames[(i // 40) % len(frames)]

    # A monotonic 30 fps clock instead of the wall clock: the soak is about memory, not pacing.
    source = LiveSource(read, "soak camera", latest_only=False, timeout=0.5)
    clock = iter(range(10**9))
    samples: list[tuple[int, float]] = [(0, round(rss_mb(), 2))]
    labels: dict[str, int] = {}
    errors = 0
    ended = None
    start = time.perf_counter()
    judged = 0
    try:
        for frame in source:
            result = checker.feed(frame.image, t=next(clock) / 30.0, index=frame.index) if frame.image is not None else None
            judged += 1
            if result is not None:
                labels[str(result.label)] = labels.get(str(result.label), 0) + 1
                errors += result.error is not None
            if judged % a.every == 0:
                samples.append((judged, round(rss_mb(), 2)))
    except SourceError as e:
        ended = str(e)
    elapsed = time.perf_counter() - start
    base = next((v for i, v in samples if i >= a.warmup), samples[-1][1])
    after = [v for i, v in samples if i >= a.warmup]
    growth = (max(after) - base) if after else 0.0
    out = {
        "frames": a.frames, "judged": judged, "labels": labels, "frames_with_error": errors,
        "unreadable_frames_sent": unreadable, "rss_mb_every": a.every, "rss_series": samples,
        "warmup_frames": a.warmup, "rss_at_warmup_mb": base, "growth_after_warmup_mb": round(growth, 2),
        "max_growth_mb": a.max_growth_mb, "camera_loss": ended, "seconds": round(elapsed, 1),
        "fps": round(judged / elapsed, 1) if elapsed else None, "model": checker.model.info.name, "detector": a.detector,
    }
    problems = []
    if judged != a.frames:
        problems.append(f"judged {judged} of {a.frames} frames")
    if growth > a.max_growth_mb:
        problems.append(f"RSS grew {growth:.2f} MB after warm-up (limit {a.max_growth_mb} MB)")
    if not ended or "stopped delivering frames" not in ended:
        problems.append(f"camera loss not reported clearly: {ended!r}")
    if errors != unreadable:
        problems.append(f"{errors} frames with an error, expected exactly the {unreadable} unreadable ones")
    out["problems"] = problems
    text = json.dumps(out, indent=1)
    if a.json:
        Path(a.json).write_text(text + "\n")
    print(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
