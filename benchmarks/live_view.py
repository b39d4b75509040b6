"""The live view (``spoofsdk serve``) under load, on loopback: latency, throughput, model-loop fps, memory.

    python -m benchmarks.live_view [--seconds 15] [--memory-frames 10000] [--json OUT]

Frames are NUAA 640x480 images decoded once and cycled (``$SPOOFSDK_DATA``; synthetic 640x480
frames without it), checked by the embedded default model with YuNet when
``$SPOOFSDK_YUNET_MODEL`` (or ../shared/models/yunet) is there, else Haar. Viewers are separate
processes reading ``/stream.mjpg`` as a browser does; each MJPEG part carries the wall-clock
time its frame left the source, so latency = arrival time - that time (one machine, one clock).

1. Model-loop fps, same run: the source unpaced (as fast as the model goes), interleaved
   rounds with 0, 1 and 3 viewers (``--seconds`` in all per viewer count); medians.
2. Latency and throughput: the source paced at 30 fps (a camera), 1 viewer, then 3 viewers.
3. Memory: the source unpaced, one viewer attached, ``--memory-frames`` frames; RSS of the
   server process after a warm-up of 1,000 frames and at the end.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import click

from spoofsdk.clitools import Command, run_main

REPO = Path(__file__).resolve().parents[1]


def _frames() -> list:
    import cv2
    import numpy as np

    data = Path(os.environ.get("SPOOFSDK_DATA", REPO.parent / "shared" / "data")) / "nuaa" / "real"
    files = sorted(data.rglob("*.jpg"))[::50][:40]
    from spoofsdk.folders import read_image

    images = [cv2.resize(read_image(p), (640, 480)) for p in files]
    if images:
        return images
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(10)]


def _checker():
    from spoofsdk import LivenessChecker

    yunet = Path(os.environ.get("SPOOFSDK_YUNET_MODEL", REPO.parent / "shared" / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"))
    if yunet.is_file():
        return LivenessChecker(detector="yunet", yunet_model=yunet, threads=1), "yunet"
    return LivenessChecker(threads=1), "haar"


def _viewer(url: str, seconds: float, out: "mp.Queue") -> None:
    """Read the MJPEG stream for ``seconds``; report frames received and per-frame latency."""
    import asyncio

    import aiohttp

    async def run():
        latencies, seqs = [], []
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                reader = aiohttp.MultipartReader.from_response(response)
                start = time.time()
                while time.time() - start < seconds:
                    part = await reader.next()
                    await part.read()
                    latencies.append(time.time() - float(part.headers["X-Captured"]))
                    seqs.append(int(part.headers["X-Frame-Seq"]))
                elapsed = time.time() - start
        return {"frames": len(seqs), "fps": len(seqs) / elapsed, "latency_ms": [x * 1000 for x in latencies]}

    out.put(asyncio.run(run()))


def _watch(url: str, viewers: int, seconds: float) -> list[dict]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_viewer, args=(url, seconds, queue)) for _ in range(viewers)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    return results


def _summary(results: list[dict]) -> dict:
    lat = sorted(x for r in results for x in r["latency_ms"][5:])  # skip the connection's first frames
    return {
        "viewers": len(results),
        "fps_per_viewer": [round(r["fps"], 2) for r in results],
        "latency_ms_median": round(statistics.median(lat), 1) if lat else None,
        "latency_ms_p95": round(lat[int(0.95 * (len(lat) - 1))], 1) if lat else None,
    }


@click.command(cls=Command, help=__doc__.splitlines()[0], context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seconds", type=float, default=15.0, show_default=True)
@click.option("--memory-frames", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=4, show_default=True, help="Interleaved rounds of 0/1/3 viewers for the model-loop fps.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def cli(seconds, memory_frames, rounds, json_path) -> int:
    args = SimpleNamespace(seconds=seconds, memory_frames=memory_frames, rounds=rounds, json=json_path)

    import psutil

    from spoofsdk.serve.app import ServerThread, make_live_app
    from spoofsdk.serve.live import LiveHub

    frames = _frames()
    checker, detector = _checker()
    result: dict = {"detector": detector, "model": checker.info.name, "precision": checker.info.precision, "frame": "640x480",
                    "cpu_count": os.cpu_count(), "load_average_at_start": [round(x, 1) for x in os.getloadavg()]}

    def cycle():
        i = 0
        while True:
            yield frames[i % len(frames)]
            i += 1

    hub = LiveHub(checker, cycle, pace_fps=None)
    server = ServerThread(make_live_app(hub, max_viewers=10)).start()
    url = f"{server.url}/stream.mjpg"
    try:
        time.sleep(3)  # warm-up

        def loop_fps(viewers: int, seconds: float) -> float:
            if viewers:
                ctx = mp.get_context("spawn")
                queue = ctx.Queue()
                procs = [ctx.Process(target=_viewer, args=(url, seconds + 4, queue)) for _ in range(viewers)]
                for p in procs:
                    p.start()
                time.sleep(3)  # let them connect
            start_frames, start = hub.frames, time.monotonic()
            time.sleep(seconds)
            fps = (hub.frames - start_frames) / (time.monotonic() - start)
            if viewers:
                for _ in procs:
                    queue.get(timeout=120)
                for p in procs:
                    p.join()
            return fps

        # Interleaved rounds of 0, 1 and 3 viewers: the machine's other load drifts, and a
        # same-run comparison must not mistake that drift for the viewers' cost.
        rounds: dict[int, list[float]] = {0: [], 1: [], 3: []}
        for _ in range(args.rounds):
            for n in rounds:
                rounds[n].append(loop_fps(n, args.seconds / args.rounds))
        result["model_loop_fps"] = {f"{n}_viewers": round(statistics.median(v), 2) for n, v in rounds.items()}
        result["model_loop_fps"]["rounds"] = {n: [round(x, 1) for x in v] for n, v in rounds.items()}
        print("model loop fps:", result["model_loop_fps"], flush=True)

        hub.pace_fps = 30.0  # a 30 fps camera from here on
        time.sleep(1)
        result["paced_30fps"] = {f"{n}_viewers": _summary(_watch(url, n, args.seconds)) for n in (1, 3)}
        result["paced_30fps"]["model_loop_fps"] = round(hub.fps(), 2)
        print("paced 30 fps:", result["paced_30fps"], flush=True)

        hub.pace_fps = None
        process = psutil.Process()
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        viewer = ctx.Process(target=_viewer, args=(url, 10_000, queue), daemon=True)
        viewer.start()
        time.sleep(2)
        start = hub.frames
        samples = []
        while hub.frames - start < args.memory_frames:
            done = hub.frames - start
            if done >= 1000 and (not samples or done - samples[-1][0] >= 1000):
                samples.append((done, process.memory_info().rss / 2**20))
            time.sleep(0.05)
        samples.append((hub.frames - start, process.memory_info().rss / 2**20))
        viewer.terminate()
        warm = samples[0][1]
        result["memory"] = {
            "frames": hub.frames - start,
            "rss_mb_after_warmup": round(warm, 1),
            "rss_mb_end": round(samples[-1][1], 1),
            "growth_mb": round(samples[-1][1] - warm, 2),
            "max_growth_mb": round(max(s[1] for s in samples) - warm, 2),
            "samples": [(n, round(m, 1)) for n, m in samples],
            "pictures_encoded": hub.encoded,
        }
        print("memory:", {k: v for k, v in result["memory"].items() if k != "samples"}, flush=True)
    finally:
        server.stop()
    result["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


def main(argv=None) -> int:
    return run_main(cli, argv, prog_name="python -m benchmarks.live_view")


if __name__ == "__main__":
    sys.exit(main())
