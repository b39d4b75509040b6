"""Shared machinery of the benchmark suites: mode, results file, sessions, inputs, machine facts."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spoofsdk.timing import call_ms, machine_facts

from .models import REPO, ModelEntry, data_root, discover, ensure_variants, work_dir

QUICK_ENV = "SPOOFSDK_BENCH_QUICK"
RESULTS_ENV = "SPOOFSDK_BENCH_RESULTS"


def quick_mode(config=None) -> bool:
    if config is not None and config.getoption("--quick", default=False):
        return True
    return os.environ.get(QUICK_ENV, "").lower() in ("1", "true", "yes")


def results_path() -> Path:
    return Path(os.environ.get(RESULTS_ENV, work_dir() / "results.json"))


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("onnxruntime", "onnx", "numpy", "cv2", "torch", "onnxconverter_common"):
        if mod == "torch" and "torch" not in sys.modules:
            try:
                import importlib.metadata as md

                out["torch"] = md.version("torch")
            except Exception:
                out["torch"] = None
            continue
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    return out


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


class Bench:
    """Per-session state: the model list, cached sessions and inputs, and the results being collected."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.entries: dict[str, ModelEntry] = {e.key: e for e in discover(quick)}
        self.results: dict[str, Any] = {
            "mode": "quick" if quick else "full",
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine_facts(),
            "versions": versions(),
            "load_start": load_average(),
            "nice": os.nice(0),
            "models": {},
            "latency": [],
            "torch_eager": [],
            "reference": [],
            "pipeline": [],
            "accuracy": [],
            "memory": {},
            "import_time": {},
            "matmul": {},
            "notes": [],
        }
        from .models import default_entry, entry_loso, reference_loso

        d = default_entry(list(self.entries.values()))
        self.results["default_model"] = d.key if d else None
        # Leave-one-source-out figures travel in the models' metadata; the MiniFASNet pair's are the
        # committed reference table, averaged over exactly the domains of the models' LOSO tables.
        self.loso = {k: entry_loso(e) for k, e in self.entries.items() if e.kind == "asset"}
        domains = list(dict.fromkeys(dom for lo in self.loso.values() if lo for dom, auc in lo["domains"].items() if auc is not None))
        self.results["loso_reference"] = reference_loso(domains) if domains else None
        self._sessions: dict[tuple, Any] = {}
        self._crops: np.ndarray | None = None
        self.built: set[str] = set()

    # -- models -------------------------------------------------------------------------------
    def variants(self, key: str) -> dict[str, Path]:
        entry = self.entries[key]
        if key not in self.built:
            from .models import ASSETS, model_facts

            ensure_variants(entry, quick=self.quick, log=lambda m: self.results["notes"].append(m))
            self.built.add(key)
            self.results["models"][key] = {
                "kind": entry.kind,
                "architecture": entry.architecture,
                "note": entry.note,
                "scored": entry.scored,
                "shipped": [p for p, path in entry.paths.items() if path.parent == ASSETS],  # files of the embedded zoo
                "loso": self.loso.get(key),
                # what it was trained on: a model trained on a random split has seen part of the test crops
                "training_data": _training_data(entry),
                "files": {p: str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path) for p, path in entry.paths.items()},
                **{p: model_facts(path) for p, path in entry.paths.items()},
            }
        return entry.paths

    def session(self, key: str, precision: str, threads: int):
        from spoofsdk.model import SpoofModel

        k = (key, precision, threads)
        if k not in self._sessions:
            path = self.variants(key).get(precision)
            if path is None:
                return None
            self._sessions[k] = SpoofModel(path, threads=threads)
        return self._sessions[k]

    def drop_sessions(self, key: str) -> None:
        for k in [k for k in self._sessions if k[0] == key]:
            del self._sessions[k]

    def crops(self, n: int = 16) -> np.ndarray:
        """Real face crops (BGR uint8, 256x256) to feed models; resized per model."""
        if self._crops is None:
            from spoofsdk.crop import fit_face_crop
            from spoofsdk.errors import ImageError
            from spoofsdk.folders import image_files, read_image

            folder = data_root() / "gc535" / "test"
            files = image_files(folder) if folder.is_dir() else []
            imgs = []
            for f in files[:: max(1, len(files) // n)][:n]:
                try:
                    imgs.append(fit_face_crop(read_image(f), 256))  # the runtime's check_face policy
                except ImageError:
                    continue
            if not imgs:  # no data: smooth synthetic faces rather than white noise
                rng = np.random.default_rng(0)
                yy, xx = np.mgrid[0:256, 0:256] / 256.0
                blob = np.exp(-((xx - 0.5) ** 2 + (yy - 0.45) ** 2) / 0.08)
                imgs = [np.clip(blob[..., None] * 180 + rng.normal(40, 10, (256, 256, 3)), 0, 255).astype(np.uint8) for _ in range(n)]
            self._crops = np.stack(imgs)
        return self._crops

    def input_batch(self, model, batch: int) -> np.ndarray:
        import cv2

        from spoofsdk.crop import to_tensor

        info = model.info
        crops = [cv2.resize(c, (info.input_size, info.input_size), interpolation=cv2.INTER_AREA) for c in self.crops()]
        crops = (crops * (batch // len(crops) + 1))[:batch]
        return to_tensor(crops, info.color_order, info.mean, info.std)

    # -- results ------------------------------------------------------------------------------
    def save(self) -> Path:
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.results["load_end"] = load_average()
        path = results_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.results, indent=1, default=str) + "\n")
        return path


def _training_data(entry: ModelEntry) -> str | None:
    from .models import _props

    return next((text[:400] for path in entry.files() if (text := _props(path).get("training_data"))), None)


def estimate_call_ms(fn: Callable[[], Any], n: int = 3) -> float:
    fn()
    return call_ms(fn, inner=n)


def plan_rounds(call_ms: float, quick: bool, calls_per_round: int = 1, budget_s: float | None = None) -> int:
    """Rounds that fit a time budget per test (short: the machine is shared with training)."""
    if quick:
        return 3
    budget = (budget_s if budget_s is not None else 2.5) * 1000.0
    return int(min(200, max(7, budget / max(call_ms * calls_per_round, 1e-3))))


class PairedTimer:
    """Times reference callables in pytest-benchmark's ``setup`` hook, right before each timed round,
    so the target and its references alternate round by round (same-run, interleaved ratios)."""

    def __init__(self, refs: dict[str, Callable[[], Any]]):
        self.refs = refs
        self.times: dict[str, list[float]] = {k: [] for k in refs}
        self._round = 0

    def setup(self):
        names = list(self.refs)
        if len(names) > 1 and self._round % 2:
            names.reverse()
        for name in names:
            self.times[name].append(call_ms(self.refs[name]))
        self._round += 1

    def ratios(self, target_ms: list[float], warmup: int) -> dict[str, dict]:
        """Per reference: its median ms and the median of per-round (target / reference) ratios."""
        out = {}
        for name, times in self.times.items():
            ref = times[warmup:][: len(target_ms)]
            pairs = [t / r for t, r in zip(target_ms, ref) if r > 0]
            out[name] = {"median_ms": statistics.median(ref) if ref else float("nan"),
                         "ratio": statistics.median(pairs) if pairs else float("nan")}
        return out


def round_times_ms(benchmark) -> list[float]:
    """The per-round times (ms) pytest-benchmark recorded for the last pedantic run."""
    stats = getattr(benchmark, "stats", None)
    data = getattr(getattr(stats, "stats", None), "data", None) or []
    return [float(v) * 1000.0 for v in data]
